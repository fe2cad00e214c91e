"""The memory a training step really takes, to set beside `gptcore.training.memory_estimate.training_memory`'s
estimate: a model built from a config trains on random tokens with AdamW in a fresh process, and the peak of its last
step is read. The fine-tuning modes are set up by the functions the fine-tuning scripts call
(gptcore.training.memory_saving). Also here, for this measurement and the benchmark's: a process's resident memory and
its peak, and a fresh process to measure in.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from gptcore.modeling.compat import enable_activation_checkpointing
from gptcore.training.memory_estimate import TrainingSetup

# glibc's allocator keeps freed blocks in the process below a threshold that it raises as larger blocks are
# freed, so the process's resident memory would also count memory no tensor holds any more. A fixed, low
# threshold hands large blocks back to the system when they are freed, and resident memory follows the tensors.
_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
# A model small enough that training it allocates nothing worth counting but the runtime's one-time workspaces.
_TINY = {
    "n_layer": 1,
    "n_head": 1,
    "n_embd": 8,
    "vocab_size": 16,
    "n_positions": 8,
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def measure_training_peak(config: dict[str, Any], setup: TrainingSetup, steps: int = 2) -> int:
    """Bytes the last of `steps` training steps needed at its peak, above what the process held before: on
    CUDA `torch.cuda.max_memory_allocated`, elsewhere the resident-memory high-water mark (Linux only)."""
    if steps < 1:
        raise ValueError(f"a measurement needs at least one training step, got {steps}")
    if setup.device not in ("cpu", "cuda"):
        raise ValueError(f"memory is measured on cpu or cuda, not {setup.device!r}")
    if setup.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("measuring on cuda needs a CUDA GPU here; measure on cpu instead")
    return start_in_fresh_process(_measure, config, setup, steps, env=_ALLOCATOR_ENV).result()


def _measure(config: dict[str, Any], setup: TrainingSetup, steps: int) -> int:
    torch.manual_seed(0)
    # The runtime's one-time allocations (thread pools, kernel workspaces) are not the model's: made here first.
    train_steps(_TINY, replace(setup, batch=2, seq_len=8, galore_rank=2), steps=1, on_last_step=lambda: None)
    if setup.device == "cuda":
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        train_steps(config, setup, steps, on_last_step=torch.cuda.reset_peak_memory_stats)
        return torch.cuda.max_memory_allocated() - baseline
    baseline = resident_bytes()
    train_steps(config, setup, steps, on_last_step=reset_peak_resident)  # the last step's peak, not the first's
    return peak_resident_bytes() - baseline


def train_steps(config: dict[str, Any], setup: TrainingSetup, steps: int, on_last_step: Callable[[], None]) -> None:
    """`steps` AdamW steps of a model built from `config` on random tokens, as `setup` says (precision,
    checkpointing, attention, device, fine-tuning mode); `on_last_step` is called just before the last one starts."""
    model = GPTCoreForCausalLM(GPTCoreConfig(**config, attn_implementation=setup.attention)).to(setup.device).train()
    if setup.precision == "bf16":
        model.to(torch.bfloat16)
    if setup.finetuning != "full":
        model, optimizer = _memory_saving_model(model, setup)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if setup.gradient_checkpointing:
        enable_activation_checkpointing(model)
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(setup.precision)
    scaler = torch.amp.GradScaler(setup.device, enabled=setup.precision == "fp16-mixed")
    input_ids = torch.randint(0, model.config.vocab_size, (setup.batch, setup.seq_len), device=setup.device)
    for step in range(steps):
        if step == steps - 1:
            on_last_step()
        with torch.autocast(setup.device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss  # as Trainer runs it
        scaler.scale(loss).backward()
        # Trainer keeps no reference to a step's graph; bitsandbytes' 8-bit layers keep their inputs on it (not as saved
        # tensors, which the backward pass frees), so a graph kept into the next step would hold them there.
        del loss
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)


def _memory_saving_model(model: GPTCoreForCausalLM, setup: TrainingSetup) -> tuple[Any, torch.optim.Optimizer]:
    """The model and optimizer of `setup.finetuning`, built as the fine-tuning scripts build them: quantised while
    loading, readied by PEFT, LoRA adapters (AdamW on them), or Trainer's GaLore AdamW."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    from gptcore.training.arguments import reload_quantized
    from gptcore.training.lora import LoraArguments, add_lora
    from gptcore.training.memory_saving import MemorySavingArguments, prepare_for_training, quantization_config

    lora, saving = MemorySavingArguments.for_mode(setup.finetuning, galore_rank=setup.galore_rank)
    with tempfile.TemporaryDirectory() as output_dir:
        training = TrainingArguments(output_dir, use_cpu=setup.device == "cpu", report_to="none", learning_rate=1e-4)
        quantization = quantization_config(saving, lora, training, trainer=False)  # this loop is not Trainer
        if quantization is not None:
            model = reload_quantized(model, quantization).train()
        model = prepare_for_training(model, saving, training)
        if lora:
            model = add_lora(model, LoraArguments(lora=True, lora_r=setup.lora_r, lora_dropout=setup.lora_dropout))
            if setup.gradient_checkpointing:
                model.enable_input_require_grads()  # the checkpointed blocks' inputs come from a frozen embedding
            return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        return model, Trainer(model=model, args=training).create_optimizer()


# Resident memory of this process and its peak, for the measurement above and the benchmark's. On Linux the kernel
# keeps a resident-set high-water mark per process (VmHWM) that can be restarted from the current size, so one phase
# of a run can be measured on its own; elsewhere only the lifetime peak (ru_maxrss) exists.


def _proc_status_bytes(key: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def resident_bytes() -> int:
    """Memory this process holds in RAM now (Linux only)."""
    found = _proc_status_bytes("VmRSS")
    if found is None:
        raise ValueError("reading this process's resident memory needs Linux (/proc/self/status)")
    return found


def peak_resident_bytes() -> int:
    """The most RAM this process has held since it started, or since `reset_peak_resident()`."""
    found = _proc_status_bytes("VmHWM")
    if found is not None:
        return found
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_resident() -> None:
    """Restart the high-water mark from the current resident size (Linux only)."""
    clear_refs = Path("/proc/self/clear_refs")
    if not clear_refs.exists():
        raise ValueError("measuring the peak memory of one phase needs Linux (/proc/self/clear_refs)")
    clear_refs.write_text("5")


def start_in_fresh_process(function: Callable[..., Any], *args: Any, env: dict[str, str] | None = None) -> Future:
    """Start `function(*args)` in a new Python interpreter and return its future result.

    A new interpreter (multiprocessing's "spawn") starts with none of this process's memory, so its resident
    memory and peak are the function's alone; `env` is added to its environment (read at start-up, e.g. by
    the C allocator). `function` and `args` must be picklable: a module-level function of a module the new
    interpreter imports (it starts with this process's import path).
    An exception raised there is raised again by `.result()`.
    """
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    with _environment(env or {}):
        future = executor.submit(function, *args)  # starts the process now, with the environment as it is
    executor.shutdown(wait=False)  # the process ends once the function returns
    return future


@contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    previous = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
