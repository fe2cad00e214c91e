"""Alpaca prompt text, chat template, and the instruction-tuning ids/labels."""

import pytest
from jinja2.exceptions import TemplateError

from gptcore.tokenization import (
    IGNORE_INDEX,
    encode_instruction_example,
    format_alpaca,
    format_alpaca_prompt,
    gpt2_tokenizer,
)

RECORD = {
    "instruction": "Rewrite the sentence using a simile.",
    "input": "The car is very fast.",
    "output": "The car is as fast as lightning.",
}
NO_INPUT = {"instruction": "What is an antonym of 'complicated'?", "input": "", "output": "An antonym is 'simple'."}
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def test_format_matches_the_book():
    assert format_alpaca(RECORD) == (
        f"{PREAMBLE}\n\n### Instruction:\nRewrite the sentence using a simile.\n\n"
        "### Input:\nThe car is very fast.\n\n### Response:\nThe car is as fast as lightning."
    )
    # An empty or absent input drops the whole "### Input:" section.
    expected = f"{PREAMBLE}\n\n### Instruction:\nWhat is an antonym of 'complicated'?\n\n### Response:\n"
    assert format_alpaca_prompt(NO_INPUT) == expected
    assert format_alpaca_prompt({"instruction": NO_INPUT["instruction"]}) == expected


def as_messages(record: dict) -> list[dict[str, str]]:
    """A record as the chat template's messages: the user turn carries the optional input, then the answer if any."""
    messages = [{"role": "user", "content": record["instruction"], "input": record.get("input", "")}]
    if "output" in record:
        messages.append({"role": "assistant", "content": record["output"]})
    return messages


@pytest.mark.parametrize("record", [RECORD, NO_INPUT], ids=["with_input", "no_input"])
def test_chat_template_renders_the_same_text(tok, record):
    messages = as_messages(record)
    assert tok.apply_chat_template(messages, tokenize=False) == format_alpaca(record) + "<|endoftext|>"
    prompt_only = as_messages({k: v for k, v in record.items() if k != "output"})
    assert len(prompt_only) == 1
    rendered = tok.apply_chat_template(prompt_only, tokenize=False, add_generation_prompt=True)
    assert rendered == format_alpaca_prompt(record)
    ids = tok.apply_chat_template(prompt_only, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == tok.encode(format_alpaca_prompt(record))


def test_chat_template_system_message_and_bad_role(tok):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(messages, tokenize=False) == "You are terse.\n\n### Instruction:\nHi"
    with pytest.raises(TemplateError, match="roles system .* user and assistant, not tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_encode_instruction_example_masks_the_prompt(tok):
    example = encode_instruction_example(tok, RECORD)
    prompt_ids = tok.encode(format_alpaca_prompt(RECORD))
    response_ids = tok.encode(RECORD["output"]) + [50256]
    assert example["input_ids"] == prompt_ids + response_ids
    assert example["labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids
    # The prompt ends in "\n", so encoding the pieces apart gives the same ids as encoding the whole text.
    assert example["input_ids"] == tok.encode(format_alpaca(RECORD)) + [50256]


def test_encode_instruction_example_truncates_and_rejects(tok):
    full = encode_instruction_example(tok, NO_INPUT)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    short = encode_instruction_example(tok, NO_INPUT, max_length=n_prompt + 2)
    assert short["input_ids"] == full["input_ids"][: n_prompt + 2]
    assert short["labels"][n_prompt:] == full["input_ids"][n_prompt : n_prompt + 2]
    with pytest.raises(ValueError, match="prompt alone is .* max_length=10"):
        encode_instruction_example(tok, NO_INPUT, max_length=10)


@pytest.mark.parametrize(
    "record, message",
    [
        ({"input": "x", "output": "y"}, "non-empty string 'instruction'"),
        ({"instruction": "  ", "output": "y"}, "non-empty string 'instruction'"),
        ({"instruction": "x", "input": 3, "output": "y"}, "'input'"),
        ({"instruction": "x"}, "'output'"),
        ("just a string", "must be a dict"),
    ],
)
def test_bad_records(tok, record, message):
    with pytest.raises(ValueError, match=message):
        encode_instruction_example(tok, record)
