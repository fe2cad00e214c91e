"""`GPTCoreConfig`: GPT-2's hyper-parameters, under GPT-2's names, as a transformers config."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from .compat import CACHE_KEYS

# Checked at construction. Integer fields, name -> smallest allowed value (each must be an int, and not a bool:
# booleans are ints in Python, hence the explicit test); dropout probabilities, each in [0, 1).
_INT_FIELDS = {"vocab_size": 1, "n_positions": 1, "n_embd": 1, "n_layer": 1, "n_head": 1}
_PROB_FIELDS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout")


class GPTCoreConfig(PreTrainedConfig):
    """Configuration of a gptcore model. Defaults give GPT-2 small (124M).

    Field names are GPT-2's, so a GPT-2 `config.json` reads as-is; `hidden_size`,
    `num_hidden_layers`, `num_attention_heads` and `max_position_embeddings` are aliases.
    """

    model_type = "gptcore"
    keys_to_ignore_at_inference = CACHE_KEYS  # output keys Trainer's evaluation leaves out of predictions
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    def __init__(
        self,
        vocab_size: int = 50257,
        n_positions: int = 1024,
        n_embd: int = 768,
        n_layer: int = 12,
        n_head: int = 12,
        n_inner: int | None = None,
        activation_function: str = "gelu_new",
        resid_pdrop: float = 0.1,
        embd_pdrop: float = 0.1,
        attn_pdrop: float = 0.1,
        layer_norm_epsilon: float = 1e-5,
        initializer_range: float = 0.02,
        summary_first_dropout: float = 0.1,
        use_cache: bool = True,
        bos_token_id: int | None = 50256,
        eos_token_id: int | None = 50256,
        pad_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.n_positions = n_positions
        self.n_embd = n_embd
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_inner = n_inner
        self.activation_function = activation_function
        self.resid_pdrop = resid_pdrop
        self.embd_pdrop = embd_pdrop
        self.attn_pdrop = attn_pdrop
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        # A GPT-2 field, kept so configs round-trip; no sequence classifier reads it (GPT-2's double-heads model does)
        self.summary_first_dropout = summary_first_dropout
        self.use_cache = use_cache
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)
        self.validate_gptcore()

    def validate_gptcore(self) -> None:
        """Reject values the model cannot be built from, naming the field and what to do."""
        for name, minimum in _INT_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"GPTCoreConfig.{name} must be an integer, got {value!r} ({type(value).__name__})")
            if value < minimum:
                raise ValueError(f"GPTCoreConfig.{name} must be >= {minimum}, got {value}")
        if self.n_inner is not None and (
            isinstance(self.n_inner, bool) or not isinstance(self.n_inner, int) or self.n_inner < 1
        ):
            raise ValueError(
                f"GPTCoreConfig.n_inner must be a positive integer or None (= 4 * n_embd), got {self.n_inner!r}"
            )
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTCoreConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"each head gets n_embd / n_head dimensions"
            )
        for name in _PROB_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"GPTCoreConfig.{name} is a dropout probability and must be in [0, 1), got {value!r}")
        if not isinstance(self.layer_norm_epsilon, (int, float)) or self.layer_norm_epsilon <= 0:
            raise ValueError(f"GPTCoreConfig.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range < 0:
            raise ValueError(f"GPTCoreConfig.initializer_range must be >= 0, got {self.initializer_range!r}")
        # The core owns the list of activations it implements. Releases before 5.10 copy only a remote-code file's
        # direct relative imports, so the core's own sibling import is named here too.
        from .core import ACTIVATIONS
        from .input_checks import check_token_ids  # noqa: F401

        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"GPTCoreConfig.activation_function={self.activation_function!r} is not supported; "
                f"use one of {sorted(ACTIVATIONS)}"
            )
        # Special token ids outside the vocabulary only draw transformers' own warning, as for GPT2Config:
        # tiny test configs routinely keep GPT-2's 50256. Token ids actually fed to the model are checked.
