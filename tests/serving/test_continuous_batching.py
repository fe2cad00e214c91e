"""Continuous batching (`generate_batch`, what `transformers serve --continuous-batching` runs) through gptcore's
attention seam: prompts of different lengths packed into one row, keys and values in the paged cache, and every
answer token for token what `generate()` gives for the prompt alone, and what transformers' GPT-2 gives batched."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from gptcore.modeling import GPTCoreForCausalLM
from gptcore.tokenization import gpt2_tokenizer
from tests.serving.support import build_checkpoint, greedy

MAX_TOKENS = 10


def _cache_sizable_here() -> bool:
    # 5.0 sizes the paged cache from the accelerator's memory and has none to read on a CPU-only machine.
    from transformers.generation.continuous_batching import cache

    return cache.get_device_and_memory_breakdown()[1] is not None


def generate_batch(model, prompts: list[list[int]]) -> list[list[int]]:
    config = GenerationConfig(max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=50256, pad_token_id=50256)
    try:
        from transformers import ContinuousBatchingConfig
    except ImportError:  # releases before it read the cache size from the generation config
        config.num_blocks, config.max_batch_tokens = 16, 256
        outputs = model.generate_batch(prompts, generation_config=config, progress_bar=False)
    else:  # a small cache: by default it takes a share of the machine's RAM
        cb = ContinuousBatchingConfig(num_blocks=16, max_batch_tokens=256)
        outputs = model.generate_batch(
            prompts, generation_config=config, continuous_batching_config=cb, progress_bar=False
        )
    assert len(outputs) == len(prompts), "continuous batching returned no answer for some prompts (see the log)"
    by_prompt = {tuple(out.prompt_ids): out.generated_tokens for out in outputs.values()}
    return [by_prompt[tuple(p)] for p in prompts]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("cb"))


@pytest.mark.skipif(not _cache_sizable_here(), reason="this transformers release cannot size the paged cache on CPU")
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])  # eager runs as "paged|eager"
def test_generate_batch_is_generate_and_gpt2(checkpoint, attn_implementation):
    folder, _, reference = checkpoint
    model = GPTCoreForCausalLM.from_pretrained(folder, attn_implementation=attn_implementation).eval()
    tokenizer = gpt2_tokenizer()
    texts = [
        "Alice was beginning to get very tired",
        "Hello",
        "The meaning of life is",
        "Once upon a time, in a land far away,",
    ]
    prompts = [tokenizer(text).input_ids for text in texts]
    with torch.no_grad():
        batched = generate_batch(model, prompts)
        assert batched == [greedy(model, p, MAX_TOKENS) for p in prompts]
        reference.set_attn_implementation(attn_implementation)
        assert batched == generate_batch(reference, prompts)
    assert model.config._attn_implementation == attn_implementation  # restored after the paged run
