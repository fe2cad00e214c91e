"""Chat with an instruction-tuned gptcore checkpoint in the terminal: the conversation is kept, each reply streams
as it is generated, and every prompt is the checkpoint's chat template applied to the whole conversation.

    python examples/chat.py --model_name_or_path runs/instruct               # finetune_instruction.py's output
    python examples/chat.py --model_name_or_path runs/instruct/merged        # the same, trained with --lora
    printf 'Name three primary colours.\\nAnd one more?\\n' |
        python examples/chat.py --model_name_or_path runs/instruct --greedy

One user turn per line on stdin; `/reset` forgets the conversation, `/exit` or end of input (Ctrl-D) ends it.
Replies go to stdout, one after another; `--show_prompt` also prints each prompt, as the model sees it, to stderr.
When the conversation outgrows the model's context, its oldest exchanges are dropped (with a note on stderr).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch
from transformers import TextStreamer, set_seed

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import ModelArguments, load_model_and_tokenizer, parse_args
from gptcore.training.generation import SamplingArguments
from gptcore.training.hardware import pick_device


@dataclass
class ChatArguments(SamplingArguments):
    max_new_tokens: int = field(default=200, metadata={"help": "The longest reply, in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature: < 1 sharper, > 1 flatter."})
    top_p: float = field(
        default=0.9, metadata={"help": "Nucleus sampling: the smallest set with this much probability."}
    )
    system: str | None = field(
        default=None, metadata={"help": "A system message, in place of the template's own preamble."}
    )
    show_prompt: bool = field(
        default=False, metadata={"help": "Print each prompt, after the chat template, to stderr."}
    )


def user_turns(stream: TextIO) -> Iterator[str]:
    """Lines of `stream` until EOF or `/exit`, with a `you> ` prompt when a person types them."""
    while True:
        if stream.isatty():
            print("you> ", end="", flush=True)
        line = stream.readline()
        if not line or line.strip() == "/exit":
            return
        if line.strip():
            yield line.strip()


def fit_context(tokenizer, messages: list[dict], room: int) -> torch.Tensor:
    """(1, T) ids of the chat-templated conversation with the generation prompt, dropping the oldest exchanges
    (user + assistant) until it fits in `room` tokens; a ValueError if the newest turn alone does not fit."""
    while True:
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        turns = [m for m in messages if m["role"] != "system"]
        if ids.size(1) <= room or len(turns) == 1:
            break
        first = messages.index(turns[0])
        del messages[first : first + 2]
        print("[the oldest exchange no longer fits the context and is dropped]", file=sys.stderr, flush=True)
    if ids.size(1) > room:
        raise ValueError(
            f"this message needs {ids.size(1)} tokens with the template; the model leaves {room} for a prompt"
        )
    return ids


def main() -> None:
    model_args, args = parse_args(ModelArguments, ChatArguments)
    folder = Path(model_args.model_name_or_path or "")
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds a LoRA adapter only; pass the merged model that finetune_instruction.py --lora writes: "
            f"{folder / 'merged'}"
        )
    if args.seed is not None:
        set_seed(args.seed)
    model, tokenizer = load_model_and_tokenizer(GPTCoreForCausalLM, model_args)
    if not tokenizer.chat_template:
        raise ValueError(
            f"the tokenizer of {model_args.tokenizer_name_or_path or model_args.model_name_or_path} has no chat "
            "template; "
            "use a checkpoint written by examples/finetune_instruction.py (it saves gptcore's tokenizer, which carries "
            "the Alpaca template), or pass such a tokenizer with --tokenizer_name_or_path"
        )
    generation = args.generation_config(tokenizer)
    room = model.config.n_positions - args.max_new_tokens
    if room < 1:
        raise ValueError(
            f"--max_new_tokens {args.max_new_tokens} leaves no room for a prompt in "
            f"n_positions={model.config.n_positions}"
        )
    device = pick_device(args.device)
    model.eval().to(device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)  # prints the reply as it comes

    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(system)
    for text in user_turns(sys.stdin):
        if text == "/reset":
            messages = list(system)
            print("[conversation cleared]", file=sys.stderr, flush=True)
            continue
        messages.append({"role": "user", "content": text})
        try:
            input_ids = fit_context(tokenizer, messages, room).to(device)
        except ValueError as error:
            messages.pop()
            print(f"[{error}]", file=sys.stderr, flush=True)
            continue
        if args.show_prompt:
            print(f"[prompt]\n{tokenizer.decode(input_ids[0])}\n[/prompt]", file=sys.stderr, flush=True)
        with torch.no_grad():
            output = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), generation_config=generation, streamer=streamer
            )
        messages.append(
            {"role": "assistant", "content": tokenizer.decode(output[0, input_ids.size(1) :], skip_special_tokens=True)}
        )


if __name__ == "__main__":
    main()
