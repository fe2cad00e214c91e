"""examples/perplexity.py: sliding-window perplexity, checked against transformers' GPT-2 scoring each token.

One run starts a fresh interpreter as a user would; the others run the script in this process."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer
from tests.oracle import gpt2_config, save_random_gpt2
from tests.processes import REPO_ROOT, run_example, run_example_in_process

ALICE = REPO_ROOT / "examples" / "data" / "corpus" / "alice29.txt"
SHORT_TEXT = "Alice was beginning to get very tired of sitting by her sister on the bank.\n\nSo she was considering."


def perplexity(checkpoint, tmp_path, *args, monkeypatch=None):
    out = tmp_path / "ppl.json"
    args = ("--model_name_or_path", str(checkpoint), "--output_json", str(out), *args)
    if monkeypatch is None:
        run_example("perplexity.py", *args)
    else:
        run_example_in_process("perplexity.py", *args, monkeypatch=monkeypatch)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny random transformers GPT-2 (GPT-2 vocabulary) saved in the Hub layout, and that model."""
    folder = tmp_path_factory.mktemp("gpt2_for_perplexity")
    reference = save_random_gpt2(folder, gpt2_config(vocab_size=50257, n_positions=32))
    gpt2_tokenizer().save_pretrained(folder)
    return folder, reference


@torch.no_grad()
def reference_nll(model, ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """Summed NLL of ids[1:], one token at a time: windows of max_length tokens start at multiples of stride,
    and token t is scored by the first window that holds its predecessor, from that window's tokens before t
    (so with as much context as a window allows, and at least max_length - stride + 1 tokens after the start)."""
    ids = ids[0]
    nll, count, log_probs = 0.0, 0, {}
    for t in range(1, ids.numel()):
        begin = max(0, math.ceil((t - max_length) / stride)) * stride
        context = ids[begin:t]
        assert 1 <= context.numel() <= max_length and context.numel() >= min(t, max_length - stride + 1)
        if begin not in log_probs:  # causal: position i of ids[begin:begin + max_length] sees ids[begin:begin + i + 1]
            log_probs[begin] = torch.log_softmax(
                model(ids[None, begin : begin + max_length]).logits[0].double(), dim=-1
            )
        nll -= log_probs[begin][context.numel() - 1, ids[t]].item()
        count += 1
    return nll, count


@pytest.mark.parametrize("stride", [6, 4, 1], ids=["stride=window", "stride<window", "stride=1"])
def test_every_token_after_the_first_is_scored_once_as_transformers_gpt2_scores_it(
    gpt2_folder, stride, tmp_path, monkeypatch
):
    folder, reference = gpt2_folder
    text = tmp_path / "short.txt"
    text.write_text(SHORT_TEXT)
    ids = gpt2_tokenizer()(SHORT_TEXT, return_tensors="pt").input_ids
    n = ids.size(1)
    assert n > 3 * 6  # several windows of 6 tokens

    result = perplexity(
        folder,
        tmp_path,
        "--text_file",
        str(text),
        "--max_length",
        "6",
        "--stride",
        str(stride),
        monkeypatch=monkeypatch,
    )
    nll, count = reference_nll(reference, ids, max_length=6, stride=stride)
    assert result["tokens"] == n and count == n - 1
    assert result["tokens_scored"] == n - 1  # stride = window too: no window leaves its first target unscored
    assert result["windows"] == 1 + math.ceil((n - 1 - 6) / stride)
    assert math.isclose(result["nll_per_token"], nll / count, rel_tol=1e-5)
    assert math.isclose(result["perplexity"], math.exp(nll / count), rel_tol=1e-5)


def test_one_window_holding_the_whole_text_is_a_single_forward_pass(tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    text = tmp_path / "short.txt"
    text.write_text(SHORT_TEXT)
    ids = gpt2_tokenizer()(text.read_text(), return_tensors="pt").input_ids  # the paragraphs rejoin with "\n\n"
    model = GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint).eval()
    whole = perplexity(tiny_gptcore_checkpoint, tmp_path, "--text_file", str(text), monkeypatch=monkeypatch)
    with torch.no_grad():
        direct = model(ids, labels=ids).loss.item()
    assert whole["tokens"] == ids.size(1) and whole["tokens_scored"] == ids.size(1) - 1 and whole["windows"] == 1
    assert math.isclose(whole["nll_per_token"], direct, rel_tol=1e-5)


def test_overlapping_stride_on_a_long_text(tiny_gptcore_checkpoint, tmp_path):
    result = perplexity(
        tiny_gptcore_checkpoint,
        tmp_path,
        "--text_file",
        str(ALICE),
        "--max_tokens",
        "300",
        "--max_length",
        "64",
        "--stride",
        "16",
    )
    # Every token but the first is predicted exactly once, whatever the stride; windows start every 16 tokens
    # until one reaches the last token (a window of 64 tokens predicts the 64 tokens after its first).
    assert result["tokens"] == 300 and result["tokens_scored"] == 299
    assert result["windows"] == 1 + math.ceil((299 - 64) / 16)
    assert 1 < result["perplexity"] < 2 * 50257  # a random model: about the vocabulary size
