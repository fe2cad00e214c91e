"""Named model sizes, in one table: GPT-2's four published sizes, and two small ones for CPUs.

A preset names sizes only; every other field, the vocabulary size (GPT-2's 50257 tokens) included, takes
`GPTCoreConfig`'s defaults, which are GPT-2's. Pretraining, the benchmark, the memory estimate and the
LLMs-from-scratch converter all name sizes from here.
"""

from __future__ import annotations

from typing import Any

from .configuration_gptcore import GPTCoreConfig

PRESETS: dict[str, dict[str, int]] = {
    # Pretraining's default: on a CPU the 50257-token output layer costs more than the four blocks, so the width
    # stays small.
    "cpu-small": {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 256},
    # The benchmark's default: wide enough that the blocks, not only the output layer, take measurable time.
    "small": {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256},
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "n_positions": 1024},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "n_positions": 1024},
}


def preset_config(name: str, **overrides: Any) -> GPTCoreConfig:
    """`GPTCoreConfig` of preset `name`, with `overrides` (any config field) applied on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown model size {name!r}; use one of {', '.join(PRESETS)}")
    return GPTCoreConfig(**{**PRESETS[name], **overrides})


def preset_fields(name: str) -> dict[str, int]:
    """The fields that fix preset `name`'s shapes (its sizes and the vocabulary size), e.g. for a `GPT2Config`."""
    config = preset_config(name)
    return {key: getattr(config, key) for key in ("vocab_size", *PRESETS[name])}
