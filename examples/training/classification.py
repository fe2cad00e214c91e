"""Fine-tuning a classifier: which weights train (all, or the book's last block only) and how it is scored."""

from __future__ import annotations

import numpy as np
from transformers import EvalPrediction

from gptcore.modeling import GPTCoreForSequenceClassification


def accuracy_and_f1(predicted: np.ndarray, actual: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, and F1: of class 1 for two classes (e.g. spam = positive), macro-averaged over classes for more."""
    classes = [1] if num_labels == 2 else range(num_labels)
    f1s = []
    for c in classes:
        true_positives = np.sum((predicted == c) & (actual == c))
        denominator = np.sum(predicted == c) + np.sum(actual == c)
        f1s.append(2 * true_positives / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(predicted == actual)), "f1": float(np.mean(f1s))}


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer`'s metrics from the logits: `accuracy_and_f1` of the most likely class."""
    logits = prediction.predictions
    return accuracy_and_f1(np.argmax(logits, axis=-1), prediction.label_ids, logits.shape[-1])


def freeze_all_but_last_block(model: GPTCoreForSequenceClassification) -> None:
    """Train only the last transformer block, the final LayerNorm and the new head, as the book's chapter 6 does."""
    model.requires_grad_(False)
    for module in (model.transformer.h[-1], model.transformer.ln_f, model.score):
        module.requires_grad_(True)
