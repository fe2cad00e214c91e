"""Language-modelling data, for pretraining and causal-LM fine-tuning: raw text in, fixed-length token blocks out,
with `datasets`.

    load_text_datasets / load_rows (data_files) -> tokenize_documents -> pack_into_blocks -> split_validation

Every document is followed by the tokenizer's EOS token, and the token stream is cut into blocks of
`block_size` tokens (GPT-2's recipe). `document_position_ids` gives, per block, positions that restart at
each EOS, which is what makes packed documents invisible to each other in the model's causal mask.

Also here: what examples/finetune_clm.py reads (`TextDataArguments`, `load_text_blocks`, `causal_lm_collator`), and
what examples/pretrain.py reads: its loaders (`prepare_data`), the unigram baseline its validation loss is set beside,
and the endless stream of training micro-batches that a resumed run continues where it stopped (`micro_batches`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from gptcore.training.arguments import ModelArguments, load_tokenizer
from gptcore.training.checkpoints import TrainingProgress
from gptcore.training.data_files import load_rows, load_text_datasets, require_columns

# The unigram baseline is a reference, not a result: ten million tokens estimate the frequencies that matter
# well, and the count stays one quick pass however large (or endless, when streamed) the training data is.
UNIGRAM_MAX_TRAIN_TOKENS = 10_000_000


def tokenize_documents(
    dataset: Dataset | IterableDataset, tokenizer: Any, text_column: str, num_proc: int | None
) -> Dataset | IterableDataset:
    """One row per document: its token ids followed by EOS (empty documents vanish)."""
    eos = tokenizer.eos_token_id

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        ids = tokenizer(batch[text_column], add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": [doc + [eos] for doc in ids if doc]}

    # A streaming Hub dataset may not know its columns up front; the text column is the one we must drop.
    kwargs: dict[str, Any] = {"batched": True, "remove_columns": dataset.column_names or [text_column]}
    if isinstance(dataset, Dataset):  # streaming datasets tokenize lazily, in the training loop
        kwargs.update(num_proc=num_proc, desc="Tokenizing")
    return dataset.map(tokenize, **kwargs)


def pack_into_blocks(
    dataset: Dataset | IterableDataset, block_size: int, num_proc: int | None, what: str = "training"
) -> Dataset | IterableDataset:
    """Concatenate the documents and cut the stream into `block_size` blocks (the tail that does not fill
    a block is dropped, once per 1000 documents). `what` names the data in the error for too little text."""

    def pack(batch: dict[str, list]) -> dict[str, list]:
        stream = np.concatenate(
            [np.asarray(ids, dtype=np.int64) for ids in batch["input_ids"]] or [np.zeros(0, np.int64)]
        )
        n_blocks = len(stream) // block_size
        return {"input_ids": stream[: n_blocks * block_size].reshape(n_blocks, block_size).tolist()}

    kwargs: dict[str, Any] = {"batched": True, "remove_columns": ["input_ids"]}
    if isinstance(dataset, IterableDataset):
        return dataset.map(pack, **kwargs)
    blocks = dataset.map(pack, num_proc=num_proc, desc=f"Packing into blocks of {block_size}", **kwargs)
    if len(blocks) == 0:
        raise ValueError(
            f"the {what} text is shorter than one block of {block_size} tokens; add text or lower --block_size"
        )
    return blocks


def split_validation(
    train: Dataset | IterableDataset,
    validation: Dataset | IterableDataset | None,
    validation_percentage: float,
    max_eval_blocks: int,
    seed: int,
) -> tuple[Dataset | IterableDataset, Dataset]:
    """(train blocks, validation blocks). Without a validation split, a seeded random share of the blocks
    is held out (streaming: the first `max_eval_blocks`). Validation is capped at `max_eval_blocks`
    and always materialised, so every evaluation reads the same blocks."""
    if validation is None and isinstance(train, IterableDataset):
        validation, train = train.take(max_eval_blocks), train.skip(max_eval_blocks)
    elif validation is None:
        if not 0 < validation_percentage < 100:
            raise ValueError(f"--validation_split_percentage must be in (0, 100), got {validation_percentage}")
        n_val = max(1, math.ceil(len(train) * validation_percentage / 100))
        if len(train) - n_val < 1:
            raise ValueError(
                f"the training data packs into only {len(train)} blocks, too few to hold out a validation split; "
                "add text, lower --block_size, or pass --validation_files"
            )
        parts = train.train_test_split(test_size=n_val, seed=seed)
        train, validation = parts["train"], parts["test"]
    if isinstance(validation, IterableDataset):
        validation = Dataset.from_list(list(validation.take(max_eval_blocks)))
    elif len(validation) > max_eval_blocks:
        validation = validation.select(range(max_eval_blocks))
    if len(validation) == 0:
        raise ValueError("the validation data is shorter than one block; add validation text or lower --block_size")
    if isinstance(train, Dataset) and len(train) == 0:
        raise ValueError("the training data is shorter than one block; add text or lower --block_size")
    return train, validation


def document_position_ids(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Positions that restart at 0 on every EOS token, per row of (batch, seq_len) `input_ids`.

    The EOS that ends one document opens the next (as GPT-2's `<|endoftext|>` does at generation), so a
    document's first token is predicted from the EOS alone. transformers' `create_causal_mask` reads a
    restart of the positions as a new packed sequence and masks attention across it, provided the model
    gets no `attention_mask` and no cache (`use_cache=False`).
    """
    index = torch.arange(input_ids.size(1), device=input_ids.device).expand_as(input_ids)
    starts = torch.where(input_ids == eos_token_id, index, torch.zeros_like(index))
    return index - starts.cummax(dim=1).values


def iter_token_blocks(dataset: Dataset | IterableDataset, batch_size: int = 1024) -> Iterable[np.ndarray]:
    """(n, block_size) int64 arrays over the packed blocks, in dataset order."""
    for batch in dataset.iter(batch_size=batch_size):
        yield np.asarray(batch["input_ids"], dtype=np.int64)


def unigram_baseline(train: Dataset | IterableDataset, validation: Dataset, vocab_size: int) -> tuple[float, int]:
    """Cross-entropy (nats/token) of the validation targets under the training tokens' unigram frequencies.

    Add-one (Laplace) smoothing over the whole vocabulary: p(t) = (count(t) + 1) / (N + vocab_size).
    The targets are those the model's validation loss scores: every token of a block but the first.
    Counts come from the first UNIGRAM_MAX_TRAIN_TOKENS training tokens. Returns (nats, N).
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for blocks in iter_token_blocks(train):
        counts += np.bincount(blocks.ravel(), minlength=vocab_size)[:vocab_size]
        if counts.sum() >= UNIGRAM_MAX_TRAIN_TOKENS:
            break
    n_train = int(counts.sum())
    log_probs = np.log(counts + 1.0) - math.log(n_train + vocab_size)
    total, n_targets = 0.0, 0
    for blocks in iter_token_blocks(validation):
        targets = blocks[:, 1:].ravel()
        total -= float(log_probs[targets].sum())
        n_targets += targets.size
    return total / n_targets, n_train


# Causal-LM fine-tuning (examples/finetune_clm.py): one text file or Hub dataset, blocks for `Trainer`.


@dataclass
class TextDataArguments:
    train_file: str | None = field(default=None, metadata={"help": "A .txt file (or .csv/.json with --text_column)."})
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out text; default: a share of the training blocks."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A Hub dataset (its 'train' split) instead of --train_file."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    sample_by: str = field(
        default="document",
        metadata={
            "choices": ["document", "paragraph", "line"],
            "help": "What one document of a text file is (default: the whole file).",
        },
    )
    validation_split_percentage: float = field(
        default=5.0, metadata={"help": "Without --validation_file: percent of the training blocks held out."}
    )
    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per training sequence; default: n_positions."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many validation blocks."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


def load_text_blocks(data: TextDataArguments, tokenizer: Any, block_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """(training blocks, validation blocks) of `block_size` token ids each, column input_ids."""

    def blocks(data_file: str | None, dataset_name: str | None, what: str) -> Dataset:
        rows = load_rows(data_file, dataset_name, data.dataset_config_name, split="train", sample_by=data.sample_by)
        require_columns(rows, [data.text_column], data_file or dataset_name)
        documents = tokenize_documents(rows, tokenizer, data.text_column, data.preprocessing_num_workers)
        return pack_into_blocks(documents, block_size, data.preprocessing_num_workers, what)

    train = blocks(data.train_file, data.dataset_name, "training")
    validation = blocks(data.validation_file, None, "validation") if data.validation_file else None
    max_eval = sys.maxsize if data.max_eval_samples is None else data.max_eval_samples  # split_validation always caps
    train, validation = split_validation(train, validation, data.validation_split_percentage, max_eval, seed)
    if data.max_train_samples is not None:
        train = train.select(range(min(data.max_train_samples, len(train))))
    return train, validation


def causal_lm_collator(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A batch of equal-length blocks (nothing to pad) whose labels are the inputs: the model shifts them by
    one position itself, so each token learns to predict the next. Unlike transformers'
    DataCollatorForLanguageModeling, EOS keeps its labels even where it also serves as the padding token."""
    input_ids = torch.tensor([feature["input_ids"] for feature in features], dtype=torch.long)
    return {"input_ids": input_ids, "labels": input_ids.clone()}


# Pretraining (examples/pretrain.py): loaders of blocks, and micro-batches that resume where a run stopped.


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
