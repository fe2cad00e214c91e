"""int8 weight-only decoding through torchao (an optional dependency: the tests skip without it): transformers'
`TorchAoConfig` path and `quantize_int8`, which also quantises the LM head as an untied copy; the quantised model
runs every path of the wrapper (forward, loss, generate's decode-time head), stays close to the fp32 model, and the
benchmark counts its bytes as int8."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("torchao", reason="int8 decoding needs torchao (pip install 'gptcore[int8]')")

from benchmarking.bandwidth import decode_bytes_per_step  # noqa: E402
from benchmarking.benchmark import next_token_agreement, text_token_ids  # noqa: E402
from torchao.quantization import Int8WeightOnlyConfig  # noqa: E402
from transformers import TorchAoConfig  # noqa: E402

from gptcore.modeling import GPTCoreForCausalLM  # noqa: E402
from gptcore.modeling.quantization import quantize_int8  # noqa: E402
from tests.oracle import TINY_GPT2_CONFIGS, gpt2_config, save_random_gpt2  # noqa: E402

L, C, V = (TINY_GPT2_CONFIGS["base"][k] for k in ("n_layer", "n_embd", "vocab_size"))  # gpt2_config()'s


def is_int8(weight: torch.Tensor) -> bool:
    return type(weight) not in (torch.Tensor, nn.Parameter) and weight.qdata.dtype == torch.int8


@pytest.fixture
def checkpoint(tmp_path):
    save_random_gpt2(tmp_path, gpt2_config())
    return tmp_path


def decode(model: GPTCoreForCausalLM, prompt: torch.Tensor) -> torch.Tensor:
    return model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False, pad_token_id=0
    )


def test_from_pretrained_with_torchao_config_quantises_the_blocks_and_keeps_the_tied_head(checkpoint):
    model = GPTCoreForCausalLM.from_pretrained(checkpoint, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))
    fp32 = GPTCoreForCausalLM.from_pretrained(checkpoint)
    assert all(is_int8(model.transformer.h[i].mlp.c_fc.weight) for i in range(L))
    assert model.lm_head.weight is model.transformer.wte.weight and not is_int8(model.lm_head.weight)
    ids = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids).logits, fp32(ids).logits, atol=0.05, rtol=0
        )  # per-row int8: ~1% of a weight
    assert decode(model, ids[:1, :4]).shape == (1, 10)


def test_quantize_int8_also_quantises_the_head_as_an_untied_copy_and_every_path_runs(checkpoint):
    fp32 = GPTCoreForCausalLM.from_pretrained(checkpoint)
    model = quantize_int8(GPTCoreForCausalLM.from_pretrained(checkpoint))
    assert model.config.tie_word_embeddings is False and is_int8(model.lm_head.weight)
    assert type(model.transformer.wte.weight) is nn.Parameter  # the lookup table stays float
    torch.testing.assert_close(model.transformer.wte.weight, fp32.transformer.wte.weight)
    ids = torch.randint(0, V, (2, 12))
    with torch.no_grad():
        out, ref = model(ids, labels=ids), fp32(ids, labels=ids)
    torch.testing.assert_close(out.logits, ref.logits, atol=0.05, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=0.01, rtol=0)
    decoded = decode(model, ids[:1, :4])  # batch 1: the decode-time head path of generate()
    assert decoded.shape == (1, 10) and decode(model, ids[:, :4]).shape == (2, 10)


def test_int8_bytes_per_step_are_a_quarter_of_the_matrices_plus_scales(checkpoint):
    fp32 = GPTCoreForCausalLM.from_pretrained(checkpoint)
    blocks_only = quantize_int8(GPTCoreForCausalLM.from_pretrained(checkpoint), head=False)
    with_head = quantize_int8(GPTCoreForCausalLM.from_pretrained(checkpoint))
    # Per output row torchao stores an fp32 scale and an int8 zero point (0: the scheme is symmetric).
    matrices, rows = L * 12 * C * C, L * (3 * C + C + 4 * C + C)
    assert decode_bytes_per_step(blocks_only, 0) == decode_bytes_per_step(fp32, 0) - 4 * matrices + matrices + 5 * rows
    # The head: int8 plus row scales instead of fp32, and the embedding, now untied, is read one row at a time.
    assert (
        decode_bytes_per_step(with_head, 0) == decode_bytes_per_step(blocks_only, 0) - 4 * V * C + V * C + 5 * V + 4 * C
    )


def test_greedy_next_tokens_agree_with_fp32_over_a_text(checkpoint):
    fp32 = GPTCoreForCausalLM.from_pretrained(checkpoint).eval()
    model = quantize_int8(GPTCoreForCausalLM.from_pretrained(checkpoint)).eval()
    ids = text_token_ids(Path(__file__).parents[2] / "examples" / "data" / "corpus" / "asyoulik.txt", V, 512)
    assert ids.shape == (512,) and int(ids.max()) < V
    assert next_token_agreement(fp32, fp32, ids, block=64) == {"agreement": 1.0, "positions": 512, "block": 64}
    assert next_token_agreement(model, fp32, ids, block=64)["agreement"] >= 0.9
