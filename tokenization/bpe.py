"""A from-scratch byte-level BPE tokenizer, GPT-2 style, written to be read.

For real work use `gptcore.tokenization.gpt2_tokenizer()` / `train_tokenizer()` (Rust `tokenizers`,
orders of magnitude faster). This file shows every step for readers of chapter 2 of
*Build a Large Language Model (From Scratch)*, and the tests check that it agrees with the fast path:

1. **Pre-split** the text with GPT-2's regex into "words" (letters, digits, punctuation runs, whitespace,
   `'s`/`'t` contractions), so that merges never cross a word boundary.
2. **Bytes, spelled as text**: each word's UTF-8 bytes are mapped to 256 printable characters
   (`bytes_to_unicode`), so every byte sequence has a spelling and any Unicode text round-trips.
   This is why GPT-2's vocabulary shows a space as `Ġ`.
3. **Encode**: inside each word, repeatedly merge the adjacent pair that was learned earliest.
4. **Train**: start from the 256 byte symbols and repeatedly merge the most frequent adjacent pair.

Ties in training: when several pairs are equally frequent, the pair whose (left id, right id) is smallest
wins, where the 256 byte symbols are numbered in code-point order of their spelling (which is exactly
GPT-2's order in `encoder.json`) and each merged token gets the next id. That is the rule of Hugging Face
`tokenizers`' `BpeTrainer` (its priority queue orders equal counts by ascending pair of ids), so both
trainers learn the same merges from the same text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import regex

# GPT-2's pre-tokenization pattern (openai/gpt-2 encoder.py); `regex` because `re` has no \p{L}.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character map.

    Printable Latin-1 bytes stand for themselves; the 68 others (controls, space, NBSP, soft hyphen)
    are moved to U+0100 onwards, so that vocabulary files never contain whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping: dict[int, str] = {}
    shifted = 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + shifted)
            shifted += 1
    return mapping


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {char: byte for byte, char in BYTE_ENCODER.items()}


def pre_tokenize(text: str) -> list[str]:
    """Split `text` with GPT-2's regex and spell each piece's UTF-8 bytes with `BYTE_ENCODER`."""
    return ["".join(BYTE_ENCODER[b] for b in piece.encode("utf-8")) for piece in _SPLIT_RE.findall(text)]


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every occurrence of `pair` in `symbols`, scanning left to right (so "aaa" -> "aa a")."""
    merged: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


class ByteLevelBPE:
    """Byte-level BPE: a vocabulary (token -> id), an ordered merge list, and optional special tokens.

    Special tokens (e.g. `<|endoftext|>`) must be in `vocab`; they are cut out of the raw text before
    pre-splitting, so they always encode to their single id.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special_tokens: Iterable[str] = ()):
        self.vocab = dict(vocab)
        self.id_to_token = {i: token for token, i in self.vocab.items()}
        self.merges = list(merges)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.special_tokens = list(special_tokens)
        missing = [t for t in self.special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocabulary; add them to `vocab` first")
        # Longest first, so that a special token that contains another one wins.
        by_length = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = regex.compile("|".join(map(regex.escape, by_length))) if by_length else None
        self._cache: dict[str, list[int]] = {}

    # -- encoding -------------------------------------------------------------------------------------

    def _encode_word(self, word: str) -> list[int]:
        if word not in self._cache:
            symbols = list(word)
            while len(symbols) > 1:
                # Merges are applied in the order they were learned, which reproduces training.
                pairs = set(zip(symbols, symbols[1:]))
                best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
                if best not in self.ranks:
                    break
                symbols = merge_pair(symbols, best)
            self._cache[word] = [self.vocab[symbol] for symbol in symbols]
        return self._cache[word]

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text`, treating special-token strings as plain text."""
        return [i for word in pre_tokenize(text) for i in self._encode_word(word)]

    def encode(self, text: str) -> list[int]:
        """Encode `text`; special-token strings in it become their ids (like `<|endoftext|>` -> 50256)."""
        if self._special_re is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in self._special_re.finditer(text):
            ids += self.encode_ordinary(text[start : match.start()])
            ids.append(self.vocab[match.group()])
            start = match.end()
        return ids + self.encode_ordinary(text[start:])

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Byte sequences that are not valid UTF-8 (a cut-off emoji) decode to U+FFFD."""
        data = bytearray()
        for i in ids:
            token = self.id_to_token[i]
            if token in self.special_tokens:
                data += token.encode("utf-8")
            else:
                data += bytes(BYTE_DECODER[char] for char in token)
        return data.decode("utf-8", errors="replace")

    # -- training -------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, special_tokens: Iterable[str] = ()) -> ByteLevelBPE:
        """Learn merges from `texts` until the vocabulary (256 bytes + merges + specials) has `vocab_size` tokens.

        Specials get the first ids (as in `tokenizers`), then the 256 byte symbols, then merged tokens.
        Plain recounting every step: O(merges x text) -- fine for a demo, slow for a real corpus.
        """
        special_tokens = list(special_tokens)
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than 256 bytes + {len(special_tokens)} special tokens"
            )
        if isinstance(texts, str):
            texts = [texts]
        word_counts = Counter(word for text in texts for word in pre_tokenize(text))
        words = [list(word) for word in word_counts]
        counts = list(word_counts.values())

        # Tie-break ids: bytes in code-point order of their spelling (GPT-2's order), then merges in order.
        token_ids = {char: i for i, char in enumerate(sorted(BYTE_ENCODER.values()))}
        merges: list[tuple[str, str]] = []
        while len(token_ids) + len(special_tokens) < vocab_size:
            pair_counts: Counter[tuple[str, str]] = Counter()
            for symbols, count in zip(words, counts):
                for pair in zip(symbols, symbols[1:]):  # overlapping: "aaa" counts (a, a) twice
                    pair_counts[pair] += count
            if not pair_counts:
                break  # every word is a single token already
            best = max(pair_counts, key=lambda p: (pair_counts[p], -token_ids[p[0]], -token_ids[p[1]]))
            merges.append(best)
            # Two merges can spell the same token ("a"+"bc", "ab"+"c"); it keeps its first id.
            token_ids.setdefault(best[0] + best[1], len(token_ids))
            words = [merge_pair(symbols, best) for symbols in words]

        vocab = {token: i for i, token in enumerate(special_tokens)}
        vocab.update({token: i + len(special_tokens) for token, i in token_ids.items()})
        return cls(vocab, merges, special_tokens)
