"""Benchmark gptcore against transformers' own GPT-2 on this machine: same config, same weights, same run.

    python examples/benchmark.py                       # the `small` size (4 layers, 256 dims, GPT-2 vocab)
    python examples/benchmark.py --config gpt2         # GPT-2 124M (any size of gptcore.modeling.PRESETS)
    python examples/benchmark.py --config my.json      # any GPT2Config fields, as JSON
    python examples/benchmark.py --config gpt2 --llama-cpp ~/llama.cpp/build   # also llama.cpp on the same weights

Builds transformers' `GPT2LMHeadModel` with random weights, saves it, loads the same folder with
`GPTCoreForCausalLM.from_pretrained` (identical weights), then measures both, interleaving them
(A B, B A, ...) after warm-up and taking medians, so that machine noise hits both alike. Each part runs in
each precision of --precisions: fp32, and bf16 where the hardware computes it natively (CUDA with bf16, CPUs
with AMX or AVX512-bf16; otherwise the table says why bf16 was left out).

  train     forward + backward + AdamW step (the same optimizer for both; fused where torch has it),
            batch x seq tokens (default 4 x 256), labels = inputs; fp32, or bf16 autocast over fp32 weights.
            Tokens/s = batch x seq / median step time, and model FLOPs utilisation:
            MFU = (6 N + 12 L T C) * tokens/s / peak, where N counts the weights used in matrix products
            (the blocks' and the LM head, tied to wte) and the second term is attention (PaLM's convention;
            the count examples/estimate.py gives); peak = the best torch.mm rate measured here in that
            precision (2048^2 on CPU, 8192^2 on CUDA).
  memory    peak training memory of a fresh process per model running a few steps: peak RSS on CPU,
            torch.cuda.max_memory_allocated on CUDA.
  generate  model.generate(): greedy, random prompt of --prompt tokens, exactly --new-tokens new tokens
            (EOS disabled), batches --gen-batches, the default (dynamic) cache, weights in the precision.
            Both models must produce the same tokens, or the benchmark stops with an error: a speed figure
            counts only for a correct decode. The one exception is a float tie: where the two chosen tokens'
            logits are equal to within rounding under both models, either is the greedy token (reported).
            At batch 1 also the median decoding step in ms (prefill excluded) next to the weight-streaming
            limit: the bytes one step reads (every weight once, one row of each embedding table, the cached
            keys and values) over the memory read bandwidth measured in the same run (sum() of a filled
            --bandwidth-mib buffer, best of 5), and the share of that limit reached.
  compile   the same with cache_implementation="static" and torch.compile (transformers' CompileConfig,
            fullgraph=True: decoding steps compiled, prefill eager), batch --compile-batches. The first
            call compiles, which takes far longer than the timed calls, and is reported separately.
  int8      (with torchao installed: pip install 'gptcore[int8]') gptcore quantised to int8 weight-only,
            LM head included, against gptcore fp32: b=1 tokens/s, ms/step against its own (smaller) limit,
            and how often both predict the same next token over --agreement-text (teacher-forced).
  llama.cpp (--llama-cpp PATH: a llama.cpp build folder or its llama-bench) llama-bench -r 1 on GGUF files of
            the same weights (f32, bf16, and q8_0 when llama-quantize is there), interleaved with gptcore's
            fp32 decoding; speed only (llama-bench prints no tokens). The GGUFs come from gptcore's export;
            by hand: python -m gptcore.conversion CHECKPOINT model.gguf --to gguf --tokenizer gpt2, then
            llama-quantize model.gguf model-q8_0.gguf q8_0, and llama-bench -m model.gguf -p 32 -n 64.
  profile   (--profile) gptcore's operators by self time (torch.profiler) in a training step and in a b=1
            generate() call (per new token, prefill included), per precision: where the time goes on this machine.

Prints a table of gptcore / transformers ratios and writes everything (raw timings too) to --json.
CPU timings are noisy on shared machines: compare only figures from one run; use more repeats if the
spread (reported in the JSON) is large.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from benchmarking import benchmark  # the measuring tools beside this script (examples/benchmarking, not installed)
from benchmarking.benchmark import PARTS, PRECISIONS, BenchmarkSettings, choose_precisions, config_fields, run_benchmark
from benchmarking.profiling import format_profile
from benchmarking.report import device_description, format_table, report_rows
from benchmarking.timing import CLOCKS

from gptcore.modeling import PRESETS
from gptcore.training.hardware import pick_device

DEFAULT_TEXT = Path(__file__).parent / "data" / "corpus" / "asyoulik.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        default="small",
        help=f"a model size ({', '.join(PRESETS)}) or a JSON file of GPT2Config fields (default: small)",
    )
    p.add_argument("--device", default="auto", help="auto (the accelerator torch finds, else cpu), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument(
        "--dropout", type=float, default=None, help="override resid/embd/attn dropout (default: GPT2Config's, 0.1)"
    )
    p.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    p.add_argument("--seq", type=int, default=256, help="training sequence length (default 256)")
    p.add_argument(
        "--train-warmup", type=int, default=None, help="untimed training steps per model (default 2; 1 for gpt2 sizes)"
    )
    p.add_argument(
        "--train-steps", type=int, default=None, help="timed training steps per model (default 6; 4 for gpt2 sizes)"
    )
    p.add_argument(
        "--memory-steps",
        type=int,
        default=None,
        help="steps run by each memory-measuring process (default 3; 2 for gpt2 sizes)",
    )
    p.add_argument("--prompt", type=int, default=32, help="prompt length for generation (default 32)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--gen-batches", type=int, nargs="+", default=[1, 8], help="generation batch sizes (default 1 8)")
    p.add_argument(
        "--compile-batches", type=int, nargs="*", default=[1], help="batch sizes for static cache + compile (default 1)"
    )
    p.add_argument("--gen-warmup", type=int, default=1, help="untimed generate() calls per model and batch (default 1)")
    p.add_argument(
        "--gen-repeats",
        type=int,
        default=None,
        help="timed generate() calls per model and batch (default 5; 3 for gpt2 sizes)",
    )
    p.add_argument(
        "--peak-size", type=int, default=None, help="matrix size for the matmul peak (default 2048 CPU, 8192 CUDA)"
    )
    p.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to skip")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["auto"],
        choices=["auto", *PRECISIONS],
        help="auto (default): fp32, plus bf16 where the hardware computes it natively; or name them",
    )
    p.add_argument(
        "--bandwidth-mib",
        type=int,
        default=512,
        help="size of the buffer whose reading measures memory bandwidth (default 512)",
    )
    p.add_argument(
        "--agreement-text",
        default=str(DEFAULT_TEXT),
        help="text for the int8 next-token agreement (default: %(default)s)",
    )
    p.add_argument("--agreement-tokens", type=int, default=4096, help="tokens of it to use (default 4096)")
    p.add_argument(
        "--llama-cpp",
        metavar="PATH",
        default=None,
        help="llama.cpp build folder (or its llama-bench): also run llama-bench on the same weights",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also print gptcore's operators by self time in a training step and in generate()",
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall (default) or cpu: this process's CPU time, steadier on a busy machine with --threads 1",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="output file (default: benchmark-<config>-<device>.json)")
    args = p.parse_args(argv)
    big = args.config.startswith("gpt2")  # a training step of 124M+ weights takes seconds on a CPU: fewer repeats
    for name, small, large in (
        ("train_warmup", 2, 1),
        ("train_steps", 6, 4),
        ("memory_steps", 3, 2),
        ("gen_repeats", 5, 3),
    ):
        if getattr(args, name) is None:
            setattr(args, name, large if big else small)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(format="%(message)s", stream=sys.stdout)
    logging.getLogger(benchmark.__name__).setLevel(logging.INFO)  # its progress lines
    device = pick_device(args.device)
    config_name = args.config if args.config in PRESETS else Path(args.config).stem
    fields = config_fields(args.config, args.dropout)
    results: dict[str, Any] = {
        "config_name": config_name,
        "config": fields,
        "args": vars(args),
        "device": device.type,
        "device_description": device_description(device),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }
    print(
        f"gptcore vs transformers GPT2LMHeadModel | config {config_name} | {device.type}: "
        f"{results['device_description']}"
    )
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, clock: {args.clock}", flush=True)
    args.precisions, skipped = choose_precisions(args.precisions, device)
    results["precisions_skipped"] = skipped
    for precision, why in skipped.items():
        print(f"{precision}: not measured ({why})")
    settings = BenchmarkSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchmarkSettings)})
    results.update(run_benchmark(fields, settings, device))

    print()
    print(format_table(report_rows(results, device)))
    for precision, tables in results.get("profile", {}).items():
        print()
        print(format_profile(f"gptcore train step ({args.batch}x{args.seq}, {precision})", tables["train"]))
        print(format_profile(f"gptcore generate() b=1 ({args.prompt}-token prompt, {precision})", tables["generate"]))
    out = Path(args.json or f"benchmark-{config_name}-{device.type}.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
