"""vLLM's plugin hook for gptcore (the `vllm.general_plugins` entry point in pyproject.toml).

vLLM loads its general plugins in each of its processes before it reads a model's config. Loading this one imports
gptcore.modeling, which registers gptcore's config with `AutoConfig` and puts its model classes where vLLM's
Transformers modeling backend looks a checkpoint's class up (`getattr(transformers, config.architectures[0])`), so
an installed gptcore serves a gptcore folder without `--trust-remote-code`. Not part of a checkpoint's remote code.
"""

from __future__ import annotations


def register() -> None:
    """What vLLM calls after importing this module; the import, with its package gptcore.modeling, did the work."""
