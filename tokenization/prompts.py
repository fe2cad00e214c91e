"""The Alpaca-style instruction prompt (as in chapter 7 of *Build a LLM (From Scratch)*), as text, as a
chat template, and as training ids with the prompt masked out of the loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_RESPONSE_HEADER = "\n\n### Response:\n"
IGNORE_INDEX = -100  # labels with this value are skipped by PyTorch's cross-entropy (and transformers' loss)

# Messages: optional first "system" (replaces the preamble), then "user" (content = instruction, optional
# key "input") and "assistant" turns. Rendered text equals `format_alpaca`; assistant turns end with eos.
ALPACA_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- messages[0]['content'] -}}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{{- '" + ALPACA_PREAMBLE + "' -}}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '\\n\\n### Instruction:\\n' + message['content'] -}}"
    "{%- if message['input'] is defined and message['input'] -%}"
    "{{- '\\n\\n### Input:\\n' + message['input'] -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '\\n\\n### Response:\\n' + message['content'] + eos_token -}}"
    "{%- else -%}"
    "{{- raise_exception('The Alpaca template knows the roles system (first message only), user and assistant, "
    "not ' + message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '\\n\\n### Response:\\n' -}}{%- endif -%}"
)


def _field(record: Mapping[str, Any], key: str, required: bool) -> str:
    if not isinstance(record, Mapping):
        raise ValueError(f"an instruction record must be a dict with 'instruction'/'input'/'output', got {record!r}")
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and key == "instruction" and not value.strip()):
        raise ValueError(f"instruction record needs a non-empty string '{key}', got {value!r} in {dict(record)!r}")
    return value


def format_alpaca_prompt(record: Mapping[str, Any]) -> str:
    """Preamble, `### Instruction:`, optional `### Input:`, and the `### Response:` header the model continues."""
    text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{_field(record, 'instruction', required=True)}"
    input_text = _field(record, "input", required=False)
    if input_text:
        text += f"\n\n### Input:\n{input_text}"
    return text + ALPACA_RESPONSE_HEADER


def format_alpaca(record: Mapping[str, Any]) -> str:
    """The whole training text for an `{instruction, input, output}` record (without eos)."""
    return format_alpaca_prompt(record) + _field(record, "output", required=True)


def encode_instruction_example(
    tokenizer: Any, record: Mapping[str, Any], max_length: int | None = None
) -> dict[str, list[int]]:
    """Token ids of `format_alpaca(record)` + eos, and labels with the prompt tokens set to -100.

    Prompt and response are encoded separately and concatenated, so the prompt ids are exactly what the
    model sees at generation time. `max_length` truncates from the right.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; set tokenizer.eos_token so responses can end")
    prompt_ids = tokenizer.encode(format_alpaca_prompt(record), add_special_tokens=False)
    response_ids = tokenizer.encode(_field(record, "output", required=True), add_special_tokens=False)
    response_ids.append(tokenizer.eos_token_id)
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    if max_length is not None:
        if max_length <= len(prompt_ids):
            raise ValueError(
                f"the prompt alone is {len(prompt_ids)} tokens, so max_length={max_length} leaves no response "
                "token to learn from; raise max_length or drop this record"
            )
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}
