"""The benchmark's results as a table: gptcore, transformers, their ratio, and each figure against its threshold."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from gptcore.training.memory_estimate import format_bytes

# The last column: a threshold per figure, and whether the figure reaches it. Each is relative to something measured
# in the same run (transformers on the same weights, the matmul peak, the read bandwidth), so that the machine's own
# speed cancels out. Ratios gptcore / transformers: training at least 15% faster on no more memory, generating at
# least as fast, and one sequence decoded with a static cache + torch.compile twice as fast as transformers decodes it
# with its default cache.
TARGETS = {
    "train_tokens_per_s": 1.15,
    "train_peak_memory": 1.0,
    "generate_tokens_per_s": 1.0,
    "compiled_b1_vs_default": 2.0,
}
# Model FLOPs utilisation of GPT-2 124M (shown for that size only), as a share of the matmul peak measured in the same
# run. Lower for bf16 on a CPU: where AMX computes the matrix products, everything else weighs more against its peak.
MFU_TARGETS = {"cuda": 0.45, "cpu-fp32": 0.60, "cpu-bf16": 0.30}
# Threshold on the share of the weight-streaming limit a b=1 decoding step reaches: the time its bytes need at the
# bandwidth measured in the same run, over the step's time.
DECODE_LIMIT_TARGET = 0.70
# The weight-streaming limit assumes that a step reads its weights from memory, not from the CPU's caches: its target
# is shown only for sizes whose weights are far larger than those caches.
STREAMING_SIZES = ("gpt2", "small")


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
    """The word "met" when `value` reaches `target` (at least it, or at most it when lower is better), else
    "NOT met"."""
    if value is None:
        return "n/a"
    return "met" if (value >= target if higher_is_better else value <= target) else "NOT met"


def report_rows(results: dict[str, Any], device: torch.device) -> list[list[str]]:
    """Rows of [metric, gptcore, transformers, ratio, target], the header first."""
    rows = [["metric", "gptcore", "transformers", "ratio", "target"]]
    is_gpt2 = results["config_name"] == "gpt2"
    streaming = results["config_name"] in STREAMING_SIZES
    for precision, why in results.get("precisions_skipped", {}).items():
        rows.append([f"{precision}: not measured", "", "", "", why])
    for train in results.get("train", []):
        mode = "bf16 autocast" if train["precision"] == "bf16" else "fp32"
        what = f"train tokens/s ({results['args']['batch']}x{results['args']['seq']}, {mode}, {train['optimizer']})"
        target = TARGETS["train_tokens_per_s"]
        rows.append(
            [
                what,
                f"{train['ours']['per_s']:.1f}",
                f"{train['ref']['per_s']:.1f}",
                f"{train['ratio']:.2f}x",
                f">= {target}x {met_or_not(train['ratio'], target)}",
            ]
        )
        peak = results["peak"][train["precision"]]
        mfu_target = MFU_TARGETS["cuda" if device.type == "cuda" else f"cpu-{train['precision']}"]
        mfu_met = f">= {100 * mfu_target:.0f}% {met_or_not(train['ours']['mfu'], mfu_target)}" if is_gpt2 else ""
        rows.append(
            [
                f"  MFU ({peak['what']}: {peak['gflops']:.0f} GFLOP/s)",
                f"{100 * train['ours']['mfu']:.1f}%",
                f"{100 * train['ref']['mfu']:.1f}%",
                f"{train['ours']['mfu'] / train['ref']['mfu']:.2f}x",
                mfu_met,
            ]
        )
    for memory in results.get("memory", []):
        field, target = memory["field"], TARGETS["train_peak_memory"]
        rows.append(
            [
                f"train peak memory ({memory['what']}, {memory['precision']})",
                format_bytes(memory["ours"][field]),
                format_bytes(memory["ref"][field]),
                f"{memory['ratio']:.2f}x",
                f"<= {target}x {met_or_not(memory['ratio'], target, higher_is_better=False)}",
            ]
        )
    for gen in results.get("generate", []):
        target = TARGETS["generate_tokens_per_s"]
        rows.append(
            [
                f"generate b={gen['batch']} tokens/s (default cache, {gen['precision']})",
                f"{gen['ours']['per_s']:.1f}",
                f"{gen['ref']['per_s']:.1f}",
                f"{gen['ratio']:.2f}x",
                f">= {target}x {met_or_not(gen['ratio'], target)}",
            ]
        )
        rows += decode_rows(gen, ("ours", "ref"), streaming)
    for gen in results.get("compile", []):
        if "error" in gen:
            what = f"generate b={gen['batch']} static+compile ({gen['precision']})"
            rows.append([what, "error", "", "", gen["error"][:60]])
            continue
        rows.append(
            [
                f"generate b={gen['batch']} tokens/s (static + compile, {gen['precision']})",
                f"{gen['ours']['per_s']:.1f}",
                f"{gen['ref']['per_s']:.1f}",
                f"{gen['ratio']:.2f}x",
                "",
            ]
        )
        rows += decode_rows(gen, ("ours", "ref"), streaming)
        compiled_vs_default = gen.get("ours_vs_ref_default")
        if compiled_vs_default is not None:
            target = TARGETS["compiled_b1_vs_default"]
            shown = gen["batch"] == 1 and results["config_name"] == "small"
            wanted = f">= {target}x {met_or_not(compiled_vs_default, target)}" if shown else ""
            rows.append(
                [
                    f"  gptcore compiled / transformers default, b={gen['batch']}",
                    "",
                    "",
                    f"{compiled_vs_default:.2f}x",
                    wanted,
                ]
            )
        rows.append(
            [
                f"  first (compiling) call, b={gen['batch']}",
                f"{gen['ours_first_call_s']:.1f} s",
                f"{gen['ref_first_call_s']:.1f} s",
                "",
                "",
            ]
        )
    rows += int8_rows(results.get("int8"), is_gpt2)
    rows += llama_cpp_rows(results.get("llama_cpp"))
    return rows


def decode_rows(gen: dict[str, Any], keys: tuple[str, ...], with_target: bool = True) -> list[list[str]]:
    """At batch 1: the median decoding step of each model next to the weight-streaming limit, and the share of it."""
    limit = gen.get("limit")
    if limit is None or any("decode_ms_per_step" not in gen[key] for key in keys):
        return []
    ours, other = (gen[key] for key in keys)
    ms = [f"{entry['decode_ms_per_step']:.2f}" for entry in (ours, other)]
    what = f"  decode ms/step (limit {limit['limit_ms_per_step']:.2f} ms: {limit['bytes_per_step'] / 1e6:.0f} MB/step)"
    rows = [[what, *ms, f"{other['decode_ms_per_step'] / ours['decode_ms_per_step']:.2f}x", ""]]
    share = ours["fraction_of_limit"]
    met = f">= {100 * DECODE_LIMIT_TARGET:.0f}% {met_or_not(share, DECODE_LIMIT_TARGET)}" if with_target else ""
    rows.append(
        [
            "  share of the weight-streaming limit",
            f"{100 * share:.0f}%",
            f"{100 * other['fraction_of_limit']:.0f}%",
            "",
            met,
        ]
    )
    if gen.get("tie"):
        what = f"  (greedy tokens part at new token {gen['first_different_position']}: a float tie)"
        rows.append([what, "", "", "", ""])
    return rows


def int8_rows(int8: dict[str, Any] | None, is_gpt2: bool) -> list[list[str]]:
    """The int8 weight-only rows (gptcore int8 in the gptcore column, gptcore fp32 in the other), or why they are
    missing."""
    if int8 is None:
        return []
    if "skipped" in int8:
        return [["int8 decode: not measured", "", "", "", int8["skipped"][:80]]]
    rows = [
        [
            "int8 generate b=1 tokens/s (torchao; other column: gptcore fp32)",
            f"{int8['int8']['per_s']:.1f}",
            f"{int8['fp32']['per_s']:.1f}",
            f"{int8['ratio']:.2f}x",
            "",
        ]
    ]
    rows += decode_rows(int8, ("int8", "fp32"), is_gpt2)[:2]
    if "agreement" in int8:
        agreement = int8["agreement"]
        rows.append(
            [
                f"  same next token as fp32 ({agreement['positions']} positions of {agreement['text']})",
                f"{100 * agreement['agreement']:.1f}%",
                "",
                "",
                "",
            ]
        )
    return rows


def llama_cpp_rows(llama: dict[str, Any] | None) -> list[list[str]]:
    """llama-bench's b=1 decoding per GGUF type next to the weight-streaming limit (gptcore fp32 from the same run)."""
    if not llama:
        return []
    rows = [
        [
            f"llama.cpp {llama.get('build') or ''} ({llama['threads']} threads): gptcore fp32 decode ms/step",
            f"{llama['ours_fp32_decode_ms_per_step']:.2f}",
            "",
            "",
            "",
        ]
    ]
    for kind, entry in llama.items():
        if isinstance(entry, dict) and "decode_tokens_per_s" in entry:
            limit_ms = entry["limit"]["limit_ms_per_step"]
            rows.append(
                [
                    f"  llama.cpp {kind}: decode tok/s, ms/step (limit {limit_ms:.2f} ms)",
                    f"{entry['decode_tokens_per_s']:.1f}",
                    f"{entry['decode_ms_per_step']:.2f} ms",
                    "",
                    f"{100 * entry['fraction_of_limit']:.0f}% of limit; "
                    f"prompt {entry['prompt_tokens_per_s']:.0f} tok/s",
                ]
            )
    return rows


def format_table(rows: list[list[str]]) -> str:
    """The first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
