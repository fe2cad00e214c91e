"""examples/generate.py: streams what `generate()` produces, from gptcore and transformers GPT-2 folders.

The first test starts a fresh interpreter as a user would; the others run the script in this process."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer
from tests.processes import run_example, run_example_in_process


def test_greedy_output_is_what_generate_returns(tiny_gptcore_checkpoint):
    prompt = "Alice was beginning to get very tired"
    result = run_example(
        "generate.py",
        "--model_name_or_path",
        str(tiny_gptcore_checkpoint),
        "--prompt",
        prompt,
        "--greedy",
        "--max_new_tokens",
        "12",
    )
    tokenizer = gpt2_tokenizer()
    model = GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(ids, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.eos_token_id)
    assert expected.size(1) == ids.size(1) + 12
    assert result.stdout.strip() == tokenizer.decode(expected[0], skip_special_tokens=True).strip()


def test_transformers_gpt2_folder_with_alpaca_prompt_and_samples(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=96)).save_pretrained(folder)  # Hub layout
    gpt2_tokenizer().save_pretrained(folder)
    args = [
        "--model_name_or_path",
        str(folder),
        "--prompt",
        "Name a primary color.",
        "--alpaca",
        "--max_new_tokens",
        "5",
    ]
    run_example_in_process(
        "generate.py", *args, "--num_return_sequences", "2", "--seed", "3", "--top_p", "0.9", monkeypatch=monkeypatch
    )
    streamed = capsys.readouterr().out
    assert streamed.count("--- sample ") == 2
    assert "### Instruction" not in streamed  # the template is not echoed, only the responses
    run_example_in_process(
        "generate.py",
        *args,
        "--num_return_sequences",
        "2",
        "--seed",
        "3",
        "--top_p",
        "0.9",
        "--no_stream",
        monkeypatch=monkeypatch,
    )
    assert capsys.readouterr().out == streamed  # same seed, same samples, printed whole instead of streamed


def test_prompt_longer_than_the_context_is_refused(tiny_gptcore_checkpoint, monkeypatch):
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        run_example_in_process(
            "generate.py",
            "--model_name_or_path",
            str(tiny_gptcore_checkpoint),
            "--prompt",
            "word " * 100,
            "--max_new_tokens",
            "50",
            monkeypatch=monkeypatch,
        )
