"""gptcore -> plain transformers GPT-2: a folder `GPT2LMHeadModel.from_pretrained` loads without gptcore.

The weights go through modeling's `HF_GPT2_RULES` read backwards (`reverse_rules`), so import and
export cannot drift apart. The config keeps GPT-2's field names as they are; model_type becomes "gpt2",
gptcore's `auto_map` (remote code) is dropped, and `n_ctx` is added for llama.cpp's converter.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from transformers import GPT2Config, GPT2LMHeadModel

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from gptcore.modeling.gpt2_checkpoint import FILE_KEYS, HF_GPT2_RULES
from gptcore.modeling.weight_mapping import apply_rules, reverse_rules

logger = logging.getLogger(__name__)


def gpt2_config_from_gptcore(config: GPTCoreConfig) -> GPT2Config:
    """The same fields (GPT-2's names) in a GPT2Config, which records its own model type, classes and dtype.

    Plus GPT-2's legacy `n_ctx` (= n_positions, as in every config OpenAI's GPT-2 shipped with): transformers 5 no
    longer writes it, but llama.cpp's convert_hf_to_gguf.py reads the context length from it and fails without it.
    vLLM, optimum and transformers read GPT2Config's own fields (n_positions, n_inner, ...), all written already.
    """
    fields = {k: v for k, v in config.to_dict().items() if k not in FILE_KEYS}
    return GPT2Config.from_dict({**fields, "n_ctx": config.n_positions})


def to_hf_gpt2(model: GPTCoreForCausalLM) -> GPT2LMHeadModel:
    """The same weights (same dtype) in a `transformers.GPT2LMHeadModel`."""
    if not isinstance(model, GPTCoreForCausalLM):
        raise ValueError(f"export needs a GPTCoreForCausalLM, got {type(model).__name__}")
    config = model.config
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")  # GPT-2 ties it to wte too; its checkpoints do not store it
    gpt2_state = apply_rules(state, reverse_rules(HF_GPT2_RULES), config.n_layer, source_description="gptcore model")
    gpt2, info = GPT2LMHeadModel.from_pretrained(
        None,
        config=gpt2_config_from_gptcore(config),
        state_dict=gpt2_state,
        dtype=model.dtype,
        output_loading_info=True,
    )
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:  # the table and GPT2LMHeadModel disagree: a bug, never a user error, but never silent
        raise ValueError(f"GPT2LMHeadModel did not accept the exported weights: {problems}")
    gpt2.generation_config = copy.deepcopy(model.generation_config)
    return gpt2.eval()


def export_hf_gpt2(model: GPTCoreForCausalLM, out_dir: str | os.PathLike, **save_kwargs: Any) -> GPT2LMHeadModel:
    """Write `model` as a plain transformers GPT-2 folder (safetensors, config.json, generation config).

    `save_kwargs` go to `save_pretrained` (e.g. `max_shard_size="2GB"`). Returns the GPT2LMHeadModel written.
    """
    gpt2 = to_hf_gpt2(model)
    gpt2.save_pretrained(out_dir, **save_kwargs)
    logger.info("wrote transformers GPT-2 checkpoint %s", out_dir)
    return gpt2
