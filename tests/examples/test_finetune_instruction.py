"""examples/finetune_instruction.py end to end: response-only loss, held-out answers, LoRA train + merge.

The first run starts a fresh interpreter as a user would; the LoRA run runs the script in this process."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from gptcore.modeling import GPTCoreForCausalLM
from tests.examples.trainer_flags import QUIET_TRAINER
from tests.processes import run_example, run_example_in_process

COMMON = ["--per_device_eval_batch_size", "8", *QUIET_TRAINER]


def assert_saved_tokenizer_pads_left(folder):
    """The checkpoint is for generation, which continues the last position: its tokenizer must pad on the
    left (training pads on the right, but that must not leak into the saved tokenizer)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "left", f"{folder} saves a {tokenizer.padding_side}-padding tokenizer"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    ids = tokenizer(["a b c", "a"], padding=True).input_ids
    assert ids[1][0] == tokenizer.pad_token_id and ids[1][-1] != tokenizer.pad_token_id


@pytest.mark.slow
def test_only_the_response_is_learned_and_held_out_instructions_are_answered(tiny_gptcore_checkpoint, tmp_path):
    # Instructions of random words cannot be predicted; the response always can. Only a loss restricted to
    # the response (prompt labels -100) can fall near zero here.
    rng = random.Random(0)
    words = "apple river stone cloud music orange table window purple garden silver number".split()
    records = [{"instruction": " ".join(rng.choices(words, k=12)), "input": "", "output": "yes"} for _ in range(60)]
    data = tmp_path / "records.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "sft"
    result = run_example(
        "finetune_instruction.py",
        "--model_name_or_path",
        str(tiny_gptcore_checkpoint),
        "--data_file",
        str(data),
        "--split_fractions",
        "0.8,0.1,0.1",
        "--max_length",
        "64",
        "--max_steps",
        "30",
        "--learning_rate",
        "2e-2",
        "--lr_scheduler_type",
        "constant",
        "--per_device_train_batch_size",
        "8",
        "--max_new_tokens",
        "4",
        "--output_dir",
        str(out),
        *COMMON,
    )
    metrics = json.loads((out / "all_results.json").read_text())
    assert metrics["before_loss"] > 5 and metrics["eval_loss"] < 1.0, metrics
    assert "validation loss" in result.stdout
    answers = json.loads((out / "test_responses.json").read_text())
    assert len(answers) == 6
    assert {a["model_response"] for a in answers} == {"yes"}  # prompt format at generation = in training, eos learned
    assert {a["instruction"] for a in answers} <= {r["instruction"] for r in records}
    assert_saved_tokenizer_pads_left(out)


def test_lora_trains_and_merges_into_a_plain_checkpoint(tiny_gptcore_checkpoint, tmp_path, monkeypatch, capsys):
    from peft import PeftModel

    out = tmp_path / "lora"
    run_example_in_process(
        "finetune_instruction.py",
        "--model_name_or_path",
        str(tiny_gptcore_checkpoint),
        "--lora",
        "--max_length",
        "96",
        "--max_steps",
        "3",
        "--learning_rate",
        "1e-2",
        "--per_device_train_batch_size",
        "4",
        "--max_generate_samples",
        "1",
        "--max_new_tokens",
        "2",
        "--output_dir",
        str(out),
        *COMMON,
        monkeypatch=monkeypatch,
    )
    assert "LoRA merged into" in capsys.readouterr().out
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    targets = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in adapter}
    assert targets == {"c_attn", "c_proj", "c_fc"}
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero: it must have been trained"

    merged = GPTCoreForCausalLM.from_pretrained(out / "merged").eval()
    assert type(merged) is GPTCoreForCausalLM and not any("lora" in k for k in merged.state_dict())
    with_adapter = PeftModel.from_pretrained(GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint), out).eval()
    ids = torch.randint(0, 50257, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        base = GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint).eval()(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert (got - base).abs().max() > 1e-3  # the merge changed the model
    assert json.loads((out / "all_results.json").read_text())["lora_merge_max_abs_logit_difference"] < 1e-4
    assert len(json.loads((out / "test_responses.json").read_text())) == 1
    assert_saved_tokenizer_pads_left(out)
    assert_saved_tokenizer_pads_left(out / "merged")
