"""gptcore reproduces transformers' GPT2LMHeadModel: logits, loss, every hidden state, attentions."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel

from gptcore.modeling import GPTCoreForCausalLM, GPTCoreModel
from tests.oracle import TINY_GPT2_CONFIGS, TOL, gpt2_config, save_random_gpt2


@pytest.mark.parametrize("name", sorted(TINY_GPT2_CONFIGS))
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_loss_hidden_states_match(tmp_path, name, attn):
    config = gpt2_config(**TINY_GPT2_CONFIGS[name])
    save_random_gpt2(tmp_path, config)
    ref = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation=attn).eval()
    ours = GPTCoreForCausalLM.from_pretrained(tmp_path, attn_implementation=attn).eval()
    assert ours.config._attn_implementation == attn
    ids = torch.randint(0, config.vocab_size, (3, config.n_positions))
    with torch.no_grad():
        a = ours(ids, labels=ids, output_hidden_states=True, output_attentions=attn == "eager")
        b = ref(ids, labels=ids, output_hidden_states=True, output_attentions=attn == "eager")
    torch.testing.assert_close(a.logits, b.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=TOL, rtol=0)
    assert len(a.hidden_states) == config.n_layer + 1
    for ours_h, ref_h in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(ours_h, ref_h, atol=TOL, rtol=0)
    if attn == "eager":
        for ours_w, ref_w in zip(a.attentions, b.attentions, strict=True):
            torch.testing.assert_close(ours_w, ref_w, atol=TOL, rtol=0)


def test_padded_batch_with_attention_mask_matches(gpt2_pair):
    ref, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, -3:] = 0  # right padding
    with torch.no_grad():
        a, b = ours(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=TOL, rtol=0)


def test_base_model_loads_gpt2_checkpoint_and_matches(tmp_path):
    ref = save_random_gpt2(tmp_path, gpt2_config())
    base = GPTCoreModel.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(
            base(ids).last_hidden_state, ref.transformer(ids).last_hidden_state, atol=TOL, rtol=0
        )


@pytest.mark.parametrize("layout", ["bin_with_buffers", "no_prefix_safetensors", "sharded"])
def test_gpt2_checkpoint_layouts(tmp_path, layout):
    """The layouts found on the Hub: old pickles with mask buffers, GPT2Model keys, sharded files."""
    config = gpt2_config()
    ref = save_random_gpt2(tmp_path / "src", config)
    sd = load_file(tmp_path / "src" / "model.safetensors")
    folder = tmp_path / layout
    folder.mkdir()
    config.save_pretrained(folder)
    if layout == "bin_with_buffers":
        sd = dict(sd, **{f"transformer.h.{i}.attn.bias": torch.ones(1, 1, 64, 64).tril() for i in range(2)})
        sd.update({f"transformer.h.{i}.attn.masked_bias": torch.tensor(-1e4) for i in range(2)})
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
        torch.save(sd, folder / "pytorch_model.bin")
    elif layout == "no_prefix_safetensors":
        from safetensors.torch import save_file

        save_file({k.removeprefix("transformer."): v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    else:
        ref.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "model.safetensors.index.json").exists()
    ours = GPTCoreForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=TOL, rtol=0)


def test_conv1d_weights_are_transposed_not_copied(tmp_path):
    ref = save_random_gpt2(tmp_path, gpt2_config())
    ours = GPTCoreForCausalLM.from_pretrained(tmp_path)
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        ref_w = ref.get_submodule(f"transformer.h.1.{name}").weight
        torch.testing.assert_close(ours.get_submodule(f"transformer.h.1.{name}").weight, ref_w.t(), atol=0, rtol=0)
