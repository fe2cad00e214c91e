"""Reading data (gptcore.training.data_files): bad data files end in a ValueError that names the file and what is
wrong, never in datasets' internals; pretraining's text has no default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptcore.tokenization import gpt2_tokenizer
from gptcore.training.data_files import load_rows, load_text_datasets, require_columns
from gptcore.training.instruction_data import InstructionDataArguments, load_instruction_splits
from gptcore.training.language_modeling import pack_into_blocks, tokenize_documents

RECORD = json.dumps({"instruction": "Name a colour.", "output": "Blue."})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "", "is empty"),
        ("blank.jsonl", "\n  \n", "is empty"),
        ("empty.csv", "", "is empty"),
        ("header_only.csv", "text,label\n", "holds a header row and no data"),
        ("cut.jsonl", RECORD + '\n{"instruction": "Say hi", "output": \n', r"cut.jsonl, line 2: not valid JSON"),
        ("list_line.jsonl", RECORD + "\n[1, 2]\n", r"line 2: expected a JSON object .* got list"),
        ("broken.json", "[" + RECORD + ",\n" + RECORD + " " + RECORD + "]", r"broken.json, line 2: not valid JSON"),
        ("numbers.json", "[1, 2]", r"record 0: expected a JSON object"),
        ("data.parquet", "x", "unknown file type '.parquet'"),
    ],
)
def test_bad_data_files_are_refused_with_what_is_wrong(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_rows(str(path))


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path: Path) -> None:
    path = tmp_path / "spam.csv"
    path.write_text("message,kind\nhello,ham\n")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['label'\]; its columns are \['message', 'kind'\]"):
        require_columns(load_rows(str(path)), ["label"], str(path))


def test_instruction_records_without_an_output_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"instruction": "Name a colour.", "answer": "Blue."}) + "\n")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['output'\]"):
        load_instruction_splits(InstructionDataArguments(data_file=str(path)), seed=0)


def test_pretraining_refuses_an_empty_text_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text(" \n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        load_text_datasets([str(tmp_path / "empty.txt")], None, None, None, "text", "document", streaming=False)


def test_pretraining_refuses_a_missing_text_column(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Some text.\n")
    with pytest.raises(ValueError, match="has no column 'body' .*--text_column"):
        load_text_datasets([str(tmp_path / "a.txt")], None, None, None, "body", "document", streaming=False)


def test_pretraining_refuses_text_shorter_than_one_block(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("Only a few words here.\n")
    train, _ = load_text_datasets([str(tmp_path / "short.txt")], None, None, None, "text", "document", streaming=False)
    documents = tokenize_documents(train, gpt2_tokenizer(), "text", num_proc=None)
    with pytest.raises(ValueError, match="the validation text is shorter than one block of 128 tokens; .*--block_size"):
        pack_into_blocks(documents, block_size=128, num_proc=None, what="validation")


def test_without_training_files_the_engine_has_no_default_data() -> None:
    """The bundled books are examples/pretrain.py's default; the installed package knows no path into examples/."""
    with pytest.raises(ValueError, match="no training data: pass --train_files .* or --dataset_name"):
        load_text_datasets(None, None, None, None, "text", "document", streaming=False)
