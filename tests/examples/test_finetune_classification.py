"""examples/finetune_classification.py end to end, on the bundled SMS Spam Collection and on a user's CSV."""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter

import pytest
import torch
from transformers import AutoTokenizer

from gptcore.modeling import GPTCoreForCausalLM, GPTCoreForSequenceClassification
from gptcore.training.classification import ClassificationDataArguments, load_classification_splits
from tests.examples.trainer_flags import QUIET_TRAINER
from tests.processes import EXAMPLES, run_example, run_example_in_process

SMS = EXAMPLES / "data" / "finetune" / "sms_spam_collection.tsv"
COMMON = ["--max_length", "32", "--per_device_eval_batch_size", "64", *QUIET_TRAINER]


def expected_sms_split() -> dict[str, int]:
    """The book's recipe, computed here independently: first occurrence of each text, ham undersampled
    to the number of spam messages, 70% / 10% / rest."""
    seen, labels = set(), Counter()
    with SMS.open(newline="", encoding="utf-8") as f:
        for label, text in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if text not in seen:
                seen.add(text)
                labels[label] += 1
    total = 2 * min(labels.values())
    train, validation = int(total * 0.7), int(total * 0.1)
    return {"train": train, "validation": validation, "test": total - train - validation}


@torch.no_grad()
def accuracy_and_spam_f1(folder, texts: list[str], labels: list[int], max_length: int) -> tuple[float, float]:
    """Scored here from the saved classifier's own predictions, one text at a time (no padding at all)."""
    model = GPTCoreForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    predicted = [
        model(tokenizer(t, return_tensors="pt", truncation=True, max_length=max_length).input_ids)
        .logits.argmax()
        .item()
        for t in texts
    ]
    hits = sum(p == y for p, y in zip(predicted, labels))
    both_spam = sum(p == y == 1 for p, y in zip(predicted, labels))
    return hits / len(labels), 2 * both_spam / (predicted.count(1) + labels.count(1))


@pytest.mark.slow
def test_sms_spam_last_block_only(tiny_gptcore_checkpoint, tmp_path):
    out = tmp_path / "spam"
    result = run_example(
        "finetune_classification.py",
        "--model_name_or_path",
        str(tiny_gptcore_checkpoint),
        "--train_last_block_only",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--output_dir",
        str(out),
        *COMMON,
    )
    printed = {
        m[0]: (int(m[1]), int(m[2]), int(m[3]))
        for m in re.findall(r"^(\w+): (\d+) rows, (\d+) ham, (\d+) spam", result.stdout, re.M)
    }
    expected = expected_sms_split()
    assert {split: rows for split, (rows, _, _) in printed.items()} == expected
    assert sum(ham for _, ham, _ in printed.values()) == sum(spam for _, _, spam in printed.values())  # balanced

    # The reported test figures are those of the saved model's predictions on the test split (seed 42, the default).
    test = load_classification_splits(
        ClassificationDataArguments(), seed=42, default_file=SMS, default_file_columns=["label", "text"]
    )["test"]
    assert len(test) == expected["test"]
    accuracy, f1 = accuracy_and_spam_f1(out, test["text"], test["label"], max_length=32)
    reported = json.loads((out / "test_results.json").read_text())
    assert math.isclose(reported["test_accuracy"], accuracy, abs_tol=1e-9), (reported, accuracy)
    assert math.isclose(reported["test_f1"], f1, abs_tol=1e-9), (reported, f1)
    assert f"test accuracy {accuracy:.1%}, F1 {f1:.3f}" in result.stdout

    trained = GPTCoreForSequenceClassification.from_pretrained(out)
    assert trained.config.id2label == {0: "ham", 1: "spam"}
    original = GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint).transformer.state_dict()
    now = trained.transformer.state_dict()
    frozen = [k for k in original if not k.startswith(("h.1.", "ln_f."))]
    assert all(now[k].equal(original[k]) for k in frozen), "weights outside the last block changed"
    assert not now["h.1.attn.c_attn.weight"].equal(original["h.1.attn.c_attn.weight"]), "the last block did not train"


def test_any_labeled_csv_with_separate_held_out_files(tiny_gptcore_checkpoint, tmp_path, monkeypatch, capsys):
    # Three texts, one per class, that differ in their last token (the one the classifier reads): a few
    # steps must separate them, so the test split (the same texts) is classified without a mistake.
    rows = [("great movie, loved it", "positive"), ("terrible plot", "negative"), ("it was fine", "neutral")] * 10
    for name, part in (("train", rows), ("val", rows[:6]), ("test", rows[6:12])):
        with (tmp_path / f"{name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "sentiment"])
            writer.writerows(part)
    out = tmp_path / "reviews"
    run_example_in_process(
        "finetune_classification.py",
        "--model_name_or_path",
        str(tiny_gptcore_checkpoint),
        "--data_file",
        str(tmp_path / "train.csv"),
        "--validation_file",
        str(tmp_path / "val.csv"),
        "--test_file",
        str(tmp_path / "test.csv"),
        "--text_column",
        "review",
        "--label_column",
        "sentiment",
        "--no_deduplicate",
        "--max_steps",
        "20",
        "--learning_rate",
        "1e-2",
        "--output_dir",
        str(out),
        *COMMON,
        monkeypatch=monkeypatch,
    )
    assert "train: 30 rows, 10 negative, 10 neutral, 10 positive" in capsys.readouterr().out
    assert GPTCoreForSequenceClassification.from_pretrained(out).config.id2label == {
        0: "negative",
        1: "neutral",
        2: "positive",
    }
    metrics = json.loads((out / "test_results.json").read_text())
    assert metrics["test_accuracy"] == 1.0 and metrics["test_f1"] == 1.0, metrics  # chance is 1/3
