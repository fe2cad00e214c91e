"""What the reward-model, DPO and GRPO scripts share: TRL's length limits fitted to the model's context, evaluation
batches that make TRL's metrics exact, and what a run leaves for people (its curves as training_curves.png, a model
card saying how the model was made)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import DatasetDict
from transformers import Trainer

from gptcore.training.report import Curve, Panel, logged_points, plot_curves, write_run_card

logger = logging.getLogger(__name__)


def fit_max_length(max_length: int | None, config: Any) -> int:
    """TRL's --max_length (1024 by default, None for no limit) capped at the model's context (n_positions): a longer
    sequence cannot go through the model at all."""
    if max_length is not None and max_length < 2:
        raise ValueError(f"--max_length must be at least 2 (a prompt token and an answer token), got {max_length}")
    return min(max_length or config.n_positions, config.n_positions)


def keep_fitting(splits: DatasetDict, fits: Callable[[dict[str, str]], bool], condition: str) -> DatasetDict:
    """Each split without the rows `fits` refuses (TRL would drop or cut them without a word), with a warning that
    counts them and says what they lack (`condition`); a split left empty is refused."""
    for name, rows in splits.items():
        splits[name] = rows.select([i for i, row in enumerate(rows) if fits(row)])
        if len(splits[name]) < len(rows):
            logger.warning(
                "%d of %d %s rows left out: they do not %s", len(rows) - len(splits[name]), len(rows), name, condition
            )
        if len(splits[name]) == 0:
            raise ValueError(
                f"no {name} row is left: none would {condition}; change that length limit or use other data"
            )
    return splits


def even_eval_batches(training_args: Any, items: int, per_prompt: int = 1) -> int:
    """Set --per_device_eval_batch_size to the largest size not above it that cuts `items` evaluation prompts
    (`per_prompt` sequences each, e.g. GRPO's sampled answers) into equal batches, and return it: TRL averages its
    evaluation metrics (accuracy, margins, mean reward) over batches with equal weight, so only equal batches make
    them averages over the held-out pairs or prompts."""
    prompts_per_batch = max(1, training_args.per_device_eval_batch_size // per_prompt)
    size = max(d for d in range(1, prompts_per_batch + 1) if items % d == 0) * per_prompt
    if size != training_args.per_device_eval_batch_size:
        logger.warning(
            "--per_device_eval_batch_size %d instead of %d: %d test items in equal batches",
            size,
            training_args.per_device_eval_batch_size,
            items * per_prompt,
        )
    training_args.per_device_eval_batch_size = size
    return size


def write_report(
    trainer: Trainer,
    metrics: dict[str, float],
    model: Any,
    model_dir: str | Path,
    title: str,
    made_how: str,
    curves: dict[str, str],
    arguments: tuple[Any, ...],
    **card_metadata: Any,
) -> Path:
    """training_curves.png in --output_dir: one panel per `curves` item (y-axis label -> metric key), the value TRL
    logged during training and the held-out test value before and after; and the card (README.md) of `model`, saved
    in `model_dir`, with the held-out figures and every option (`arguments`: the script's dataclasses). Returns the
    PNG's path."""
    last_step = trainer.state.global_step
    panels, held_out = [], {}
    for ylabel, key in curves.items():
        points = []
        for step, prefix, when in ((0, "before", "before"), (last_step, "eval", "after")):
            if f"{prefix}_{key}" in metrics:
                points.append((step, metrics[f"{prefix}_{key}"]))
                held_out[f"test {key}, {when}"] = metrics[f"{prefix}_{key}"]
        train = Curve("train (logged)", logged_points(trainer.state.log_history, key))
        panels.append(Panel(ylabel, [train, Curve("test (held out)", points, marked=True)]))
    path = Path(trainer.args.output_dir) / "training_curves.png"
    plot_curves(path, title, panels)
    settings = {name: value for args in arguments for name, value in dataclasses.asdict(args).items()}
    settings.update(trainer.args.to_dict())
    card_metrics = {**held_out, "steps": last_step, "train loss": metrics.get("train_loss", float("nan"))}
    note = "Test figures are TRL's metrics on the held-out test split, before and after this training."
    write_run_card(
        Path(model_dir),
        title,
        made_how,
        model.config.to_dict(),
        model.num_parameters(),
        card_metrics,
        settings,
        note,
        **card_metadata,
    )
    return path
