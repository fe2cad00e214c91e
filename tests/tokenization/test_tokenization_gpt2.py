"""gpt2_tokenizer(): GPT-2's exact ids (vs tiktoken and transformers' GPT2Tokenizer), behaviour, bad vocab files."""

import hashlib
import shutil
from importlib.resources import files
from pathlib import Path

import pytest
from transformers import GPT2Tokenizer

from gptcore.tokenization import END_OF_TEXT_ID, GPT2_SPLIT_PATTERN, gpt2_tokenizer, load_gpt2_vocab
from gptcore.tokenization.bpe import BYTE_DECODER
from gptcore.tokenization.gpt2 import GPT2_SHA256

CORPUS_DIR = Path(__file__).resolve().parents[2] / "examples" / "data" / "corpus"
CORPUS_FILES = sorted(CORPUS_DIR.glob("*.txt"))
VOCAB_DIR = Path(str(files("gptcore.tokenization") / "data"))

# Shared with test_bpe_reference.py.
TRICKY_STRINGS = [
    "",
    "Hello world",
    " Hello world",
    "Hello  world   again    and\tagain",
    "   leading spaces and trailing   ",
    "line one\nline two\r\n\r\nline four\n\n\n",
    "It's, I'm, we've, they'll, she'd, we're, don't, can't. IT'S I'M (upper case is not a contraction)",
    "'s's 's ''' ' t",
    "1234567890 3.14159 1,000,000 -42 0x1F 2024-01-01 1st 22nd ٣٤٥",
    "naïve café résumé Zürich coöperate e\u0301 ﬁ",
    "Ελληνικά русский текст עברית العربية हिन्दी",
    "中文字符测试，日本語のテキスト、한국어 텍스트。",
    "emoji 👋🏽 👨‍👩‍👧‍👦 🤗🚀✨ 🏳️‍🌈",
    "nbsp\u00a0soft\u00adhyphen zero\u200bwidth ideographic\u3000space em\u2003space \u2028sep",
    "control \x00\x01\x1f\x7f chars",
    "!!!???...--- foo...bar a  b   c    d",
    "def f(x):\n    return x ** 2  # comment\n\treturn {'a': [1, 2]}\n",
    "https://example.com/path?q=1&r=2#frag <b>html</b> user@example.org",
    "a<|endoftext|>b",
    "<|endoftext|><|endoftext|> <|endoftext|> \n<|endoftext|>\n",
    "<|endoftext| <|endof <endoftext> |endoftext|>",
]
BOOK_TEXT = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
BOOK_IDS = [
    15496,
    11,
    466,
    345,
    588,
    8887,
    30,
    220,
    50256,
    554,
    262,
    4252,
    18250,
    8812,
    2114,
    286,
    617,
    34680,
    27271,
    13,
]


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    """tiktoken's gpt2 encoding built from the bundled files (tiktoken.get_encoding would download them)."""
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is a test dependency: pip install gptcore[dev]")
    vocab, _ = load_gpt2_vocab()
    ranks = {bytes(BYTE_DECODER[c] for c in token): i for token, i in vocab.items() if i != END_OF_TEXT_ID}
    return tiktoken.Encoding(
        name="gpt2_offline",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": END_OF_TEXT_ID},
    )


@pytest.fixture(scope="module")
def hf_gpt2_from_files(tmp_path_factory):
    """transformers' own GPT2Tokenizer loaded from the same files, in the layout it expects."""
    folder = tmp_path_factory.mktemp("hf_gpt2")
    shutil.copy(VOCAB_DIR / "encoder.json", folder / "vocab.json")
    shutil.copy(VOCAB_DIR / "vocab.bpe", folder / "merges.txt")
    return GPT2Tokenizer.from_pretrained(folder)


def test_book_examples(tok):
    assert tok(BOOK_TEXT)["input_ids"] == BOOK_IDS
    assert tok.encode("Akwirw ier") == [33901, 86, 343, 86, 220, 959]
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.decode(BOOK_IDS) == BOOK_TEXT


def test_gpt2_special_tokens_and_defaults(tok):
    assert len(tok) == 50257 and tok.vocab_size == 50257
    assert tok.is_fast
    assert tok.eos_token == tok.bos_token == tok.unk_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.bos_token_id == 50256
    assert tok.pad_token is None
    assert tok.padding_side == "left"
    assert tok.model_max_length == 1024
    assert tok.encode("Hello") != tok.encode(" Hello")  # no prefix space is added


@pytest.mark.parametrize("text", TRICKY_STRINGS)
def test_tricky_strings_match_tiktoken_and_transformers(tok, tiktoken_gpt2, hf_gpt2_from_files, text):
    ids = tok.encode(text)
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert ids == hf_gpt2_from_files.encode(text)
    assert tok.decode(ids) == text


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpora_match_tiktoken_and_transformers(tok, tiktoken_gpt2, hf_gpt2_from_files, path):
    text = path.read_bytes().decode("utf-8")  # not read_text: keep the CRLF line ends as they are
    ids = tok.encode(text)
    assert len(ids) > 30_000
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert ids == hf_gpt2_from_files.encode(text)
    assert tok.decode(ids) == text


def test_corpus_files_are_bundled():
    assert [p.name for p in CORPUS_FILES] == ["alice29.txt", "asyoulik.txt", "plrabn12.txt"]


def test_any_bytes_round_trip(tok):
    # Every code point class, including ones GPT-2 never saw, survives encode -> decode.
    text = "".join(chr(c) for c in range(1, 0x3000, 7)) + "\U0001f600\U00010348\U000e0001"
    assert tok.decode(tok.encode(text)) == text


def test_pad_token_settable_and_left_padding(tok):
    tok = gpt2_tokenizer()  # fresh instance: this test mutates it
    tok.pad_token = tok.eos_token
    batch = tok(["Hi", "Hello there, world"], padding=True)
    long_ids = tok.encode("Hello there, world")
    short_ids = tok.encode("Hi")
    pad = len(long_ids) - len(short_ids)
    assert batch["input_ids"][0] == [50256] * pad + short_ids
    assert batch["attention_mask"][0] == [0] * pad + [1] * len(short_ids)
    assert batch["input_ids"][1] == long_ids


def test_bundled_files_have_published_sha256():
    for name, expected in GPT2_SHA256.items():
        assert hashlib.sha256((VOCAB_DIR / name).read_bytes()).hexdigest() == expected
    vocab, merges = load_gpt2_vocab()
    assert len(vocab) == 50257 and len(merges) == 50000
    assert merges[0] == ("Ġ", "t")


@pytest.fixture
def vocab_copy(tmp_path):
    for name in GPT2_SHA256:
        shutil.copy(VOCAB_DIR / name, tmp_path / name)
    return tmp_path


def test_missing_vocab_file(vocab_copy):
    (vocab_copy / "vocab.bpe").unlink()
    with pytest.raises(FileNotFoundError, match=r"vocab\.bpe does not exist.*reinstall gptcore"):
        gpt2_tokenizer(vocab_copy)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpt2_tokenizer(vocab_copy / "no_such_folder")


def test_hash_mismatch(vocab_copy):
    path = vocab_copy / "encoder.json"
    path.write_bytes(path.read_bytes().replace(b'"hello"', b'"hellp"', 1))
    with pytest.raises(ValueError, match=r"encoder\.json has sha256 .* expected 196139668be6"):
        gpt2_tokenizer(vocab_copy)


def test_corrupt_files_without_hash_check(vocab_copy):
    encoder = vocab_copy / "encoder.json"
    good = encoder.read_bytes()
    encoder.write_bytes(good[:1000])
    with pytest.raises(ValueError, match="not valid JSON"):
        gpt2_tokenizer(vocab_copy, verify_sha256=False)
    for wrong in ['{"a": 0}', '["a"]', '{"a": "0", "b": 1}']:
        encoder.write_text(wrong, encoding="utf-8")
        with pytest.raises(ValueError, match="not GPT-2's vocabulary"):
            gpt2_tokenizer(vocab_copy, verify_sha256=False)
    encoder.write_bytes(good)
    merges = vocab_copy / "vocab.bpe"
    merges.write_text("#version: 0.2\nĠ t\nthree parts here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not GPT-2's merge list.*'three', 'parts', 'here'"):
        gpt2_tokenizer(vocab_copy, verify_sha256=False)
    merges.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match="not UTF-8"):
        gpt2_tokenizer(vocab_copy, verify_sha256=False)
