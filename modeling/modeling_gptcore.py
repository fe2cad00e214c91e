"""The transformers face of the core: HF arguments in, HF output classes out.

Everything numerical lives in `core.py`. This file fills the core's two seams from transformers
(the attention function from `ALL_ATTENTION_FUNCTIONS`, the KV cache from `Cache`), builds masks with
`create_causal_mask`, computes losses with `self.loss_function`, and records hidden states and
attention weights with transformers' output-capturing hooks. It imports only torch, transformers and
its sibling files, so `save_pretrained` can copy it next to a checkpoint for `trust_remote_code`.
"""

from __future__ import annotations

import pickle
from contextvars import ContextVar
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.utils import logging

from .compat import (
    CACHE_KEYS,
    GradientCheckpointingLayer,
    OutputRecorder,
    accepts_cache,
    attention_function,
    cache_output,
    can_return_tuple,
    capture_outputs,
    create_causal_mask,
    is_default_causal_lm_loss,
    output_cache,
)
from .configuration_gptcore import GPTCoreConfig
from .core import (
    Block,
    CausalSelfAttention,
    GPTTransformer,
    check_token_ids,
    eager_attention,
    init_weights,
    lm_head_cross_entropy,
    lm_head_logits,
)
from .gpt2_checkpoint import HEADS, gpt2_state_to_gptcore, gptcore_config_kwargs_from_gpt2, load_weight_files

# Releases before 5.10 copy only this file's *direct* relative imports when loading remote code, so
# every sibling module used indirectly is imported here too.
from .weight_mapping import apply_rules  # noqa: E402,F401  (used by gpt2_checkpoint)

logger = logging.get_logger(__name__)

_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")
_AUTO_MAP = {
    "AutoConfig": "configuration_gptcore.GPTCoreConfig",
    "AutoModel": "modeling_gptcore.GPTCoreModel",
    "AutoModelForCausalLM": "modeling_gptcore.GPTCoreForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gptcore.GPTCoreForSequenceClassification",
}


class CheckpointMismatchError(ValueError, RuntimeError):
    """A checkpoint whose tensors do not fit the model. A RuntimeError where transformers raises one (shape
    mismatches), and a ValueError as every other error a user can cause here."""


class GPTCoreBlock(GradientCheckpointingLayer, Block):
    """The core's transformer block on transformers' checkpointing base class, so that
    `gradient_checkpointing_enable()` recomputes each block in the backward pass."""


class GPTCorePreTrainedModel(PreTrainedModel):
    config_class = GPTCoreConfig
    config: GPTCoreConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPTCoreBlock"]
    _skip_keys_device_placement = CACHE_KEYS
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _task_heads: tuple[str, ...] = ()  # the head tensors a class adds on top of the transformer
    _can_record_outputs = {
        "hidden_states": GPTCoreBlock,
        "attentions": OutputRecorder(CausalSelfAttention, index=1),
    }

    def _init_weights(self, module: nn.Module) -> None:
        # transformers guards torch.nn.init during loading, so weights read from a checkpoint are kept.
        init_weights(module, self.config)

    def save_pretrained(self, save_directory: str | Any, *args: Any, **kwargs: Any) -> Any:
        # Name every Auto class, so the folder loads with any of them under trust_remote_code
        # (transformers itself only records the class that was saved).
        if self._auto_class is not None:
            self.config.auto_map = {**_AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """As `PreTrainedModel.from_pretrained`; also reads transformers' GPT-2 checkpoints (model_type "gpt2")."""
        config = kwargs.get("config")
        if pretrained_model_name_or_path is not None and kwargs.get("state_dict") is None and not isinstance(config, PreTrainedConfig):
            hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
            try:
                config_dict, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            except OSError:
                config_dict = {}  # let transformers raise its usual, detailed error below
            model_type = config_dict.get("model_type", GPTCoreConfig.model_type)
            if model_type == "gpt2":
                for key in _HUB_KWARGS:
                    kwargs.pop(key, None)
                return cls._from_gpt2_checkpoint(pretrained_model_name_or_path, config_dict, hub_kwargs, model_args, kwargs)
            if model_type != GPTCoreConfig.model_type:
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
            found = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
            raise ValueError(
                f"refused to load {pretrained_model_name_or_path}: its pickle weight file holds objects other than "
                f"tensors ({'; '.join(found) or 'unsupported content'}), which could run code. gptcore never "
                "executes them; re-save the weights as safetensors from a source you trust"
            ) from err

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
        cls, path: str, gpt2_config: dict[str, Any], hub_kwargs: dict[str, Any], model_args: tuple, kwargs: dict[str, Any]
    ) -> Any:
        # dtype is an argument of loading, not a config field ("auto": the dtype the weights are stored in).
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)  # the old name, still accepted
        dtype = dtype or torch_dtype
        config_kwargs = gptcore_config_kwargs_from_gpt2(gpt2_config)
        config, kwargs = cls.config_class.from_dict(config_kwargs, return_unused_kwargs=True, **kwargs)
        source = load_weight_files(path, **hub_kwargs)
        state_dict = gpt2_state_to_gptcore(source, config, f"GPT-2 checkpoint {path}", heads=cls._task_heads)
        if dtype == "auto":
            dtype = gpt2_config.get("dtype") or gpt2_config.get("torch_dtype") or state_dict["transformer.wte.weight"].dtype
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype)
        if dtype is not None:
            kwargs["dtype"] = dtype
        logger.info("converted GPT-2 checkpoint %s to the gptcore layout on load", path)
        return super().from_pretrained(None, *model_args, config=config, state_dict=state_dict, **kwargs)



class GPTCoreModel(GPTCorePreTrainedModel):
    """The bare transformer (no head): `last_hidden_state` of shape (batch, seq_len, n_embd)."""

    def __init__(self, config: GPTCoreConfig) -> None:
        super().__init__(config)
        # Adopt the core's modules as our own children, so checkpoint names stay GPT-2's
        # (`wte`, `h.0.attn.c_attn`, ...), and run them with the core's forward below.
        for name, module in GPTTransformer(config, block_class=GPTCoreBlock).named_children():
            self.add_module(name, module)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.wte = new_embeddings

    @capture_outputs
    @accepts_cache
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        kwargs.pop("output_attentions", None)
        kwargs.pop("output_hidden_states", None)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.config.vocab_size)
            inputs_embeds = self.wte(input_ids)  # (B, T, C)
        elif inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != self.config.n_embd:
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq_len, {self.config.n_embd}), got {tuple(inputs_embeds.shape)}"
            )
        batch, seq_len = inputs_embeds.shape[:2]
        if token_type_ids is not None:  # GPT-2 embeds token types with the token embedding
            inputs_embeds = inputs_embeds + self.wte(token_type_ids.view(batch, seq_len))

        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training and use_cache:
            logger.warning_once("use_cache=True is incompatible with gradient checkpointing; setting use_cache=False")
            use_cache = False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        if position_ids is None:
            past_len = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_len).unsqueeze(0)
        if attention_mask is not None and attention_mask.dim() == 2:
            check_attention_mask(attention_mask, batch, seq_len, cache)
        mask = create_causal_mask(
            self.config, inputs_embeds, attention_mask, cache, position_ids, kwargs.get("cache_position")
        )
        hidden_states = GPTTransformer.forward(
            self,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask=mask,
            cache=cache,
            attention_fn=attention_function(self.config, eager_attention),
            **kwargs,
        )
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **cache_output(cache if use_cache else None))


def check_attention_mask(mask: torch.Tensor, batch: int, seq_len: int, cache: Any) -> None:
    """A 2-D padding mask must cover the cached tokens plus the new ones, one row per sequence."""
    # A StaticCache reports the tokens written so far (in a tensor: reading it inside a compiled graph would
    # break the graph, so compiled code checks the shapes only); generate() may pass a mask as long as its capacity.
    past = cache.get_seq_length() if cache is not None and not torch.compiler.is_compiling() else 0
    if mask.size(0) != batch or mask.size(1) < past + seq_len:
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)} but the input needs ({batch}, {past + seq_len}) "
            f"(batch, cached + new tokens); pass the tokenizer's attention_mask for the same batch"
        )


# The decode-time copy of the LM head (see GPTCoreForCausalLM.generate): per thread and per generate() call, as
# [model, copy or None until a single-row step needs it].
_DECODE_HEAD: ContextVar[list | None] = ContextVar("gptcore_decode_head", default=None)


class GPTCoreForCausalLM(GPTCorePreTrainedModel, GenerationMixin):
    """GPT with its language-model head (tied to the token embedding unless `tie_word_embeddings=False`)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    _task_heads = ("lm_head.weight",)

    def __init__(self, config: GPTCoreConfig) -> None:
        super().__init__(config)
        self.transformer = GPTCoreModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """`GenerationMixin.generate`, unchanged, plus one CPU speed-up: steps that decode a single token
        (batch 1) multiply by an (n_embd, vocab) copy of the LM head's weight, which a CPU matrix-vector
        product reads faster than nn.Linear's (vocab, n_embd) layout; at batch 1 the head is most of a step for
        small models. The copy is made from the current weight at the first such step of a generate() call and
        dropped when the call returns (one extra head of memory meanwhile); it is visible only to that call's thread."""
        if self.lm_head.weight.device.type != "cpu" or not self._is_plain_lm_head():
            return super().generate(*args, **kwargs)
        token = _DECODE_HEAD.set([self, None])
        try:
            return super().generate(*args, **kwargs)
        finally:
            _DECODE_HEAD.reset(token)

    def _decode_head(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """The generate()-time (n_embd, vocab) head copy when it applies to `hidden_states` (one row, not compiling)."""
        if torch.compiler.is_compiling() or hidden_states.shape[:-1].numel() != 1:
            return None
        current = _DECODE_HEAD.get()
        if current is None or current[0] is not self or self.lm_head.weight.dtype != hidden_states.dtype:
            return None
        if current[1] is None:
            current[1] = self.lm_head.weight.detach().t().contiguous()  # (C, V)
        return current[1]

    @can_return_tuple
    @accepts_cache
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        outputs = self.transformer(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        plain_head = self._is_plain_lm_head()
        fuse = labels is not None and plain_head and isinstance(logits_to_keep, int) and logits_to_keep == 0
        if fuse and is_default_causal_lm_loss(self.loss_function):
            # The training call: head and transformers' default loss in one step (see `_fused_causal_lm_loss`).
            logits, loss = self._fused_causal_lm_loss(hidden_states, labels, **kwargs)
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            hidden_states = hidden_states[:, keep, :]
            if not plain_head:
                logits = self.lm_head(hidden_states)
            elif (decode_head := self._decode_head(hidden_states)) is not None:
                logits = hidden_states @ decode_head  # (1, 1, V): see generate()
            else:
                logits = lm_head_logits(hidden_states, self.lm_head.weight)
            loss = None
            if labels is not None:
                loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **cache_output(output_cache(outputs)),
        )

    def _is_plain_lm_head(self) -> bool:
        """True when the head is our own bias-free nn.Linear with nothing hooked into it: then the core's
        faster head functions compute exactly what calling `self.lm_head` would. A wrapped, quantised or
        hooked head (PEFT, bitsandbytes, accelerate offloading) is called as a module instead; so is any
        custom `loss_function` (the fused loss reproduces transformers' default `ForCausalLMLoss` only)."""
        head = self.lm_head
        return (
            type(head) is nn.Linear
            and head.bias is None
            and not (head._forward_hooks or head._forward_pre_hooks or "forward" in vars(head))
        )

    def _fused_causal_lm_loss(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
        ignore_index: int = -100,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(logits, ForCausalLMLoss(logits, labels, ...))` with `logits = self.lm_head(hidden_states)`: the same
        arguments and result (shifted labels or `shift_labels`, `ignore_index`, the sum divided by
        `num_items_in_batch` when given, else the mean over counted tokens, so Trainer's gradient accumulation
        stays exact), computed by the core's `lm_head_cross_entropy`, which never builds the softmax or
        d(loss)/d(logits) of the whole batch at once. The logits keep their values, shape and gradient; their
        memory is vocabulary-major (a transposed view; `.contiguous()` gives the usual layout if needed)."""
        if shift_labels is None:  # tokens < n predict token n; the last position predicts nothing
            shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        shift_labels = shift_labels.to(hidden_states.device)
        logits, loss = lm_head_cross_entropy(hidden_states, self.lm_head.weight, shift_labels, ignore_index)
        if num_items_in_batch is None:
            loss = loss / (shift_labels != ignore_index).sum()  # NaN when nothing is counted, like F.cross_entropy
        else:
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(loss.device)
            loss = loss / num_items_in_batch
        return logits, loss


class GPTCoreForSequenceClassification(GPTCorePreTrainedModel):
    """A linear classifier on the hidden state of each sequence's last real (non-padding) token."""

    _task_heads = ("score.weight",)

    def __init__(self, config: GPTCoreConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPTCoreModel(config)
        self.dropout = nn.Dropout(config.summary_first_dropout)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    @accepts_cache
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutputWithPast:
        outputs = self.transformer(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (B, T, C)
        last = self._last_token_index(input_ids, attention_mask, hidden_states)
        pooled = hidden_states[torch.arange(hidden_states.size(0), device=hidden_states.device), last]  # (B, C)
        logits = self.score(self.dropout(pooled))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **cache_output(output_cache(outputs)),
        )

    def _last_token_index(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, hidden_states: torch.Tensor
    ) -> torch.Tensor:
        """Index of the rightmost real token per row: works for left and right padding alike."""
        batch, seq_len = hidden_states.shape[:2]
        if attention_mask is not None and attention_mask.dim() == 2:
            real = attention_mask[:, -seq_len:].to(hidden_states.device).bool()
        elif input_ids is not None and self.config.pad_token_id is not None:
            real = input_ids.to(hidden_states.device) != self.config.pad_token_id
        else:
            return torch.full((batch,), seq_len - 1, device=hidden_states.device)
        if real.device.type == "cpu" and not torch.compiler.is_compiling():  # a host read: free on CPU only
            if not bool(real.any(dim=1).all()):
                raise ValueError("a row of the batch has no real tokens (all padding); remove empty sequences")
        positions = torch.arange(seq_len, device=hidden_states.device)
        return (positions * real).argmax(dim=-1)


__all__ = ["GPTCorePreTrainedModel", "GPTCoreModel", "GPTCoreForCausalLM", "GPTCoreForSequenceClassification"]
