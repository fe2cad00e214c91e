"""Benchmark gptcore against transformers' own GPT-2 on this machine: same config, same weights, same run.

    python examples/benchmark.py                       # the `small` config (4 layers, 256 dims, GPT-2 vocab)
    python examples/benchmark.py --config gpt2         # GPT-2 124M
    python examples/benchmark.py --config my.json      # any GPT2Config fields, as JSON

Builds transformers' `GPT2LMHeadModel` with random weights, saves it, loads the same folder with
`GPTCoreForCausalLM.from_pretrained` (identical weights), then measures both, interleaving them
(A B, B A, ...) after warm-up and taking medians, so that machine noise hits both alike:

  train     forward + backward + AdamW step (the same optimizer for both; fused where torch has it),
            batch x seq tokens (default 4 x 256), labels = inputs; fp32 on CPU, bf16 autocast on CUDA.
            Tokens/s and model FLOPs utilisation: MFU = (6 N + 12 L T C) * tokens/s / peak, where N counts
            the weights used in matmuls (all but the position embedding; the LM head is tied to wte) and
            the second term is attention (PaLM's convention); peak = the best torch.mm rate measured here
            (fp32 2048^2 on CPU, bf16 8192^2 on CUDA).
  memory    peak training memory of a fresh process per model running a few steps: peak RSS on CPU,
            torch.cuda.max_memory_allocated on CUDA.
  generate  model.generate(): greedy, random prompt of --prompt tokens, exactly --new-tokens new tokens
            (EOS disabled), batches --gen-batches, the default (dynamic) cache; also checks that both
            models produce the same tokens.
  compile   the same with cache_implementation="static" and torch.compile (transformers' CompileConfig,
            fullgraph=True: decoding steps compiled, prefill eager), batch --compile-batches. The first
            call compiles (30-60 s per model on a cold inductor cache) and is reported separately.

Prints a table of gptcore / transformers ratios and writes everything (raw timings too) to --json.
CPU timings are noisy on shared machines: compare only figures from one run; use more repeats if the
spread (reported in the JSON) is large.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import transformers
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel

from gptcore.modeling import GPTCoreForCausalLM

CONFIGS = {
    "small": dict(n_layer=4, n_head=4, n_embd=256, vocab_size=50257, n_positions=256),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
}
NAMES = {"ours": "gptcore", "ref": "transformers"}
# Targets of issue 6, as ratios gptcore / transformers measured in the same run.
TARGETS = {"train_tokens_per_s": 1.15, "train_peak_memory": 1.0, "generate_tokens_per_s": 1.0, "compiled_b1_vs_default": 2.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="small", help="small, gpt2, or a JSON file of GPT2Config fields (default: small)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--dropout", type=float, default=None, help="override resid/embd/attn dropout (default: the config's, 0.1)")
    p.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    p.add_argument("--seq", type=int, default=256, help="training sequence length (default 256)")
    p.add_argument("--train-warmup", type=int, default=None, help="untimed training steps per model (default 2; 1 for gpt2)")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per model (default 6; 4 for gpt2)")
    p.add_argument("--memory-steps", type=int, default=None, help="steps run by each memory-measuring process (default 3; 2 for gpt2)")
    p.add_argument("--prompt", type=int, default=32, help="prompt length for generation (default 32)")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--gen-batches", type=int, nargs="+", default=[1, 8], help="generation batch sizes (default 1 8)")
    p.add_argument("--compile-batches", type=int, nargs="*", default=[1], help="batch sizes for static cache + compile (default 1)")
    p.add_argument("--gen-warmup", type=int, default=1, help="untimed generate() calls per model and batch (default 1)")
    p.add_argument("--gen-repeats", type=int, default=None, help="timed generate() calls per model and batch (default 5; 3 for gpt2)")
    p.add_argument("--peak-size", type=int, default=None, help="matrix size for the matmul peak (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "memory", "generate", "compile"], help="parts to skip")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall (default) or cpu: this process's CPU time, steadier on a busy machine with --threads 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="output file (default: benchmark-<config>-<device>.json)")
    p.add_argument("--memory-worker", nargs=2, metavar=("MODEL", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    big = args.config == "gpt2"  # a 124M training step takes seconds on a CPU: fewer repeats
    for name, small, large in (("train_warmup", 2, 1), ("train_steps", 6, 4), ("memory_steps", 3, 2), ("gen_repeats", 5, 3)):
        if getattr(args, name) is None:
            setattr(args, name, large if big else small)
    return args


# ---------------------------------------------------------------------------------------------
# Models and steps
# ---------------------------------------------------------------------------------------------


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.config in CONFIGS:
        fields = dict(CONFIGS[args.config])
    else:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {args.config!r} is neither {sorted(CONFIGS)} nor a JSON file")
        fields = json.loads(path.read_text())
    if args.dropout is not None:
        fields.update(resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout)
    return fields


def load(kind: str, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    cls = GPTCoreForCausalLM if kind == "ours" else GPT2LMHeadModel
    model = cls.from_pretrained(checkpoint, attn_implementation="sdpa").to(device)
    # transformers 5.x quirk: GPT2LMHeadModel gets loss_type=None, whose warning breaks compiled graphs.
    model.loss_type = "ForCausalLM"
    model.generation_config.eos_token_id = None  # always generate exactly --new-tokens tokens
    model.generation_config.pad_token_id = 0
    return model


def make_optimizer(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, str]:
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True), "AdamW(fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1), "AdamW(foreach)"


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def interleaved(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Warm each up, then time them in alternating order (A B, B A, ...); returns the timings per key."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {key: [] for key in fns}
    order = list(fns)
    for i in range(repeats):
        for key in order if i % 2 == 0 else order[::-1]:
            times[key].append(timed(fns[key], device))
    return times


def summary(times: list[float], work: float) -> dict[str, Any]:
    """Median time and work/s, plus the spread, from a list of timings."""
    median = statistics.median(times)
    return {"median_s": median, "per_s": work / median, "min_s": min(times), "max_s": max(times), "times_s": times}


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


def matmul_peak(device: torch.device, n: int | None) -> dict[str, Any]:
    """The best torch.mm rate over a few repeats: fp32 2048^2 on CPU, bf16 8192^2 on CUDA by default."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, device) for _ in range(10))
    return {"gflops": 2 * n**3 / best / 1e9, "what": f"torch.mm {n}x{n} {str(dtype).replace('torch.', '')}"}


def flops_per_token(model: torch.nn.Module, config: GPT2Config, seq: int) -> float:
    """Training FLOPs per token: 6 N (forward 2 N, backward 4 N) plus attention, 12 L T C."""
    n = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * config.n_layer * seq * config.n_embd


def bench_train(models: dict[str, torch.nn.Module], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    ids = torch.randint(0, models["ours"].config.vocab_size, (args.batch, args.seq), device=device)
    optimizers = {}
    for key, model in models.items():
        model.train()
        optimizers[key], optimizer_name = make_optimizer(model)
    fns = {key: (lambda m=model, o=optimizers[key]: train_step(m, o, ids)) for key, model in models.items()}
    times = interleaved(fns, args.train_warmup, args.train_steps, device)
    result: dict[str, Any] = {"optimizer": optimizer_name, "tokens_per_step": args.batch * args.seq}
    for key in models:
        result[key] = summary(times[key], args.batch * args.seq)
    for key, model in models.items():
        model.zero_grad(set_to_none=True)
        model.eval()
    optimizers.clear()
    result["ratio"] = result["ours"]["per_s"] / result["ref"]["per_s"]
    return result


def peak_rss(reset: bool = False) -> int:
    """The resident-set high-water mark of this process in bytes (Linux: VmHWM, which `reset` restarts
    from the current RSS; elsewhere ru_maxrss, which cannot be reset)."""
    status = Path("/proc/self/status")
    if status.exists():
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_worker(kind: str, checkpoint: str, args: argparse.Namespace) -> None:
    """Run in a fresh process: load one model, train a few steps, print its peak memory as JSON."""
    transformers.logging.set_verbosity_error()
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    model = load(kind, checkpoint, device).train()
    optimizer, _ = make_optimizer(model)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=device)
    out = {"peak_rss_loading_bytes": peak_rss()}
    out["rss_before_training_bytes"] = peak_rss(reset=True)  # count from here: weights resident, loading's peak not
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.memory_steps):
        train_step(model, optimizer, ids)
    sync(device)
    out["peak_rss_bytes"] = peak_rss()
    if device.type == "cuda":
        out["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


def bench_memory(checkpoint: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Peak memory of one fresh process per model (both at once: each process has its own peak)."""
    result: dict[str, Any] = {"what": "max_memory_allocated" if device.type == "cuda" else "peak RSS while training"}
    workers = {}
    for key in ("ref", "ours"):
        cmd = [sys.executable, __file__, "--memory-worker", key, str(checkpoint), "--device", device.type]
        cmd += ["--batch", str(args.batch), "--seq", str(args.seq), "--seed", str(args.seed), "--memory-steps", str(args.memory_steps)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        workers[key] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for key, worker in workers.items():
        stdout, stderr = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"memory measurement for {NAMES[key]} failed:\n{stderr[-3000:]}")
        result[key] = json.loads(stdout.strip().splitlines()[-1])
    field = "max_memory_allocated_bytes" if device.type == "cuda" else "peak_rss_bytes"
    result["ratio"] = result["ours"][field] / result["ref"][field]
    result["field"] = field
    return result


def bench_generate(
    models: dict[str, torch.nn.Module], args: argparse.Namespace, device: torch.device, batch: int, **generate_kwargs: Any
) -> dict[str, Any]:
    vocab = models["ours"].config.vocab_size
    prompt = torch.randint(0, vocab, (batch, args.prompt), device=device, generator=None)
    mask = torch.ones_like(prompt)
    kwargs = dict(attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False, **generate_kwargs)
    outputs: dict[str, torch.Tensor] = {}

    def run(key: str) -> None:
        outputs[key] = models[key].generate(prompt, **kwargs)

    result: dict[str, Any] = {"batch": batch}
    if "compile_config" in generate_kwargs:  # the first call compiles: time it on its own
        for key in models:
            result[f"{key}_first_call_s"] = timed(lambda k=key: run(k), device)
    fns = {key: (lambda k=key: run(k)) for key in models}
    times = interleaved(fns, args.gen_warmup, args.gen_repeats, device)
    for key in models:
        result[key] = summary(times[key], batch * args.new_tokens)
        result[key]["ms_per_token_step"] = 1e3 * result[key]["median_s"] / args.new_tokens
        assert outputs[key].shape == (batch, args.prompt + args.new_tokens), outputs[key].shape
    # Same weights, greedy: the same tokens, unless two logits are tied to within float rounding (~1e-6),
    # which random-weight models with a 50k vocabulary do produce now and then.
    differ = (outputs["ours"] != outputs["ref"]).any(dim=0).nonzero()
    result["same_tokens"] = len(differ) == 0
    result["first_different_position"] = None if len(differ) == 0 else int(differ[0]) - args.prompt
    result["ratio"] = result["ours"]["per_s"] / result["ref"]["per_s"]
    return result


def compile_config(device: torch.device) -> CompileConfig:
    config = CompileConfig(fullgraph=True, mode="reduce-overhead" if device.type == "cuda" else "default")
    # generate() compiles automatically only on accelerators; this documented flag opts the CPU in too.
    config._compile_all_devices = True
    return config


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_description(device: torch.device) -> str:
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


def check(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    return "met" if (value >= target if higher_is_better else value <= target) else "NOT met"


def report(results: dict[str, Any], device: torch.device) -> list[list[str]]:
    rows = [["metric", "gptcore", "transformers", "ratio", "target"]]
    train, memory = results.get("train"), results.get("memory")
    if train:
        mode = "bf16 autocast" if device.type == "cuda" else "fp32"
        what = f"train tokens/s ({results['args']['batch']}x{results['args']['seq']}, {mode}, {train['optimizer']})"
        rows.append([what, f"{train['ours']['per_s']:.1f}", f"{train['ref']['per_s']:.1f}", f"{train['ratio']:.2f}x",
                     f">= {TARGETS['train_tokens_per_s']}x {check(train['ratio'], TARGETS['train_tokens_per_s'])}"])
        mfu_target = 0.45 if device.type == "cuda" else 0.60
        rows.append([f"train MFU (peak {results['peak']['gflops']:.0f} GFLOP/s)", f"{100 * train['ours']['mfu']:.1f}%",
                     f"{100 * train['ref']['mfu']:.1f}%", f"{train['ours']['mfu'] / train['ref']['mfu']:.2f}x",
                     f">= {100 * mfu_target:.0f}% {check(train['ours']['mfu'], mfu_target)}" if results["config_name"] == "gpt2" else ""])
    if memory:
        f = memory["field"]
        rows.append([f"train peak memory ({memory['what']})", f"{memory['ours'][f] / 2**30:.2f} GiB",
                     f"{memory['ref'][f] / 2**30:.2f} GiB", f"{memory['ratio']:.2f}x",
                     f"<= {TARGETS['train_peak_memory']}x {check(memory['ratio'], TARGETS['train_peak_memory'], False)}"])
    for gen in results.get("generate", []):
        rows.append([f"generate b={gen['batch']} tokens/s (default cache)", f"{gen['ours']['per_s']:.1f}", f"{gen['ref']['per_s']:.1f}",
                     f"{gen['ratio']:.2f}x", f">= {TARGETS['generate_tokens_per_s']}x {check(gen['ratio'], TARGETS['generate_tokens_per_s'])}"])
    for gen in results.get("compile", []):
        if "error" in gen:
            rows.append([f"generate b={gen['batch']} static+compile", "error", "", "", gen["error"][:60]])
            continue
        rows.append([f"generate b={gen['batch']} tokens/s (static + compile)", f"{gen['ours']['per_s']:.1f}", f"{gen['ref']['per_s']:.1f}",
                     f"{gen['ratio']:.2f}x", ""])
        vs = gen.get("ours_vs_ref_default")
        if vs is not None:
            target = TARGETS["compiled_b1_vs_default"]
            rows.append([f"  gptcore compiled / transformers default, b={gen['batch']}", "", "", f"{vs:.2f}x",
                         f">= {target}x {check(vs, target)}" if gen["batch"] == 1 and results["config_name"] == "small" else ""])
        rows.append([f"  first (compiling) call, b={gen['batch']}", f"{gen['ours_first_call_s']:.1f} s", f"{gen['ref_first_call_s']:.1f} s", "", ""])
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global clock
    args = parse_args(argv)
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(*args.memory_worker, args)
        return {}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = pick_device(args.device)
    config_name = args.config if args.config in CONFIGS else Path(args.config).stem
    fields = config_fields(args)
    results: dict[str, Any] = {
        "config_name": config_name,
        "config": fields,
        "args": {k: v for k, v in vars(args).items() if k != "memory_worker"},
        "device": device.type,
        "device_description": device_description(device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
    }
    print(f"gptcore vs transformers GPT2LMHeadModel | config {config_name} | {device.type}: {results['device_description']}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, clock: {args.clock}")

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(args.seed)
        GPT2LMHeadModel(GPT2Config(**fields)).save_pretrained(tmp)  # random weights, GPT-2's own layout

        def fresh_models() -> dict[str, torch.nn.Module]:  # training changes weights: each part starts anew
            return {"ours": load("ours", tmp, device), "ref": load("ref", tmp, device)}

        models = fresh_models()
        results["parameters"] = sum(p.numel() for p in models["ours"].parameters())
        results["peak"] = matmul_peak(device, args.peak_size)
        with torch.no_grad():
            ids = torch.randint(0, fields["vocab_size"], (2, min(args.seq, fields["n_positions"])), device=device)
            diff = (models["ours"].eval()(ids).logits.float() - models["ref"].eval()(ids).logits.float()).abs().max()
        results["parity_max_abs_logit_diff"] = diff.item()
        print(f"{results['parameters'] / 1e6:.1f}M parameters; matmul peak {results['peak']['gflops']:.0f} GFLOP/s "
              f"({results['peak']['what']}); max |logit difference| {diff.item():.1e}", flush=True)

        if "train" not in args.skip:
            results["train"] = bench_train(models, args, device)
            # Measured again next to the training steps, keeping the best: one measurement can catch a slow
            # moment of a shared machine, and a low peak would overstate the MFU.
            results["peak"] = max(results["peak"], matmul_peak(device, args.peak_size), key=lambda p: p["gflops"])
            per_token = flops_per_token(models["ours"], models["ours"].config, args.seq)
            for key in models:
                results["train"][key]["mfu"] = per_token * results["train"][key]["per_s"] / (results["peak"]["gflops"] * 1e9)
            results["train"]["flops_per_token"] = per_token
            print(f"train: done ({results['train']['ratio']:.2f}x)", flush=True)
            models = fresh_models()
        if "memory" not in args.skip:
            results["memory"] = bench_memory(Path(tmp), args, device)
            print(f"memory: done ({results['memory']['ratio']:.2f}x)", flush=True)
        if "generate" not in args.skip:
            results["generate"] = []
            for batch in args.gen_batches:
                results["generate"].append(bench_generate(models, args, device, batch))
                print(f"generate b={batch}: done ({results['generate'][-1]['ratio']:.2f}x)", flush=True)
        if "compile" not in args.skip:
            results["compile"] = []
            default = {g["batch"]: g for g in results.get("generate", [])}
            for batch in args.compile_batches:
                try:
                    gen = bench_generate(models, args, device, batch, cache_implementation="static", compile_config=compile_config(device))
                except Exception as error:  # a platform without a working compiler: report it, keep the rest
                    gen = {"batch": batch, "error": f"{type(error).__name__}: {error}"}
                    print(f"static cache + compile, b={batch}: failed: {gen['error'][:500]}", flush=True)
                else:
                    if batch in default:
                        gen["ours_vs_ref_default"] = gen["ours"]["per_s"] / default[batch]["ref"]["per_s"]
                        gen["ours_vs_ours_default"] = gen["ours"]["per_s"] / default[batch]["ours"]["per_s"]
                    print(f"static cache + compile b={batch}: done ({gen['ratio']:.2f}x)", flush=True)
                results["compile"].append(gen)

    print()
    print_table(report(results, device))
    out = Path(args.json or f"benchmark-{config_name}-{device.type}.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
