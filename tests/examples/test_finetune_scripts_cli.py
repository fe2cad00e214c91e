"""The example scripts share one set of model flags, and user mistakes end with a message that says what to do.

The scripts run in this process, as `python examples/<script>` would run them, so that these quick checks
do not pay for starting an interpreter each.
"""

from __future__ import annotations

import ast
import dataclasses
import re

import pytest

from gptcore.modeling import PRESETS
from gptcore.training.arguments import ModelArguments, check_output_dir
from tests.processes import EXAMPLES, run_example_in_process

FINETUNING = [
    "finetune_clm.py",
    "finetune_classification.py",
    "finetune_instruction.py",
    "train_reward_model.py",
    "finetune_dpo.py",
    "finetune_grpo.py",
]
SCRIPTS = [*FINETUNING, "perplexity.py", "generate.py", "estimate.py"]


def test_every_script_documents_itself_and_takes_the_shared_model_flags(monkeypatch, capsys):
    model_flags = [f"--{field.name}" for field in dataclasses.fields(ModelArguments)]
    for script in SCRIPTS:
        with pytest.raises(SystemExit) as exit_info:
            run_example_in_process(script, "--help", monkeypatch=monkeypatch)
        assert exit_info.value.code == 0
        shown = capsys.readouterr().out
        flat = " ".join(shown.split())  # argparse wraps the help text
        summary = ast.get_docstring(ast.parse((EXAMPLES / script).read_text())).splitlines()[0]
        assert summary in shown, f"{script} --help lacks its description"
        missing = [flag for flag in model_flags if not re.search(rf"^\s+{flag}\b", shown, re.M)]
        assert not missing, f"{script} --help lacks the shared model flags {missing}"
        assert f"one of {', '.join(PRESETS)}, or a config.json" in flat, (
            f"{script} --config does not list the model sizes"
        )
        if script in FINETUNING:
            for flag in ("--output_dir", "--overwrite_output_dir", "--learning_rate", "--resume_from_checkpoint"):
                assert re.search(rf"^\s+{flag}\b", shown, re.M), f"{script} --help lacks {flag}"


def test_missing_checkpoint_says_how_to_get_one(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="examples/pretrain.py.*gptcore.conversion"):
        run_example_in_process(
            "generate.py", "--model_name_or_path", str(tmp_path / "nowhere"), monkeypatch=monkeypatch
        )


def test_no_model_at_all_is_refused_with_the_options(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="pass --model_name_or_path .*--config_overrides"):
        run_example_in_process("finetune_classification.py", "--output_dir", str(tmp_path), monkeypatch=monkeypatch)


def test_unknown_config_override_is_named(monkeypatch):
    with pytest.raises(ValueError, match="'n_layers' is not a GPTCoreConfig field"):
        run_example_in_process("estimate.py", "--config_overrides", "n_layers=2", monkeypatch=monkeypatch)


def test_missing_data_file_is_named(tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=f"data file {missing} does not exist"):
        run_example_in_process(
            "perplexity.py",
            "--model_name_or_path",
            str(tiny_gptcore_checkpoint),
            "--text_file",
            str(missing),
            monkeypatch=monkeypatch,
        )


@pytest.mark.parametrize("script", FINETUNING)
def test_non_empty_output_dir_is_refused_unless_overwrite(script, tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "earlier_run.json").write_text("{}")
    with pytest.raises(
        ValueError, match=rf"output directory {re.escape(str(tmp_path))} is not empty; pass .*--overwrite_output_dir"
    ):
        run_example_in_process(
            script,
            "--model_name_or_path",
            str(tiny_gptcore_checkpoint),
            "--output_dir",
            str(tmp_path),
            monkeypatch=monkeypatch,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["earlier_run.json"]  # nothing written, nothing deleted


def test_overwrite_output_dir_or_resuming_lets_a_run_use_a_non_empty_dir(tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    check_output_dir(tmp_path, resume=False, overwrite=True)
    check_output_dir(tmp_path, resume=True, overwrite=False)
    check_output_dir(tmp_path / "new", resume=False, overwrite=False)
    with pytest.raises(ValueError, match="is not empty"):
        check_output_dir(tmp_path, resume=False, overwrite=False)
