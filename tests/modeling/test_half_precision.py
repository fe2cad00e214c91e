"""fp16/bf16: eager attention keeps scores and softmax in fp32; LayerNorm runs in fp32 under autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gptcore.modeling.core import eager_attention
from tests.oracle import gpt2_and_twin, random_gptcore


def test_eager_attention_survives_scores_beyond_the_fp16_range() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 8, dtype=torch.float16) * s for s in (150, 150, 1))
    assert torch.isinf(q @ k.transpose(-1, -2)).any(), "the test needs q.k beyond fp16's range"
    module = nn.Module().eval()
    out, weights = eager_attention(module, q, k, v, None)
    reference, _ = eager_attention(module, q.float(), k.float(), v.float(), None)  # the same inputs, in fp32
    assert out.dtype == torch.float16 and torch.isfinite(out).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(out.float(), reference, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_tracks_gpt2_in_fp32(tmp_path, dtype: torch.dtype) -> None:
    ref, model = gpt2_and_twin(tmp_path, attn_implementation="eager")
    ids = torch.randint(0, ref.config.vocab_size, (2, 16))
    with torch.no_grad():
        reference = ref(ids).logits
        half = model.to(dtype)(ids).logits
    assert half.dtype == dtype and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), reference, atol=0.1, rtol=0.05)


def test_layer_norm_and_loss_stay_fp32_under_bf16_autocast() -> None:
    model = random_gptcore()
    seen = {}
    model.transformer.ln_f.register_forward_hook(lambda m, args, out: seen.update(ln_f=out.dtype))  # returns None
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    assert seen["ln_f"] == torch.float32
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
