"""`python -m gptcore.conversion`: end to end in a subprocess, and its argument handling in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from gptcore.conversion import FORMATS
from gptcore.conversion.cli import main
from tests.conversion.support import (
    TOL,
    book_config,
    book_forward,
    book_state_dict,
    logits_of,
    nanogpt_checkpoint,
    nanogpt_forward,
    nanogpt_state_dict,
    token_ids,
)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gptcore.conversion", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_end_to_end(tmp_path):
    sd = nanogpt_state_dict()
    torch.save(nanogpt_checkpoint(sd), tmp_path / "ckpt.pt")
    result = run_cli(str(tmp_path / "ckpt.pt"), str(tmp_path / "out"), "--max-shard-size", "20KB")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    card = (tmp_path / "out" / "README.md").read_text()
    assert "format `nanogpt`" in card and str(tmp_path / "ckpt.pt") in card and "exact GELU" in card
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) > 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = token_ids()
    assert (logits_of(model, ids) - nanogpt_forward(sd, ids)).abs().max() <= TOL


def test_cli_refuses_non_empty_destination(tmp_path, capsys):
    torch.save(nanogpt_checkpoint(nanogpt_state_dict()), tmp_path / "ckpt.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    assert main([str(tmp_path / "ckpt.pt"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    assert main([str(tmp_path / "ckpt.pt"), str(tmp_path / "out"), "--overwrite", "--to", "hf-gpt2", "-q"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "gpt2"


def test_help_documents_every_format(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for fmt in FORMATS.values():
        assert fmt.name in text and fmt.summary.split()[1] in text
    for option in ("--from", "--to", "--dtype", "--max-shard-size", "--overwrite", "--model-config"):
        assert option in text


def test_unknown_from_lists_formats(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), str(tmp_path / "out"), "--from", "keras"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "keras" in err and all(name in err for name in FORMATS)


def test_cli_in_process_with_model_config_and_errors(tmp_path, capsys):
    sd = book_state_dict()
    torch.save(sd, tmp_path / "model.pth")
    (tmp_path / "cfg.json").write_text(json.dumps(book_config()))
    assert (
        main([str(tmp_path / "model.pth"), str(tmp_path / "out"), "--model-config", str(tmp_path / "cfg.json"), "-q"])
        == 0
    )
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = token_ids()
    assert (logits_of(model, ids) - book_forward(sd, ids)).abs().max() <= TOL
    assert main([str(tmp_path / "missing.pth"), str(tmp_path / "out2")]) == 1
    assert "missing.pth does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
