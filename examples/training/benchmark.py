"""Measuring gptcore against transformers' own GPT-2 (`GPT2LMHeadModel`) with identical weights, in one run.

Both models are timed interleaved (A B, B A, ...) after warm-up and summarised by medians, so that machine
noise hits both alike. `run_benchmark` runs every part; `benchmark_report` turns its results into a table.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel

from gptcore.modeling import PRESETS, GPTCoreForCausalLM, preset_config
from gptcore.training.memory import Shape, flops_per_token
from gptcore.training.runtime import peak_resident_bytes, reset_peak_resident, resident_bytes, start_in_fresh_process
from gptcore.training.timing import CLOCKS, Timer, matmul_peak, synchronize, timing_summary

logger = logging.getLogger(__name__)  # progress, one line per part: the script shows it

NAMES = {"ours": "gptcore", "ref": "transformers"}
PARTS = ("train", "memory", "generate", "compile")


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
    # transformers 5.x leaves GPT2LMHeadModel's loss_type at None, and the warning that triggers breaks compiled graphs.
    model.loss_type = "ForCausalLM"
    model.generation_config.eos_token_id = None  # never stop early
    model.generation_config.pad_token_id = 0
    return model


def make_optimizer(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, fused where this torch build has a fused kernel for the device (the same choice for both models)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True), "AdamW(fused=True)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1), "AdamW(foreach)"


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    """Forward, backward and optimizer step on `ids` (labels = inputs); bf16 autocast on CUDA, fp32 elsewhere."""
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=ids.device.type == "cuda"):
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


def bench_train(models: dict[str, torch.nn.Module], settings: BenchmarkSettings, timer: Timer) -> dict[str, Any]:
    """Training tokens/s of each model, and the ratio ours / ref."""
    ids = torch.randint(0, models["ours"].config.vocab_size, (settings.batch, settings.seq), device=timer.device)
    optimizers = {}
    for key, model in models.items():
        model.train()
        optimizers[key], optimizer_name = make_optimizer(model)
    steps = {key: (lambda m=model, o=optimizers[key]: train_step(m, o, ids)) for key, model in models.items()}
    times = timer.interleaved(steps, settings.train_warmup, settings.train_steps)
    tokens_per_step = settings.batch * settings.seq
    result: dict[str, Any] = {"optimizer": optimizer_name, "tokens_per_step": tokens_per_step}
    for key in models:
        result[key] = timing_summary(times[key], tokens_per_step)
    for model in models.values():
        model.zero_grad(set_to_none=True)
        model.eval()
    result["ratio"] = result["ours"]["per_s"] / result["ref"]["per_s"]
    return result


def measure_training_memory(
    kind: str, checkpoint: str, device: str, batch: int, seq: int, steps: int, seed: int, threads: int | None
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
        train_step(model, optimizer, ids)
    synchronize(torch.device(device))
    out["peak_rss_bytes"] = peak_resident_bytes()
    if device == "cuda":
        out["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated()
    return out


def bench_memory(checkpoint: Path, settings: BenchmarkSettings, device: torch.device) -> dict[str, Any]:
    """Peak training memory of one fresh process per model (both at once: each process has its own peak)."""
    result: dict[str, Any] = {"what": "max_memory_allocated" if device.type == "cuda" else "peak RSS while training"}
    args = (str(checkpoint), device.type, settings.batch, settings.seq, settings.memory_steps, settings.seed, settings.threads)
    running = {key: start_in_fresh_process(measure_training_memory, key, *args) for key in ("ref", "ours")}
    for key, future in running.items():
        try:
            result[key] = future.result()
        except Exception as error:
            raise RuntimeError(f"memory measurement for {NAMES[key]} failed: {type(error).__name__}: {error}") from error
    result["field"] = "max_memory_allocated_bytes" if device.type == "cuda" else "peak_rss_bytes"
    result["ratio"] = result["ours"][result["field"]] / result["ref"][result["field"]]
    return result


def compare_continuations(ours: torch.Tensor, ref: torch.Tensor, prompt: int) -> tuple[bool, int | None]:
    """Whether two (batch, prompt + new) generations hold the same tokens, and the first new position
    (0 = the first generated token) where some row differs."""
    differ = (ours != ref).any(dim=0).nonzero()
    return len(differ) == 0, None if len(differ) == 0 else int(differ[0]) - prompt


def bench_generate(
    models: dict[str, torch.nn.Module], settings: BenchmarkSettings, timer: Timer, batch: int, **generate_kwargs: Any
) -> dict[str, Any]:
    """Greedy `generate()` tokens/s of each model on one random prompt, and whether both chose the same tokens."""
    vocab = models["ours"].config.vocab_size
    prompt = torch.randint(0, vocab, (batch, settings.prompt), device=timer.device)
    kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=settings.new_tokens, do_sample=False, **generate_kwargs)
    outputs: dict[str, torch.Tensor] = {}

    def generate(key: str) -> None:
        outputs[key] = models[key].generate(prompt, **kwargs)

    result: dict[str, Any] = {"batch": batch}
    if "compile_config" in generate_kwargs:  # the first call compiles: time it on its own
        for key in models:
            result[f"{key}_first_call_s"] = timer.time(lambda k=key: generate(k))
    times = timer.interleaved({key: (lambda k=key: generate(k)) for key in models}, settings.gen_warmup, settings.gen_repeats)
    for key in models:
        if outputs[key].shape != (batch, settings.prompt + settings.new_tokens):
            raise RuntimeError(f"{NAMES[key]} generated {tuple(outputs[key].shape)} tokens, not {settings.new_tokens} new ones per row")
        result[key] = timing_summary(times[key], batch * settings.new_tokens)
        result[key]["ms_per_token_step"] = 1e3 * result[key]["median_s"] / settings.new_tokens
    # Same weights, greedy: the same tokens, unless two logits are tied to within float rounding (~1e-6),
    # which random-weight models with a 50k vocabulary do produce now and then.
    result["same_tokens"], result["first_different_position"] = compare_continuations(outputs["ours"], outputs["ref"], settings.prompt)
    result["ratio"] = result["ours"]["per_s"] / result["ref"]["per_s"]
    return result


def compile_config(device: torch.device) -> CompileConfig:
    config = CompileConfig(fullgraph=True, mode="reduce-overhead" if device.type == "cuda" else "default")
    # generate() compiles automatically only on accelerators; this documented flag opts the CPU in too.
    config._compile_all_devices = True
    return config


def bench_compiled_generate(
    models: dict[str, torch.nn.Module], settings: BenchmarkSettings, timer: Timer, default: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    """`bench_generate` with a static cache and torch.compile per --compile-batches size, also set against the
    default-cache figures in `default` (by batch size). A failure to compile is reported, not raised."""
    results = []
    for batch in settings.compile_batches:
        try:
            gen = bench_generate(models, settings, timer, batch, cache_implementation="static", compile_config=compile_config(timer.device))
        except Exception as error:  # a platform without a working compiler: report it, keep the rest
            gen = {"batch": batch, "error": f"{type(error).__name__}: {error}"}
            logger.warning("static cache + compile, b=%d: failed: %s", batch, gen["error"][:500])
        else:
            if batch in default:
                gen["ours_vs_ref_default"] = gen["ours"]["per_s"] / default[batch]["ref"]["per_s"]
                gen["ours_vs_ours_default"] = gen["ours"]["per_s"] / default[batch]["ours"]["per_s"]
            logger.info("static cache + compile b=%d: done (%.2fx)", batch, gen["ratio"])
        results.append(gen)
    return results


def run_benchmark(fields: dict[str, Any], settings: BenchmarkSettings, device: torch.device) -> dict[str, Any]:
    """Every part not in `settings.skip`, on random weights of the GPT2Config `fields`; returns the results
    (raw timings included); progress goes to this module's logger."""
    timer = Timer(device, CLOCKS[settings.clock])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as checkpoint:
        torch.manual_seed(settings.seed)
        GPT2LMHeadModel(GPT2Config(**fields)).save_pretrained(checkpoint)  # random weights, GPT-2's own layout

        def fresh_models() -> dict[str, torch.nn.Module]:  # training changes weights: each part starts anew
            return {"ours": load_for_benchmark("ours", checkpoint, device), "ref": load_for_benchmark("ref", checkpoint, device)}

        models = fresh_models()
        results["parameters"] = sum(p.numel() for p in models["ours"].parameters())
        results["peak"] = matmul_peak(timer, settings.peak_size)
        with torch.no_grad():
            ids = torch.randint(0, fields["vocab_size"], (2, min(settings.seq, fields["n_positions"])), device=device)
            diff = (models["ours"].eval()(ids).logits.float() - models["ref"].eval()(ids).logits.float()).abs().max().item()
        results["parity_max_abs_logit_diff"] = diff
        logger.info(
            "%.1fM parameters; matmul peak %.0f GFLOP/s (%s); max |logit difference| %.1e",
            results["parameters"] / 1e6, results["peak"]["gflops"], results["peak"]["what"], diff,
        )  # fmt: skip

        if "train" not in settings.skip:
            train = results["train"] = bench_train(models, settings, timer)
            # Measured again next to the training steps, keeping the best: one measurement can catch a slow
            # moment of a shared machine, and a low peak would overstate the MFU.
            results["peak"] = max(results["peak"], matmul_peak(timer, settings.peak_size), key=lambda p: p["gflops"])
            train["flops_per_token"] = training_flops_per_token(models["ours"].config, settings.seq)
            for key in models:
                train[key]["mfu"] = train["flops_per_token"] * train[key]["per_s"] / (results["peak"]["gflops"] * 1e9)
            logger.info("train: done (%.2fx)", train["ratio"])
            models = fresh_models()
        if "memory" not in settings.skip:
            results["memory"] = bench_memory(Path(checkpoint), settings, device)
            logger.info("memory: done (%.2fx)", results["memory"]["ratio"])
        if "generate" not in settings.skip:
            results["generate"] = []
            for batch in settings.gen_batches:
                results["generate"].append(bench_generate(models, settings, timer, batch))
                logger.info("generate b=%d: done (%.2fx)", batch, results["generate"][-1]["ratio"])
        if "compile" not in settings.skip:
            default = {g["batch"]: g for g in results.get("generate", [])}
            results["compile"] = bench_compiled_generate(models, settings, timer, default)
    return results
