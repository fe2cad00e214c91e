r"""Fine-tune a gptcore checkpoint as a text classifier (`GPTCoreForSequenceClassification`) with `Trainer`.

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

from pathlib import Path

import numpy as np
from transformers import DataCollatorWithPadding, Trainer

from gptcore.modeling import GPTCoreForSequenceClassification
from gptcore.training.arguments import check_within_context, load_model_and_tokenizer
from gptcore.training.classification import (
    ClassificationDataArguments,
    compute_metrics,
    encode_texts,
    freeze_all_but_last_block,
    load_classification_splits,
)
from gptcore.training.finetuning import start_finetuning, train_and_evaluate

SMS_SPAM = Path(__file__).resolve().parent / "data" / "finetune" / "sms_spam_collection.tsv"
SMS_SPAM_COLUMNS = ["label", "text"]  # the file has no header row


def main() -> None:
    model_args, data, training_args = start_finetuning(ClassificationDataArguments, description=__doc__)
    splits = load_classification_splits(
        data, training_args.seed, default_file=SMS_SPAM, default_file_columns=SMS_SPAM_COLUMNS
    )
    label_names = splits["train"].features[data.label_column].names
    for split, rows in splits.items():
        counts = np.bincount(rows[data.label_column], minlength=len(label_names))
        print(f"{split}: {len(rows)} rows, " + ", ".join(f"{n} {name}" for n, name in zip(counts, label_names)))

    model, tokenizer = load_model_and_tokenizer(
        GPTCoreForSequenceClassification,
        model_args,
        pads=True,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    tokenizer.padding_side = "right"  # real tokens keep the positions they had in pretraining
    max_length = check_within_context("max_length", data.max_length or min(128, model.config.n_positions), model.config)
    if data.train_last_block_only:
        freeze_all_but_last_block(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"training {trainable:,} of {model.num_parameters():,} parameters")

    with training_args.main_process_first(desc="tokenization"):
        encoded = encode_texts(splits, tokenizer, data.text_column, data.label_column, max_length)
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
        f"validation accuracy {metrics['before_accuracy']:.1%} before fine-tuning, {metrics['eval_accuracy']:.1%} "
        "after; "
        f"test accuracy {test['test_accuracy']:.1%}, F1 {test['test_f1']:.3f} ({len(encoded['test'])} texts)"
    )


if __name__ == "__main__":
    main()
