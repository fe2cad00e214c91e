"""gptcore's model. Importing this package registers it with transformers' Auto classes.

The core (`gptcore.modeling.core`: `GPT`, `GPTConfig`, `KVCache`) is plain PyTorch and works where transformers
is not installed; there the package offers the core alone, and the transformers classes say what they need.
"""

from .core import GPT, GPTConfig, KVCache

try:
    import transformers  # noqa: F401
except ModuleNotFoundError as error:
    if error.name != "transformers":  # transformers is installed but cannot import one of its own dependencies
        raise
    _MISSING_TRANSFORMERS: ModuleNotFoundError | None = error
else:
    _MISSING_TRANSFORMERS = None

    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    from .compat import add_to_transformers_namespace
    from .configuration_gptcore import GPTCoreConfig
    from .modeling_gptcore import (
        GPTCoreForCausalLM,
        GPTCoreForSequenceClassification,
        GPTCoreModel,
        GPTCorePreTrainedModel,
    )
    from .presets import PRESETS, preset_config

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

    # `transformers serve` looks a checkpoint's class up by name in the transformers module (see compat).
    add_to_transformers_namespace(GPTCoreModel, GPTCoreForCausalLM, GPTCoreForSequenceClassification)


def __getattr__(name: str) -> object:  # reached only for names the import did not define
    if name in __all__ and _MISSING_TRANSFORMERS is not None:  # a name of the transformers face
        raise ImportError(
            f"gptcore.modeling.{name} is the transformers face of the model and needs transformers, which cannot be "
            f"imported here ({_MISSING_TRANSFORMERS}). Install it (pip install 'transformers>=5'), or use the "
            "PyTorch core alone: from gptcore.modeling.core import GPT, GPTConfig"
        ) from _MISSING_TRANSFORMERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
