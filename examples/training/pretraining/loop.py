"""The pretraining loop behind examples/pretrain.py: accelerate, data, evaluation, checkpoints, the final model."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

import datasets
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from gptcore.training.arguments import load_tokenizer
from gptcore.training.pretraining.cli import DATA_ORDER_ARGS, parse_args
from gptcore.training.pretraining.checkpoints import StopOnSignal, TrainingProgress, load_checkpoint, resolve_checkpoint, save_checkpoint
from gptcore.training.lm_data import (
    document_position_ids,
    load_text_datasets,
    pack_into_blocks,
    split_validation,
    tokenize_documents,
    unigram_baseline,
)
from gptcore.training.pretraining.model import build_model, parameter_groups
from gptcore.training.pretraining.report import MetricsLog, plot_loss_curve, write_model_card
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        # split_batches: the DataLoader yields global micro-batches and each process takes its slice, so the
        # data order does not depend on the number of processes. The seeded sampler reshuffles per epoch.
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True, data_seed=args.seed),
        dynamo_backend="inductor" if args.torch_compile else None,
        # Without a GPU (or other accelerator), ask for CPU explicitly: only then does accelerate join the
        # processes of `accelerate launch --multi_gpu` into one gloo process group.
        cpu=not torch.accelerator.is_available(),
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and accelerator.num_processes == 1:
        raise ValueError(
            f"started as one of {os.environ['WORLD_SIZE']} processes, but accelerate did not set up distributed "
            "training, so each would train alone; launch with `accelerate launch --multi_gpu --num_processes N`"
        )
    if (args.batch_size // args.gradient_accumulation_steps) % accelerator.num_processes:
        raise ValueError(
            f"each micro-batch (--batch_size / --gradient_accumulation_steps = {args.batch_size // args.gradient_accumulation_steps} "
            f"sequences) is split across the {accelerator.num_processes} processes and must be a multiple of that number"
        )
    # save_state stores the tied lm_head.weight once (it is wte.weight) and warns that it did; loading re-ties it.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    if not accelerator.is_local_main_process:
        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
    # CPU threads are left to the launcher: one process uses torch's default (all physical cores), and
    # `accelerate launch` gives each of N processes OMP_NUM_THREADS (its --num_cpu_threads_per_process).
    return accelerator


def prepare_output_dir(args: argparse.Namespace, accelerator: Accelerator) -> Path:
    """Refuse to mix two runs in one folder; with --overwrite_output_dir, delete what an earlier run wrote."""
    output_dir = Path(args.output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not args.resume_from_checkpoint and not args.overwrite_output_dir:
        raise ValueError(
            f"output directory {output_dir} is not empty; pass --resume_from_checkpoint latest to continue that run, "
            "--overwrite_output_dir to start over in it, or another --output_dir"
        )
    accelerator.wait_for_everyone()  # every process has checked before anything is deleted
    if accelerator.is_main_process:
        if args.overwrite_output_dir:
            for name in ("checkpoints", "final"):
                shutil.rmtree(output_dir / name, ignore_errors=True)
            for name in ("metrics.jsonl", "loss_curve.png"):
                (output_dir / name).unlink(missing_ok=True)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return output_dir


def prepare_data(args: argparse.Namespace, accelerator: Accelerator, tokenizer: Any, vocab_size: int) -> tuple[DataLoader, DataLoader, float | None]:
    """(training loader, validation loader, unigram baseline; the baseline on the main process only)."""
    started = time.perf_counter()
    workers = args.preprocessing_num_workers

    def blocks(text: Any, what: str) -> Any:
        return pack_into_blocks(tokenize_documents(text, tokenizer, args.text_column, workers), args.block_size, workers, what)

    with accelerator.main_process_first():  # the main process tokenizes; the others read datasets' cache
        train_text, val_text = load_text_datasets(
            args.train_files, args.validation_files, args.dataset_name, args.dataset_config_name,
            args.text_column, args.sample_by, args.streaming,
        )  # fmt: skip
        train, val = blocks(train_text, "training"), blocks(val_text, "validation") if val_text is not None else None
        train, val = split_validation(train, val, args.validation_split_percentage, args.max_eval_samples, args.seed)
    micro_batch = args.batch_size // args.gradient_accumulation_steps
    streamed = isinstance(train, datasets.IterableDataset)
    if not streamed and len(train) < micro_batch:
        raise ValueError(f"the training data has {len(train)} blocks, fewer than one micro-batch ({micro_batch}); add data or lower --batch_size")
    baseline = None
    if accelerator.is_main_process:
        baseline, n_counted = unigram_baseline(train, val, vocab_size)
        source = args.dataset_name or ", ".join(Path(f).name for f in args.train_files or ["examples/data/corpus/*.txt"])
        accelerator.print(
            f"Data ({source}): {'streamed' if streamed else len(train)} training and {len(val)} validation blocks of "
            f"{args.block_size} tokens, ready in {time.perf_counter() - started:.1f} s. Unigram baseline "
            f"{baseline:.3f} nats/token (add-one smoothing, counts from {n_counted} training tokens)"
        )
    if streamed:
        train = train.shuffle(seed=args.seed, buffer_size=10_000)
    train_loader = DataLoader(train.with_format("torch"), batch_size=micro_batch, shuffle=not streamed, drop_last=True)
    return train_loader, DataLoader(val.with_format("torch"), batch_size=micro_batch), baseline


def micro_batches(loader: DataLoader, progress: TrainingProgress, accelerator: Accelerator) -> Iterator[dict]:
    """Training micro-batches forever, epoch after epoch, starting where `progress` says."""
    while True:
        loader.set_epoch(progress.epoch)  # the seeded sampler's order depends on the epoch only
        start = progress.batches_into_epoch
        batches = iter(accelerator.skip_first_batches(loader, start) if start else loader)
        while True:
            # Starting a DataLoader pass draws a seed from the global RNG; keep dropout's random stream
            # independent of where a resumed run started its pass.
            with torch.random.fork_rng(devices=[]):
                batch = next(batches, None)
            if batch is None:
                break
            progress.batches_into_epoch += 1
            yield batch
        if start == 0 and progress.batches_into_epoch == 0:
            raise ValueError("the training data gives no batch; add data or lower --batch_size/--block_size")
        progress.epoch, progress.batches_into_epoch = progress.epoch + 1, 0


def position_ids_for(input_ids: torch.Tensor, args: argparse.Namespace, eos_token_id: int) -> torch.Tensor | None:
    return document_position_ids(input_ids, eos_token_id) if args.no_cross_document_attention else None


def forward_backward(
    model: nn.Module, step_batches: list[dict], accelerator: Accelerator, args: argparse.Namespace, eos: int
) -> torch.Tensor:
    """Accumulate the gradient of the global-batch mean loss; return this process's share of that mean."""
    # Every token but a block's first is a target. Dividing each micro-batch's summed loss by the global
    # count makes the sum over micro-batches and processes exactly the mean over the global batch.
    n_targets = accelerator.reduce(sum((b["input_ids"][:, 1:] != -100).sum() for b in step_batches), "sum")
    share = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(step_batches):
        input_ids = batch["input_ids"]
        with nullcontext() if i == len(step_batches) - 1 else accelerator.no_sync(model):  # all-reduce once
            loss = model(
                input_ids=input_ids, labels=input_ids, position_ids=position_ids_for(input_ids, args, eos),
                use_cache=False,  # with a cache, transformers' mask ignores the packed-document positions
                num_items_in_batch=n_targets,
            ).loss  # fmt: skip
            accelerator.backward(loss * accelerator.num_processes)  # DDP/FSDP average gradients over processes
        share += loss.detach()
    return share


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, accelerator: Accelerator, args: argparse.Namespace, eos: int) -> float:
    """Mean next-token cross-entropy over all validation targets (nats/token)."""
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        input_ids = batch["input_ids"]
        logits = model(input_ids=input_ids, position_ids=position_ids_for(input_ids, args, eos), use_cache=False).logits
        targets = input_ids[:, 1:]
        # Flattened to (tokens, vocab): cross_entropy runs ~2x faster on that layout than on (batch, vocab, T).
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
        # Per-sequence sums, gathered without the repeats accelerate adds to even out the last batch.
        sums, counts = accelerator.gather_for_metrics((per_token.sum(1), torch.full_like(per_token[:, 0], per_token.size(1))))
        total, count = total + sums.sum().item(), count + int(counts.sum().item())
    model.train()
    return total / count


def generate_sample(model: nn.Module, tokenizer: Any, args: argparse.Namespace, accelerator: Accelerator) -> str:
    """A sampled continuation of --sample_prompt; leaves the training RNG untouched."""
    model.eval()
    device = accelerator.device
    inputs = tokenizer(args.sample_prompt, return_tensors="pt").to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(args.seed)
        out = model.generate(
            **inputs, max_new_tokens=args.sample_max_new_tokens, do_sample=True, top_k=50, temperature=0.8,
            pad_token_id=tokenizer.eos_token_id, remove_invalid_values=True,  # a diverged model still samples
        )  # fmt: skip
    model.train()
    return tokenizer.decode(out[0], skip_special_tokens=False)


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv, description=description)
    accelerator = make_accelerator(args)
    log = accelerator.print
    output_dir = prepare_output_dir(args, accelerator)
    checkpoints_dir = output_dir / "checkpoints"

    set_seed(args.seed)
    tokenizer = load_tokenizer(args)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to separate documents; pass one that has (--tokenizer_name_or_path)")
    eos = tokenizer.eos_token_id
    model = build_model(args, tokenizer)
    train_loader, eval_loader, baseline = prepare_data(args, accelerator, tokenizer, model.config.vocab_size)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2)
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps, min_lr_rate=args.min_lr_ratio
    )
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    progress = TrainingProgress({name: getattr(args, name) for name in DATA_ORDER_ARGS})
    if args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(args.resume_from_checkpoint, checkpoints_dir)
        if checkpoint is None:
            log(f"No complete checkpoint in {checkpoints_dir}: starting from scratch")
        else:
            load_checkpoint(accelerator, checkpoint, progress)
            log(f"Resumed from {checkpoint} at step {progress.step}")
    metrics = MetricsLog(output_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    metrics.truncate_after(progress.step)

    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    n_params = sum(p.numel() for p in unwrapped.parameters())
    where = f"1 process ({accelerator.device})"
    if accelerator.num_processes > 1:
        where = f"{accelerator.num_processes} processes ({accelerator.distributed_type.value}, {accelerator.device.type})"
    log(
        f"Training {n_params / 1e6:.1f}M parameters: {args.max_steps} steps of {args.batch_size} x {args.block_size} "
        f"tokens, {where}, mixed precision {accelerator.mixed_precision}"
    )
    batches = micro_batches(train_loader, progress, accelerator)
    bar = tqdm(total=args.max_steps, initial=progress.step, desc="Pretraining", disable=not accelerator.is_local_main_process)
    last_eval_step, last_save_step, train_started = -1, -1, time.perf_counter()
    with StopOnSignal() as stop:
        while progress.step < args.max_steps:
            share = forward_backward(model, [next(batches) for _ in range(args.gradient_accumulation_steps)], accelerator, args, eos)
            # One all-reduce gives every process the same loss and the same decision to stop.
            stats = accelerator.reduce(torch.stack([share, torch.tensor(float(stop.signum is not None), device=share.device)]))
            train_loss, stop_requested = stats[0].item(), bool(stats[1].item())
            grad_norm = None
            if math.isfinite(train_loss) and args.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
            # With fp16 the gradient scaler itself skips steps with inf gradients.
            finite = math.isfinite(train_loss) and (grad_norm is None or math.isfinite(grad_norm) or accelerator.mixed_precision == "fp16")
            if not finite and not args.skip_nonfinite_steps:
                bar.close()
                log(
                    f"Stopping: the training loss is {train_loss} (gradient norm {grad_norm}) at step {progress.step + 1}. "
                    "Lower --learning_rate, use --mixed_precision bf16 or no instead of fp16, or pass "
                    f"--skip_nonfinite_steps; the newest complete checkpoint is in {checkpoints_dir}",
                    file=sys.stderr,
                )  # fmt: skip
                return 1
            lr = scheduler.get_last_lr()[0]
            if finite:
                optimizer.step()
            else:
                log(f"Skipping step {progress.step + 1}: loss {train_loss}, gradient norm {grad_norm}")
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.tokens_seen += args.batch_size * args.block_size
            metrics.write(
                step=progress.step, train_loss=train_loss, lr=lr, grad_norm=grad_norm, skipped=not finite,
                tokens_seen=progress.tokens_seen, elapsed_s=round(time.perf_counter() - train_started, 3),
            )  # fmt: skip
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}")

            if progress.step % args.eval_steps == 0 or progress.step == args.max_steps:
                val_loss, last_eval_step = evaluate(model, eval_loader, accelerator, args, eos), progress.step
                metrics.write(step=progress.step, val_loss=val_loss, val_perplexity=math.exp(val_loss))
                sample = generate_sample(unwrapped, tokenizer, args, accelerator)  # on every process: FSDP needs all
                if accelerator.is_local_main_process:
                    bar.write(f"step {progress.step}: validation loss {val_loss:.3f} (perplexity {math.exp(val_loss):.1f}); sample: {sample!r}")
            if (args.save_steps and progress.step % args.save_steps == 0) or (stop_requested and last_save_step != progress.step):
                save_checkpoint(accelerator, checkpoints_dir, progress, args.save_total_limit)
                last_save_step = progress.step
            if stop_requested:
                bar.close()
                if accelerator.is_main_process:
                    plot_loss_curve(metrics.records(), output_dir / "loss_curve.png", baseline)
                log(f"Stopped by a signal after step {progress.step}; checkpoint saved in {checkpoints_dir}. "
                    "Continue with --resume_from_checkpoint latest")  # fmt: skip
                return 128 + (stop.signum or signal.SIGTERM)  # the signal may have reached another process
    bar.close()

    if last_eval_step != progress.step:  # resumed from a run that had already finished
        val_loss = evaluate(model, eval_loader, accelerator, args, eos)
        sample = generate_sample(unwrapped, tokenizer, args, accelerator)
    save_final_model(model, unwrapped, tokenizer, accelerator, output_dir / "final")
    if accelerator.is_main_process:
        records = metrics.records()
        final = {
            "steps": progress.step,
            "tokens seen": progress.tokens_seen,
            "final train loss": next((r["train_loss"] for r in reversed(records) if "train_loss" in r), float("nan")),
            "final validation loss": val_loss,
            "final validation perplexity": math.exp(val_loss),
            "unigram baseline (validation)": baseline,
            "wall time (s)": round(time.perf_counter() - started, 1),
        }
        run = {**vars(args), "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision}
        write_model_card(output_dir / "final", unwrapped.config.to_dict(), n_params, run, final)
        plot_loss_curve(records, output_dir / "loss_curve.png", baseline)
        log(f"\nValidation loss {val_loss:.3f} nats/token (perplexity {math.exp(val_loss):.1f}) "
            f"vs unigram baseline {baseline:.3f} (perplexity {math.exp(baseline):.1f})")  # fmt: skip
        log(f"Sample after {progress.step} steps: {sample!r}")
        outputs = "final/ (model, tokenizer, model card), metrics.jsonl, loss_curve.png"
        if checkpoints_dir.is_dir():
            outputs += ", checkpoints/ (training state for --resume_from_checkpoint)"
        log(f"Done in {time.perf_counter() - started:.0f} s. Outputs in {output_dir}/: {outputs}")
    accelerator.end_training()
    return 0


def save_final_model(model: nn.Module, unwrapped: nn.Module, tokenizer: Any, accelerator: Accelerator, final_dir: Path) -> None:
    """save_pretrained (safetensors) plus the tokenizer, loadable with AutoModelForCausalLM.from_pretrained."""
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # gathers FSDP shards; every process takes part
    unwrapped.save_pretrained(final_dir, is_main_process=accelerator.is_main_process, state_dict=state_dict)
    if accelerator.is_main_process:
        tokenizer.model_max_length = unwrapped.config.n_positions
        tokenizer.save_pretrained(final_dir)
