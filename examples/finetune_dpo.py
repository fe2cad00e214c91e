r"""Direct preference optimisation (DPO) of an instruction-tuned gptcore checkpoint, with TRL's `DPOTrainer`.

DPO raises the probability of each pair's chosen answer and lowers that of the rejected one, relative to a frozen
reference model (the checkpoint as it started): no reward model, no sampling. By default on pairs built from the
bundled Self-Instruct seed tasks (gptcore.training.preference_data: chosen = the task's own answer, rejected = another
task's answer), split by task. Reports the held-out (test) implicit reward margin, beta * (log-ratio of chosen -
log-ratio of rejected), and accuracy (pairs whose margin is positive) before and after training, and writes greedy
answers of the model before and after to held-out prompts in `--samples_file` (JSON).

    python examples/finetune_dpo.py --model_name_or_path runs/instruct \
        --output_dir runs/dpo --num_train_epochs 1 --per_device_train_batch_size 8 --learning_rate 5e-6 --beta 0.1

`--data_file` takes JSON/JSONL of {prompt, chosen, rejected} records. `--lora` trains LoRA adapters instead of all
weights (the reference is then the model with its adapters switched off); the adapter is saved in `--output_dir`, the
merged plain model in `<output_dir>/merged`.

Less memory (gptcore.training.memory_saving): `--lora --load_in_4bit` (QLoRA), `--lora --load_in_8bit` or
`--lora --int8` train adapters on a frozen quantised base (the adapter is saved, not merged into quantised weights);
`--galore` trains all weights with GaLore's low-rank optimizer states.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import ModelArguments, load_model_and_tokenizer
from gptcore.training.finetuning import start_finetuning, train_and_evaluate
from gptcore.training.generation import answer_prompts
from gptcore.training.lora import LoraArguments, lora_config, merge_lora
from gptcore.training.memory_saving import MemorySavingArguments, prepare_for_training, quantization_config
from gptcore.training.post_training import even_eval_batches, fit_max_length, keep_fitting, write_report
from gptcore.training.preference_data import PreferenceDataArguments, load_preference_splits

SEED_TASKS = Path(__file__).resolve().parent / "data" / "finetune" / "self_instruct_seed_tasks.jsonl"


@dataclass
class SampleArguments:
    max_generate_samples: int = field(default=8, metadata={"help": "Answer this many test prompts before and after."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sample answer."})
    samples_file: str | None = field(
        default=None, metadata={"help": "Where to write them (JSON); default <output_dir>/test_samples.json."}
    )


def load_policy_and_reference(
    model_args: ModelArguments, lora: bool, saving: MemorySavingArguments, training_args: DPOConfig
) -> tuple[GPTCoreForCausalLM, Any, Any]:
    """The model to train, the reference DPO measures it against, and the tokenizer: where every model is loaded.

    With LoRA the reference is the policy with its adapters switched off (TRL does that: None), quantised base
    included. Otherwise it is a frozen copy of the starting weights, passed explicitly: left to itself TRL reloads the
    reference from `config._name_or_path`, which a model built in memory (--config_overrides) does not have."""
    quantization = quantization_config(saving, lora, training_args)  # refuses combinations that cannot train
    policy, tokenizer = load_model_and_tokenizer(
        GPTCoreForCausalLM, model_args, pads=True, quantization_config=quantization
    )
    reference = None if lora else copy.deepcopy(policy)
    policy = prepare_for_training(policy, saving, training_args)  # freezes a quantised base; sets up GaLore
    return policy, reference, tokenizer


def main() -> None:
    model_args, data, lora_args, saving, samples, training_args = start_finetuning(
        PreferenceDataArguments,
        LoraArguments,
        MemorySavingArguments,
        SampleArguments,
        training_class=DPOConfig,
        description=__doc__,
    )
    splits = load_preference_splits(data, training_args.seed, default_file=SEED_TASKS)
    model, reference, tokenizer = load_policy_and_reference(model_args, lora_args.lora, saving, training_args)
    tokenizer.padding_side = "left"  # saved with the model, for generation; TRL pads its batches itself
    max_length = training_args.max_length = fit_max_length(training_args.max_length, model.config)
    # A prompt that fills --max_length leaves no answer token to compare (DPOTrainer drops such pairs).
    splits = keep_fitting(
        splits, lambda pair: len(tokenizer(pair["prompt"]).input_ids) < max_length, "leave room for an answer"
    )
    print(", ".join(f"{name}: {len(pairs)} pairs" for name, pairs in splits.items()))
    even_eval_batches(training_args, len(splits["test"]))
    test_prompts = splits["test"]["prompt"][: samples.max_generate_samples]
    batch_size = training_args.per_device_eval_batch_size
    before = answer_prompts(model, tokenizer, test_prompts, samples.max_new_tokens, batch_size)

    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=training_args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        processing_class=tokenizer,
        peft_config=lora_config(lora_args) if lora_args.lora else None,
    )
    metrics = train_and_evaluate(trainer, splits["test"])

    model, model_dir = trainer.model, Path(training_args.output_dir)
    if saving.quantized:  # merged into 4-/8-bit weights, the adapter's update would be rounded away in part
        print(f"LoRA adapter saved in {model_dir}; it applies to the base checkpoint, quantised or not")
    elif lora_args.lora:  # the merged model must compute what the adapter model computes: checked on test prompts
        batch = tokenizer(test_prompts[:4], return_tensors="pt", padding=True).to(model.device)
        model_dir = model_dir / "merged"
        model, difference = merge_lora(model, dict(batch), model_dir, tokenizer)
        metrics["lora_merge_max_abs_logit_difference"] = difference
        trainer.save_metrics("all", metrics)
    after = answer_prompts(model, tokenizer, test_prompts, samples.max_new_tokens, batch_size)
    samples_file = Path(samples.samples_file or Path(training_args.output_dir) / "test_samples.json")
    samples_file.parent.mkdir(parents=True, exist_ok=True)
    rows = splits["test"].select(range(len(test_prompts)))
    answers = [{**row, "before": b, "after": a} for row, b, a in zip(rows, before, after)]
    samples_file.write_text(json.dumps(answers, indent=2, ensure_ascii=False))

    made_how = (
        f"fine-tuned from `{model_args.model_name_or_path or 'random weights'}` by DPO (beta {training_args.beta}"
        f"{', LoRA merged' if lora_args.lora and not saving.quantized else ', LoRA' if lora_args.lora else ''}"
        f"{f', --{saving.quantized} base' if saving.quantized else ', GaLore' if saving.galore else ''}) with TRL's "
        "`DPOTrainer` (gptcore's `examples/finetune_dpo.py`) "
        f"on {data.description}."
    )
    write_report(
        trainer,
        metrics,
        model,
        model_dir,
        "gptcore DPO model",
        made_how,
        {"loss": "loss", "reward accuracy": "rewards/accuracies", "reward margin": "rewards/margins"},
        (model_args, data, lora_args, saving, samples),
        pipeline_tag="text-generation",
        tags=["gptcore", "gpt2", "dpo", "trl"],
    )
    print(
        f"test reward margin {metrics['before_rewards/margins']:.3f} before, "
        f"{metrics['eval_rewards/margins']:.3f} after; accuracy {metrics['before_rewards/accuracies']:.1%} before, "
        f"{metrics['eval_rewards/accuracies']:.1%} after "
        f"({len(splits['test'])} pairs); answers before/after to {len(rows)} test prompts in {samples_file}"
    )


if __name__ == "__main__":
    main()
