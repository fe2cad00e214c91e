"""What examples/pretrain.py leaves behind for people: metrics.jsonl, the loss curve, the model card."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from gptcore.conversion.model_card import write_card


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
    import matplotlib

    matplotlib.use("Agg")  # no display needed; also safe under accelerate launch
    import matplotlib.pyplot as plt

    train = [(record["step"], record["train_loss"]) for record in records if math.isfinite(record.get("train_loss", math.nan))]
    validation = [(record["step"], record["val_loss"]) for record in records if "val_loss" in record]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1, alpha=0.8)
    if validation:
        ax.plot(*zip(*validation), "o-", label="validation")
    if unigram_baseline is not None:
        ax.axhline(unigram_baseline, color="grey", linestyle="--", label=f"unigram baseline ({unigram_baseline:.2f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("Pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_training_card(
    model_dir: Path,
    model_config: dict[str, Any],
    num_parameters: int,
    settings: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    """README.md with the Hub's metadata header, the final metrics and the run's settings (every option)."""
    architecture = ", ".join(f"{key}={model_config[key]}" for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"))
    metric_rows = "\n".join(
        f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |" for name, value in metrics.items()
    )
    body = f"""A GPT-2-architecture model ({architecture}; {num_parameters / 1e6:.1f}M parameters) trained with gptcore's
`examples/pretrain.py`.

## Use

```python
import gptcore.modeling  # registers the gptcore architecture with the Auto classes
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{model_dir}")
tokenizer = AutoTokenizer.from_pretrained("{model_dir}")
```

Without gptcore installed, pass `trust_remote_code=True` (the modeling code is saved next to the weights).

## Final metrics

Losses are cross-entropies in nats per token. The unigram baseline is the validation cross-entropy under the
training tokens' frequencies with add-one smoothing: a model must beat it to have learnt more than word counts.

| metric | value |
|---|---|
{metric_rows}

## Training configuration

```json
{json.dumps(settings, indent=2, default=str)}
```
"""
    write_card(
        model_dir, "gptcore GPT pretrained from scratch", body,
        library_name="transformers", pipeline_tag="text-generation", tags=["gptcore", "gpt2", "causal-lm", "pretraining"],
    )  # fmt: skip
