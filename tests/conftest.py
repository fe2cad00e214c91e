"""Shared fixtures: tiny random GPT-2 models and their gptcore twins (no network anywhere)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: a tiny model's operations are too small to gain from splitting them across threads, and when other
# processes hold the cores (other suites, subprocesses the tests start) each split operation waits for all its threads.
torch.set_num_threads(1)

import gptcore.modeling  # noqa: E402,F401  registers the Auto classes
from tests.oracle import (  # noqa: E402
    GPT2_VOCAB_SIZE,
    gpt2_and_twin,
    random_gptcore,
    save_with_gpt2_tokenizer,
)
from tests.processes import EXAMPLES  # noqa: E402

# The benchmark's measuring tools (examples/benchmarking) are not installed: tests import them as the scripts do, from
# examples/, appended so that nothing there hides an installed module.
sys.path.append(str(EXAMPLES))


@pytest.fixture
def gpt2_pair(tmp_path):
    """(transformers GPT2LMHeadModel, GPTCoreForCausalLM loaded from its saved folder), both eval mode."""
    return gpt2_and_twin(tmp_path / "gpt2")


@pytest.fixture(scope="session")
def tiny_gptcore_checkpoint(tmp_path_factory) -> Path:
    """A folder with a tiny random GPTCoreForCausalLM (GPT-2 vocabulary) and the GPT-2 tokenizer, as a user saves
    one."""
    model = random_gptcore(seed=0, vocab_size=GPT2_VOCAB_SIZE, n_positions=128, n_embd=32, n_head=2)
    return save_with_gpt2_tokenizer(model, tmp_path_factory.mktemp("tiny_gptcore"))
