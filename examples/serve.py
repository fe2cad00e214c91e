"""Serve a gptcore checkpoint with transformers' own OpenAI-compatible server, `transformers serve`.

    python examples/serve.py runs/instruct --port 8000
    python examples/serve.py runs/instruct --port 8000 --continuous-batching --cb-num-blocks 64 --cb-max-batch-tokens 512

Then any OpenAI client talks to http://localhost:8000/v1, naming the model as given on the command line:

    from openai import OpenAI
    client = OpenAI(base_url="http://localhost:8000/v1", api_key="unused")
    client.chat.completions.create(model="runs/instruct", messages=[{"role": "user", "content": "Name three colours."}])

The arguments are those of `transformers serve` (`--help` lists them; `--device`, `--dtype`, `--host`, ...), and the
server is transformers' own, unchanged: /v1/chat/completions (the checkpoint's chat template), /v1/completions,
/v1/responses, /v1/models. It needs the serving extras: `pip install -e ".[serving]"` in a clone.

Why this script rather than `transformers serve <folder>`: the server looks a checkpoint's class up by name among
transformers' own classes (`config.architectures[0]`, after trying only `AutoModelForDecision`), so it cannot find a
model registered from outside transformers, with or without --trust-remote-code. Importing gptcore registers the
model with the Auto classes; this script also puts `GPTCoreForCausalLM` where that lookup looks, then runs the CLI.
Without gptcore installed, serve an exported plain GPT-2 folder instead (`python -m gptcore.conversion <folder> <out>
--to hf-gpt2`): `transformers serve <out>` needs no launcher.
"""

from __future__ import annotations

import sys

from gptcore.modeling import GPTCoreForCausalLM


def main(argv: list[str]) -> None:
    from transformers.cli.transformers import app  # imports the server's dependencies first (see below)

    # Looked up in sys.modules, not through an `import transformers` at the top: importing transformers' model code
    # (which gptcore does) re-creates the `transformers` module object once, and the server reads the new one.
    setattr(sys.modules["transformers"], GPTCoreForCausalLM.__name__, GPTCoreForCausalLM)
    # The `serve` command itself; `transformers`' own entry point would also ask the network for a newer release.
    app(["serve", *argv], prog_name="transformers")


if __name__ == "__main__":
    main(sys.argv[1:])
