"""`python -m gptcore.conversion SRC DST ...`: the command-line face of `convert`."""

from __future__ import annotations

import argparse
import logging
import sys

import transformers

from .convert import DTYPES, TARGETS, convert
from .formats import FORMATS, formats_help
from .llms_from_scratch import BOOK_MODELS

_DESCRIPTION = """\
Convert GPT-2-architecture weights into a gptcore checkpoint folder (or back into a plain transformers
GPT-2 folder). DST gets safetensors weights, config.json, generation_config.json, the GPT-2 tokenizer
files when the source has them (always for OpenAI's release), and a README.md model card saying where
the weights came from. Nothing is written unless the conversion succeeds.

SRC is a local folder or file; if no such path exists it is taken as a Hugging Face Hub repo id
(e.g. openai-community/gpt2) and downloaded through transformers' cache."""

_EPILOG = f"""\
source formats (--from; detected from SRC's files when omitted):
{formats_help()}

examples:
  python -m gptcore.conversion openai-community/gpt2 out/gpt2
  python -m gptcore.conversion models/124M out/gpt2 --from openai-tf
  python -m gptcore.conversion out-shakespeare/ckpt.pt out/nanogpt --dtype bfloat16
  python -m gptcore.conversion gpt2-small-124M.pth out/book --model-config "gpt2-small (124M)"
  python -m gptcore.conversion out/gpt2 out/gpt2-hf --to hf-gpt2"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gptcore.conversion",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", metavar="SRC", help="source checkpoint: folder, file, or Hub repo id")
    parser.add_argument("dst", metavar="DST", help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument(
        "--from",
        dest="from_format",
        choices=list(FORMATS),
        metavar="FORMAT",
        help=f"source format: {', '.join(FORMATS)} (default: detect)",
    )
    parser.add_argument(
        "--to",
        choices=TARGETS,
        default="gptcore",
        help="gptcore (default) or hf-gpt2: a plain GPT2LMHeadModel folder, no remote code",
    )
    parser.add_argument("--dtype", choices=list(DTYPES), help="cast the weights (default: keep the source's dtype)")
    parser.add_argument(
        "--max-shard-size", metavar="SIZE", help='largest weights file, e.g. "2GB" (default: transformers\')'
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists and is not empty")
    parser.add_argument(
        "--model-config",
        metavar="NAME_OR_JSON",
        help=f"llms-from-scratch only: the book's model name ({', '.join(map(repr, BOOK_MODELS))}) "
        "or a JSON file with its config dict; default: config.json next to the weights",
    )
    parser.add_argument("--revision", help="Hub sources: branch, tag or commit to download")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
    hub_kwargs = {"revision": args.revision} if args.revision else {}
    try:
        model = convert(
            args.src,
            args.dst,
            from_format=args.from_format,
            to=args.to,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            overwrite=args.overwrite,
            model_config=args.model_config,
            **hub_kwargs,
        )
    except (ValueError, OSError) as err:  # user-caused: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {args.dst}: {type(model).__name__}, {model.num_parameters():,} parameters, {model.dtype}")
    return 0
