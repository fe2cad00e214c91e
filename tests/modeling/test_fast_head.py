"""The speed paths (modeling/fast_head.py) compute exactly what the plain paths compute.

- `lm_head_cross_entropy` (fused LM head + cross-entropy) against F.linear + F.cross_entropy;
- GPTCoreForCausalLM's fused loss, logits and gradients against transformers' GPT-2 on the same weights, whose loss
  is `ForCausalLMLoss` on the full logits (labels with -100, shift_labels, num_items_in_batch: what Trainer's
  gradient accumulation relies on), in fp32 and under bf16 autocast;
- generate()'s single-token steps (in fp32 the (n_embd, vocab) head copy generate() makes, else `lm_head_logits`)
  give transformers' GPT-2 step logits, including after the weights change in place, and from several threads;
- the decoding forward compiles to one graph (no graph breaks) with a StaticCache.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from transformers import StaticCache

from gptcore.modeling.fast_head import lm_head_cross_entropy, lm_head_logits
from tests.oracle import TOL, gpt2_and_twin, in_gpt2_layout


@pytest.fixture
def model(gpt2_pair):
    return gpt2_pair[1]


@pytest.mark.parametrize("use_logits", [False, True])
def test_fused_head_and_loss_match_linear_and_cross_entropy(use_logits, monkeypatch):
    import gptcore.modeling.fast_head as fast_head

    monkeypatch.setattr(fast_head, "_CHUNK_ELEMENTS", 1000)  # several vocabulary slices, and a ragged last one
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2500, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 2500, (2, 7))
    targets[0, :3] = -100

    logits, loss = lm_head_cross_entropy(x, weight, targets)
    ref_logits = F.linear(x, weight)
    ref_loss = F.cross_entropy(ref_logits.flatten(0, 1), targets.flatten(), reduction="sum")
    assert logits.shape == (2, 7, 2500)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(loss, ref_loss)
    # A second use of the logits sends its own gradient into the fused backward pass.
    extra, ref_extra = (logits.sin().sum(), ref_logits.sin().sum()) if use_logits else (0, 0)
    grads = torch.autograd.grad(0.7 * loss + extra, (x, weight))
    ref_grads = torch.autograd.grad(0.7 * ref_loss + ref_extra, (x, weight))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_lm_head_logits_is_linear():
    x, weight = torch.randn(3, 5, 8), torch.randn(40, 8)
    out = lm_head_logits(x, weight)
    torch.testing.assert_close(out, F.linear(x, weight))
    assert out.is_contiguous()


def _loss_and_grads(model, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(**kwargs)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "case",
    ["mean", "ignored_labels", "num_items_tensor", "num_items_int", "shift_labels"],
)
def test_fused_causal_lm_loss_matches_gpt2(gpt2_pair, case):
    """GPT-2 computes its loss with transformers' `ForCausalLMLoss` on the full logits: the fused loss, its logits
    and every gradient are GPT-2's, whatever the loss arguments."""
    ref, model = gpt2_pair
    torch.manual_seed(0)
    model.train()  # dropout is 0 in the tiny config: both models see the same computation
    ref.train()
    ids = torch.randint(0, model.config.vocab_size, (3, 11))
    kwargs = {"input_ids": ids, "labels": ids.clone()}
    if case != "mean":
        kwargs["labels"][0, :4] = -100
        kwargs["labels"][2, 7:] = -100
    if case == "num_items_tensor":
        kwargs["num_items_in_batch"] = torch.tensor(50)
    if case == "num_items_int":
        kwargs["num_items_in_batch"] = 41
    if case == "shift_labels":
        shifted = F.pad(kwargs["labels"], (0, 1), value=-100)[:, 1:].contiguous()
        kwargs["shift_labels"] = shifted
        kwargs["labels"] = torch.full_like(ids, 7)  # ignored when shift_labels is given

    fused, fused_grads = _loss_and_grads(model, **kwargs)
    plain, plain_grads = _loss_and_grads(ref, **kwargs)

    torch.testing.assert_close(fused.loss, plain.loss, rtol=0, atol=TOL)
    torch.testing.assert_close(fused.logits, plain.logits, rtol=0, atol=TOL)
    assert fused.logits.view(-1, model.config.vocab_size).shape == (33, model.config.vocab_size)
    assert fused_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(in_gpt2_layout(name, fused_grads[name]), grad, rtol=0, atol=TOL, msg=name)


def test_fused_loss_with_nothing_to_count_is_nan_like_gpt2(gpt2_pair):
    ref, model = gpt2_pair
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    labels = torch.full_like(ids, -100)
    assert torch.isnan(ref(input_ids=ids, labels=labels).loss)
    assert torch.isnan(model(input_ids=ids, labels=labels).loss)


def test_fused_loss_under_bf16_autocast_matches_gpt2(gpt2_pair):
    ref, model = gpt2_pair
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = model(input_ids=ids, labels=ids)
        plain = ref(input_ids=ids, labels=ids)
    assert fused.logits.dtype == plain.logits.dtype == torch.bfloat16
    torch.testing.assert_close(fused.loss, plain.loss, rtol=2e-2, atol=2e-2)  # bf16 keeps ~3 digits


def test_generate_single_token_steps_follow_weight_changes(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, ours.config.vocab_size, (1, 5))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True)

    def check():
        expected, got = ref.generate(prompt, **kwargs), ours.generate(prompt, **kwargs)
        assert torch.equal(got.sequences, expected.sequences)
        torch.testing.assert_close(
            torch.stack(got.logits, dim=1), torch.stack(expected.logits, dim=1), rtol=0, atol=TOL
        )

    check()
    with torch.no_grad():  # in place, as an optimizer step would
        ours.lm_head.weight.mul_(-1.5)
        ref.lm_head.weight.mul_(-1.5)
    check()


def test_decoding_step_compiles_without_graph_breaks(model):
    model.eval()
    cache = StaticCache(config=model.config, max_cache_len=16)
    ids = torch.randint(0, model.config.vocab_size, (1, 4))
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
        step = torch.randint(0, model.config.vocab_size, (1, 1))
        explained = torch._dynamo.explain(model)(
            step,
            past_key_values=cache,
            use_cache=True,
            position_ids=torch.tensor([[4]]),
            attention_mask=torch.ones(1, 16, dtype=torch.long),
        )
    assert explained.graph_break_count == 0, [str(b.reason)[:300] for b in explained.break_reasons]


def test_decode_head_copy_lives_only_during_generate_and_per_thread(tmp_path):
    pairs = [gpt2_and_twin(tmp_path / str(seed), seed=seed) for seed in (1, 2)]
    prompt = torch.randint(0, 100, (1, 5))
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    expected = [ref.generate(prompt, **kwargs) for ref, _ in pairs]
    results = {}

    def run(i):
        for _ in range(3):
            results.setdefault(i, []).append(pairs[i][1].generate(prompt, **kwargs))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(2):
        assert all(torch.equal(r, expected[i]) for r in results[i]), f"model {i} generated wrong tokens in a thread"
    from gptcore.modeling.modeling_gptcore import _DECODE_HEAD

    assert _DECODE_HEAD.get() is None  # nothing kept after generate() returns
    ref, ours = pairs[0]
    with torch.no_grad():  # a weight changed after a generate() call is what the next call uses
        ours.lm_head.weight.mul_(-1)
        ref.lm_head.weight.mul_(-1)
    assert torch.equal(ours.generate(prompt, **kwargs), ref.generate(prompt, **kwargs))
