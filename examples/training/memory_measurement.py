"""The memory a training step really takes, to set beside `memory.training_memory`'s estimate: a model built from
a config trains on random tokens with AdamW in a fresh process, and the peak of its last step is read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
from gptcore.modeling.compat import enable_activation_checkpointing
from gptcore.training.memory import TrainingSetup
from gptcore.training.runtime import peak_resident_bytes, reset_peak_resident, resident_bytes, start_in_fresh_process

# glibc's allocator keeps freed blocks in the process below a threshold that it raises as larger blocks are
# freed, so the process's resident memory would also count memory no tensor holds any more. A fixed, low
# threshold hands large blocks back to the system when they are freed, and resident memory follows the tensors.
_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
# A model small enough that training it allocates nothing worth counting but the runtime's one-time workspaces.
_TINY = {"n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 16, "n_positions": 8, "bos_token_id": 0, "eos_token_id": 0}


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
    train_steps(_TINY, replace(setup, batch=2, seq_len=8), steps=1, on_last_step=lambda: None)
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
    checkpointing, attention, device); `on_last_step` is called just before the last one starts."""
    model = GPTCoreForCausalLM(GPTCoreConfig(**config, attn_implementation=setup.attention)).to(setup.device).train()
    if setup.precision == "bf16":
        model.to(torch.bfloat16)
    if setup.gradient_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}.get(setup.precision)
    scaler = torch.amp.GradScaler(setup.device, enabled=setup.precision == "fp16-mixed")
    input_ids = torch.randint(0, model.config.vocab_size, (setup.batch, setup.seq_len), device=setup.device)
    for step in range(steps):
        if step == steps - 1:
            on_last_step()
        with torch.autocast(setup.device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = model(input_ids=input_ids, labels=input_ids, use_cache=False).loss  # as Trainer runs it
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
