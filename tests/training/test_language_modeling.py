"""Language-modelling data (gptcore.training.language_modeling): documents joined with EOS and cut into blocks,
positions that keep packed documents apart, the held-out validation blocks, the unigram baseline; and the text of
causal-LM fine-tuning prepared as pretraining prepares it (EOS after every document, packed into blocks, labels =
inputs)."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer
from gptcore.training.language_modeling import (
    TextDataArguments,
    causal_lm_collator,
    document_position_ids,
    load_text_blocks,
    pack_into_blocks,
    split_validation,
    tokenize_documents,
    unigram_baseline,
)

EOS = 63


def test_positions_restart_at_every_eos() -> None:
    ids = torch.tensor([[5, 6, EOS, 7, 8, EOS, EOS, 9], [EOS, 1, 2, 3, 4, 5, 6, 7]])
    expected = torch.tensor([[0, 1, 0, 1, 2, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert torch.equal(document_position_ids(ids, EOS), expected)


def test_packed_documents_do_not_attend_to_each_other() -> None:
    torch.manual_seed(0)
    config = GPTCoreConfig(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=EOS, eos_token_id=EOS
    )
    model = GPTCoreForCausalLM(config).eval()
    first = torch.randint(0, EOS, (1, 7))
    second = torch.cat([torch.tensor([[EOS]]), torch.randint(0, EOS, (1, 6))], dim=1)  # the EOS opens document 2
    packed = torch.cat([first, second], dim=1)
    with torch.no_grad():
        alone = model(second, use_cache=False).logits
        isolated = model(packed, position_ids=document_position_ids(packed, EOS), use_cache=False).logits[:, 7:]
        plain = model(packed, use_cache=False).logits[:, 7:]
    torch.testing.assert_close(isolated, alone, rtol=1e-5, atol=1e-5)
    assert (plain - alone).abs().max() > 1e-2  # a plain causal mask does let document 2 see document 1


def test_documents_are_joined_with_eos_and_cut_into_blocks() -> None:
    tokenizer = gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    texts = ["Hello world", "", "Alice was", "beginning to get very tired"]
    docs = tokenize_documents(Dataset.from_dict({"text": texts}), tokenizer, "text", num_proc=None)
    assert docs["input_ids"] == [tokenizer(t)["input_ids"] + [eos] for t in texts if t]  # the empty one vanishes
    stream = [token for doc in docs["input_ids"] for token in doc]
    blocks = pack_into_blocks(docs, block_size=4, num_proc=None)["input_ids"]
    assert blocks == [stream[i : i + 4] for i in range(0, len(stream) - 3, 4)]
    assert len(stream) % 4 != 0 and len(blocks) == len(stream) // 4  # the tail that fills no block is dropped


def test_validation_split_is_held_out_and_seeded() -> None:
    blocks = Dataset.from_dict({"input_ids": [[i, i] for i in range(100)]})
    train, val = split_validation(blocks, None, 5.0, max_eval_blocks=3, seed=1)
    train_again, val_again = split_validation(blocks, None, 5.0, max_eval_blocks=3, seed=1)
    assert len(train) == 95 and len(val) == 3
    assert val["input_ids"] == val_again["input_ids"] and train["input_ids"] == train_again["input_ids"]
    assert not {block[0] for block in val["input_ids"]} & {block[0] for block in train["input_ids"]}
    with pytest.raises(ValueError, match="too few"):
        split_validation(Dataset.from_dict({"input_ids": [[1, 2]]}), None, 5.0, 3, seed=1)


def test_unigram_baseline_is_add_one_smoothed_cross_entropy() -> None:
    train = Dataset.from_dict({"input_ids": [[0, 0, 1, 2]]})  # counts 2, 1, 1, 0 over a vocabulary of 4
    val = Dataset.from_dict({"input_ids": [[3, 0, 1]]})  # targets: 0 and 1 (the first token is never predicted)
    nats, n_train = unigram_baseline(train, val, vocab_size=4)
    assert n_train == 4
    assert nats == pytest.approx(-(math.log(3 / 8) + math.log(2 / 8)) / 2)


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
