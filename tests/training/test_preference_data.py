"""Preference pairs (gptcore.training.preference_data): the rule the bundled Self-Instruct pairs are built by, and a
user's preference file refused unless every field holds text."""

from __future__ import annotations

import json

import pytest

from gptcore.training.preference_data import PreferenceDataArguments, load_preference_splits
from tests.processes import EXAMPLES

SEED_TASKS = EXAMPLES / "data" / "finetune" / "self_instruct_seed_tasks.jsonl"


def test_pairs_match_each_task_with_another_tasks_answer_and_stay_in_their_split():
    splits = load_preference_splits(PreferenceDataArguments(), seed=42, default_file=SEED_TASKS)
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()]
    assert sum(len(pairs) for pairs in splits.values()) == len(tasks) == 175  # one instance per task
    instructions_of = {}  # answer -> the tasks it was written for (two tasks share one answer)
    for task in tasks:
        instructions_of.setdefault(task["instances"][0]["output"], []).append(task["instruction"])
    prompts_by_split = {name: set(pairs["prompt"]) for name, pairs in splits.items()}
    assert not prompts_by_split["train"] & prompts_by_split["test"]
    for name, pairs in splits.items():
        own_answers = set(pairs["chosen"])
        for pair in pairs:
            # chosen: the answer written for this prompt's task; rejected: one written for another task
            assert any(f"### Instruction:\n{i}\n" in pair["prompt"] for i in instructions_of[pair["chosen"]])
            assert pair["rejected"] != pair["chosen"]
            assert not any(f"### Instruction:\n{i}\n" in pair["prompt"] for i in instructions_of[pair["rejected"]])
            assert pair["rejected"] in own_answers, f"a {name} pair borrows its rejected answer from another split"


def test_a_preference_file_needs_text_in_every_field(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello", "rejected": ""}) + "\n")
    with pytest.raises(ValueError, match=r"record 0: 'rejected' must be non-empty text"):
        load_preference_splits(PreferenceDataArguments(data_file=str(path)), seed=0, default_file=SEED_TASKS)
    path.write_text(json.dumps({"prompt": "Hi", "answer": "Hello"}) + "\n")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['chosen', 'rejected'\]"):
        load_preference_splits(PreferenceDataArguments(data_file=str(path)), seed=0, default_file=SEED_TASKS)
