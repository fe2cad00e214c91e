"""Timing code on CPU or an accelerator: queued device work included, competitors interleaved, medians kept."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

# "cpu": this process's CPU time, steadier than wall time on a busy machine when it runs on one thread.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on an accelerator: a timing must include it."""
    if device.type == "cpu":
        return
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    (accelerator.synchronize if accelerator is not None else torch.cuda.synchronize)(device)


@dataclass
class Timer:
    """Times functions on `device` with `clock` (one of CLOCKS)."""

    device: torch.device
    clock: Callable[[], float] = time.perf_counter

    def time(self, fn: Callable[[], Any]) -> float:
        """Seconds `fn()` takes, its queued device work included."""
        synchronize(self.device)
        start = self.clock()
        fn()
        synchronize(self.device)
        return self.clock() - start

    def interleaved(self, fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
        """Warm each up, then time them in alternating order (A B, B A, ...); returns the timings per key."""
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        times: dict[str, list[float]] = {key: [] for key in fns}
        order = list(fns)
        for i in range(repeats):
            for key in order if i % 2 == 0 else order[::-1]:
                times[key].append(self.time(fns[key]))
        return times


class StepClock(BaseStreamer):
    """A streamer that notes the time of each `put`: generate() puts the prompt, then each new token as it is chosen
    (after reading it back from the device), so the differences after the first new token are decoding steps."""

    def __init__(self, clock: Any) -> None:
        self.clock, self.stamps = clock, []

    def put(self, value: torch.Tensor) -> None:
        self.stamps.append(self.clock())

    def end(self) -> None:
        pass

    def decode_steps(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps[1:], self.stamps[2:])]


def timing_summary(times: list[float], work: float) -> dict[str, Any]:
    """Median time and `work` per second at the median, plus the spread, from a list of timings."""
    median = statistics.median(times)
    return {"median_s": median, "per_s": work / median, "min_s": min(times), "max_s": max(times), "times_s": times}


def matmul_peak(timer: Timer, n: int | None, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The best torch.mm rate over a few repeats, in `dtype` (default: bf16 on CUDA, fp32 elsewhere), n x n
    (default 8192 on CUDA, 2048 elsewhere)."""
    device = timer.device
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(timer.time(lambda: a @ b) for _ in range(10))
    return {"gflops": 2 * n**3 / best / 1e9, "what": f"torch.mm {n}x{n} {str(dtype).replace('torch.', '')}"}
