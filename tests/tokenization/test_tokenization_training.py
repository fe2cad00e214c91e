"""train_tokenizer(): a new byte-level BPE vocabulary, same kind of tokenizer as GPT-2's, clear errors."""

import json
import runpy
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from gptcore.tokenization import train_tokenizer
from tests.tokenization.test_tokenization_gpt2 import CORPUS_DIR

ALICE = CORPUS_DIR / "alice29.txt"
ALICE_TEXT = ALICE.read_bytes().decode("utf-8")  # CRLF kept, as the trainer reads the file
UNSEEN = "naïve 中文 👋🏽 <|endoftext|>\x00\t tabs"  # none of these characters is in the ASCII corpus


def merges_of(tokenizer):
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer([ALICE], vocab_size=1000, special_tokens=["<|endoftext|>", "<|pad|>"])


def test_trained_vocabulary_layout(trained):
    vocab = trained.get_vocab()
    assert len(trained) == len(vocab) == 1000
    assert vocab["<|endoftext|>"] == 0 and vocab["<|pad|>"] == 1
    assert trained.eos_token == trained.bos_token == "<|endoftext|>" and trained.eos_token_id == 0
    assert trained.padding_side == "left" and trained.is_fast
    assert len(merges_of(trained)) == 1000 - 2 - 256
    assert "Ġthe" in vocab and "ĠAlice" in vocab  # frequent words became single tokens
    assert len(trained.encode(ALICE_TEXT)) < 0.5 * len(ALICE.read_bytes())


def test_trained_tokenizer_is_byte_level(trained):
    ids = trained.encode(UNSEEN)
    assert trained.decode(ids) == UNSEEN
    assert 0 in ids  # the special token is matched in raw text
    assert trained.encode("Alice") != trained.encode(" Alice")  # no prefix space, like GPT-2


def test_save_and_reload(trained, tmp_path):
    trained.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["'Curiouser and curiouser!' cried Alice", UNSEEN]:
        assert reloaded.encode(text) == trained.encode(text)
    assert reloaded.eos_token_id == 0 and reloaded.chat_template == trained.chat_template


def test_files_and_iterator_agree():
    lines = ALICE_TEXT.splitlines(keepends=True)
    from_iterator = train_tokenizer(iter(lines), vocab_size=400)
    from_file = train_tokenizer(ALICE, vocab_size=400)
    assert merges_of(from_iterator) == merges_of(from_file)
    assert len(from_file) == 400 and from_file.get_vocab()["<|endoftext|>"] == 0


def test_warns_when_text_is_too_small_for_vocab_size(caplog):
    with caplog.at_level("WARNING", logger="gptcore.tokenization.training"):
        tokenizer = train_tokenizer(iter(["tiny text"]), vocab_size=5000)
    assert len(tokenizer) < 300
    assert f"only supports {len(tokenizer)} tokens, not vocab_size=5000" in caplog.text


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="at least 258"):
        train_tokenizer(iter(["abc"]), vocab_size=257, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert len(train_tokenizer(iter(["abc"]), vocab_size=258, special_tokens=["<a>", "<b>"])) == 258


@pytest.mark.parametrize(
    "source, kwargs, error, message",
    [
        ("no_such_file.txt", {}, FileNotFoundError, "does not exist"),
        (["first text, not a file"], {}, FileNotFoundError, r"pass an iterator .* iter\(texts\)"),
        (iter([b"bytes"]), {}, ValueError, "must yield str"),
        (iter(["x"]), {"special_tokens": []}, ValueError, "at least one"),
        (iter(["x"]), {"special_tokens": ["<a>", "<a>"]}, ValueError, "duplicates"),
    ],
)
def test_bad_training_input(source, kwargs, error, message):
    with pytest.raises(error, match=message):
        train_tokenizer(source, vocab_size=300, **kwargs)


def test_example_script(tmp_path, monkeypatch, capsys):
    script = Path(__file__).resolve().parents[2] / "examples" / "train_tokenizer.py"
    args = [str(script), str(ALICE), "--vocab-size", "300", "--output-dir", str(tmp_path), "--no-progress"]
    monkeypatch.setattr("sys.argv", args)
    runpy.run_path(str(script), run_name="__main__")
    assert "vocabulary: 300 tokens (43 merges)" in capsys.readouterr().out
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == 300
