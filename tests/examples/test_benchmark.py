"""examples/benchmark.py: each figure it reports follows from its measurements (tokens/s from the step times,
ratios, MFU, the weight-streaming limit, the same-tokens check), the model sizes come from gptcore.modeling.PRESETS,
precisions are chosen from what the hardware has, a token mismatch stops the run, and the script runs end to end on
a tiny config.

The script runs in this process (its memory measurements still start one process per model), which keeps
the test fast; torch's thread count and the log levels it sets are restored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import statistics

import pytest
import torch
import transformers
from benchmarking import benchmark, llama_cpp
from benchmarking.bandwidth import decode_bytes_per_step, mean_context, read_bandwidth, streaming_limit, tensor_bytes
from benchmarking.benchmark import (
    BenchmarkSettings,
    TokenMismatchError,
    check_same_tokens,
    choose_precisions,
    compare_continuations,
    config_fields,
    is_float_tie,
)
from benchmarking.llama_cpp import find_llama_tool, run_llama_bench
from benchmarking.profiling import operator_table
from benchmarking.report import met_or_not, report_rows
from benchmarking.timing import StepClock, Timer, timing_summary

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training import hardware
from tests.oracle import gpt2_config, save_random_gpt2
from tests.processes import run_example_in_process

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
    assert (
        met_or_not(0.9, 1.0, higher_is_better=False) == "met"
        and met_or_not(1.1, 1.0, higher_is_better=False) == "NOT met"
    )
    assert met_or_not(None, 1.0) == "n/a"


def test_sizes_are_the_presets_with_gpt2s_vocabulary(tmp_path):
    assert config_fields("small") == {"vocab_size": 50257, "n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 256}
    assert config_fields("gpt2", dropout=0.0) == {
        "vocab_size": 50257,
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "n_positions": 1024,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }
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
        "--config",
        str(config),
        "--threads",
        "1",
        "--batch",
        "2",
        "--seq",
        "16",
        "--train-warmup",
        "1",
        "--train-steps",
        "2",
        "--memory-steps",
        "1",
        "--prompt",
        "4",
        "--new-tokens",
        "3",
        "--gen-batches",
        "1",
        "2",
        "--gen-warmup",
        "0",
        "--gen-repeats",
        "1",
        "--peak-size",
        "128",
        "--skip",
        "compile",
        "int8",
        "--precisions",
        "fp32",
        "--bandwidth-mib",
        "16",
        "--profile",
        "--json",
        str(out),
        monkeypatch=monkeypatch,
    )
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["config"] == TINY and result["device"] == "cpu" and "compile" not in result and "int8" not in result

    [train] = result["train"]
    assert train["precision"] == "fp32" and train["tokens_per_step"] == 2 * 16
    # Training FLOPs per token: 6 x the weights in matrix products (blocks and LM head) + 12 L T C for attention.
    L, C, V, T = TINY["n_layer"], TINY["n_embd"], TINY["vocab_size"], 16
    assert train["flops_per_token"] == 6 * (L * 12 * C * C + V * C) + 12 * L * T * C
    for key in ("ours", "ref"):
        times = train[key]["times_s"]
        assert len(times) == 2 and train[key]["median_s"] == statistics.median(times)
        assert train[key]["per_s"] == pytest.approx(32 / statistics.median(times))
        assert train[key]["mfu"] == pytest.approx(
            train["flops_per_token"] * train[key]["per_s"] / (result["peak"]["fp32"]["gflops"] * 1e9)
        )
    assert train["ratio"] == pytest.approx(train["ours"]["per_s"] / train["ref"]["per_s"])
    assert re.search(rf"^train tokens/s .* {train['ratio']:.2f}x ", printed, re.M)  # the table shows the JSON's ratio

    [memory] = result["memory"]
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
    b1 = result["generate"][0]
    assert b1["limit"]["limit_ms_per_step"] == pytest.approx(
        1e3 * b1["bytes_per_step"] / result["bandwidth"]["bytes_per_s"]
    )
    for key in ("ours", "ref"):  # 3 new tokens: the first comes from the prefill, two decoding steps are timed
        assert 0 < b1[key]["decode_ms_per_step"] < 1e3 * b1[key]["median_s"]
        assert b1[key]["fraction_of_limit"] == pytest.approx(
            b1["limit"]["limit_ms_per_step"] / b1[key]["decode_ms_per_step"]
        )
    assert "share of the weight-streaming limit" in printed

    profile = result["profile"]["fp32"]  # --profile: gptcore's operators by self time
    for part, unit in (("train", "step"), ("generate", "new token")):
        rows = profile[part]["rows"]
        assert profile[part]["unit"] == unit and [row["ms"] for row in rows] == sorted(
            (row["ms"] for row in rows), reverse=True
        )
        assert 0 < sum(row["ms"] for row in rows) <= profile[part]["ms_total"] * (1 + 1e-9)
    assert any(row["op"] in ("aten::mm", "aten::addmm") for row in profile["train"]["rows"])
    assert "gptcore train step (2x16, fp32): operators' self time" in printed
    assert "gptcore generate() b=1 (4-token prompt, fp32): operators' self time" in printed


def test_the_operator_table_counts_per_unit_of_work():
    a = torch.randn(64, 64)
    table = operator_table(
        lambda: (torch.mm(a, a), torch.mm(a, a), torch.relu(a)), repeats=3, device=torch.device("cpu"), per=2
    )
    rows = {row["op"]: row for row in table["rows"]}
    assert rows["aten::mm"]["calls"] == 1 and rows["aten::relu"]["calls"] == 0.5  # two products, one relu per 2 units
    assert table["unit"] == "new token" and sum(row["share"] for row in table["rows"]) == pytest.approx(1)
    assert sum(row["ms"] for row in table["rows"]) == pytest.approx(table["ms_total"])


# --- the weight-streaming limit -----------------------------------------------------------------------------------


def test_decode_bytes_are_every_weight_once_one_embedding_row_and_the_kv_cache(tmp_path):
    L, C, V = 2, 48, 101  # tests.oracle's base config
    ref = save_random_gpt2(tmp_path, gpt2_config())
    ours = GPTCoreForCausalLM.from_pretrained(tmp_path)
    block = (
        (2 * C) + (3 * C * C + 3 * C) + (C * C + C) + (2 * C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    )  # ln_1, attn, ln_2, mlp
    weights = L * block + 2 * C + V * C + C  # blocks, ln_f, the tied head (wte read whole), one wpe row
    kv = 2 * L * 10.5 * C  # keys and values of 10.5 cached tokens on average, every layer
    for model in (ours, ref):
        assert decode_bytes_per_step(model, 10.5) == 4 * (weights + kv)
    assert decode_bytes_per_step(ours.to(torch.bfloat16), 10.5) == 2 * (weights + kv)
    assert mean_context(prompt=32, new_tokens=64) == 64  # new token i (2..64) attends over 32 + i - 1 tokens


def test_an_untied_head_is_read_whole_and_the_embedding_one_row(tmp_path):
    save_random_gpt2(tmp_path, gpt2_config())
    model = GPTCoreForCausalLM.from_pretrained(tmp_path)
    tied = decode_bytes_per_step(model, 0)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    assert decode_bytes_per_step(model, 0) == tied + 4 * 48  # the head as before, plus one row of wte


def test_a_tensor_subclass_counts_its_parts():
    class Packed(torch.Tensor):  # stands for a quantised weight: int8 values and per-row scales
        def __tensor_flatten__(self):
            return ["qdata", "scale"], None

    packed = torch.zeros(3, 4).as_subclass(Packed)
    packed.qdata, packed.scale = torch.zeros(3, 4, dtype=torch.int8), torch.zeros(3)
    assert tensor_bytes(packed) == 12 + 3 * 4
    assert tensor_bytes(torch.zeros(3, 4, dtype=torch.bfloat16)) == 24


def test_the_limit_is_the_bytes_over_the_measured_bandwidth():
    limit = streaming_limit(500_000_000, {"bytes_per_s": 20e9})
    assert limit["limit_ms_per_step"] == pytest.approx(25.0) and limit["limit_tokens_per_s"] == pytest.approx(40.0)
    timer = Timer(torch.device("cpu"), clock=iter([0.0, 0.5, 0.0, 0.25, 0.0, 1.0]).__next__)  # three reads of 1 MiB
    assert read_bandwidth(timer, mib=1, repeats=3)["bytes_per_s"] == 2**20 / 0.25  # the best


def test_the_report_puts_each_decode_step_next_to_the_limit():
    gen = {
        "batch": 1,
        "precision": "fp32",
        "ratio": 1.0,
        "ours": {"per_s": 40.0},
        "ref": {"per_s": 30.0},
        "bytes_per_step": 500_000_000,
    }
    gen["ours"]["decode_ms_per_step"], gen["ref"]["decode_ms_per_step"] = 31.25, 50.0
    results = {"config_name": "gpt2", "args": {}, "generate": [gen], "bandwidth": {"bytes_per_s": 20e9}}
    benchmark.add_limits(results)
    assert gen["ours"]["fraction_of_limit"] == pytest.approx(0.8) and gen["ref"]["fraction_of_limit"] == pytest.approx(
        0.5
    )
    table = "\n".join(" ".join(row) for row in report_rows(results, torch.device("cpu")))
    assert "limit 25.00 ms: 500 MB/step" in table and "80%" in table and ">= 70% met" in table


# --- precisions ---------------------------------------------------------------------------------------------------


def test_bf16_is_chosen_only_where_the_cpu_has_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma"})
    precisions, skipped = choose_precisions(["auto"], cpu)
    assert precisions == ["fp32"] and "no native bf16" in skipped["bf16"]
    assert choose_precisions(["fp32", "bf16"], cpu) == (["fp32", "bf16"], {})  # named: run anyway
    assert choose_precisions(["auto", "bf16"], cpu) == (["fp32", "bf16"], {})
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert choose_precisions(["auto"], cpu) == (["fp32", "bf16"], {})


# --- the same-tokens rule -----------------------------------------------------------------------------------------


def test_a_float_tie_is_two_logits_equal_to_within_the_tolerance():
    logits = {"ours": torch.tensor([1.0, 4.0, 4.0 - 1e-6]), "ref": torch.tensor([1.0, 4.0 - 1e-6, 4.0])}
    assert is_float_tie(logits, {"ours": 1, "ref": 2}, tolerance=1e-5)[0]
    logits["ref"][2] = 4.1  # transformers prefers token 2 by a clear margin
    tie, gap = is_float_tie(logits, {"ours": 1, "ref": 2}, tolerance=1e-5)
    assert not tie and gap == pytest.approx(0.1 / 4.1, rel=1e-4)


def test_different_tokens_stop_the_benchmark_unless_they_are_a_tie(tmp_path):
    save_random_gpt2(tmp_path, gpt2_config())
    models = {key: GPTCoreForCausalLM.from_pretrained(tmp_path).eval() for key in ("ours", "ref")}
    prompt = torch.randint(0, 101, (1, 4))
    tokens = models["ours"].generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert check_same_tokens(models, {"ours": tokens, "ref": tokens.clone()}, 4, "fp32")["same_tokens"] is True
    with torch.no_grad():  # make transformers' "model" clearly prefer another token at the second new position
        logits = models["ours"](tokens[:, :5]).logits[0, -1]
    wrong = tokens.clone()
    wrong[0, 5] = int(logits.argsort()[-2])
    with torch.no_grad():
        models["ref"].lm_head.weight[wrong[0, 5]] *= 10
    with pytest.raises(TokenMismatchError, match=r"new token 1\): gptcore chose .*more than a rounding tie"):
        check_same_tokens(models, {"ours": tokens, "ref": wrong}, 4, "fp32")
    models["ref"] = models["ours"]  # same logits: a tie needs the two tokens' logits equal, which they are not here
    with pytest.raises(TokenMismatchError):
        check_same_tokens(models, {"ours": tokens, "ref": wrong}, 4, "fp32")
    with torch.no_grad():  # now the two tokens are tied exactly in the model both sides use
        models["ours"].lm_head.weight[wrong[0, 5]] = models["ours"].lm_head.weight[tokens[0, 5]]
    result = check_same_tokens(models, {"ours": tokens, "ref": wrong}, 4, "fp32")
    assert (
        result["same_tokens"] is False
        and result["first_different_position"] == 1
        and result["tie"]["relative_gap"] == 0
    )


def test_the_step_clock_times_decoding_steps_not_the_prefill():
    clock = StepClock(iter([0.0, 5.0, 6.0, 7.5]).__next__)
    for _ in range(4):  # the prompt, the first token (after the prefill), two decoding steps
        clock.put(torch.zeros(1))
    assert clock.decode_steps() == [1.0, 1.5]


# --- llama.cpp ----------------------------------------------------------------------------------------------------


def fake_llama_bench(folder, rates=(600.0, 45.0)):
    """A stand-in for llama.cpp's llama-bench that prints its JSON output (one prompt and one decoding test)."""
    (folder / "build" / "bin").mkdir(parents=True)
    tool = folder / "build" / "bin" / "llama-bench"
    tests = [
        {"n_prompt": 32, "n_gen": 0, "avg_ts": rates[0], "build_commit": "abc1234"},
        {"n_prompt": 0, "n_gen": 64, "avg_ts": rates[1], "build_commit": "abc1234"},
    ]
    tool.write_text(f"#!/bin/sh\necho '{json.dumps(tests)}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


def llama_cpp_settings(llama_cpp: str, **overrides) -> BenchmarkSettings:
    """A benchmark of a few steps of batch 1 whose llama.cpp rows use the build at `llama_cpp`."""
    fields = dict(batch=1, seq=8, train_warmup=0, train_steps=1, memory_steps=1, prompt=4, new_tokens=4)
    fields.update(gen_batches=[1], compile_batches=[], gen_warmup=0, gen_repeats=1, peak_size=64, threads=1, seed=0)
    fields.update(skip=[], llama_cpp=llama_cpp, **overrides)
    return BenchmarkSettings(**fields)


def test_llama_bench_is_found_in_a_build_folder_and_its_json_read(tmp_path):
    tool = fake_llama_bench(tmp_path)
    assert find_llama_tool(tmp_path, "llama-bench") == tool == find_llama_tool(tool, "llama-bench")
    assert find_llama_tool(tmp_path / "build", "llama-bench") == tool
    assert find_llama_tool(tmp_path, "llama-quantize") is None
    rates = run_llama_bench(tool, tmp_path / "model.gguf", threads=2, prompt=32, new_tokens=64)
    assert rates == {"prompt_tokens_per_s": 600.0, "decode_tokens_per_s": 45.0, "build": "abc1234"}


def test_a_missing_llama_bench_is_a_clear_error(tmp_path):
    settings = llama_cpp_settings(str(tmp_path), new_tokens=3)
    with pytest.raises(FileNotFoundError, match="no llama-bench there"):
        llama_cpp.bench_llama_cpp(str(tmp_path), settings, Timer(torch.device("cpu")), None)


@pytest.mark.slow
def test_llama_cpp_rows_from_gguf_files_of_the_same_weights(tmp_path, monkeypatch, restore_process_settings):
    pytest.importorskip("gguf", reason="GGUF export needs the gguf package")
    tool = fake_llama_bench(tmp_path)
    checkpoint = tmp_path / "model"
    save_random_gpt2(checkpoint, gpt2_config(vocab_size=50257, n_embd=32, n_layer=2, n_head=2))
    settings = llama_cpp_settings(str(tool), gen_repeats=2)
    ours = benchmark.load_for_benchmark("ours", checkpoint, "cpu")
    result = llama_cpp.bench_llama_cpp(str(checkpoint), settings, Timer(torch.device("cpu")), ours)
    assert set(result) >= {"f32", "bf16"} and "q8_0" not in result  # no llama-quantize beside the fake llama-bench
    L, C, V = 2, 32, 50257
    matrices, vectors = L * 12 * C * C + V * C, L * 13 * C + 2 * C + C  # wpe: one row
    assert result["f32"]["bytes_per_step"] == 4 * (matrices + vectors) + 2 * L * 2 * C * 2  # f16 KV of 2 tokens
    assert result["bf16"]["bytes_per_step"] == 2 * matrices + 4 * vectors + 2 * L * 2 * C * 2
    assert result["f32"]["decode_tokens_per_s"] == 45.0 and result["f32"]["decode_ms_per_step"] == pytest.approx(
        1e3 / 45
    )
    results = {"config_name": "x", "args": {}, "llama_cpp": result, "bandwidth": {"bytes_per_s": 1e9}}
    benchmark.add_limits(results)
    assert result["f32"]["fraction_of_limit"] == pytest.approx(result["f32"]["bytes_per_step"] / 1e9 * 45)
    assert any("llama.cpp f32" in row[0] for row in report_rows(results, torch.device("cpu")))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GPTCORE_LLAMA_CPP"), reason="set GPTCORE_LLAMA_CPP to a llama.cpp build folder")
def test_a_real_llama_bench_on_gguf_files_of_the_same_weights(tmp_path, restore_process_settings):
    """The same, with llama.cpp's own llama-bench and llama-quantize (optional: CI has no llama.cpp build)."""
    pytest.importorskip("gguf", reason="GGUF export needs the gguf package")
    checkpoint = tmp_path / "model"
    save_random_gpt2(checkpoint, gpt2_config(vocab_size=50257, n_embd=32, n_layer=2, n_head=2))
    settings = llama_cpp_settings(os.environ["GPTCORE_LLAMA_CPP"])
    ours = benchmark.load_for_benchmark("ours", checkpoint, "cpu")
    result = llama_cpp.bench_llama_cpp(str(checkpoint), settings, Timer(torch.device("cpu")), ours)
    assert {"f32", "bf16", "q8_0"} <= set(result) and result["build"]  # llama-quantize sits beside llama-bench
    for kind in ("f32", "bf16", "q8_0"):
        assert result[kind]["decode_tokens_per_s"] > 0 and result[kind]["prompt_tokens_per_s"] > 0
    # q8_0 stores 34 bytes per 32 weights of a matrix, bf16 64, f32 128
    assert result["q8_0"]["bytes_per_step"] < result["bf16"]["bytes_per_step"] < result["f32"]["bytes_per_step"]
