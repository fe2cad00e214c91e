"""Every use of transformers beyond its stable public API, in one place.

transformers changes the internals that custom models build on about every week, and a checkpoint
saved with remote code carries this folder's files frozen into it. So the wrapper imports those
internals only from here, and each entry below adapts to the installed release by looking for the
feature itself, never by comparing version strings. A new release is met by editing this file alone.

Entries, and the releases that need each (gptcore supports transformers 5.0.0 and newer 5.x):
- the KV cache's forward argument and output field: `cache` from 5.24, `past_key_values` in 5.0-5.23; the
  wrapper takes `cache` and accepts the old name from callers of any release;
- output capturing: `utils.output_capturing.capture_outputs` from 5.2, `utils.generic.check_model_inputs`
  in 5.0-5.1 (the same decorator under its old name);
- `create_causal_mask`: `input_embeds` in 5.0-5.1, `cache_position` required in 5.0-5.3 (accepted until 5.8),
  `past_key_values` renamed `cache` in 5.24;
- the attention registry: `get_interface` from 5.1, indexing by name in 5.0 (which gets a `get_interface` here);
- continuous batching's paged KV cache (`generate_batch`, `transformers serve --continuous-batching`): the
  attention function updates it in 5.0 (the `paged|` functions read it from their `cache` keyword), the model
  does in 5.24 (`cache.update(key, value, layer_idx, kwargs)`);
- activation checkpointing: `activation_checkpointing_enable` from 5.23, `gradient_checkpointing_enable` before
  (deprecated from 5.23);
- weights quantised while loading (torchao): 5.0 re-initialises them after loading (the "loaded" flag transformers
  sets on each tensor is lost on a tensor subclass); 5.24 and newer keep them;
- `transformers serve` finds a checkpoint's class by name in the `transformers` module (all 5.x; from 5.25 in a
  process it spawns), so gptcore's classes are put there by every process that imports gptcore;
- `GradientCheckpointingLayer` (all 5.x), the identity of the default causal-LM loss (all 5.x), `cached_file`'s
  private "None when absent" switch (all 5.x), the Auto class a model was registered for (all 5.x), and the private
  switch that lets `generate()` compile on a CPU (all 5.x): one place to change when they move;
- transformers' own GPT-2 (a test and benchmark oracle, not gptcore) leaves `loss_type` unset in all 5.x releases;
- training adapters on a torchao int8 weight-only base: Trainer refuses it in 5.0 (its torchao quantiser counts only
  the string quant types as trainable, which torchao 0.18 does not serve), 5.25 trains it.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from transformers import GenerationMixin
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask as _create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple  # noqa: F401 (the model imports it from here)

# --- The KV cache's name -------------------------------------------------------------------------------------
# transformers 5.24 renamed the forward argument and the output field `past_key_values` -> `cache`; generate()
# passes the new name and reads the cache back from the output under it. Older releases use the old name for both.
# The wrapper's forwards take `cache` and accept `past_key_values` from callers of any release (see `accepts_cache`).
CACHE_ARG = (
    "cache"
    if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    else "past_key_values"
)
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"
# Output keys that are not predictions: Trainer's evaluation and accelerate's device placement skip them.
CACHE_KEYS = [CACHE_FIELD]
_LEGACY_CACHE_ARGS = ("past_key_values", "cache_params")


def accepts_cache(forward: Callable) -> Callable:
    """Let a forward whose cache parameter is `cache` also be called with `past_key_values=` (what generate()
    and every caller used before 5.24). Passing both is an error, as in transformers' own models; where the
    installed release has renamed the argument, the old name draws its deprecation warning, as there."""

    @functools.wraps(forward)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        for old in _LEGACY_CACHE_ARGS:
            if old in kwargs:
                if kwargs.get("cache") is not None and kwargs[old] is not None:
                    raise ValueError(f"pass the KV cache once, as `cache` (not both `cache` and `{old}`)")
                if CACHE_ARG == "cache" and not torch.compiler.is_compiling():
                    warnings.warn(
                        f"`{old}` is deprecated in this transformers release; use `cache` instead",
                        FutureWarning,
                        stacklevel=2,
                    )
                value = kwargs.pop(old)
                if kwargs.get("cache") is None:
                    kwargs["cache"] = value
        return forward(self, *args, **kwargs)

    return wrapper


def cache_output(cache: Cache | None) -> dict[str, Cache | None]:
    """Keyword argument that stores `cache` in an output class under the installed release's field name."""
    return {CACHE_FIELD: cache}


def output_cache(outputs: Any) -> Cache | None:
    """The cache of a model output, under whichever field the installed release uses."""
    return getattr(outputs, CACHE_FIELD, None)


# --- Output capturing ----------------------------------------------------------------------------------------
# `output_hidden_states` / `output_attentions` are served by hooks that transformers installs on the classes named
# in `_can_record_outputs`.
# The model imports these names from here.
try:
    from transformers.utils.output_capturing import OutputRecorder, capture_outputs  # noqa: F401
except ImportError:  # 5.0-5.1
    from transformers.utils.generic import OutputRecorder  # type: ignore[no-redef]  # noqa: F401
    from transformers.utils.generic import check_model_inputs as capture_outputs  # type: ignore[no-redef]  # noqa: F401


# --- Masks and attention -------------------------------------------------------------------------------------
_MASK_PARAMS = inspect.signature(_create_causal_mask).parameters
_MASK_CACHE_ARG = "cache" if "cache" in _MASK_PARAMS else "past_key_values"
_MASK_EMBEDS_ARG = "inputs_embeds" if "inputs_embeds" in _MASK_PARAMS else "input_embeds"


def create_causal_mask(
    config: Any,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    cache: Cache | None,
    position_ids: torch.Tensor,
    cache_position: torch.Tensor | None = None,
) -> Any:
    """transformers' causal mask for the configured attention implementation (None where the kernel's own
    causal mode suffices). Releases differ in argument names, and 5.0-5.3 require `cache_position` (the
    indices of the new tokens in the cache), which their generate() passes to forward."""
    kwargs: dict[str, Any] = {
        "config": config,
        _MASK_EMBEDS_ARG: inputs_embeds,
        "attention_mask": attention_mask,
        _MASK_CACHE_ARG: cache,
        "position_ids": position_ids,
    }
    if "cache_position" in _MASK_PARAMS:
        if cache_position is None:
            past = cache.get_seq_length() if cache is not None else 0  # a tensor for static caches
            cache_position = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past
        kwargs["cache_position"] = cache_position
    return _create_causal_mask(**kwargs)


class _AttentionFunctionsWithGetInterface:
    """transformers 5.0's attention registry, with the `get_interface(name, default)` lookup later releases have
    (the default for "eager"); every other access goes to the registry itself."""

    def __init__(self, functions: Any) -> None:
        self._functions = functions

    def get_interface(self, attn_implementation: str | None, default: Callable) -> Callable:
        if attn_implementation in (None, "eager"):
            return default
        return self._functions[attn_implementation]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._functions, name)

    def __getitem__(self, name: str) -> Callable:
        return self._functions[name]


# The registry of attention functions (sdpa, flash, flex, paged, and whatever a runtime registers, such as vLLM's),
# with `get_interface`, which arrived after 5.0 and also validates the name.
if not hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
    ALL_ATTENTION_FUNCTIONS = _AttentionFunctionsWithGetInterface(ALL_ATTENTION_FUNCTIONS)  # 5.0


# --- Continuous batching ---------------------------------------------------------------------------------------
# Continuous batching (`generate_batch`, `transformers serve --continuous-batching`) packs the requests of a batch
# into one row and keeps their keys and values in one paged cache, read and written by index (`read_index`,
# `write_index`, ... arrive as forward keywords). That cache does not fit the core's KV-cache seam (no
# `get_seq_length`; its update also picks per-layer arguments for the attention function), so the wrapper gives the
# core no cache and an attention function that passes each layer's new keys and values to the paged cache first.
try:
    from transformers.generation.continuous_batching.cache import PagedAttentionCache as _PagedAttentionCache
except ImportError:  # pragma: no cover - every 5.x release has it
    _PagedAttentionCache = None

# 5.24: the model calls `cache.update(key, value, layer_idx, kwargs)`, which completes `kwargs` in place for the
# attention function. 5.0: the `paged|sdpa` / `paged|eager` attention functions update the cache themselves, from
# their `cache` keyword (`update(..., read_index, write_index)`).
_MODEL_UPDATES_PAGED_CACHE = (
    _PagedAttentionCache is not None and "kwargs" in inspect.signature(_PagedAttentionCache.update).parameters
)


def is_paged_cache(cache: Any) -> bool:
    """True for continuous batching's paged cache (one cache shared by every request of the batch)."""
    return _PagedAttentionCache is not None and isinstance(cache, _PagedAttentionCache)


def paged_attention(attention_fn: Callable, cache: Any) -> Callable:
    """`attention_fn` (from `ALL_ATTENTION_FUNCTIONS`) with the paged `cache` taking the new keys and values first, so
    that it attends over every token of each packed request, cached and new."""

    def attend(
        module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, **kwargs: Any
    ) -> Any:
        if not _MODEL_UPDATES_PAGED_CACHE:
            return attention_fn(module, query, key, value, attention_mask, cache=cache, **kwargs)
        key, value = cache.update(key, value, module.layer_idx, kwargs)  # kwargs: now this layer's cache arguments
        return attention_fn(module, query, key, value, attention_mask, **kwargs)

    return attend


try:
    from transformers.modeling_layers import GradientCheckpointingLayer
except ImportError:  # pragma: no cover - releases before the class existed checkpoint modules by flag only
    GradientCheckpointingLayer = torch.nn.Module

# --- Loss and files ------------------------------------------------------------------------------------------
from transformers.loss.loss_utils import ForCausalLMLoss as _ForCausalLMLoss  # noqa: E402


def is_default_causal_lm_loss(loss_function: Callable) -> bool:
    """True when `loss_function` is transformers' own causal-LM cross-entropy, which the fused head reproduces."""
    return loss_function is _ForCausalLMLoss


def optional_cached_file(path_or_repo: str, filename: str, **hub_kwargs: Any) -> str | None:
    """Local path of `filename` in a folder or Hub repo (downloaded into the cache), or None when it does not exist."""
    from transformers.utils import cached_file

    return cached_file(path_or_repo, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)


def registered_auto_class(model: Any) -> str | None:
    """The Auto class `register_for_auto_class` recorded on the model's class (None where it was never called)."""
    return getattr(model, "_auto_class", None)


# --- Training and quantisation ---------------------------------------------------------------------------------


def enable_activation_checkpointing(model: Any) -> None:
    """Recompute each block's activations in the backward pass. transformers 5.23 renamed
    `gradient_checkpointing_enable` to `activation_checkpointing_enable` and deprecated the old name."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def holds_weights_quantized_while_loading(module: torch.nn.Module) -> bool:
    """True when a parameter of `module` is a tensor subclass (a torchao quantised weight), whose values came from the
    checkpoint. transformers keeps loaded weights from `_init_weights` by a flag on each loaded tensor; 5.0 loses that
    flag on such a tensor and would re-initialise it (5.24 and newer do not), so the model's initialiser leaves these
    modules alone on every release."""
    return any(type(weight) not in (torch.nn.Parameter, torch.Tensor) for weight in module.parameters())


def set_default_causal_lm_loss(model: Any) -> None:
    """Give a model whose `loss_type` is unset (transformers' own GPT2LMHeadModel, all 5.x) the causal-LM loss it
    uses anyway, without the warning each forward with labels then logs (a warning breaks a compiled graph)."""
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"


def compile_on_every_device(config: Any) -> Any:
    """`config` (a `CompileConfig`) with `generate()`'s automatic torch.compile opted in on CPUs too: by default it
    compiles only on accelerators, and the switch is a private field of CompileConfig (all 5.x)."""
    config._compile_all_devices = True
    return config


def trainer_trains_on_quantized_base(quantization_config: Any) -> bool:
    """Whether `Trainer` agrees to train adapters on a base quantised with `quantization_config`. It asks the
    release's quantiser (`is_trainable`): for torchao's int8 weight-only config object 5.0's says no (it knows only
    the string names "int8_weight_only", ..., which need an older torchao), 5.25's says yes."""
    from transformers.quantizers import AutoHfQuantizer

    return bool(AutoHfQuantizer.from_config(quantization_config).is_trainable)


# --- Serving ---------------------------------------------------------------------------------------------------
# `transformers serve` (every 5.x release) resolves a checkpoint's class as `getattr(transformers,
# config.architectures[0])`, among transformers' own classes only; the Auto registry is not consulted. From 5.25 it
# also loads the model in a process it spawns, so whatever a launcher sets in its own process is absent there.
# What each process does is import gptcore (a spawned process imports the launching script, which imports gptcore),
# so gptcore.modeling's import puts its classes into the `transformers` module, in every process alike.


def add_to_transformers_namespace(*classes: type) -> None:
    """Make `getattr(transformers, cls.__name__)` find each class, as it finds transformers' own models."""
    # The first import of transformers.processing_utils replaces the `transformers` module object in sys.modules (it
    # re-imports the package: `direct_transformers_import`), which would drop attributes set before it. Import it
    # first, then set them on the module object that stays.
    import transformers.processing_utils  # noqa: F401

    module = sys.modules["transformers"]
    for cls in classes:
        setattr(module, cls.__name__, cls)
