r"""Train a reward model: a gptcore checkpoint with a one-number score head (`GPTCoreForSequenceClassification`,
num_labels=1) learns to score the chosen answer of each preference pair above the rejected one, with TRL's
`RewardTrainer` (loss -log sigmoid(score(chosen) - score(rejected)); TRL appends EOS to each text, and the score is
read at that last token).

By default on pairs built from the bundled Self-Instruct seed tasks (gptcore.training.preference_data: chosen = the
task's own answer, rejected = another task's answer), split by task into train/validation/test. Reports the held-out
pairwise accuracy (test pairs whose chosen answer scores higher) and margin before and after training.

    python examples/train_reward_model.py --model_name_or_path runs/instruct \
        --output_dir runs/reward --num_train_epochs 2 --per_device_train_batch_size 8 --learning_rate 1e-4

`--data_file` takes JSON/JSONL of {prompt, chosen, rejected} records. Pairs longer than --max_length tokens (at most
the model's context) are left out. The folder loads with `AutoModelForSequenceClassification` and serves as
`examples/finetune_grpo.py --reward_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import RewardConfig, RewardTrainer

from gptcore.modeling import GPTCoreForSequenceClassification
from gptcore.training.arguments import load_model_and_tokenizer
from gptcore.training.finetuning import start_finetuning, train_and_evaluate
from gptcore.training.post_training import even_eval_batches, fit_max_length, keep_fitting, write_report
from gptcore.training.preference_data import PreferenceDataArguments, load_preference_splits

SEED_TASKS = Path(__file__).resolve().parent / "data" / "finetune" / "self_instruct_seed_tasks.jsonl"


def fits(pair: dict[str, str], tokenizer: Any, max_length: int) -> bool:
    """Whether prompt + answer + EOS, as RewardTrainer tokenizes them, fits in `max_length` tokens for both answers."""
    texts = [pair["prompt"] + pair[answer] + tokenizer.eos_token for answer in ("chosen", "rejected")]
    return max(len(ids) for ids in tokenizer(texts).input_ids) <= max_length


def main() -> None:
    model_args, data, training_args = start_finetuning(
        PreferenceDataArguments, training_class=RewardConfig, description=__doc__
    )
    splits = load_preference_splits(data, training_args.seed, default_file=SEED_TASKS)
    model, tokenizer = load_model_and_tokenizer(GPTCoreForSequenceClassification, model_args, pads=True, num_labels=1)
    training_args.max_length = fit_max_length(training_args.max_length, model.config)
    max_length = training_args.max_length
    splits = keep_fitting(splits, lambda pair: fits(pair, tokenizer, max_length), f"fit in --max_length {max_length}")
    print(", ".join(f"{name}: {len(pairs)} pairs" for name, pairs in splits.items()))
    even_eval_batches(training_args, len(splits["test"]))

    trainer = RewardTrainer(
        model=model,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
    )
    metrics = train_and_evaluate(trainer, splits["test"])

    made_how = (
        f"trained as a reward model (one score per text) from `{model_args.model_name_or_path or 'random weights'}` "
        f"with TRL's `RewardTrainer` (gptcore's `examples/train_reward_model.py`) on {data.description}."
    )
    plot = write_report(
        trainer,
        metrics,
        trainer.model,
        training_args.output_dir,
        "gptcore reward model",
        made_how,
        {"loss": "loss", "pairwise accuracy": "accuracy", "margin: score(chosen) - score(rejected)": "margin"},
        (model_args, data),
        auto_class="AutoModelForSequenceClassification",
        pipeline_tag="text-classification",
        tags=["gptcore", "gpt2", "reward-model", "trl"],
    )
    print(
        f"test pairwise accuracy {metrics['before_accuracy']:.1%} before, {metrics['eval_accuracy']:.1%} after "
        f"training; margin {metrics['before_margin']:.3f} before, {metrics['eval_margin']:.3f} after "
        f"({len(splits['test'])} pairs); curves in {plot}"
    )


if __name__ == "__main__":
    main()
