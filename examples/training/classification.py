"""Fine-tuning a text classifier: labeled rows from a CSV/TSV file or Hub dataset, optionally deduplicated and
balanced, split train/validation/test (or read from separate files), and tokenized with their labels; which weights
train (all, or the book's last block only); and how it is scored (accuracy and F1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import EvalPrediction

from gptcore.modeling import GPTCoreForSequenceClassification
from gptcore.training.data_files import load_rows, map_in_memory, require_columns, split_train_validation_test


@dataclass
class ClassificationDataArguments:
    data_file: str | None = field(
        default=None, metadata={"help": "Labeled .csv/.tsv file. Default: the script's bundled data set."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Validation rows (give --test_file too); default: split."}
    )
    test_file: str | None = field(
        default=None, metadata={"help": "Test rows (give --validation_file too); default: split."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset (its 'train' split) instead of a file."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    column_names: str | None = field(
        default=None, metadata={"help": "Comma-separated column names for a file without a header row."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text to classify."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class (names or integers)."})
    deduplicate: bool = field(default=True, metadata={"help": "Drop rows whose text already appeared."})
    balance: bool = field(
        default=True, metadata={"help": "Undersample every class to the size of the rarest (seeded)."}
    )
    split_fractions: str = field(
        default="0.7,0.1,0.2", metadata={"help": "Train,validation,test fractions (after balancing)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Texts are truncated to this many tokens; default min(128, n_positions)."}
    )
    train_last_block_only: bool = field(
        default=False,
        metadata={"help": "Freeze everything but the last block, the final LayerNorm and the classification head."},
    )


def deduplicate(rows: Dataset, text_column: str) -> Dataset:
    """The first row of each distinct text."""
    seen: set[str] = set()

    def first_time(text: str) -> bool:
        new = text not in seen
        seen.add(text)
        return new

    return rows.filter(first_time, input_columns=text_column, desc="Dropping duplicate texts")


def balance(rows: Dataset, label_column: str, seed: int) -> Dataset:
    """Every class undersampled (seeded) to the size of the rarest; rows keep their order."""
    labels = np.array(rows[label_column])
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[: counts.min()] for c in classes]
    return rows.select(np.sort(np.concatenate(keep)))


def load_classification_splits(
    data: ClassificationDataArguments,
    seed: int,
    default_file: str | Path | None = None,
    default_file_columns: list[str] | None = None,
) -> DatasetDict:
    """Train/validation/test rows of (text, label), labels as a `ClassLabel` (names sorted, numbered from 0).

    `default_file` (with `default_file_columns` when it has no header row) is read when neither --data_file nor
    --dataset_name is given."""
    names = data.column_names.split(",") if data.column_names else None
    data_file = data.data_file
    if data_file is None and data.dataset_name is None:
        if default_file is None:
            raise ValueError("pass --data_file (a labeled .csv/.tsv file) or --dataset_name")
        data_file, names = str(default_file), names or default_file_columns
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
            held_out[split] = part.select_columns(columns).cast_column(
                data.label_column, rows.features[data.label_column]
            )
        return DatasetDict(train=rows, **held_out)
    return split_train_validation_test(rows, data.split_fractions, seed)


def encode_texts(
    splits: DatasetDict, tokenizer: Any, text_column: str, label_column: str, max_length: int
) -> DatasetDict:
    """Each split as input_ids, attention_mask and labels, texts truncated to `max_length` tokens."""

    def encode_batch(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch[text_column], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch[label_column]}

    return DatasetDict(
        {
            name: map_in_memory(
                rows, encode_batch, batched=True, remove_columns=rows.column_names, desc=f"Tokenizing {name}"
            )
            for name, rows in splits.items()
        }
    )


def accuracy_and_f1(predicted: np.ndarray, actual: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, and F1: of class 1 for two classes (e.g. spam = positive), macro-averaged over classes for more."""
    classes = [1] if num_labels == 2 else range(num_labels)
    f1s = []
    for c in classes:
        true_positives = np.sum((predicted == c) & (actual == c))
        denominator = np.sum(predicted == c) + np.sum(actual == c)
        f1s.append(2 * true_positives / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(predicted == actual)), "f1": float(np.mean(f1s))}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer`'s metrics from the logits: `accuracy_and_f1` of the most likely class."""
    logits = prediction.predictions
    return accuracy_and_f1(np.argmax(logits, axis=-1), prediction.label_ids, logits.shape[-1])


def freeze_all_but_last_block(model: GPTCoreForSequenceClassification) -> None:
    """Train only the last transformer block, the final LayerNorm and the new head, as the book's chapter 6 does."""
    model.requires_grad_(False)
    for module in (model.transformer.h[-1], model.transformer.ln_f, model.score):
        module.requires_grad_(True)
