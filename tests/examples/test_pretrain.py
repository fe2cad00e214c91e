"""End to end: examples/pretrain.py in subprocesses, with a tiny model on one bundled text.

One reference run (1 process) is compared with a 2-process DDP run on CPU (same global batch: the same loss
curve) and with a run stopped by SIGTERM and resumed from its checkpoint (the identical curve).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "pretrain.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"
TINY = [
    "--config_overrides", "n_layer=2,n_head=2,n_embd=32",
    "--train_files", str(ROOT / "examples" / "data" / "corpus" / "alice29.txt"),
    "--sample_by", "paragraph",  # many documents per block, for --no_cross_document_attention
    "--no_cross_document_attention",
    "--block_size", "32", "--batch_size", "4", "--max_steps", "6",
    "--learning_rate", "1e-2", "--warmup_steps", "0",  # large steps from the start, so any difference shows
    "--eval_steps", "3", "--save_steps", "3", "--max_eval_samples", "8", "--sample_max_new_tokens", "8",
]  # fmt: skip


def environment(tmp: Path) -> dict[str, str]:
    # A private HF home: no user accelerate config, no shared datasets cache, no network.
    return {**os.environ, "HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def pretrain(tmp: Path, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment(tmp), cwd=tmp, timeout=300)


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def curve(output_dir: Path) -> dict[tuple[int, str], float]:
    return {(r["step"], k): r[k] for r in metrics(output_dir) for k in ("train_loss", "val_loss") if k in r}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("reference")
    result = pretrain(tmp, *TINY, "--output_dir", str(tmp / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "out", result


def test_help() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--resume_from_checkpoint" in result.stdout and "--no_cross_document_attention" in result.stdout


def test_run_leaves_a_loadable_model_and_its_report(reference: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, result = reference
    assert "unigram baseline" in result.stdout and "Sample after 6 steps" in result.stdout and str(out) in result.stdout
    records = metrics(out)
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "final" / "README.md").read_text()
    assert "library_name: transformers" in card and "final validation loss" in card and '"max_steps": 6' in card
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-6"]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import gptcore.modeling  # noqa: F401  (registers the architecture)

    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert (out / "final" / "model.safetensors").is_file() and model.config.n_embd == 32
    ids = tokenizer("Alice", return_tensors="pt").input_ids
    with torch.no_grad():
        assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, ids.size(1) + 3)


def test_two_processes_follow_the_one_process_curve(reference: tuple[Path, subprocess.CompletedProcess], tmp_path: Path) -> None:
    with socket.socket() as s:  # a free port: other test runs may hold torchrun's default one
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    launcher = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port]  # fmt: skip
    # Two micro-batches of 2 sequences, one sequence per process each: DDP and gradient accumulation at once.
    args = [*TINY, "--gradient_accumulation_steps", "2", "--output_dir", str(tmp_path / "out")]
    result = pretrain(tmp_path, *args, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (MULTI_CPU" in result.stdout  # really one DDP run, not two separate ones
    out, _ = reference
    assert max_difference(curve(tmp_path / "out"), curve(out)) < 1e-4


def start(tmp: Path, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as f:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=f, stderr=subprocess.STDOUT, env=environment(tmp), cwd=tmp)


def wait_until(proc: subprocess.Popen, log: Path, condition: Callable[[], bool], poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + 240
    while not condition():
        assert proc.poll() is None, f"the run ended before the point the test waits for:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(poll_s)


def steps_done(output_dir: Path) -> int:
    """The last step in metrics.jsonl (a line cut short by a kill is skipped)."""
    path, steps = output_dir / "metrics.jsonl", [0]
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            steps.append(json.loads(line)["step"])
        except json.JSONDecodeError:
            pass
    return max(steps)


def test_stop_on_sigterm_then_resume_continues_the_identical_curve(
    reference: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    out, log = tmp_path / "out", tmp_path / "log.txt"
    proc = start(tmp_path, log, *TINY, "--output_dir", str(out))
    wait_until(proc, log, lambda: steps_done(out) >= 1)  # the training loop is running
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=240) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    stopped_at = metrics(out)[-1]["step"]
    assert stopped_at < 6, "the run finished before the signal arrived"
    saved = out / "checkpoints" / f"step-{stopped_at}"
    assert (saved / "checkpoint_complete.json").is_file()
    # Where training stands is JSON: accelerate would unpickle registered objects with weights_only=False.
    assert json.loads((saved / "training_progress.json").read_text())["step"] == stopped_at
    assert not list(saved.glob("custom_checkpoint_*"))

    result = pretrain(tmp_path, *TINY, "--output_dir", str(out), "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at step {stopped_at}" in result.stdout
    reference_out, _ = reference
    assert max_difference(curve(out), curve(reference_out)) < 1e-6


def test_nonfinite_loss_stops_training(tmp_path: Path) -> None:
    args = [*TINY, "--learning_rate", "1e30", "--output_dir", str(tmp_path / "out")]
    result = pretrain(tmp_path, *args)
    assert result.returncode == 1
    assert "Stopping: the training loss is nan" in result.stderr and "--skip_nonfinite_steps" in result.stderr
    skipped = pretrain(tmp_path, *args, "--overwrite_output_dir", "--skip_nonfinite_steps", "--max_steps", "3")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert [r["skipped"] for r in metrics(tmp_path / "out") if "train_loss" in r] == [False, True, True]


def test_refuses_to_mix_runs_in_one_output_dir(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.jsonl").write_text("{}\n")
    result = pretrain(tmp_path, "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "is not empty" in result.stderr and "--overwrite_output_dir" in result.stderr


def test_sigkill_at_random_points_then_resume_continues_the_identical_curve(
    reference: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    """Killed with no chance to clean up (mid-checkpoint-write, mid-training, mid-startup) and resumed each
    time: only complete checkpoints are ever resumed from, and the curve is the uninterrupted one."""
    out, checkpoints = tmp_path / "out", tmp_path / "out" / "checkpoints"
    args = [*TINY, "--save_steps", "1", "--output_dir", str(out)]  # a checkpoint every step: many writes to hit
    rng = random.Random(1234)

    def writing_a_checkpoint() -> bool:
        return checkpoints.is_dir() and any(name.startswith(".tmp-step-") for name in os.listdir(checkpoints))

    # (where, when to kill: a condition on the run's log, then a random delay in seconds)
    kill_points = [
        ("while writing a checkpoint, with an older one complete", lambda log: steps_done(out) >= 2 and writing_a_checkpoint(), 0.0),
        ("while training, soon after resuming", lambda log: "Resumed from" in log.read_text(), rng.uniform(0.0, 0.5)),
        ("while starting up or loading the checkpoint", lambda log: True, rng.uniform(0.5, 3.0)),
    ]
    for i, (where, condition, delay) in enumerate(kill_points):
        complete_before = [p.name for p in sorted(checkpoints.glob("step-*"))] if checkpoints.is_dir() else []
        log = tmp_path / f"log-{i}.txt"
        proc = start(tmp_path, log, *args, *(["--resume_from_checkpoint", "latest"] if i else []))
        wait_until(proc, log, lambda: condition(log), poll_s=0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"{where}: {log.read_text()[-3000:]}"
        if i == 0:
            assert writing_a_checkpoint() and (checkpoints / "step-1" / "checkpoint_complete.json").is_file(), where
        text = log.read_text()
        if "Resumed from" in text:  # only ever from the newest checkpoint that was complete when this run started
            assert complete_before and Path(text.split("Resumed from ")[1].split()[0]).name == complete_before[-1], where
        for folder in checkpoints.glob("step-*"):  # every checkpoint a later run may pick is complete
            assert (folder / "checkpoint_complete.json").is_file(), f"{folder} has no marker after a kill {where}"

    result = pretrain(tmp_path, *args, "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout
    reference_out, _ = reference
    assert max_difference(curve(out), curve(reference_out)) < 1e-6
    assert not list(checkpoints.glob(".tmp-step-*")), "leftovers of the interrupted writes were not cleaned up"
