"""Every example script answers --help, and user mistakes end with a message that says what to do.

The scripts run in this process, as `python examples/<script>` would run them, so that these quick checks
do not pay for starting an interpreter each.
"""

from __future__ import annotations

import pytest
from tests.processes import EXAMPLES, run_example_in_process

SCRIPTS = ["finetune_clm.py", "finetune_classification.py", "finetune_instruction.py", "perplexity.py", "generate.py", "estimate.py"]


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
        run_example_in_process("perplexity.py", "--model_name_or_path", str(tiny_gptcore_checkpoint), "--text_file", str(missing), monkeypatch=monkeypatch)


@pytest.mark.parametrize("script", ["finetune_clm.py", "finetune_classification.py", "finetune_instruction.py"])
def test_non_empty_output_dir_is_refused_unless_overwrite(script, tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "earlier_run.json").write_text("{}")
    with pytest.raises(ValueError, match=f"output directory {tmp_path} is not empty; pass --overwrite_output_dir"):
        run_example_in_process(script, "--model_name_or_path", str(tiny_gptcore_checkpoint), "--output_dir", str(tmp_path), monkeypatch=monkeypatch)
    assert [p.name for p in tmp_path.iterdir()] == ["earlier_run.json"]  # nothing written, nothing deleted


def test_overwrite_output_dir_or_resuming_lets_a_run_use_a_non_empty_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    from transformers import TrainingArguments
    from gptcore.training.finetuning import OutputArguments, check_output_dir

    (tmp_path / "checkpoint-10").mkdir()
    check_output_dir(TrainingArguments(output_dir=str(tmp_path)), OutputArguments(overwrite_output_dir=True))
    check_output_dir(TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint=str(tmp_path / "checkpoint-10")), OutputArguments())
    with pytest.raises(ValueError, match="is not empty"):
        check_output_dir(TrainingArguments(output_dir=str(tmp_path)), OutputArguments())
