"""What pretraining and the fine-tuning scripts choose when the user does not (gptcore.training.hardware): the mixed
precision (bf16 only where the hardware computes it natively) and the number of CPU threads; and that a choice the
user or the launcher made wins. That pretraining prints and records its choices: tests/examples/test_pretrain.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from gptcore.training import finetuning, hardware
from gptcore.training.hardware import Bf16Hardware, choose_mixed_precision, decide_mixed_precision, detect_bf16_hardware

NATIVE_BF16_FLAGS = {"amx_bf16", "avx512_bf16"}


@pytest.fixture
def no_launcher(monkeypatch):
    """As when started with `python script.py`: `accelerate launch` sets ACCELERATE_MIXED_PRECISION."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)


def proc_cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU's features from Linux's /proc/cpuinfo")
def test_this_cpu_gets_bf16_only_with_native_bf16_instructions():
    mode, why = choose_mixed_precision(torch.device("cpu"))
    native = proc_cpuinfo_flags() & NATIVE_BF16_FLAGS  # what the kernel says, not the detection under test
    if native:
        assert mode == "bf16" and why.startswith("CPU has "), why
    else:  # e.g. an AVX2-only AMD EPYC
        assert mode == "no"
        assert why == f"this CPU has no native bf16: {torch.backends.cpu.get_cpu_capability()} only"


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="compares with Linux's /proc/cpuinfo")
def test_cpu_flags_agree_with_proc_cpuinfo():
    """torch's detection, where the installed torch has it (not every release does), and /proc/cpuinfo agree on the
    features the precision choice reads, under the same names."""
    wanted = NATIVE_BF16_FLAGS | {"avx2"}
    assert hardware.cpu_flags() & wanted == proc_cpuinfo_flags() & wanted


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (Bf16Hardware("CPU", ("AMX-BF16", "AVX512-BF16"), "AVX512 only"), ("bf16", "CPU has AMX-BF16 and AVX512-BF16")),
        (Bf16Hardware("CPU", ("AVX512-BF16",), "AVX512 only"), ("bf16", "CPU has AVX512-BF16")),
        (Bf16Hardware("CPU", (), "AVX2 only"), ("no", "this CPU has no native bf16: AVX2 only")),
        (
            Bf16Hardware("GPU NVIDIA H100", ("bf16 tensor cores (compute capability 9.0)",), "compute capability 9.0"),
            ("bf16", "GPU NVIDIA H100 has bf16 tensor cores (compute capability 9.0)"),
        ),
        (
            Bf16Hardware("GPU Tesla V100", (), "compute capability 7.0"),
            ("no", "this GPU Tesla V100 has no native bf16: compute capability 7.0"),
        ),
    ],
)
def test_decision_for_given_hardware(hardware, expected):
    assert decide_mixed_precision(hardware) == expected


def test_detection_reads_the_amx_and_avx512_bf16_flags(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512_f", "avx512_bf16", "amx_tile", "amx_bf16"})
    assert detect_bf16_hardware(torch.device("cpu")).native == ("AMX-BF16", "AVX512-BF16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512_f", "amx_int8"})
    assert detect_bf16_hardware(torch.device("cpu")).native == ()


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 0), "no")])
def test_cuda_needs_native_bf16_not_emulated(monkeypatch, capability, expected):
    """A GPU older than compute capability 8.0 only emulates bf16 (torch counts that as "supported" by default)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Some GPU")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or capability >= (8, 0)
    )
    mode, why = choose_mixed_precision(torch.device("cuda"))
    assert mode == expected and f"compute capability {capability[0]}.{capability[1]}" in why


def test_other_devices_run_fp32():
    assert choose_mixed_precision(torch.device("mps")) == (
        "no",
        "this mps device has no native bf16: only CPUs and CUDA GPUs are checked for it",
    )


def test_the_command_line_then_the_launcher_then_the_hardware_decide(monkeypatch, no_launcher):
    cpu = torch.device("cpu")
    assert hardware.resolve_mixed_precision("auto", cpu) == choose_mixed_precision(cpu)
    assert hardware.resolve_mixed_precision("fp16", cpu) == ("fp16", "--mixed_precision fp16")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # accelerate launch --mixed_precision bf16
    assert hardware.resolve_mixed_precision("auto", cpu) == (
        "bf16",
        "set by accelerate launch: ACCELERATE_MIXED_PRECISION=bf16",
    )
    assert hardware.resolve_mixed_precision("no", cpu) == ("no", "--mixed_precision no")


# Fine-tuning: the choice is applied to TrainingArguments before the Trainer is built.


def training_arguments(tmp_path: Path, **kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", save_strategy="no", use_cpu=True, **kwargs)


def test_finetuning_auto_applies_the_hardware_choice(tmp_path, no_launcher):
    training = training_arguments(tmp_path)
    mode, why = choose_mixed_precision(torch.device("cpu"))
    assert finetuning.apply_mixed_precision(training, "auto") == f"mixed precision: {mode} ({why})"
    assert training.mixed_precision == mode and training.bf16 == (mode == "bf16") and not training.fp16


def test_finetuning_bf16_choice_reaches_the_trainer(tmp_path, monkeypatch, no_launcher):
    """On hardware with native bf16 (pretended here) auto turns bf16 on, and the Trainer's accelerator runs it."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512_bf16", "amx_bf16"})
    training = training_arguments(tmp_path)
    assert (
        finetuning.apply_mixed_precision(training, "auto") == "mixed precision: bf16 (CPU has AMX-BF16 and AVX512-BF16)"
    )
    assert training.bf16 and training.mixed_precision == "bf16"
    model = GPTCoreForCausalLM(GPTCoreConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, n_positions=16))
    assert Trainer(model=model, args=training).accelerator.mixed_precision == "bf16"


def test_finetuning_explicit_flags_win(tmp_path, monkeypatch, no_launcher):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"amx_bf16"})  # auto would pick bf16
    assert (
        finetuning.apply_mixed_precision(training_arguments(tmp_path), "no")
        == "mixed precision: no (--mixed_precision no)"
    )
    training = training_arguments(tmp_path, bf16=True)
    assert finetuning.apply_mixed_precision(training, "auto") == "mixed precision: bf16 (--bf16)"
    with pytest.raises(ValueError, match="--mixed_precision no contradicts --bf16"):
        finetuning.apply_mixed_precision(training_arguments(tmp_path, bf16=True), "no")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # accelerate launch without --mixed_precision
    training = training_arguments(tmp_path)
    assert (
        finetuning.apply_mixed_precision(training, "auto")
        == "mixed precision: no (set by accelerate launch: ACCELERATE_MIXED_PRECISION=no)"
    )
    assert not training.bf16


def test_an_explicit_thread_count_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert hardware.choose_threads(3) == (3, "--threads 3")
    assert hardware.choose_threads(None) == (torch.get_num_threads(), "OMP_NUM_THREADS=2")
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, why = hardware.choose_threads(None)
    assert threads == torch.get_num_threads() and why.startswith("torch's default")
