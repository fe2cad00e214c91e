"""Parity per source format: the converted gptcore model reproduces the source's logits to 1e-5 (fp32)."""

from __future__ import annotations

import functools
import json
import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from gptcore.conversion import FORMATS, convert, detect_format
from gptcore.conversion.hf_gpt2 import from_hf_gpt2
from gptcore.conversion.llms_from_scratch import BOOK_MODELS, config_from_book
from gptcore.conversion.llms_from_scratch import book_config as resolve_book_config
from gptcore.modeling import GPTCoreForCausalLM
from gptcore.modeling.gpt2_checkpoint import expected_shapes
from tests.conversion.support import (
    N_POS,
    OPENAI_TF_TINY,
    SOURCE_GPT2,
    Source,
    assert_parity,
    book_config,
    book_forward,
    book_source,
    book_state_dict,
    hf_gpt2_source,
    logits_of,
    nanogpt_checkpoint,
    nanogpt_forward,
    nanogpt_source,
    nanogpt_state_dict,
    token_ids,
)
from tests.oracle import TOL, random_gpt2

# --- hf-gpt2 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "pytorch_bin_legacy"])
def test_hf_gpt2_parity(tmp_path, layout):
    gpt2 = random_gpt2(**SOURCE_GPT2)
    src = tmp_path / "src"
    if layout == "pytorch_bin_legacy":
        # Old uploads: a pickle, keys without `transformer.`, the mask buffers, and a stored lm_head.
        gpt2.config.save_pretrained(src)
        state = {k.removeprefix("transformer."): v for k, v in gpt2.state_dict().items()}
        for i in range(gpt2.config.n_layer):
            state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, N_POS, N_POS))
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        torch.save(state, src / "pytorch_model.bin")
    else:
        gpt2.save_pretrained(src, max_shard_size="20KB" if layout == "sharded" else "5GB")
    if layout == "sharded":
        assert (src / "model.safetensors.index.json").is_file()
    assert detect_format(str(src)) == "hf-gpt2"
    model = convert(src)
    assert isinstance(model, GPTCoreForCausalLM)
    ids = token_ids()
    assert_parity(model, logits_of(gpt2, ids), ids)


# config.json of the published checkpoints (openai-community/gpt2, -medium, -large, -xl, distilbert/distilgpt2)
_GPT2_COMMON = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "vocab_size": 50257,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
}
PUBLISHED = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16, n_special=0, predict_special_tokens=True),
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25, output_past=True),
    "distilgpt2": dict(
        n_embd=768, n_layer=6, n_head=12, _num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}
    ),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_gpt2_configs_map(name):
    """Every published size maps to the right gptcore config, and GPT-2's tensors fit it (meta device: no memory)."""
    published = {**_GPT2_COMMON, **PUBLISHED[name]}
    with torch.device("meta"):
        gpt2 = GPT2LMHeadModel(GPT2Config.from_dict(published))
    state = {k: v for k, v in gpt2.state_dict().items() if k != "lm_head.weight"}
    config, weights = from_hf_gpt2(published, state, name)
    for key in (
        "n_embd",
        "n_layer",
        "n_head",
        "vocab_size",
        "n_positions",
        "layer_norm_epsilon",
        "activation_function",
    ):
        assert getattr(config, key) == published[key], key
    assert config.tie_word_embeddings and config.model_type == "gptcore"
    c = published["n_embd"]
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (3 * c, c)  # Conv1D (in, out) -> Linear (out, in)
    assert weights["transformer.h.0.mlp.c_proj.weight"].shape == (c, 4 * c)
    assert len(weights) == 4 + 12 * published["n_layer"]


def test_round_trip_hf_gpt2_is_bit_identical(tmp_path):
    gpt2 = random_gpt2(3, **SOURCE_GPT2)
    gpt2.save_pretrained(tmp_path / "hf")
    convert(tmp_path / "hf", tmp_path / "core")
    convert(tmp_path / "core", tmp_path / "hf2", to="hf-gpt2")
    before, after = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf2" / "model.safetensors")
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype == torch.float32
        assert torch.equal(before[name], after[name]), name
    config = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and "auto_map" not in config
    assert not list((tmp_path / "hf2").glob("*.py"))  # no remote code travels with a plain GPT-2 folder


# --- openai-tf ------------------------------------------------------------------------------------


def gpt2_from_openai_npz() -> GPT2LMHeadModel:
    """GPT2LMHeadModel holding the TF variables as TensorFlow saved them (expected.npz), Conv1D layout."""
    hparams = json.loads((OPENAI_TF_TINY / "hparams.json").read_text())
    values = np.load(OPENAI_TF_TINY / "expected.npz")
    config = GPT2Config(
        vocab_size=hparams["n_vocab"],
        n_positions=hparams["n_ctx"],
        n_embd=hparams["n_embd"],
        n_layer=hparams["n_layer"],
        n_head=hparams["n_head"],
        bos_token_id=None,  # the tiny vocabulary has no <|endoftext|>
        eos_token_id=None,
    )
    gpt2 = GPT2LMHeadModel(config).eval()
    names = {"g": "weight", "b": "bias", "w": "weight"}
    state = {}
    for tf_name in values.files:
        parts = tf_name.removeprefix("model/").split("/")
        tensor = torch.from_numpy(values[tf_name])
        if parts[0] in ("wte", "wpe"):
            state[f"transformer.{parts[0]}.weight"] = tensor
            continue
        if parts[0].startswith("h"):
            parts[0] = f"h.{parts[0][1:]}"
        state["transformer." + ".".join(parts[:-1] + [names[parts[-1]]])] = (
            tensor.squeeze(0) if parts[-1] == "w" else tensor
        )
    gpt2.load_state_dict(state, strict=False)
    gpt2.tie_weights()
    return gpt2


def test_openai_tf_parity_and_tokenizer(tmp_path, caplog):
    gpt2 = gpt2_from_openai_npz()
    assert detect_format(str(OPENAI_TF_TINY)) == "openai-tf"
    model = convert(OPENAI_TF_TINY, tmp_path / "out")
    ids = token_ids(vocab_size=64)
    assert_parity(model, logits_of(gpt2, ids), ids)
    assert "the model has 64 tokens but GPT-2's tokenizer" in caplog.text  # the fixture is tiny
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")  # GPT-2's, written for an OpenAI checkpoint
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert "license: mit" in (tmp_path / "out" / "README.md").read_text()


# --- nanogpt ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("compiled", [False, True])
def test_nanogpt_parity(tmp_path, bias, compiled):
    sd = nanogpt_state_dict(bias=bias, mask_buffers=not compiled)
    ckpt = nanogpt_checkpoint({f"_orig_mod.{k}" if compiled else k: v for k, v in sd.items()}, bias=bias)
    (tmp_path / "out").mkdir()
    torch.save(ckpt, tmp_path / "out" / "ckpt.pt")
    assert detect_format(str(tmp_path / "out")) == detect_format(str(tmp_path / "out" / "ckpt.pt")) == "nanogpt"
    model = convert(tmp_path / "out")
    assert model.config.activation_function == "gelu"  # nanoGPT's exact GELU, recorded
    assert model.config.tie_word_embeddings
    if not bias:
        assert torch.count_nonzero(model.transformer.h[0].attn.c_attn.bias) == 0
    ids = token_ids()
    assert_parity(model, nanogpt_forward(sd, ids), ids)


def test_nanogpt_exact_gelu_matters(tmp_path):
    """Guards the test above: with GPT-2's tanh GELU the same weights miss nanoGPT's logits by well over 1e-5."""
    sd = nanogpt_state_dict()
    torch.save(nanogpt_checkpoint(sd), tmp_path / "ckpt.pt")
    model = convert(tmp_path / "ckpt.pt")
    for block in model.transformer.h:
        block.mlp.act = functools.partial(torch.nn.functional.gelu, approximate="tanh")
    ids = token_ids()
    assert (logits_of(model, ids) - nanogpt_forward(sd, ids)).abs().max() > 10 * TOL


# --- llms-from-scratch --------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "qkv_bias"), [("pth", True), ("pth", False), ("safetensors", False)])
def test_llms_from_scratch_parity(tmp_path, suffix, qkv_bias):
    sd = book_state_dict(qkv_bias=qkv_bias)
    weights = tmp_path / f"model.{suffix}"
    if suffix == "safetensors":
        save_file(sd, weights)
    else:
        torch.save(sd, weights)
    (tmp_path / "cfg.json").write_text(json.dumps(book_config(qkv_bias)))
    assert detect_format(str(weights)) == "llms-from-scratch"
    model = convert(weights, model_config=tmp_path / "cfg.json")
    assert not model.config.tie_word_embeddings
    assert torch.equal(model.lm_head.weight, sd["out_head.weight"])  # the untied head is preserved
    ids = token_ids()
    assert_parity(model, book_forward(sd, ids), ids)


@pytest.mark.parametrize("name", list(BOOK_MODELS))
def test_book_model_names_have_the_size_they_name(name):
    """Each of the book's model names gives a config with the parameter count in the name, counted as GPT-2
    counts it: the output head (untied in the book's model) once, with the token embedding."""
    config = config_from_book(resolve_book_config(name, "unused", {}))
    parameters = sum(math.prod(shape) for shape in expected_shapes(config, include_lm_head=False).values())
    millions = int(re.search(r"\((\d+)M\)", name).group(1))
    assert abs(parameters / 1e6 - millions) <= 0.01 * millions, parameters


def test_llms_from_scratch_checkpoint_dict_with_config_beside(tmp_path):
    # The book's "model_and_optimizer.pth", with config.json beside it (found without --model-config).
    sd = book_state_dict()
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {}}, tmp_path / "model_and_optimizer.pth")
    (tmp_path / "config.json").write_text(json.dumps(book_config()))
    assert detect_format(str(tmp_path)) == "llms-from-scratch"
    ids = token_ids()
    assert_parity(convert(tmp_path), book_forward(sd, ids), ids)


# --- gptcore ------------------------------------------------------------------------------------


def test_gptcore_folder_to_hf_gpt2_with_dtype_and_shards(tmp_path):
    gpt2 = random_gpt2(1, **SOURCE_GPT2)
    gpt2.save_pretrained(tmp_path / "hf")
    # sharded gptcore output ...
    convert(tmp_path / "hf", tmp_path / "core", max_shard_size="20KB")
    shards = sorted(p.name for p in (tmp_path / "core").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "core" / "model.safetensors.index.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "core")
    ids = token_ids()
    assert_parity(reloaded, logits_of(gpt2, ids), ids)
    # ... read back as a (sharded) gptcore source, exported as fp16 GPT-2
    assert detect_format(str(tmp_path / "core")) == "gptcore"
    convert(tmp_path / "core", tmp_path / "hf16", to="hf-gpt2", dtype="float16")
    half = GPT2LMHeadModel.from_pretrained(tmp_path / "hf16")
    assert (
        half.dtype == torch.float16
        and json.loads((tmp_path / "hf16" / "config.json").read_text())["dtype"] == "float16"
    )
    assert torch.allclose(logits_of(half, ids), logits_of(gpt2, ids), atol=5e-2)
    assert "dtype `float16`" in (tmp_path / "hf16" / "README.md").read_text()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_conversion_reloads_with_that_dtype(tmp_path, dtype):
    gpt2 = random_gpt2(2, **SOURCE_GPT2)
    gpt2.save_pretrained(tmp_path / "hf")
    name = str(dtype).removeprefix("torch.")
    convert(tmp_path / "hf", tmp_path / "out", dtype=name)
    assert all(t.dtype == dtype for t in load_file(tmp_path / "out" / "model.safetensors").values())
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.dtype == dtype and model.config.dtype == dtype
    ids = token_ids()
    assert torch.allclose(logits_of(model, ids), logits_of(gpt2, ids), atol=0.1)


# --- every format -------------------------------------------------------------------------------


def openai_tf_source(folder) -> Source:
    return Source(OPENAI_TF_TINY, lambda ids: logits_of(gpt2_from_openai_npz(), ids), vocab_size=64)


def gptcore_source(folder) -> Source:
    hf = hf_gpt2_source(folder / "hf")
    convert(hf.path, folder / "core")
    return Source(folder / "core", hf.reference)


# A source of each format, written as that format's own tools write it.
SOURCES = {
    "hf-gpt2": hf_gpt2_source,
    "openai-tf": openai_tf_source,
    "nanogpt": nanogpt_source,
    "llms-from-scratch": book_source,
    "gptcore": gptcore_source,
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_is_detected_and_converted(tmp_path, name):
    """Fails for a format registered without a source here: every format is recognised and reproduces its logits."""
    assert name in SOURCES, f"format {name!r} has no test source; add one to SOURCES"
    source = SOURCES[name](tmp_path / "src")
    assert detect_format(str(source.path)) == name
    ids = token_ids(vocab_size=source.vocab_size)
    assert_parity(convert(source.path), source.reference(ids), ids)


def test_hub_repo_ids_are_downloaded_through_transformers(tmp_path, monkeypatch):
    """SRC that is not a local path goes through transformers' cached_file (stood in for here: no network)."""
    import huggingface_hub
    import transformers.utils

    gpt2 = random_gpt2(4, **SOURCE_GPT2)
    gpt2.save_pretrained(tmp_path / "hub" / "someone" / "tiny-gpt2")
    requested = []

    def fake_cached_file(repo_id, filename, _raise_exceptions_for_missing_entries=True, **kwargs):
        requested.append((repo_id, filename, kwargs.get("revision")))
        if not (tmp_path / "hub" / repo_id).is_dir():
            raise OSError(f"{repo_id} is not a local folder and not a valid model identifier on the Hub")
        path = tmp_path / "hub" / repo_id / filename
        if path.is_file():
            return str(path)
        if _raise_exceptions_for_missing_entries:
            raise OSError(f"{repo_id} does not appear to have a file named {filename}")
        return None

    def fake_list_repo_files(repo_id, revision=None, token=None):
        if not (tmp_path / "hub" / repo_id).is_dir():
            raise OSError(
                f"404 Client Error. Repository Not Found for url: https://huggingface.co/api/models/{repo_id}"
            )
        return sorted(p.name for p in (tmp_path / "hub" / repo_id).iterdir())

    monkeypatch.setattr(transformers.utils, "cached_file", fake_cached_file)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the tests' conftest sets it
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake_list_repo_files)
    monkeypatch.chdir(tmp_path)  # so that "someone/tiny-gpt2" is not also a local path
    model = convert("someone/tiny-gpt2", revision="v1")
    assert ("someone/tiny-gpt2", "config.json", "v1") in requested
    ids = token_ids()
    assert_parity(model, logits_of(gpt2, ids), ids)
    with pytest.raises(
        FileNotFoundError, match="(?s)could not list the files of Hub repo 'someone/missing'.*Not Found"
    ):
        convert("someone/missing")
