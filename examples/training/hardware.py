"""What the example scripts ask of the hardware they run on: which device, whether it computes bf16 natively (and so
which mixed precision a run takes), and how many CPU threads torch uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: the accelerator torch finds (CUDA, MPS, XPU, ...), else the CPU; any other name as given."""
    if name != "auto":
        return torch.device(name)
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6; before it, only CUDA is looked for
    if accelerator is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return accelerator.current_accelerator() if accelerator.is_available() else torch.device("cpu")


# Mixed precision. bf16 pays off only where the hardware multiplies bf16 natively: on a CPU without AMX or AVX-512
# bf16 instructions torch converts every bf16 product to fp32 and back, which is far slower than fp32 itself.
CPU_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}  # the CPU flag -> how messages name it


@dataclass(frozen=True)
class Bf16Hardware:
    """What `decide_mixed_precision` looks at, found by `detect_bf16_hardware` (or given, in tests)."""

    name: str  # "CPU", "GPU NVIDIA H100 ...", "mps device"
    native: tuple[str, ...]  # what computes bf16 natively there, e.g. ("AMX-BF16", "AVX512-BF16"); () if nothing
    otherwise: str  # what the hardware has instead, for the message when `native` is empty, e.g. "AVX2 only"


def cpu_flags() -> set[str]:
    """The CPU's instruction-set features by their /proc/cpuinfo names (amx_bf16, avx512_bf16, ...)."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)  # public in newer torch; also outside Linux
    if get_capabilities is not None:
        return {name for name, value in get_capabilities().items() if value is True}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_bf16_hardware(device: torch.device) -> Bf16Hardware:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        # including_emulation=False: before compute capability 8.0 a GPU only emulates bf16, slower than fp32
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        name, capability = f"GPU {torch.cuda.get_device_name(index)}", f"compute capability {major}.{minor}"
        return Bf16Hardware(name, (f"bf16 tensor cores ({capability})",) if native else (), capability)
    if device.type == "cpu":
        flags = cpu_flags()
        native = tuple(label for flag, label in CPU_BF16_FLAGS.items() if flag in flags)
        return Bf16Hardware("CPU", native, f"{torch.backends.cpu.get_cpu_capability()} only")
    return Bf16Hardware(f"{device.type} device", (), "only CPUs and CUDA GPUs are checked for it")


def decide_mixed_precision(hardware: Bf16Hardware) -> tuple[str, str]:
    """("bf16" or "no", why): bf16 where the hardware computes it natively, fp32 everywhere else."""
    if hardware.native:
        return "bf16", f"{hardware.name} has {' and '.join(hardware.native)}"
    return "no", f"this {hardware.name} has no native bf16: {hardware.otherwise}"


def choose_mixed_precision(device: torch.device) -> tuple[str, str]:
    """What `--mixed_precision auto` means on `device`: ("bf16" or "no", why)."""
    return decide_mixed_precision(detect_bf16_hardware(device))


def resolve_mixed_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The mixed precision of a run on `device` and why. `requested` is the command line's: "no", "fp16", "bf16", or
    "auto": what `accelerate launch` passes (ACCELERATE_MIXED_PRECISION; the launcher always passes one: its
    --mixed_precision, its config file's, or "no"), and without a launcher `choose_mixed_precision(device)`."""
    if requested != "auto":
        return requested, f"--mixed_precision {requested}"
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher:
        return launcher, f"set by accelerate launch: ACCELERATE_MIXED_PRECISION={launcher}"
    return choose_mixed_precision(device)


def choose_threads(requested: int | None) -> tuple[int, str]:
    """How many CPU threads torch uses, and why: `requested` (--threads), else OMP_NUM_THREADS (torch applied it at
    start-up; `accelerate launch` sets it for each process), else torch's default, one per core."""
    if requested is not None:
        return requested, f"--threads {requested}"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    return torch.get_num_threads(), "torch's default: one per core; --threads or OMP_NUM_THREADS sets another count"
