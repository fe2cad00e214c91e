"""Every way a conversion can fail names the file/tensor and what was expected, and leaves DST untouched."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptcore.conversion import convert
from tests.conversion.support import (
    OPENAI_TF_TINY,
    SOURCE_GPT2,
    book_config,
    book_state_dict,
    nanogpt_checkpoint,
    nanogpt_state_dict,
)
from tests.oracle import random_gpt2


@pytest.fixture
def hf_folder(tmp_path):
    random_gpt2(**SOURCE_GPT2).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def edit_weights(folder, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(path)
    edit(state)
    save_file(state, path, metadata={"format": "pt"})


def assert_nothing_written(parent) -> None:
    assert not (parent / "dst").exists()
    assert not [p for p in os.listdir(parent) if p.endswith((".partial", ".old"))]


# --- missing files, unknown layouts -----------------------------------------------------------------


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        convert(tmp_path / "does-not-exist", tmp_path / "dst")
    assert_nothing_written(tmp_path)


def test_missing_weights(hf_folder, tmp_path):
    (hf_folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        convert(hf_folder, tmp_path / "dst")
    assert_nothing_written(tmp_path)


def test_missing_shard(tmp_path):
    random_gpt2(**SOURCE_GPT2).save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    shard = sorted((tmp_path / "hf").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        convert(tmp_path / "hf", tmp_path / "dst")


@pytest.mark.parametrize("missing", ["hparams.json", "model.ckpt.data-00000-of-00001"])
def test_missing_openai_file(tmp_path, missing):
    shutil.copytree(OPENAI_TF_TINY, tmp_path / "tf")
    (tmp_path / "tf" / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        convert(tmp_path / "tf", tmp_path / "dst", from_format="openai-tf")
    assert_nothing_written(tmp_path)


def test_unknown_layout(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(
        ValueError, match="(?s)cannot tell the format.*hf-gpt2.*openai-tf.*nanogpt.*llms-from-scratch.*gptcore"
    ):
        convert(tmp_path / "src", tmp_path / "dst")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*other\.pt"):
        convert(tmp_path / "other.pt")
    (tmp_path / "src" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        convert(tmp_path / "src")


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"from_format": "keras"},
            ValueError,
            "unknown source format 'keras'.*hf-gpt2, openai-tf, nanogpt, llms-from-scratch, gptcore",
        ),
        ({"to": "onnx"}, ValueError, "unknown target format 'onnx'"),
        ({"dtype": "float8"}, ValueError, "unsupported dtype 'float8'"),
        ({"from_format": "openai-tf"}, FileNotFoundError, "hparams.json"),
        ({"from_format": "gptcore"}, ValueError, "model_type 'gpt2', expected 'gptcore'"),
        ({"model_config": "gpt2-small (124M)"}, ValueError, "only applies to llms-from-scratch"),
    ],
)
def test_bad_options(hf_folder, options, error, match):
    with pytest.raises(error, match=match):
        convert(hf_folder, **options)


# --- tensors: missing, left over, misshapen; configs that disagree with the weights --------------------


def test_missing_tensor_is_named(hf_folder, tmp_path):
    edit_weights(hf_folder, lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(ValueError, match=r"missing 1 tensor.*transformer\.h\.1\.mlp\.c_fc\.bias"):
        convert(hf_folder, tmp_path / "dst")
    assert_nothing_written(tmp_path)


def test_leftover_tensor_is_named(hf_folder):
    edit_weights(hf_folder, lambda s: s.update({"transformer.h.0.attn.rotary.inv_freq": torch.ones(4)}))
    with pytest.raises(ValueError, match=r"does not know.*transformer\.h\.0\.attn\.rotary\.inv_freq"):
        convert(hf_folder)


def test_shape_mismatch_names_tensor_and_shapes(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    (hf_folder / "config.json").write_text(json.dumps({**config, "vocab_size": 100}))
    with pytest.raises(ValueError, match=r"transformer\.wte\.weight.*\(101, 48\).*expects \(100, 48\)"):
        convert(hf_folder)


def test_config_layer_count_disagrees_with_weights(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    (hf_folder / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(ValueError, match=r"n_layer=3 but the weights hold layers 0\.\.1"):
        convert(hf_folder)


def test_openai_hparams_disagree_with_weights(tmp_path):
    shutil.copytree(OPENAI_TF_TINY, tmp_path / "tf")
    hparams = json.loads((tmp_path / "tf" / "hparams.json").read_text())
    (tmp_path / "tf" / "hparams.json").write_text(json.dumps({**hparams, "n_ctx": 64}))
    with pytest.raises(ValueError, match=r"transformer\.wpe\.weight.*\(32, 16\).*\(64, 16\)"):
        convert(tmp_path / "tf", tmp_path / "dst")
    assert_nothing_written(tmp_path)


def test_nanogpt_model_args_disagree_with_weights(tmp_path):
    ckpt = nanogpt_checkpoint(nanogpt_state_dict(bias=True), bias=False)  # says bias=False, has biases
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=r"does not know.*\.bias"):
        convert(tmp_path / "ckpt.pt")
    ckpt["model_args"] = {**ckpt["model_args"], "bias": True, "n_kv_head": 2}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=r"not understood \['n_kv_head'\]"):
        convert(tmp_path / "ckpt.pt")


def test_book_config_required_and_checked(tmp_path):
    torch.save(book_state_dict(), tmp_path / "model.pth")
    with pytest.raises(ValueError, match=r"gpt2-small \(124M\)"):
        convert(tmp_path / "model.pth")
    with pytest.raises(ValueError, match=r"n_layer=12 but the weights hold layers 0\.\.1"):
        convert(tmp_path / "model.pth", model_config="gpt2-small (124M)")
    with pytest.raises(ValueError, match=r"transformer\.wte\.weight.*\(101, 48\).*expects \(101, 64\)"):
        convert(tmp_path / "model.pth", model_config={**book_config(), "emb_dim": 64})
    with pytest.raises(ValueError, match="exactly the keys"):
        convert(tmp_path / "model.pth", model_config={**book_config(), "rope_base": 10000})
    torch.save(book_state_dict(qkv_bias=False), tmp_path / "no_qkv_bias.pth")
    with pytest.raises(ValueError, match=r"missing 6 tensor.*W_query\.bias"):
        convert(tmp_path / "no_qkv_bias.pth", model_config=book_config(qkv_bias=True))


# --- damaged and unsafe files -------------------------------------------------------------------------


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_tf_data_file(tmp_path):
    shutil.copytree(OPENAI_TF_TINY, tmp_path / "tf")
    truncate(tmp_path / "tf" / "model.ckpt.data-00000-of-00001")
    with pytest.raises(ValueError, match=r"model\.ckpt\.data-00000-of-00001 is truncated"):
        convert(tmp_path / "tf", tmp_path / "dst")
    assert_nothing_written(tmp_path)


def test_truncated_safetensors(hf_folder, tmp_path):
    truncate(hf_folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"could not read .*model\.safetensors.*truncated or corrupt"):
        convert(hf_folder, tmp_path / "dst")
    assert_nothing_written(tmp_path)


def test_truncated_pickle(tmp_path):
    torch.save(nanogpt_checkpoint(nanogpt_state_dict()), tmp_path / "ckpt.pt")
    truncate(tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=r"ckpt\.pt.*truncated or corrupt"):
        convert(tmp_path / "ckpt.pt", tmp_path / "dst", from_format="nanogpt")
    assert_nothing_written(tmp_path)


@dataclass
class TrainingRun:  # any class of the training script: unpickling it would import and run code
    name: str


def test_pickled_objects_are_refused_not_run(tmp_path):
    ckpt = nanogpt_checkpoint(nanogpt_state_dict())
    ckpt["config"] = TrainingRun("shakespeare")
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=r"ckpt\.pt.*TrainingRun.*refused"):
        convert(tmp_path / "ckpt.pt", from_format="nanogpt")


# --- the destination --------------------------------------------------------------------------------


def test_non_empty_destination_needs_overwrite(hf_folder, tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty.*overwrite"):
        convert(hf_folder, dst)
    assert (dst / "keep.txt").read_text() == "mine"
    convert(hf_folder, dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").is_file()
    assert not [p for p in os.listdir(tmp_path) if p.endswith((".partial", ".old"))]


def test_failed_overwrite_keeps_the_old_destination(hf_folder, tmp_path):
    dst = tmp_path / "dst"
    convert(hf_folder, dst)
    before = sorted(os.listdir(dst))
    edit_weights(hf_folder, lambda s: s.pop("transformer.ln_f.bias"))
    with pytest.raises(ValueError, match="transformer.ln_f.bias"):
        convert(hf_folder, dst, overwrite=True)
    assert sorted(os.listdir(dst)) == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith((".partial", ".old"))]


def test_empty_destination_is_used_and_source_is_not_destination(hf_folder, tmp_path):
    (tmp_path / "dst").mkdir()
    convert(hf_folder, tmp_path / "dst")
    assert (tmp_path / "dst" / "config.json").is_file()
    with pytest.raises(ValueError, match="is the source itself"):
        convert(hf_folder, hf_folder, overwrite=True)
