"""What the serving tests share: a tiny checkpoint with a transformers GPT-2 twin, greedy references, and
`examples/serve.py` started in a child process (its own process group, always stopped)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.oracle import GPT2_VOCAB_SIZE, gpt2_and_twin, save_with_gpt2_tokenizer
from tests.processes import EXAMPLES

SERVING_EXTRAS = ("openai", "fastapi", "uvicorn")
# Start-up is mostly importing torch, transformers and the server; generous, as other processes share the CPU.
STARTUP_TIMEOUT_S = 120


def skip_without_serving() -> None:
    """Skip the calling test module unless the serving extras and transformers' current server are installed."""
    missing = [name for name in SERVING_EXTRAS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"the serving extras are not installed ({', '.join(missing)}): pip install -e '.[serving]'",
            allow_module_level=True,
        )
    if importlib.util.find_spec("transformers.cli.serving") is None:  # 5.0's single-file server: no /v1/completions
        pytest.skip(
            "this transformers release's `serve` predates the /v1/completions endpoint and the positional model "
            "argument",
            allow_module_level=True,
        )


def build_checkpoint(folder: Path, n_embd: int = 32, n_head: int = 2):
    """(gptcore folder with the GPT-2 tokenizer and its Alpaca chat template, the gptcore model, transformers' GPT-2
    with the same weights). Weights drawn wide (std 0.3): a tiny model at GPT-2's 0.02 repeats one token whatever
    the prompt, while these answers differ from prompt to prompt, so a prompt that lost its history shows."""
    reference, model = gpt2_and_twin(
        folder / "gpt2",
        vocab_size=GPT2_VOCAB_SIZE,
        n_positions=256,
        n_embd=n_embd,
        n_head=n_head,
        initializer_range=0.3,
    )
    return save_with_gpt2_tokenizer(model, folder / "gptcore"), model, reference


@torch.no_grad()
def greedy(model, input_ids: list[int], max_new_tokens: int) -> list[int]:
    """The new token ids of greedy `generate()` with the checkpoint's generation config (stops at EOS), as the
    server."""
    ids = torch.tensor([input_ids])
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=50256
    )
    return out[0, ids.size(1) :].tolist()


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids the server builds for `messages`: the chat template with the generation prompt."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def served(model_folder: Path, log_file: Path, *options: str) -> Iterator[str]:
    """`python examples/serve.py <model_folder> --device cpu ... <options>` on a free local port; yields the OpenAI
    base URL once /health answers."""
    port = free_port()
    command = [
        sys.executable,
        str(EXAMPLES / "serve.py"),
        str(model_folder),
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with server_process(command, port, log_file, env, STARTUP_TIMEOUT_S) as base_url:
        yield base_url


@contextmanager
def server_process(
    command: list[str], port: int, log_file: Path, env: dict[str, str], startup_timeout_s: float
) -> Iterator[str]:
    """Run `command`, an OpenAI-compatible server listening on 127.0.0.1:`port`; yield its base URL once /health
    answers. The server runs in its own process group, killed on the way out whatever happens."""
    with open(log_file, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with {server.returncode}"
                    if server.poll() is not None
                    else f"not up after {startup_timeout_s} s"
                )
                pytest.fail(f"the server {state}:\n{log_file.read_text()[-4000:]}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(server.pid, sig)
                server.wait(timeout=wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def openai_client(base_url: str):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
