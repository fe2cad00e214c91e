"""Where a pretraining run starts: accelerate's processes and devices, the precision, CPU threads, and a free
output folder."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, str_to_bool
from gptcore.training.runtime import check_output_dir, choose_threads, pick_device, resolve_mixed_precision

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
    set_threads(args, accelerator)
    # save_state stores the tied lm_head.weight once (it is wte.weight) and logs a warning saying so; loading
    # re-ties it, so the warning only alarms.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    if not accelerator.is_local_main_process:  # one progress bar and one set of messages per machine
        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
    return accelerator


def set_threads(args: argparse.Namespace, accelerator: Accelerator) -> None:
    """Set torch's CPU threads (`choose_threads`), and say how many and why."""
    threads, why = choose_threads(args.threads, accelerator.device)
    torch.set_num_threads(threads)
    args.threads = threads  # recorded in the model card with the other settings
    accelerator.print(f"threads: {threads} ({why})")


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
