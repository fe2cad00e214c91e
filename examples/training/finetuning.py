"""One way to run a `transformers.Trainer` job in every fine-tuning script: logging, evaluate before and
after training, save the model and tokenizer, write the metrics."""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import transformers
from transformers import Trainer, TrainingArguments


@dataclass
class OutputArguments:
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into a non-empty --output_dir, replacing what an earlier run left there."}
    )


def check_output_dir(args: TrainingArguments, output: OutputArguments) -> None:
    """Refuse to mix two runs in one --output_dir (Trainer would write over the earlier run's files)."""
    folder = Path(args.output_dir)
    if folder.is_dir() and any(folder.iterdir()) and not args.resume_from_checkpoint and not output.overwrite_output_dir:
        raise ValueError(
            f"output directory {folder} is not empty; pass --overwrite_output_dir to write into it anyway, "
            "--resume_from_checkpoint to continue the run there, or another --output_dir"
        )


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
