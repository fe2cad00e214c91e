"""examples/estimate.py: parameter count, FLOPs and KV cache checked exactly against a real model, and the
training-memory estimate against the peak memory measured while training (within 25%)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from tests.processes import run_example, run_example_in_process


def estimate(tmp_path, overrides: str, *args: str, monkeypatch=None) -> dict:
    out = tmp_path / "estimate.json"
    argv = ("--config_overrides", overrides, "--output_json", str(out), *args)
    if monkeypatch is None:
        run_example("estimate.py", *argv, timeout=600)
    else:
        run_example_in_process("estimate.py", *argv, monkeypatch=monkeypatch)
    return json.loads(out.read_text())


@pytest.mark.parametrize("tied", [True, False])
def test_params_flops_and_kv_cache_are_exact(tied, tmp_path, monkeypatch):
    fields = dict(
        n_layer=3,
        n_head=4,
        n_embd=64,
        n_inner=96,
        vocab_size=1000,
        n_positions=64,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
    )
    overrides = ",".join(f"{k}={v}" for k, v in fields.items())
    result = estimate(tmp_path, overrides, "--batch_size", "2", "--seq_len", "64", monkeypatch=monkeypatch)
    model = GPTCoreForCausalLM(GPTCoreConfig(**fields)).eval()
    assert result["params"] == model.num_parameters()

    ids = torch.randint(0, 1000, (1, 64))
    model.set_attn_implementation("eager")  # FlopCounterMode has no formula for the CPU flash-attention op
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids)
    model.set_attn_implementation("sdpa")
    assert result["flops_per_token"]["forward"] == counter.get_total_flops() / 64

    with torch.no_grad():
        cache = model.generate(
            ids[:, :40].repeat(2, 1), max_new_tokens=8, do_sample=False, return_dict_in_generate=True
        ).past_key_values
    cached_bytes = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    fp32 = next(r for r in result["inference"] if r["precision"] == "fp32")
    assert cached_bytes == fp32["kv_cache_per_token"] * 2 * cache.get_seq_length()


@pytest.mark.parametrize(
    ("args", "params"), [((), 124_439_808), (("--config", "gpt2-medium"), 354_823_168)], ids=["default", "gpt2-medium"]
)
def test_the_default_is_gpt2_small_and_config_names_a_size(args, params, tmp_path, monkeypatch):
    out = tmp_path / "estimate.json"
    run_example_in_process("estimate.py", *args, "--output_json", str(out), monkeypatch=monkeypatch)
    assert json.loads(out.read_text())["params"] == params  # GPT-2's published sizes, tied LM head


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, batch_size, seq_len, checkpointing",
    [
        # The LM head over GPT-2's 50257 tokens dominates.
        ("n_layer=2,n_head=2,n_embd=64,n_positions=128", "4", "128", "off"),
        # Attention (materialised T x T probabilities, dropout) and the blocks dominate; vocabulary small.
        ("n_layer=4,n_head=4,n_embd=128,vocab_size=512,n_positions=256", "8", "256", "both"),
    ],
)
def test_training_peak_memory_matches_measurement(overrides, batch_size, seq_len, checkpointing, tmp_path):
    result = estimate(
        tmp_path,
        overrides,
        "--batch_size",
        batch_size,
        "--seq_len",
        seq_len,
        "--precision",
        "fp32",
        "--checkpointing",
        checkpointing,
        "--device",
        "cpu",
        "--measure",
    )
    rows = result["training"]
    assert len(rows) == (2 if checkpointing == "both" else 1)
    for row in rows:
        assert abs(row["relative_error"]) <= 0.25, row
    if checkpointing == "both":
        off, on = rows
        assert on["measured_peak"] < 0.5 * off["measured_peak"]  # checkpointing saves memory, as estimated
        assert on["peak"] < 0.5 * off["peak"]
