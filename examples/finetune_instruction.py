"""Supervised instruction tuning of a gptcore checkpoint in the Alpaca prompt format, with `Trainer`.

By default on the bundled Self-Instruct seed tasks (175 human-written tasks, each an instruction with
input/output instances), split by task into train/validation/test so the test instructions are unseen.
Only the response tokens are learned (the prompt's labels are -100). After training, the model answers
the held-out test instructions and the answers are written to `--responses_file` as JSON.

    python examples/finetune_instruction.py --model_name_or_path runs/pretrain/final \
        --output_dir runs/instruct --num_train_epochs 2 --per_device_train_batch_size 8 --learning_rate 5e-5

`--data_file` takes any JSON/JSONL of `{instruction, input, output}` records (or Self-Instruct tasks).
`--lora` trains LoRA adapters (PEFT) on the attention and MLP projections instead of all weights; the
adapter is saved in `--output_dir`, and the merged plain model in `<output_dir>/merged`.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from gptcore.training.text_data import BUNDLED_DATA, load_rows, map_in_memory, require_columns, split_train_validation_test
from datasets import Dataset, DatasetDict
from gptcore.training.arguments import ModelArguments, check_vocab_fits, load_model, load_tokenizer, parse_args
from tqdm.auto import tqdm
from gptcore.training.finetuning import OutputArguments, check_output_dir, setup_logging, train_and_evaluate
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import encode_instruction_example, format_alpaca_prompt

logger = logging.getLogger(__name__)
SEED_TASKS = BUNDLED_DATA / "finetune" / "self_instruct_seed_tasks.jsonl"


@dataclass
class DataArguments:
    data_file: str | None = field(
        default=None, metadata={"help": f"JSON/JSONL of {{instruction, input, output}} records or Self-Instruct tasks. Default: {SEED_TASKS.name}."}
    )
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset (its 'train' split) instead of a file."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    split_fractions: str = field(default="0.85,0.05,0.1", metadata={"help": "Train,validation,test fractions (by task)."})
    max_length: int | None = field(
        default=None, metadata={"help": "Training sequences are cut to this many tokens (prompt + response); default min(256, n_positions)."}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Longest generated response for the test instructions."})
    max_generate_samples: int | None = field(default=None, metadata={"help": "Answer at most this many test instructions."})
    responses_file: str | None = field(default=None, metadata={"help": "Where to write the answers; default <output_dir>/test_responses.json."})


@dataclass
class LoraArguments:
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: str = field(default="c_attn,c_proj,c_fc", metadata={"help": "Comma-separated module names to adapt."})


def flatten_tasks(tasks: Dataset) -> Dataset:
    """Self-Instruct tasks (instruction + instances[{input, output}]) -> one record per instance."""

    def explode(batch):
        out = {"instruction": [], "input": [], "output": []}
        for instruction, instances in zip(batch["instruction"], batch["instances"]):
            for instance in instances:
                out["instruction"].append(instruction)
                out["input"].append(instance.get("input") or "")
                out["output"].append(instance["output"])
        return out

    return tasks.map(explode, batched=True, remove_columns=tasks.column_names, desc="One record per task instance")


def load_splits(data: DataArguments, seed: int) -> DatasetDict:
    data_file = str(SEED_TASKS) if data.data_file is None and data.dataset_name is None else data.data_file
    rows = load_rows(data_file, data.dataset_name, data.dataset_config_name)
    source = data_file or data.dataset_name
    is_tasks = "instances" in rows.column_names
    require_columns(rows, ["instruction", "instances"] if is_tasks else ["instruction", "output"], source)
    if not is_tasks and "input" not in rows.column_names:
        rows = rows.add_column("input", [""] * len(rows))
    # Split before flattening, so every instance of a test instruction stays unseen in training.
    splits = split_train_validation_test(rows, data.split_fractions, seed)
    return DatasetDict({name: flatten_tasks(part) if is_tasks else part.select_columns(["instruction", "input", "output"]) for name, part in splits.items()})


def encode(records: Dataset, tokenizer, max_length: int, what: str) -> Dataset:
    def one(record):
        try:
            return encode_instruction_example(tokenizer, record, max_length=max_length)
        except ValueError:  # the prompt alone fills max_length: nothing to learn from
            return {"input_ids": [], "labels": []}

    encoded = map_in_memory(records, one, remove_columns=records.column_names, desc=f"Tokenizing {what}")
    kept = encoded.filter(lambda ids: len(ids) > 0, input_columns="input_ids")
    if len(kept) < len(encoded):
        logger.warning("%d %s records dropped: their prompt alone is >= --max_length %d tokens", len(encoded) - len(kept), what, max_length)
    if len(kept) == 0:
        raise ValueError(f"no {what} record fits in --max_length {max_length} tokens; raise --max_length")
    return kept


def add_lora(model: GPTCoreForCausalLM, args: LoraArguments):
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules.split(","),
    )
    return get_peft_model(model, config)


@torch.no_grad()
def merge_lora(peft_model, batch: dict[str, torch.Tensor], merged_dir: Path, tokenizer) -> tuple[GPTCoreForCausalLM, float]:
    """Fold the adapters into the weights, save a plain checkpoint, reload it, and check it computes the
    same logits as the adapter model (returns the largest absolute difference)."""
    peft_model.eval()
    expected = peft_model(**batch).logits
    peft_model.merge_and_unload().save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    merged = GPTCoreForCausalLM.from_pretrained(merged_dir).to(expected.device).eval()
    difference = (merged(**batch).logits - expected).abs().max().item()
    if difference > 1e-3:
        raise RuntimeError(f"the merged model in {merged_dir} differs from the LoRA model by {difference:.2e} in the logits")
    return merged, difference


@torch.no_grad()
def answer(model, tokenizer, records: Dataset, max_new_tokens: int, batch_size: int) -> list[dict[str, str]]:
    """Greedy answers to each record's Alpaca prompt."""
    model.eval()
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"  # generation continues the last token
    room = model.config.n_positions - max_new_tokens
    if room < 1:
        raise ValueError(f"--max_new_tokens {max_new_tokens} leaves no room for a prompt in n_positions={model.config.n_positions}")
    results = []
    for start in tqdm(range(0, len(records), batch_size), desc="Answering test instructions"):
        rows = records.select(range(start, min(start + batch_size, len(records))))
        prompts = [format_alpaca_prompt(r) for r in rows]
        if any(len(ids) > room for ids in tokenizer(prompts).input_ids):
            logger.warning("prompts longer than %d tokens lose their beginning (n_positions - --max_new_tokens)", room)
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=room).to(model.device)
        generated = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
        )
        texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        results += [{**row, "model_response": text.strip()} for row, text in zip(rows, texts)]
    return results


def main() -> None:
    model_args, data, lora_args, training_args, output_args = parse_args(
        ModelArguments, DataArguments, LoraArguments, TrainingArguments, OutputArguments
    )
    setup_logging(training_args)
    check_output_dir(training_args, output_args)
    set_seed(training_args.seed)

    splits = load_splits(data, training_args.seed)
    print(", ".join(f"{name}: {len(rows)} records" for name, rows in splits.items()))
    tokenizer = load_tokenizer(model_args)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padded positions have label -100 and no attention
    # The tokenizer saved with the model (output_dir, checkpoints, merged/) pads on the left, for generation;
    # only the training batches pad on the right: real tokens keep the positions they had in pretraining.
    tokenizer.padding_side = "left"
    right_padding = copy.deepcopy(tokenizer)
    right_padding.padding_side = "right"
    model = load_model(GPTCoreForCausalLM, model_args, pad_token_id=tokenizer.pad_token_id)
    check_vocab_fits(tokenizer, model.config)
    max_length = data.max_length or min(256, model.config.n_positions)
    if not 1 < max_length <= model.config.n_positions:
        raise ValueError(f"--max_length must be in [2, {model.config.n_positions}] (the model's n_positions), got {max_length}")
    if lora_args.lora:
        model = add_lora(model, lora_args)
        model.print_trainable_parameters()

    with training_args.main_process_first(desc="tokenization"):
        train = encode(splits["train"], tokenizer, max_length, "training")
        validation = encode(splits["validation"], tokenizer, max_length, "validation")
    collator = DataCollatorForSeq2Seq(right_padding, padding=True, label_pad_token_id=-100)  # pads labels with -100
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train, processing_class=tokenizer, data_collator=collator
    )
    metrics = train_and_evaluate(trainer, validation)

    if lora_args.lora:
        batch = {k: v.to(model.device) for k, v in collator([validation[i] for i in range(min(4, len(validation)))]).items()}
        batch.pop("labels")
        merged_dir = Path(training_args.output_dir) / "merged"
        model, difference = merge_lora(model, batch, merged_dir, tokenizer)
        metrics["lora_merge_max_abs_logit_difference"] = difference
        trainer.save_metrics("all", metrics)
        print(f"LoRA merged into {merged_dir}: max |logit difference| vs the adapter model {difference:.2e}")

    test = splits["test"]
    if data.max_generate_samples is not None:
        test = test.select(range(min(data.max_generate_samples, len(test))))
    responses = answer(model, tokenizer, test, data.max_new_tokens, training_args.per_device_eval_batch_size)
    responses_file = Path(data.responses_file or Path(training_args.output_dir) / "test_responses.json")
    responses_file.parent.mkdir(parents=True, exist_ok=True)
    responses_file.write_text(json.dumps(responses, indent=2, ensure_ascii=False))
    print(
        f"validation loss {metrics['before_loss']:.3f} before, {metrics['eval_loss']:.3f} after training; "
        f"{len(responses)} test answers in {responses_file}"
    )


if __name__ == "__main__":
    main()
