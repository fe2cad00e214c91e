"""Instruction-tuning data: {instruction, input, output} records (or Self-Instruct tasks) split by instruction,
then encoded in the Alpaca prompt format with the prompt's labels set to -100, so only the response is learned."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from gptcore.tokenization import encode_instruction_example
from gptcore.training.data_files import load_rows, map_in_memory, require_columns, split_train_validation_test

logger = logging.getLogger(__name__)


@dataclass
class InstructionDataArguments:
    data_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON/JSONL of {instruction, input, output} records or Self-Instruct tasks. Default: the "
            "script's bundled Self-Instruct seed tasks."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset (its 'train' split) instead of a file."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    split_fractions: str = field(
        default="0.85,0.05,0.1", metadata={"help": "Train,validation,test fractions (by task)."}
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Training sequences are cut to this many tokens (prompt + response); default min(256, n_positions)."
        },
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Longest generated response for the test instructions."})
    max_generate_samples: int | None = field(
        default=None, metadata={"help": "Answer at most this many test instructions."}
    )
    responses_file: str | None = field(
        default=None, metadata={"help": "Where to write the answers; default <output_dir>/test_responses.json."}
    )


def flatten_tasks(tasks: Dataset) -> Dataset:
    """Self-Instruct tasks (instruction + instances[{input, output}]) -> one record per instance."""

    def one_record_per_instance(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"instruction": [], "input": [], "output": []}
        for instruction, instances in zip(batch["instruction"], batch["instances"]):
            for instance in instances:
                out["instruction"].append(instruction)
                out["input"].append(instance.get("input") or "")
                out["output"].append(instance["output"])
        return out

    return tasks.map(
        one_record_per_instance, batched=True, remove_columns=tasks.column_names, desc="One record per task instance"
    )


def load_instruction_splits(
    data: InstructionDataArguments, seed: int, default_file: str | Path | None = None
) -> DatasetDict:
    """Train/validation/test records; `default_file` is read when neither --data_file nor --dataset_name is given."""
    data_file = data.data_file
    if data_file is None and data.dataset_name is None:
        if default_file is None:
            raise ValueError("pass --data_file (JSON/JSONL of {instruction, input, output} records) or --dataset_name")
        data_file = str(default_file)
    rows = load_rows(data_file, data.dataset_name, data.dataset_config_name)
    is_tasks = "instances" in rows.column_names
    require_columns(
        rows, ["instruction", "instances"] if is_tasks else ["instruction", "output"], data_file or data.dataset_name
    )
    if not is_tasks and "input" not in rows.column_names:
        rows = rows.add_column("input", [""] * len(rows))
    # Split before flattening, so every instance of a test instruction stays unseen in training.
    splits = split_train_validation_test(rows, data.split_fractions, seed)
    return DatasetDict(
        {
            name: flatten_tasks(part) if is_tasks else part.select_columns(["instruction", "input", "output"])
            for name, part in splits.items()
        }
    )


def encode_instructions(records: Dataset, tokenizer: Any, max_length: int, what: str) -> Dataset:
    """input_ids and labels (-100 over the prompt) per record; records whose prompt alone fills `max_length`
    have nothing to learn from and are dropped with a warning. `what` names the records in messages."""

    def encode_record(record: dict[str, str]) -> dict[str, list[int]]:
        try:
            return encode_instruction_example(tokenizer, record, max_length=max_length)
        except ValueError:  # the prompt alone fills max_length
            return {"input_ids": [], "labels": []}

    encoded = map_in_memory(records, encode_record, remove_columns=records.column_names, desc=f"Tokenizing {what}")
    kept = encoded.filter(lambda ids: len(ids) > 0, input_columns="input_ids")
    if len(kept) < len(encoded):
        logger.warning(
            "%d %s records dropped: their prompt alone is >= --max_length %d tokens",
            len(encoded) - len(kept),
            what,
            max_length,
        )
    if len(kept) == 0:
        raise ValueError(f"no {what} record fits in --max_length {max_length} tokens; raise --max_length")
    return kept
