"""What every example script asks of the machine: which device, whether the output folder is free, peak memory,
and a fresh process to measure it in."""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: the accelerator torch finds (CUDA, MPS, XPU, ...), else the CPU; any other name as given."""
    if name != "auto":
        return torch.device(name)
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6; before it, only CUDA is looked for
    if accelerator is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return accelerator.current_accelerator() if accelerator.is_available() else torch.device("cpu")


def check_output_dir(output_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder: a non-empty `output_dir` needs `resume` or `overwrite`."""
    folder = Path(output_dir)
    if folder.is_dir() and any(folder.iterdir()) and not resume and not overwrite:
        raise ValueError(
            f"output directory {folder} is not empty; pass --resume_from_checkpoint to continue the run there, "
            "--overwrite_output_dir to start over in it, or another --output_dir"
        )


# Peak memory of this process, for the memory estimate's --measure and the benchmark. On Linux the kernel keeps
# a resident-set high-water mark per process (VmHWM) that can be restarted from the current size, so one phase
# of a run can be measured on its own; elsewhere only the lifetime peak (ru_maxrss) exists.


def _proc_status_bytes(key: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def resident_bytes() -> int:
    """Memory this process holds in RAM now (Linux only)."""
    found = _proc_status_bytes("VmRSS")
    if found is None:
        raise ValueError("reading this process's resident memory needs Linux (/proc/self/status)")
    return found


def peak_resident_bytes() -> int:
    """The most RAM this process has held since it started, or since `reset_peak_resident()`."""
    found = _proc_status_bytes("VmHWM")
    if found is not None:
        return found
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_resident() -> None:
    """Restart the high-water mark from the current resident size (Linux only)."""
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists():
        raise ValueError("measuring the peak memory of one phase needs Linux (/proc/self/clear_refs)")
    clear_refs.write_text("5")


def start_in_fresh_process(function: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> Future:
    """Start `function(*args)` in a new Python interpreter and return its future result.

    A new interpreter (multiprocessing's "spawn") starts with none of this process's memory, so its resident
    memory and peak are the function's alone; `env` is added to its environment (read at start-up, e.g. by
    the C allocator). `function` and `args` must be picklable: a module-level function of an installed module.
    An exception raised there is raised again by `.result()`.
    """
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    with _environment(env or {}):
        future = executor.submit(function, *args)  # starts the process now, with the environment as it is
    executor.shutdown(wait=False)  # the process ends once the function returns
    return future


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
