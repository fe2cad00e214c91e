"""gptcore -> GGUF for llama.cpp, written directly with the `gguf` package (llama.cpp's own gguf-py).

Why not llama.cpp's `convert_hf_to_gguf.py` on the folder `export_hf_gpt2` writes: it works there for GPT-2-sized
models with GPT-2's tokenizer (and writes the same tensors), but it pins transformers<5 (a venv of its own), records
the MLP width as 4 * n_embd whatever `n_inner` says (so llama.cpp then rejects the MLP tensors' shapes), and
recognises the tokenizer by hashing its output on a test text, so a vocabulary trained with gptcore is refused.
What llama.cpp's GPT-2 loader (src/models/gpt2.cpp) reads is short: the hyper-parameters below, a byte-level BPE
vocabulary, and tensors under gguf-py's GPT-2 names.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch

from gptcore.modeling import GPTCoreForCausalLM

logger = logging.getLogger(__name__)

# ggml's GELU is GPT-2's tanh approximation; other activations would silently change every logit.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
# Matrices keep the model's precision; the one-dimensional tensors (LayerNorms, biases) and the position embedding
# stay float32, as llama.cpp's converter and quantizer keep them.
_FILE_TYPES = {torch.float32: "ALL_F32", torch.float16: "MOSTLY_F16", torch.bfloat16: "MOSTLY_BF16"}
_MATRIX_TYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
_FLOAT32_TENSORS = ("position_embd.weight",)


def export_gguf(model: GPTCoreForCausalLM, path: str | os.PathLike, tokenizer: Any) -> str:
    """Write `model` and `tokenizer` (a transformers byte-level BPE tokenizer, e.g. `gpt2_tokenizer()`) as one GGUF
    file that llama.cpp runs as architecture "gpt2". Weights are written in the model's dtype (float32, float16 or
    bfloat16); quantise afterwards with llama.cpp's `llama-quantize`. The file appears only once it is complete."""
    try:
        import gguf
    except ImportError as err:  # an optional dependency
        raise ImportError(f"GGUF export needs the gguf package: pip install 'gptcore[deploy]' ({err})") from err
    if not isinstance(model, GPTCoreForCausalLM):
        raise ValueError(f"GGUF export needs a GPTCoreForCausalLM, got {type(model).__name__}")
    config = model.config
    if config.activation_function not in _TANH_GELU:
        raise ValueError(
            "llama.cpp's GPT-2 computes the tanh-approximate GELU, but this model uses "
            f"{config.activation_function!r}; its GGUF would give different outputs. Only models with "
            "activation_function 'gelu_new' can be exported"
        )
    if model.dtype not in _FILE_TYPES:
        raise ValueError(f"GGUF export writes float32, float16 or bfloat16 weights, not {model.dtype}")

    path = os.fspath(path)
    partial = path + ".partial"
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
    try:
        writer.add_context_length(config.n_positions)
        writer.add_embedding_length(config.n_embd)
        writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        writer.add_file_type(gguf.LlamaFileType[_FILE_TYPES[model.dtype]])
        add_tokenizer(writer, tokenizer, config)
        for name, tensor in gguf_tensors(model).items():
            matrix = tensor.dim() > 1 and name not in _FLOAT32_TENSORS
            qtype = gguf.GGMLQuantizationType[_MATRIX_TYPES[model.dtype] if matrix else "F32"]
            data = gguf.quants.quantize(tensor.float().numpy(), qtype)  # numpy has no bfloat16: gguf packs it
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    except BaseException:
        writer.close()
        if os.path.exists(partial):
            os.remove(partial)
        raise
    logger.debug("wrote GGUF model %s", path)
    return path


def gguf_tensors(model: GPTCoreForCausalLM) -> dict[str, torch.Tensor]:
    """The model's tensors under GGUF's GPT-2 names (`token_embd.weight`, `blk.0.attn_qkv.weight`, ...), from
    gguf-py's own name table. No transposes: GGUF lists a matrix's dimensions innermost first, so llama.cpp's
    {n_embd, 3 * n_embd} `attn_qkv` is nn.Linear's (out, in) = (3 * n_embd, n_embd) array. (transformers' GPT-2
    stores Conv1D (in, out) matrices, which its converter transposes.) A tied LM head is not written: llama.cpp
    reuses token_embd, as it does for GPT-2."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, model.config.n_layer)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]
    tensors = {}
    for name, tensor in state.items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:  # a tensor llama.cpp's GPT-2 has no place for: never dropped silently
            raise ValueError(f"no GGUF name for gptcore tensor {name!r}")
        tensors[gguf_name] = tensor.detach().cpu()
    return tensors


def add_tokenizer(writer: Any, tokenizer: Any, config: Any) -> None:
    """llama.cpp's "gpt2" tokenizer: the byte-level BPE vocabulary (tokens as in vocab.json), merges, token types,
    special ids, and the pre-tokenizer name "gpt-2" (GPT-2's split regex, which tokenizers' ByteLevel uses)."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    bpe, pre = state["model"], state.get("pre_tokenizer") or {}
    if bpe.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise ValueError(
            "GGUF export needs a byte-level BPE tokenizer with GPT-2's pre-tokenizer (such as gpt2_tokenizer() or one "
            f"from train_tokenizer()); this one has model {bpe.get('type')!r} and pre-tokenizer {pre.get('type')!r}"
        )
    vocab = {**bpe["vocab"], **{t["content"]: t["id"] for t in state["added_tokens"]}}
    if max(vocab.values()) >= config.vocab_size:
        raise ValueError(
            f"the tokenizer has token ids up to {max(vocab.values())} but the model's vocabulary has "
            f"{config.vocab_size} rows; pass the tokenizer the model was trained with"
        )
    # Rows without a token (a vocabulary padded to a round size) get placeholders, so the list matches token_embd.
    tokens = [f"[PAD{i}]" for i in range(config.vocab_size)]
    types = [gguf.TokenType.UNUSED] * config.vocab_size
    for token, i in vocab.items():
        tokens[i], types[i] = token, gguf.TokenType.NORMAL
    for added in state["added_tokens"]:
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]  # ["a b"] or [["a", "b"]]

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for kind in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is None:
            token_id = getattr(config, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(False)  # GPT-2 prompts start without <|endoftext|>; llama.cpp would otherwise prepend it
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
