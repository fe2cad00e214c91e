"""Continued pretraining (domain adaptation) of a gptcore checkpoint on plain text, with `transformers.Trainer`.

As transformers' run_clm.py: the text is tokenized, concatenated and cut into blocks of `--block_size`
tokens; the model learns to predict each next token. Every `TrainingArguments` option works.

    python examples/finetune_clm.py --model_name_or_path runs/pretrain/final \
        --train_file examples/data/corpus/asyoulik.txt --output_dir runs/finetune_clm \
        --num_train_epochs 1 --per_device_train_batch_size 4 --block_size 256

Text files are read paragraph by paragraph (blank lines separate them); `--dataset_name` reads a Hub
dataset instead (column `--text_column`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain

from gptcore.training.text_data import load_rows, require_columns
from gptcore.training.arguments import ModelArguments, check_vocab_fits, load_model, load_tokenizer, parse_args
from gptcore.training.finetuning import OutputArguments, check_output_dir, setup_logging, train_and_evaluate
from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

from gptcore.modeling import GPTCoreForCausalLM


@dataclass
class DataArguments:
    train_file: str | None = field(default=None, metadata={"help": "A .txt file (or .csv/.json with --text_column)."})
    validation_file: str | None = field(default=None, metadata={"help": "Held-out text; default: a slice of the training text."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset instead of --train_file."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Without validation data: percent of the training rows held out."}
    )
    block_size: int | None = field(default=None, metadata={"help": "Tokens per training sequence; default: n_positions."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many validation blocks."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


def load_splits(data: DataArguments, seed: int):
    train = load_rows(data.train_file, data.dataset_name, data.dataset_config_name, split="train")
    require_columns(train, [data.text_column], data.train_file or data.dataset_name)
    if data.validation_file:
        validation = load_rows(data.validation_file)
        require_columns(validation, [data.text_column], data.validation_file)
        return train, validation
    if not 0 < data.validation_split_percentage < 100:
        raise ValueError(f"--validation_split_percentage must be in (0, 100), got {data.validation_split_percentage}")
    if len(train) < 2:
        raise ValueError(f"{data.train_file or data.dataset_name} has {len(train)} paragraph(s); pass --validation_file too")
    pieces = train.train_test_split(test_size=data.validation_split_percentage / 100, seed=seed)
    return pieces["train"], pieces["test"]


def to_blocks(rows, tokenizer, data: DataArguments, block_size: int, what: str):
    def tokenize(batch):
        # The blank line that separated paragraphs goes back between them; verbose=False because rows
        # longer than the model's context are expected here: they are cut into blocks next.
        return tokenizer([text + "\n\n" for text in batch[data.text_column]], verbose=False)

    def group(batch):
        ids = list(chain.from_iterable(batch["input_ids"]))
        usable = len(ids) // block_size * block_size  # the remainder that does not fill a block is dropped
        blocks = [ids[i : i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks], "labels": [b[:] for b in blocks]}

    tokens = rows.map(
        tokenize, batched=True, remove_columns=rows.column_names, num_proc=data.preprocessing_num_workers, desc=f"Tokenizing {what}"
    )
    blocks = tokens.map(group, batched=True, batch_size=1000, remove_columns=tokens.column_names, desc=f"Grouping {what} into blocks of {block_size}")
    if len(blocks) == 0:
        raise ValueError(f"the {what} text is shorter than one block of {block_size} tokens; lower --block_size or add text")
    return blocks


def main() -> None:
    model_args, data, training_args, output_args = parse_args(ModelArguments, DataArguments, TrainingArguments, OutputArguments)
    setup_logging(training_args)
    check_output_dir(training_args, output_args)
    set_seed(training_args.seed)

    tokenizer = load_tokenizer(model_args)
    model = load_model(GPTCoreForCausalLM, model_args)
    check_vocab_fits(tokenizer, model.config)
    block_size = data.block_size or model.config.n_positions
    if not 1 < block_size <= model.config.n_positions:
        raise ValueError(f"--block_size must be in [2, {model.config.n_positions}] (the model's n_positions), got {block_size}")

    train_rows, validation_rows = load_splits(data, training_args.seed)
    with training_args.main_process_first(desc="tokenization"):
        train = to_blocks(train_rows, tokenizer, data, block_size, "training")
        validation = to_blocks(validation_rows, tokenizer, data, block_size, "validation")
    if data.max_train_samples is not None:
        train = train.select(range(min(data.max_train_samples, len(train))))
    if data.max_eval_samples is not None:
        validation = validation.select(range(min(data.max_eval_samples, len(validation))))

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=default_data_collator,  # blocks are all block_size long: nothing to pad
    )
    metrics = train_and_evaluate(trainer, validation, perplexity=True)
    print(
        f"validation perplexity {metrics['before_perplexity']:.2f} -> {metrics['eval_perplexity']:.2f}; "
        f"model saved to {training_args.output_dir}"
    )


if __name__ == "__main__":
    main()
