"""Weight converters: every public GPT-2 checkpoint layout in, gptcore (or plain transformers GPT-2) out.

    from gptcore.conversion import convert, export_hf_gpt2
    model = convert("models/124M", "out/gpt2")            # OpenAI's release folder -> gptcore folder
    export_hf_gpt2(model, "out/gpt2-hf")                   # -> GPT2LMHeadModel folder, no remote code

Command line: `python -m gptcore.conversion SRC DST [--from FORMAT] [--to gptcore|hf-gpt2] ...`
(`--help` lists the formats).
"""

from .convert import DTYPES, TARGETS, build_model, convert
from .export import export_hf_gpt2, to_hf_gpt2
from .formats import FORMATS, detect_format

__all__ = ["DTYPES", "FORMATS", "TARGETS", "build_model", "convert", "detect_format", "export_hf_gpt2", "to_hf_gpt2"]
