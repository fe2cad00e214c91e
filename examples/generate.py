"""Generate text from a gptcore checkpoint, streaming tokens to the terminal as they come.

    python examples/generate.py --model_name_or_path runs/pretrain/final --prompt "Alice was" \
        --max_new_tokens 60 --temperature 0.8 --top_k 50
    python examples/generate.py --model_name_or_path runs/instruct/merged --alpaca \
        --prompt "Name three primary colors." --greedy

Reads gptcore checkpoints and transformers GPT-2 folders (e.g. openai-community/gpt2). Other layouts
(nanoGPT, OpenAI's TensorFlow release, LLMs-from-scratch) convert first: `python -m gptcore.conversion`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from gptcore.training.arguments import ModelArguments, check_vocab_fits, load_model, load_tokenizer, parse_args
from transformers import GenerationConfig, TextStreamer, set_seed

from gptcore.modeling import GPTCoreForCausalLM


@dataclass
class GenerateArguments:
    prompt: str = field(default="Every effort moves you", metadata={"help": "The text to continue ('-': read stdin)."})
    alpaca: bool = field(default=False, metadata={"help": "Treat the prompt as an instruction: wrap it in the Alpaca template."})
    max_new_tokens: int = field(default=50, metadata={"help": "Tokens to generate."})
    greedy: bool = field(default=False, metadata={"help": "Always take the most likely token (ignores the sampling options)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature: < 1 sharper, > 1 flatter."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: the smallest set with this much probability."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeating tokens."})
    num_return_sequences: int = field(default=1, metadata={"help": "Independent samples, one after another."})
    seed: int | None = field(default=None, metadata={"help": "Seed for reproducible sampling."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, ... (auto: cuda if available)."})
    no_stream: bool = field(default=False, metadata={"help": "Print each text once finished instead of token by token."})


def main() -> None:
    model_args, args = parse_args(ModelArguments, GenerateArguments)
    if args.max_new_tokens < 1 or args.num_return_sequences < 1:
        raise ValueError("--max_new_tokens and --num_return_sequences must be >= 1")
    if not args.greedy and args.temperature <= 0:
        raise ValueError(f"--temperature must be > 0 when sampling, got {args.temperature}; use --greedy for argmax decoding")
    if args.seed is not None:
        set_seed(args.seed)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt

    tokenizer = load_tokenizer(model_args)
    model = load_model(GPTCoreForCausalLM, model_args).eval()
    check_vocab_fits(tokenizer, model.config)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    if args.alpaca:
        input_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    if input_ids.size(1) == 0:
        raise ValueError("the prompt is empty; pass some text with --prompt")
    if input_ids.size(1) + args.max_new_tokens > model.config.n_positions:
        raise ValueError(
            f"the prompt has {input_ids.size(1)} tokens; with --max_new_tokens {args.max_new_tokens} that exceeds the "
            f"model's context of {model.config.n_positions}; shorten the prompt or generate fewer tokens"
        )
    generation = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy,
        temperature=args.temperature if not args.greedy else None,
        top_k=(args.top_k or None) if not args.greedy else None,
        top_p=args.top_p if not args.greedy else None,
        repetition_penalty=args.repetition_penalty,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    # TextStreamer prints text as soon as it decodes to whole characters (one sequence at a time); an
    # instruction's template is not repeated, a plain prompt is, so the continuation reads on from it.
    streamer = None if args.no_stream else TextStreamer(tokenizer, skip_prompt=args.alpaca, skip_special_tokens=True)
    for i in range(args.num_return_sequences):
        if args.num_return_sequences > 1:
            print(f"--- sample {i + 1} ---", flush=True)
        with torch.no_grad():
            output = model.generate(
                input_ids.to(device), attention_mask=torch.ones_like(input_ids).to(device), generation_config=generation, streamer=streamer
            )
        if streamer is None:
            shown = output[0, input_ids.size(1) :] if args.alpaca else output[0]
            print(tokenizer.decode(shown, skip_special_tokens=True), flush=True)


if __name__ == "__main__":
    main()
