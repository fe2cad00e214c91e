r"""Perplexity of a gptcore checkpoint on a text file or dataset, with a sliding window.

As transformers' "Perplexity of fixed-length models" guide: the whole text is tokenized once; windows of
`--max_length` tokens advance by `--stride`, and each window scores only the tokens no earlier window
scored, so every token after the first is predicted exactly once, whatever the stride in [1, max_length].
A window's last position predicts the token just after it, so a window of max_length tokens scores up to
max_length tokens, each with at least max_length - stride + 1 tokens of context (except at the start).
stride = max_length gives disjoint windows (fast, pessimistic); stride = 1 gives every token full context.

    python examples/perplexity.py --model_name_or_path runs/pretrain/final \
        --text_file examples/data/corpus/asyoulik.txt --stride 512
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import ModelArguments, load_model_and_tokenizer, parse_args
from gptcore.training.data_files import load_rows, require_columns
from gptcore.training.hardware import pick_device


@dataclass
class EvalArguments:
    text_file: str | None = field(default=None, metadata={"help": "A .txt file (or .csv/.json with --text_column)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset instead, e.g. wikitext."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "e.g. wikitext-2-raw-v1."})
    split: str = field(default="test", metadata={"help": "The Hub dataset's split."})
    text_column: str = field(
        default="text", metadata={"help": "Column holding the text; rows are joined with blank lines."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Window length in tokens; default: the model's n_positions."}
    )
    stride: int | None = field(default=None, metadata={"help": "Tokens the window advances; default: max_length // 2."})
    max_tokens: int | None = field(
        default=None, metadata={"help": "Score only the first this many tokens of the text."}
    )
    device: str = field(
        default="auto", metadata={"help": "cpu, cuda, ... (auto: the accelerator torch finds, else cpu)."}
    )
    output_json: str | None = field(default=None, metadata={"help": "Also write the figures to this JSON file."})


@torch.no_grad()
def sliding_window_nll(model: Any, input_ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int, int]:
    """Summed negative log-likelihood (nats) of input_ids[1:], the number of tokens scored, and windows used.

    Window k reads the tokens [k * stride, k * stride + max_length); the logits at its positions predict the
    tokens one position later, and the window scores those the previous window did not: all of them in the
    first window, then the last `stride` (fewer in the last window, which stops at the end of the text).
    """
    last = input_ids.size(1) - 1  # the last token to predict; it is never an input
    n_windows = 1 + max(0, -(-(last - max_length) // stride))  # until a window reaches `last`
    nll_sum, scored, next_target = 0.0, 0, 1  # tokens [1, next_target) are scored
    for begin in tqdm(range(0, n_windows * stride, stride), desc="Scoring windows"):
        end = min(begin + max_length, last)  # inputs [begin, end) predict the tokens [begin + 1, end + 1)
        new = end + 1 - next_target  # the last `new` positions predict tokens no earlier window scored
        window = input_ids[:, begin:end].to(model.device)
        logits = model(window, logits_to_keep=new).logits  # (1, new, vocab)
        targets = input_ids[:, next_target : end + 1].to(model.device)
        nll_sum += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
        scored += new
        next_target = end + 1
    assert scored == last, (scored, last)  # every token after the first, once
    return nll_sum, scored, n_windows


def perplexity(
    model: Any, input_ids: torch.Tensor, max_length: int | None = None, stride: int | None = None
) -> dict[str, Any]:
    """Perplexity of (1, T) `input_ids` and how it was computed. Windows of `max_length` tokens (default: the
    model's n_positions) advance by `stride` (default: half a window): stride = max_length gives disjoint
    windows (fast, pessimistic), stride = 1 gives every token full context."""
    n_positions = model.config.n_positions
    max_length = max_length or n_positions
    stride = stride or max(1, max_length // 2)
    if not 2 <= max_length <= n_positions:
        raise ValueError(f"--max_length must be in [2, {n_positions}] (the model's n_positions), got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"--stride must be in [1, --max_length={max_length}], got {stride}")
    if input_ids.size(1) < 2:
        raise ValueError("the text has fewer than 2 tokens; there is nothing to predict")
    nll_sum, scored, windows = sliding_window_nll(model, input_ids, max_length, stride)
    return {
        "perplexity": math.exp(nll_sum / scored),
        "nll_per_token": nll_sum / scored,
        "tokens": input_ids.size(1),
        "tokens_scored": scored,
        "windows": windows,
        "max_length": max_length,
        "stride": stride,
    }


def main() -> None:
    model_args, args = parse_args(ModelArguments, EvalArguments, description=__doc__)
    rows = load_rows(args.text_file, args.dataset_name, args.dataset_config_name, split=args.split)
    require_columns(rows, [args.text_column], args.text_file or args.dataset_name)
    model, tokenizer = load_model_and_tokenizer(GPTCoreForCausalLM, model_args)
    model.eval().to(pick_device(args.device))

    text = "\n\n".join(t for t in rows[args.text_column] if t)
    input_ids = tokenizer(
        text, return_tensors="pt", verbose=False
    ).input_ids  # verbose=False: longer than a window is the point
    result = perplexity(model, input_ids[:, : args.max_tokens], args.max_length, args.stride)
    print(
        f"perplexity {result['perplexity']:.3f} ({result['nll_per_token']:.4f} nats/token) over "
        f"{result['tokens_scored']} "
        f"tokens, {result['windows']} windows of {result['max_length']} tokens, stride {result['stride']}"
    )
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
