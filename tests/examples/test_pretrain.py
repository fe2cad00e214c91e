"""End to end: examples/pretrain.py in subprocesses, with a tiny model on one bundled text.

One reference run (1 process) is compared with a 2-process DDP run on CPU (same global batch: the same loss
curve) and with runs stopped by SIGTERM or SIGKILL and resumed from their checkpoints (the identical curve).
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gptcore.training.hardware import choose_mixed_precision
from tests.processes import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "pretrain.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"
TINY = [
    "--config_overrides",
    "n_layer=2,n_head=2,n_embd=32",
    "--train_files",
    str(ROOT / "examples" / "data" / "corpus" / "alice29.txt"),
    "--sample_by",
    "paragraph",  # many documents per block, for --no_cross_document_attention
    "--no_cross_document_attention",
    "--block_size",
    "32",
    "--batch_size",
    "4",
    "--max_steps",
    "6",
    "--learning_rate",
    "1e-2",
    "--warmup_steps",
    "0",  # large steps from the start, so any difference shows
    "--eval_steps",
    "3",
    "--save_steps",
    "3",
    "--max_eval_samples",
    "8",
    "--sample_max_new_tokens",
    "8",
    # Runs compared with each other use one thread count and fp32: the automatic thread count depends on the
    # machine's load, and another count sums in another order (the final validation loss moves by ~5e-7); the
    # automatic precision is bf16 on CPUs with AMX, and two-process runs get accelerate launch's (fp32 here).
    "--threads",
    "1",
    "--mixed_precision",
    "no",
]


def free_port() -> str:
    """A free port for torchrun's rendezvous: other test runs may hold its default one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def environment(tmp: Path) -> dict[str, str]:
    # A private HF home: no user accelerate config, no shared datasets cache, no network.
    return {
        **os.environ,
        "HF_HOME": str(tmp / "hf"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def pretrain(tmp: Path, *args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [*(launcher or [sys.executable]), str(SCRIPT), *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment(tmp), cwd=tmp, timeout=300)


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def curve(output_dir: Path) -> dict[tuple[int, str], float]:
    """(step, "train_loss" or "val_loss") -> the loss."""
    records = metrics(output_dir)
    return {
        (record["step"], name): record[name]
        for record in records
        for name in ("train_loss", "val_loss")
        if name in record
    }


def max_difference(curve: dict, reference_curve: dict) -> float:
    assert curve.keys() == reference_curve.keys()
    return max(abs(curve[point] - reference_curve[point]) for point in curve)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("reference")
    result = pretrain(tmp, *TINY, "--output_dir", str(tmp / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "out", result


# Every option of the script; renaming or dropping one breaks users' command lines.
OPTIONS = {
    "--model_name_or_path",
    "--config",
    "--config_overrides",
    "--tokenizer_name_or_path",
    "--gradient_checkpointing",
    "--torch_compile",
    "--train_files",
    "--validation_files",
    "--dataset_name",
    "--dataset_config_name",
    "--text_column",
    "--sample_by",
    "--streaming",
    "--validation_split_percentage",
    "--max_eval_samples",
    "--preprocessing_num_workers",
    "--block_size",
    "--no_cross_document_attention",
    "--batch_size",
    "--gradient_accumulation_steps",
    "--max_steps",
    "--learning_rate",
    "--min_lr_ratio",
    "--warmup_steps",
    "--weight_decay",
    "--adam_beta1",
    "--adam_beta2",
    "--max_grad_norm",
    "--mixed_precision",
    "--skip_nonfinite_steps",
    "--seed",
    "--output_dir",
    "--overwrite_output_dir",
    "--resume_from_checkpoint",
    "--eval_steps",
    "--save_steps",
    "--save_total_limit",
    "--sample_prompt",
    "--sample_max_new_tokens",
    "--threads",
    "-h",
    "--help",
}


def test_help_lists_every_option_and_the_bundled_books_from_any_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    listed = set(re.findall(r"^\s+(-[-\w]+)", result.stdout, flags=re.MULTILINE))  # the first option of each help entry
    listed |= set(re.findall(r", (--\w+)", result.stdout))
    assert listed == OPTIONS
    help_text = " ".join(result.stdout.split())
    assert "start from random weights of this size, one of cpu-small" in help_text  # the shared ModelArguments help
    corpus = ROOT / "examples" / "data" / "corpus"
    assert f"Default: the 3 text files in {corpus}/ (alice29.txt, asyoulik.txt, plrabn12.txt)" in help_text


def printed_sample(stdout: str) -> str:
    return ast.literal_eval(stdout.split("Sample after 6 steps: ")[1].splitlines()[0])


def test_run_leaves_the_trained_model_and_its_report(reference: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, result = reference
    assert "unigram baseline" in result.stdout and str(out) in result.stdout
    assert "mixed precision: no (--mixed_precision no)" in result.stdout and "threads: 1 (--threads 1)" in result.stdout
    records = metrics(out)
    assert [record["step"] for record in records if "train_loss" in record] == [1, 2, 3, 4, 5, 6]
    assert [record["step"] for record in records if "val_loss" in record] == [3, 6]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "final" / "README.md").read_text()
    assert "library_name: transformers" in card and '"max_steps": 6' in card
    final_val_loss = [record["val_loss"] for record in records if "val_loss" in record][-1]
    assert f"| final validation loss | {final_val_loss:.4f} |" in card
    # The model options are recorded with the others, --config filled in with the default size.
    assert '"config": "cpu-small"' in card and '"config_overrides": "n_layer=2,n_head=2,n_embd=32"' in card
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["step-3", "step-6"]

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import gptcore.modeling  # noqa: F401  (registers the architecture)

    model = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert (out / "final" / "model.safetensors").is_file() and model.config.n_embd == 32
    assert (
        model.config.attn_pdrop == model.config.resid_pdrop == model.config.embd_pdrop == 0.0
    )  # pretraining's default
    # The saved weights are the trained ones: they give the run's final validation loss on its validation blocks,
    assert validation_loss(model, tokenizer.eos_token_id) == pytest.approx(final_val_loss, abs=1e-5)
    # and sampled as the run sampled, the same text.
    inputs = tokenizer("Alice was beginning to", return_tensors="pt")
    torch.manual_seed(42)  # the run's --seed
    with torch.no_grad():
        generated = model.generate(
            **inputs,
            max_new_tokens=8,
            do_sample=True,
            top_k=50,
            temperature=0.8,
            pad_token_id=tokenizer.eos_token_id,
            remove_invalid_values=True,
        )
    assert tokenizer.decode(generated[0], skip_special_tokens=False) == printed_sample(result.stdout)


def validation_loss(model, eos_token_id: int) -> float:
    """Mean next-token loss over the validation blocks TINY's run holds out (its data settings, rebuilt here)."""
    import torch

    from gptcore.tokenization import gpt2_tokenizer
    from gptcore.training.data_files import load_text_datasets
    from gptcore.training.language_modeling import (
        document_position_ids,
        pack_into_blocks,
        split_validation,
        tokenize_documents,
    )

    text, _ = load_text_datasets(
        [TINY[TINY.index("--train_files") + 1]], None, None, None, "text", "paragraph", streaming=False
    )
    blocks = pack_into_blocks(
        tokenize_documents(text, gpt2_tokenizer(), "text", num_proc=None), block_size=32, num_proc=None
    )
    _, validation = split_validation(blocks, None, 5.0, max_eval_blocks=8, seed=42)
    input_ids = torch.tensor(validation["input_ids"])
    position_ids = document_position_ids(input_ids, eos_token_id)  # as --no_cross_document_attention has them
    with torch.no_grad():
        return model(input_ids, labels=input_ids, position_ids=position_ids, use_cache=False).loss.item()


@pytest.mark.slow
def test_validation_loss_ends_below_the_unigram_baseline(tmp_path: Path) -> None:
    """Training learns: from ~ln(50257) = 10.8 nats/token at random weights, 60 steps take the validation loss below
    the unigram baseline the run prints (to ~6.8 against 7.0)."""
    args = [
        *TINY,
        "--max_steps",
        "60",
        "--eval_steps",
        "60",
        "--save_steps",
        "0",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = pretrain(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    baseline = float(re.search(r"Unigram baseline ([\d.]+) nats/token", result.stdout).group(1))
    (val_loss,) = [record["val_loss"] for record in metrics(tmp_path / "out") if "val_loss" in record]
    assert val_loss < baseline, f"validation loss {val_loss:.3f} is not below the unigram baseline {baseline:.3f}"
    assert (
        f"Validation loss {val_loss:.3f} nats/token" in result.stdout
        and f"vs unigram baseline {baseline:.3f}" in result.stdout
    )


@pytest.mark.slow
def test_two_processes_follow_the_one_process_curve(
    reference: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    launcher = [
        str(ACCELERATE),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        free_port(),
    ]
    # Two micro-batches of 2 sequences, one sequence per process each: DDP and gradient accumulation at once.
    # --mixed_precision auto (the default, which TINY overrides): the launcher's setting decides.
    args = [
        *TINY,
        "--mixed_precision",
        "auto",
        "--gradient_accumulation_steps",
        "2",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = pretrain(tmp_path, *args, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (MULTI_CPU" in result.stdout  # really one DDP run, not two separate ones
    assert "mixed precision: no (set by accelerate launch: ACCELERATE_MIXED_PRECISION=no)" in result.stdout
    out, _ = reference
    assert max_difference(curve(tmp_path / "out"), curve(out)) < 1e-4


@pytest.mark.slow
@pytest.mark.skipif(torch.accelerator.is_available(), reason="on an accelerator FSDP is what runs")
def test_fsdp_config_on_cpu_is_refused_instead_of_running_ddp(tmp_path: Path) -> None:
    launcher = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        str(ROOT / "examples" / "accelerate_fsdp.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        free_port(),
    ]
    result = pretrain(tmp_path, *TINY, "--output_dir", str(tmp_path / "out"), launcher=launcher)
    assert result.returncode != 0
    assert "asked for FSDP (ACCELERATE_USE_FSDP), but accelerate set up MULTI_CPU on cpu" in result.stderr
    assert "--multi_gpu" in result.stderr
    assert not (tmp_path / "out" / "final").exists()


def start(tmp: Path, log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as log_file:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment(tmp),
            cwd=tmp,
        )


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_nonfinite_loss_stops_training(tmp_path: Path) -> None:
    args = [*TINY, "--learning_rate", "1e30", "--output_dir", str(tmp_path / "out")]
    result = pretrain(tmp_path, *args)
    assert result.returncode == 1
    assert "Stopping: the training loss is nan" in result.stderr and "--skip_nonfinite_steps" in result.stderr
    skipped = pretrain(tmp_path, *args, "--overwrite_output_dir", "--skip_nonfinite_steps", "--max_steps", "3")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert [record["skipped"] for record in metrics(tmp_path / "out") if "train_loss" in record] == [False, True, True]


def test_refuses_to_mix_runs_in_one_output_dir(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "metrics.jsonl").write_text("{}\n")
    result = pretrain(tmp_path, "--output_dir", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "is not empty" in result.stderr and "--overwrite_output_dir" in result.stderr


@pytest.mark.slow
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
        (
            "while writing a checkpoint, with an older one complete",
            lambda log: steps_done(out) >= 2 and writing_a_checkpoint(),
            0.0,
        ),
        ("while training, soon after resuming", lambda log: "Resumed from" in log.read_text(), rng.uniform(0.0, 0.5)),
        ("while starting up or loading the checkpoint", lambda log: True, rng.uniform(0.5, 3.0)),
    ]
    for i, (where, condition, delay) in enumerate(kill_points):
        complete_before = [path.name for path in sorted(checkpoints.glob("step-*"))] if checkpoints.is_dir() else []
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
            assert complete_before and Path(text.split("Resumed from ")[1].split()[0]).name == complete_before[-1], (
                where
            )
        for folder in checkpoints.glob("step-*"):  # every checkpoint a later run may pick is complete
            assert (folder / "checkpoint_complete.json").is_file(), f"{folder} has no marker after a kill {where}"

    result = pretrain(tmp_path, *args, "--resume_from_checkpoint", "latest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout
    reference_out, _ = reference
    assert max_difference(curve(out), curve(reference_out)) < 1e-6
    assert not list(checkpoints.glob(".tmp-step-*")), "leftovers of the interrupted writes were not cleaned up"


@pytest.mark.slow
def test_pretraining_prints_its_choices_and_records_them(tmp_path):
    """Nothing chosen on the command line or in the environment: the run says what it chose, and why."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("OMP_NUM_THREADS", "ACCELERATE_MIXED_PRECISION")
    }
    env.update(
        HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    args = [
        "--config_overrides",
        "n_layer=1,n_head=2,n_embd=32",
        "--train_files",
        str(EXAMPLES / "data" / "corpus" / "alice29.txt"),
        "--block_size",
        "16",
        "--batch_size",
        "2",
        "--max_steps",
        "1",
        "--eval_steps",
        "1",
        "--save_steps",
        "0",
        "--max_eval_samples",
        "2",
        "--sample_max_new_tokens",
        "0",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "pretrain.py"), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    mode, why = choose_mixed_precision(torch.device("cpu"))
    assert f"mixed precision: {mode} ({why})\n" in result.stdout
    threads = re.search(r"^threads: (\d+) \((.*)\)$", result.stdout, re.MULTILINE)
    assert threads and threads.group(2).startswith("torch's default"), result.stdout[-3000:]
    assert f'"threads": {threads.group(1)}' in (tmp_path / "out" / "final" / "README.md").read_text()
    assert (
        "Sample after 1 steps: 'Alice was beginning to'" in result.stdout
    )  # --sample_max_new_tokens 0: the prompt alone
