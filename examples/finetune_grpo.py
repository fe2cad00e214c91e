r"""Reinforcement learning of an instruction-tuned gptcore checkpoint with GRPO (TRL's `GRPOTrainer`): for each prompt
the model samples a group of answers (--num_generations), each is scored, and the model learns to make the answers
that scored above their group's mean more likely.

The score, by default, is a rule anyone can check by hand, the sum of two rewards:
- `word_f1`: the F1 of the words the answer shares with the prompt's reference answer (lowercased, punctuation
  dropped; SQuAD's answer score): 1 for the same words, 0 for none in common; long rambling answers lose precision;
- `ended_with_eos`: 1 if the answer ended (EOS) within --max_completion_length tokens, else 0.
With `--reward_model PATH` (a folder written by examples/train_reward_model.py) the reward model's score of prompt +
answer is the reward instead. By default on the bundled Self-Instruct seed tasks (prompt: the task's Alpaca prompt;
reference: its human-written answer), split by task. Reports the mean reward of answers sampled for the held-out (test)
prompts before and after training.

    python examples/finetune_grpo.py --model_name_or_path runs/instruct \
        --output_dir runs/grpo --max_steps 100 --per_device_train_batch_size 8 --num_generations 8 \
        --max_completion_length 64 --learning_rate 1e-5

`--data_file` takes JSON/JSONL of {prompt, chosen, rejected} records (the chosen answer is the reference). Prompts
that do not leave --max_completion_length tokens of the model's context for the answer are left out.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import check_within_context, load_model_and_tokenizer
from gptcore.training.finetuning import start_finetuning, train_and_evaluate
from gptcore.training.post_training import even_eval_batches, keep_fitting, write_report
from gptcore.training.preference_data import PreferenceDataArguments, load_preference_splits

SEED_TASKS = Path(__file__).resolve().parent / "data" / "finetune" / "self_instruct_seed_tasks.jsonl"


@dataclass
class RewardArguments:
    reward_model: str | None = field(
        default=None,
        metadata={"help": "A reward model folder (examples/train_reward_model.py's output): its score is the reward."},
    )


def words(text: str) -> Counter:
    """How often each word occurs in `text`, lowercased, punctuation dropped."""
    return Counter(re.findall(r"\w+", text.lower()))


def word_f1(completions: list[str], reference: list[str], **kwargs) -> list[float]:
    """F1 of the words each answer shares with its reference answer (each word counted as often as both have it)."""
    scores = []
    for answer, expected in zip(completions, reference):
        got, want = words(answer), words(expected)
        common = sum((got & want).values())
        scores.append(0.0 if common == 0 else 2 * common / (sum(got.values()) + sum(want.values())))
    return scores


def ended_with_eos(completion_ids: list[list[int]], eos_token_id: int, **kwargs) -> list[float]:
    """1 for an answer that ended with EOS within --max_completion_length tokens, 0 for one cut off there."""
    return [float(eos_token_id in ids) for ids in completion_ids]


def reward_model_score(path: str):
    """The reward model's score of each prompt + answer + EOS. Its trainer appended EOS to every text and the score
    is read at the last token; TRL's answers come without it, so scoring them as they are would read another token."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
    n_positions = model.config.n_positions
    tokenizer = AutoTokenizer.from_pretrained(path, truncation_side="left")  # a text too long keeps its end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def reward_model(prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        texts = [prompt + answer + tokenizer.eos_token for prompt, answer in zip(prompts, completions)]
        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=n_positions)
        return model(**batch.to(model.device)).logits[:, 0].tolist()

    return reward_model


def main() -> None:
    model_args, data, reward_args, training_args = start_finetuning(
        PreferenceDataArguments, RewardArguments, training_class=GRPOConfig, description=__doc__
    )
    model, tokenizer = load_model_and_tokenizer(GPTCoreForCausalLM, model_args, pads=True)
    tokenizer.padding_side = "left"  # generation continues the last token of each prompt
    n_positions = model.config.n_positions
    answer_length = check_within_context("max_completion_length", training_args.max_completion_length, model.config)
    room = n_positions - answer_length
    if room < 1:
        raise ValueError(f"--max_completion_length must leave room for a prompt in n_positions={n_positions}")
    splits = load_preference_splits(data, training_args.seed, default_file=SEED_TASKS)
    splits = splits.select_columns(["prompt", "chosen"]).rename_column("chosen", "reference")
    splits = keep_fitting(
        splits,
        lambda row: len(tokenizer(row["prompt"]).input_ids) <= room,
        f"leave room for {answer_length} answer tokens",
    )
    print(", ".join(f"{name}: {len(prompts)} prompts" for name, prompts in splits.items()))

    answers_per_prompt = training_args.num_generations_eval or training_args.num_generations
    even_eval_batches(training_args, len(splits["test"]), per_prompt=answers_per_prompt)
    if reward_args.reward_model:
        rewards = [reward_model_score(reward_args.reward_model)]
    else:
        rewards = [word_f1, functools.partial(ended_with_eos, eos_token_id=tokenizer.eos_token_id)]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
    )
    metrics = train_and_evaluate(trainer, splits["test"])

    if reward_args.reward_model:
        reward = f"the score of the reward model `{reward_args.reward_model}`"
    else:
        reward = "word F1 with the reference answer, plus 1 for ending with EOS"
    made_how = (
        f"fine-tuned from `{model_args.model_name_or_path or 'random weights'}` by GRPO with TRL's `GRPOTrainer` "
        f"(gptcore's `examples/finetune_grpo.py`); reward: {reward}; prompts and reference answers: {data.description}."
    )
    write_report(
        trainer,
        metrics,
        trainer.model,
        training_args.output_dir,
        "gptcore GRPO model",
        made_how,
        {"mean reward": "reward", "answer length (tokens)": "completions/mean_length"},
        (model_args, data, reward_args),
        pipeline_tag="text-generation",
        tags=["gptcore", "gpt2", "grpo", "trl"],
    )
    print(
        f"test mean reward {metrics['before_reward']:.3f} before, {metrics['eval_reward']:.3f} after training "
        f"({len(splits['test'])} prompts, {trainer.num_generations_eval} sampled answers each)"
    )


if __name__ == "__main__":
    main()
