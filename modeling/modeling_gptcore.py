"""The transformers face of the core: HF arguments in, HF output classes out.

Everything numerical lives in `core.py`. This file fills the core's two seams from transformers
(the attention function from `ALL_ATTENTION_FUNCTIONS`, the KV cache from `Cache`), builds masks with
`create_causal_mask`, computes losses with `self.loss_function`, and records hidden states and
attention weights with transformers' output-capturing hooks. It imports only torch, transformers and
its sibling files, so `save_pretrained` can copy it next to a checkpoint for `trust_remote_code`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.utils import logging

from .compat import (
    ALL_ATTENTION_FUNCTIONS,
    CACHE_KEYS,
    GradientCheckpointingLayer,
    OutputRecorder,
    accepts_cache,
    cache_output,
    can_return_tuple,
    capture_outputs,
    create_causal_mask,
    holds_weights_quantized_while_loading,
    is_default_causal_lm_loss,
    is_paged_cache,
    output_cache,
    paged_attention,
    registered_auto_class,
)
from .configuration_gptcore import GPTCoreConfig
from .core import Block, CausalSelfAttention, GPTTransformer, eager_attention, init_weights
from .fast_head import lm_head_cross_entropy, lm_head_logits

# Releases before 5.10 copy only this file's *direct* relative imports when loading remote code, so
# every sibling module used indirectly is imported here too.
from .gpt2_checkpoint import HEADS  # noqa: E402,F401  (used by loading)
from .input_checks import check_token_ids
from .loading import CheckpointLoadingMixin, CheckpointMismatchError  # noqa: F401  (the error is part of the API)
from .weight_mapping import apply_rules  # noqa: E402,F401  (used by gpt2_checkpoint)

logger = logging.get_logger(__name__)

_AUTO_MAP = {
    "AutoConfig": "configuration_gptcore.GPTCoreConfig",
    "AutoModel": "modeling_gptcore.GPTCoreModel",
    "AutoModelForCausalLM": "modeling_gptcore.GPTCoreForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gptcore.GPTCoreForSequenceClassification",
}


class GPTCoreAttention(CausalSelfAttention):
    """The core's attention, with its attention function looked up where transformers' own models look it up: in this
    forward, from `config._attn_implementation` (eager, sdpa, flash, flex, or a runtime's own, such as vLLM's).
    Runtimes built on transformers' attention interface find the lookup and its one call there."""

    def __init__(self, config: GPTCoreConfig, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.config = config

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: Any = None,
        cache: Any = None,
        attention_fn: Any = None,
        paged_cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = self.project_qkv(x, cache)  # 3 x (B, H, T, D)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention)
        if attention_fn is not None:  # the core's seam, still open to a caller
            attention_interface = attention_fn
        if paged_cache is not None:  # continuous batching: the paged cache takes the new keys and values first
            attention_interface = paged_attention(attention_interface, paged_cache)
        y, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attn_dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # (B, T, H, D)
        return self.project_out(y, x.shape), weights


class GPTCoreBlock(GradientCheckpointingLayer, Block):
    """The core's transformer block on transformers' checkpointing base class, so that
    `gradient_checkpointing_enable()` recomputes each block in the backward pass."""

    attention_class = GPTCoreAttention


class GPTCorePreTrainedModel(CheckpointLoadingMixin, PreTrainedModel):
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
    _can_record_outputs = {
        "hidden_states": GPTCoreBlock,
        "attentions": OutputRecorder(CausalSelfAttention, index=1),
    }

    def _init_weights(self, module: nn.Module) -> None:
        if holds_weights_quantized_while_loading(module):  # its values came from the checkpoint
            return
        init_weights(module, self.config)

    def save_pretrained(self, save_directory: str | Any, *args: Any, **kwargs: Any) -> Any:
        # Name every Auto class, so the folder loads with any of them under trust_remote_code
        # (transformers itself only records the class that was saved).
        if registered_auto_class(self) is not None:
            self.config.auto_map = {**_AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)


class GPTCoreModel(GPTTransformer, GPTCorePreTrainedModel):
    """The core's `GPTTransformer` as a transformers model (no head): the same modules under GPT-2's names
    (`wte`, `h.0.attn.c_attn`, ...) and the core's forward, with transformers' arguments, masks, cache and
    outputs around it. Returns `last_hidden_state` of shape (batch, seq_len, n_embd)."""

    def __init__(self, config: GPTCoreConfig) -> None:
        GPTCorePreTrainedModel.__init__(self, config)  # transformers' bookkeeping first: it initialises nn.Module
        self.build(config, block_class=GPTCoreBlock)  # then the core's modules, with checkpointable blocks
        self.gradient_checkpointing = False  # switched by gradient_checkpointing_enable()
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
                f"inputs_embeds must have shape (batch, seq_len, {self.config.n_embd}), got "
                f"{tuple(inputs_embeds.shape)}"
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
        paged_cache = None
        if is_paged_cache(cache):
            # Continuous batching: the requests, packed into one row, share a paged cache that each attention layer
            # updates (see compat.paged_attention). Their position_ids and mask come ready-made (no mask where the
            # kernel needs none), which transformers' mask building would return as they are.
            paged_cache, cache, mask = cache, None, attention_mask
        else:
            if position_ids is None:
                past_len = cache.get_seq_length() if cache is not None else 0
                position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_len).unsqueeze(0)
            if attention_mask is not None and attention_mask.dim() == 2:
                check_attention_mask(attention_mask, batch, seq_len, cache)
            mask = create_causal_mask(
                self.config, inputs_embeds, attention_mask, cache, position_ids, kwargs.get("cache_position")
            )
        hidden_states = super().forward(  # GPTTransformer.forward
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask=mask,
            cache=cache,
            paged_cache=paged_cache,  # read by GPTCoreAttention
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
        """`GenerationMixin.generate`, unchanged, plus one CPU speed-up for fp32 weights: steps that decode a single
        token (batch 1) multiply by an (n_embd, vocab) copy of the LM head's weight, which a CPU matrix-vector product
        reads faster than nn.Linear's (vocab, n_embd) layout; at batch 1 the head is most of a step for small models.
        The copy is made from the current weight at the first such step of a generate() call and dropped when the call
        returns (one extra head of memory meanwhile); it is visible only to that call's thread. Making it costs about
        as much as two dozen steps gain, so it pays from a few dozen new tokens (pipeline's and chat's defaults), not
        for a handful; in bf16 the layout gains nothing, so bf16 weights never get a copy."""
        head = self.lm_head.weight
        if head.device.type != "cpu" or head.dtype != torch.float32 or not self._is_plain_lm_head():
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
        custom `loss_function` (the fused loss reproduces transformers' default `ForCausalLMLoss` only), and a head
        whose weight is a tensor subclass (torchao's `quantize_` puts int8 weights into the nn.Linear that way)."""
        head = self.lm_head
        return (
            type(head) is nn.Linear
            and head.bias is None
            and type(head.weight) in (nn.Parameter, torch.Tensor)
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
    """A linear classifier on the hidden state of each sequence's last real token, as `GPT2ForSequenceClassification`
    (no dropout before `score`: the same model trains the same way under `Trainer`).

    "Real" is read from the attention mask when there is one, else from `pad_token_id`; GPT-2 reads the last token
    that is not `pad_token_id` whatever the mask says. The two agree unless the pad token also stands for something
    in the text: with pad = EOS (GPT-2 has no pad token) and a sequence that ends with EOS, as TRL's reward trainer
    writes them, gptcore pools that EOS and GPT-2 the token before it. Left and right padding both work here.
    """

    _task_heads = ("score.weight",)

    def __init__(self, config: GPTCoreConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPTCoreModel(config)
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
        logits = self.score(pooled)  # (B, num_labels)
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
