"""Measuring gptcore against transformers' own GPT-2 (`GPT2LMHeadModel`) with identical weights, in one run.

Both models are timed interleaved (A B, B A, ...) after warm-up and summarised by medians, so that machine
noise hits both alike. `run_benchmark` runs every part; `report` turns its results into a table.

A speed figure counts only when both models computed the same thing: a greedy decode whose tokens differ raises
`TokenMismatchError`, unless the first difference is a float tie (see `check_same_tokens`).
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel

from benchmarking.bandwidth import decode_bytes_per_step, mean_context, read_bandwidth, streaming_limit
from benchmarking.llama_cpp import bench_llama_cpp
from benchmarking.memory_measurement import (
    peak_resident_bytes,
    reset_peak_resident,
    resident_bytes,
    start_in_fresh_process,
)
from benchmarking.profiling import operator_table
from benchmarking.timing import CLOCKS, StepClock, Timer, matmul_peak, synchronize, timing_summary
from gptcore.modeling import PRESETS, GPTCoreForCausalLM, preset_config
from gptcore.modeling.compat import compile_on_every_device, set_default_causal_lm_loss
from gptcore.training.hardware import choose_mixed_precision
from gptcore.training.memory_estimate import Shape, flops_per_token

logger = logging.getLogger(__name__)  # progress, one line per part: the script shows it

NAMES = {"ours": "gptcore", "ref": "transformers", "int8": "gptcore int8", "fp32": "gptcore fp32"}
PARTS = ("train", "memory", "generate", "compile", "int8")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Two logits closer than this (relative to the largest |logit| at that position) are a tie that rounding may break
# either way: fp32 rounding differs by ~1e-7 relative per operation, bf16's 8-bit mantissa by ~4e-3.
TIE_TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2}


class TokenMismatchError(RuntimeError):
    """gptcore and transformers, with the same weights, decoded different greedy tokens: one computes something else."""


@dataclass
class BenchmarkSettings:
    """What to run: the command line of examples/benchmark.py, whose --help explains each field."""

    batch: int
    seq: int
    train_warmup: int
    train_steps: int
    memory_steps: int
    prompt: int
    new_tokens: int
    gen_batches: list[int]
    compile_batches: list[int]
    gen_warmup: int
    gen_repeats: int
    peak_size: int | None
    threads: int | None
    seed: int
    skip: list[str]
    clock: str = "wall"
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    bandwidth_mib: int = 512
    agreement_text: str | None = None
    agreement_tokens: int = 4096
    llama_cpp: str | None = None
    profile: bool = False


def choose_precisions(requested: list[str], device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions to measure, and why any was left out. "auto": fp32, plus bf16 where `device` computes it
    natively (what `--mixed_precision auto` of the training scripts decides); a precision named explicitly always
    runs (bf16 on other hardware then measures the slow path)."""
    chosen, skipped = list(requested), {}
    if "auto" in chosen:
        mode, why = choose_mixed_precision(device)
        bf16 = mode == "bf16"
        chosen[chosen.index("auto") : chosen.index("auto") + 1] = ["fp32", "bf16"] if bf16 else ["fp32"]
        if not bf16 and "bf16" not in chosen:
            skipped["bf16"] = why
    return list(dict.fromkeys(chosen)), skipped


def config_fields(config: str, dropout: float | None = None) -> dict[str, Any]:
    """GPT2Config fields of a model size (gptcore.modeling.PRESETS) or of a JSON file; `dropout`, if given,
    replaces the residual, embedding and attention dropout (otherwise GPT2Config's, 0.1)."""
    if config in PRESETS:
        sizes = preset_config(config)
        fields = {key: getattr(sizes, key) for key in ("vocab_size", *PRESETS[config])}
    elif Path(config).is_file():
        fields = json.loads(Path(config).read_text())
    else:
        raise FileNotFoundError(f"--config {config!r} is neither a model size ({', '.join(PRESETS)}) nor a JSON file")
    if dropout is not None:
        fields.update(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return fields


# ---------------------------------------------------------------------------------------------------------------
# Models and training steps
# ---------------------------------------------------------------------------------------------------------------


def load_for_benchmark(kind: str, checkpoint: str | Path, device: torch.device | str) -> torch.nn.Module:
    """gptcore ("ours") or transformers' GPT-2 ("ref") from the same folder, set to generate exactly the
    requested number of tokens."""
    model_class = GPTCoreForCausalLM if kind == "ours" else GPT2LMHeadModel
    model = model_class.from_pretrained(checkpoint, attn_implementation="sdpa").to(device)
    set_default_causal_lm_loss(model)  # GPT2LMHeadModel's is unset
    model.generation_config.eos_token_id = None  # never stop early
    model.generation_config.pad_token_id = 0
    return model


def make_optimizer(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, fused where this torch build has a fused kernel for the device (the same choice for both models)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True), "AdamW(fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1), "AdamW(foreach)"


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, precision: str = "fp32"
) -> float:
    """Forward, backward and optimizer step on `ids` (labels = inputs): fp32, or bf16 autocast over fp32 weights."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def training_flops_per_token(config: Any, seq: int) -> int:
    """6 N + 12 L T C (N: the weights in matrix products, LM head included; the second term is attention),
    the count examples/estimate.py gives."""
    return flops_per_token(Shape.from_config(config), seq)["train"]


# ---------------------------------------------------------------------------------------------------------------
# The parts of a run
# ---------------------------------------------------------------------------------------------------------------


def bench_train(
    models: dict[str, torch.nn.Module], settings: BenchmarkSettings, timer: Timer, precision: str = "fp32"
) -> dict[str, Any]:
    """Training tokens/s of each model in `precision`, and the ratio ours / ref."""
    ids = torch.randint(0, models["ours"].config.vocab_size, (settings.batch, settings.seq), device=timer.device)
    optimizers = {}
    for key, model in models.items():
        model.train()
        optimizers[key], optimizer_name = make_optimizer(model)
    steps = {
        key: (lambda m=model, o=optimizers[key]: train_step(m, o, ids, precision)) for key, model in models.items()
    }
    times = timer.interleaved(steps, settings.train_warmup, settings.train_steps)
    tokens_per_step = settings.batch * settings.seq
    result: dict[str, Any] = {"precision": precision, "optimizer": optimizer_name, "tokens_per_step": tokens_per_step}
    for key in models:
        result[key] = timing_summary(times[key], tokens_per_step)
    for model in models.values():
        model.zero_grad(set_to_none=True)
        model.eval()
    result["ratio"] = result["ours"]["per_s"] / result["ref"]["per_s"]
    return result


def measure_training_memory(
    kind: str,
    checkpoint: str,
    device: str,
    batch: int,
    seq: int,
    steps: int,
    seed: int,
    threads: int | None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Run in a fresh process: load one model, train `steps` steps, return its peak memory."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = load_for_benchmark(kind, checkpoint, device).train()
    optimizer, _ = make_optimizer(model)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    out: dict[str, Any] = {"peak_rss_loading_bytes": peak_resident_bytes()}
    try:
        reset_peak_resident()  # count from here: the weights resident, loading's transient peak not
        out["rss_before_training_bytes"] = resident_bytes()
    except ValueError:  # no way to restart the peak on this system: it is the whole process's, loading included
        out["peak_includes_loading"] = True
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        train_step(model, optimizer, ids, precision)
    synchronize(torch.device(device))
    out["peak_rss_bytes"] = peak_resident_bytes()
    if device == "cuda":
        out["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return out


def bench_memory(
    checkpoint: Path, settings: BenchmarkSettings, device: torch.device, precision: str = "fp32"
) -> dict[str, Any]:
    """Peak training memory of one fresh process per model (both at once: each process has its own peak)."""
    what = "max_memory_allocated" if device.type == "cuda" else "peak RSS while training"
    result: dict[str, Any] = {"precision": precision, "what": what}
    args = (
        str(checkpoint),
        device.type,
        settings.batch,
        settings.seq,
        settings.memory_steps,
        settings.seed,
        settings.threads,
        precision,
    )
    running = {key: start_in_fresh_process(measure_training_memory, key, *args) for key in ("ref", "ours")}
    for key, future in running.items():
        try:
            result[key] = future.result()
        except Exception as error:
            why = f"{type(error).__name__}: {error}"
            raise RuntimeError(f"memory measurement for {NAMES[key]} failed: {why}") from error
    result["field"] = "max_memory_allocated_bytes" if device.type == "cuda" else "peak_rss_bytes"
    result["ratio"] = result["ours"][result["field"]] / result["ref"][result["field"]]
    return result


def compare_continuations(ours: torch.Tensor, ref: torch.Tensor, prompt: int) -> tuple[bool, int | None]:
    """Whether two (batch, prompt + new) generations hold the same tokens, and the first new position
    (0 = the first generated token) where some row differs."""
    differ = (ours != ref).any(dim=0).nonzero()
    return len(differ) == 0, None if len(differ) == 0 else int(differ[0]) - prompt


def is_float_tie(logits: dict[str, torch.Tensor], chosen: dict[str, int], tolerance: float) -> tuple[bool, float]:
    """Whether each model's logits (1-D, over the vocabulary) hold the two models' choices within `tolerance` of the
    largest |logit|: then rounding decides between them, and either is the model's greedy token. Also the largest
    gap."""
    a, b = chosen.values()
    gaps = [float((row[a] - row[b]).abs() / row.abs().max().clamp_min(1e-30)) for row in logits.values()]
    return max(gaps) <= tolerance, max(gaps)


@torch.no_grad()
def check_same_tokens(
    models: dict[str, torch.nn.Module], outputs: dict[str, torch.Tensor], prompt: int, precision: str
) -> dict[str, Any]:
    """The same-tokens rule of every speed figure. Same weights and greedy decoding give the same tokens, except where
    two logits of a position are tied to within rounding (random-weight models with GPT-2's 50k vocabulary produce such
    ties now and then, more often in bf16): there the two implementations may pick different tokens, both correct, and
    the continuations part. So a difference is checked at its first position: both models recompute that position's
    logits from the shared prefix, and if the two chosen tokens are a float tie under both (`TIE_TOLERANCE`), the run
    counts (the tie is reported); otherwise `TokenMismatchError`."""
    same, position = compare_continuations(outputs["ours"], outputs["ref"], prompt)
    result: dict[str, Any] = {"same_tokens": same, "first_different_position": position}
    if same:
        return result
    column = prompt + position
    row = int((outputs["ours"][:, column] != outputs["ref"][:, column]).nonzero()[0])
    prefix = outputs["ours"][row : row + 1, :column]  # identical in both up to here
    chosen = {key: int(outputs[key][row, column]) for key in ("ours", "ref")}
    logits = {key: models[key](prefix).logits[0, -1].float() for key in ("ours", "ref")}
    tie, gap = is_float_tie(logits, chosen, TIE_TOLERANCE[precision])
    result["tie"] = {"row": row, "tokens": chosen, "relative_gap": gap, "tolerance": TIE_TOLERANCE[precision]}
    if not tie:
        raise TokenMismatchError(
            f"gptcore and transformers decoded different greedy tokens from the same weights ({precision}, batch "
            f"{outputs['ours'].size(0)}, row {row}, new token {position}): gptcore chose {chosen['ours']}, "
            f"transformers {chosen['ref']}, whose logits differ by {gap:.1e} of the largest logit, more than a "
            f"rounding tie ({TIE_TOLERANCE[precision]:.0e}). One of the two computes something else: a speed figure "
            "of a wrong decode does not count. Check parity (tests/modeling) before benchmarking."
        )
    return result


def time_generate(
    models: dict[str, torch.nn.Module], settings: BenchmarkSettings, timer: Timer, batch: int, **generate_kwargs: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    """Greedy `generate()` of each model on one random prompt, interleaved: tokens/s of each, and at batch 1 the
    median decoding step (prefill excluded); also the last outputs and the prompt."""
    vocab = next(iter(models.values())).config.vocab_size
    prompt = torch.randint(0, vocab, (batch, settings.prompt), device=timer.device)
    kwargs = dict(
        attention_mask=torch.ones_like(prompt), max_new_tokens=settings.new_tokens, do_sample=False, **generate_kwargs
    )
    outputs: dict[str, torch.Tensor] = {}
    steps: dict[str, list[list[float]]] = {key: [] for key in models}

    def generate(key: str) -> None:
        clock = StepClock(timer.clock) if batch == 1 else None  # streamers take one sequence
        outputs[key] = models[key].generate(prompt, streamer=clock, **kwargs)
        if clock is not None:
            steps[key].append(clock.decode_steps())

    result: dict[str, Any] = {"batch": batch}
    if "compile_config" in generate_kwargs:  # the first call compiles: time it on its own
        for key in models:
            result[f"{key}_first_call_s"] = timer.time(lambda k=key: generate(k))
    for key in models:
        steps[key].clear()
    calls = {key: (lambda k=key: generate(k)) for key in models}
    times = timer.interleaved(calls, settings.gen_warmup, settings.gen_repeats)
    for key in models:
        if outputs[key].shape != (batch, settings.prompt + settings.new_tokens):
            raise RuntimeError(
                f"{NAMES[key]} generated {tuple(outputs[key].shape)} tokens, not {settings.new_tokens} new ones per row"
            )
        result[key] = timing_summary(times[key], batch * settings.new_tokens)
        timed = [step for call in steps[key][settings.gen_warmup :] for step in call]
        if timed:
            result[key]["decode_ms_per_step"] = 1e3 * statistics.median(timed)
    keys = list(models)
    result["ratio"] = result[keys[0]]["per_s"] / result[keys[1]]["per_s"]
    return result, outputs, prompt


def bench_generate(
    models: dict[str, torch.nn.Module],
    settings: BenchmarkSettings,
    timer: Timer,
    batch: int,
    precision: str = "fp32",
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Greedy `generate()` tokens/s of gptcore and transformers in `precision` (the models' dtype), after checking
    that both chose the same tokens (`check_same_tokens`)."""
    result, outputs, _ = time_generate(models, settings, timer, batch, **generate_kwargs)
    result["precision"] = precision
    result.update(check_same_tokens(models, outputs, settings.prompt, precision))
    if batch == 1:
        context = mean_context(settings.prompt, settings.new_tokens)
        result["bytes_per_step"] = decode_bytes_per_step(models["ours"], context)
    return result


def compile_config(device: torch.device) -> CompileConfig:
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return compile_on_every_device(CompileConfig(fullgraph=True, mode=mode))


def bench_compiled_generate(
    models: dict[str, torch.nn.Module],
    settings: BenchmarkSettings,
    timer: Timer,
    default: dict[int, dict[str, Any]],
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """`bench_generate` with a static cache and torch.compile per --compile-batches size, also set against the
    default-cache figures in `default` (by batch size). A failure to compile is reported, not raised; different
    tokens are."""
    results = []
    for batch in settings.compile_batches:
        try:
            gen = bench_generate(
                models,
                settings,
                timer,
                batch,
                precision,
                cache_implementation="static",
                compile_config=compile_config(timer.device),
            )
        except TokenMismatchError:
            raise
        except Exception as error:  # a platform without a working compiler: report it, keep the rest
            gen = {"batch": batch, "precision": precision, "error": f"{type(error).__name__}: {error}"}
            logger.warning("static cache + compile, b=%d: failed: %s", batch, gen["error"][:500])
        else:
            if batch in default:
                gen["ours_vs_ref_default"] = gen["ours"]["per_s"] / default[batch]["ref"]["per_s"]
                gen["ours_vs_ours_default"] = gen["ours"]["per_s"] / default[batch]["ours"]["per_s"]
            logger.info("static cache + compile b=%d %s: done (%.2fx)", batch, precision, gen["ratio"])
        results.append(gen)
    return results


def profile_ours(checkpoint: str, settings: BenchmarkSettings, timer: Timer, precision: str) -> dict[str, Any]:
    """--profile: gptcore's operators in a training step (as `bench_train` runs it) and in a batch-1 generate() call
    (per new token, the prefill included), in `precision`."""
    model = load_for_benchmark("ours", checkpoint, timer.device).train()
    optimizer, _ = make_optimizer(model)
    ids = torch.randint(0, model.config.vocab_size, (settings.batch, settings.seq), device=timer.device)
    train = operator_table(lambda: train_step(model, optimizer, ids, precision), repeats=2, device=timer.device)
    model = model.eval().to(PRECISIONS[precision])
    prompt = torch.randint(0, model.config.vocab_size, (1, settings.prompt), device=timer.device)
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=settings.new_tokens, do_sample=False)
    decode = operator_table(
        lambda: model.generate(prompt, **kwargs), repeats=1, device=timer.device, per=settings.new_tokens
    )
    return {"train": train, "generate": decode}


# ---------------------------------------------------------------------------------------------------------------
# int8 weight-only decoding (torchao)
# ---------------------------------------------------------------------------------------------------------------


def bench_int8(checkpoint: str, settings: BenchmarkSettings, timer: Timer) -> dict[str, Any]:
    """b=1 decoding of gptcore quantised to int8 weight-only by torchao (LM head included: see `quantize_int8`)
    against the same gptcore in fp32, interleaved; and how often both predict the same next token over a text.
    int8 weights change the logits, so the tokens are not expected to be identical: agreement is the measure."""
    try:
        from gptcore.modeling.quantization import quantize_int8

        fp32 = load_for_benchmark("ours", checkpoint, timer.device)
        models = {"int8": quantize_int8(load_for_benchmark("ours", checkpoint, timer.device)), "fp32": fp32}
    except ImportError as error:
        return {"skipped": str(error)}
    result, outputs, _ = time_generate(models, settings, timer, 1)
    result["bytes_per_step"] = decode_bytes_per_step(models["int8"], mean_context(settings.prompt, settings.new_tokens))
    result["first_different_position"] = compare_continuations(outputs["int8"], outputs["fp32"], settings.prompt)[1]
    if settings.agreement_text:
        vocab, block = fp32.config.vocab_size, min(256, fp32.config.n_positions)
        ids = text_token_ids(settings.agreement_text, vocab, settings.agreement_tokens)
        result["agreement"] = next_token_agreement(models["int8"], fp32, ids, block)
        result["agreement"]["text"] = Path(settings.agreement_text).name
    return result


@torch.no_grad()
def next_token_agreement(model: nn.Module, reference: nn.Module, ids: torch.Tensor, block: int) -> dict[str, Any]:
    """Teacher-forced greedy agreement: over `ids` (1-D) cut into windows of `block` tokens, the share of positions at
    which `model` and `reference` predict the same next token (argmax). Each window is a fresh context."""
    agree = total = 0
    for start in range(0, ids.numel() - 1, block):
        window = ids[start : start + block][None].to(model.device)
        if window.size(1) < 2:
            break
        ours, theirs = model(window).logits.argmax(-1), reference(window).logits.argmax(-1)
        agree += int((ours == theirs).sum())
        total += ours.numel()
    return {"agreement": agree / total, "positions": total, "block": block}


def text_token_ids(path: str | Path, vocab_size: int, max_tokens: int) -> torch.Tensor:
    """The first `max_tokens` GPT-2 tokens of a text file, as a 1-D tensor; folded into [0, vocab_size) for models
    with a smaller vocabulary (tiny test configs: their tokens then mean nothing, which random weights don't mind)."""
    from gptcore.tokenization import gpt2_tokenizer

    text = Path(path).read_text(encoding="utf-8")[: max_tokens * 8]  # ~4 characters a token: enough text, no more
    ids = torch.tensor(gpt2_tokenizer()(text)["input_ids"][:max_tokens])
    return ids % vocab_size


# ---------------------------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------------------------


def add_limits(results: dict[str, Any]) -> None:
    """Next to every b=1 decoding figure: the weight-streaming limit (its bytes per step over the bandwidth measured
    in this run) and the share of it reached, limit / measured step."""
    bandwidth = results.get("bandwidth")
    if bandwidth is None:
        return
    decodes = results.get("generate", []) + results.get("compile", [])
    entries = [g for g in decodes if g.get("batch") == 1 and "bytes_per_step" in g]
    if "bytes_per_step" in results.get("int8", {}):
        entries.append(results["int8"])
    for entry in entries:
        entry["limit"] = streaming_limit(entry["bytes_per_step"], bandwidth)
        for key in ("ours", "ref", "int8", "fp32"):
            if "decode_ms_per_step" in entry.get(key, {}):
                entry[key]["fraction_of_limit"] = entry["limit"]["limit_ms_per_step"] / entry[key]["decode_ms_per_step"]
    for kind, entry in results.get("llama_cpp", {}).items():
        if isinstance(entry, dict) and "bytes_per_step" in entry:
            entry["limit"] = streaming_limit(entry["bytes_per_step"], bandwidth)
            entry["fraction_of_limit"] = entry["limit"]["limit_ms_per_step"] / entry["decode_ms_per_step"]


def run_benchmark(fields: dict[str, Any], settings: BenchmarkSettings, device: torch.device) -> dict[str, Any]:
    """Every part not in `settings.skip`, in each of `settings.precisions`, on random weights of the GPT2Config
    `fields`; returns the results (raw timings included); progress goes to this module's logger."""
    timer = Timer(device, CLOCKS[settings.clock])
    results: dict[str, Any] = {"precisions": settings.precisions, "peak": {}}
    with tempfile.TemporaryDirectory() as checkpoint:
        torch.manual_seed(settings.seed)
        GPT2LMHeadModel(GPT2Config(**fields)).save_pretrained(checkpoint)  # random weights, GPT-2's own layout

        def fresh_models() -> dict[str, torch.nn.Module]:  # training changes weights: each part starts anew
            return {key: load_for_benchmark(key, checkpoint, device) for key in ("ours", "ref")}

        models = fresh_models()
        results["parameters"] = sum(p.numel() for p in models["ours"].parameters())
        results["bandwidth"] = read_bandwidth(timer, settings.bandwidth_mib)
        with torch.no_grad():
            ids = torch.randint(0, fields["vocab_size"], (2, min(settings.seq, fields["n_positions"])), device=device)
            logits = {key: model.eval()(ids).logits.float() for key, model in models.items()}
            diff = (logits["ours"] - logits["ref"]).abs().max().item()
        results["parity_max_abs_logit_diff"] = diff
        logger.info(
            "%.1fM parameters; read bandwidth %.1f GB/s; max |logit difference| %.1e",
            results["parameters"] / 1e6,
            results["bandwidth"]["bytes_per_s"] / 1e9,
            diff,
        )
        for part in ("train", "memory", "generate", "compile"):
            if part not in settings.skip:
                results[part] = []

        for index, precision in enumerate(settings.precisions):
            dtype = PRECISIONS[precision]
            if index:
                models = fresh_models()
            if "train" not in settings.skip:
                # The matmul peak is measured around the training steps, keeping the best: one measurement can catch
                # a slow moment of a shared machine, and a low peak would overstate the MFU.
                peak = matmul_peak(timer, settings.peak_size, dtype)
                train = bench_train(models, settings, timer, precision)
                again = matmul_peak(timer, settings.peak_size, dtype)
                peak = results["peak"][precision] = max(peak, again, key=lambda p: p["gflops"])
                train["flops_per_token"] = training_flops_per_token(models["ours"].config, settings.seq)
                for key in models:
                    train[key]["mfu"] = train["flops_per_token"] * train[key]["per_s"] / (peak["gflops"] * 1e9)
                results["train"].append(train)
                logger.info("train %s: done (%.2fx)", precision, train["ratio"])
                models = fresh_models()
            if "memory" not in settings.skip:
                results["memory"].append(bench_memory(Path(checkpoint), settings, device, precision))
                logger.info("memory %s: done (%.2fx)", precision, results["memory"][-1]["ratio"])
            for model in models.values():
                model.to(dtype)
            default = {}
            if "generate" not in settings.skip:
                for batch in settings.gen_batches:
                    gen = bench_generate(models, settings, timer, batch, precision)
                    results["generate"].append(gen)
                    default[batch] = gen
                    logger.info("generate b=%d %s: done (%.2fx)", batch, precision, gen["ratio"])
            if "compile" not in settings.skip:
                results["compile"] += bench_compiled_generate(models, settings, timer, default, precision)
            if settings.profile:
                results.setdefault("profile", {})[precision] = profile_ours(checkpoint, settings, timer, precision)
                logger.info("profile %s: done", precision)

        if "int8" not in settings.skip:
            results["int8"] = bench_int8(checkpoint, settings, timer)
            logger.info("int8: %s", results["int8"].get("skipped", "done"))
        if settings.llama_cpp:
            ours = load_for_benchmark("ours", checkpoint, device)
            results["llama_cpp"] = bench_llama_cpp(checkpoint, settings, timer, ours)
            logger.info("llama.cpp: done")
        # Measured again after the decoding runs, keeping the best, as for the matmul peak.
        again = read_bandwidth(timer, settings.bandwidth_mib)
        results["bandwidth"] = max(results["bandwidth"], again, key=lambda b: b["bytes_per_s"])
        add_limits(results)
    return results
