"""Fine-tune a gptcore checkpoint as a text classifier (`GPTCoreForSequenceClassification`) with `Trainer`.

By default: spam detection on the bundled SMS Spam Collection, prepared as chapter 6 of *Build a Large
Language Model (From Scratch)* does: duplicates dropped, classes balanced by undersampling "ham", then a
seeded 70/10/20 train/validation/test split. Reports accuracy and F1 on the test split.

    python examples/finetune_classification.py --model_name_or_path runs/pretrain/final \
        --output_dir runs/spam --num_train_epochs 3 --per_device_train_batch_size 8 --learning_rate 5e-4

`--train_last_block_only` trains just the last transformer block, the final LayerNorm and the new head,
as the book does. Any labeled CSV/TSV (`--data_file`, `--text_column`, `--label_column`; separate
`--validation_file`/`--test_file` optional) or Hub dataset (`--dataset_name`) works too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gptcore.training.text_data import BUNDLED_DATA, load_rows, map_in_memory, require_columns, split_train_validation_test
from datasets import ClassLabel, Dataset, DatasetDict
from gptcore.training.arguments import ModelArguments, check_vocab_fits, load_model, load_tokenizer, parse_args
from gptcore.training.finetuning import OutputArguments, check_output_dir, setup_logging, train_and_evaluate
from transformers import DataCollatorWithPadding, EvalPrediction, Trainer, TrainingArguments, set_seed

from gptcore.modeling import GPTCoreForSequenceClassification

SMS_SPAM = BUNDLED_DATA / "finetune" / "sms_spam_collection.tsv"


@dataclass
class DataArguments:
    data_file: str | None = field(
        default=None, metadata={"help": f"Labeled .csv/.tsv file. Default: the bundled {SMS_SPAM.name} (no header: label, text)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation rows (give --test_file too); default: split."})
    test_file: str | None = field(default=None, metadata={"help": "Test rows (give --validation_file too); default: split."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset (its 'train' split) instead of a file."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    column_names: str | None = field(default=None, metadata={"help": "Comma-separated column names for a file without a header row."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text to classify."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class (names or integers)."})
    deduplicate: bool = field(default=True, metadata={"help": "Drop rows whose text already appeared."})
    balance: bool = field(default=True, metadata={"help": "Undersample every class to the size of the rarest (seeded)."})
    split_fractions: str = field(default="0.7,0.1,0.2", metadata={"help": "Train,validation,test fractions (after balancing)."})
    max_length: int | None = field(default=None, metadata={"help": "Texts are truncated to this many tokens; default min(128, n_positions)."})
    train_last_block_only: bool = field(
        default=False, metadata={"help": "Freeze everything but the last block, the final LayerNorm and the classification head."}
    )


def deduplicate(rows: Dataset, text_column: str) -> Dataset:
    seen: set[str] = set()

    def first_time(text: str) -> bool:
        new = text not in seen
        seen.add(text)
        return new

    return rows.filter(first_time, input_columns=text_column, desc="Dropping duplicate texts")


def balance(rows: Dataset, label_column: str, seed: int) -> Dataset:
    labels = np.array(rows[label_column])
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[: counts.min()] for c in classes]
    return rows.select(np.sort(np.concatenate(keep)))


def load_splits(data: DataArguments, seed: int) -> DatasetDict:
    names = data.column_names.split(",") if data.column_names else None
    if data.data_file is None and data.dataset_name is None:
        data_file, names = str(SMS_SPAM), names or ["label", "text"]
    else:
        data_file = data.data_file
    rows = load_rows(data_file, data.dataset_name, data.dataset_config_name, column_names=names)
    columns = [data.text_column, data.label_column]
    require_columns(rows, columns, data_file or data.dataset_name)
    rows = rows.select_columns(columns).filter(lambda text: bool(text and text.strip()), input_columns=data.text_column)
    if not isinstance(rows.features[data.label_column], ClassLabel):
        rows = rows.class_encode_column(data.label_column)  # label names, sorted, become 0..k-1
    if data.deduplicate:
        rows = deduplicate(rows, data.text_column)
    if data.balance:
        rows = balance(rows, data.label_column, seed)
    if (data.validation_file is None) != (data.test_file is None):
        raise ValueError("pass both --validation_file and --test_file, or neither (then the data is split)")
    if data.validation_file:
        held_out = {}
        for split, path in (("validation", data.validation_file), ("test", data.test_file)):
            part = load_rows(path, column_names=names)
            require_columns(part, columns, path)
            held_out[split] = part.select_columns(columns).cast_column(data.label_column, rows.features[data.label_column])
        return DatasetDict(train=rows, **held_out)
    return split_train_validation_test(rows, data.split_fractions, seed)


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy, and F1: of class 1 for two classes (spam = positive), macro-averaged for more."""
    predicted = np.argmax(prediction.predictions, axis=-1)
    actual = prediction.label_ids
    classes = [1] if prediction.predictions.shape[-1] == 2 else range(prediction.predictions.shape[-1])
    f1s = []
    for c in classes:
        tp = np.sum((predicted == c) & (actual == c))
        denominator = np.sum(predicted == c) + np.sum(actual == c)
        f1s.append(2 * tp / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(predicted == actual)), "f1": float(np.mean(f1s))}


def freeze_all_but_last_block(model: GPTCoreForSequenceClassification) -> None:
    model.requires_grad_(False)
    for module in (model.transformer.h[-1], model.transformer.ln_f, model.score):
        module.requires_grad_(True)


def main() -> None:
    model_args, data, training_args, output_args = parse_args(ModelArguments, DataArguments, TrainingArguments, OutputArguments)
    setup_logging(training_args)
    check_output_dir(training_args, output_args)
    set_seed(training_args.seed)

    splits = load_splits(data, training_args.seed)
    label_names = splits["train"].features[data.label_column].names
    for split, rows in splits.items():
        counts = np.bincount(rows[data.label_column], minlength=len(label_names))
        print(f"{split}: {len(rows)} rows, " + ", ".join(f"{n} {name}" for n, name in zip(counts, label_names)))

    tokenizer = load_tokenizer(model_args)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; the attention mask tells them apart
    tokenizer.padding_side = "right"  # real tokens keep the positions they had in pretraining
    model = load_model(
        GPTCoreForSequenceClassification,
        model_args,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        pad_token_id=tokenizer.pad_token_id,
    )
    check_vocab_fits(tokenizer, model.config)
    max_length = data.max_length or min(128, model.config.n_positions)
    if not 1 <= max_length <= model.config.n_positions:
        raise ValueError(f"--max_length must be in [1, {model.config.n_positions}] (the model's n_positions), got {max_length}")
    if data.train_last_block_only:
        freeze_all_but_last_block(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"training {trainable:,} of {model.num_parameters():,} parameters")

    def tokenize(batch):
        encoded = tokenizer(batch[data.text_column], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch[data.label_column]}

    with training_args.main_process_first(desc="tokenization"):
        encoded = DatasetDict(
            {
                name: map_in_memory(rows, tokenize, batched=True, remove_columns=rows.column_names, desc=f"Tokenizing {name}")
                for name, rows in splits.items()
            }
        )

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    metrics = train_and_evaluate(trainer, encoded["validation"])
    test = trainer.evaluate(encoded["test"], metric_key_prefix="test")
    trainer.log_metrics("test", test)
    trainer.save_metrics("test", test)
    print(
        f"validation accuracy {metrics['before_accuracy']:.1%} before fine-tuning, {metrics['eval_accuracy']:.1%} after; "
        f"test accuracy {test['test_accuracy']:.1%}, F1 {test['test_f1']:.3f} ({len(encoded['test'])} texts)"
    )


if __name__ == "__main__":
    main()
