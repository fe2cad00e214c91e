"""Shared fixtures: tiny random GPT-2 models and their gptcore twins (no network anywhere)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: tiny models gain nothing from intra-op threads and lose a lot when the cores are busy (a 2-thread
# step can take 20x longer on 2 oversubscribed cores), and CI runs two suites side by side.
torch.set_num_threads(1)

import gptcore.modeling  # noqa: E402,F401  registers the Auto classes
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tiny configs, including odd sizes (head_dim 12 and 5, vocab not a power of two, explicit n_inner).
TINY_GPT2_CONFIGS = {
    "base": dict(vocab_size=101, n_positions=64, n_embd=48, n_layer=2, n_head=4),
    "odd": dict(vocab_size=77, n_positions=33, n_embd=15, n_layer=3, n_head=3, n_inner=23),
    "deep": dict(vocab_size=128, n_positions=48, n_embd=32, n_layer=4, n_head=1, layer_norm_epsilon=1e-6),
}


def gpt2_config(**overrides) -> GPT2Config:
    """A tiny GPT2Config with dropout off (so outputs are deterministic in train mode too)."""
    fields = dict(TINY_GPT2_CONFIGS["base"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    fields.update(overrides)
    return GPT2Config(**fields)


def save_random_gpt2(path: Path, config: GPT2Config, seed: int = 0, **save_kwargs) -> GPT2LMHeadModel:
    """A randomly initialised transformers GPT-2, saved in the layout published on the Hub."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # LayerNorms start at (1, 0); perturb them so a swapped weight/bias would show
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path, **save_kwargs)
    return model


@pytest.fixture
def gpt2_pair(tmp_path):
    """(transformers GPT2LMHeadModel, GPTCoreForCausalLM loaded from its saved folder), both eval mode."""
    from gptcore.modeling import GPTCoreForCausalLM

    ref = save_random_gpt2(tmp_path / "gpt2", gpt2_config())
    ours = GPTCoreForCausalLM.from_pretrained(tmp_path / "gpt2").eval()
    return ref, ours


# Prepended to code run by `run_without_gptcore`: an import hook makes `gptcore` unimportable however it
# is installed (editable finder or site-packages), so the child sees only what plain transformers sees.
_BLOCK_GPTCORE = '''
import sys

class _BlockGptcore:
    def find_spec(self, name, path=None, target=None):
        if name == "gptcore" or name.startswith("gptcore."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, _BlockGptcore())
try:
    import gptcore.modeling
    raise SystemExit("gptcore is still importable; the test environment leaks")
except ModuleNotFoundError:
    pass
'''


def run_without_gptcore(code: str, cwd: Path, stdin: str | None = None, timeout: int = 300, python: str | None = None):
    """Run `code` in a fresh interpreter (of this venv, or `python`) in which gptcore cannot be imported."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(cwd / "hf_home")  # a fresh cache for remote-code modules
    return subprocess.run(
        [python or sys.executable, "-c", _BLOCK_GPTCORE + code],
        cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# --- example scripts (examples/finetune_*.py, perplexity.py, generate.py, estimate.py) -------------------

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture(scope="session")
def tiny_gptcore_checkpoint(tmp_path_factory) -> Path:
    """A folder with a tiny random GPTCoreForCausalLM (GPT-2 vocabulary) and the GPT-2 tokenizer, as a user saves one."""
    from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM
    from gptcore.tokenization import gpt2_tokenizer

    folder = tmp_path_factory.mktemp("tiny_gptcore")
    torch.manual_seed(0)
    config = GPTCoreConfig(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=50257)
    GPTCoreForCausalLM(config).save_pretrained(folder)
    gpt2_tokenizer().save_pretrained(folder)
    return folder


def run_example(script: str, *args: str, cwd: Path | None = None, timeout: int = 300):
    """Run `python examples/<script> args...` as a user would; fail the test with its output if it fails."""
    import subprocess
    import sys

    # One thread: tiny models gain nothing from more, and lose a lot when the machine is busy.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], cwd=cwd or REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"{script} {' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def run_example_in_process(script: str, *args: str, monkeypatch) -> None:
    """Run examples/<script> in this process, as `python examples/<script> args...` would run it, without
    paying again for starting an interpreter and importing torch and transformers."""
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(EXAMPLES))  # what Python does for `python examples/<script>`
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
