"""examples/benchmark.py runs end to end on a tiny config and writes the documented JSON (no timing checks).

The script runs in this process (its memory measurements still start one process per model), which
keeps the test fast; torch's thread count and transformers' log level, which it sets, are restored.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import transformers
from tests.processes import REPO_ROOT

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 128, "n_positions": 64}


@pytest.fixture
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", REPO_ROOT / "examples" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    yield module
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


def test_help_documents_the_options(benchmark, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmark.parse_args(["--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--config", "--gen-batches", "--skip", "--json", "static", "MFU"):
        assert option in help_text


def test_runs_on_a_tiny_config_and_writes_json(benchmark, tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "out.json"
    benchmark.main([
        "--config", str(config), "--threads", "1", "--batch", "2", "--seq", "16", "--train-warmup", "1",
        "--train-steps", "2", "--memory-steps", "1", "--prompt", "4", "--new-tokens", "3", "--gen-batches", "1", "2",
        "--gen-warmup", "0", "--gen-repeats", "1", "--peak-size", "128", "--skip", "compile", "--json", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "gptcore" in printed and "ratio" in printed and "train tokens/s" in printed  # the table
    result = json.loads(out.read_text())

    assert result["config"] == TINY and result["device"] == "cpu" and result["peak"]["gflops"] > 0
    train = result["train"]
    assert train["tokens_per_step"] == 32 and train["ratio"] > 0
    for key in ("ours", "ref"):
        assert len(train[key]["times_s"]) == 2 and train[key]["per_s"] > 0 and 0 < train[key]["mfu"] < 1
        assert result["memory"][key]["peak_rss_bytes"] > 0
    assert result["memory"]["ratio"] > 0
    assert [g["batch"] for g in result["generate"]] == [1, 2]
    for gen in result["generate"]:
        assert gen["same_tokens"] is True  # same weights, greedy: the same continuation
        assert gen["ours"]["per_s"] > 0 and gen["ref"]["per_s"] > 0 and gen["ratio"] > 0
    assert "compile" not in result
