"""What one pretraining run works with once set up: handed to the step loop and to the final report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from gptcore.training.arguments import ModelArguments
from gptcore.training.lm_data import document_position_ids
from gptcore.training.pretraining.checkpoints import TrainingProgress
from gptcore.training.pretraining.report import MetricsLog
from torch import nn
from torch.utils.data import DataLoader


@dataclass
class TrainingRun:
    model_args: ModelArguments
    args: argparse.Namespace  # every other option (cli.parse_args)
    accelerator: Accelerator
    tokenizer: Any
    model: nn.Module  # as accelerate prepared it: wrapped for DDP/FSDP, compiled with --torch_compile
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    eval_loader: DataLoader
    progress: TrainingProgress
    metrics: MetricsLog
    output_dir: Path
    unigram_baseline: float | None  # on the main process only

    @property
    def checkpoints_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def unwrapped_model(self) -> nn.Module:
        """The GPTCoreForCausalLM inside the wrappers: what generates samples and is saved."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    @property
    def num_parameters(self) -> int:
        return sum(param.numel() for param in self.unwrapped_model.parameters())  # tied weights count once

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """With --no_cross_document_attention, positions that restart at every EOS (which keeps packed documents
        apart); else None, the model's own 0, 1, 2, ..."""
        if not self.args.no_cross_document_attention:
            return None
        return document_position_ids(input_ids, self.tokenizer.eos_token_id)
