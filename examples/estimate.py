r"""How big is a gptcore model, how much compute per token, and how much memory to train or run it?

    python examples/estimate.py                                   # GPT-2 small (124M), batch 8 x 1024
    python examples/estimate.py --config gpt2-medium --batch_size 4
    python examples/estimate.py --model_name_or_path runs/pretrain/final --batch_size 4 --seq_len 256
    python examples/estimate.py --config_overrides n_layer=4,n_embd=256,n_head=4 --seq_len 256 \
        --precision fp32 --checkpointing off --measure   # also run real steps and compare

Without --model_name_or_path or --config the model is GPT-2 small (124M), which --config_overrides changes.
Training memory covers AdamW on all weights: weights, gradients, the two AdamW states, the activations
kept for the backward pass (counted tensor by tensor, see gptcore.training.memory_estimate) and the transient
gradients at the busiest moment of the step. `--measure` runs steps in a fresh process and reports its
peak: resident memory (VmHWM) above the process's own baseline on CPU, `torch.cuda.max_memory_allocated`
on CUDA.

`--finetuning` picks what trains, as the fine-tuning scripts' flags do (gptcore.training.memory_saving), in fp32:
full, lora, qlora-4bit (--lora --load_in_4bit), qlora-8bit (--lora --load_in_8bit), int8-lora (--lora --int8),
galore (--galore); several, comma-separated; or all. Only what trains has gradients and AdamW states (GaLore's
are low-rank for the blocks' matrices), and a quantised base is counted in its stored size:

    python examples/estimate.py --config gpt2 --seq_len 256 --batch_size 4 --precision fp32 \
        --checkpointing off --finetuning all --measure
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from benchmarking.memory_measurement import measure_training_peak  # beside this script (examples/benchmarking)

from gptcore.training.arguments import ModelArguments, load_config, parse_args
from gptcore.training.hardware import pick_device
from gptcore.training.memory_estimate import (
    FINETUNING_MODES,
    PRECISIONS,
    Shape,
    TrainingSetup,
    flops_per_token,
    format_bytes,
    inference_memory,
    training_memory,
)

TRAINING_COLUMNS = ("weights", "gradients", "optimizer_states", "activations", "peak")


@dataclass
class EstimateArguments:
    batch_size: int = field(default=8, metadata={"help": "Sequences per optimizer step (and per generate call)."})
    seq_len: int | None = field(
        default=None, metadata={"help": "Tokens per sequence. Default: the model's n_positions."}
    )
    precision: str = field(
        default="all", metadata={"choices": ["all", *PRECISIONS], "help": "Training precision mode."}
    )
    checkpointing: str = field(
        default="both", metadata={"choices": ["both", "off", "on"], "help": "Gradient (activation) checkpointing."}
    )
    device: str = field(
        default="auto",
        metadata={"choices": ["auto", "cpu", "cuda"], "help": "Kernels differ: CUDA keeps 1-byte dropout masks."},
    )
    attention: str = field(
        default="sdpa", metadata={"choices": ["sdpa", "eager"], "help": "The attention implementation."}
    )
    finetuning: str = field(
        default="full",
        metadata={
            "help": f"What trains, one of {', '.join(FINETUNING_MODES)}, several (comma-separated) or all: "
            "all weights (full, galore) or LoRA adapters on a float, 4-bit, 8-bit or int8 base. Modes other "
            "than full are estimated in fp32."
        },
    )
    lora_r: int = field(default=TrainingSetup.lora_r, metadata={"help": "LoRA rank (the LoRA modes)."})
    galore_rank: int = field(default=TrainingSetup.galore_rank, metadata={"help": "GaLore's rank (the galore mode)."})
    measure: bool = field(default=False, metadata={"help": "Also run training steps and report the measured peak."})
    measure_steps: int = field(default=2, metadata={"help": "Steps per measurement; the peak of the last is reported."})
    output_json: str | None = field(default=None, metadata={"help": "Also write every figure to this JSON file."})


def main() -> None:
    model_args, args = parse_args(ModelArguments, EstimateArguments, description=__doc__)
    config = load_config(model_args, default_config="gpt2")
    # The estimate knows CUDA's kernels and the CPU's; another accelerator is estimated as the CPU.
    device = "cuda" if pick_device(args.device).type == "cuda" else "cpu"
    if args.measure and args.measure_steps < 1:
        raise ValueError(f"--measure_steps must be >= 1, got {args.measure_steps}")
    seq_len = args.seq_len or config.n_positions
    if args.batch_size < 1 or seq_len < 1:
        raise ValueError(f"--batch_size and --seq_len must be >= 1, got {args.batch_size} and {seq_len}")
    shape = Shape.from_config(config)
    precisions = PRECISIONS if args.precision == "all" else (args.precision,)
    checkpointing = {"both": (False, True), "off": (False,), "on": (True,)}[args.checkpointing]
    modes = FINETUNING_MODES if args.finetuning == "all" else tuple(args.finetuning.split(","))
    if not set(modes) <= set(FINETUNING_MODES):
        raise ValueError(
            f"--finetuning takes {', '.join(FINETUNING_MODES)} (comma-separated) or all, got {args.finetuning!r}"
        )
    if modes != ("full",) and args.precision not in ("all", "fp32"):
        raise ValueError(f"--finetuning {args.finetuning} is estimated in fp32 only; pass --precision fp32")

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
    print(f"{'mode':<11} {'trainable':>12} {'precision':<11} {'ckpt':<5} {'weights':>12} {'gradients':>12} ", end="")
    print(f"{'AdamW':>12} {'activations':>12} {'peak':>12}", end="")
    print(f" {'measured':>12} {'error':>7}" if args.measure else "")
    results = {"params": shape.params, "flops_per_token": flops, "training": [], "inference": []}
    for mode in modes:
        for precision in precisions if mode == "full" else ("fp32",):
            for ckpt in checkpointing:
                setup = TrainingSetup(
                    args.batch_size,
                    seq_len,
                    precision,
                    ckpt,
                    device,
                    args.attention,
                    mode,
                    lora_r=args.lora_r,
                    galore_rank=args.galore_rank,
                )
                estimate = training_memory(shape, setup)
                row = {"finetuning": mode, "precision": precision, "gradient_checkpointing": ckpt, **estimate}
                line = f"{mode:<11} {estimate['trainable_params']:>12,} {precision:<11} {'on' if ckpt else 'off':<5} "
                line += " ".join(f"{format_bytes(estimate[k]):>12}" for k in TRAINING_COLUMNS)
                if args.measure:
                    row["measured_peak"] = measured = measure_training_peak(config.to_dict(), setup, args.measure_steps)
                    row["relative_error"] = (estimate["peak"] - measured) / measured
                    line += f" {format_bytes(measured):>12} {row['relative_error']:>+7.1%}"
                print(line)
                results["training"].append(row)

    if device == "cuda" and not args.measure:
        print("(the CUDA figures follow PyTorch's CUDA kernels on paper; --measure checks them on this GPU)")

    print(f"\ninference with a KV cache, batch {args.batch_size}, context {seq_len} tokens:")
    print(f"{'precision':<11} {'weights':>12} {'KV cache':>12} {'per token':>12} {'peak':>12}")
    for precision in ("fp32", "bf16"):
        estimate = inference_memory(shape, args.batch_size, seq_len, precision, device, args.attention)
        print(
            f"{precision:<11} {format_bytes(estimate['weights']):>12} {format_bytes(estimate['kv_cache']):>12} "
            f"{estimate['kv_cache_per_token'] / 1024:>9.1f} KiB {format_bytes(estimate['peak']):>12}"
        )
        results["inference"].append({"precision": precision, **estimate})
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
