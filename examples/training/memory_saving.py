"""Memory-saving fine-tuning, one flag each, for every fine-tuning script: a quantised frozen base under LoRA
adapters (QLoRA: bitsandbytes 4-bit nf4 or 8-bit; torchao int8 weight-only), or the GaLore optimizer, whose AdamW
states for the blocks' matrices live in a low-rank projection of their gradients.

A script adds `MemorySavingArguments` to its arguments and calls, around its model loading:

    quantization = quantization_config(saving, lora_args.lora, training_args)  # checks the combination
    model, tokenizer = load_model_and_tokenizer(GPTCoreForCausalLM, model_args, quantization_config=quantization)
    model = prepare_for_training(model, saving, training_args)  # before the LoRA adapters are added

The libraries do the work (optional: `pip install 'gptcore[post-training]'`): transformers loads the quantised weights
(`BitsAndBytesConfig`, `TorchAoConfig`), PEFT freezes them and adds the adapters, and transformers' Trainer builds
GaLore's optimizer from `optim="galore_adamw"` and `optim_target_modules`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from torch import nn
from transformers import TrainingArguments
from transformers.training_args import OptimizerNames

from gptcore.modeling.compat import trainer_trains_on_quantized_base
from gptcore.training.memory_estimate import FINETUNING_MODES

# What --galore puts in GaLore's low-rank group: every block's attention and MLP matrices, by module name (a regular
# expression that transformers' Trainer matches against each nn.Linear's full name).
GALORE_TARGETS = r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
# What each of the estimator's fine-tuning modes (gptcore.training.memory_estimate.FINETUNING_MODES) sets.
_MODE_FLAGS = {"qlora-4bit": "load_in_4bit", "qlora-8bit": "load_in_8bit", "int8-lora": "int8", "galore": "galore"}


@dataclass
class MemorySavingArguments:
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": "QLoRA: load the base weights in 4 bits (bitsandbytes nf4, double quantisation), frozen; "
            "needs --lora, which trains adapters on top."
        },
    )
    load_in_8bit: bool = field(
        default=False,
        metadata={"help": "Load the base weights in 8 bits (bitsandbytes LLM.int8), frozen; needs --lora."},
    )
    int8: bool = field(
        default=False,
        metadata={"help": "Load the base weights as torchao int8 weight-only (one scale a row), frozen; needs --lora."},
    )
    galore: bool = field(
        default=False,
        metadata={
            "help": "Train all weights with GaLore AdamW: the blocks' matrices keep low-rank optimizer states "
            "(--galore_rank); the embeddings (the tied LM head), LayerNorms and biases keep plain AdamW states."
        },
    )
    galore_rank: int = field(default=128, metadata={"help": "Rank of GaLore's gradient projection."})
    galore_update_proj_gap: int = field(default=200, metadata={"help": "Steps between renewing GaLore's projections."})
    galore_scale: float = field(default=0.25, metadata={"help": "Scale of GaLore's low-rank update."})

    @property
    def quantized(self) -> str | None:
        """The flag that quantises the base, without its dashes, or None."""
        chosen = [name for name in ("load_in_4bit", "load_in_8bit", "int8") if getattr(self, name)]
        return chosen[0] if chosen else None

    @classmethod
    def for_mode(cls, mode: str, galore_rank: int = 128) -> tuple[bool, MemorySavingArguments]:
        """(whether LoRA trains, the arguments) of one of the estimator's FINETUNING_MODES."""
        if mode not in FINETUNING_MODES:
            raise ValueError(f"unknown fine-tuning mode {mode!r}; use one of {', '.join(FINETUNING_MODES)}")
        flags = {_MODE_FLAGS[mode]: True} if mode in _MODE_FLAGS else {}
        return mode not in ("full", "galore"), cls(**flags, galore_rank=galore_rank)


def check_memory_saving(args: MemorySavingArguments, lora: bool, training: TrainingArguments) -> None:
    """Refuse a combination that cannot train, saying what to pass instead."""
    chosen = [f"--{name}" for name in ("load_in_4bit", "load_in_8bit", "int8", "galore") if getattr(args, name)]
    if len(chosen) > 1:
        raise ValueError(
            f"{' and '.join(chosen)} cannot be combined: the base is quantised one way (--load_in_4bit, --load_in_8bit "
            "or --int8, each with --lora) or all weights train with --galore; pass one of them"
        )
    if args.quantized and not lora:
        raise ValueError(
            f"--{args.quantized} freezes the base weights in a quantised form, which cannot be fine-tuned in full; "
            "add --lora to train adapters on top of them (QLoRA), or drop the flag"
        )
    if args.galore:
        if lora:
            raise ValueError(
                "--galore trains every weight with low-rank optimizer states; --lora trains adapters instead. Pass one"
            )
        if args.galore_rank < 1 or args.galore_update_proj_gap < 1:
            raise ValueError(
                f"--galore_rank and --galore_update_proj_gap must be >= 1, got {args.galore_rank} and "
                f"{args.galore_update_proj_gap}"
            )
        if training.optim not in (OptimizerNames.ADAMW_TORCH, OptimizerNames.ADAMW_TORCH_FUSED):
            given = OptimizerNames(training.optim).value
            raise ValueError(f"--galore picks the optimizer (galore_adamw); drop --optim {given}")
    if args.load_in_4bit or args.load_in_8bit:
        bitsandbytes = _require("bitsandbytes", f"--{args.quantized}")
        device = training.device.type
        if device not in bitsandbytes.supported_torch_devices:
            raise ValueError(
                f"bitsandbytes {bitsandbytes.__version__} has no kernels for {device}; it runs on "
                f"{', '.join(sorted(bitsandbytes.supported_torch_devices))}. Use --int8 (torchao) + --lora, or --galore"
            )


def quantization_config(
    args: MemorySavingArguments, lora: bool, training: TrainingArguments, trainer: bool = True
) -> Any:
    """Check the combination (`check_memory_saving`), then the `quantization_config` for `from_pretrained` that the
    flags ask for (None without a quantising flag). `trainer`: the model will train under transformers' Trainer,
    which must accept that base (a loop of one's own need not ask)."""
    check_memory_saving(args, lora, training)
    config = _quantization_config(args, training)
    if config is not None and trainer and not trainer_trains_on_quantized_base(config):
        raise ValueError(
            f"--{args.quantized}: this transformers release ({transformers.__version__}) has Trainer refuse to train "
            "adapters on that base; upgrade transformers, or use --load_in_8bit or --load_in_4bit"
        )
    return config


def _quantization_config(args: MemorySavingArguments, training: TrainingArguments) -> Any:
    if args.load_in_4bit or args.load_in_8bit:
        from transformers import BitsAndBytesConfig

        if args.load_in_8bit:
            return BitsAndBytesConfig(load_in_8bit=True)
        # QLoRA's recipe: 4-bit NormalFloat, its block scales quantised too; the products run in the training
        # precision (the 4-bit weights are dequantised block by block into it).
        compute = torch.bfloat16 if training.bf16 else torch.float16 if training.fp16 else torch.float32
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
        )
    if args.int8:
        _require("torchao", "--int8")
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())  # what gptcore.modeling.quantization decodes with
    return None


def prepare_for_training(model: Any, args: MemorySavingArguments, training: TrainingArguments) -> Any:
    """After loading and before any LoRA adapters: a quantised base is frozen and readied for adapters by PEFT
    (`prepare_model_for_kbit_training`); --galore sets `training`'s optimizer to GaLore AdamW on the blocks'
    matrices. Prints what was done. Returns the model."""
    if args.quantized:
        from peft import prepare_model_for_kbit_training

        if args.load_in_8bit:
            # LLM.int8 multiplies in fp16 by design, and bitsandbytes logs that on every call of every layer.
            logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        if args.load_in_4bit:
            keep_4bit_weights_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training.gradient_checkpointing)
        print(f"--{args.quantized}: {describe_quantized_base(model)}; the base is frozen, LoRA adapters train")
    if args.galore:
        use_galore(model, args, training)
    return model


def keep_4bit_weights_trainable(model: nn.Module) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight for its inference kernel at the layer's
    first forward in eval mode without gradients (the evaluation before training), and that layout has no backward
    pass: training after it fails ("a view of a leaf Variable ... in-place operation"), and a layer narrower than
    one 64-weight block cannot be repacked at all. Training keeps the layout every device trains with."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def describe_quantized_base(model: nn.Module) -> str:
    """How many linear layers hold quantised weights, of which kind, and what stays in floating point."""
    kinds: dict[str, int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and type(weight) not in (nn.Parameter, torch.Tensor):
            kinds[type(weight).__name__] = kinds.get(type(weight).__name__, 0) + 1
    if not kinds:
        raise ValueError("no weight of the model was quantised while loading; is it a gptcore model?")
    found = ", ".join(f"{count} x {kind}" for kind, count in kinds.items())
    return f"quantised linear layers {found}; embeddings, the tied LM head, LayerNorms and biases stay floating point"


def galore_groups(model: nn.Module, rank: int) -> dict[str, list[str]]:
    """Which parameters GaLore's low-rank group gets ("galore": the blocks' matrices) and which plain AdamW states
    ("adamw"), by name, as transformers' Trainer splits them: the weights of the nn.Linear modules whose full name
    matches GALORE_TARGETS; every other parameter, the tied token embedding / LM head among them, goes to the
    other group."""
    targets = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and re.fullmatch(GALORE_TARGETS, name)
    }
    if not targets:
        raise ValueError("--galore found none of the blocks' attention/MLP matrices; it needs a gptcore model")
    smallest = min(min(p.shape) for n, p in model.named_parameters() if n in targets)
    if rank >= smallest:
        raise ValueError(
            f"--galore_rank {rank} is not below the smallest matrix side ({smallest}): the optimizer states would not "
            "be smaller than the full ones; pass a smaller --galore_rank"
        )
    names = [name for name, _ in model.named_parameters()]  # a tied weight is listed once, under its first name
    return {"galore": [n for n in names if n in targets], "adamw": [n for n in names if n not in targets]}


def use_galore(model: nn.Module, args: MemorySavingArguments, training: TrainingArguments) -> None:
    """Make `training` build GaLore AdamW (transformers' integration of galore-torch) with the blocks' matrices in the
    low-rank group, and print the split. The token embedding, which the LM head shares, is listed once, as the
    embedding, so a module-name match on the head never reaches it: it is left out on purpose and keeps plain AdamW
    states, as GaLore's authors project the attention and MLP matrices only."""
    _require("galore_torch", "--galore")
    groups = galore_groups(model, args.galore_rank)
    training.optim = OptimizerNames.GALORE_ADAMW
    training.optim_target_modules = GALORE_TARGETS
    training.optim_args = (
        f"rank={args.galore_rank},update_proj_gap={args.galore_update_proj_gap},scale={args.galore_scale}"
    )
    sizes = dict(model.named_parameters())
    count = {group: sum(sizes[n].numel() for n in names) for group, names in groups.items()}
    head = model.get_output_embeddings().weight
    tied = head is model.get_input_embeddings().weight
    head_text = (
        f"the token embedding, which the tied LM head shares ({' x '.join(map(str, head.shape))})"
        if tied
        else f"the token embedding and the untied LM head ({' x '.join(map(str, head.shape))})"
    )
    print(
        f"--galore: GaLore AdamW, rank {args.galore_rank}, projections renewed every {args.galore_update_proj_gap} "
        f"steps, on {len(groups['galore'])} block matrices ({count['galore']:,} weights); plain AdamW states for the "
        f"other {count['adamw']:,} weights: {head_text}, the position embedding, LayerNorms and biases"
    )


def _require(module: str, flag: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{flag} needs {module}: pip install 'gptcore[post-training]' ({err})") from err
