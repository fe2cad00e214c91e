"""GPT-2's tokenizer from the vocabulary files bundled with gptcore: no network, checked by sha256."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from tokenizers.models import BPE
from transformers import GPT2Tokenizer

from .byte_level import as_transformers_tokenizer, byte_level_pipeline

logger = logging.getLogger(__name__)

GPT2_VOCAB_DIR = Path(__file__).parent / "data"
GPT2_ENCODER_FILE = "encoder.json"
GPT2_MERGES_FILE = "vocab.bpe"
# From the OpenAI release (see NOTICE); any other content would silently give different token ids.
GPT2_SHA256 = {
    GPT2_ENCODER_FILE: "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    GPT2_MERGES_FILE: "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
GPT2_VOCAB_SIZE = 50257
GPT2_NUM_MERGES = 50000
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
GPT2_CONTEXT_LENGTH = 1024

_HOW_TO_FIX_VOCAB = (
    "reinstall gptcore, or pass vocab_dir= a folder holding OpenAI's original encoder.json and vocab.bpe"
)


def _read(path: Path, verify_sha256: bool) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"GPT-2 vocabulary file {path} does not exist; {_HOW_TO_FIX_VOCAB}")
    data = path.read_bytes()
    if verify_sha256:
        digest = hashlib.sha256(data).hexdigest()
        if digest != GPT2_SHA256[path.name]:
            raise ValueError(
                f"{path} has sha256 {digest}, expected {GPT2_SHA256[path.name]}: the file is corrupt or not "
                f"GPT-2's; {_HOW_TO_FIX_VOCAB}"
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}); {_HOW_TO_FIX_VOCAB}") from None


def load_gpt2_vocab(
    vocab_dir: str | os.PathLike[str] | None = None, *, verify_sha256: bool = True
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read GPT-2's `encoder.json` (token -> id) and `vocab.bpe` (merges, in rank order) from `vocab_dir`.

    Defaults to the copies bundled with gptcore. Raises FileNotFoundError if a file is missing and
    ValueError if its sha256 differs (when `verify_sha256`) or it does not parse as GPT-2's vocabulary.
    """
    folder = GPT2_VOCAB_DIR if vocab_dir is None else Path(vocab_dir)
    encoder_path, merges_path = folder / GPT2_ENCODER_FILE, folder / GPT2_MERGES_FILE
    encoder_text = _read(encoder_path, verify_sha256)
    merges_text = _read(merges_path, verify_sha256)

    try:
        vocab = json.loads(encoder_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{encoder_path} is not valid JSON ({err}); {_HOW_TO_FIX_VOCAB}") from None
    if (
        not isinstance(vocab, dict)
        or not all(type(i) is int for i in vocab.values())
        or sorted(vocab.values()) != list(range(GPT2_VOCAB_SIZE))
        or vocab.get(END_OF_TEXT) != END_OF_TEXT_ID
    ):
        raise ValueError(
            f"{encoder_path} is not GPT-2's vocabulary: expected a JSON object mapping {GPT2_VOCAB_SIZE} tokens to "
            f"ids 0..{GPT2_VOCAB_SIZE - 1} with {END_OF_TEXT!r} = {END_OF_TEXT_ID}; {_HOW_TO_FIX_VOCAB}"
        )

    lines = merges_text.split("\n")
    if lines and lines[0].startswith("#version"):  # the header line of OpenAI's file
        lines = lines[1:]
    merges = [tuple(line.split(" ")) for line in lines if line]
    bad = next((m for m in merges if len(m) != 2 or m[0] + m[1] not in vocab), None)
    if bad is not None or len(merges) != GPT2_NUM_MERGES:
        raise ValueError(
            f"{merges_path} is not GPT-2's merge list: expected {GPT2_NUM_MERGES} lines 'left right' whose joined "
            f"token is in encoder.json (found {len(merges)} merges, first bad one {bad!r}); {_HOW_TO_FIX_VOCAB}"
        )
    logger.debug("loaded GPT-2 vocabulary from %s", folder)
    return vocab, merges  # type: ignore[return-value]


def gpt2_tokenizer(
    vocab_dir: str | os.PathLike[str] | None = None,
    *,
    verify_sha256: bool = True,
    model_max_length: int = GPT2_CONTEXT_LENGTH,
) -> GPT2Tokenizer:
    """GPT-2's tokenizer as a transformers fast tokenizer, built offline from the bundled vocabulary.

    50,257 tokens, `<|endoftext|>` (50256) as bos/eos/unk, byte-level (any Unicode round-trips), left
    padding for generation, no pad token (set one, e.g. `tok.pad_token = tok.eos_token`), and the Alpaca
    prompt as `chat_template`. Ids equal OpenAI's / tiktoken's `gpt2` encoding.
    """
    vocab, merges = load_gpt2_vocab(vocab_dir, verify_sha256=verify_sha256)
    # dropout=None and no unk/continuing prefix: plain deterministic BPE, as in OpenAI's encoder.py.
    model = BPE(vocab=vocab, merges=merges, dropout=None, fuse_unk=False)
    backend = byte_level_pipeline(model, special_tokens=[END_OF_TEXT])
    return as_transformers_tokenizer(backend, END_OF_TEXT, model_max_length=model_max_length)
