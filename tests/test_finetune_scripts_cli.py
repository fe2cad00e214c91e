"""Every example script answers --help, and user mistakes end with a message that says what to do.

The scripts run in this process, as `python examples/<script>` would run them, so that these quick checks
do not pay for starting an interpreter each.
"""

from __future__ import annotations

import pytest
from conftest import run_example_in_process

SCRIPTS = ["finetune_clm.py", "finetune_classification.py", "finetune_instruction.py", "evaluate.py", "generate.py", "estimate.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_example_in_process(script, "--help", monkeypatch=monkeypatch)
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage:")
    assert "--model_name_or_path" in shown and "--config_overrides" in shown


def test_missing_checkpoint_says_how_to_get_one(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="examples/pretrain.py.*gptcore.conversion"):
        run_example_in_process("generate.py", "--model_name_or_path", str(tmp_path / "nowhere"), monkeypatch=monkeypatch)


def test_no_model_at_all_is_refused_with_the_options(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="pass --model_name_or_path .*--config_overrides"):
        run_example_in_process("finetune_classification.py", "--output_dir", str(tmp_path), monkeypatch=monkeypatch)


def test_unknown_config_override_is_named(monkeypatch):
    with pytest.raises(ValueError, match="'n_layers' is not a GPTCoreConfig field"):
        run_example_in_process("estimate.py", "--config_overrides", "n_layers=2", monkeypatch=monkeypatch)


def test_missing_data_file_is_named(tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=f"data file {missing} does not exist"):
        run_example_in_process("evaluate.py", "--model_name_or_path", str(tiny_gptcore_checkpoint), "--text_file", str(missing), monkeypatch=monkeypatch)
