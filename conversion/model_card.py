"""Model cards (README.md with the Hub's metadata header): one writer, and the card of a converted folder."""

from __future__ import annotations

import datetime
import os
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .checkpoint import SourceCheckpoint

_LOADING = {
    "gptcore": (
        "Load it with gptcore installed (`import gptcore.modeling`, then `AutoModelForCausalLM.from_pretrained`), "
        "or without it via `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`."
    ),
    "hf-gpt2": "It is a plain transformers GPT-2 checkpoint: `GPT2LMHeadModel.from_pretrained(path)`, no remote code.",
}


def write_card(folder: str | os.PathLike, title: str, body: str, **metadata: Any) -> None:
    """README.md in `folder`: the Hub's YAML header from `metadata` (ModelCardData fields: library_name, license,
    tags, pipeline_tag, ...; None values are left out), then `# title` and the Markdown `body`."""
    header = ModelCardData(**metadata).to_yaml()
    ModelCard(f"---\n{header}\n---\n\n# {title}\n\n{body}").save(os.path.join(folder, "README.md"))


def write_model_card(folder: str, name: str, checkpoint: SourceCheckpoint, target: str, dtype: str) -> None:
    """README.md in `folder`, titled `name` (the folder is a temporary one until the conversion succeeds)."""
    config = checkpoint.config
    if checkpoint.license:
        license_line = f"License: `{checkpoint.license}`, that of the source weights."
    else:
        license_line = (
            "License: the weights keep the license of their source, which this converter cannot determine; "
            "check it before redistributing. (OpenAI's original GPT-2 weights are MIT-licensed.)"
        )
    lines = [
        f"Converted by `python -m gptcore.conversion` on {datetime.date.today().isoformat()}.",
        "",
        f"- Source: `{checkpoint.source}` (format `{checkpoint.format}`)",
        f"- Written as: `{target}`, dtype `{dtype}`",
        f"- Architecture: GPT-2, {config.n_layer} layers, n_embd {config.n_embd}, {config.n_head} heads, "
        f"vocabulary {config.vocab_size}, context {config.n_positions}, activation `{config.activation_function}`",
        "",
        _LOADING[target],
        "",
        *checkpoint.notes,
        "",
        license_line,
    ]
    write_card(
        folder,
        name,
        "\n".join(lines) + "\n",
        library_name="transformers",
        license=checkpoint.license,
        tags=["gptcore", "gpt2", "converted"],
    )
