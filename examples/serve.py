"""Serve a gptcore checkpoint with transformers' own OpenAI-compatible server, `transformers serve`.

    python examples/serve.py runs/instruct --port 8000
    python examples/serve.py runs/instruct --port 8000 \
        --continuous-batching --cb-num-blocks 64 --cb-max-batch-tokens 512

Then any OpenAI client talks to http://localhost:8000/v1, naming the model as given on the command line:

    from openai import OpenAI
    client = OpenAI(base_url="http://localhost:8000/v1", api_key="unused")
    client.chat.completions.create(model="runs/instruct", messages=[{"role": "user", "content": "Name three colours."}])

The arguments are those of `transformers serve` (`--help` lists them; `--device`, `--dtype`, `--host`, ...), and the
server is transformers' own, unchanged: /v1/chat/completions (the checkpoint's chat template), /v1/completions,
/v1/responses, /v1/models. It needs the serving extras: `pip install -e ".[serving]"` in a clone.

Why this script rather than `transformers serve <folder>`: the server looks a checkpoint's class up by name among
transformers' own classes (`config.architectures[0]`, after trying only `AutoModelForDecision`), so it finds a model
defined outside transformers only in a process that has imported it. Importing gptcore registers the model with the
Auto classes and puts its classes where that lookup looks; this script imports gptcore, then runs the CLI. Where the
server loads the model in a process of its own (it spawns one), that process imports this script first, as Python's
"spawn" start method does with the main script, and with it gptcore.
Without gptcore installed, serve an exported plain GPT-2 folder instead (`python -m gptcore.conversion <folder> <out>
--to hf-gpt2`): `transformers serve <out>` needs no launcher.
"""

from __future__ import annotations

import sys

import gptcore.modeling  # noqa: F401  (registers gptcore, in this process and in the ones the server spawns)


def main(argv: list[str]) -> None:
    from transformers.cli.transformers import app

    # The `serve` command itself; `transformers`' own entry point would also ask the network for a newer release.
    app(["serve", *argv], prog_name="transformers")


if __name__ == "__main__":
    main(sys.argv[1:])
