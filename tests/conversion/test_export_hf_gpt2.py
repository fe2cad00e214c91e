"""`export_hf_gpt2`: a gptcore model becomes a folder plain `GPT2LMHeadModel.from_pretrained` loads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2LMHeadModel

from gptcore.conversion import export_hf_gpt2
from tests.conversion.support import END_OF_TEXT, logits_of, token_ids
from tests.oracle import TOL, random_gptcore


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_word_embeddings": False}, {"activation_function": "gelu"}],
    ids=["gpt2", "untied-head", "exact-gelu"],
)
def test_export_loads_in_plain_gpt2_with_equal_logits(tmp_path, overrides):
    model = random_gptcore(seed=7, every_tensor=True, **END_OF_TEXT, **overrides)
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
