"""gptcore's model as a transformers model. Importing this package registers it with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
)

from .configuration_gptcore import GPTCoreConfig
from .core import GPT, GPTConfig, KVCache
from .presets import PRESETS, preset_config
from .modeling_gptcore import (
    GPTCoreForCausalLM,
    GPTCoreForSequenceClassification,
    GPTCoreModel,
    GPTCorePreTrainedModel,
)

AutoConfig.register(GPTCoreConfig.model_type, GPTCoreConfig, exist_ok=True)
AutoModel.register(GPTCoreConfig, GPTCoreModel, exist_ok=True)
AutoModelForCausalLM.register(GPTCoreConfig, GPTCoreForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(GPTCoreConfig, GPTCoreForSequenceClassification, exist_ok=True)

# save_pretrained() then writes `auto_map` and copies the modeling files next to the weights, so a
# checkpoint also loads with trust_remote_code=True where gptcore is not installed.
GPTCoreConfig.register_for_auto_class()
GPTCoreModel.register_for_auto_class("AutoModel")
GPTCoreForCausalLM.register_for_auto_class("AutoModelForCausalLM")
GPTCoreForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "GPTCoreConfig",
    "GPTCorePreTrainedModel",
    "GPTCoreModel",
    "GPTCoreForCausalLM",
    "GPTCoreForSequenceClassification",
    "PRESETS",
    "preset_config",
]
