"""The data of a pretraining run: token blocks from text (gptcore.training.lm_data), their loaders, the unigram
baseline, and the endless stream of training micro-batches that a resumed run continues where it stopped."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from gptcore.training.arguments import ModelArguments, load_tokenizer
from gptcore.training.lm_data import (
    load_text_datasets,
    pack_into_blocks,
    split_validation,
    tokenize_documents,
    unigram_baseline,
)
from gptcore.training.pretraining.checkpoints import TrainingProgress


def load_document_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """The tokenizer (see `load_tokenizer`); it must have an EOS token, which separates packed documents."""
    tokenizer = load_tokenizer(model_args)
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "the tokenizer has no EOS token to separate documents; pass one that has (--tokenizer_name_or_path)"
        )
    return tokenizer


def prepare_data(
    args: argparse.Namespace,
    accelerator: Accelerator,
    tokenizer: Any,
    vocab_size: int,
    default_train_files: list[str] | None,
) -> tuple[DataLoader, DataLoader, float | None]:
    """(training loader, validation loader, unigram baseline; the baseline on the main process only)."""
    started = time.perf_counter()
    train_files = args.train_files if args.train_files or args.dataset_name else default_train_files
    with accelerator.main_process_first():  # the main process tokenizes; the others read datasets' cache
        train, validation = load_blocks(args, tokenizer, train_files)
    micro_batch = args.batch_size // args.gradient_accumulation_steps
    streamed = isinstance(train, datasets.IterableDataset)
    if not streamed and len(train) < micro_batch:
        raise ValueError(
            f"the training data has {len(train)} blocks, fewer than one micro-batch ({micro_batch}); add data or "
            "lower --batch_size"
        )
    baseline = None
    if accelerator.is_main_process:
        baseline, n_counted = unigram_baseline(train, validation, vocab_size)
        source = args.dataset_name or ", ".join(Path(path).name for path in train_files or [])
        accelerator.print(
            f"Data ({source}): {'streamed' if streamed else len(train)} training and {len(validation)} validation "
            "blocks of "
            f"{args.block_size} tokens, ready in {time.perf_counter() - started:.1f} s. Unigram baseline "
            f"{baseline:.3f} nats/token (add-one smoothing, counts from {n_counted} training tokens)"
        )
    if streamed:
        train = train.shuffle(seed=args.seed, buffer_size=10_000)
    train_loader = DataLoader(train.with_format("torch"), batch_size=micro_batch, shuffle=not streamed, drop_last=True)
    return train_loader, DataLoader(validation.with_format("torch"), batch_size=micro_batch), baseline


def load_blocks(args: argparse.Namespace, tokenizer: Any, train_files: list[str] | None) -> tuple[Any, Any]:
    """(training blocks, validation blocks) of --block_size tokens, tokenized and packed."""
    workers = args.preprocessing_num_workers

    def blocks(text: Any, what: str) -> Any:
        return pack_into_blocks(
            tokenize_documents(text, tokenizer, args.text_column, workers), args.block_size, workers, what
        )

    train_text, validation_text = load_text_datasets(
        train_files,
        args.validation_files,
        args.dataset_name,
        args.dataset_config_name,
        args.text_column,
        args.sample_by,
        args.streaming,
    )
    train = blocks(train_text, "training")
    validation = blocks(validation_text, "validation") if validation_text is not None else None
    return split_validation(train, validation, args.validation_split_percentage, args.max_eval_samples, args.seed)


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
