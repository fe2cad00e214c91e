"""Reading the example scripts' data: a local file (text, CSV/TSV, JSON/JSONL) or a Hub dataset, as a
`datasets.Dataset`, and seeded train/validation/test splits."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

_TEXT_SUFFIXES = (".txt", ".text", ".md")
_TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t"}
_JSON_SUFFIXES = (".json", ".jsonl")


def load_rows(
    data_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    split: str = "train",
    column_names: list[str] | None = None,
    sample_by: str = "paragraph",
) -> Dataset:
    """Rows of a local file, or of one split of a Hub dataset.

    Text files become one row (column "text") per `sample_by`: "paragraph" (split at blank lines), "document"
    (the whole file) or "line", line breaks kept; CSV/TSV files need a header row unless `column_names` names
    the columns; JSON files hold a list of objects, JSONL one per line.
    """
    if (data_file is None) == (dataset_name is None):
        raise ValueError("pass either a data file or a Hub dataset name (--dataset_name), exactly one of them")
    if dataset_name is not None:
        return load_dataset(dataset_name, dataset_config_name, split=split)
    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {path} does not exist; pass the path of a .txt, .csv, .tsv, .json or .jsonl file"
        )
    suffix = path.suffix.lower()
    if suffix not in (*_TEXT_SUFFIXES, *_TABLE_SEPARATORS, *_JSON_SUFFIXES):
        raise ValueError(
            f"cannot read {path}: unknown file type {suffix!r}; use .txt (text), .csv/.tsv (tables) or .json/.jsonl "
            "(records)"
        )
    lines = non_blank_lines(path)
    if next(lines, None) is None:
        raise ValueError(f"data file {path} is empty; pass a file with data in it")
    if suffix in _TABLE_SEPARATORS and not column_names and next(lines, None) is None:
        raise ValueError(f"data file {path} holds a header row and no data; pass a file with data in it")
    if suffix in _JSON_SUFFIXES:
        check_json(path)  # datasets' own error names neither the file's line nor what is wrong there
    try:
        if suffix in _TEXT_SUFFIXES:
            rows = load_dataset("text", data_files=str(path), sample_by=sample_by, keep_linebreaks=True, split="train")
        elif suffix in _TABLE_SEPARATORS:
            separator = _TABLE_SEPARATORS[suffix]
            options = {"header": None, "names": column_names} if column_names else {}
            # TSV files carry text verbatim, quote characters included; CSV files quote fields that need it.
            quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
            rows = load_dataset("csv", data_files=str(path), sep=separator, quoting=quoting, split="train", **options)
        else:
            rows = load_dataset("json", data_files=str(path), split="train")
    except (DatasetGenerationError, ValueError) as err:
        cause = err.__cause__ or err
        raise ValueError(
            f"cannot read {path} as a {suffix} file ({type(cause).__name__}: {cause}); fix the file or convert it"
        ) from err
    if len(rows) == 0:
        raise ValueError(f"data file {path} holds no rows; pass a file with data in it")
    return rows


def non_blank_lines(path: Path) -> Iterator[bytes]:
    """The lines of `path` that hold more than whitespace, read lazily: checking that a corpus of
    gigabytes is not empty reads its first lines only."""
    with open(path, "rb") as f:
        yield from (line for line in f if line.strip())


def check_json(path: Path) -> None:
    """Raise a ValueError naming where `path` is neither one JSON document of records nor JSON Lines of records."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):  # meant as one array of records
                raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); fix the file") from None
            document = None  # perhaps JSON Lines in a .json file: checked line by line below
        if isinstance(document, dict):  # one object (a record, or columns of values): datasets reads those
            return
        if document is not None:
            if not isinstance(document, list):
                raise ValueError(f"{path}: expected a JSON array of objects (records), got {type(document).__name__}")
            check_records(path, ((f"record {i}", record) for i, record in enumerate(document)))
            return
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON ({err.msg}); a JSON Lines file holds one complete object "
                    "per line"
                ) from None
    check_records(path, records)


def check_records(path: Path, records: Iterable[tuple[str, Any]]) -> None:
    for where, record in records:
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}, {where}: expected a JSON object (a record with named fields), got {type(record).__name__}"
            )


def require_columns(rows: Dataset, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise ValueError(
            f"{source} has no column(s) {missing}; its columns are {rows.column_names}. "
            "Name the right ones with the script's --*_column options"
        )


def split_by_fractions(rows: Dataset, fractions: dict[str, float], seed: int) -> DatasetDict:
    """Shuffle with `seed`, then cut consecutive pieces of the given fractions (the last takes the rest)."""
    if any(f <= 0 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
        raise ValueError(f"split fractions must be positive and sum to at most 1, got {fractions}")
    shuffled = rows.shuffle(seed=seed)
    names = list(fractions)
    pieces, start = {}, 0
    for i, name in enumerate(names):
        end = len(shuffled) if i == len(names) - 1 else start + int(len(shuffled) * fractions[name])
        if end <= start:
            raise ValueError(
                f"{len(rows)} rows are too few for a {name!r} split of {fractions[name]:.0%}; use more data"
            )
        pieces[name] = shuffled.select(range(start, end))
        start = end
    return DatasetDict(pieces)


def split_train_validation_test(rows: Dataset, fractions: str, seed: int) -> DatasetDict:
    """`fractions` as given on the command line, e.g. "0.7,0.1,0.2" (train, validation, test)."""
    values = [float(f) for f in fractions.split(",")]
    if len(values) != 3:
        raise ValueError(f"--split_fractions needs three numbers (train,validation,test), got {fractions!r}")
    return split_by_fractions(rows, dict(zip(("train", "validation", "test"), values)), seed)


def map_in_memory(rows: Dataset, function: Callable, **map_kwargs) -> Dataset:
    """`rows.map(function, ...)`, kept in memory and never cached.

    For functions that carry a tokenizer, over data small enough to redo every run: otherwise datasets
    pickles the whole tokenizer (50k-entry vocabulary and merges) to fingerprint each call, for seconds,
    only to key a cache these data do not need.
    """
    return rows.map(function, keep_in_memory=True, new_fingerprint=uuid.uuid4().hex, **map_kwargs)
