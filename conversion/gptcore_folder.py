"""Source format `gptcore`: our own `save_pretrained` folders, for `--to hf-gpt2` and dtype changes.

The table is the identity on gptcore's names; reading through it (rather than `from_pretrained`)
keeps the same strictness as every other format: nothing missing, nothing left over, shapes checked.
"""

from __future__ import annotations

from typing import Any

from gptcore.modeling import GPTCoreConfig
from gptcore.modeling.gpt2_checkpoint import FILE_KEYS

from .checkpoint import GPTCORE_RULES, Format, SourceCheckpoint, map_weights
from .hf_gpt2 import folder_checkpoint, load_transformers_weights, read_config_json


def read(src: str, hub_kwargs: dict[str, Any]) -> SourceCheckpoint:
    saved = read_config_json(src, hub_kwargs, GPTCoreConfig.model_type)
    config = GPTCoreConfig.from_dict({k: v for k, v in saved.items() if k not in FILE_KEYS})
    state = load_transformers_weights(src, hub_kwargs)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: the head is wte, whether or not a copy was stored
    state = map_weights(state, GPTCORE_RULES, config, f"gptcore checkpoint {src}")
    return folder_checkpoint(src, hub_kwargs, FORMAT.name, config, state)


FORMAT = Format(
    name="gptcore",
    summary="a gptcore folder or Hub repo (config.json with model_type 'gptcore'): re-export, e.g. --to hf-gpt2, "
    "or change --dtype / --max-shard-size",
    read=read,
)
