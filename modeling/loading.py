"""How gptcore's models read checkpoints: transformers' loading, plus transformers' own GPT-2 layout, and stricter.

- A folder of transformers' GPT-2 (`model_type: "gpt2"`, e.g. openai-community/gpt2) is converted on load
  through the GPT-2 table in `gpt2_checkpoint.py`, so `GPTCoreForCausalLM.from_pretrained` reads it directly.
- Where transformers would quietly re-initialise weights at random (a tensor missing, unknown or misshapen),
  loading raises `CheckpointMismatchError` naming them.
- A refused pickle or a damaged weight file becomes an error that names the checkpoint.

Kept apart from `modeling_gptcore.py` (the transformers face of the model); like it, this file travels with
every checkpoint saved with remote code, so those load with the same rules where gptcore is not installed.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import PreTrainedConfig
from transformers.utils import logging

from .gpt2_checkpoint import (
    HEADS,
    gpt2_state_to_gptcore,
    gptcore_config_kwargs_from_gpt2,
    load_weight_files,
    unpickling_error,
)

logger = logging.get_logger(__name__)

_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


class CheckpointMismatchError(ValueError, RuntimeError):
    """A checkpoint whose tensors do not fit the model. A RuntimeError where transformers raises one (shape
    mismatches), and a ValueError as every other error a user can cause here."""


class CheckpointLoadingMixin:
    """`from_pretrained` with the rules above, for a `PreTrainedModel` subclass whose `_task_heads` names the
    head tensors it adds on top of the transformer."""

    _task_heads: tuple[str, ...] = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """As `PreTrainedModel.from_pretrained`; also reads transformers' GPT-2 checkpoints (model_type "gpt2")."""
        config = kwargs.get("config")
        if (
            pretrained_model_name_or_path is not None
            and kwargs.get("state_dict") is None
            and not isinstance(config, PreTrainedConfig)
        ):
            hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            try:
                config_dict, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            except OSError:
                config_dict = {}  # let transformers raise its usual, detailed error below
            model_type = config_dict.get("model_type", cls.config_class.model_type)
            if model_type == "gpt2":
                for key in _HUB_KWARGS:
                    kwargs.pop(key, None)
                return cls._from_gpt2_checkpoint(
                    pretrained_model_name_or_path, config_dict, hub_kwargs, model_args, kwargs
                )
            if model_type != cls.config_class.model_type:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a {model_type!r} model; gptcore reads 'gptcore' and 'gpt2' "
                    "checkpoints. For other GPT-2-architecture layouts use `python -m gptcore.conversion`"
                )
        try:
            return cls._load_checked(pretrained_model_name_or_path, model_args, kwargs)
        except SafetensorError as err:  # the library's message does not say which checkpoint
            raise ValueError(
                f"could not read the weights of {pretrained_model_name_or_path}: {err}. The weight file is "
                "truncated or corrupt; download or save it again"
            ) from err
        except pickle.UnpicklingError as err:
            raise unpickling_error(str(pretrained_model_name_or_path), err) from err

    @classmethod
    def _load_checked(cls, path: Any, model_args: tuple, kwargs: dict[str, Any]) -> Any:
        """transformers' loading, stricter where transformers would quietly re-initialise weights at random:
        a transformer tensor that is missing or unknown, or a head missing from a folder saved by this very
        class, raises `CheckpointMismatchError` naming them. A head of another class (`score` when building a
        classifier from a language model) may be new: that is what fine-tuning does. Misshapen tensors raise
        unless `ignore_mismatched_sizes=True` (then they are re-initialised, as in transformers). With
        `output_loading_info=True` the caller gets transformers' report and decides: nothing is raised."""
        wants_info = kwargs.pop("output_loading_info", False)
        user_ignores_shapes = kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(
            path, *model_args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        if wants_info:
            return model, info
        saved_by = getattr(model.config, "architectures", None) or []
        new_heads = () if cls.__name__ in saved_by else HEADS
        problems = []
        if missing := sorted(k for k in info["missing_keys"] if k not in new_heads):
            problems.append(f"missing tensors {missing[:5]}")
        if unexpected := sorted(k for k in info["unexpected_keys"] if k not in HEADS):
            problems.append(f"tensors the model does not have {unexpected[:5]}")
        if not user_ignores_shapes and (mismatched := sorted(map(str, info["mismatched_keys"]))):
            problems.append(
                f"tensors whose shape differs from the config's (name, checkpoint, model) {mismatched[:5]}; pass "
                "ignore_mismatched_sizes=True to re-initialise them"
            )
        if problems:
            raise CheckpointMismatchError(
                f"the checkpoint {path} does not match its config: " + "; ".join(problems) + ". It is incomplete, "
                "from another architecture, or its config.json was edited; re-save or re-convert it"
            )
        return model

    @classmethod
    def _from_gpt2_checkpoint(
        cls,
        path: str,
        gpt2_config: dict[str, Any],
        hub_kwargs: dict[str, Any],
        model_args: tuple,
        kwargs: dict[str, Any],
    ) -> Any:
        # dtype is an argument of loading, not a config field ("auto": the dtype the weights are stored in).
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)  # the old name, still accepted
        dtype = dtype or torch_dtype
        config_kwargs = gptcore_config_kwargs_from_gpt2(gpt2_config)
        config, kwargs = cls.config_class.from_dict(config_kwargs, return_unused_kwargs=True, **kwargs)
        source = load_weight_files(path, **hub_kwargs)
        state_dict = gpt2_state_to_gptcore(source, config, f"GPT-2 checkpoint {path}", heads=cls._task_heads)
        if dtype == "auto":
            dtype = (
                gpt2_config.get("dtype") or gpt2_config.get("torch_dtype") or state_dict["transformer.wte.weight"].dtype
            )
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if dtype is not None:
            kwargs["dtype"] = dtype
        logger.info("converted GPT-2 checkpoint %s to the gptcore layout on load", path)
        return super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)
