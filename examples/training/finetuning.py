"""One way to run a `transformers.Trainer` job in every fine-tuning script (TRL's trainers included): parse the
command line, set up logging, refuse a used output folder, evaluate before and after training, save the model and
tokenizer, write the metrics."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import datasets
import transformers
from transformers import Trainer, TrainingArguments, set_seed

from gptcore.training.arguments import ModelArguments, check_output_dir, parse_args
from gptcore.training.hardware import resolve_mixed_precision


@dataclass
class OutputArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into a non-empty --output_dir, replacing what an earlier run left there."},
    )


@dataclass
class PrecisionArguments:
    mixed_precision: str = field(
        default="auto",
        metadata={
            "choices": ["auto", "no", "fp16", "bf16"],
            "help": "auto: --bf16/--fp16 if given; else under `accelerate launch` its setting (its "
            "--mixed_precision or "
            "config file, else no); otherwise bf16 where the hardware computes it natively (GPUs of compute capability "
            "8.0 or newer, CPUs with AMX or AVX-512 bf16), else no (fp32).",
        },
    )


def start_finetuning(
    *script_arguments: type, training_class: type[TrainingArguments] = TrainingArguments, description: str | None = None
) -> tuple[Any, ...]:
    """Parse the command line into `ModelArguments`, the script's own dataclasses, `training_class` (TrainingArguments
    or a subclass such as TRL's DPOConfig; and --overwrite_output_dir, --mixed_precision), with `description` heading
    --help; set up logging; refuse a non-empty --output_dir, which Trainer would write over, unless resuming or
    overwriting; settle the mixed precision and print it; seed everything. Returns (model arguments, *script
    arguments, training arguments)."""
    *parsed, output, precision = parse_args(
        ModelArguments,
        *script_arguments,
        _bf16_off_unless_given(training_class),
        OutputArguments,
        PrecisionArguments,
        description=description,
    )
    training: TrainingArguments = parsed[-1]
    # The class parsed into differs from `training_class` in a default only; the arguments are `training_class` again,
    # as Trainer pickles them (training_args.bin) and TRL's trainers expect them.
    training.__class__ = training_class
    setup_logging(training)
    check_output_dir(
        training.output_dir, resume=bool(training.resume_from_checkpoint), overwrite=output.overwrite_output_dir
    )
    chosen = apply_mixed_precision(training, precision.mixed_precision)
    if training.should_log:
        print(chosen)
    set_seed(training.seed)
    return tuple(parsed)


def _bf16_off_unless_given(training_class: type[TrainingArguments]) -> type[TrainingArguments]:
    """`training_class`, or where it turns bf16 on when neither --bf16 nor --fp16 is given (TRL's configs do;
    TrainingArguments does not), a subclass in which an unset --bf16 is off: `apply_mixed_precision` reads bf16 as
    the user's choice, and --mixed_precision must decide what nobody chose."""
    bf16 = next(f for f in dataclasses.fields(training_class) if f.name == "bf16")
    if bf16.default is False:
        return training_class
    help_text = "Use bf16 mixed precision. Default: off unless --mixed_precision chooses it."
    unset_is_off = ("bf16", bool, field(default=False, metadata={"help": help_text}))
    return dataclasses.make_dataclass(training_class.__name__, [unset_is_off], bases=(training_class,))


def apply_mixed_precision(training: TrainingArguments, requested: str) -> str:
    """Set `training`'s mixed precision: --bf16/--fp16 if given, else `requested` (--mixed_precision) as
    `resolve_mixed_precision` settles it. Returns the line that says which and why."""
    given = "bf16" if training.bf16 else "fp16" if training.fp16 else None
    if given and requested not in ("auto", given):
        raise ValueError(f"--mixed_precision {requested} contradicts --{given}; pass one of them")
    mode, why = (given, f"--{given}") if given else resolve_mixed_precision(requested, training.device)
    # TrainingArguments derived `mixed_precision` (what the Trainer gives its Accelerator) from --bf16/--fp16 and
    # ACCELERATE_MIXED_PRECISION when it was built; the flags are kept in step so that the saved arguments say it too.
    training.bf16, training.fp16, training.mixed_precision = mode == "bf16", mode == "fp16", mode
    return f"mixed precision: {mode} ({why})"


def setup_logging(args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = args.get_process_log_level()
    logging.getLogger().setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def with_perplexity(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(loss) if loss < 100 else float("inf")
    return metrics


def evaluate(trainer: Trainer, dataset: Any, prefix: str) -> dict[str, float]:
    """`trainer.evaluate(dataset)` with every metric named `<prefix>_...`: TRL's trainers name the metrics they add
    (reward accuracy, margins, mean reward, ...) `eval_...` whatever prefix was asked for."""
    metrics = {}
    for key, value in trainer.evaluate(dataset, metric_key_prefix=prefix).items():
        metrics[f"{prefix}_{key.removeprefix('eval_')}" if key.startswith("eval_") else key] = value
    return metrics


def train_and_evaluate(trainer: Trainer, eval_dataset: Any = None, perplexity: bool = False) -> dict[str, float]:
    """Evaluate (if there is an evaluation set), train, save model + tokenizer, evaluate again.

    Returns the metrics, prefixed `before_`, `train_` and `eval_`; also written to `all_results.json`.
    """
    metrics: dict[str, float] = {}
    if eval_dataset is not None:
        metrics.update(evaluate(trainer, eval_dataset, "before"))
        if perplexity:
            with_perplexity(metrics, "before")
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    metrics.update(result.metrics)
    trainer.save_model()  # also saves the tokenizer passed as processing_class
    trainer.save_state()
    if eval_dataset is not None:
        metrics.update(evaluate(trainer, eval_dataset, "eval"))
        if perplexity:
            with_perplexity(metrics, "eval")
    trainer.log_metrics("all", metrics)
    trainer.save_metrics("all", metrics)
    return metrics
