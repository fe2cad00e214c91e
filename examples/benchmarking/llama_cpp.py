"""llama.cpp beside gptcore, for `examples/benchmark.py --llama-cpp PATH`: its `llama-bench` on GGUF files of the
benchmark's weights (written by gptcore's GGUF export), interleaved with gptcore's own b=1 decoding."""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmarking.timing import StepClock, Timer
from gptcore.modeling import GPTCoreForCausalLM

if TYPE_CHECKING:
    from benchmarking.benchmark import BenchmarkSettings


def find_llama_tool(path: str | Path, name: str) -> Path | None:
    """The llama.cpp program `name` (llama-bench, llama-quantize) given a build folder (its root, build/ or bin/) or
    one of its programs, or None."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    for candidate in (folder / name, folder / "bin" / name, folder / "build" / "bin" / name):
        if candidate.is_file():
            return candidate
    return None


def export_gguf_files(checkpoint: str, folder: Path, quantize: Path | None) -> dict[str, Path]:
    """GGUF files of the benchmark's weights for llama.cpp: f32, bf16 and (with llama-quantize) q8_0, written by
    gptcore's GGUF export (`python -m gptcore.conversion CHECKPOINT model.gguf --to gguf --tokenizer gpt2`)."""
    from gptcore.conversion import export_gguf
    from gptcore.tokenization import gpt2_tokenizer

    model = GPTCoreForCausalLM.from_pretrained(checkpoint)
    files = {"f32": export_gguf(model, folder / "f32.gguf", gpt2_tokenizer())}
    files["bf16"] = export_gguf(model.to(torch.bfloat16), folder / "bf16.gguf", gpt2_tokenizer())
    if quantize is not None:
        command = [str(quantize), files["f32"], str(folder / "q8_0.gguf"), "q8_0"]
        subprocess.run(command, check=True, capture_output=True)
        files["q8_0"] = folder / "q8_0.gguf"
    return {kind: Path(file) for kind, file in files.items()}


def gguf_bytes_per_step(path: Path, context: float) -> int:
    """Bytes a llama.cpp decoding step reads from a GPT-2 GGUF: every tensor, except one row of the position
    embedding (token_embd is also the output head, read whole); plus its f16 KV cache at `context` tokens."""
    import gguf

    reader = gguf.GGUFReader(path)
    total, n_layer, n_embd = 0, 0, 0
    for tensor in reader.tensors:
        size = int(tensor.n_bytes)
        if tensor.name == "position_embd.weight":
            n_embd = int(tensor.shape[0])
            size //= int(tensor.shape[1])
        n_layer += tensor.name.endswith("attn_qkv.weight")
        total += size
    return total + int(2 * n_layer * context * n_embd * 2)


def run_llama_bench(bench: Path, model: Path, threads: int, prompt: int, new_tokens: int) -> dict[str, float]:
    """One `llama-bench` run (-r 1) of `model`: prompt-processing and decoding tokens/s."""
    command = [
        str(bench),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-p",
        str(prompt),
        "-n",
        str(new_tokens),
        "-r",
        "1",
        "-o",
        "json",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    rates = {}
    for test in json.loads(done.stdout):
        rates["prompt_tokens_per_s" if test["n_gen"] == 0 else "decode_tokens_per_s"] = float(test["avg_ts"])
        rates["build"] = test.get("build_commit")
    return rates


def bench_llama_cpp(
    checkpoint: str, settings: BenchmarkSettings, timer: Timer, ours: torch.nn.Module
) -> dict[str, Any]:
    """llama.cpp's `llama-bench` on GGUF files of the same weights, interleaved with gptcore's fp32 b=1 decoding
    (repeat r: gptcore, then each file once), medians. llama-bench feeds its own tokens and prints no text, so its
    figures are speed only; that the GGUF computes the same model as gptcore (the same greedy tokens) is checked by
    tests/conversion/test_gguf.py where llama-cpp-python is installed."""
    bench = find_llama_tool(settings.llama_cpp, "llama-bench")
    if bench is None:
        raise FileNotFoundError(
            f"--llama-cpp {settings.llama_cpp}: no llama-bench there, nor in its bin/ or build/bin/"
        )
    threads = settings.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        files = export_gguf_files(checkpoint, Path(folder), find_llama_tool(bench, "llama-quantize"))
        context = settings.new_tokens / 2  # llama-bench decodes from an empty context
        result: dict[str, Any] = {
            kind: {"bytes_per_step": gguf_bytes_per_step(file, context), "runs": []} for kind, file in files.items()
        }
        prompt = torch.randint(0, ours.config.vocab_size, (1, settings.prompt), device=timer.device)
        ours_steps: list[float] = []
        for _ in range(settings.gen_repeats):
            clock = StepClock(timer.clock)
            ours.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=settings.new_tokens,
                do_sample=False,
                streamer=clock,
            )
            ours_steps += clock.decode_steps()
            for kind, file in files.items():
                result[kind]["runs"].append(run_llama_bench(bench, file, threads, settings.prompt, settings.new_tokens))
    for kind in files:
        runs = result[kind].pop("runs")
        for key in ("prompt_tokens_per_s", "decode_tokens_per_s"):
            result[kind][key] = statistics.median(run[key] for run in runs)
        result[kind]["decode_ms_per_step"] = 1e3 / result[kind]["decode_tokens_per_s"]
        result["build"] = runs[0].get("build")
    result["ours_fp32_decode_ms_per_step"] = 1e3 * statistics.median(ours_steps)
    result["threads"], result["binary"] = threads, str(bench)
    return result
