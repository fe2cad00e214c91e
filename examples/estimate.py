"""How big is a gptcore model, how much compute per token, and how much memory to train or run it?

    python examples/estimate.py                                   # GPT-2 small, batch 8 x 1024
    python examples/estimate.py --model_name_or_path runs/pretrain/final --batch_size 4 --seq_len 256
    python examples/estimate.py --config_overrides n_layer=4,n_embd=256,n_head=4 --seq_len 256 \
        --precision fp32 --checkpointing off --measure   # also run real steps and compare

Training memory covers AdamW on all weights: weights, gradients, the two AdamW states, the activations
kept for the backward pass (counted tensor by tensor, see memory_estimates.py) and the transient
gradients at the busiest moment of the step. `--measure` runs steps in a fresh process and reports its
peak: resident memory (VmHWM) above the process's own baseline on CPU, `torch.cuda.max_memory_allocated`
on CUDA.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from gptcore.training.memory import PRECISIONS, Shape, flops_per_token, inference_memory, training_memory
from gptcore.training.arguments import ModelArguments, load_config, parse_args

from gptcore.modeling import GPTCoreConfig


@dataclass
class EstimateArguments:
    batch_size: int = field(default=8, metadata={"help": "Sequences per optimizer step (and per generate call)."})
    seq_len: int | None = field(default=None, metadata={"help": "Tokens per sequence. Default: the model's n_positions."})
    precision: str = field(default="all", metadata={"choices": ["all", *PRECISIONS], "help": "Training precision mode."})
    checkpointing: str = field(
        default="both", metadata={"choices": ["both", "off", "on"], "help": "Gradient (activation) checkpointing."}
    )
    device: str = field(
        default="auto", metadata={"choices": ["auto", "cpu", "cuda"], "help": "Kernels differ: CUDA keeps 1-byte dropout masks."}
    )
    attention: str = field(default="sdpa", metadata={"choices": ["sdpa", "eager"], "help": "The attention implementation."})
    measure: bool = field(default=False, metadata={"help": "Also run training steps and report the measured peak."})
    measure_steps: int = field(default=2, metadata={"help": "Steps per measurement; the peak of the last is reported."})
    output_json: str | None = field(default=None, metadata={"help": "Also write every figure to this JSON file."})


def gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------------------
# Measurement: runs in a fresh (spawned) process, so the baseline is a clean interpreter's.
# ------------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no {key}; --measure on CPU needs Linux")


@dataclass(frozen=True)
class TrainingRun:
    """What --measure trains: a model built from `config` (a dict), on random tokens, with AdamW."""

    config: dict
    attention: str
    batch: int
    seq_len: int
    precision: str
    checkpointing: bool
    device: str
    steps: int

    def train(self, on_last_step) -> None:
        import torch

        from gptcore.modeling import GPTCoreForCausalLM

        config = GPTCoreConfig(**self.config, attn_implementation=self.attention)
        model = GPTCoreForCausalLM(config).to(self.device).train()
        if self.precision == "bf16":
            model.to(torch.bfloat16)
        if self.checkpointing:
            # named activation_checkpointing_enable since transformers 5.23 (the old name is deprecated there)
            (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        autocast_dtype = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(self.precision)
        scaler = torch.amp.GradScaler(self.device, enabled=self.precision == "fp16-mixed")
        input_ids = torch.randint(0, config.vocab_size, (self.batch, self.seq_len), device=self.device)
        for step in range(self.steps):
            if step == self.steps - 1:
                on_last_step()
            with torch.autocast(self.device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss  # as Trainer runs it
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)


def _measure_worker(run: TrainingRun, queue) -> None:
    import torch

    torch.manual_seed(0)
    # One-time allocations of the runtime (thread pools, kernel workspaces) are not the model's.
    tiny = {"n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 16, "n_positions": 8}
    replace(run, config=tiny, batch=2, seq_len=8, steps=1).train(lambda: None)
    if run.device == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        run.train(torch.cuda.reset_peak_memory_stats)
        queue.put(torch.cuda.max_memory_allocated() - baseline)
        return
    baseline = _status_kib("VmRSS") * 1024

    def reset_high_water_mark() -> None:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS, so the last step's peak is read

    run.train(reset_high_water_mark)
    queue.put(_status_kib("VmHWM") * 1024 - baseline)


def measure_peak(run: TrainingRun) -> int:
    """Bytes the last of `run.steps` training steps needed at its peak, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_measure_worker, args=(run, queue))
    # glibc otherwise keeps freed blocks below a moving threshold (up to 32 MiB each) in the process, so
    # RSS would also count memory no tensor holds; with a fixed low threshold it tracks live tensors.
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        worker.start()
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous
    worker.join()
    if worker.exitcode != 0:
        raise RuntimeError(f"the measurement process failed (exit code {worker.exitcode}); see its error above")
    return queue.get()


# ------------------------------------------------------------------------------------------------


def main() -> None:
    model_args, args = parse_args(ModelArguments, EstimateArguments)
    if model_args.model_name_or_path or model_args.config_overrides:
        config = load_config(model_args)
    else:
        config = GPTCoreConfig()  # GPT-2 small
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.measure and device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--measure --device cuda needs a CUDA GPU here; measure with --device cpu or drop --measure")
    if args.measure and args.measure_steps < 1:
        raise ValueError(f"--measure_steps must be >= 1, got {args.measure_steps}")
    seq_len = args.seq_len or config.n_positions
    if args.batch_size < 1 or seq_len < 1:
        raise ValueError(f"--batch_size and --seq_len must be >= 1, got {args.batch_size} and {seq_len}")
    shape = Shape.from_config(config)
    precisions = PRECISIONS if args.precision == "all" else (args.precision,)
    checkpointing = {"both": (False, True), "off": (False,), "on": (True,)}[args.checkpointing]

    flops = flops_per_token(shape, seq_len)
    print(
        f"model: {shape.n_layer} layers, {shape.n_head} heads, {shape.n_embd} dims, vocab {shape.vocab_size}, "
        f"context {shape.n_positions}: {shape.params:,} parameters"
    )
    print(
        f"FLOPs per token at context {seq_len}: forward {flops['forward'] / 1e9:.3f} G, training step "
        f"{flops['train'] / 1e9:.3f} G ({flops['train_with_checkpointing'] / 1e9:.3f} G with checkpointing)"
    )
    print(f"\ntraining, AdamW, batch {args.batch_size} x {seq_len} tokens, {device}, {args.attention} attention:")
    print(f"{'precision':<11} {'ckpt':<5} {'weights':>12} {'gradients':>12} {'AdamW':>12} {'activations':>12} {'peak':>12}", end="")
    print(f" {'measured':>12} {'error':>7}" if args.measure else "")
    results = {"params": shape.params, "flops_per_token": flops, "training": [], "inference": []}
    for precision in precisions:
        for ckpt in checkpointing:
            est = training_memory(shape, args.batch_size, seq_len, precision, ckpt, device, args.attention)
            row = {"precision": precision, "gradient_checkpointing": ckpt, **est}
            line = f"{precision:<11} {'on' if ckpt else 'off':<5} " + " ".join(
                f"{gib(est[k]):>12}" for k in ("weights", "gradients", "optimizer_states", "activations", "peak")
            )
            if args.measure:
                run = TrainingRun(
                    config.to_dict(), args.attention, args.batch_size, seq_len, precision, ckpt, device, args.measure_steps
                )
                measured = measure_peak(run)
                row["measured_peak"] = measured
                row["relative_error"] = (est["peak"] - measured) / measured
                line += f" {gib(measured):>12} {row['relative_error']:>+7.1%}"
            print(line)
            results["training"].append(row)

    if device == "cuda" and not args.measure:
        print("(the CUDA figures follow PyTorch's CUDA kernels on paper; --measure checks them on this GPU)")

    print(f"\ninference with a KV cache, batch {args.batch_size}, context {seq_len} tokens:")
    print(f"{'precision':<11} {'weights':>12} {'KV cache':>12} {'per token':>12} {'peak':>12}")
    for precision in ("fp32", "bf16"):
        est = inference_memory(shape, args.batch_size, seq_len, precision, device, args.attention)
        print(f"{precision:<11} " + " ".join(f"{gib(est[k]):>12}" for k in ("weights", "kv_cache")) +
              f" {est['kv_cache_per_token'] / 1024:>9.1f} KiB {gib(est['peak']):>12}")
        results["inference"].append({"precision": precision, **est})
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
