"""Saved tokenizers load with plain `AutoTokenizer` in a Python where gptcore cannot be imported."""

import json

import pytest

from gptcore.tokenization import gpt2_tokenizer, train_tokenizer
from tests.processes import run_without_gptcore

CHILD = """
import json

import pytest
from transformers import AutoTokenizer
job = json.loads(sys.stdin.read())
out = {}
for folder in job["folders"]:
    tok = AutoTokenizer.from_pretrained(folder)
    out[folder] = {
        "class": type(tok).__name__,
        "ids": [tok.encode(t) for t in job["texts"]],
        "eos": tok.eos_token_id,
        "padding_side": tok.padding_side,
        "chat": tok.apply_chat_template(job["messages"], tokenize=False),
    }
print("RESULT" + json.dumps(out))
"""

TEXTS = ["Hello, do you like tea? <|endoftext|> In the sunlit terraces", "héllo 👋🏽 中文\n\n  x", "It's 1,000"]


def load_in_plain_transformers(folders, messages, cwd):
    job = json.dumps({"folders": [str(f) for f in folders], "texts": TEXTS, "messages": messages})
    proc = run_without_gptcore(CHILD, cwd, stdin=job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


@pytest.mark.slow  # a fresh interpreter
def test_saved_tokenizers_load_without_gptcore(tmp_path):
    gpt2 = gpt2_tokenizer()
    trained = train_tokenizer(
        iter(["the quick brown fox jumps over the lazy dog. " * 50]), 300, ["<|endoftext|>", "<|pad|>"]
    )
    gpt2.save_pretrained(tmp_path / "gpt2")
    trained.save_pretrained(tmp_path / "trained")
    messages = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]

    loaded = load_in_plain_transformers([tmp_path / "gpt2", tmp_path / "trained"], messages, cwd=tmp_path)

    for name, original in [("gpt2", gpt2), ("trained", trained)]:
        got = loaded[str(tmp_path / name)]
        assert got["class"] == "GPT2Tokenizer"
        assert got["ids"] == [original.encode(t) for t in TEXTS]
        assert got["eos"] == original.eos_token_id
        assert got["padding_side"] == "left"
        assert got["chat"] == original.apply_chat_template(messages, tokenize=False)
    # The book's chapter-2 ids, up to " terraces".
    book_prefix = [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114]
    assert loaded[str(tmp_path / "gpt2")]["ids"][0] == book_prefix
