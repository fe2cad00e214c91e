"""generate(), KV caches and padding behave exactly like transformers' GPT-2."""

import torch
from transformers import DynamicCache, StaticCache

TOL = 1e-5


def test_greedy_generate_token_identical(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (3, 7))
    kwargs = dict(max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, **kwargs), ref.generate(prompt, **kwargs))


def test_sampling_with_seed_is_reproducible(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 5))
    kwargs = dict(max_new_tokens=15, do_sample=True, top_k=20, temperature=0.9, pad_token_id=0)
    torch.manual_seed(123)
    first = ours.generate(prompt, **kwargs)
    torch.manual_seed(123)
    second = ours.generate(prompt, **kwargs)
    torch.manual_seed(123)
    reference = ref.generate(prompt, **kwargs)
    assert torch.equal(first, second)
    assert torch.equal(first, reference)


def test_cached_step_by_step_equals_full_forward(gpt2_pair):
    _, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        full = ours(ids, use_cache=False).logits
        cache = DynamicCache(config=ours.config)
        out = ours(ids[:, :5], past_key_values=cache, use_cache=True)  # a prefill chunk, then one token at a time
        steps = [out.logits]
        for t in range(5, 12):
            out = ours(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert cache.get_seq_length() == 12
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=TOL, rtol=0)


def test_left_padded_batch_matches_each_row_alone(gpt2_pair):
    ref, ours = gpt2_pair
    pad = 0
    rows = [torch.randint(1, 100, (n,)) for n in (9, 4, 6)]
    width = max(len(r) for r in rows)
    ids = torch.full((3, width), pad)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=pad)
    batched = ours.generate(ids, attention_mask=mask, **kwargs)
    assert torch.equal(batched, ref.generate(ids, attention_mask=mask, **kwargs))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left-padded rows
    with torch.no_grad():
        batched_logits = ours(ids, attention_mask=mask, position_ids=positions).logits
    for i, r in enumerate(rows):
        alone = ours.generate(r[None], **kwargs)
        assert torch.equal(batched[i, width:], alone[0, len(r) :]), f"row {i} differs when batched"
        with torch.no_grad():
            alone_logits = ours(r[None]).logits[0]
        torch.testing.assert_close(batched_logits[i, width - len(r) :], alone_logits, atol=TOL, rtol=0)


def test_static_cache_generation_equals_dynamic(gpt2_pair):
    _, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 6))
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    dynamic = ours.generate(prompt, **kwargs)
    static = ours.generate(prompt, cache_implementation="static", **kwargs)
    assert torch.equal(dynamic, static)
    cache = StaticCache(config=ours.config, max_cache_len=32)
    explicit = ours.generate(prompt, past_key_values=cache, **kwargs)
    assert torch.equal(dynamic, explicit)


def test_logits_to_keep(gpt2_pair):
    _, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        full = ours(ids).logits
        last = ours(ids, logits_to_keep=1).logits
        picked = ours(ids, logits_to_keep=torch.tensor([2, 5])).logits
    assert last.shape == (2, 1, 101)
    torch.testing.assert_close(last, full[:, -1:], atol=TOL, rtol=0)  # matmul blocking differs by shape
    torch.testing.assert_close(picked, full[:, [2, 5]], atol=TOL, rtol=0)


def test_core_runs_without_transformers_and_its_cache_matches():
    """The plain-PyTorch path: core GPT, its own KVCache and generate loop."""
    from gptcore.modeling.core import GPT, GPTConfig, KVCache

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2)).eval()
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        full, loss = model(ids, targets=ids)
        cache = KVCache()
        parts = [model(ids[:, :4], past_key_values=cache)[0]]
        parts += [model(ids[:, t : t + 1], past_key_values=cache)[0] for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=TOL, rtol=0)
    assert loss.item() > 0
    greedy = model.generate(ids[:, :3], max_new_tokens=6, temperature=0)
    with torch.no_grad():  # greedy with the cache = argmax of the uncached forward, token by token
        seq = ids[:, :3]
        for _ in range(6):
            seq = torch.cat([seq, model(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, seq)
    assert model.lm_head.weight is model.transformer.wte.weight
