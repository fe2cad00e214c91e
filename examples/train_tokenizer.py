"""Train a GPT-2-style byte-level BPE vocabulary on text files and save it for `AutoTokenizer`.

    python examples/train_tokenizer.py --output-dir out/tokenizer                  # the bundled corpus
    python examples/train_tokenizer.py my_data/*.txt --vocab-size 16000 --output-dir out/tok16k

The saved folder loads anywhere with `transformers.AutoTokenizer.from_pretrained(folder)`.
"""

import argparse
import sys
from pathlib import Path

from gptcore.tokenization import END_OF_TEXT, gpt2_tokenizer, train_tokenizer

DEFAULT_CORPUS = sorted((Path(__file__).parent / "data" / "corpus").glob("*.txt"))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="UTF-8 text files (default: examples/data/corpus/*.txt)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where save_pretrained writes the tokenizer")
    parser.add_argument("--vocab-size", type=int, default=8000, help="tokens in the vocabulary, specials included")
    parser.add_argument("--special-tokens", nargs="+", default=[END_OF_TEXT], help="the first one is bos/eos")
    parser.add_argument("--min-frequency", type=int, default=0, help="do not merge pairs seen fewer times")
    parser.add_argument("--model-max-length", type=int, default=1024, help="context length recorded in the config")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    files = args.files or DEFAULT_CORPUS
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"error: not a file: {', '.join(missing)}")

    total_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"training a {args.vocab_size}-token byte-level BPE on {len(files)} file(s), {total_mb:.1f} MB")
    try:
        tokenizer = train_tokenizer(
            files,
            vocab_size=args.vocab_size,
            special_tokens=args.special_tokens,
            min_frequency=args.min_frequency,
            model_max_length=args.model_max_length,
            show_progress=not args.no_progress,  # tokenizers' own bars: reading, counting pairs, merging
        )
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    tokenizer.save_pretrained(args.output_dir)

    sample = files[0].read_bytes().decode("utf-8", errors="replace")[:100_000]
    n_bytes = len(sample.encode("utf-8"))
    # verbose=False: the sample is longer than model_max_length on purpose, no need to warn.
    ours = len(tokenizer.encode(sample, verbose=False))
    gpt2 = len(gpt2_tokenizer().encode(sample, verbose=False))
    print(f"vocabulary: {len(tokenizer)} tokens ({len(tokenizer) - len(args.special_tokens) - 256} merges)")
    print(f"on {files[0].name}: {n_bytes / ours:.2f} bytes/token (GPT-2's vocabulary: {n_bytes / gpt2:.2f})")
    print(f"saved to {args.output_dir}; load with AutoTokenizer.from_pretrained({str(args.output_dir)!r})")


if __name__ == "__main__":
    main()
