"""Where gptcore's time goes, operator by operator: torch.profiler's self time per operator for a training step and
for `generate()`, for `examples/benchmark.py --profile`. The profile to read before optimising, taken on the
machine at hand, in each precision the benchmark measures (where AMX computes bf16 matrix products several times
faster than fp32, the rest of a step weighs far more in bf16)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarking.timing import synchronize


def operator_table(
    run: Callable[[], Any], repeats: int, device: torch.device, per: int = 1, top: int = 12
) -> dict[str, Any]:
    """Run `run` once untimed, then `repeats` times under torch.profiler; the `top` operators by self time (on the
    GPU for CUDA, else the CPU), each as ms per unit of work (`per` units per call of `run`: new tokens of a
    generate() call), its share of all operators' self time, and calls per unit."""
    run()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            run()
        synchronize(device)
    units = repeats * per
    events = [
        (event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total, event.count, event.key)
        for event in prof.key_averages()
    ]
    total_us = sum(time for time, _, _ in events)
    rows = [
        {"op": name, "ms": time / 1e3 / units, "share": time / total_us, "calls": count / units}
        for time, count, name in sorted(events, reverse=True)[:top]
        if time > 0
    ]
    return {"ms_total": total_us / 1e3 / units, "unit": "step" if per == 1 else "new token", "rows": rows}


def format_profile(title: str, table: dict[str, Any]) -> str:
    """`table` (from `operator_table`) as text under `title`."""
    unit = table["unit"]
    lines = [f"{title}: operators' self time {table['ms_total']:.2f} ms per {unit}"]
    width = max(len(row["op"]) for row in table["rows"])
    for row in table["rows"]:
        lines.append(
            f"  {row['op']:<{width}}  {row['ms']:9.3f} ms  {100 * row['share']:5.1f}%  {row['calls']:7.1f} calls/{unit}"
        )
    return "\n".join(lines)
