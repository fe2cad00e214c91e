"""What examples/pretrain.py leaves behind for people: metrics.jsonl, the loss curve, the model card (drawn and
written by gptcore.training.report)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from gptcore.training.report import Curve, Panel, plot_curves, write_run_card


class MetricsLog:
    """metrics.jsonl: one JSON object per line, each with a `step`; written by the main process only."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as file:
                file.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Forget records past `step`: a run resumed from an earlier checkpoint writes them again.

        Rewritten through a temporary file and a rename, so a crash here loses nothing."""
        if self.enabled and self.path.is_file():
            kept = [json.dumps(record) + "\n" for record in self.records() if record["step"] <= step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)

    def records(self) -> list[dict[str, Any]]:
        """The complete records; a line cut short by a kill mid-write is skipped."""
        if not self.path.is_file():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found


def plot_loss_curve(records: list[dict[str, Any]], path: Path, unigram_baseline: float | None) -> None:
    """Training and validation loss against the optimizer step, as a PNG."""
    train = [(record["step"], record["train_loss"]) for record in records if math.isfinite(record.get("train_loss", math.nan))]
    validation = [(record["step"], record["val_loss"]) for record in records if "val_loss" in record]
    baselines = {} if unigram_baseline is None else {f"unigram baseline ({unigram_baseline:.2f})": unigram_baseline}
    curves = [Curve("train", train), Curve("validation", validation, marked=True)]
    plot_curves(path, "Pretraining loss", [Panel("cross-entropy (nats/token)", curves, baselines)])


def write_training_card(
    model_dir: Path,
    model_config: dict[str, Any],
    num_parameters: int,
    settings: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    """README.md with the Hub's metadata header, the final metrics and the run's settings (every option)."""
    write_run_card(
        model_dir, "gptcore GPT pretrained from scratch", "trained with gptcore's `examples/pretrain.py`.",
        model_config, num_parameters, metrics, settings,
        metrics_note="Losses are cross-entropies in nats per token. The unigram baseline is the validation "
        "cross-entropy under the\ntraining tokens' frequencies with add-one smoothing: a model must beat it to have "
        "learnt more than word counts.",
        pipeline_tag="text-generation", tags=["gptcore", "gpt2", "causal-lm", "pretraining"],
    )  # fmt: skip
