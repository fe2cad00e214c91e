r"""Continued pretraining (domain adaptation) of a gptcore checkpoint on plain text, with `transformers.Trainer`.

The text is prepared as examples/pretrain.py prepares it (GPT-2's recipe): every document is tokenized and
followed by the EOS token, the documents are concatenated, and the stream is cut into blocks of
`--block_size` tokens (the tail that does not fill a block is dropped); the model learns to predict each
next token. A document is a whole text file by default (`--sample_by paragraph` or `line` to split it), a
row of a CSV/JSON file, or a row of a Hub dataset (`--dataset_name`), read from `--text_column`. Without
`--validation_file`, a seeded `--validation_split_percentage` of the training blocks is held out.
Every `TrainingArguments` option works. `--lora` trains LoRA adapters (PEFT) instead of all weights (the adapter is
saved in `--output_dir`); with less memory (gptcore.training.memory_saving): `--lora --load_in_4bit` (QLoRA),
`--lora --load_in_8bit`, `--lora --int8` (a frozen quantised base), or `--galore` (low-rank optimizer states).

    python examples/finetune_clm.py --model_name_or_path runs/pretrain/final \
        --train_file examples/data/corpus/asyoulik.txt --output_dir runs/finetune_clm \
        --num_train_epochs 1 --per_device_train_batch_size 4 --block_size 256
"""

from __future__ import annotations

from transformers import Trainer

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import check_within_context, load_model_and_tokenizer
from gptcore.training.finetuning import start_finetuning, train_and_evaluate
from gptcore.training.language_modeling import TextDataArguments, causal_lm_collator, load_text_blocks
from gptcore.training.lora import LoraArguments, add_lora
from gptcore.training.memory_saving import MemorySavingArguments, prepare_for_training, quantization_config


def main() -> None:
    model_args, data, lora_args, saving, training_args = start_finetuning(
        TextDataArguments, LoraArguments, MemorySavingArguments, description=__doc__
    )
    quantization = quantization_config(saving, lora_args.lora, training_args)  # refuses combinations that cannot train
    model, tokenizer = load_model_and_tokenizer(GPTCoreForCausalLM, model_args, quantization_config=quantization)
    model = prepare_for_training(model, saving, training_args)  # freezes a quantised base; sets up GaLore
    if lora_args.lora:
        model = add_lora(model, lora_args)
        model.print_trainable_parameters()
    block_size = check_within_context(
        "block_size", data.block_size or model.config.n_positions, model.config, minimum=2
    )
    with training_args.main_process_first(desc="tokenization"):
        train, validation = load_text_blocks(data, tokenizer, block_size, training_args.seed)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        data_collator=causal_lm_collator,
    )
    metrics = train_and_evaluate(trainer, validation, perplexity=True)
    print(
        f"validation perplexity {metrics['before_perplexity']:.2f} -> {metrics['eval_perplexity']:.2f}; "
        f"model saved to {training_args.output_dir}"
    )


if __name__ == "__main__":
    main()
