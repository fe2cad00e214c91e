"""LoRA (PEFT) fine-tuning of gptcore: adapters on the attention and MLP projections, and merging them back
into a plain checkpoint that loads without PEFT."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptcore.modeling import GPTCoreForCausalLM

# Beyond this, the merged model computes something else than the adapter model, not the same thing rounded
# differently (the merge is exact up to float rounding of one added product per weight).
MERGE_TOLERANCE = 1e-3


@dataclass
class LoraArguments:
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str = field(
        default="c_attn,c_proj,c_fc", metadata={"help": "Comma-separated module names to adapt."}
    )


def lora_config(args: LoraArguments) -> Any:
    """PEFT's LoraConfig for a causal LM: adapters on `args.lora_target_modules`. Trainers that wrap the model
    themselves (TRL's take `peft_config=`) get this; others call `add_lora`."""
    from peft import LoraConfig, TaskType  # an optional dependency: only --lora needs it

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules.split(","),
    )


def add_lora(model: GPTCoreForCausalLM, args: LoraArguments) -> Any:
    """`model` wrapped by PEFT, with trainable adapters on `args.lora_target_modules` and everything else frozen."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(args))


@torch.no_grad()
def merge_lora(
    peft_model: Any, batch: dict[str, torch.Tensor], merged_dir: Path, tokenizer: Any
) -> tuple[GPTCoreForCausalLM, float]:
    """Fold the adapters into the weights, save a plain checkpoint, reload it, and check it computes the
    same logits on `batch` as the adapter model (returns the largest absolute difference)."""
    peft_model.eval()
    expected = peft_model(**batch).logits
    peft_model.merge_and_unload().save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    merged = GPTCoreForCausalLM.from_pretrained(merged_dir).to(expected.device).eval()
    difference = (merged(**batch).logits - expected).abs().max().item()
    if difference > MERGE_TOLERANCE:
        raise RuntimeError(
            f"the merged model in {merged_dir} differs from the LoRA model by {difference:.2e} in the logits"
        )
    return merged, difference
