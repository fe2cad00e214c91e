"""GGUF export (`--to gguf`) for llama.cpp, checked with the gguf package's reader against transformers' GPT-2 (the
oracle, whose Conv1D matrices are stored transposed), plus what llama.cpp's own converter needs from the GPT-2 folder
`export_hf_gpt2` writes. With llama-cpp-python installed, a slow test runs the file in llama.cpp."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

gguf = pytest.importorskip("gguf", reason="GGUF export needs the gguf package (pip install 'gptcore[deploy]')")

from gptcore.conversion import export_hf_gpt2  # noqa: E402
from gptcore.conversion.cli import main  # noqa: E402
from gptcore.conversion.gguf_export import export_gguf  # noqa: E402
from gptcore.modeling import GPTCoreForCausalLM  # noqa: E402
from gptcore.tokenization import gpt2_tokenizer, train_tokenizer  # noqa: E402
from tests.oracle import GPT2_VOCAB_SIZE, gptcore_twin, random_gpt2  # noqa: E402

VOCAB = 320  # most tests: a small trained tokenizer (< 290 tokens) and a vocabulary padded past it; GGUFReader takes
# seconds to parse GPT-2's 50,257 tokens and 50,000 merges, so only the tokenizer test and llama.cpp's use them
# What llama.cpp's GPT-2 loader (src/models/gpt2.cpp) asks for, per block and for the whole model.
BLOCK_TENSORS = [
    "attn_norm.weight",
    "attn_norm.bias",
    "attn_qkv.weight",
    "attn_qkv.bias",
    "attn_output.weight",
    "attn_output.bias",
    "ffn_norm.weight",
    "ffn_norm.bias",
    "ffn_up.weight",
    "ffn_up.bias",
    "ffn_down.weight",
    "ffn_down.bias",
]
MODEL_TENSORS = ["token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"]
# GGUF module name -> transformers GPT-2's; the four Conv1D modules store their matrices as (in, out).
HF_NAMES = {
    "token_embd": "transformer.wte",
    "position_embd": "transformer.wpe",
    "output_norm": "transformer.ln_f",
    "output": "lm_head",
    "attn_norm": "ln_1",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_norm": "ln_2",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
CONV1D = ("attn_qkv", "attn_output", "ffn_up", "ffn_down")


def oracle_tensor(gpt2_state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The transformers GPT-2 tensor the GGUF tensor `name` must equal, transposed where GPT-2 uses Conv1D."""
    if name.startswith("blk."):
        _, i, module, kind = name.split(".")
        tensor = gpt2_state[f"transformer.h.{i}.{HF_NAMES[module]}.{kind}"]
    else:
        module, kind = name.split(".")
        tensor = gpt2_state[f"{HF_NAMES[module]}.{kind}"]
    return tensor.t() if module in CONV1D and kind == "weight" else tensor


@functools.cache
def small_tokenizer():
    """A byte-level BPE of < 290 tokens, trained as gptcore users train theirs; <|endoftext|> is id 0."""
    return train_tokenizer(iter(["the quick brown fox jumps over the lazy dog. " * 50]), 290)


def oracle_and_gptcore(tmp_path, **overrides) -> tuple[GPT2LMHeadModel, GPTCoreForCausalLM]:
    """A random transformers GPT-2 (every tensor random, LayerNorms and biases too) and gptcore loaded from it."""
    fields = dict(vocab_size=VOCAB, n_embd=32, bos_token_id=0, eos_token_id=0)
    gpt2 = random_gpt2(5, every_tensor=True, **{**fields, **overrides})
    gpt2.save_pretrained(tmp_path / "gpt2")
    return gpt2, gptcore_twin(tmp_path / "gpt2")


def read(path) -> tuple[dict[str, np.ndarray], dict[str, object], dict[str, str]]:
    """Tensors (as numpy arrays in GGUF's row-major order), metadata values and tensor types of a GGUF file."""
    reader = gguf.GGUFReader(path)
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    return tensors, fields, types


@pytest.mark.parametrize(
    "overrides", [{}, {"tie_word_embeddings": False, "n_inner": 48}], ids=["gpt2", "untied-head-n_inner"]
)
def test_tensors_and_metadata_match_the_gpt2_oracle(tmp_path, overrides):
    gpt2, model = oracle_and_gptcore(tmp_path, **overrides)
    export_gguf(model, tmp_path / "model.gguf", small_tokenizer())
    tensors, fields, types = read(tmp_path / "model.gguf")

    tied = gpt2.config.tie_word_embeddings
    expected = MODEL_TENSORS + [f"blk.{i}.{n}" for i in range(2) for n in BLOCK_TENSORS]
    expected += [] if tied else ["output.weight"]
    assert sorted(tensors) == sorted(expected)  # a tied head is token_embd, which llama.cpp reuses
    oracle = gpt2.state_dict()
    for name, array in tensors.items():
        expected_tensor = oracle_tensor(oracle, name)
        assert array.shape == tuple(expected_tensor.shape), name
        np.testing.assert_array_equal(array, expected_tensor.numpy(), err_msg=name)
    assert set(types.values()) == {"F32"}

    n_ff = overrides.get("n_inner") or 4 * 32
    assert tensors["blk.0.ffn_up.weight"].shape == (n_ff, 32)  # ggml's {n_embd, n_ff}
    hyper_parameters = {k: v for k, v in fields.items() if not k.startswith("tokenizer.")}
    assert hyper_parameters == {
        "general.architecture": "gpt2",
        "gpt2.context_length": gpt2.config.n_positions,
        "gpt2.embedding_length": 32,
        "gpt2.feed_forward_length": n_ff,
        "gpt2.block_count": 2,
        "gpt2.attention.head_count": 4,
        "gpt2.attention.layer_norm_epsilon": pytest.approx(1e-5),
        "general.file_type": gguf.LlamaFileType.ALL_F32,
    }


def test_gpt2_tokenizer_metadata(tmp_path):
    _, model = oracle_and_gptcore(tmp_path, vocab_size=GPT2_VOCAB_SIZE, bos_token_id=50256, eos_token_id=50256)
    tokenizer = gpt2_tokenizer()
    export_gguf(model, tmp_path / "model.gguf", tokenizer)
    _, fields, _ = read(tmp_path / "model.gguf")

    vocab = tokenizer.get_vocab()
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == GPT2_VOCAB_SIZE and all(tokens[i] == t for t, i in vocab.items())
    assert tokens[:3] == ["!", '"', "#"] and tokens[220] == "Ġ"  # vocab.json's byte-level spelling
    types = fields["tokenizer.ggml.token_type"]
    assert types[50256] == gguf.TokenType.CONTROL and set(types[:50256]) == {gguf.TokenType.NORMAL}
    merges = fields["tokenizer.ggml.merges"]
    assert len(merges) == 50000 and merges[0] == "Ġ t"
    assert fields["tokenizer.ggml.bos_token_id"] == fields["tokenizer.ggml.eos_token_id"] == 50256
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template


def test_trained_tokenizer_smaller_than_the_model_vocabulary(tmp_path):
    """Rows past the tokenizer (a vocabulary padded to a round size) get placeholder tokens, so the token list is
    as long as token_embd, as llama.cpp requires."""
    _, model = oracle_and_gptcore(tmp_path)
    export_gguf(model, tmp_path / "model.gguf", small_tokenizer())
    tensors, fields, _ = read(tmp_path / "model.gguf")
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == tensors["token_embd.weight"].shape[0] == VOCAB
    assert tokens[0] == "<|endoftext|>" and types[0] == gguf.TokenType.CONTROL
    assert tokens[1:257] == sorted(tokens[1:257], key=small_tokenizer().get_vocab().get)  # the 256 bytes
    n = len(small_tokenizer())
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, VOCAB)] and set(types[n:]) == {gguf.TokenType.UNUSED}
    assert fields["tokenizer.ggml.bos_token_id"] == 0


def test_float16_keeps_norms_biases_and_positions_in_float32(tmp_path):
    _, model = oracle_and_gptcore(tmp_path)
    export_gguf(model.half(), tmp_path / "model.gguf", small_tokenizer())
    tensors, fields, types = read(tmp_path / "model.gguf")
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    for name, qtype in types.items():
        matrix = tensors[name].ndim == 2 and name != "position_embd.weight"
        assert qtype == ("F16" if matrix else "F32"), name
    qkv = model.transformer.h[1].attn.c_attn.weight.detach()
    np.testing.assert_array_equal(tensors["blk.1.attn_qkv.weight"], qkv.numpy())  # float16 throughout


def test_refuses_what_llama_cpp_would_compute_differently(tmp_path):
    _, model = oracle_and_gptcore(tmp_path, activation_function="gelu")
    with pytest.raises(ValueError, match="tanh-approximate GELU"):
        export_gguf(model, tmp_path / "model.gguf", small_tokenizer())
    _, small = oracle_and_gptcore(tmp_path, vocab_size=280)
    with pytest.raises(ValueError, match="tokenizer has token ids up to .* vocabulary has 280 rows"):
        export_gguf(small, tmp_path / "model.gguf", small_tokenizer())
    assert not list(tmp_path.glob("model.gguf*"))  # nothing half-written


def test_cli_takes_the_tokenizer_from_src_or_the_option(tmp_path, capsys):
    _, model = oracle_and_gptcore(tmp_path)
    src, dst = tmp_path / "src", tmp_path / "model.gguf"
    model.save_pretrained(src)  # no tokenizer files
    assert main([str(src), str(dst), "--to", "gguf", "-q"]) == 1
    assert "--tokenizer gpt2" in capsys.readouterr().err and not dst.exists()

    small_tokenizer().save_pretrained(tmp_path / "tok")
    assert main([str(src), str(dst), "--to", "gguf", "--tokenizer", str(tmp_path / "tok"), "-q"]) == 0
    n = len(small_tokenizer())
    assert read(dst)[1]["tokenizer.ggml.tokens"][:n] == small_tokenizer().convert_ids_to_tokens(list(range(n)))
    assert main([str(src), str(dst), "--to", "gguf", "--tokenizer", str(tmp_path / "tok"), "-q"]) == 1  # exists
    assert "--overwrite" in capsys.readouterr().err

    small_tokenizer().save_pretrained(src)  # now SRC has its own: no option needed
    assert main([str(src), str(dst), "--to", "gguf", "--overwrite", "--dtype", "float16", "-q"]) == 0
    assert read(dst)[1]["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16


def test_exported_gpt2_folder_has_what_llama_cpp_converter_reads(tmp_path):
    """llama.cpp's convert_hf_to_gguf.py (GPT-2 path) reads n_ctx, n_embd, n_head, n_layer and layer_norm_epsilon
    from config.json; transformers 5 no longer writes n_ctx, so export_hf_gpt2 adds it. The folder still loads in
    transformers and in gptcore."""
    _, model = oracle_and_gptcore(tmp_path, n_positions=48)
    export_hf_gpt2(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["n_ctx"] == config["n_positions"] == 48
    assert {k: config[k] for k in ("n_embd", "n_head", "n_layer")} == {"n_embd": 32, "n_head": 4, "n_layer": 2}
    assert config["layer_norm_epsilon"] == 1e-5
    assert GPT2LMHeadModel.from_pretrained(tmp_path / "hf").config.n_positions == 48
    assert GPTCoreForCausalLM.from_pretrained(tmp_path / "hf").config.n_positions == 48


# --- llama.cpp itself (optional: llama-cpp-python compiles llama.cpp, too slow to install in CI) ------------------


@pytest.mark.slow
def test_llama_cpp_greedy_tokens_match_gptcore(tmp_path):
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python; it builds llama.cpp)"
    )
    _, model = oracle_and_gptcore(
        tmp_path, vocab_size=GPT2_VOCAB_SIZE, bos_token_id=50256, eos_token_id=50256, n_embd=64, n_positions=128
    )
    tokenizer = gpt2_tokenizer()
    export_gguf(model, tmp_path / "model.gguf", tokenizer)
    llm = llama_cpp.Llama(str(tmp_path / "model.gguf"), n_ctx=128, n_threads=2, logits_all=True, verbose=False)

    text = "Hello, do you like tea? The meaning of life is"
    prompt = tokenizer(text)["input_ids"]
    assert llm.tokenize(text.encode(), add_bos=False) == prompt  # llama.cpp's BPE reads the vocabulary as we do

    llm.eval(prompt)  # llama.cpp's logits for the prompt against gptcore's
    with torch.no_grad():
        expected_logits = model(torch.tensor([prompt])).logits[0].numpy()
    assert np.abs(np.asarray(llm.scores[: len(prompt)]) - expected_logits).max() < 1e-2  # ggml's GELU uses fp16 tables

    llm.reset()
    got = []
    for token in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
        got.append(token)
        if len(got) == 20:
            break
    llm.close()
    expected = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, pad_token_id=50256)
    assert got == expected[0, len(prompt) :].tolist()
