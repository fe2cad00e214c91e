"""Loading refuses broken, foreign and unsafe checkpoints with a message naming the problem."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig

from gptcore.modeling import GPTCoreForCausalLM, GPTCoreForSequenceClassification, GPTCoreModel
from tests.oracle import TINY_GPT2_CONFIGS, gpt2_config, random_gptcore, save_random_gpt2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    random_gptcore(**TINY_GPT2_CONFIGS["shallow"]).save_pretrained(folder)  # one layer, n_embd 16
    return folder


def edited_copy(saved, tmp_path, edit):
    shutil.copytree(saved, tmp_path, dirs_exist_ok=True)
    tensors = load_file(saved / "model.safetensors")
    edit(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("transformer.h.0.mlp.c_fc.bias"), r"missing tensors \['transformer.h.0.mlp.c_fc.bias'\]"),
        (
            lambda sd: sd.update({"transformer.h.1.ln_1.weight": torch.ones(16)}),
            r"does not have \['transformer.h.1.ln_1.weight'\]",
        ),
        (
            lambda sd: sd.update({"transformer.wpe.weight": torch.zeros(8, 16)}),
            r"shape differs .*transformer.wpe.weight",
        ),
    ],
)
def test_checkpoint_that_does_not_match_its_config(saved, tmp_path, edit, message):
    folder = edited_copy(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        GPTCoreForCausalLM.from_pretrained(folder)


def test_new_heads_are_allowed(saved):
    """Starting a classifier (or a bare model) from a language model is fine-tuning, not an error."""
    classifier = GPTCoreForSequenceClassification.from_pretrained(saved, num_labels=2)
    assert classifier.score.weight.shape == (2, 16)
    base, info = GPTCoreModel.from_pretrained(saved, output_loading_info=True)
    assert not info["missing_keys"]


def test_truncated_safetensors(saved, tmp_path):
    shutil.copytree(saved, tmp_path, dirs_exist_ok=True)
    data = (saved / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"could not read the weights of {tmp_path}.*truncated or corrupt"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch gptcore-was-pwned",))


def test_pickle_carrying_code_is_refused_and_never_run(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    tensors = dict(load_file(saved / "model.safetensors"), payload=_RunsCode())
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"refused to load .*GLOBAL posix.system.*never executes"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)
    assert not (tmp_path / "gptcore-was-pwned").exists()


def test_config_of_another_architecture(tmp_path):
    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match="holds a 'llama' model; gptcore reads 'gptcore' and 'gpt2'"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)


def test_missing_folder_and_missing_weights(saved, tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        GPTCoreForCausalLM.from_pretrained(str(tmp_path / "no-such-model"))
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    with pytest.raises(OSError, match="model.safetensors"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)


def test_gpt2_checkpoint_with_unsupported_options(tmp_path):
    save_random_gpt2(tmp_path, gpt2_config(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)
