"""Source format `hf-gpt2`: transformers' GPT-2 folders, exactly as published on the Hub.

The mapping table is modeling's `HF_GPT2_RULES` (the same one `GPTCoreForCausalLM.from_pretrained`
uses on a GPT-2 folder, and, reversed, `export_hf_gpt2` writes with), so it is not restated here.
Weights: `model.safetensors`, sharded safetensors with an index, or `pytorch_model.bin` (read with
`weights_only=True`); keys with or without the `transformer.` prefix; the legacy `attn.bias` /
`attn.masked_bias` mask buffers are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import GenerationConfig

from gptcore.modeling import GPTCoreConfig
from gptcore.modeling.gpt2_checkpoint import gpt2_state_to_gptcore, gptcore_config_kwargs_from_gpt2, load_weight_files

from .checkpoint import Format, SourceCheckpoint
from .files import locate, read_json, source_license, tokenizer_writer


def read_config_json(src: str, hub_kwargs: dict[str, Any], model_type: str) -> dict[str, Any]:
    """`config.json` of a transformers folder, which must declare `model_type`."""
    path = locate(src, "config.json", hub_kwargs)
    config = read_json(path)
    if not isinstance(config, dict) or config.get("model_type") != model_type:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise ValueError(
            f"{path} has model_type {found!r}, expected {model_type!r}; pass the --from format that matches the source"
        )
    return config


def load_transformers_weights(src: str, hub_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """All tensors of a transformers folder; a missing file (e.g. one shard) is named."""
    try:
        return load_weight_files(src, **hub_kwargs)
    except FileNotFoundError:
        raise
    except OSError as err:  # a file that could not be fetched (from the Hub, or out of its cache)
        raise FileNotFoundError(f"weights of {src} are incomplete: {err}") from err


def from_hf_gpt2(
    gpt2_config: dict[str, Any], state_dict: Mapping[str, torch.Tensor], description: str
) -> tuple[GPTCoreConfig, dict[str, torch.Tensor]]:
    """gptcore config and weights for a GPT-2 `config.json` and its (Conv1D-layout) state dict: the same
    function `GPTCoreForCausalLM.from_pretrained` uses on a GPT-2 folder."""
    config = GPTCoreConfig.from_dict(gptcore_config_kwargs_from_gpt2(gpt2_config))
    return config, gpt2_state_to_gptcore(state_dict, config, description)


def read(src: str, hub_kwargs: dict[str, Any]) -> SourceCheckpoint:
    gpt2_config = read_config_json(src, hub_kwargs, "gpt2")
    config, state = from_hf_gpt2(gpt2_config, load_transformers_weights(src, hub_kwargs), f"GPT-2 checkpoint {src}")
    return folder_checkpoint(src, hub_kwargs, FORMAT.name, config, state)


def folder_checkpoint(
    src: str, hub_kwargs: dict[str, Any], format_name: str, config: GPTCoreConfig, state: dict[str, torch.Tensor]
) -> SourceCheckpoint:
    """A transformers folder's conversion, carrying along its tokenizer, generation config and license."""
    generation = locate(src, "generation_config.json", hub_kwargs, required=False)
    return SourceCheckpoint(
        config=config,
        state_dict=state,
        format=format_name,
        source=src,
        write_tokenizer=tokenizer_writer(src, hub_kwargs, gpt2_by_default=False),
        generation_config=None if generation is None else GenerationConfig.from_dict(read_json(generation)),
        license=source_license(src, hub_kwargs),
    )


FORMAT = Format(
    name="hf-gpt2",
    summary="a transformers GPT-2 folder or Hub repo (config.json with model_type 'gpt2'; model.safetensors, "
    "sharded safetensors + index, or pytorch_model.bin), e.g. openai-community/gpt2 ... gpt2-xl, distilgpt2",
    read=read,
)
