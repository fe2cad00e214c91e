"""Checkpoints of examples/pretrain.py: written atomically, resolved, pruned; and stopping on a signal.

A checkpoint is `accelerator.save_state` into `checkpoints/.tmp-step-N`, then a marker file written last,
then a rename to `checkpoints/step-N`. A folder without the marker (a crash mid-write) is never resumed
from, and the previous checkpoint is deleted only once the new one is complete.

Where training stands is saved as JSON beside accelerate's files, not through `register_for_checkpointing`:
accelerate unpickles registered objects with `weights_only=False`, which would run code from a tampered
checkpoint; everything else in the folder it reads with `weights_only=True` or as safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from accelerate import Accelerator

COMPLETE_MARKER = "checkpoint_complete.json"
PROGRESS_FILE = "training_progress.json"
_STEP_DIR = re.compile(r"step-(\d+)")


class TrainingProgress:
    """Where training stands: saved in every checkpoint as PROGRESS_FILE.

    `run_settings` are the arguments that fix the data order; resuming with different ones would not
    continue the same run, so `load_state_dict` refuses it.
    """

    def __init__(self, run_settings: dict[str, Any]) -> None:
        self.run_settings = run_settings
        self.step = 0  # optimizer steps done
        self.epoch = 0
        self.batches_into_epoch = 0  # micro-batches of `epoch` already consumed
        self.tokens_seen = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batches_into_epoch": self.batches_into_epoch,
            "tokens_seen": self.tokens_seen,
            "run_settings": self.run_settings,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["run_settings"]
        changed = {
            name: (saved.get(name), value) for name, value in self.run_settings.items() if saved.get(name) != value
        }
        if changed:
            details = ", ".join(f"--{name} was {old!r}, now {new!r}" for name, (old, new) in changed.items())
            raise ValueError(
                f"the checkpoint was written with other data settings ({details}); resume with the same values "
                "(or start a new run in another --output_dir)"
            )
        self.step, self.epoch = state["step"], state["epoch"]
        self.batches_into_epoch, self.tokens_seen = state["batches_into_epoch"], state["tokens_seen"]


def complete_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    found = []
    for path in checkpoints_dir.glob("step-*") if checkpoints_dir.is_dir() else []:
        match = _STEP_DIR.fullmatch(path.name)
        if match and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(spec: str, checkpoints_dir: Path) -> Path | None:
    """`latest` -> the newest complete checkpoint in `checkpoints_dir` (None if there is none); else a folder."""
    if spec == "latest":
        found = complete_checkpoints(checkpoints_dir)
        return found[-1][1] if found else None
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint folder {path} does not exist; pass a checkpoints/step-N folder or 'latest'"
        )
    if not (path / COMPLETE_MARKER).is_file():
        raise ValueError(
            f"{path} is not a complete checkpoint (no {COMPLETE_MARKER}: it was interrupted while being written); "
            "pass an earlier checkpoints/step-N folder or 'latest'"
        )
    return path


def resume_or_start(
    accelerator: Accelerator, spec: str | None, checkpoints_dir: Path, run_settings: dict[str, Any]
) -> TrainingProgress:
    """Where training stands: restored from checkpoint `spec` (see `resolve_checkpoint`), else at the start."""
    progress = TrainingProgress(run_settings)
    if spec:
        checkpoint = resolve_checkpoint(spec, checkpoints_dir)
        if checkpoint is None:
            accelerator.print(f"No complete checkpoint in {checkpoints_dir}: starting from scratch")
        else:
            load_checkpoint(accelerator, checkpoint, progress)
            accelerator.print(f"Resumed from {checkpoint} at step {progress.step}")
    return progress


def load_checkpoint(accelerator: Accelerator, path: Path, progress: TrainingProgress) -> None:
    """Restore model, optimizer, scheduler, RNG and data position from a complete checkpoint folder."""
    progress_file = path / PROGRESS_FILE
    if not progress_file.is_file():
        raise ValueError(f"{path} has no {PROGRESS_FILE}: it is not a checkpoint of examples/pretrain.py")
    progress.load_state_dict(json.loads(progress_file.read_text()))  # refuses other data settings before loading
    accelerator.load_state(str(path))


def save_checkpoint(accelerator: Accelerator, checkpoints_dir: Path, progress: TrainingProgress, keep: int) -> Path:
    """Save the full training state as `checkpoints_dir/step-{progress.step}`; keep the newest `keep` checkpoints."""
    step = progress.step
    staging, final = checkpoints_dir / f".tmp-step-{step}", checkpoints_dir / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        checkpoints_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))  # every process writes its part (random states, FSDP shards)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / PROGRESS_FILE).write_text(json.dumps(progress.state_dict()))
        with open(staging / COMPLETE_MARKER, "w") as marker:
            json.dump({"step": step}, marker)
            marker.flush()
            os.fsync(marker.fileno())
        if final.exists():  # the same step saved again, e.g. on a signal right after a scheduled save
            os.replace(final, checkpoints_dir / f".old-step-{step}")
        os.replace(staging, final)
        prune_checkpoints(checkpoints_dir, keep)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and leftovers of interrupted saves."""
    for _, path in complete_checkpoints(checkpoints_dir)[:-keep]:
        shutil.rmtree(path)
    for path in list(checkpoints_dir.glob(".tmp-step-*")) + list(checkpoints_dir.glob(".old-step-*")):
        shutil.rmtree(path, ignore_errors=True)


class StopOnSignal:
    """Turns SIGINT/SIGTERM into a request to stop after the current step (which then saves a checkpoint).

    A second signal gets Python's default behaviour back, so a second Ctrl-C still kills at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> StopOnSignal:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        for other, handler in self._previous.items():
            signal.signal(other, handler)
