"""Reading the example scripts' data: local files (text, CSV/TSV, JSON/JSONL) or a Hub dataset, as `datasets`
rows; the checks that name a bad file and what is wrong with it; seeded train/validation/test splits.

One reader serves every script. `load_rows` gives one split from one file of any of those kinds, or from a Hub
dataset (the fine-tuning and perplexity scripts); `load_text_datasets` gives pretraining's training and validation
text from several files each, read as plain text whatever their suffix, or from a Hub dataset's splits, streamed if
asked. Both check local files with `check_file` and read them with `read_files`.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset
from datasets.exceptions import DatasetGenerationError

_TEXT_SUFFIXES = (".txt", ".text", ".md")
_TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t"}
_JSON_SUFFIXES = (".json", ".jsonl")
# How a missing or an empty file is reported, (noun, what to do if missing, what to do if empty): for files of any
# kind (a fine-tuning script's --*_file options), and for pretraining's --train_files/--validation_files, plain text.
_ANY_KIND = ("data file", "pass the path of a .txt, .csv, .tsv, .json or .jsonl file", "pass a file with data in it")
_PLAIN_TEXT = ("text file", "pass existing files to --train_files/--validation_files", "pass files with text in them")


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
    kind = check_file(path, column_names)
    try:
        rows = read_files({"train": [str(path)]}, kind, sample_by, column_names)["train"]
    except (DatasetGenerationError, ValueError) as err:
        cause = err.__cause__ or err
        raise ValueError(
            f"cannot read {path} as a {path.suffix.lower()} file ({type(cause).__name__}: {cause}); fix the file or "
            "convert it"
        ) from err
    if len(rows) == 0:
        raise ValueError(f"data file {path} holds no rows; pass a file with data in it")
    return rows


def load_text_datasets(
    train_files: list[str] | None,
    validation_files: list[str] | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
    text_column: str,
    sample_by: str,
    streaming: bool,
) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset | None]:
    """(train, validation or None) rows of raw text, from local text files or a Hub dataset; there is no default
    (a script that has one, such as examples/pretrain.py with its bundled books, passes it as `train_files`)."""
    if dataset_name is not None:
        if train_files or validation_files:
            raise ValueError("pass either --dataset_name or --train_files/--validation_files, not both")
        raw = load_dataset(dataset_name, dataset_config_name, streaming=streaming)
        if "train" not in raw:
            raise ValueError(
                f"dataset {dataset_name!r} has no 'train' split (it has {sorted(raw)}); pick another dataset"
            )
    else:
        if not train_files:
            raise ValueError(
                "no training data: pass --train_files (local text files) or --dataset_name (a Hub dataset)"
            )
        files = {"train": train_files, **({"validation": validation_files} if validation_files else {})}
        for path in (path for paths in files.values() for path in paths):
            check_file(Path(path), plain_text=True)
        raw = read_files(files, ".txt", sample_by, streaming=streaming)
    train, validation = raw["train"], raw.get("validation")
    for name, split in (("train", train), ("validation", validation)):
        columns = split.column_names if split is not None else None
        if columns is not None and text_column not in columns:
            raise ValueError(f"the {name} split has no column {text_column!r} (it has {columns}); pass --text_column")
    return train, validation


def check_file(path: Path, column_names: list[str] | None = None, plain_text: bool = False) -> str:
    """How `read_files` reads `path` (".txt", ".csv", ".tsv", ".json" or ".jsonl"), once it is known to exist, to be
    of a kind that can be read, and to hold data: a table more than its header row, JSON records where it should.
    `plain_text`: the file is text whatever its suffix (pretraining's --train_files/--validation_files)."""
    noun, if_missing, if_empty = _PLAIN_TEXT if plain_text else _ANY_KIND
    if not path.is_file():
        raise FileNotFoundError(f"{noun} {path} does not exist; {if_missing}")
    suffix = ".txt" if plain_text else path.suffix.lower()
    if suffix not in (*_TEXT_SUFFIXES, *_TABLE_SEPARATORS, *_JSON_SUFFIXES):
        raise ValueError(
            f"cannot read {path}: unknown file type {suffix!r}; use .txt (text), .csv/.tsv (tables) or .json/.jsonl "
            "(records)"
        )
    lines = non_blank_lines(path)
    if next(lines, None) is None:
        raise ValueError(f"{noun} {path} is empty; {if_empty}")
    if suffix in _TABLE_SEPARATORS and not column_names and next(lines, None) is None:
        raise ValueError(f"data file {path} holds a header row and no data; pass a file with data in it")
    if suffix in _JSON_SUFFIXES:
        check_json(path)  # datasets' own error names neither the file's line nor what is wrong there
    return ".txt" if suffix in _TEXT_SUFFIXES else suffix


def read_files(
    files: dict[str, list[str]],
    kind: str,
    sample_by: str = "paragraph",
    column_names: list[str] | None = None,
    streaming: bool = False,
) -> DatasetDict | IterableDatasetDict:
    """The splits of checked local files of one `kind` (what `check_file` says), `files` mapping each split to its
    files. Text becomes one row per `sample_by`, its line breaks kept (verse and plays are mostly line breaks; a model
    should learn them too)."""
    if kind in _TABLE_SEPARATORS:
        separator = _TABLE_SEPARATORS[kind]
        options: dict[str, Any] = {"header": None, "names": column_names} if column_names else {}
        # TSV files carry text verbatim, quote characters included; CSV files quote fields that need it.
        quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
        return load_dataset("csv", data_files=files, sep=separator, quoting=quoting, streaming=streaming, **options)
    if kind in _JSON_SUFFIXES:
        return load_dataset("json", data_files=files, streaming=streaming)
    return load_dataset("text", data_files=files, sample_by=sample_by, keep_linebreaks=True, streaming=streaming)


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
