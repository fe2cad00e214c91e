"""Source format `openai-tf`: OpenAI's original GPT-2 release folder, read without TensorFlow.

The folder holds `checkpoint`, `model.ckpt.index`, `model.ckpt.data-00000-of-00001`, `hparams.json`
(n_vocab, n_ctx, n_embd, n_head, n_layer) and the tokenizer files `encoder.json` / `vocab.bpe`.
Variables are named `model/wte`, `model/h{i}/attn/c_attn/w`, ...; OpenAI's Conv1D weights are
stored as (1, in, out). GPT-2's tokenizer is written with the converted model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from gptcore.modeling import GPTCoreConfig
from gptcore.modeling.weight_mapping import Rule
from gptcore.tokenization import GPT2_VOCAB_SIZE

from .checkpoint import Format, SourceCheckpoint, gpt2_sized_config, map_weights
from .files import locate, read_json, tokenizer_writer
from .tf_bundle import read_tf_checkpoint

logger = logging.getLogger(__name__)

# (OpenAI TF variable, gptcore name, transform)
OPENAI_TF_RULES: list[Rule] = [
    Rule("model/wte", "transformer.wte.weight"),
    Rule("model/wpe", "transformer.wpe.weight"),
    Rule("model/h{i}/ln_1/g", "transformer.h.{i}.ln_1.weight"),
    Rule("model/h{i}/ln_1/b", "transformer.h.{i}.ln_1.bias"),
    Rule("model/h{i}/attn/c_attn/w", "transformer.h.{i}.attn.c_attn.weight", "squeeze0_transpose"),
    Rule("model/h{i}/attn/c_attn/b", "transformer.h.{i}.attn.c_attn.bias"),
    Rule("model/h{i}/attn/c_proj/w", "transformer.h.{i}.attn.c_proj.weight", "squeeze0_transpose"),
    Rule("model/h{i}/attn/c_proj/b", "transformer.h.{i}.attn.c_proj.bias"),
    Rule("model/h{i}/ln_2/g", "transformer.h.{i}.ln_2.weight"),
    Rule("model/h{i}/ln_2/b", "transformer.h.{i}.ln_2.bias"),
    Rule("model/h{i}/mlp/c_fc/w", "transformer.h.{i}.mlp.c_fc.weight", "squeeze0_transpose"),
    Rule("model/h{i}/mlp/c_fc/b", "transformer.h.{i}.mlp.c_fc.bias"),
    Rule("model/h{i}/mlp/c_proj/w", "transformer.h.{i}.mlp.c_proj.weight", "squeeze0_transpose"),
    Rule("model/h{i}/mlp/c_proj/b", "transformer.h.{i}.mlp.c_proj.bias"),
    Rule("model/ln_f/g", "transformer.ln_f.weight"),
    Rule("model/ln_f/b", "transformer.ln_f.bias"),
]  # no head: GPT-2 ties it to wte

# hparams.json key -> GPTCoreConfig field
_HPARAMS = {
    "n_vocab": "vocab_size",
    "n_ctx": "n_positions",
    "n_embd": "n_embd",
    "n_head": "n_head",
    "n_layer": "n_layer",
}
# The files of the release, for fetching it from a Hub repo (a local folder is read in place).
_RELEASE_FILES = ("checkpoint", "model.ckpt.index", "model.ckpt.data-00000-of-00001")


def config_from_hparams(hparams: Any, path: str) -> GPTCoreConfig:
    """GPT-2 as OpenAI trained it: tanh GELU, LayerNorm eps 1e-5, head tied to wte."""
    if not isinstance(hparams, dict) or set(hparams) != set(_HPARAMS):
        found = sorted(hparams) if isinstance(hparams, dict) else type(hparams).__name__
        raise ValueError(
            f"{path} must hold exactly the keys {sorted(_HPARAMS)} (OpenAI's GPT-2 hparams), found {found}"
        )
    return gpt2_sized_config(**{field: hparams[key] for key, field in _HPARAMS.items()})


def read(src: str, hub_kwargs: dict[str, Any]) -> SourceCheckpoint:
    folder = os.path.dirname(src) if os.path.isfile(src) else src
    checkpoint_path = src  # a folder with `checkpoint`, or a prefix / .index file
    hparams_path = locate(folder, "hparams.json", hub_kwargs)
    if not os.path.isdir(folder):  # a Hub repo: download the release's files next to hparams.json
        for name in _RELEASE_FILES:
            locate(folder, name, hub_kwargs)
        checkpoint_path = os.path.dirname(hparams_path)
    config = config_from_hparams(read_json(hparams_path), hparams_path)
    tensors = read_tf_checkpoint(checkpoint_path)
    return SourceCheckpoint(
        config=config,
        state_dict=map_weights(tensors, OPENAI_TF_RULES, config, f"OpenAI TF checkpoint {src}"),
        format=FORMAT.name,
        source=src,
        write_tokenizer=_tokenizer_writer(folder, hub_kwargs, config.vocab_size),
        license="mit",  # OpenAI released the GPT-2 weights under the MIT license
    )


def _tokenizer_writer(folder: str, hub_kwargs: dict[str, Any], vocab_size: int) -> Callable[[str], None]:
    """GPT-2's tokenizer (the release's own files when present), with a warning if the model is smaller."""
    write = tokenizer_writer(folder, hub_kwargs, gpt2_by_default=True)

    def write_checked(out: str) -> None:
        if vocab_size < GPT2_VOCAB_SIZE:
            logger.warning(
                "the model has %d tokens but GPT-2's tokenizer, written with it, has %d: "
                "ids past the model's vocabulary will be rejected",
                vocab_size,
                GPT2_VOCAB_SIZE,
            )
        write(out)

    return write_checked


FORMAT = Format(
    name="openai-tf",
    summary="OpenAI's original GPT-2 release folder (checkpoint, model.ckpt.index, model.ckpt.data-*, hparams.json, "
    "encoder.json, vocab.bpe), read without TensorFlow",
    read=read,
)
