"""The one `tokenizers` pipeline and `transformers` wrapper shared by GPT-2's and newly trained vocabularies."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import GPT2Tokenizer

from .prompts import ALPACA_CHAT_TEMPLATE


def byte_level_pipeline(model: BPE, special_tokens: Sequence[str] = ()) -> Tokenizer:
    """Wrap a BPE model in GPT-2's byte-level pre-tokenizer/decoder; `special_tokens` are matched in raw text."""
    backend = Tokenizer(model)
    # add_prefix_space=False: GPT-2 encodes "Hello" and " Hello" differently and so must we.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Only offsets are affected; trim_offsets=False keeps the leading-space byte in each token's span, as GPT-2 does.
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    return backend


def as_transformers_tokenizer(
    backend: Tokenizer, end_of_text: str, model_max_length: int | None = None
) -> GPT2Tokenizer:
    """A transformers fast tokenizer over `backend`, with `end_of_text` as bos/eos/unk and left padding.

    The class is transformers' own `GPT2Tokenizer` (tokenizers-backed in v5), so `save_pretrained` output
    names `"tokenizer_class": "GPT2Tokenizer"` and loads with `AutoTokenizer` where gptcore is not installed.
    """
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return GPT2Tokenizer(
        tokenizer_object=backend,
        bos_token=end_of_text,
        eos_token=end_of_text,
        unk_token=end_of_text,
        # Decoder-only generation continues from the last position, so pads go on the left.
        padding_side="left",
        chat_template=ALPACA_CHAT_TEMPLATE,
        **extra,
    )
