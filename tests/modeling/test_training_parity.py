"""Training gptcore by hand follows transformers' GPT-2 step for step.

Both models start from identical weights (a random GPT2LMHeadModel and gptcore loaded from its folder),
run in train mode with dropout 0 (`tests.oracle.gpt2_config`), see the same batches and take AdamW steps.
transformers' GPT2LMHeadModel is the oracle. gptcore's four projections are nn.Linear, GPT-2's are Conv1D,
so those weights are compared transposed (`attn.c_proj` is square: its shape alone would not tell).
"""

import pytest
import torch

from tests.oracle import CONV1D_WEIGHT, TOL, gpt2_and_twin, in_gpt2_layout

STEPS = 20


@pytest.fixture
def train_pair(tmp_path):
    ref, ours = gpt2_and_twin(tmp_path / "gpt2")
    return ref.train(), ours.train()


def paired_tensors(ours, ref, grad: bool = False):
    """(name, gptcore tensor in GPT-2's layout, GPT-2 tensor) for every parameter of both models."""
    ours_params, ref_params = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert sorted(ours_params) == sorted(ref_params), (
        f"parameter names differ: only gptcore {sorted(set(ours_params) - set(ref_params))}, "
        f"only GPT-2 {sorted(set(ref_params) - set(ours_params))}"
    )
    assert sum(1 for n in ref_params if CONV1D_WEIGHT.search(n)) == 4 * ref.config.n_layer
    for name, ref_p in ref_params.items():
        a, b = ours_params[name], ref_p
        if grad:
            assert a.grad is not None, f"gptcore's {name} has no gradient"
            assert b.grad is not None, f"GPT-2's {name} has no gradient"
            a, b = a.grad, b.grad
        a = in_gpt2_layout(name, a.detach())
        assert a.shape == b.shape, f"{name}: gptcore {tuple(a.shape)} vs GPT-2 {tuple(b.shape)}"
        yield name, a, b.detach()


def batches(vocab_size: int):
    generator = torch.Generator().manual_seed(1234)
    return [torch.randint(0, vocab_size, (4, 16), generator=generator) for _ in range(STEPS)]


def train(model, data, autocast: bool = False) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    losses = []
    for ids in data:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_first_step_gradients_match(train_pair):
    ref, ours = train_pair
    ids = batches(ref.config.vocab_size)[0]
    ref_out, ours_out = ref(input_ids=ids, labels=ids), ours(input_ids=ids, labels=ids)
    torch.testing.assert_close(ours_out.loss, ref_out.loss, atol=TOL, rtol=0)
    torch.testing.assert_close(ours_out.logits, ref_out.logits, atol=TOL, rtol=0)
    ref_out.loss.backward()
    ours_out.loss.backward()
    compared = 0
    for name, a, b in paired_tensors(ours, ref, grad=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0, msg=lambda m, n=name: f"gradient of {n} differs: {m}")
        compared += 1
    assert compared == len(list(ref.parameters()))


def test_adamw_fp32_losses_and_final_weights_match(train_pair):
    ref, ours = train_pair
    data = batches(ref.config.vocab_size)
    start = {name: p.detach().clone() for name, p in ref.named_parameters()}
    ref_losses, ours_losses = train(ref, data), train(ours, data)
    assert ref_losses[-1] < ref_losses[0]  # the reference learned something: the comparison means something
    moved = max((p.detach() - start[name]).abs().max().item() for name, p in ref.named_parameters())
    assert moved > 1e-2, f"the reference weights moved by at most {moved}: too little to compare at 1e-4"
    for step, (a, b) in enumerate(zip(ours_losses, ref_losses)):
        assert abs(a - b) <= 1e-4 * abs(b), (
            f"step {step}: loss {a} vs GPT-2 {b} (relative {abs(a - b) / abs(b):.2e} > 1e-4)"
        )
    for name, a, b in paired_tensors(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=lambda m, n=name: f"{n} after {STEPS} AdamW steps: {m}")


def test_adamw_bf16_autocast_losses_match(train_pair):
    ref, ours = train_pair
    data = batches(ref.config.vocab_size)
    ref_losses, ours_losses = train(ref, data, autocast=True), train(ours, data, autocast=True)
    assert ref_losses[-1] < ref_losses[0]
    for step, (a, b) in enumerate(zip(ours_losses, ref_losses)):  # relative tolerance: bf16 keeps ~3 digits
        assert abs(a - b) <= 2e-2 * abs(b), (
            f"step {step}: bf16 loss {a} vs GPT-2 {b} (relative {abs(a - b) / abs(b):.2e} > 2e-2)"
        )
