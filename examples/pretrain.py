#!/usr/bin/env python
"""Pretrain a GPT (gptcore) from scratch, or continue a checkpoint, with an `accelerate` training loop.

With no arguments it trains a small GPT on the public-domain books bundled in examples/data/corpus/ with
GPT-2's tokenizer and writes everything to runs/pretrain/:

    python examples/pretrain.py                                          # one device
    accelerate launch --multi_gpu --num_processes 4 examples/pretrain.py # data parallel (DDP; CPU-only: gloo)
    accelerate launch --config_file examples/accelerate_fsdp.yaml examples/pretrain.py --config gpt2-medium
    python examples/pretrain.py --resume_from_checkpoint latest          # continue after a stop or a crash

--batch_size is the global batch (sequences per optimizer step), whatever the number of processes:
accelerate splits each batch across them, and the loss is normalised by the token count of the whole
global batch, so 1 and N processes follow the same loss curve.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, set_seed, str_to_bool
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_cosine_with_min_lr_schedule_with_warmup

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.modeling.compat import enable_activation_checkpointing
from gptcore.training.arguments import ModelArguments, check_output_dir, check_vocab_fits, load_config, load_model
from gptcore.training.checkpoints import StopOnSignal, resume_or_start, save_checkpoint
from gptcore.training.hardware import choose_threads, pick_device, resolve_mixed_precision
from gptcore.training.language_modeling import (
    document_position_ids,
    load_document_tokenizer,
    micro_batches,
    prepare_data,
)
from gptcore.training.report import Curve, Panel, plot_curves, write_run_card

# The default training data lives beside this script, not in the installed package.
BUNDLED_CORPUS = sorted(str(path) for path in (Path(__file__).resolve().parent / "data" / "corpus").glob("*.txt"))
DEFAULT_CONFIG = "cpu-small"


def main(argv: list[str] | None = None) -> int:
    """Pretrain as the command line `argv` says. Returns the exit status: 0 when --max_steps is reached, 1 when a
    non-finite loss stopped training, 128 + N when signal N did (after saving a checkpoint)."""
    started = time.perf_counter()
    model_args, args = parse_args(argv)
    accelerator = make_accelerator(args)
    output_dir = prepare_output_dir(args, accelerator)
    checkpoints_dir = output_dir / "checkpoints"

    # Model, data, optimizer.
    set_seed(args.seed)  # the random weights, and dropout, follow from it
    tokenizer = load_document_tokenizer(model_args)
    model = build_model(model_args, args, tokenizer)
    train_loader, eval_loader, baseline = prepare_data(
        args, accelerator, tokenizer, model.config.vocab_size, BUNDLED_CORPUS
    )  # the baseline on the main process only
    optimizer, scheduler = build_optimizer(model, args)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    num_parameters = sum(param.numel() for param in unwrap(accelerator, model).parameters())  # tied ones count once

    # Where training stands: at the start, or where a checkpoint left it.
    run_settings = {name: getattr(args, name) for name in DATA_ORDER_ARGS}  # a resumed run must have the same
    progress = resume_or_start(accelerator, args.resume_from_checkpoint, checkpoints_dir, run_settings)
    metrics = MetricsLog(output_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    metrics.truncate_after(progress.step)  # a run resumed from an earlier step writes the later records again

    processes = f"1 process ({accelerator.device})"
    if accelerator.num_processes > 1:
        layout = f"{accelerator.distributed_type.value}, {accelerator.device.type}"
        processes = f"{accelerator.num_processes} processes ({layout})"
    accelerator.print(
        f"Training {num_parameters / 1e6:.1f}M parameters: {args.max_steps} steps of {args.batch_size} x "
        f"{args.block_size} tokens, {processes}, mixed precision {accelerator.mixed_precision}"
    )

    # The loop: optimizer steps until --max_steps. SIGINT/SIGTERM end the run after the current step, with a
    # checkpoint; a non-finite loss ends it at once, unless --skip_nonfinite_steps.
    batches = micro_batches(train_loader, progress, accelerator)
    bar = tqdm(
        total=args.max_steps, initial=progress.step, desc="Pretraining", disable=not accelerator.is_local_main_process
    )
    evaluation, loop_started = None, time.perf_counter()
    with StopOnSignal() as stop:
        while progress.step < args.max_steps:
            step_batches = [next(batches) for _ in range(args.gradient_accumulation_steps)]
            loss_contribution = forward_backward(model, accelerator, step_batches, args, tokenizer.eos_token_id)
            # One all-reduce gives every process the same loss and the same decision to stop.
            stop_flag = torch.tensor(float(stop.signum is not None), device=loss_contribution.device)
            reduced = accelerator.reduce(torch.stack([loss_contribution, stop_flag]))
            train_loss, stop_requested = reduced[0].item(), bool(reduced[1].item())
            grad_norm = None  # before clipping; None without clipping (--max_grad_norm 0) or for a non-finite loss
            if math.isfinite(train_loss) and args.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
            # With fp16 the gradient scaler itself skips steps with inf gradients.
            gradients_finite = grad_norm is None or math.isfinite(grad_norm) or accelerator.mixed_precision == "fp16"
            finite = math.isfinite(train_loss) and gradients_finite
            if not finite and not args.skip_nonfinite_steps:
                bar.close()
                accelerator.print(
                    f"Stopping: the training loss is {train_loss} (gradient norm {grad_norm}) at step "
                    f"{progress.step + 1}. Lower --learning_rate, use --mixed_precision bf16 or no instead of fp16, "
                    f"or pass --skip_nonfinite_steps; the newest complete checkpoint is in {checkpoints_dir}",
                    file=sys.stderr,
                )
                return 1

            learning_rate = scheduler.get_last_lr()[0]
            if finite:
                optimizer.step()
            else:
                accelerator.print(f"Skipping step {progress.step + 1}: loss {train_loss}, gradient norm {grad_norm}")
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.tokens_seen += args.batch_size * args.block_size
            metrics.write(
                step=progress.step,
                train_loss=train_loss,
                lr=learning_rate,
                grad_norm=grad_norm,
                skipped=not finite,
                tokens_seen=progress.tokens_seen,
                elapsed_s=round(time.perf_counter() - loop_started, 3),
            )
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}")

            if progress.step % args.eval_steps == 0 or progress.step == args.max_steps:
                evaluation = evaluate(model, accelerator, eval_loader, tokenizer, args)
                val_loss, sample = evaluation
                metrics.write(step=progress.step, val_loss=val_loss, val_perplexity=math.exp(val_loss))
                if accelerator.is_local_main_process:
                    bar.write(
                        f"step {progress.step}: validation loss {val_loss:.3f} (perplexity {math.exp(val_loss):.1f}); "
                        f"sample: {sample!r}"
                    )
            if (args.save_steps and progress.step % args.save_steps == 0) or stop_requested:
                save_checkpoint(accelerator, checkpoints_dir, progress, args.save_total_limit)
            if stop_requested:
                bar.close()
                if accelerator.is_main_process:
                    plot_loss_curve(metrics.records(), output_dir / "loss_curve.png", baseline)
                accelerator.print(
                    f"Stopped by a signal after step {progress.step}; checkpoint saved in {checkpoints_dir}. "
                    "Continue with --resume_from_checkpoint latest"
                )
                return 128 + (stop.signum or signal.SIGTERM)  # the signal may have reached another process only
    bar.close()

    # The end: the final model, its card, the loss curve, a summary.
    if evaluation is None:  # resumed from a run that had already finished: no step was left to evaluate
        evaluation = evaluate(model, accelerator, eval_loader, tokenizer, args)
    val_loss, sample = evaluation
    save_final_model(model, accelerator, tokenizer, output_dir / "final")
    if accelerator.is_main_process:
        records = metrics.records()
        train_losses = [record["train_loss"] for record in records if "train_loss" in record]
        final_metrics = {
            "steps": progress.step,
            "tokens seen": progress.tokens_seen,
            "final train loss": train_losses[-1] if train_losses else math.nan,
            "final validation loss": val_loss,
            "final validation perplexity": math.exp(val_loss),
            "unigram baseline (validation)": baseline,
            "wall time (s)": round(time.perf_counter() - started, 1),
        }
        settings = {
            **asdict(model_args),
            **vars(args),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
        }
        write_run_card(
            output_dir / "final",
            "gptcore GPT pretrained from scratch",
            "trained with gptcore's `examples/pretrain.py`.",
            unwrap(accelerator, model).config.to_dict(),
            num_parameters,
            final_metrics,
            settings,
            metrics_note="Losses are cross-entropies in nats per token. The unigram baseline is the validation "
            "cross-entropy under the\ntraining tokens' frequencies with add-one smoothing: a model must beat it to "
            "have learnt more than word counts.",
            pipeline_tag="text-generation",
            tags=["gptcore", "gpt2", "causal-lm", "pretraining"],
        )
        plot_loss_curve(records, output_dir / "loss_curve.png", baseline)
        accelerator.print(
            f"\nValidation loss {val_loss:.3f} nats/token (perplexity {math.exp(val_loss):.1f}) "
            f"vs unigram baseline {baseline:.3f} (perplexity {math.exp(baseline):.1f})"
        )
        accelerator.print(f"Sample after {progress.step} steps: {sample!r}")
        outputs = "final/ (model, tokenizer, model card), metrics.jsonl, loss_curve.png"
        if checkpoints_dir.is_dir():
            outputs += ", checkpoints/ (training state for --resume_from_checkpoint)"
        accelerator.print(f"Done in {time.perf_counter() - started:.0f} s. Outputs in {output_dir}/: {outputs}")
    accelerator.end_training()
    return 0


# Arguments. The model options are the fine-tuning scripts' `ModelArguments` (same names, same help, same meaning
# of --config/--config_overrides); everything else is pretraining's own and stays a plain `argparse` namespace.

_MODEL_HELP = {field.name: field.metadata["help"] for field in fields(ModelArguments)}
_MODEL_OPTIONS = ("model_name_or_path", "config", "config_overrides", "tokenizer_name_or_path")

# Arguments that fix which tokens each step sees; a resumed run must use the same ones.
DATA_ORDER_ARGS = (
    "train_files",
    "validation_files",
    "dataset_name",
    "dataset_config_name",
    "text_column",
    "sample_by",
    "streaming",
    "validation_split_percentage",
    "max_eval_samples",
    "block_size",
    "batch_size",
    "gradient_accumulation_steps",
    "seed",
    "no_cross_document_attention",
)


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, argparse.Namespace]:
    """(the model options, every other option), checked as far as they can be without a model or data."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument_group(
        "model",
        f"Default: random weights of the {DEFAULT_CONFIG} size. For random weights pretraining sets no dropout, and "
        "the\ntokenizer's vocabulary size and EOS token; --config_overrides applies on top of those.",
    ).add_argument
    for name in _MODEL_OPTIONS:
        add(f"--{name}", help=_MODEL_HELP[name])
    add("--gradient_checkpointing", action="store_true", help="recompute activations in backward to save memory")
    add("--torch_compile", action="store_true", help="compile the model with torch.compile (inductor)")

    add = parser.add_argument_group("data", f"Default: {describe_files(BUNDLED_CORPUS)}.").add_argument
    add("--train_files", nargs="+", help="local text files to train on")
    add(
        "--validation_files",
        nargs="+",
        help="local text files to validate on (default: hold out a share of the blocks)",
    )
    add("--dataset_name", help="a Hugging Face Hub dataset instead of local files")
    add("--dataset_config_name", help="the Hub dataset's configuration")
    add("--text_column", default="text", help="column holding the documents (default: text)")
    add(
        "--sample_by",
        default="document",
        choices=["document", "paragraph", "line"],
        help="what one document of a local text file is (default: the whole file)",
    )
    add("--streaming", action="store_true", help="stream the dataset instead of preparing it up front")
    add(
        "--validation_split_percentage",
        type=float,
        default=5.0,
        help="share of the blocks held out for validation when there is no validation split (default: 5)",
    )
    add(
        "--max_eval_samples",
        type=int,
        default=256,
        help="at most this many validation blocks; also how many a stream without validation split holds out",
    )
    add("--preprocessing_num_workers", type=int, help="processes for tokenization (datasets' map num_proc)")
    add("--block_size", type=int, default=128, help="tokens per training sequence (default: 128)")
    add(
        "--no_cross_document_attention",
        action="store_true",
        help="packed documents do not attend to each other (positions restart at each EOS)",
    )

    add = parser.add_argument_group("optimization").add_argument
    add("--batch_size", type=int, default=8, help="sequences per optimizer step, over all processes (default: 8)")
    add("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step (default: 1)")
    add("--max_steps", type=int, default=250, help="optimizer steps (default: 250)")
    add("--learning_rate", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    add("--min_lr_ratio", type=float, default=0.1, help="cosine decay ends at this share of the peak (default: 0.1)")
    add("--warmup_steps", type=int, default=20, help="linear warmup steps (default: 20)")
    add("--weight_decay", type=float, default=0.1, help="AdamW weight decay of the weight matrices (default: 0.1)")
    add("--adam_beta1", type=float, default=0.9)
    add("--adam_beta2", type=float, default=0.95)
    add("--max_grad_norm", type=float, default=1.0, help="clip the gradient norm to this; 0 = no clipping (default: 1)")
    add(
        "--mixed_precision",
        choices=["auto", "no", "fp16", "bf16"],
        default="auto",
        help="auto (default): under `accelerate launch` its setting (its --mixed_precision or config file, else no); "
        "otherwise bf16 where the hardware computes it natively (GPUs of compute capability 8.0 or newer, CPUs with "
        "AMX or AVX-512 bf16), else no (fp32)",
    )
    add("--skip_nonfinite_steps", action="store_true", help="skip a step whose loss is NaN/inf instead of stopping")
    add("--seed", type=int, default=42)
    add(
        "--threads",
        type=int,
        help="CPU threads for torch. Default: OMP_NUM_THREADS when set (accelerate launch sets it for each process), "
        "else torch's default, one per core; on a machine whose cores other processes keep busy, fewer are faster",
    )

    add = parser.add_argument_group("evaluation, checkpoints and outputs").add_argument
    add("--output_dir", default="runs/pretrain", help="where everything goes (default: runs/pretrain)")
    add("--overwrite_output_dir", action="store_true", help="start over in a non-empty --output_dir")
    add("--resume_from_checkpoint", help="'latest' (newest complete checkpoint in --output_dir) or a checkpoint folder")
    add("--eval_steps", type=int, default=100, help="validate and print a sample every N steps (default: 100)")
    add(
        "--save_steps", type=int, default=100, help="save a checkpoint every N steps; 0 = only on a stop (default: 100)"
    )
    add("--save_total_limit", type=int, default=2, help="keep the newest N checkpoints (default: 2)")
    add("--sample_prompt", default="Alice was beginning to", help="prompt of the sample generations")
    add(
        "--sample_max_new_tokens", type=int, default=40, help="tokens sampled at each evaluation (default: 40; 0: none)"
    )

    args = parser.parse_args(argv)
    model_args = ModelArguments(**{name: vars(args).pop(name) for name in _MODEL_OPTIONS})
    check_args(model_args, args)
    return model_args, args


def describe_files(paths: list[str]) -> str:
    """What --train_files defaults to, for --help."""
    if not paths:
        return "none: pass --train_files or --dataset_name"
    folder = os.path.commonpath([os.path.dirname(path) for path in paths])
    return f"the {len(paths)} text files in {folder}/ ({', '.join(os.path.relpath(path, folder) for path in paths)})"


def check_args(model_args: ModelArguments, args: argparse.Namespace) -> None:
    for name in (
        "batch_size",
        "gradient_accumulation_steps",
        "max_steps",
        "eval_steps",
        "save_total_limit",
        "max_eval_samples",
    ):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    for name in ("warmup_steps", "save_steps", "sample_max_new_tokens"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.block_size < 2:
        raise ValueError(f"--block_size must be >= 2 (a token and the next one to predict), got {args.block_size}")
    if args.batch_size % args.gradient_accumulation_steps:
        raise ValueError(
            f"--batch_size {args.batch_size} must be a multiple of --gradient_accumulation_steps "
            f"{args.gradient_accumulation_steps}: each micro-batch holds batch_size / gradient_accumulation_steps "
            "sequences"
        )
    # Checked again when the model is loaded; refused here so that nothing starts (no processes, no data).
    if model_args.model_name_or_path and (model_args.config or model_args.config_overrides):
        raise ValueError("--model_name_or_path brings its own config; drop --config/--config_overrides")
    if not model_args.model_name_or_path:
        model_args.config = model_args.config or DEFAULT_CONFIG  # named, so that the model card says which
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise ValueError(
            "--overwrite_output_dir deletes the checkpoints that --resume_from_checkpoint needs; pass one of them"
        )
    if not 0 <= args.min_lr_ratio <= 1:
        raise ValueError(f"--min_lr_ratio must be in [0, 1], got {args.min_lr_ratio}")


# Processes, devices, precision, threads, and the output folder.

# What `accelerate launch` was asked for (its config file or flags set these), and the mode that delivers it.
_REQUESTED_MODES = {"ACCELERATE_USE_FSDP": DistributedType.FSDP, "ACCELERATE_USE_DEEPSPEED": DistributedType.DEEPSPEED}


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    mixed_precision, why = resolve_mixed_precision(args.mixed_precision, pick_device())
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        # split_batches: the DataLoader yields global micro-batches and each process takes its slice, so the
        # data order does not depend on the number of processes. The seeded sampler reshuffles per epoch.
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True, data_seed=args.seed),
        dynamo_backend="inductor" if args.torch_compile else None,
        # Without a GPU (or other accelerator), ask for CPU explicitly: only then does accelerate join the
        # processes of `accelerate launch --multi_gpu` into one gloo process group.
        cpu=not torch.accelerator.is_available(),
    )
    check_process_layout(args, accelerator)
    accelerator.print(f"mixed precision: {accelerator.mixed_precision} ({why})")
    threads, why = choose_threads(args.threads)
    torch.set_num_threads(threads)
    args.threads = threads  # recorded in the model card with the other settings
    accelerator.print(f"threads: {threads} ({why})")
    # save_state stores the tied lm_head.weight once (it is wte.weight) and logs a warning saying so; loading
    # re-ties it, so the warning only alarms.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    if not accelerator.is_local_main_process:  # one progress bar and one set of messages per machine
        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
    return accelerator


def check_process_layout(args: argparse.Namespace, accelerator: Accelerator) -> None:
    for variable, wanted in _REQUESTED_MODES.items():
        # accelerate applies FSDP and DeepSpeed on accelerators only; elsewhere it quietly sets up plain data
        # parallelism, in which every process holds the whole model: not what a sharded run was sized for.
        if str_to_bool(os.environ.get(variable, "false")) and accelerator.distributed_type != wanted:
            raise ValueError(
                f"the accelerate launch asked for {wanted.value} ({variable}), but accelerate set up "
                f"{accelerator.distributed_type.value} on {accelerator.device.type}: it applies {wanted.value} on GPUs "
                "(and other accelerators) only, so every process would hold the whole model. On CPUs, launch data "
                "parallelism explicitly (`accelerate launch --multi_gpu --num_processes N examples/pretrain.py ...`); "
                f"for {wanted.value}, run on GPUs"
            )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and accelerator.num_processes == 1:
        raise ValueError(
            f"started as one of {os.environ['WORLD_SIZE']} processes, but accelerate did not set up distributed "
            "training, so each would train alone; launch with `accelerate launch --multi_gpu --num_processes N`"
        )
    micro_batch = args.batch_size // args.gradient_accumulation_steps
    if micro_batch % accelerator.num_processes:
        raise ValueError(
            f"each micro-batch (--batch_size / --gradient_accumulation_steps = {micro_batch} sequences) is split "
            f"across the {accelerator.num_processes} processes and must be a multiple of that number"
        )


def prepare_output_dir(args: argparse.Namespace, accelerator: Accelerator) -> Path:
    """Refuse to mix two runs in one folder; with --overwrite_output_dir, delete what an earlier run wrote."""
    output_dir = Path(args.output_dir)
    check_output_dir(output_dir, resume=bool(args.resume_from_checkpoint), overwrite=args.overwrite_output_dir)
    accelerator.wait_for_everyone()  # every process has checked before anything is deleted
    if accelerator.is_main_process:
        if args.overwrite_output_dir:  # what an earlier run wrote, and nothing else the folder holds
            for name in ("checkpoints", "final"):
                shutil.rmtree(output_dir / name, ignore_errors=True)
            for name in ("metrics.jsonl", "loss_curve.png"):
                (output_dir / name).unlink(missing_ok=True)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_dir


# The model, its optimizer and learning-rate schedule.


def build_model(model_args: ModelArguments, args: argparse.Namespace, tokenizer: Any) -> GPTCoreForCausalLM:
    """The weights of --model_name_or_path (gptcore or GPT-2 layout), else random weights of the --config size."""
    if model_args.model_name_or_path:
        model = load_model(GPTCoreForCausalLM, model_args)
    else:  # not load_model: it warns that random weights are a smoke test, and here they are the starting point
        # Pretraining's choices, under --config_overrides: no dropout (one pass over much text leaves little to
        # overfit; --config_overrides resid_pdrop=0.1,embd_pdrop=0.1,attn_pdrop=0.1 gives GPT-2's), an output layer
        # as large as the tokenizer's vocabulary, and its EOS token as BOS and EOS.
        eos = tokenizer.eos_token_id
        defaults = {
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": eos,
            "eos_token_id": eos,
        }
        model = GPTCoreForCausalLM(load_config(model_args, defaults=defaults))
    check_vocab_fits(tokenizer, model.config)
    if args.block_size > model.config.n_positions:
        raise ValueError(
            f"--block_size {args.block_size} exceeds the model's n_positions {model.config.n_positions}; lower it"
        )
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW and its schedule: linear warmup to --learning_rate, then cosine decay to --min_lr_ratio of it."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2)
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps, min_lr_rate=args.min_lr_ratio
    )
    return optimizer, scheduler


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on the weight matrices of the linear layers only: biases, LayerNorms and embeddings
    (the tied output layer included) are not pulled towards zero."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm)):
            no_decay.update(id(param) for param in module.parameters(recurse=False))
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            no_decay.add(id(param))
    params = list(model.parameters())  # tied weights appear once
    return [
        {"params": [param for param in params if id(param) not in no_decay], "weight_decay": weight_decay},
        {"params": [param for param in params if id(param) in no_decay], "weight_decay": 0.0},
    ]


def unwrap(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """The GPTCoreForCausalLM inside accelerate's wrappers (DDP/FSDP, torch.compile): what generates and is saved."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


# One optimizer step's gradients, and what every --eval_steps measures.


def position_ids(input_ids: torch.Tensor, args: argparse.Namespace, eos_token_id: int) -> torch.Tensor | None:
    """With --no_cross_document_attention, positions that restart at every EOS (which keeps packed documents
    apart); else None, the model's own 0, 1, 2, ..."""
    return document_position_ids(input_ids, eos_token_id) if args.no_cross_document_attention else None


def forward_backward(
    model: nn.Module, accelerator: Accelerator, step_batches: list[dict], args: argparse.Namespace, eos_token_id: int
) -> torch.Tensor:
    """Accumulate the gradient of the global-batch mean loss over one step's micro-batches; return this process's
    contribution to that mean."""
    # Every token but a block's first is a target. Dividing each micro-batch's summed loss by the global
    # count makes the sum over micro-batches and processes exactly the mean over the global batch.
    n_targets = accelerator.reduce(sum((batch["input_ids"][:, 1:] != -100).sum() for batch in step_batches), "sum")
    loss_contribution = torch.zeros((), device=accelerator.device)
    for index, batch in enumerate(step_batches):
        input_ids = batch["input_ids"]
        last = index == len(step_batches) - 1
        with nullcontext() if last else accelerator.no_sync(model):  # gradients are all-reduced once, after the last
            loss = model(
                input_ids=input_ids,
                labels=input_ids,
                position_ids=position_ids(input_ids, args, eos_token_id),
                use_cache=False,  # the packed-document mask comes from position_ids only when there is no cache
                num_items_in_batch=n_targets,
            ).loss
            accelerator.backward(loss * accelerator.num_processes)  # DDP/FSDP average gradients over processes
        loss_contribution += loss.detach()
    return loss_contribution


@torch.no_grad()
def evaluate(
    model: nn.Module, accelerator: Accelerator, eval_loader: DataLoader, tokenizer: Any, args: argparse.Namespace
) -> tuple[float, str]:
    """(the mean next-token cross-entropy over all validation targets in nats/token, a sampled continuation of
    --sample_prompt). Run on every process: the loss is gathered from all of them, and FSDP needs all of them to
    generate."""
    model.eval()
    total, count = 0.0, 0
    for batch in eval_loader:
        input_ids = batch["input_ids"]
        positions = position_ids(input_ids, args, tokenizer.eos_token_id)
        logits = model(input_ids=input_ids, position_ids=positions, use_cache=False).logits
        targets = input_ids[:, 1:]
        # (tokens, vocab) rows: each token's logits lie contiguous, where the (batch, vocab, T) layout cross_entropy
        # also accepts would read them with a stride.
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
        per_token = per_token.view_as(targets)
        # Per-sequence sums, gathered without the repeats accelerate adds to even out the last batch.
        counts = torch.full_like(per_token[:, 0], per_token.size(1))
        sums, counts = accelerator.gather_for_metrics((per_token.sum(1), counts))
        total, count = total + sums.sum().item(), count + int(counts.sum().item())
    model.train()
    if args.sample_max_new_tokens == 0:  # generate() refuses to make no tokens
        return total / count, args.sample_prompt
    # The sample is seeded with --seed, and leaves the training RNG untouched.
    unwrapped, device = unwrap(accelerator, model), accelerator.device
    unwrapped.eval()
    inputs = tokenizer(args.sample_prompt, return_tensors="pt").to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        generated = unwrapped.generate(
            **inputs,
            max_new_tokens=args.sample_max_new_tokens,
            do_sample=True,
            top_k=50,
            temperature=0.8,
            pad_token_id=tokenizer.eos_token_id,
            remove_invalid_values=True,  # a diverged model still samples
        )
    unwrapped.train()
    return total / count, tokenizer.decode(generated[0], skip_special_tokens=False)


# What the run leaves behind: metrics.jsonl, the loss curve, the final model.


class MetricsLog:
    """metrics.jsonl: one JSON object per line, each with a `step`; written by the main process only."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as file:
                file.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Forget records past `step`: a run resumed from an earlier checkpoint writes them again.

        Rewritten through a temporary file and a rename, so a crash here loses nothing."""
        if self.enabled and self.path.is_file():
            kept = [json.dumps(record) + "\n" for record in self.records() if record["step"] <= step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)

    def records(self) -> list[dict[str, Any]]:
        """The complete records; a line cut short by a kill mid-write is skipped."""
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found


def plot_loss_curve(records: list[dict[str, Any]], path: Path, unigram_baseline: float | None) -> None:
    """Training and validation loss against the optimizer step, as a PNG."""
    train_losses = [(record["step"], record.get("train_loss", math.nan)) for record in records]
    train = [(step, loss) for step, loss in train_losses if math.isfinite(loss)]
    validation = [(record["step"], record["val_loss"]) for record in records if "val_loss" in record]
    baselines = {} if unigram_baseline is None else {f"unigram baseline ({unigram_baseline:.2f})": unigram_baseline}
    curves = [Curve("train", train), Curve("validation", validation, marked=True)]
    plot_curves(path, "Pretraining loss", [Panel("cross-entropy (nats/token)", curves, baselines)])


def save_final_model(
    model: nn.Module, accelerator: Accelerator, tokenizer: PreTrainedTokenizerBase, final_dir: Path
) -> None:
    """save_pretrained (safetensors) plus the tokenizer, loadable with AutoModelForCausalLM.from_pretrained."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # gathers FSDP shards; every process takes part
    unwrapped = unwrap(accelerator, model)
    unwrapped.save_pretrained(final_dir, is_main_process=accelerator.is_main_process, state_dict=state_dict)
    if accelerator.is_main_process:
        tokenizer.model_max_length = unwrapped.config.n_positions
        tokenizer.save_pretrained(final_dir)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as err:  # mistakes in the arguments or the data: no traceback
        sys.exit(f"error: {err}")
