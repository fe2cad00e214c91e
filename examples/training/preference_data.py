"""Preference pairs {prompt, chosen, rejected} for the reward model, DPO and GRPO scripts: read from a file in TRL's
standard preference format, or built from instruction records by one rule (`mismatched_answer_pairs`).

The rule, for the bundled Self-Instruct seed tasks: the prompt is the task's Alpaca prompt (instruction and input, as
instruction tuning formats it), `chosen` is the answer its authors wrote for it, and `rejected` is the answer written
for another task: the next record in the split's seeded order whose instruction and answer both differ. Tasks are split
into train/validation/test before pairing (as `load_instruction_splits` splits them), so a test pair's prompt and both
of its answers come from test tasks only.

What the pairs can teach: to prefer an answer that addresses the prompt over a fluent, human-written answer to some
other question, i.e. relevance. A model can learn much of it from words the prompt and the answer share.
What they cannot teach: which of two answers to the *same* question is better (more correct, helpful, honest,
harmless, better written, of a better length): both answers are always well-formed human text, and no pair compares
two answers to one prompt. A reward model trained on them scores on-topic-ness; DPO on them moves a model towards its
own task's answers and away from off-topic ones, not towards better answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict

from gptcore.tokenization import format_alpaca_prompt
from gptcore.training.data_files import load_rows, require_columns, split_train_validation_test
from gptcore.training.instruction_data import InstructionDataArguments, load_instruction_splits

PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]


@dataclass
class PreferenceDataArguments:
    data_file: str | None = field(
        default=None,
        metadata={
            "help": "JSON/JSONL of {prompt, chosen, rejected} records (TRL's standard preference format), split by "
            "record. Default: pairs built from the bundled Self-Instruct seed tasks (chosen: the task's own answer; "
            "rejected: another task's answer), split by task."
        },
    )
    split_fractions: str = field(
        default="0.85,0.05,0.1",
        metadata={
            "help": "Train,validation,test fractions. The default and --seed split the seed tasks as "
            "examples/finetune_instruction.py does, so the test tasks stay unseen after instruction tuning too."
        },
    )

    @property
    def description(self) -> str:
        """Where the pairs come from, in words (for model cards)."""
        if self.data_file:
            return f"the preference pairs of `{self.data_file}`"
        return "pairs built from the Self-Instruct seed tasks (chosen: the task's own answer; rejected: another task's)"


def mismatched_answer_pairs(records: Dataset) -> Dataset:
    """{prompt, chosen, rejected} per {instruction, input, output} record: its Alpaca prompt, its own output, and the
    output of the next record (cyclically, in `records`' order) whose instruction and output both differ from its
    own."""
    instructions, outputs = records["instruction"], records["output"]
    pairs: dict[str, list[str]] = {name: [] for name in PREFERENCE_COLUMNS}
    for i, record in enumerate(records):
        others = (j % len(records) for j in range(i + 1, i + len(records)))
        other = next((j for j in others if instructions[j] != instructions[i] and outputs[j] != outputs[i]), None)
        if other is None:
            raise ValueError(
                f"{len(records)} records hold no two tasks with different answers: no mismatched pair can be built; "
                "use more tasks or a larger split"
            )
        pairs["prompt"].append(format_alpaca_prompt(record))
        pairs["chosen"].append(outputs[i])
        pairs["rejected"].append(outputs[other])
    return Dataset.from_dict(pairs)


def load_preference_splits(data: PreferenceDataArguments, seed: int, default_file: str | Path) -> DatasetDict:
    """Train/validation/test preference pairs: from --data_file, or by `mismatched_answer_pairs` from the
    Self-Instruct tasks in `default_file`."""
    if data.data_file is None:
        tasks = InstructionDataArguments(data_file=str(default_file), split_fractions=data.split_fractions)
        splits = load_instruction_splits(tasks, seed)
        return DatasetDict({name: mismatched_answer_pairs(records) for name, records in splits.items()})
    rows = load_rows(data.data_file)
    require_columns(rows, PREFERENCE_COLUMNS, data.data_file)
    for column in PREFERENCE_COLUMNS:
        bad = next((i for i, value in enumerate(rows[column]) if not isinstance(value, str) or not value.strip()), None)
        if bad is not None:
            raise ValueError(
                f"{data.data_file}, record {bad}: {column!r} must be non-empty text, got {rows[bad][column]!r}; "
                "conversational (message list) records are not supported here: render them as text first"
            )
    return split_train_validation_test(rows.select_columns(PREFERENCE_COLUMNS), data.split_fractions, seed)
