"""The readable reference BPE (tokenization/bpe.py) agrees with the fast `tokenizers` path."""

import pytest

from gptcore.tokenization import ByteLevelBPE, bytes_to_unicode, gpt2_tokenizer, load_gpt2_vocab, train_tokenizer
from gptcore.tokenization.bpe import pre_tokenize
from tests.tokenization.test_tokenization_gpt2 import CORPUS_DIR, TRICKY_STRINGS
from tests.tokenization.test_tokenization_training import merges_of

SLICE = 20_000  # characters per corpus file: enough for every kind of word, fast in pure Python


def corpus_slice(name, start=0):
    return (CORPUS_DIR / name).read_bytes().decode("utf-8")[start : start + SLICE]


@pytest.fixture(scope="module")
def fast():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def reference():
    vocab, merges = load_gpt2_vocab()
    return ByteLevelBPE(vocab, merges, special_tokens=["<|endoftext|>"])


def test_byte_map_is_gpt2s():
    byte_map = bytes_to_unicode()
    chars = list(byte_map.values())
    assert len(set(chars)) == 256
    assert not any(c.isspace() or not c.isprintable() for c in chars)
    assert byte_map[ord(" ")] == "Ġ" and byte_map[ord("\n")] == "Ċ" and byte_map[ord("A")] == "A"
    # GPT-2's first 256 ids are the byte symbols in code-point order: the order the tie-break uses.
    vocab, _ = load_gpt2_vocab()
    assert sorted(chars) == sorted(vocab, key=vocab.get)[:256]


def test_pre_tokenize_splits_like_gpt2():
    assert pre_tokenize("Hello world's  end 42!\n") == ["Hello", "Ġworld", "'s", "Ġ", "Ġend", "Ġ42", "!", "Ċ"]


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_reference_matches_fast_on_tricky_strings(fast, reference, text):
    ids = reference.encode(text)
    assert ids == fast.encode(text)
    assert reference.decode(ids) == text


@pytest.mark.parametrize("name", ["alice29.txt", "asyoulik.txt", "plrabn12.txt"])
def test_reference_matches_fast_on_corpus_slice(fast, reference, name):
    text = corpus_slice(name)
    ids = reference.encode(text)
    assert len(ids) > 3000
    assert ids == fast.encode(text)
    assert reference.decode(ids) == text


def test_special_tokens_only_when_asked(reference):
    assert reference.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert 50256 not in reference.encode_ordinary("a<|endoftext|>b")


def test_training_learns_the_same_merges_as_tokenizers():
    text = corpus_slice("alice29.txt")
    vocab_size = 256 + 1 + 300
    reference = ByteLevelBPE.train(text, vocab_size, special_tokens=["<|endoftext|>"])
    fast = train_tokenizer(iter([text]), vocab_size, special_tokens=["<|endoftext|>"])
    # Most of these 300 steps have several equally frequent pairs; agreement shows the tie rule is the same.
    assert reference.merges == merges_of(fast)
    assert reference.vocab == fast.get_vocab()
    held_out = corpus_slice("alice29.txt", start=SLICE)
    assert reference.encode(held_out) == fast.encode(held_out)


def test_ties_go_to_the_smallest_pair_of_ids():
    # "ba ab": (b,a), (Ġ,a) and (a,b) are seen once each. First-seen order would pick (b,a); the rule picks
    # (a,b) because 'a' has the smallest id; 'Ġ' (U+0120) sorts after every ASCII letter.
    expected = [("a", "b"), ("b", "a"), ("Ġ", "ab")]
    assert ByteLevelBPE.train("ba ab", 256 + 3).merges == expected
    assert merges_of(train_tokenizer(iter(["ba ab"]), 256 + 1 + 3)) == expected


def test_training_stops_when_nothing_is_left_to_merge():
    bpe = ByteLevelBPE.train("aaaa", 1000)
    assert bpe.merges == [("a", "a"), ("aa", "aa")]
    assert bpe.encode("aaaa") == [bpe.vocab["aaaa"]]
    assert bpe.encode("aaa") == [bpe.vocab["aa"], bpe.vocab["a"]]


def test_reference_errors():
    with pytest.raises(ValueError, match="smaller than 256 bytes \\+ 1 special"):
        ByteLevelBPE.train("text", 256, special_tokens=["<|endoftext|>"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ByteLevelBPE({"a": 0}, [], special_tokens=["<s>"])
