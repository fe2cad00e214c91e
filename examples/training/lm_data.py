"""Language-modelling data (pretraining, continued pretraining): raw text in, fixed-length token blocks out, with
`datasets`.

    load_text_datasets -> tokenize_documents -> pack_into_blocks -> split_validation

Every document is followed by the tokenizer's EOS token, and the token stream is cut into blocks of
`block_size` tokens (GPT-2's recipe). `document_position_ids` gives, per block, positions that restart at
each EOS, which is what makes packed documents invisible to each other in the model's causal mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset, load_dataset

from gptcore.training.text_data import non_blank_lines

# The unigram baseline is a reference, not a result: ten million tokens estimate the frequencies that matter
# well, and the count stays one quick pass however large (or endless, when streamed) the training data is.
UNIGRAM_MAX_TRAIN_TOKENS = 10_000_000


def load_text_datasets(
    train_files: list[str] | None,
    validation_files: list[str] | None,
    dataset_name: str | None,
    dataset_config_name: str | None,
    text_column: str,
    sample_by: str,
    streaming: bool,
) -> tuple[Dataset | IterableDataset, Dataset | IterableDataset | None]:
    """(train, validation or None) rows of raw text, from local text files or a Hub dataset; there is no default
    (a script that has one, such as examples/pretrain.py with its bundled books, passes it as `train_files`)."""
    if dataset_name is not None:
        if train_files or validation_files:
            raise ValueError("pass either --dataset_name or --train_files/--validation_files, not both")
        raw = load_dataset(dataset_name, dataset_config_name, streaming=streaming)
        if "train" not in raw:
            raise ValueError(
                f"dataset {dataset_name!r} has no 'train' split (it has {sorted(raw)}); pick another dataset"
            )
        train, validation = raw["train"], raw.get("validation")
    else:
        if not train_files:
            raise ValueError(
                "no training data: pass --train_files (local text files) or --dataset_name (a Hub dataset)"
            )
        data_files = {"train": train_files}
        if validation_files:
            data_files["validation"] = validation_files
        for files in data_files.values():
            for path in files:
                if not Path(path).is_file():
                    raise FileNotFoundError(
                        f"text file {path} does not exist; pass existing files to --train_files/--validation_files"
                    )
                if next(non_blank_lines(Path(path)), None) is None:
                    raise ValueError(f"text file {path} is empty; pass files with text in them")
        # keep_linebreaks: verse and plays are mostly line breaks; the model should learn them too.
        raw = load_dataset(
            "text", data_files=data_files, sample_by=sample_by, keep_linebreaks=True, streaming=streaming
        )
        train, validation = raw["train"], raw.get("validation")
    for name, split in (("train", train), ("validation", validation)):
        columns = split.column_names if split is not None else None
        if columns is not None and text_column not in columns:
            raise ValueError(f"the {name} split has no column {text_column!r} (it has {columns}); pass --text_column")
    return train, validation


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
