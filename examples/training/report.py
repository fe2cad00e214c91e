"""What a training run leaves behind for people: its curves as a PNG, and a model card saying how the model was made."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptcore.conversion.model_card import write_card

Points = list[tuple[float, float]]


@dataclass
class Curve:
    label: str
    points: Points
    marked: bool = False  # a few evaluations as dots on a line; else a thin line through many logged steps


@dataclass
class Panel:
    ylabel: str
    curves: list[Curve]
    baselines: dict[str, float] = field(default_factory=dict)  # label -> value, drawn as dashed horizontal lines


def plot_curves(path: Path, title: str, panels: list[Panel], xlabel: str = "optimizer step") -> None:
    """One plot per panel, stacked, against the optimizer step, as a PNG; curves without points are left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; also safe under accelerate launch
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.5 + 3 * len(panels)), sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        for curve in panel.curves:
            if curve.points:
                # A single point is only visible as a marker.
                style = dict(marker="o") if curve.marked or len(curve.points) == 1 else dict(linewidth=1, alpha=0.8)
                ax.plot(*zip(*curve.points), label=curve.label, **style)
        for label, value in panel.baselines.items():
            ax.axhline(value, color="grey", linestyle="--", label=label)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def logged_points(log_history: list[dict[str, Any]], key: str) -> Points:
    """(step, value) of every finite `key` in `transformers.TrainerState.log_history`."""
    return [
        (record["step"], record[key])
        for record in log_history
        if isinstance(record.get(key), (int, float)) and math.isfinite(record[key])
    ]


def write_run_card(
    model_dir: Path,
    title: str,
    made_how: str,
    model_config: dict[str, Any],
    num_parameters: int,
    metrics: dict[str, Any],
    settings: dict[str, Any],
    metrics_note: str = "",
    auto_class: str = "AutoModelForCausalLM",
    **metadata: Any,
) -> None:
    """README.md with the Hub's metadata header (`metadata`: pipeline_tag, tags, ...), how the model was made
    (`made_how`, a sentence), how to load it with `auto_class`, the final metrics and the run's settings (every
    option)."""
    sizes = ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
    architecture = ", ".join(f"{key}={model_config[key]}" for key in sizes)
    metric_rows = "\n".join(
        f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
        for name, value in metrics.items()
    )
    body = f"""A GPT-2-architecture model ({architecture}; {num_parameters / 1e6:.1f}M parameters) {made_how}

## Use

```python
import gptcore.modeling  # registers the gptcore architecture with the Auto classes
from transformers import {auto_class}, AutoTokenizer

model = {auto_class}.from_pretrained("{model_dir}")
tokenizer = AutoTokenizer.from_pretrained("{model_dir}")
```

Without gptcore installed, pass `trust_remote_code=True` (the modeling code is saved next to the weights).

## Final metrics

{metrics_note}

| metric | value |
|---|---|
{metric_rows}

## Training configuration

```json
{json.dumps(settings, indent=2, default=str)}
```
"""
    write_card(model_dir, title, body, library_name="transformers", **metadata)
