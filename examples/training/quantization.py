"""int8 weight-only decoding through torchao (optional: `pip install 'gptcore[int8]'`), and how close its greedy
tokens stay to the full-precision model's.

Two ways in, both torchao's int8 weight-only scheme (one scale per output row, activations stay in float):

    # transformers' integration: every block's linear layers; the LM head, tied to the token embedding, stays float
    model = GPTCoreForCausalLM.from_pretrained(path, quantization_config=TorchAoConfig(Int8WeightOnlyConfig()))
    # one call on a loaded model, which by default also quantises the LM head (see `quantize_int8`)
    model = quantize_int8(GPTCoreForCausalLM.from_pretrained(path))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
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


@torch.no_grad()
def next_token_agreement(model: nn.Module, reference: nn.Module, ids: torch.Tensor, block: int) -> dict[str, Any]:
    """Teacher-forced greedy agreement: over `ids` (1-D) cut into windows of `block` tokens, the share of positions at
    which `model` and `reference` predict the same next token (argmax). Each window is a fresh context."""
    agree = total = 0
    for start in range(0, ids.numel() - 1, block):
        window = ids[start : start + block][None].to(model.device)
        if window.size(1) < 2:
            break
        ours, theirs = model(window).logits.argmax(-1), reference(window).logits.argmax(-1)
        agree += int((ours == theirs).sum())
        total += ours.numel()
    return {"agreement": agree / total, "positions": total, "block": block}


def text_token_ids(path: str | Path, vocab_size: int, max_tokens: int) -> torch.Tensor:
    """The first `max_tokens` GPT-2 tokens of a text file, as a 1-D tensor; folded into [0, vocab_size) for models
    with a smaller vocabulary (tiny test configs: their tokens then mean nothing, which random weights don't mind)."""
    from gptcore.tokenization import gpt2_tokenizer

    text = Path(path).read_text(encoding="utf-8")[: max_tokens * 8]  # ~4 characters a token: enough text, no more
    ids = torch.tensor(gpt2_tokenizer()(text)["input_ids"][:max_tokens])
    return ids % vocab_size
