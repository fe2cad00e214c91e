"""Shared fixtures: tiny random GPT-2 models and their gptcore twins (no network anywhere)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: tiny models gain nothing from intra-op threads and lose a lot when the cores are busy (a 2-thread
# step can take 20x longer on 2 oversubscribed cores), and CI runs two suites side by side.
torch.set_num_threads(1)

import gptcore.modeling  # noqa: E402,F401  registers the Auto classes
from tests.oracle import gpt2_config, save_random_gpt2  # noqa: E402
from tests.processes import EXAMPLES  # noqa: E402

# The benchmark's measuring tools (examples/benchmarking) are not installed: tests import them as the scripts do, from
# examples/, appended so that nothing there hides an installed module.
sys.path.append(str(EXAMPLES))


@pytest.fixture
def gpt2_pair(tmp_path):
    """(transformers GPT2LMHeadModel, GPTCoreForCausalLM loaded from its saved folder), both eval mode."""
    from gptcore.modeling import GPTCoreForCausalLM

    ref = save_random_gpt2(tmp_path / "gpt2", gpt2_config())
    ours = GPTCoreForCausalLM.from_pretrained(tmp_path / "gpt2").eval()
    return ref, ours


@pytest.fixture(scope="session")
def tiny_gptcore_checkpoint(tmp_path_factory) -> Path:
    """A folder with a tiny random GPTCoreForCausalLM (GPT-2 vocabulary) and the GPT-2 tokenizer, as a user saves
    one."""
    from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
    from gptcore.tokenization import gpt2_tokenizer

    folder = tmp_path_factory.mktemp("tiny_gptcore")
    torch.manual_seed(0)
    config = GPTCoreConfig(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=50257)
    GPTCoreForCausalLM(config).save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)
    return folder
