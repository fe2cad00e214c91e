"""`export_hf_gpt2`: a gptcore model becomes a folder plain `GPT2LMHeadModel.from_pretrained` loads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2LMHeadModel

from gptcore.conversion import export_hf_gpt2
from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from tests.conversion.support import N_EMBD, N_HEAD, N_LAYER, N_POS, TOL, VOCAB, logits_of, randomize, token_ids


def tiny_gptcore(**overrides) -> GPTCoreForCausalLM:
    config = GPTCoreConfig(
        vocab_size=VOCAB,
        n_positions=N_POS,
        n_embd=N_EMBD,
        n_layer=N_LAYER,
        n_head=N_HEAD,
        bos_token_id=VOCAB - 1,
        eos_token_id=VOCAB - 1,
        **overrides,
    )
    return randomize(GPTCoreForCausalLM(config), seed=7)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_word_embeddings": False}, {"activation_function": "gelu"}],
    ids=["gpt2", "untied-head", "exact-gelu"],
)
def test_export_loads_in_plain_gpt2_with_equal_logits(tmp_path, overrides):
    model = tiny_gptcore(**overrides)
    export_hf_gpt2(model, tmp_path / "gpt2")

    config = json.loads((tmp_path / "gpt2" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert "auto_map" not in config and not list((tmp_path / "gpt2").glob("*.py"))
    gpt2, info = GPT2LMHeadModel.from_pretrained(tmp_path / "gpt2", output_loading_info=True)
    assert all(not keys for keys in info.values()), info
    assert gpt2.config.tie_word_embeddings == model.config.tie_word_embeddings

    ids = token_ids()
    diff = (logits_of(gpt2, ids) - logits_of(model, ids)).abs().max().item()
    assert diff <= TOL, diff


def test_export_refuses_other_models(tmp_path):
    with pytest.raises(ValueError, match="GPTCoreForCausalLM"):
        export_hf_gpt2(torch.nn.Linear(2, 2), tmp_path / "out")
