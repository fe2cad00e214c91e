"""Property tests against transformers' GPT2LMHeadModel: random tiny configs, batch shapes, left padding with its
positions, and cached decoding in random chunks; in every case gptcore, loaded from the random GPT-2's folder,
gives GPT-2's logits."""

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache

from gptcore.modeling import compat
from tests.oracle import TOL, gpt2_and_twin

# Few examples of tiny models, the same ones on every run: the suite stays fast and a failure reproduces.
SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def gpt2_and_batch(draw):
    """(GPT-2 config fields, attention implementation, token ids, attention mask) with each row left-padded and
    keeping at least one real token."""
    n_head = draw(st.integers(1, 4))
    fields = dict(
        vocab_size=draw(st.integers(2, 80)),
        n_positions=draw(st.integers(4, 24)),
        n_embd=n_head * draw(st.integers(1, 8)),
        n_layer=draw(st.integers(1, 3)),
        n_head=n_head,
        n_inner=draw(st.none() | st.integers(1, 40)),
        activation_function=draw(st.sampled_from(["gelu_new", "gelu", "relu"])),
        layer_norm_epsilon=draw(st.sampled_from([1e-5, 1e-6])),
        tie_word_embeddings=draw(st.booleans()),
        initializer_range=draw(st.sampled_from([0.02, 0.2])),
    )
    attn = draw(st.sampled_from(["eager", "sdpa"]))
    batch = draw(st.integers(1, 4))
    seq_len = draw(st.integers(1, fields["n_positions"]))
    pads = draw(st.lists(st.integers(0, seq_len - 1), min_size=batch, max_size=batch))
    seed = draw(st.integers(0, 2**16))
    ids = torch.randint(0, fields["vocab_size"], (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(pads):
        mask[row, :pad] = 0
    return fields, attn, ids, mask, seed


def gpt2_and_gptcore(fields, attn, seed):
    """A random GPT-2 and gptcore loaded from its saved folder, both with attention `attn`."""
    with tempfile.TemporaryDirectory() as folder:
        ref, ours = gpt2_and_twin(Path(folder), seed, attn_implementation=attn, **fields)
    ref.set_attn_implementation(attn)
    return ref, ours


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """What generate() passes for left-padded rows: each row's real tokens at 0, 1, 2, ..."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@SETTINGS
@given(gpt2_and_batch())
def test_padded_batch_matches_gpt2_batched_and_each_row_alone(case):
    fields, attn, ids, mask, seed = case
    ref, ours = gpt2_and_gptcore(fields, attn, seed)
    positions = positions_of(mask)
    with torch.no_grad():
        logits = ours(ids, attention_mask=mask, position_ids=positions).logits
        expected = ref(ids, attention_mask=mask, position_ids=positions).logits
    assert torch.isfinite(logits).all()
    real = mask.bool()
    torch.testing.assert_close(logits[real], expected[real], atol=TOL, rtol=0)
    for row in range(ids.size(0)):
        with torch.no_grad():
            alone = ref(ids[row : row + 1][:, real[row]]).logits[0]
        torch.testing.assert_close(logits[row][real[row]], alone, atol=TOL, rtol=0)


@SETTINGS
@given(gpt2_and_batch(), st.data())
def test_cached_chunks_match_gpt2_full_forward(case, data):
    fields, attn, ids, mask, seed = case
    ref, ours = gpt2_and_gptcore(fields, attn, seed)
    seq_len = ids.size(1)
    # The sequence fed in random chunks, one after another through the cache: padded, with the mask growing with
    # it and the positions given, or unpadded with neither (the model then masks and counts positions itself).
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, seq_len - 1)), max_size=4)) - {seq_len})
    bounds = [0, *cuts, seq_len]
    padded = data.draw(st.booleans())
    mask = mask if padded else torch.ones_like(ids)
    positions = positions_of(mask)
    cache = DynamicCache(config=ours.config)
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        parts = []
        for a, b in zip(bounds, bounds[1:]):
            inputs = dict(attention_mask=mask[:, :b], position_ids=positions[:, a:b]) if padded else {}
            out = ours(ids[:, a:b], use_cache=True, **inputs, **{compat.CACHE_ARG: cache})
            parts.append(out.logits)
    assert cache.get_seq_length() == seq_len
    real = mask.bool()
    torch.testing.assert_close(torch.cat(parts, dim=1)[real], expected[real], atol=TOL, rtol=0)
