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
from dataclasses import dataclass, field
from pathlib import Path

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.training.arguments import ModelArguments, load_model_and_tokenizer, parse_args
from gptcore.training.perplexity import perplexity
from gptcore.training.runtime import pick_device
from gptcore.training.text_data import load_rows, require_columns


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
