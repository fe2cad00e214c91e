"""Finding and reading a source's files, locally or on the Hugging Face Hub, safely.

SRC is a local path when it exists; otherwise it is taken as a Hub repo id and files are downloaded
through transformers' cache (so `HF_TOKEN`, `HF_HUB_OFFLINE`, `HF_HOME` etc. behave as usual).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

from huggingface_hub import ModelCard, constants

from gptcore.tokenization import gpt2_tokenizer

logger = logging.getLogger(__name__)

# The files transformers writes for a tokenizer; copied verbatim when a source has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",  # where transformers 5 keeps a chat template
)
# OpenAI's own vocabulary files, as in the original GPT-2 release.
OPENAI_VOCAB_FILES = ("encoder.json", "vocab.bpe")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?\Z")


def is_hub_repo(src: str) -> bool:
    """Not a local path, but spelled like a Hub repo id (`name` or `owner/name`)."""
    return not os.path.exists(src) and _REPO_ID.match(src) is not None


def require_source(src: str) -> None:
    """SRC must exist locally or look like a Hub repo id; say which was expected otherwise."""
    if not os.path.exists(src) and not is_hub_repo(src):
        raise FileNotFoundError(
            f"source {src} does not exist (and is not a Hub repo id such as 'openai-community/gpt2')"
        )


def hub_file_names(repo_id: str, hub_kwargs: dict[str, Any]) -> list[str] | None:
    """The files of a Hub repo, listed once; None offline, where files can only be looked up in the cache.

    Listing first turns "no network" or "no such repo" into one clear error, instead of every optional
    file lookup quietly finding nothing.
    """
    from huggingface_hub import list_repo_files  # imported late so tests can stand in for the Hub

    if constants.HF_HUB_OFFLINE or hub_kwargs.get("local_files_only"):
        return None
    try:
        return list_repo_files(repo_id, revision=hub_kwargs.get("revision"), token=hub_kwargs.get("token"))
    except Exception as err:  # huggingface_hub's HTTP, auth and connection errors alike
        raise FileNotFoundError(
            f"could not list the files of Hub repo {repo_id!r}: {err}\n"
            "(SRC is taken as a Hub repo id because no such local path exists)"
        ) from err


def locate(src: str, filename: str, hub_kwargs: dict[str, Any], required: bool = True) -> str | None:
    """Path of `filename` inside the local folder `src`, or downloaded from the Hub repo `src`.

    Returns None for a missing optional file; raises FileNotFoundError naming the file otherwise.
    """
    if os.path.isdir(src):
        path = os.path.join(src, filename)
        if os.path.isfile(path):
            return path
        if required:
            raise FileNotFoundError(f"{path} not found")
        return None
    from transformers.utils import cached_file  # imported late so tests can stand in for the Hub

    from gptcore.modeling.compat import optional_cached_file

    try:
        if required:
            path = cached_file(src, filename, **hub_kwargs)
        else:
            path = optional_cached_file(src, filename, **hub_kwargs)
    except OSError as err:  # "no such repo or file" and network failures alike
        raise FileNotFoundError(f"could not get {filename} from {src!r} (local path or Hub repo): {err}") from err
    if path is None and required:  # a missing file may come back as None rather than as an error
        raise FileNotFoundError(f"Hub repo {src!r} has no {filename}")
    return path


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read {path}: {err}") from err


def tokenizer_writer(src: str, hub_kwargs: dict[str, Any], gpt2_by_default: bool) -> Callable[[str], None] | None:
    """A function writing the source's tokenizer into a folder, or None when the source has none.

    transformers tokenizer files are copied as they are; OpenAI's `encoder.json`/`vocab.bpe` are
    turned into a transformers tokenizer; `gpt2_by_default` writes GPT-2's (bundled) tokenizer.
    """
    if os.path.isfile(src):
        return None
    found = {name: locate(src, name, hub_kwargs, required=False) for name in TOKENIZER_FILES}
    found = {name: path for name, path in found.items() if path is not None}
    if found:
        return lambda folder: _copy_files(found.values(), folder)
    vocab = [locate(src, name, hub_kwargs, required=False) for name in OPENAI_VOCAB_FILES]
    if all(vocab):
        return lambda folder: _save_gpt2_tokenizer(folder, os.path.dirname(vocab[0]))
    if gpt2_by_default:
        return lambda folder: _save_gpt2_tokenizer(folder, None)
    return None


def _copy_files(paths: Any, folder: str) -> None:
    for path in paths:
        shutil.copyfile(path, os.path.join(folder, os.path.basename(path)))


def _save_gpt2_tokenizer(folder: str, vocab_dir: str | None) -> None:
    gpt2_tokenizer(vocab_dir).save_pretrained(folder)


def source_license(src: str, hub_kwargs: dict[str, Any]) -> str | None:
    """The `license` in the source's model card (README.md front matter), if it has one."""
    if os.path.isfile(src):
        return None
    readme = locate(src, "README.md", hub_kwargs, required=False)
    if readme is None:
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception as err:  # a malformed card is no reason to fail a conversion
        logger.info("could not read the license from %s: %s", readme, err)
        return None
