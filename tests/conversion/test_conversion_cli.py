"""`python -m gptcore.conversion`: end to end in a subprocess, and its argument handling in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from gptcore.conversion import FORMATS
from gptcore.conversion.cli import main
from tests.conversion.support import assert_parity, book_source, nanogpt_source, token_ids
from tests.oracle import GPT2_VOCAB_SIZE, random_gptcore, save_with_gpt2_tokenizer


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptcore.conversion", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    source = nanogpt_source(tmp_path)
    out = tmp_path / "out"
    result = run_cli(str(source.path), str(out), "--max-shard-size", "20KB")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: GPTCoreForCausalLM" in result.stdout
    card = (out / "README.md").read_text()
    assert "format `nanogpt`" in card and str(source.path) in card and "exact GELU" in card
    assert len(list(out.glob("model-*.safetensors"))) > 1
    ids = token_ids()
    assert_parity(AutoModelForCausalLM.from_pretrained(out), source.reference(ids), ids)


def test_cli_refuses_non_empty_destination(tmp_path, capsys):
    source = nanogpt_source(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    assert main([str(source.path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    assert main([str(source.path), str(tmp_path / "out"), "--overwrite", "--to", "hf-gpt2", "-q"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "gpt2"


def test_help_documents_every_format(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # the help is wrapped; compare word runs
    for fmt in FORMATS.values():
        assert " ".join(f"{fmt.name} {fmt.summary}".split()) in text, fmt.name
    for option in ("--from", "--to", "--dtype", "--max-shard-size", "--overwrite", "--model-config"):
        assert option in text


def test_unknown_from_lists_formats(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), str(tmp_path / "out"), "--from", "keras"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "keras" in err and all(name in err for name in FORMATS)


def test_cli_in_process_with_model_config_and_errors(tmp_path, capsys):
    source = book_source(tmp_path, config_name="book.json")  # not found unless --model-config names it
    out = tmp_path / "out"
    assert main([str(source.path), str(out), "--model-config", str(tmp_path / "book.json"), "-q"]) == 0
    ids = token_ids()
    assert_parity(AutoModelForCausalLM.from_pretrained(out), source.reference(ids), ids)
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "out2")]) == 1
    assert "missing.pth does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_chat_template_travels_with_the_tokenizer(tmp_path):
    """An instruction-tuned folder keeps its chat template through conversion (transformers 5 stores it in its own
    file)."""
    from transformers import AutoTokenizer

    from gptcore.tokenization import ALPACA_CHAT_TEMPLATE

    source = save_with_gpt2_tokenizer(random_gptcore(vocab_size=GPT2_VOCAB_SIZE), tmp_path / "instruct")
    assert AutoTokenizer.from_pretrained(source).chat_template == ALPACA_CHAT_TEMPLATE
    assert main([str(source), str(tmp_path / "gpt2"), "--to", "hf-gpt2", "-q"]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "gpt2").chat_template == ALPACA_CHAT_TEMPLATE
