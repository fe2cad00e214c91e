"""`transformers serve --continuous-batching` hosting a gptcore checkpoint: requests sent at the same time are
decoded together through the paged KV cache, and each answer is still token for token what `generate()` gives
alone (which is what the server without continuous batching answers: see test_serve.py).

One server for the module; the cache is capped (FINDINGS: uncapped, it is sized from the machine's RAM)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serving.support import build_checkpoint, chat_prompt, greedy, openai_client, served, skip_without_serving

skip_without_serving()

from gptcore.tokenization import gpt2_tokenizer  # noqa: E402

pytestmark = pytest.mark.slow
MAX_TOKENS = 12
CB_OPTIONS = ("--continuous-batching", "--cb-num-blocks", "16", "--cb-max-batch-tokens", "256")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("serve_cb"))


@pytest.fixture(scope="module")
def client(checkpoint, tmp_path_factory):
    with served(checkpoint[0], tmp_path_factory.mktemp("serve_cb_log") / "server.log", *CB_OPTIONS) as base_url:
        yield openai_client(base_url)


def test_concurrent_completions_are_generate(checkpoint, client):
    folder, model, reference = checkpoint
    tokenizer = gpt2_tokenizer()
    prompts = [
        "Alice was beginning to get very tired",
        "The meaning of life is",
        "Hello",
        "Once upon a time, in a land far away,",
    ]

    def complete(prompt: str) -> str:
        return (
            client.completions.create(model=str(folder), prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
            .choices[0]
            .text
        )

    with ThreadPoolExecutor(len(prompts)) as pool:  # in flight together: prompts of different lengths share batches
        answers = list(pool.map(complete, prompts))
    for prompt, answer in zip(prompts, answers):
        expected = greedy(model, tokenizer(prompt).input_ids, MAX_TOKENS)
        assert expected == greedy(reference, tokenizer(prompt).input_ids, MAX_TOKENS)
        assert answer == tokenizer.decode(expected, skip_special_tokens=True), prompt


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_multi_turn_chat_is_generate(checkpoint, client, stream):
    folder, model, _ = checkpoint
    tokenizer = gpt2_tokenizer()
    history = [{"role": "user", "content": "Name three primary colours."}]
    for follow_up in ("And one more?", None):
        answer = client.chat.completions.create(
            model=str(folder), messages=history, max_tokens=MAX_TOKENS, temperature=0, stream=stream
        )
        text = (
            "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
            if stream
            else answer.choices[0].message.content
        )
        assert text == tokenizer.decode(
            greedy(model, chat_prompt(tokenizer, history), MAX_TOKENS), skip_special_tokens=True
        )
        if follow_up:
            history += [{"role": "assistant", "content": text}, {"role": "user", "content": follow_up}]
