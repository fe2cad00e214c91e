"""What the example scripts share on their command line: which checkpoint and tokenizer a script starts from (the
shared arguments and their loading), and the check that a run's --output_dir holds no other run."""

from __future__ import annotations

import argparse
import ast
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import AutoTokenizer, HfArgumentParser, PreTrainedTokenizerBase

from gptcore.modeling import PRESETS, GPTCoreConfig, GPTCorePreTrainedModel, preset_config
from gptcore.tokenization import gpt2_tokenizer

logger = logging.getLogger(__name__)

PRETRAIN_OUTPUT = "runs/pretrain/final"  # where examples/pretrain.py writes its final checkpoint
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")

M = TypeVar("M", bound=GPTCorePreTrainedModel)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A gptcore or transformers GPT-2 checkpoint: a folder (e.g. examples/pretrain.py's "
            f"{PRETRAIN_OUTPUT}) or a Hub id. Other layouts (nanoGPT, OpenAI TF, ...): convert first with "
            "`python -m gptcore.conversion`."
        },
    )
    config: str | None = field(
        default=None,
        metadata={
            "help": "Without --model_name_or_path: start from random weights of this size, one of "
            f"{', '.join(PRESETS)}, "
            "or a config.json. --config_overrides alone changes the script's default size: cpu-small unless its "
            "description names another."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Without --model_name_or_path: change fields of --config, e.g. 'n_layer=2,n_head=2,n_embd=64' "
            "(GPT-2's field names; any GPTCoreConfig field)."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer folder or Hub id. Default: the checkpoint's own tokenizer, else gptcore's bundled "
            "GPT-2 one."
        },
    )

    @property
    def random_init(self) -> bool:
        """Whether the model starts from random weights (a size was named) rather than a checkpoint."""
        return self.model_name_or_path is None and (self.config is not None or self.config_overrides is not None)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default, and the script's description with its line breaks (its examples)."""


def parse_args(*dataclass_types: type, description: str | None = None) -> tuple[Any, ...]:
    """Parse the command line into the given dataclasses (`script.py config.json` reads them from a file);
    `description` (the script's docstring) heads --help."""
    parser = HfArgumentParser(dataclass_types, description=description, formatter_class=_HelpFormatter)
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(json_file=sys.argv[1])
    return parser.parse_args_into_dataclasses()


def check_output_dir(output_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder: a non-empty `output_dir` needs `resume` or `overwrite`."""
    folder = Path(output_dir)
    if folder.is_dir() and any(folder.iterdir()) and not resume and not overwrite:
        raise ValueError(
            f"output directory {folder} is not empty; pass --resume_from_checkpoint to continue the run there, "
            "--overwrite_output_dir to start over in it, or another --output_dir"
        )


def parse_config_overrides(text: str) -> dict[str, Any]:
    """'n_layer=2,activation_function=gelu_new' -> {'n_layer': 2, 'activation_function': 'gelu_new'}."""
    known = GPTCoreConfig().to_dict()
    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ValueError(f"--config_overrides needs comma-separated key=value pairs, got {item!r} in {text!r}")
        if key not in known:
            raise ValueError(
                f"--config_overrides: {key!r} is not a GPTCoreConfig field; use GPT-2's names (n_layer, n_embd, ...)"
            )
        words = {"true": True, "false": False, "none": None, "null": None}
        if value.lower() in words:
            fields[key] = words[value.lower()]
            continue
        try:
            fields[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            fields[key] = value  # a plain string such as gelu_new
    return fields


def _missing_checkpoint(path: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"no checkpoint at {path!r}: pass --model_name_or_path a folder with config.json and weights "
        f"(examples/pretrain.py writes {PRETRAIN_OUTPUT}; other layouts convert with `python -m gptcore.conversion`), "
        "or --config_overrides to start from random weights"
    )


def load_config(
    args: ModelArguments,
    default_config: str = "cpu-small",
    defaults: dict[str, Any] | None = None,
    **config_kwargs: Any,
) -> GPTCoreConfig:
    """The checkpoint's config, or for random weights --config (a preset or a JSON file; `default_config` when not
    given) with `defaults` (a script's choices, e.g. no dropout), then --config_overrides, then `config_kwargs`
    (what the script must set, e.g. the number of labels) applied in that order."""
    if args.model_name_or_path and (args.config or args.config_overrides):
        raise ValueError(
            "--model_name_or_path brings its own config; drop --config/--config_overrides (they are for random weights)"
        )
    if args.model_name_or_path:
        try:
            return GPTCoreConfig.from_pretrained(args.model_name_or_path, **config_kwargs)
        except OSError:
            raise _missing_checkpoint(args.model_name_or_path) from None
    name = args.config or default_config
    if name in PRESETS:
        base = {**preset_config(name).to_dict(), **(defaults or {})}
    elif Path(name).is_file():
        # Fields the file sets win over the script's defaults: the user wrote them.
        base = {**GPTCoreConfig().to_dict(), **(defaults or {}), **GPTCoreConfig.get_config_dict(name)[0]}
    else:
        raise FileNotFoundError(
            f"--config {name!r} is neither a model size ({', '.join(PRESETS)}) nor an existing JSON file"
        )
    overrides = parse_config_overrides(args.config_overrides) if args.config_overrides else {}
    return GPTCoreConfig.from_dict({**base, **overrides, **config_kwargs})  # validates every field


def load_model(
    model_class: type[M],
    args: ModelArguments,
    defaults: dict[str, Any] | None = None,
    quantization_config: Any = None,
    **config_kwargs: Any,
) -> M:
    """`model_class` from the checkpoint (gptcore or transformers GPT-2 layout), or randomly initialised when
    --config/--config_overrides name a size (see `load_config`); `quantization_config` (bitsandbytes, torchao: see
    gptcore.training.memory_saving) quantises the weights while loading."""
    if not args.model_name_or_path and not args.random_init:
        raise ValueError(
            f"pass --model_name_or_path (e.g. {PRETRAIN_OUTPUT}, written by examples/pretrain.py), "
            "or --config/--config_overrides (e.g. --config_overrides 'n_layer=2,n_head=2,n_embd=64') to start from "
            "random weights"
        )
    if args.random_init:
        config = load_config(args, defaults=defaults, **config_kwargs)
        logger.warning(
            "starting from RANDOM weights (%s): results are only a smoke test", args.config_overrides or args.config
        )
        model = model_class(config)
        return model if quantization_config is None else reload_quantized(model, quantization_config)
    if quantization_config is not None:
        config_kwargs["quantization_config"] = quantization_config
    try:
        return model_class.from_pretrained(args.model_name_or_path, **config_kwargs)
    except OSError:
        raise _missing_checkpoint(args.model_name_or_path) from None


def reload_quantized(model: M, quantization_config: Any) -> M:
    """`model` quantised as `from_pretrained(..., quantization_config=...)` quantises a checkpoint: transformers'
    quantisers work while loading, so the weights go through a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        quantized = type(model).from_pretrained(folder, quantization_config=quantization_config)
    # The weights left in float are views into the memory-mapped file, which keeps every page of it that loading read
    # (the float matrices too) in memory after the file is deleted: they get memory of their own.
    for param in quantized.parameters():
        if type(param) is torch.nn.Parameter:
            param.data = param.data.clone()
    # Named by where it came from, as the float model was, not by the folder that is gone.
    quantized.name_or_path = quantized.config.name_or_path = model.config.name_or_path
    return quantized


def load_tokenizer(args: ModelArguments) -> PreTrainedTokenizerBase:
    """The named tokenizer, else the checkpoint's, else gptcore's bundled GPT-2 tokenizer (with a warning)."""
    source = args.tokenizer_name_or_path
    if source is None and args.model_name_or_path:
        folder = Path(args.model_name_or_path)
        if not folder.is_dir() or any((folder / name).is_file() for name in _TOKENIZER_FILES):
            source = args.model_name_or_path
    if source is None:
        if args.model_name_or_path:
            logger.warning(
                "%s has no tokenizer files; using gptcore's bundled GPT-2 tokenizer", args.model_name_or_path
            )
        return gpt2_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError:
        if source == args.model_name_or_path:
            raise _missing_checkpoint(source) from None
        raise FileNotFoundError(
            f"no tokenizer at {source!r}; pass --tokenizer_name_or_path a tokenizer folder"
        ) from None


def check_vocab_fits(tokenizer: PreTrainedTokenizerBase, config: Any) -> None:
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}; "
            "pass the tokenizer the checkpoint was trained with (--tokenizer_name_or_path)"
        )


def load_model_and_tokenizer(
    model_class: type[M],
    args: ModelArguments,
    pads: bool = False,
    quantization_config: Any = None,
    **config_kwargs: Any,
) -> tuple[M, PreTrainedTokenizerBase]:
    """The tokenizer (`load_tokenizer`) and `model_class` (`load_model`, quantised while loading by
    `quantization_config`), checked to fit each other.

    `pads`: batches will be padded. GPT-2 has no padding token, so EOS stands in for it (the attention mask
    and labels of -100 tell padding apart) and the model's config records it as `pad_token_id`.
    """
    tokenizer = load_tokenizer(args)
    if pads:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        config_kwargs["pad_token_id"] = tokenizer.pad_token_id
    model = load_model(model_class, args, quantization_config=quantization_config, **config_kwargs)
    check_vocab_fits(tokenizer, model.config)
    return model, tokenizer


def check_within_context(flag: str, value: int, config: Any, minimum: int = 1) -> int:
    """`value` of --`flag` (a sequence length), refused unless in [minimum, the model's n_positions]."""
    if not minimum <= value <= config.n_positions:
        raise ValueError(
            f"--{flag} must be in [{minimum}, {config.n_positions}] (the model's n_positions), got {value}"
        )
    return value
