"""One way to run a `transformers.Trainer` job in every fine-tuning script: parse the command line, set up
logging, refuse a used output folder, evaluate before and after training, save the model and tokenizer,
write the metrics."""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import datasets
import transformers
from transformers import Trainer, TrainingArguments, set_seed

from gptcore.training.arguments import ModelArguments, parse_args
from gptcore.training.runtime import check_output_dir


@dataclass
class OutputArguments:
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into a non-empty --output_dir, replacing what an earlier run left there."}
    )


def start_finetuning(*script_arguments: type, description: str | None = None) -> tuple[Any, ...]:
    """Parse the command line into `ModelArguments`, the script's own dataclasses, `TrainingArguments` (and
    --overwrite_output_dir), with `description` heading --help; set up logging; refuse a non-empty --output_dir,
    which Trainer would write over, unless resuming or overwriting; seed everything.
    Returns (model arguments, *script arguments, training arguments)."""
    *parsed, output = parse_args(ModelArguments, *script_arguments, TrainingArguments, OutputArguments, description=description)
    training: TrainingArguments = parsed[-1]
    setup_logging(training)
    check_output_dir(training.output_dir, resume=bool(training.resume_from_checkpoint), overwrite=output.overwrite_output_dir)
    set_seed(training.seed)
    return tuple(parsed)


def setup_logging(args: TrainingArguments) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)]
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


def train_and_evaluate(trainer: Trainer, eval_dataset: Any = None, perplexity: bool = False) -> dict[str, float]:
    """Evaluate (if there is an evaluation set), train, save model + tokenizer, evaluate again.

    Returns the metrics, prefixed `before_`, `train_` and `eval_`; also written to `all_results.json`.
    """
    metrics: dict[str, float] = {}
    if eval_dataset is not None:
        metrics.update(trainer.evaluate(eval_dataset, metric_key_prefix="before"))
        if perplexity:
            with_perplexity(metrics, "before")
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    metrics.update(result.metrics)
    trainer.save_model()  # also saves the tokenizer passed as processing_class
    trainer.save_state()
    if eval_dataset is not None:
        metrics.update(trainer.evaluate(eval_dataset, metric_key_prefix="eval"))
        if perplexity:
            with_perplexity(metrics, "eval")
    trainer.log_metrics("all", metrics)
    trainer.save_metrics("all", metrics)
    return metrics
