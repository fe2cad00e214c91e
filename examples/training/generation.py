"""Generating text with a gptcore checkpoint: a prompt (plain, or an instruction in the Alpaca template) in,
`generate()` settings from the command line, and greedy answers to a set of instructions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import GenerationConfig

from gptcore.tokenization import format_alpaca_prompt

logger = logging.getLogger(__name__)


def encode_prompt(
    tokenizer: Any, prompt: str, instruction: bool, max_new_tokens: int, n_positions: int
) -> torch.Tensor:
    """(1, T) token ids of `prompt`, wrapped in the tokenizer's chat (Alpaca) template if it is an `instruction`;
    refused if empty or if it and `max_new_tokens` would not fit in the model's context of `n_positions`."""
    if instruction:
        input_ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    if input_ids.size(1) == 0:
        raise ValueError("the prompt is empty; pass some text with --prompt")
    if input_ids.size(1) + max_new_tokens > n_positions:
        raise ValueError(
            f"the prompt has {input_ids.size(1)} tokens; with --max_new_tokens {max_new_tokens} that exceeds the "
            f"model's context of {n_positions}; shorten the prompt or generate fewer tokens"
        )
    return input_ids


def decoding_config(
    tokenizer: Any,
    max_new_tokens: int,
    greedy: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
) -> GenerationConfig:
    """Greedy decoding, or sampling with `temperature`, `top_k` (0: no limit) and `top_p`; stops at EOS."""
    if max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    if not greedy and temperature <= 0:
        raise ValueError(
            f"--temperature must be > 0 when sampling, got {temperature}; use --greedy for argmax decoding"
        )
    # Greedy decoding ignores the sampling options; GenerationConfig would warn about any it was given.
    sampling = (
        dict(temperature=None, top_k=None, top_p=None)
        if greedy
        else dict(temperature=temperature, top_k=top_k or None, top_p=top_p)
    )
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        repetition_penalty=repetition_penalty,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **sampling,
    )


@dataclass
class SamplingArguments:
    """The decoding options of the generate and chat scripts; a script's subclass may change their defaults."""

    max_new_tokens: int = field(default=50, metadata={"help": "Tokens to generate."})
    greedy: bool = field(
        default=False, metadata={"help": "Always take the most likely token (ignores the sampling options)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature: < 1 sharper, > 1 flatter."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens (0: all)."})
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling: the smallest set with this much probability."}
    )
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeating tokens."})
    seed: int | None = field(default=None, metadata={"help": "Seed for reproducible sampling."})
    device: str = field(
        default="auto", metadata={"help": "cpu, cuda, ... (auto: the accelerator torch finds, else cpu)."}
    )

    def generation_config(self, tokenizer: Any) -> GenerationConfig:
        return decoding_config(
            tokenizer,
            self.max_new_tokens,
            self.greedy,
            self.temperature,
            self.top_k,
            self.top_p,
            self.repetition_penalty,
        )


def answer_instructions(
    model: Any, tokenizer: Any, records: Dataset, max_new_tokens: int, batch_size: int
) -> list[dict[str, str]]:
    """Each record ({instruction, input, ...}) with the model's greedy answer to its Alpaca prompt added as
    `model_response`. A prompt longer than the context leaves room for the answer by losing its beginning."""
    prompts = [format_alpaca_prompt(row) for row in records]
    answers = answer_prompts(model, tokenizer, prompts, max_new_tokens, batch_size, desc="Answering test instructions")
    return [{**row, "model_response": answer} for row, answer in zip(records, answers)]


@torch.no_grad()
def answer_prompts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    desc: str = "Answering prompts",
) -> list[str]:
    """The model's greedy continuation of each prompt (as given: no template added), stripped. A prompt longer than
    the context leaves room for the answer by losing its beginning."""
    model.eval()
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"  # generation continues the last token
    room = model.config.n_positions - max_new_tokens
    if room < 1:
        raise ValueError(
            f"--max_new_tokens {max_new_tokens} leaves no room for a prompt in n_positions={model.config.n_positions}"
        )
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc):
        batch = prompts[start : start + batch_size]
        if any(len(ids) > room for ids in tokenizer(batch).input_ids):
            logger.warning("prompts longer than %d tokens lose their beginning (n_positions - --max_new_tokens)", room)
        inputs = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=room).to(model.device)
        generated = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers += [text.strip() for text in texts]
    return answers
