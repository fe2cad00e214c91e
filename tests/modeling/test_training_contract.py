"""Training through transformers: Trainer, exact gradient accumulation, gradient checkpointing."""

import warnings

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments, default_data_collator

from tests.oracle import gptcore_config, random_gptcore

VOCAB = gptcore_config().vocab_size


def lm_dataset(n: int, seq_len: int, seed: int = 0, masked_tail: bool = False) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, seq_len), generator=g)
    labels = ids.clone()
    if masked_tail:  # rows with different numbers of counted tokens make per-batch averaging wrong
        for i in range(n):
            labels[i, seq_len - 2 * i - 1 :] = -100
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def run_trainer(model, dataset, out, optimizer=None, **args) -> None:
    defaults = dict(
        output_dir=str(out),
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
    )
    Trainer(
        model=model,
        args=TrainingArguments(**{**defaults, **args}),
        train_dataset=dataset,
        data_collator=default_data_collator,
        optimizers=(optimizer, None),
    ).train()


def test_trainer_lowers_the_loss(tmp_path):
    model = random_gptcore()
    data = lm_dataset(8, 16).map(
        lambda row: {"input_ids": row["input_ids"][:8] * 2, "labels": row["input_ids"][:8] * 2}
    )
    batch = default_data_collator([data[i] for i in range(8)])
    with torch.no_grad():
        before = model(**batch).loss.item()
    run_trainer(model, data, tmp_path, max_steps=30, learning_rate=3e-3, per_device_train_batch_size=4)
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    assert after < before - 0.5, (before, after)


def test_gradient_accumulation_is_exact(tmp_path):
    """4 micro-batches of 1 with accumulation == one batch of 4: Trainer passes num_items_in_batch
    and our loss goes through self.loss_function, so uneven label counts are weighted correctly."""
    data = lm_dataset(4, 16, masked_tail=True)
    updates = []
    for batch_size, accumulation in ((4, 1), (1, 4)):
        model = random_gptcore(seed=1)
        start = {k: v.detach().clone() for k, v in model.named_parameters()}
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        run_trainer(
            model,
            data,
            tmp_path / f"b{batch_size}",
            optimizer,
            max_steps=1,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_grad_norm=0.0,
            lr_scheduler_type="constant",
        )
        updates.append({k: start[k] - p.detach() for k, p in model.named_parameters()})  # = lr * grad
    for name in updates[0]:
        torch.testing.assert_close(updates[1][name], updates[0][name], atol=1e-5, rtol=0, msg=name)
    assert max(u.abs().max() for u in updates[0].values()) > 1e-3  # the step really moved the weights


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_gradient_checkpointing_gives_the_same_gradients(attn):
    ids = torch.randint(0, VOCAB, (2, 16))
    grads = []
    for checkpointing in (False, True):
        model = random_gptcore(seed=2)
        model.set_attn_implementation(attn)
        model.train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # renamed activation_checkpointing_enable in 5.23
                model.gradient_checkpointing_enable()
            assert model.transformer.gradient_checkpointing and all(
                b.gradient_checkpointing for b in model.transformer.h
            )
        model(ids, labels=ids, use_cache=False).loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=0, msg=name)
