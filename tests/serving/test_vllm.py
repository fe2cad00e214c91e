"""vLLM serves a gptcore folder itself (its Transformers modeling backend, through gptcore's attention interface and
its vLLM plugin, no --trust-remote-code) and the plain GPT-2 export; greedy completions are transformers' GPT-2's
tokens on the same weights, one request at a time and eight at once.

vLLM is not in CI's environments (its CPU build pins its own torch and transformers): these tests run where vLLM is
installed, `bash .ci/setup-vllm-venv && .venv-vllm/bin/python -m pytest -q tests/serving/test_vllm.py`, and skip
elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip(
        "vLLM is not installed here; `bash .ci/setup-vllm-venv` makes an environment with it", allow_module_level=True
    )

from gptcore.conversion import export_hf_gpt2  # noqa: E402
from gptcore.tokenization import gpt2_tokenizer  # noqa: E402
from tests.serving.support import build_checkpoint, free_port, greedy, openai_client, server_process  # noqa: E402

pytestmark = pytest.mark.slow  # starting a vLLM server (loading torch, vLLM and the model) takes minutes

STARTUP_TIMEOUT_S = 400
NEW_TOKENS = 20
PROMPTS = [
    "Alice was beginning to get very tired",
    "The meaning of life is",
    "Below is an instruction that describes a task.",
    "Once upon a time",
    "In the sunlit terraces of the palace",
    "Name three primary colours:",
    "def fibonacci(n):",
    "It was the best of times,",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory):
    """(gptcore folder, its plain GPT-2 export, transformers' GPT-2 on the same weights)."""
    root = tmp_path_factory.mktemp("vllm")
    gptcore_folder, model, reference = build_checkpoint(root, n_embd=64, n_head=1)  # vLLM's CPU kernels: head size 64
    export_hf_gpt2(model, root / "export")
    gpt2_tokenizer().save_pretrained(root / "export")
    return gptcore_folder, root / "export", reference


def vllm_server(model_folder: Path, log_file: Path):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_folder),
        "--dtype",
        "float32",
        "--max-model-len",
        "256",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return server_process(command, port, log_file, env, STARTUP_TIMEOUT_S)


def completion_tokens(client, model: str, prompt_ids: list[int]) -> list[int]:
    response = client.completions.create(
        model=model, prompt=prompt_ids, max_tokens=NEW_TOKENS, temperature=0, extra_body={"return_token_ids": True}
    )
    return response.choices[0].token_ids


@pytest.mark.parametrize("which", ["gptcore", "export"])
def test_vllm_greedy_completions_are_gpt2s_tokens(folders, which: str, tmp_path: Path):
    gptcore_folder, export_folder, reference = folders
    folder = gptcore_folder if which == "gptcore" else export_folder
    tokenizer = gpt2_tokenizer()
    prompts = [tokenizer(text)["input_ids"] for text in PROMPTS]
    expected = [greedy(reference, ids, NEW_TOKENS) for ids in prompts]
    assert len({tuple(tokens) for tokens in expected}) > 1  # the prompts lead to different answers

    with vllm_server(folder, tmp_path / "vllm.log") as base_url:
        client = openai_client(base_url)
        one_at_a_time = [completion_tokens(client, str(folder), ids) for ids in prompts]
        with ThreadPoolExecutor(len(prompts)) as pool:  # batched together by vLLM's scheduler
            at_once = list(pool.map(lambda ids: completion_tokens(client, str(folder), ids), prompts))
    log = (tmp_path / "vllm.log").read_text()
    if which == "gptcore":  # vLLM's Transformers backend ran gptcore's own modules
        assert "TransformersForCausalLM" in log, log[-3000:]
    assert one_at_a_time == expected
    assert at_once == expected
