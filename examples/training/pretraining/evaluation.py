"""What pretraining measures every --eval_steps: the validation loss, and a sampled continuation of a prompt."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gptcore.training.pretraining.state import TrainingRun


@dataclass
class Evaluation:
    step: int
    val_loss: float  # mean next-token cross-entropy over all validation targets (nats/token)
    sample: str

    @property
    def perplexity(self) -> float:
        return math.exp(self.val_loss)


def evaluate_and_sample(run: TrainingRun) -> Evaluation:
    """Run on every process: the loss is gathered from all of them, and FSDP needs all of them to generate."""
    return Evaluation(run.progress.step, validation_loss(run), generate_sample(run))


@torch.no_grad()
def validation_loss(run: TrainingRun) -> float:
    model, accelerator = run.model, run.accelerator
    model.eval()
    total, count = 0.0, 0
    for batch in run.eval_loader:
        input_ids = batch["input_ids"]
        logits = model(input_ids=input_ids, position_ids=run.position_ids(input_ids), use_cache=False).logits
        targets = input_ids[:, 1:]
        # (tokens, vocab) rows: each token's logits lie contiguous, where the (batch, vocab, T) layout cross_entropy
        # also accepts would read them with a stride.
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)
        # Per-sequence sums, gathered without the repeats accelerate adds to even out the last batch.
        sums, counts = accelerator.gather_for_metrics((per_token.sum(1), torch.full_like(per_token[:, 0], per_token.size(1))))
        total, count = total + sums.sum().item(), count + int(counts.sum().item())
    model.train()
    return total / count


def generate_sample(run: TrainingRun) -> str:
    """A sampled continuation of --sample_prompt, seeded with --seed; leaves the training RNG untouched. With
    --sample_max_new_tokens 0, the prompt alone."""
    model, tokenizer, args = run.unwrapped_model, run.tokenizer, run.args
    if args.sample_max_new_tokens == 0:  # generate() refuses to make no tokens
        return args.sample_prompt
    model.eval()
    device = run.accelerator.device
    inputs = tokenizer(args.sample_prompt, return_tensors="pt").to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(args.seed)
        generated = model.generate(
            **inputs, max_new_tokens=args.sample_max_new_tokens, do_sample=True, top_k=50, temperature=0.8,
            pad_token_id=tokenizer.eos_token_id, remove_invalid_values=True,  # a diverged model still samples
        )  # fmt: skip
    model.train()
    return tokenizer.decode(generated[0], skip_special_tokens=False)
