"""GPT-2's byte-level BPE offline, training new vocabularies, and the Alpaca instruction prompt.

from gptcore.tokenization import gpt2_tokenizer
tok = gpt2_tokenizer()          # transformers fast tokenizer, ids identical to OpenAI's GPT-2
"""

from .bpe import GPT2_SPLIT_PATTERN, ByteLevelBPE, bytes_to_unicode
from .gpt2 import END_OF_TEXT, END_OF_TEXT_ID, GPT2_VOCAB_SIZE, gpt2_tokenizer, load_gpt2_vocab
from .prompts import (
    ALPACA_CHAT_TEMPLATE,
    ALPACA_PREAMBLE,
    IGNORE_INDEX,
    encode_instruction_example,
    format_alpaca,
    format_alpaca_prompt,
)
from .training import train_tokenizer

__all__ = [
    "ALPACA_CHAT_TEMPLATE",
    "ALPACA_PREAMBLE",
    "END_OF_TEXT",
    "END_OF_TEXT_ID",
    "GPT2_SPLIT_PATTERN",
    "GPT2_VOCAB_SIZE",
    "IGNORE_INDEX",
    "ByteLevelBPE",
    "bytes_to_unicode",
    "encode_instruction_example",
    "format_alpaca",
    "format_alpaca_prompt",
    "gpt2_tokenizer",
    "load_gpt2_vocab",
    "train_tokenizer",
]
