"""examples/finetune_clm.py: text prepared as pretraining prepares it (EOS after every document, packed into
blocks, labels = inputs), and end to end: a tiny checkpoint adapts to a text and the result loads back."""

from __future__ import annotations

import json

import pytest

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer
from gptcore.training.clm_data import TextDataArguments, causal_lm_collator, load_text_blocks
from tests.examples.trainer_flags import QUIET_TRAINER
from tests.processes import run_example

PARAGRAPHS = [
    "The first paragraph, short.",
    "A second one,\nover two lines.",
    "Third and last: a little longer than the others.",
]


@pytest.mark.parametrize("sample_by", ["document", "paragraph"])
def test_every_document_ends_with_eos_and_the_stream_is_cut_into_blocks(sample_by, tmp_path):
    tokenizer = gpt2_tokenizer()
    train, validation = tmp_path / "train.txt", tmp_path / "validation.txt"
    train.write_text("\n\n".join(PARAGRAPHS))
    validation.write_text("Held-out text, long enough for one block of eight tokens at least.")
    documents = ["\n\n".join(PARAGRAPHS)] if sample_by == "document" else PARAGRAPHS
    stream = [
        t for doc in documents for t in tokenizer(doc, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ]

    data = TextDataArguments(train_file=str(train), validation_file=str(validation), sample_by=sample_by)
    blocks, held_out = load_text_blocks(data, tokenizer, block_size=8, seed=0)
    assert blocks["input_ids"] == [stream[i : i + 8] for i in range(0, len(stream) // 8 * 8, 8)]  # the tail is dropped
    assert len(held_out) >= 1 and all(len(block) == 8 for block in held_out["input_ids"])

    batch = causal_lm_collator([blocks[0], blocks[1]])
    assert batch["input_ids"].tolist() == blocks["input_ids"][:2]
    assert batch["labels"].tolist() == blocks["input_ids"][:2]  # EOS included: it is learned, never masked as padding


def test_held_out_blocks_are_a_seeded_share_of_the_training_blocks(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("\n\n".join(f"Paragraph number {i} of a longer text." for i in range(100)))
    data = TextDataArguments(
        train_file=str(text), validation_split_percentage=10, max_train_samples=50, max_eval_samples=3
    )
    train, validation = load_text_blocks(data, gpt2_tokenizer(), block_size=16, seed=0)
    again, _ = load_text_blocks(data, gpt2_tokenizer(), block_size=16, seed=0)
    assert len(train) == 50 and len(validation) == 3
    assert train["input_ids"] == again["input_ids"]
    assert not {tuple(b) for b in validation["input_ids"]} & {tuple(b) for b in train["input_ids"]}


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
