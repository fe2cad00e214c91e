r"""Supervised instruction tuning of a gptcore checkpoint in the Alpaca prompt format, with `Trainer`.

By default on the bundled Self-Instruct seed tasks (175 human-written tasks, each an instruction with
input/output instances), split by task into train/validation/test so the test instructions are unseen.
Only the response tokens are learned (the prompt's labels are -100). After training, the model answers
the held-out test instructions and the answers are written to `--responses_file` as JSON.

    python examples/finetune_instruction.py --model_name_or_path runs/pretrain/final \
        --output_dir runs/instruct --num_train_epochs 2 --per_device_train_batch_size 8 --learning_rate 5e-5

`--data_file` takes any JSON/JSONL of `{instruction, input, output}` records (or Self-Instruct tasks).
`--lora` trains LoRA adapters (PEFT) on the attention and MLP projections instead of all weights; the
adapter is saved in `--output_dir`, and the merged plain model in `<output_dir>/merged`.

Less memory (gptcore.training.memory_saving; `python examples/estimate.py --finetuning all` says how much):
`--lora --load_in_4bit` (QLoRA), `--lora --load_in_8bit` or `--lora --int8` train adapters on a frozen quantised
base (the adapter is saved; it is not merged into quantised weights); `--galore` trains all weights with GaLore's
low-rank optimizer states.

    python examples/finetune_instruction.py --model_name_or_path runs/pretrain/final \
        --output_dir runs/qlora --lora --load_in_4bit --max_steps 200 --learning_rate 2e-4
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from transformers import DataCollatorForSeq2Seq, Trainer

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import check_within_context, load_model_and_tokenizer
from gptcore.training.finetuning import start_finetuning, train_and_evaluate
from gptcore.training.generation import answer_instructions
from gptcore.training.instruction_data import InstructionDataArguments, encode_instructions, load_instruction_splits
from gptcore.training.lora import LoraArguments, add_lora, merge_lora
from gptcore.training.memory_saving import MemorySavingArguments, prepare_for_training, quantization_config

SEED_TASKS = Path(__file__).resolve().parent / "data" / "finetune" / "self_instruct_seed_tasks.jsonl"


def main() -> None:
    model_args, data, lora_args, saving, training_args = start_finetuning(
        InstructionDataArguments, LoraArguments, MemorySavingArguments, description=__doc__
    )
    quantization = quantization_config(saving, lora_args.lora, training_args)  # refuses combinations that cannot train
    splits = load_instruction_splits(data, training_args.seed, default_file=SEED_TASKS)
    print(", ".join(f"{name}: {len(rows)} records" for name, rows in splits.items()))
    model, tokenizer = load_model_and_tokenizer(
        GPTCoreForCausalLM, model_args, pads=True, quantization_config=quantization
    )
    model = prepare_for_training(model, saving, training_args)  # freezes a quantised base; sets up GaLore
    # The tokenizer saved with the model (output_dir, checkpoints, merged/) pads on the left, for generation;
    # only the training batches pad on the right: real tokens keep the positions they had in pretraining.
    tokenizer.padding_side = "left"
    right_padding = copy.deepcopy(tokenizer)
    right_padding.padding_side = "right"
    max_length = check_within_context(
        "max_length", data.max_length or min(256, model.config.n_positions), model.config, minimum=2
    )
    if lora_args.lora:
        model = add_lora(model, lora_args)
        model.print_trainable_parameters()

    with training_args.main_process_first(desc="tokenization"):
        train = encode_instructions(splits["train"], tokenizer, max_length, "training")
        validation = encode_instructions(splits["validation"], tokenizer, max_length, "validation")
    collator = DataCollatorForSeq2Seq(right_padding, padding=True, label_pad_token_id=-100)  # pads labels with -100
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train, processing_class=tokenizer, data_collator=collator
    )
    metrics = train_and_evaluate(trainer, validation)

    if saving.quantized:  # merged into 4-/8-bit weights, the adapter's update would be rounded away in part
        print(f"LoRA adapter saved in {training_args.output_dir}; it applies to the base checkpoint, quantised or not")
    elif lora_args.lora:  # the merged model must compute what the adapter model computes: checked on validation rows
        batch = {
            k: v.to(model.device) for k, v in collator([validation[i] for i in range(min(4, len(validation)))]).items()
        }
        batch.pop("labels")
        merged_dir = Path(training_args.output_dir) / "merged"
        model, difference = merge_lora(model, batch, merged_dir, tokenizer)
        metrics["lora_merge_max_abs_logit_difference"] = difference
        trainer.save_metrics("all", metrics)
        print(f"LoRA merged into {merged_dir}: max |logit difference| vs the adapter model {difference:.2e}")

    test = splits["test"]
    if data.max_generate_samples is not None:
        test = test.select(range(min(data.max_generate_samples, len(test))))
    responses = answer_instructions(
        model, tokenizer, test, data.max_new_tokens, training_args.per_device_eval_batch_size
    )
    responses_file = Path(data.responses_file or Path(training_args.output_dir) / "test_responses.json")
    responses_file.parent.mkdir(parents=True, exist_ok=True)
    responses_file.write_text(json.dumps(responses, indent=2, ensure_ascii=False))
    print(
        f"validation loss {metrics['before_loss']:.3f} before, {metrics['eval_loss']:.3f} after training; "
        f"{len(responses)} test answers in {responses_file}"
    )


if __name__ == "__main__":
    main()
