"""examples/finetune_clm.py end to end: a tiny checkpoint adapts to a text and the result loads back (how the text
is prepared is tested in tests/training/test_language_modeling.py)."""

from __future__ import annotations

import json

import pytest

from gptcore.modeling import GPTCoreForCausalLM
from tests.examples.trainer_flags import QUIET_TRAINER
from tests.processes import run_example


@pytest.mark.slow
def test_continued_pretraining_lowers_validation_loss(tiny_gptcore_checkpoint, tmp_path):
    text = tmp_path / "domain.txt"
    text.write_text("\n\n".join(f"The spam filter saw message {i % 7} and said: ham." for i in range(300)))
    out = tmp_path / "out"
    result = run_example(
        "finetune_clm.py",
        "--model_name_or_path",
        str(tiny_gptcore_checkpoint),
        "--train_file",
        str(text),
        "--block_size",
        "32",
        "--validation_split_percentage",
        "10",
        "--max_steps",
        "12",
        "--learning_rate",
        "3e-3",
        "--per_device_train_batch_size",
        "8",
        "--per_device_eval_batch_size",
        "16",
        "--output_dir",
        str(out),
        *QUIET_TRAINER,
    )
    metrics = json.loads((out / "all_results.json").read_text())
    assert metrics["eval_loss"] < metrics["before_loss"] - 1.0, metrics
    assert "validation perplexity" in result.stdout
    model = GPTCoreForCausalLM.from_pretrained(out)
    original = GPTCoreForCausalLM.from_pretrained(tiny_gptcore_checkpoint)
    assert not model.transformer.wte.weight.equal(original.transformer.wte.weight)  # the saved model is the trained one
    assert (out / "tokenizer.json").is_file()
