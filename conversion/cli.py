"""`python -m gptcore.conversion SRC DST ...`: the command-line face of `convert`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Any

import transformers
from transformers import AutoTokenizer

from gptcore.tokenization import gpt2_tokenizer

from .convert import DTYPES, TARGETS, check_destination, convert, staged_folder
from .files import tokenizer_writer
from .formats import FORMATS, formats_help
from .gguf_export import export_gguf
from .llms_from_scratch import BOOK_MODELS
from .onnx_export import export_onnx

# Runtime formats (`pip install gptcore[deploy]`): ONNX Runtime reads a folder, llama.cpp one .gguf file.
RUNTIMES = ("onnx", "gguf")

_DESCRIPTION = """\
Convert GPT-2-architecture weights into a gptcore checkpoint folder (or back into a plain transformers
GPT-2 folder). DST gets safetensors weights, config.json, generation_config.json, the GPT-2 tokenizer
files when the source has them (always for OpenAI's release), and a README.md model card saying where
the weights came from. Nothing is written unless the conversion succeeds.

--to onnx writes DST/model.onnx (a decoder with past key values, for ONNX Runtime) with config and tokenizer
files; --to gguf writes DST as one .gguf file for llama.cpp, tokenizer included.

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
  python -m gptcore.conversion out/gpt2 out/gpt2-hf --to hf-gpt2
  python -m gptcore.conversion out/gpt2 out/gpt2-onnx --to onnx
  python -m gptcore.conversion out/gpt2 out/gpt2.gguf --to gguf --tokenizer gpt2"""


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
        choices=TARGETS + RUNTIMES,
        default="gptcore",
        help="gptcore (default); hf-gpt2: a plain GPT2LMHeadModel folder, no remote code; onnx: a folder for ONNX "
        "Runtime; gguf: a .gguf file for llama.cpp",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="NAME_OR_PATH",
        help="onnx/gguf: the tokenizer to include: 'gpt2' (GPT-2's, bundled) or a folder or Hub id with tokenizer "
        "files (default: SRC's own tokenizer files)",
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
    if args.tokenizer is not None and args.to not in RUNTIMES:
        print("error: --tokenizer applies to --to onnx and --to gguf only", file=sys.stderr)
        return 1
    if args.max_shard_size is not None and args.to in RUNTIMES:
        print(f"error: --max-shard-size does not apply to --to {args.to}", file=sys.stderr)
        return 1
    try:
        if args.to in RUNTIMES:
            export_for_runtime(args, hub_kwargs)
            if not args.quiet:
                print(f"wrote {args.dst} ({args.to})")
            return 0
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
    except (ValueError, OSError, ImportError) as err:  # user-caused: a message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {args.dst}: {type(model).__name__}, {model.num_parameters():,} parameters, {model.dtype}")
    return 0


def export_for_runtime(args: argparse.Namespace, hub_kwargs: dict[str, Any]) -> None:
    """--to onnx / gguf: read SRC as `convert` does, then write it in the runtime's format with its tokenizer."""
    if args.to == "gguf":
        if os.path.isdir(args.dst):
            raise ValueError(f"{args.dst} is a folder; --to gguf writes one file, e.g. {args.dst.rstrip('/')}.gguf")
        if os.path.exists(args.dst) and not args.overwrite:
            raise ValueError(f"destination {args.dst} exists; pass --overwrite to replace it")
    else:
        check_destination(args.dst, args.overwrite)
    tokenizer = load_tokenizer(args.tokenizer, args.src, hub_kwargs)
    if tokenizer is None and args.to == "gguf":
        raise ValueError(
            f"{args.src} has no tokenizer files, and llama.cpp needs the vocabulary inside the GGUF: pass "
            "--tokenizer gpt2 (GPT-2's) or --tokenizer FOLDER"
        )
    # The exporters' libraries log every step at INFO, which main() turns on for our own messages; torch's ONNX
    # registry warns that torchvision's operators are unavailable, which a language model never uses.
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "gguf"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = convert(
        args.src, None, from_format=args.from_format, dtype=args.dtype, model_config=args.model_config, **hub_kwargs
    )
    if args.to == "gguf":
        export_gguf(model, args.dst, tokenizer)
    else:
        if tokenizer is None:
            logging.getLogger(__name__).warning("%s has no tokenizer files; the ONNX folder will have none", args.src)
        with staged_folder(args.dst, args.overwrite) as folder:
            export_onnx(model, folder, tokenizer)


def load_tokenizer(spec: str | None, src: str, hub_kwargs: dict[str, Any]) -> Any:
    """`--tokenizer`: "gpt2" is the bundled GPT-2 tokenizer, anything else a folder or Hub id; None: SRC's own
    tokenizer files (OpenAI's encoder.json/vocab.bpe included), or None when it has none."""
    if spec == "gpt2":
        return gpt2_tokenizer()
    if spec is not None:
        return AutoTokenizer.from_pretrained(spec, **hub_kwargs)
    write = tokenizer_writer(src, hub_kwargs, gpt2_by_default=False)
    if write is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        write(folder)
        return AutoTokenizer.from_pretrained(folder)
