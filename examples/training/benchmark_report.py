"""The benchmark's results as a table: gptcore, transformers, their ratio, and whether each goal is met."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from gptcore.training.memory import format_bytes

# gptcore's performance goals, as ratios gptcore / transformers measured in the same run, so that they mean the
# same on any machine: train at least 15% faster with no more memory, generate at least as fast, and with a
# static cache + torch.compile decode one sequence twice as fast as transformers does with its default cache.
TARGETS = {"train_tokens_per_s": 1.15, "train_peak_memory": 1.0, "generate_tokens_per_s": 1.0, "compiled_b1_vs_default": 2.0}
# Model FLOPs utilisation goals for GPT-2 124M, as a share of the matmul peak measured in the same run.
MFU_TARGETS = {"cuda": 0.45, "cpu": 0.60}


def device_description(device: torch.device) -> str:
    """The GPU's name, or the CPU's model, threads and vector instruction set."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


def met_or_not(value: float | None, target: float, higher_is_better: bool = True) -> str:
    """"met" when `value` reaches `target` (at least it, or at most it when lower is better), else "NOT met"."""
    if value is None:
        return "n/a"
    return "met" if (value >= target if higher_is_better else value <= target) else "NOT met"


def report_rows(results: dict[str, Any], device: torch.device) -> list[list[str]]:
    """Rows of [metric, gptcore, transformers, ratio, goal], the header first."""
    rows = [["metric", "gptcore", "transformers", "ratio", "target"]]
    train, memory, is_gpt2 = results.get("train"), results.get("memory"), results["config_name"] == "gpt2"
    if train:
        mode = "bf16 autocast" if device.type == "cuda" else "fp32"
        what = f"train tokens/s ({results['args']['batch']}x{results['args']['seq']}, {mode}, {train['optimizer']})"
        target = TARGETS["train_tokens_per_s"]
        rows.append([what, f"{train['ours']['per_s']:.1f}", f"{train['ref']['per_s']:.1f}", f"{train['ratio']:.2f}x",
                     f">= {target}x {met_or_not(train['ratio'], target)}"])  # fmt: skip
        mfu_target = MFU_TARGETS["cuda" if device.type == "cuda" else "cpu"]
        rows.append([f"train MFU (peak {results['peak']['gflops']:.0f} GFLOP/s)", f"{100 * train['ours']['mfu']:.1f}%",
                     f"{100 * train['ref']['mfu']:.1f}%", f"{train['ours']['mfu'] / train['ref']['mfu']:.2f}x",
                     f">= {100 * mfu_target:.0f}% {met_or_not(train['ours']['mfu'], mfu_target)}" if is_gpt2 else ""])  # fmt: skip
    if memory:
        field, target = memory["field"], TARGETS["train_peak_memory"]
        rows.append([f"train peak memory ({memory['what']})", format_bytes(memory["ours"][field]), format_bytes(memory["ref"][field]),
                     f"{memory['ratio']:.2f}x", f"<= {target}x {met_or_not(memory['ratio'], target, higher_is_better=False)}"])  # fmt: skip
    for gen in results.get("generate", []):
        target = TARGETS["generate_tokens_per_s"]
        rows.append([f"generate b={gen['batch']} tokens/s (default cache)", f"{gen['ours']['per_s']:.1f}", f"{gen['ref']['per_s']:.1f}",
                     f"{gen['ratio']:.2f}x", f">= {target}x {met_or_not(gen['ratio'], target)}"])  # fmt: skip
    for gen in results.get("compile", []):
        if "error" in gen:
            rows.append([f"generate b={gen['batch']} static+compile", "error", "", "", gen["error"][:60]])
            continue
        rows.append([f"generate b={gen['batch']} tokens/s (static + compile)", f"{gen['ours']['per_s']:.1f}", f"{gen['ref']['per_s']:.1f}",
                     f"{gen['ratio']:.2f}x", ""])  # fmt: skip
        compiled_vs_default = gen.get("ours_vs_ref_default")
        if compiled_vs_default is not None:
            target = TARGETS["compiled_b1_vs_default"]
            goal = f">= {target}x {met_or_not(compiled_vs_default, target)}" if gen["batch"] == 1 and results["config_name"] == "small" else ""
            rows.append([f"  gptcore compiled / transformers default, b={gen['batch']}", "", "", f"{compiled_vs_default:.2f}x", goal])
        rows.append([f"  first (compiling) call, b={gen['batch']}", f"{gen['ours_first_call_s']:.1f} s", f"{gen['ref_first_call_s']:.1f} s", "", ""])
    return rows


def format_table(rows: list[list[str]]) -> str:
    """The first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
