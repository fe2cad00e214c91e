"""examples/benchmark.py: each figure it reports follows from its measurements (tokens/s from the step times,
ratios, MFU, the same-tokens check), the model sizes come from gptcore.modeling.PRESETS, and the script runs
end to end on a tiny config.

The script runs in this process (its memory measurements still start one process per model), which keeps
the test fast; torch's thread count and the log levels it sets are restored.
"""

from __future__ import annotations

import json
import logging
import re
import statistics

import pytest
import torch
import transformers
from tests.processes import run_example_in_process

from gptcore.training import benchmark
from gptcore.training.benchmark import compare_continuations, config_fields
from gptcore.training.benchmark_report import met_or_not
from gptcore.training.timing import Timer, timing_summary

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 128, "n_positions": 64}


@pytest.fixture
def restore_process_settings():
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    progress = logging.getLogger(benchmark.__name__)
    level = progress.level
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)
    progress.setLevel(level)


def test_rates_are_the_work_over_the_median_time():
    summary = timing_summary([0.5, 0.1, 0.2], work=32)
    assert summary["median_s"] == 0.2 and summary["per_s"] == 32 / 0.2
    assert (summary["min_s"], summary["max_s"]) == (0.1, 0.5)


def test_competitors_are_timed_in_alternating_order_after_warmup():
    calls = []
    timer = Timer(torch.device("cpu"), clock=lambda: len(calls))  # each timed call "takes" one tick
    times = timer.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert times == {"a": [1, 1, 1], "b": [1, 1, 1]}


def test_the_first_differing_generated_position_is_reported():
    ours = torch.tensor([[5, 6, 1, 2, 3], [5, 7, 1, 2, 3]])
    assert compare_continuations(ours, ours.clone(), prompt=2) == (True, None)
    ref = ours.clone()
    ref[1, 3] = 9  # the second generated token of the second row
    assert compare_continuations(ours, ref, prompt=2) == (False, 1)


def test_goals_are_met_at_the_target_and_beyond():
    assert met_or_not(1.15, 1.15) == "met" and met_or_not(1.1, 1.15) == "NOT met"
    assert met_or_not(0.9, 1.0, higher_is_better=False) == "met" and met_or_not(1.1, 1.0, higher_is_better=False) == "NOT met"
    assert met_or_not(None, 1.0) == "n/a"


def test_sizes_are_the_presets_with_gpt2s_vocabulary(tmp_path):
    assert config_fields("small") == {"vocab_size": 50257, "n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256}
    assert config_fields("gpt2", dropout=0.0) == {
        "vocab_size": 50257, "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
    }  # fmt: skip
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    assert config_fields(str(tmp_path / "tiny.json")) == TINY
    with pytest.raises(FileNotFoundError, match="neither a model size .*cpu-small, small, gpt2"):
        config_fields("tiny")


def test_help_documents_the_options(monkeypatch, capsys, restore_process_settings):
    with pytest.raises(SystemExit) as exit_:
        run_example_in_process("benchmark.py", "--help", monkeypatch=monkeypatch)
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--config", "--gen-batches", "--skip", "--json", "static", "MFU", "gpt2-medium"):
        assert option in help_text


@pytest.mark.slow
def test_runs_on_a_tiny_config_and_reports_what_it_measured(tmp_path, monkeypatch, capsys, restore_process_settings):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "out.json"
    run_example_in_process(
        "benchmark.py",
        "--config", str(config), "--threads", "1", "--batch", "2", "--seq", "16", "--train-warmup", "1",
        "--train-steps", "2", "--memory-steps", "1", "--prompt", "4", "--new-tokens", "3", "--gen-batches", "1", "2",
        "--gen-warmup", "0", "--gen-repeats", "1", "--peak-size", "128", "--skip", "compile", "--json", str(out),
        monkeypatch=monkeypatch,
    )  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["config"] == TINY and result["device"] == "cpu" and "compile" not in result

    train = result["train"]
    assert train["tokens_per_step"] == 2 * 16
    # Training FLOPs per token: 6 x the weights in matrix products (blocks and LM head) + 12 L T C for attention.
    L, C, V, T = TINY["n_layer"], TINY["n_embd"], TINY["vocab_size"], 16
    assert train["flops_per_token"] == 6 * (L * 12 * C * C + V * C) + 12 * L * T * C
    for key in ("ours", "ref"):
        times = train[key]["times_s"]
        assert len(times) == 2 and train[key]["median_s"] == statistics.median(times)
        assert train[key]["per_s"] == pytest.approx(32 / statistics.median(times))
        assert train[key]["mfu"] == pytest.approx(train["flops_per_token"] * train[key]["per_s"] / (result["peak"]["gflops"] * 1e9))
    assert train["ratio"] == pytest.approx(train["ours"]["per_s"] / train["ref"]["per_s"])
    assert re.search(rf"^train tokens/s .* {train['ratio']:.2f}x ", printed, re.M)  # the table shows the JSON's ratio

    memory = result["memory"]
    assert memory["field"] == "peak_rss_bytes"
    for key in ("ours", "ref"):
        assert memory[key]["peak_rss_bytes"] >= memory[key]["rss_before_training_bytes"] > 0
    assert memory["ratio"] == pytest.approx(memory["ours"]["peak_rss_bytes"] / memory["ref"]["peak_rss_bytes"])

    assert [g["batch"] for g in result["generate"]] == [1, 2]
    for gen in result["generate"]:
        assert gen["same_tokens"] is True and gen["first_different_position"] is None  # same weights, greedy
        for key in ("ours", "ref"):
            assert gen[key]["per_s"] == pytest.approx(gen["batch"] * 3 / gen[key]["median_s"])
        assert gen["ratio"] == pytest.approx(gen["ours"]["per_s"] / gen["ref"]["per_s"])
