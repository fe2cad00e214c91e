"""Weight converters: every public GPT-2 checkpoint layout in, gptcore (or plain transformers GPT-2) out.

    from gptcore.conversion import convert, export_gguf, export_hf_gpt2, export_onnx
    model = convert("models/124M", "out/gpt2")            # OpenAI's release folder -> gptcore folder
    export_hf_gpt2(model, "out/gpt2-hf")                   # -> GPT2LMHeadModel folder, no remote code
    export_onnx(model, "out/gpt2-onnx", gpt2_tokenizer())  # -> ONNX Runtime (pip install 'gptcore[deploy]')
    export_gguf(model, "out/gpt2.gguf", gpt2_tokenizer())  # -> llama.cpp, tokenizer inside

Command line: `python -m gptcore.conversion SRC DST [--from FORMAT] [--to gptcore|hf-gpt2|onnx|gguf] ...`
(`--help` lists the formats).
"""

from .convert import DTYPES, TARGETS, build_model, convert
from .export import export_hf_gpt2, to_hf_gpt2
from .formats import FORMATS, detect_format
from .gguf_export import export_gguf
from .onnx_export import export_onnx

__all__ = [
    "DTYPES",
    "FORMATS",
    "TARGETS",
    "build_model",
    "convert",
    "detect_format",
    "export_gguf",
    "export_hf_gpt2",
    "export_onnx",
    "to_hf_gpt2",
]
