"""examples/chat.py: a multi-turn conversation read from stdin, each reply what greedy `generate()` (and
transformers' GPT-2 with the same weights) answers to the chat template over the whole conversation so far."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from gptcore.tokenization import gpt2_tokenizer
from tests.processes import EXAMPLES, run_example_in_process
from tests.serving.support import build_checkpoint, chat_prompt, greedy

MAX_TOKENS = 8


@pytest.mark.slow
def test_two_turns_then_reset(tmp_path):
    folder, model, reference = build_checkpoint(tmp_path)
    turns = [
        "Name three primary colours.",
        "And one more?",
        "/reset",
        "Name three primary colours.",
        "/exit",
        "never read",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXAMPLES / "chat.py"), "--model_name_or_path", str(folder), "--greedy"]
    result = subprocess.run(
        [*command, "--max_new_tokens", str(MAX_TOKENS), "--show_prompt"],
        input="\n".join(turns) + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    tokenizer = gpt2_tokenizer()
    history, replies = [], []
    for text in ("Name three primary colours.", "And one more?"):
        history.append({"role": "user", "content": text})
        prompt = chat_prompt(tokenizer, history)
        expected = greedy(model, prompt, MAX_TOKENS)
        assert expected == greedy(reference, prompt, MAX_TOKENS)
        replies.append(tokenizer.decode(expected, skip_special_tokens=True))
        history.append({"role": "assistant", "content": replies[-1]})
    # After /reset the first question starts a new conversation, hence the first answer again.
    assert result.stdout == "".join(reply + "\n" for reply in [*replies, replies[0]])

    prompts = re.findall(r"\[prompt\]\n(.*?)\n\[/prompt\]", result.stderr, flags=re.S)
    assert len(prompts) == 3
    assert (
        replies[0] in prompts[1] and prompts[1].count("### Instruction:") == 2
    )  # turn 2 sees turn 1, question and answer
    assert prompts[2] == prompts[0]  # nothing of the first conversation is left after /reset
    # The history changes the answer: the second question alone gets another one.
    alone = greedy(model, chat_prompt(tokenizer, history[2:3]), MAX_TOKENS)
    assert tokenizer.decode(alone, skip_special_tokens=True) != replies[1]


def test_a_tokenizer_without_chat_template_is_refused(tiny_gptcore_checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "plain"
    folder.mkdir()
    for path in tiny_gptcore_checkpoint.iterdir():
        if path.name != "chat_template.jinja":
            (folder / path.name).symlink_to(path)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    with pytest.raises(ValueError, match="no chat template.*finetune_instruction.py"):
        run_example_in_process("chat.py", "--model_name_or_path", str(folder), monkeypatch=monkeypatch)


def test_a_lora_adapter_folder_points_to_the_merged_model(tmp_path, monkeypatch):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="LoRA adapter.*merged"):
        run_example_in_process("chat.py", "--model_name_or_path", str(tmp_path), monkeypatch=monkeypatch)
