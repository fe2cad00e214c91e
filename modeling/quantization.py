"""int8 weight-only decoding through torchao, an optional dependency (`pip install 'gptcore[int8]'`): it is imported
only when a model is quantised, and the wrapper's files never import this module, so a saved checkpoint's code needs
no torchao.

Two ways in, both torchao's int8 weight-only scheme (one scale per output row, activations stay in float):

    # transformers' integration: every block's linear layers; the LM head, tied to the token embedding, stays float
    model = GPTCoreForCausalLM.from_pretrained(path, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))
    # one call on a loaded model, which by default also quantises the LM head (see `quantize_int8`)
    from gptcore.modeling.quantization import quantize_int8
    model = quantize_int8(GPTCoreForCausalLM.from_pretrained(path))
"""

from __future__ import annotations

from typing import Any

from torch import nn


def require_torchao() -> Any:
    """The torchao module, or an ImportError that says how to install it."""
    try:
        import torchao
    except ImportError as err:
        raise ImportError(f"int8 decoding needs torchao: pip install 'gptcore[int8]' ({err})") from err
    return torchao


def quantize_int8(model: nn.Module, head: bool = True) -> nn.Module:
    """Quantise `model`'s linear layers to int8 weight-only with torchao, in place, and return it.

    With `head=True` the LM head is quantised too. A batch-1 decoding step reads every weight once, and GPT-2's head
    (vocab x n_embd, tied to the token embedding) is about a third of GPT-2 124M's weights: kept in fp32, it would be
    most of an int8 step's bytes. Since the embedding lookup needs the float table, the head becomes an untied int8
    copy (`config.tie_word_embeddings` is set to False; one more vocab x n_embd of int8 memory), as llama.cpp's q8_0
    files quantise their output matrix. The model is for inference: its weights no longer train.
    """
    require_torchao()
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    if head and model.config.tie_word_embeddings:
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
    head_module = model.get_output_embeddings()

    def is_linear(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and (head or module is not head_module)

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=is_linear)
    return model
