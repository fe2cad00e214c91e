"""Plain text for causal-LM fine-tuning with `Trainer`, prepared as pretraining prepares it (`lm_data`): every
document followed by EOS, the token stream cut into blocks, a share of the blocks held out for validation."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset

from gptcore.training.lm_data import pack_into_blocks, split_validation, tokenize_documents
from gptcore.training.text_data import load_rows, require_columns


@dataclass
class TextDataArguments:
    train_file: str | None = field(default=None, metadata={"help": "A .txt file (or .csv/.json with --text_column)."})
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out text; default: a share of the training blocks."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset (its 'train' split) instead of --train_file."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    sample_by: str = field(
        default="document",
        metadata={
            "choices": ["document", "paragraph", "line"],
            "help": "What one document of a text file is (default: the whole file).",
        },
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Without --validation_file: percent of the training blocks held out."}
    )
    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per training sequence; default: n_positions."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many validation blocks."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


def load_text_blocks(data: TextDataArguments, tokenizer: Any, block_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """(training blocks, validation blocks) of `block_size` token ids each, column input_ids."""

    def blocks(data_file: str | None, dataset_name: str | None, what: str) -> Dataset:
        rows = load_rows(data_file, dataset_name, data.dataset_config_name, split="train", sample_by=data.sample_by)
        require_columns(rows, [data.text_column], data_file or dataset_name)
        documents = tokenize_documents(rows, tokenizer, data.text_column, data.preprocessing_num_workers)
        return pack_into_blocks(documents, block_size, data.preprocessing_num_workers, what)

    train = blocks(data.train_file, data.dataset_name, "training")
    validation = blocks(data.validation_file, None, "validation") if data.validation_file else None
    max_eval = sys.maxsize if data.max_eval_samples is None else data.max_eval_samples  # split_validation always caps
    train, validation = split_validation(train, validation, data.validation_split_percentage, max_eval, seed)
    if data.max_train_samples is not None:
        train = train.select(range(min(data.max_train_samples, len(train))))
    return train, validation


def causal_lm_collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A batch of equal-length blocks (nothing to pad) whose labels are the inputs: the model shifts them by
    one position itself, so each token learns to predict the next. Unlike transformers'
    DataCollatorForLanguageModeling, EOS keeps its labels even where it also serves as the padding token."""
    input_ids = torch.tensor([feature["input_ids"] for feature in features], dtype=torch.long)
    return {"input_ids": input_ids, "labels": input_ids.clone()}
