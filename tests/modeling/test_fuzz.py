"""Property tests over random tiny configs, batch shapes, padding patterns and cache use."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM

TOL = 2e-5


@st.composite
def model_and_batch(draw):
    n_head = draw(st.integers(1, 4))
    config = GPTCoreConfig(
        vocab_size=draw(st.integers(2, 80)),
        n_positions=draw(st.integers(4, 24)),
        n_embd=n_head * draw(st.integers(1, 8)),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_inner=draw(st.none() | st.integers(1, 40)),
        activation_function=draw(st.sampled_from(["gelu_new", "gelu", "relu"])),
        tie_word_embeddings=draw(st.booleans()),
    )
    config._attn_implementation = draw(st.sampled_from(["eager", "sdpa"]))
    batch = draw(st.integers(1, 4))
    seq_len = draw(st.integers(1, config.n_positions))
    # Left padding per row: each row keeps at least one real token.
    pads = draw(st.lists(st.integers(0, seq_len - 1), min_size=batch, max_size=batch))
    seed = draw(st.integers(0, 2**16))
    return config, batch, seq_len, pads, seed


def build(config, seed):
    torch.manual_seed(seed)
    return GPTCoreForCausalLM(config).eval()


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(model_and_batch())
def test_padded_rows_equal_unpadded_rows_and_outputs_are_finite(case):
    config, batch, seq_len, pads, seed = case
    model = build(config, seed)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, position_ids=positions).logits
    assert torch.isfinite(logits).all()
    for row, pad in enumerate(pads):
        with torch.no_grad():
            alone = model(ids[row : row + 1, pad:]).logits[0]
        torch.testing.assert_close(logits[row, pad:], alone, atol=TOL, rtol=0)


@SETTINGS
@given(model_and_batch(), st.data())
def test_cached_decoding_equals_uncached(case, data):
    config, batch, seq_len, _, seed = case
    model = build(config, seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    # Split the sequence into random chunks fed one after another through the cache.
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, seq_len - 1)), max_size=4)) - {seq_len})
    bounds = [0, *cuts, seq_len]
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = DynamicCache(config=config)
        parts = [
            model(ids[:, a:b], past_key_values=cache, use_cache=True).logits
            for a, b in zip(bounds, bounds[1:])
            if b > a
        ]
    assert cache.get_seq_length() == seq_len
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=TOL, rtol=0)
    assert torch.isfinite(full).all()
