"""The short README.md written into every converted folder: where the weights came from."""

from __future__ import annotations

import datetime
import os

from huggingface_hub import ModelCard, ModelCardData

from .checkpoint import SourceCheckpoint

_LOADING = {
    "gptcore": (
        "Load it with gptcore installed (`import gptcore.modeling`, then `AutoModelForCausalLM.from_pretrained`), "
        "or without it via `AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`."
    ),
    "hf-gpt2": "It is a plain transformers GPT-2 checkpoint: `GPT2LMHeadModel.from_pretrained(path)`, no remote code.",
}


def write_model_card(folder: str, name: str, checkpoint: SourceCheckpoint, target: str, dtype: str) -> None:
    """README.md in `folder`, titled `name` (the folder is a temporary one until the conversion succeeds)."""
    config = checkpoint.config
    data = ModelCardData(library_name="transformers", license=checkpoint.license, tags=["gptcore", "gpt2", "converted"])
    if checkpoint.license:
        license_line = f"License: `{checkpoint.license}`, that of the source weights."
    else:
        license_line = (
            "License: the weights keep the license of their source, which this converter cannot determine; "
            "check it before redistributing. (OpenAI's original GPT-2 weights are MIT-licensed.)"
        )
    lines = [
        f"# {name}",
        "",
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
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n").save(os.path.join(folder, "README.md"))
