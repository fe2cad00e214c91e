"""examples/evaluate.py: sliding-window perplexity, checked against the model scored directly here.

One run starts a fresh interpreter as a user would; the others run the script in this process."""

from __future__ import annotations

import json
import math

import torch
from conftest import REPO_ROOT, run_example, run_example_in_process

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer

ALICE = REPO_ROOT / "examples" / "data" / "corpus" / "alice29.txt"


def perplexity(checkpoint, tmp_path, *args, monkeypatch=None):
    out = tmp_path / "ppl.json"
    args = ("--model_name_or_path", str(checkpoint), "--output_json", str(out), *args)
    if monkeypatch is None:
        run_example("evaluate.py", *args)
    else:
        run_example_in_process("evaluate.py", *args, monkeypatch=monkeypatch)
    return json.loads(out.read_text())


def test_windows_score_every_token_once_and_match_direct_scoring(tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    text = tmp_path / "short.txt"
    text.write_text("Alice was beginning to get very tired of sitting by her sister on the bank.\n\nSo she was considering.")
    ids = gpt2_tokenizer()(text.read_text(), return_tensors="pt").input_ids  # the paragraphs rejoin with "\n\n"
    model = GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint).eval()
    n = ids.size(1)

    # One window holds the whole text: the perplexity is exp(mean loss) of a single forward pass.
    whole = perplexity(tiny_gptcore_checkpoint, tmp_path, "--text_file", str(text), monkeypatch=monkeypatch)
    with torch.no_grad():
        direct = model(ids, labels=ids).loss.item()
    assert whole["tokens"] == n and whole["tokens_scored"] == n - 1 and whole["windows"] == 1
    assert math.isclose(whole["nll_per_token"], direct, rel_tol=1e-5)

    # Disjoint windows of 8 (stride = max_length): each window is an independent forward pass.
    disjoint = perplexity(
        tiny_gptcore_checkpoint, tmp_path, "--text_file", str(text), "--max_length", "8", "--stride", "8", monkeypatch=monkeypatch
    )
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, n, 8):
            window = ids[:, start : start + 8]
            if window.size(1) > 1:
                nll += model(window, labels=window).loss.item() * (window.size(1) - 1)
                count += window.size(1) - 1
    assert disjoint["tokens_scored"] == count
    assert math.isclose(disjoint["nll_per_token"], nll / count, rel_tol=1e-5)


def test_overlapping_stride_on_a_long_text(tiny_gptcore_checkpoint, tmp_path):
    result = perplexity(
        tiny_gptcore_checkpoint, tmp_path, "--text_file", str(ALICE), "--max_tokens", "300", "--max_length", "64", "--stride", "16"
    )
    # Every token but the first is predicted exactly once, whatever the stride; windows start every 16 tokens.
    assert result["tokens"] == 300 and result["tokens_scored"] == 299
    assert result["windows"] == math.ceil((300 - 64) / 16) + 1
    assert 1 < result["perplexity"] < 2 * 50257  # a random model: about the vocabulary size
