r"""Tokens per second of one checkpoint served three ways, in one run: vLLM, `transformers serve`, and `generate()`.

    bash .ci/setup-vllm-venv                                   # vLLM's CPU build, in an environment of its own
    python examples/benchmark_serving.py runs/instruct --vllm_python .venv-vllm/bin/python

Each server is started on 127.0.0.1 in turn (vLLM through `--vllm_python`, which runs gptcore through its vLLM plugin;
`transformers serve` through examples/serve.py, in this environment, with and without continuous batching) and
answers the same greedy completion requests, first one at a time, then `--concurrency` at once; `generate()` runs
in this process, one prompt at a time, then the same prompts as one left-padded batch. Tokens/s counts the
completion tokens the answers report over the wall time of the whole round.
Leave out `--vllm_python` where vLLM is not installed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer

EXAMPLES = Path(__file__).resolve().parent
PROMPTS = [
    "Alice was beginning to get very tired of sitting by her sister on the bank,",
    "The meaning of life is",
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "Once upon a time, in a land far away,",
    "In the sunlit terraces of the palace,",
    "Name three primary colours:",
    "It was the best of times, it was the worst of times,",
    "The quick brown fox",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(server: subprocess.Popen, port: int, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not come up; its log ({log}) ends:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def measure_server(command: list[str], port: int, model: str, args: argparse.Namespace, log: Path) -> dict[str, float]:
    """Start `command` (a server on `port`), then tokens/s at concurrency 1 and at --concurrency; always stopped."""
    from openai import OpenAI

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_healthy(server, port, log, args.startup_timeout)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)

        def complete(prompt: str) -> int:
            response = client.completions.create(model=model, prompt=prompt, max_tokens=args.new_tokens, temperature=0)
            return response.usage.completion_tokens

        complete(PROMPTS[0])  # warm-up
        rates = {}
        for concurrency in (1, args.concurrency):
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                tokens = sum(pool.map(complete, PROMPTS * args.rounds))
            rates[concurrency] = tokens / (time.perf_counter() - start)
        return rates
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@torch.no_grad()
def measure_generate(model_folder: str, args: argparse.Namespace) -> dict[str, float]:
    """`generate()` in this process: one prompt at a time, then --concurrency prompts as one left-padded batch."""
    model = GPTCoreForCausalLM.from_pretrained(model_folder).eval()
    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    settings = dict(max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    model.generate(**tokenizer([PROMPTS[0]], return_tensors="pt"), **settings)  # warm-up
    rates = {}
    for batch in (1, args.concurrency):
        prompts = PROMPTS * args.rounds
        start, tokens = time.perf_counter(), 0
        for i in range(0, len(prompts), batch):
            inputs = tokenizer(prompts[i : i + batch], return_tensors="pt", padding=True)
            out = model.generate(**inputs, **settings)[:, inputs["input_ids"].size(1) :]
            tokens += int((out != tokenizer.eos_token_id).sum())  # EOS pads a row that stopped early
        rates[batch] = tokens / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a gptcore checkpoint folder")
    parser.add_argument("--vllm_python", help="the Python of an environment with vLLM (bash .ci/setup-vllm-venv)")
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="each round sends every prompt once")
    parser.add_argument("--startup_timeout", type=float, default=600)
    parser.add_argument("--logs", default="benchmark-serving-logs", help="folder for the servers' logs")
    args = parser.parse_args()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)

    results = {}
    if args.vllm_python:
        port = free_port()
        command = [
            args.vllm_python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            args.model,
            "--dtype",
            "float32",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        results["vLLM"] = measure_server(command, port, args.model, args, logs / "vllm.log")
    # Continuous batching's cache is capped: on a CPU it would otherwise size itself from the machine's memory.
    for name, options in (
        ("transformers serve", []),
        ("  --continuous-batching", ["--continuous-batching", "--cb-num-blocks", "64", "--cb-max-batch-tokens", "512"]),
    ):
        port = free_port()
        command = [
            sys.executable,
            str(EXAMPLES / "serve.py"),
            args.model,
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *options,
        ]
        results[name] = measure_server(command, port, args.model, args, logs / f"transformers-serve{len(options)}.log")
    results["generate()"] = measure_generate(args.model, args)

    print(f"\ntokens/s, greedy, {args.new_tokens} new tokens, {len(PROMPTS) * args.rounds} requests per column")
    print(f"{'':<24} {'1 at a time':>12} {f'{args.concurrency} at once':>12}")
    for name, rates in results.items():
        print(f"{name:<24} {rates[1]:>12.1f} {rates[args.concurrency]:>12.1f}")


if __name__ == "__main__":
    main()
