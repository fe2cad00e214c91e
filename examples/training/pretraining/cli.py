"""Command-line arguments of examples/pretrain.py, and the checks that need no model or data.

The model options are the fine-tuning scripts' `ModelArguments` (same names, same help, same meaning of
--config/--config_overrides); everything else is pretraining's own and stays a plain `argparse` namespace.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import fields

from gptcore.training.arguments import ModelArguments

DEFAULT_CONFIG = "cpu-small"
_MODEL_HELP = {field.name: field.metadata["help"] for field in fields(ModelArguments)}
_MODEL_OPTIONS = ("model_name_or_path", "config", "config_overrides", "tokenizer_name_or_path")

# Arguments that fix which tokens each step sees; a resumed run must use the same ones.
DATA_ORDER_ARGS = (
    "train_files", "validation_files", "dataset_name", "dataset_config_name", "text_column", "sample_by",
    "streaming", "validation_split_percentage", "max_eval_samples", "block_size", "batch_size",
    "gradient_accumulation_steps", "seed", "no_cross_document_attention",
)  # fmt: skip


def parse_args(
    argv: list[str] | None = None, description: str | None = None, default_train_files: list[str] | None = None
) -> tuple[ModelArguments, argparse.Namespace]:
    """(the model options, every other option). `default_train_files` is what --train_files means when neither
    it nor --dataset_name is given; it only shows in --help here."""
    namespace = build_parser(description, default_train_files).parse_args(argv)
    model_args = ModelArguments(**{name: vars(namespace).pop(name) for name in _MODEL_OPTIONS})
    check_args(model_args, namespace)
    return model_args, namespace


def build_parser(description: str | None, default_train_files: list[str] | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_argument_group(
        "model",
        f"Default: random weights of the {DEFAULT_CONFIG} size. For random weights pretraining sets no dropout, and the\n"
        "tokenizer's vocabulary size and EOS token; --config_overrides applies on top of those.",
    )
    for name in _MODEL_OPTIONS:
        group.add_argument(f"--{name}", help=_MODEL_HELP[name])
    group.add_argument("--gradient_checkpointing", action="store_true", help="recompute activations in backward to save memory")
    group.add_argument("--torch_compile", action="store_true", help="compile the model with torch.compile (inductor)")

    group = parser.add_argument_group("data", f"Default: {describe_files(default_train_files)}.")
    group.add_argument("--train_files", nargs="+", help="local text files to train on")
    group.add_argument("--validation_files", nargs="+", help="local text files to validate on (default: hold out a share of the blocks)")
    group.add_argument("--dataset_name", help="a Hugging Face Hub dataset instead of local files")
    group.add_argument("--dataset_config_name", help="the Hub dataset's configuration")
    group.add_argument("--text_column", default="text", help="column holding the documents (default: text)")
    group.add_argument("--sample_by", default="document", choices=["document", "paragraph", "line"],
                       help="what one document of a local text file is (default: the whole file)")  # fmt: skip
    group.add_argument("--streaming", action="store_true", help="stream the dataset instead of preparing it up front")
    group.add_argument("--validation_split_percentage", type=float, default=5.0,
                       help="share of the blocks held out for validation when there is no validation split (default: 5)")  # fmt: skip
    group.add_argument("--max_eval_samples", type=int, default=256,
                       help="at most this many validation blocks; also how many a stream without validation split holds out")  # fmt: skip
    group.add_argument("--preprocessing_num_workers", type=int, help="processes for tokenization (datasets' map num_proc)")
    group.add_argument("--block_size", type=int, default=128, help="tokens per training sequence (default: 128)")
    group.add_argument("--no_cross_document_attention", action="store_true",
                       help="packed documents do not attend to each other (positions restart at each EOS)")  # fmt: skip

    group = parser.add_argument_group("optimization")
    group.add_argument("--batch_size", type=int, default=8, help="sequences per optimizer step, over all processes (default: 8)")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step (default: 1)")
    group.add_argument("--max_steps", type=int, default=250, help="optimizer steps (default: 250)")
    group.add_argument("--learning_rate", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    group.add_argument("--min_lr_ratio", type=float, default=0.1, help="cosine decay ends at this share of the peak (default: 0.1)")
    group.add_argument("--warmup_steps", type=int, default=20, help="linear warmup steps (default: 20)")
    group.add_argument("--weight_decay", type=float, default=0.1, help="AdamW weight decay of the weight matrices (default: 0.1)")
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=0.95)
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="clip the gradient norm to this; 0 = no clipping (default: 1)")
    group.add_argument("--mixed_precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                       help="auto (default): under `accelerate launch` its setting (its --mixed_precision or config file, "
                       "else no); otherwise bf16 where the hardware computes it natively (GPUs of compute capability 8.0 "
                       "or newer, CPUs with AMX or AVX-512 bf16), else no (fp32)")  # fmt: skip
    group.add_argument("--skip_nonfinite_steps", action="store_true", help="skip a step whose loss is NaN/inf instead of stopping")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--threads", type=int,
                       help="CPU threads for torch. Default: OMP_NUM_THREADS when set (accelerate launch sets it for each "
                       "process); else, training on the CPU, the cores other processes leave free (a thread that waits for a "
                       "busy core slows every step; on free cores more threads are faster)")  # fmt: skip

    group = parser.add_argument_group("evaluation, checkpoints and outputs")
    group.add_argument("--output_dir", default="runs/pretrain", help="where everything goes (default: runs/pretrain)")
    group.add_argument("--overwrite_output_dir", action="store_true", help="start over in a non-empty --output_dir")
    group.add_argument("--resume_from_checkpoint", help="'latest' (newest complete checkpoint in --output_dir) or a checkpoint folder")
    group.add_argument("--eval_steps", type=int, default=100, help="validate and print a sample every N steps (default: 100)")
    group.add_argument("--save_steps", type=int, default=100, help="save a checkpoint every N steps; 0 = only on a stop (default: 100)")
    group.add_argument("--save_total_limit", type=int, default=2, help="keep the newest N checkpoints (default: 2)")
    group.add_argument("--sample_prompt", default="Alice was beginning to", help="prompt of the sample generations")
    group.add_argument("--sample_max_new_tokens", type=int, default=40, help="tokens sampled at each evaluation (default: 40; 0: none)")
    return parser


def describe_files(paths: list[str] | None) -> str:
    """What --train_files defaults to, for --help."""
    if not paths:
        return "none: pass --train_files or --dataset_name"
    folder = os.path.commonpath([os.path.dirname(path) for path in paths])
    return f"the {len(paths)} text files in {folder}/ ({', '.join(os.path.relpath(path, folder) for path in paths)})"


def check_args(model_args: ModelArguments, args: argparse.Namespace) -> None:
    for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "eval_steps", "save_total_limit", "max_eval_samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    for name in ("warmup_steps", "save_steps", "sample_max_new_tokens"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.block_size < 2:
        raise ValueError(f"--block_size must be >= 2 (a token and the next one to predict), got {args.block_size}")
    if args.batch_size % args.gradient_accumulation_steps:
        raise ValueError(
            f"--batch_size {args.batch_size} must be a multiple of --gradient_accumulation_steps "
            f"{args.gradient_accumulation_steps}: each micro-batch holds batch_size / gradient_accumulation_steps sequences"
        )
    # Checked again when the model is loaded; refused here so that nothing starts (no processes, no data).
    if model_args.model_name_or_path and (model_args.config or model_args.config_overrides):
        raise ValueError("--model_name_or_path brings its own config; drop --config/--config_overrides")
    if not model_args.model_name_or_path:
        model_args.config = model_args.config or DEFAULT_CONFIG  # named, so that the model card says which
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise ValueError("--overwrite_output_dir deletes the checkpoints that --resume_from_checkpoint needs; pass one of them")
    if not 0 <= args.min_lr_ratio <= 1:
        raise ValueError(f"--min_lr_ratio must be in [0, 1], got {args.min_lr_ratio}")
