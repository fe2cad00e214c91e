"""Train a new GPT-2-style byte-level BPE vocabulary with Hugging Face `tokenizers`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import GPT2Tokenizer

from .byte_level import as_transformers_tokenizer, byte_level_pipeline
from .gpt2 import END_OF_TEXT

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _as_files(source: PathLike | Sequence[PathLike]) -> list[str]:
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    for path in paths:
        if not Path(path).is_file():
            hint = str(path)[:60]
            raise FileNotFoundError(
                f"training file {hint!r} does not exist. A str/path or a list/tuple of them is read as file names; "
                "to train on in-memory text pass an iterator of strings instead, e.g. iter(texts)"
            )
    return [str(p) for p in paths]


def _checked_texts(texts: Iterable[object]) -> Iterator[str]:
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"the training iterator must yield str, got {type(text).__name__}: {text!r:.80}")
        yield text


def train_tokenizer(
    files_or_iterator: PathLike | Sequence[PathLike] | Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (END_OF_TEXT,),
    *,
    min_frequency: int = 0,
    model_max_length: int | None = None,
    show_progress: bool = False,
) -> GPT2Tokenizer:
    """Learn a byte-level BPE vocabulary of `vocab_size` tokens, GPT-2 style, and return it as a transformers
    fast tokenizer of the same kind as `gpt2_tokenizer()`.

    `files_or_iterator`: a file path or a list/tuple of paths (read line by line), or any other iterable
    of strings (an iterator, generator, `datasets` column). The vocabulary is the special tokens (ids 0..),
    all 256 bytes (so no text is ever out of vocabulary), then the merged tokens. The first special token is
    bos/eos/unk. Ties between equally frequent pairs go to the pair with the smallest ids (see bpe.py).
    Special-token strings inside the training text are counted as ordinary text; the trainer registers the
    specials afterwards, so encoding matches them in raw text.
    """
    special_tokens = list(special_tokens)
    if not special_tokens or not all(isinstance(t, str) and t for t in special_tokens):
        raise ValueError(
            f"special_tokens must be non-empty strings, at least one (the first is used as bos/eos, e.g. "
            f"{END_OF_TEXT!r}); got {special_tokens!r}"
        )
    if len(set(special_tokens)) != len(special_tokens):
        raise ValueError(f"special_tokens has duplicates: {special_tokens!r}")
    minimum = 256 + len(special_tokens)
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small: a byte-level vocabulary needs the 256 byte tokens plus "
            f"{len(special_tokens)} special token(s), so at least {minimum} (GPT-2 uses 50257)"
        )

    backend = byte_level_pipeline(BPE(dropout=None, fuse_unk=False))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        # Every byte gets a token even if the training text never contains it.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    if isinstance(files_or_iterator, (str, os.PathLike, list, tuple)):
        files = _as_files(files_or_iterator)
        logger.info("training a %d-token byte-level BPE on %d file(s)", vocab_size, len(files))
        backend.train(files, trainer)
    else:
        logger.info("training a %d-token byte-level BPE on an iterator", vocab_size)
        backend.train_from_iterator(_checked_texts(files_or_iterator), trainer)
    if backend.get_vocab_size() < vocab_size:
        logger.warning(
            "the text only supports %d tokens, not vocab_size=%d: training ran out of pairs to merge "
            "(or of pairs seen min_frequency=%d times); use more text for a larger vocabulary",
            backend.get_vocab_size(),
            vocab_size,
            min_frequency,
        )
    else:
        logger.info("trained a vocabulary of %d tokens", vocab_size)
    return as_transformers_tokenizer(backend, special_tokens[0], model_max_length=model_max_length)
