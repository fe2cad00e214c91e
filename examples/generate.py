r"""Generate text from a gptcore checkpoint, streaming tokens to the terminal as they come.

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
from transformers import TextStreamer, set_seed

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import ModelArguments, load_model_and_tokenizer, parse_args
from gptcore.training.generation import SamplingArguments, encode_prompt
from gptcore.training.hardware import pick_device


@dataclass
class GenerateArguments(SamplingArguments):
    prompt: str = field(default="Every effort moves you", metadata={"help": "The text to continue ('-': read stdin)."})
    alpaca: bool = field(
        default=False, metadata={"help": "Treat the prompt as an instruction: wrap it in the Alpaca template."}
    )
    num_return_sequences: int = field(default=1, metadata={"help": "Independent samples, one after another."})
    no_stream: bool = field(
        default=False, metadata={"help": "Print each text once finished instead of token by token."}
    )


def main() -> None:
    model_args, args = parse_args(ModelArguments, GenerateArguments, description=__doc__)
    if args.num_return_sequences < 1:
        raise ValueError(f"--num_return_sequences must be >= 1, got {args.num_return_sequences}")
    if args.seed is not None:
        set_seed(args.seed)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt

    model, tokenizer = load_model_and_tokenizer(GPTCoreForCausalLM, model_args)
    generation = args.generation_config(tokenizer)
    device = pick_device(args.device)
    model.eval().to(device)
    input_ids = encode_prompt(tokenizer, prompt, args.alpaca, args.max_new_tokens, model.config.n_positions).to(device)

    # TextStreamer prints text as soon as it decodes to whole characters (one sequence at a time); an
    # instruction's template is not repeated, a plain prompt is, so the continuation reads on from it.
    streamer = None if args.no_stream else TextStreamer(tokenizer, skip_prompt=args.alpaca, skip_special_tokens=True)
    for i in range(args.num_return_sequences):
        if args.num_return_sequences > 1:
            print(f"--- sample {i + 1} ---", flush=True)
        with torch.no_grad():
            output = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), generation_config=generation, streamer=streamer
            )
        if streamer is None:
            shown = output[0, input_ids.size(1) :] if args.alpaca else output[0]
            print(tokenizer.decode(shown, skip_special_tokens=True), flush=True)


if __name__ == "__main__":
    main()
