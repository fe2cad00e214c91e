"""`transformers serve` hosting a gptcore checkpoint (through examples/serve.py), spoken to with the official
`openai` client: greedy answers are token for token those of `generate()`, and of transformers' GPT-2 with the
same weights; the chat endpoint applies the checkpoint's chat template to the whole conversation.

One server for the module (starting it is most of the time); nothing is mocked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.support import build_checkpoint, chat_prompt, greedy, openai_client, served, skip_without_serving

skip_without_serving()

from gptcore.tokenization import gpt2_tokenizer  # noqa: E402

pytestmark = pytest.mark.slow
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(checkpoint, tmp_path_factory):
    folder = checkpoint[0]
    with served(folder, tmp_path_factory.mktemp("serve_log") / "server.log") as base_url:
        yield openai_client(base_url)


def test_completion_is_generate_and_gpt2(checkpoint, client):
    folder, model, reference = checkpoint
    tokenizer = gpt2_tokenizer()
    for prompt in ("Alice was beginning to get very tired", "The meaning of life is"):
        ids = tokenizer(prompt).input_ids
        expected = greedy(model, ids, MAX_TOKENS)
        assert expected == greedy(reference, ids, MAX_TOKENS)  # gptcore and transformers' GPT-2 agree token for token
        answer = client.completions.create(model=str(folder), prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        assert answer.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
        assert answer.usage.prompt_tokens == len(ids) and answer.usage.completion_tokens == len(expected)


def test_streamed_completion_is_the_same_text(checkpoint, client):
    folder, model, _ = checkpoint
    tokenizer = gpt2_tokenizer()
    prompt = "Alice was beginning to get very tired"
    stream = client.completions.create(
        model=str(folder), prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    pieces = [chunk.choices[0].text for chunk in stream if chunk.choices and chunk.choices[0].text]
    assert len(pieces) > 1  # really streamed, piece by piece
    assert "".join(pieces) == tokenizer.decode(
        greedy(model, tokenizer(prompt).input_ids, MAX_TOKENS), skip_special_tokens=True
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chat_completion_uses_the_chat_template(checkpoint, client, stream):
    folder, model, reference = checkpoint
    tokenizer = gpt2_tokenizer()
    messages = [{"role": "user", "content": "Name three primary colours."}]
    prompt = chat_prompt(tokenizer, messages)
    assert tokenizer.decode(prompt).endswith("### Instruction:\nName three primary colours.\n\n### Response:\n")
    expected = greedy(model, prompt, MAX_TOKENS)
    assert expected == greedy(reference, prompt, MAX_TOKENS)
    answer = client.chat.completions.create(
        model=str(folder), messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=stream
    )
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in answer if chunk.choices)
    else:
        text = answer.choices[0].message.content
        assert answer.usage.prompt_tokens == len(prompt)
    assert text == tokenizer.decode(expected, skip_special_tokens=True)


def test_multi_turn_history_reaches_the_prompt(checkpoint, client):
    folder, model, reference = checkpoint
    tokenizer = gpt2_tokenizer()
    history = [{"role": "user", "content": "Name three primary colours."}]
    first = client.chat.completions.create(model=str(folder), messages=history, max_tokens=MAX_TOKENS, temperature=0)
    history += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And one more?"},
    ]

    second = client.chat.completions.create(model=str(folder), messages=history, max_tokens=MAX_TOKENS, temperature=0)
    prompt = chat_prompt(tokenizer, history)  # the template over the whole conversation
    assert first.choices[0].message.content in tokenizer.decode(prompt)
    assert second.usage.prompt_tokens == len(prompt)  # the server's prompt is that long: turn 1 is in it
    expected = greedy(model, prompt, MAX_TOKENS)
    assert expected == greedy(reference, prompt, MAX_TOKENS)
    assert second.choices[0].message.content == tokenizer.decode(expected, skip_special_tokens=True)
    # The same question without the history gets another answer, so the equality above saw the history.
    alone = greedy(model, chat_prompt(tokenizer, history[-1:]), MAX_TOKENS)
    assert tokenizer.decode(alone, skip_special_tokens=True) != second.choices[0].message.content


def test_transformers_chat_talks_to_the_server(checkpoint, client, tmp_path):
    """`transformers chat <model> <url>`, transformers' terminal client, holds a two-turn conversation with the
    server."""
    folder, model, _ = checkpoint
    tokenizer = gpt2_tokenizer()
    cli = Path(sys.executable).parent / "transformers"  # transformers' console script, installed beside this Python
    if not cli.is_file():
        pytest.skip(f"no `transformers` command beside {sys.executable}")
    command = [str(cli), "chat", str(folder), str(client.base_url).removesuffix("/v1/")]
    # Its client refuses any URL, even a local one, under HF_HUB_OFFLINE; the update check is the only other request.
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "COLUMNS": "1000",
    }
    # Each reply stops at the token limit, after which it asks whether to continue: "n".
    turns = "Name three primary colours.\nn\nAnd one more?\nn\n!exit\n"
    result = subprocess.run(
        [*command, "do_sample=False", f"max_new_tokens={MAX_TOKENS}"],
        input=turns,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    history = [{"role": "user", "content": "Name three primary colours."}]
    first = tokenizer.decode(greedy(model, chat_prompt(tokenizer, history), MAX_TOKENS), skip_special_tokens=True)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "And one more?"}]
    second = tokenizer.decode(greedy(model, chat_prompt(tokenizer, history), MAX_TOKENS), skip_special_tokens=True)
    shown = " ".join(result.stdout.split())  # rendered as Markdown in the terminal's width
    assert " ".join(first.split()) in shown and " ".join(second.split()) in shown
