"""The transformers contract: Auto classes, save/reload, remote code, tied weights, classification."""

import json
import os
import textwrap

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2ForSequenceClassification,
)

from gptcore.modeling import (
    GPTCoreConfig,
    GPTCoreForCausalLM,
    GPTCoreForSequenceClassification,
    GPTCoreModel,
)
from tests.oracle import TOL, gpt2_and_twin, gptcore_config, random_gpt2, random_gptcore
from tests.processes import run_without_gptcore


def test_auto_classes_resolve(tmp_path):
    config = gptcore_config()
    assert isinstance(AutoConfig.for_model("gptcore"), GPTCoreConfig)
    assert type(AutoModel.from_config(config)) is GPTCoreModel
    assert type(AutoModelForCausalLM.from_config(config)) is GPTCoreForCausalLM
    assert type(AutoModelForSequenceClassification.from_config(config)) is GPTCoreForSequenceClassification
    GPTCoreForCausalLM(config).save_pretrained(tmp_path)
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path)) is GPTCoreForCausalLM  # no trust_remote_code needed
    assert type(AutoModel.from_pretrained(tmp_path)) is GPTCoreModel


def test_save_reload_identical_and_tied_weights_saved_once(tmp_path):
    model = random_gptcore()
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "transformer.wte.weight" in keys
    reloaded = GPTCoreForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.lm_head.weight.data_ptr() == reloaded.transformer.wte.weight.data_ptr()
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_untied_head_survives_save(tmp_path):
    model = random_gptcore(tie_word_embeddings=False)
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    model.save_pretrained(tmp_path)
    reloaded = GPTCoreForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.transformer.wte.weight)


def test_sharded_safetensors_round_trip(tmp_path):
    model = random_gptcore()
    model.save_pretrained(tmp_path, max_shard_size="30KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    reloaded = GPTCoreForCausalLM.from_pretrained(tmp_path)
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.slow  # a fresh interpreter
def test_trust_remote_code_load_without_gptcore(tmp_path):
    """The saved folder carries its own code: it loads in a process where gptcore cannot be imported, and computes
    transformers' GPT-2 logits there."""
    ref, model = gpt2_and_twin(tmp_path / "gpt2")
    model.save_pretrained(tmp_path / "ckpt")
    saved = set(os.listdir(tmp_path / "ckpt"))
    assert {"modeling_gptcore.py", "configuration_gptcore.py", "core.py"} <= saved
    auto_map = json.loads((tmp_path / "ckpt" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_gptcore.GPTCoreForCausalLM"
    ids = torch.randint(0, ref.config.vocab_size, (1, 6))
    with torch.no_grad():
        expected = ref(ids).logits
    torch.save({"ids": ids, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import sys
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert "gptcore" not in sys.modules
        io = torch.load({str(tmp_path / "io.pt")!r})
        with torch.no_grad():
            torch.testing.assert_close(model(io["ids"]).logits, io["expected"], atol={TOL}, rtol=0)
        print("REMOTE-OK")
    """)
    result = run_without_gptcore(script, tmp_path)
    assert "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def test_sequence_classification_pools_last_real_token(tmp_path):
    """Whatever the padding (right, left with positions, or none but pad tokens), the score is GPT-2's for the
    tokens alone."""
    random_gpt2(model_class=GPT2ForSequenceClassification, num_labels=3, pad_token_id=0).save_pretrained(tmp_path)
    ref = GPT2ForSequenceClassification.from_pretrained(tmp_path).eval()
    model = GPTCoreForSequenceClassification.from_pretrained(tmp_path).eval()
    tokens = torch.randint(1, model.config.vocab_size, (5,))
    pad = torch.zeros(3, dtype=torch.long)
    right = torch.cat([tokens, pad])[None]
    left = torch.cat([pad, tokens])[None]
    right_mask = torch.cat([torch.ones(5), torch.zeros(3)]).long()[None]
    left_mask = right_mask.flip(-1)
    with torch.no_grad():
        alone = ref(tokens[None]).logits
        by_right = model(right, attention_mask=right_mask).logits
        by_left = model(left, attention_mask=left_mask, position_ids=(left_mask.cumsum(-1) - 1).clamp(min=0)).logits
        by_pad_id = model(right).logits  # no mask: falls back to pad_token_id
    for other in (by_right, by_left, by_pad_id):
        torch.testing.assert_close(other, alone, atol=TOL, rtol=0)
    out = model(
        torch.cat([right, right]), attention_mask=torch.cat([right_mask, right_mask]), labels=torch.tensor([0, 2])
    )
    assert out.loss.ndim == 0 and out.logits.shape == (2, 3)
    with pytest.raises(ValueError, match="all padding"):
        model(right, attention_mask=torch.zeros_like(right))
