"""Checkpoints of pretraining (gptcore.training.checkpoints): which folder `latest` resumes from, what pruning keeps,
and resuming with other data settings refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptcore.training.checkpoints import COMPLETE_MARKER, TrainingProgress, prune_checkpoints, resolve_checkpoint


def _checkpoint(root: Path, name: str, complete: bool) -> Path:
    path = root / name
    path.mkdir(parents=True)
    if complete:
        (path / COMPLETE_MARKER).write_text("{}")
    return path


def test_latest_is_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    assert resolve_checkpoint("latest", tmp_path / "checkpoints") is None
    _checkpoint(tmp_path, "step-2", complete=True)
    newest = _checkpoint(tmp_path, "step-10", complete=True)
    incomplete = _checkpoint(tmp_path, "step-12", complete=False)
    _checkpoint(tmp_path, ".tmp-step-14", complete=True)
    assert resolve_checkpoint("latest", tmp_path) == newest
    assert resolve_checkpoint(str(newest), tmp_path) == newest
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(str(incomplete), tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "step-99"), tmp_path)
    prune_checkpoints(tmp_path, keep=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-10", "step-12"]


def test_resuming_with_other_data_settings_is_refused() -> None:
    saved = TrainingProgress({"seed": 1, "batch_size": 8, "train_files": ["a.txt"]})
    saved.step = 5
    state = json.loads(json.dumps(saved.state_dict()))  # as a checkpoint keeps it
    resumed = TrainingProgress({"seed": 1, "batch_size": 16, "train_files": ["a.txt"]})
    with pytest.raises(ValueError, match="--batch_size was 8, now 16"):
        resumed.load_state_dict(state)
    same = TrainingProgress({"seed": 1, "batch_size": 8, "train_files": ["a.txt"]})
    same.load_state_dict(state)
    assert same.step == 5
