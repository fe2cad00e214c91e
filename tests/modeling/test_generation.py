"""generate(), KV caches and padding behave exactly like transformers' GPT-2.

Every test holds gptcore (`GPTCoreForCausalLM`) against transformers' own `GPT2LMHeadModel` with identical
weights (the `gpt2_pair` fixture): the reference is transformers, never gptcore itself. Only public API is
used, so the tests run unchanged on releases that call the cache `past_key_values` (<= 5.23) and `cache`
(>= 5.24): see `returned_cache` and `CACHE_KWARG`.
"""

import inspect
import threading

import pytest
import torch
from transformers import DynamicCache, GPT2LMHeadModel, StaticCache, TextIteratorStreamer, TextStreamer, pipeline

from tests.oracle import GPT2_VOCAB_SIZE, TOL, gpt2_and_twin

GREEDY = dict(do_sample=False, pad_token_id=0)

# The name under which this transformers release passes the cache to a model's forward.
CACHE_KWARG = "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


def returned_cache(out):
    """The cache of a model or generate() output, under whichever name this transformers release uses."""
    for name in ("cache", "past_key_values"):
        cache = getattr(out, name, None)
        if cache is not None:
            return cache
    raise AssertionError(f"{type(out).__name__} returned no cache (neither .cache nor .past_key_values)")


def assert_same_tokens(ours, ref, what=""):
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    differ = (ours != ref).nonzero().tolist()
    assert not differ, (
        f"{what}: tokens differ from transformers' GPT-2 at (row, position) {differ[:8]}\nours {ours}\nref  {ref}"
    )


# --- search strategies ----------------------------------------------------------------------------------


def test_greedy_generate_token_identical(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (3, 7))
    kwargs = dict(max_new_tokens=20, **GREEDY)
    assert_same_tokens(ours.generate(prompt, **kwargs), ref.generate(prompt, **kwargs), "greedy")


def test_beam_search_sequences_and_scores(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 6))
    kwargs = dict(
        max_new_tokens=10,
        num_beams=3,
        num_return_sequences=2,
        output_scores=True,
        return_dict_in_generate=True,
        **GREEDY,
    )
    got, want = ours.generate(prompt, **kwargs), ref.generate(prompt, **kwargs)
    assert_same_tokens(got.sequences, want.sequences, "beam search")
    torch.testing.assert_close(got.sequences_scores, want.sequences_scores, atol=TOL, rtol=0)


@pytest.fixture
def sharp_pair(tmp_path):
    """As `gpt2_pair`, initialised 10x wider (std 0.2): the 0.02 default gives nearly flat next-token
    distributions (logit std 0.14), whose samples barely depend on the context, so a model that ignored its
    cache would still sample the reference's tokens."""
    return gpt2_and_twin(tmp_path / "gpt2", initializer_range=0.2)


@pytest.mark.parametrize(
    "sampling",
    [dict(top_k=20), dict(top_k=0, top_p=0.9), dict(top_k=0, temperature=0.7)],
    ids=["top_k", "top_p", "temperature"],
)
def test_sampling_with_seed_matches_reference(sharp_pair, sampling):
    ref, ours = sharp_pair
    prompt = torch.randint(0, 100, (2, 5))
    kwargs = dict(max_new_tokens=15, do_sample=True, pad_token_id=0, **sampling)
    torch.manual_seed(123)
    got = ours.generate(prompt, **kwargs)
    torch.manual_seed(123)
    want = ref.generate(prompt, **kwargs)
    assert_same_tokens(got, want, f"sampling {sampling}")


def test_repetition_penalty_greedy(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 6))
    kwargs = dict(max_new_tokens=15, repetition_penalty=1.3, **GREEDY)
    assert_same_tokens(ours.generate(prompt, **kwargs), ref.generate(prompt, **kwargs), "repetition_penalty=1.3")


# --- padding, inputs_embeds -----------------------------------------------------------------------------


def test_left_padded_batch_matches_reference_and_each_row_alone(gpt2_pair):
    ref, ours = gpt2_pair
    pad = 0
    rows = [torch.randint(1, 100, (n,)) for n in (9, 4, 6)]
    width = max(len(r) for r in rows)
    ids = torch.full((3, width), pad)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = r
        mask[i, width - len(r) :] = 1
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=pad)
    batched = ours.generate(ids, attention_mask=mask, **kwargs)
    assert_same_tokens(batched, ref.generate(ids, attention_mask=mask, **kwargs), "left-padded batch")
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left-padded rows
    with torch.no_grad():
        batched_logits = ours(ids, attention_mask=mask, position_ids=positions).logits
        ref_batched_logits = ref(ids, attention_mask=mask, position_ids=positions).logits
    for i, r in enumerate(rows):
        new = batched[i : i + 1, width:]
        assert_same_tokens(new, ref.generate(r[None], **kwargs)[:, len(r) :], f"row {i} batched vs reference alone")
        real = slice(width - len(r), None)
        with torch.no_grad():
            ref_alone_logits = ref(r[None]).logits[0]
        torch.testing.assert_close(batched_logits[i, real], ref_alone_logits, atol=TOL, rtol=0)
        torch.testing.assert_close(batched_logits[i, real], ref_batched_logits[i, real], atol=TOL, rtol=0)


def test_generate_from_inputs_embeds(gpt2_pair):
    ref, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 6))
    with torch.no_grad():
        embeds = ref.transformer.wte(ids)
    kwargs = dict(max_new_tokens=10, **GREEDY)
    got = ours.generate(inputs_embeds=embeds, **kwargs)  # only the new tokens come back
    assert_same_tokens(got, ref.generate(inputs_embeds=embeds, **kwargs), "inputs_embeds")
    assert_same_tokens(got, ref.generate(ids, **kwargs)[:, ids.size(1) :], "inputs_embeds vs reference from ids")


# --- caches ---------------------------------------------------------------------------------------------


def test_static_cache_generation_matches_reference(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 6))
    kwargs = dict(max_new_tokens=12, **GREEDY)
    dynamic_ref = ref.generate(prompt, **kwargs)
    static = ours.generate(prompt, cache_implementation="static", **kwargs)
    assert_same_tokens(static, dynamic_ref, "static cache vs reference (dynamic cache)")
    assert_same_tokens(
        static, ref.generate(prompt, cache_implementation="static", **kwargs), "static vs reference static"
    )
    explicit = ours.generate(prompt, past_key_values=StaticCache(config=ours.config, max_cache_len=32), **kwargs)
    assert_same_tokens(explicit, dynamic_ref, "explicit StaticCache vs reference (dynamic cache)")
    ref_explicit = ref.generate(prompt, past_key_values=StaticCache(config=ref.config, max_cache_len=32), **kwargs)
    assert_same_tokens(explicit, ref_explicit, "explicit StaticCache vs reference explicit StaticCache")


def test_continue_from_returned_cache(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 6))
    first_kwargs = dict(max_new_tokens=5, return_dict_in_generate=True, **GREEDY)
    results = {}
    for name, model in (("ours", ours), ("ref", ref)):
        first = model.generate(prompt, **first_kwargs)
        cache = returned_cache(first)
        cached = cache.get_seq_length()  # the prompt and all new tokens but the last, which was never fed back
        continued = model.generate(first.sequences, past_key_values=cache, max_new_tokens=7, **GREEDY)
        results[name] = (first.sequences, cached, continued)
    (ours_first, ours_cached, ours_full), (ref_first, ref_cached, ref_full) = results["ours"], results["ref"]
    assert_same_tokens(ours_first, ref_first, "first 5 tokens")
    assert ours_cached == ref_cached == prompt.size(1) + 4, (
        f"returned caches hold {ours_cached} tokens, reference {ref_cached}"
    )
    assert_same_tokens(ours_full, ref_full, "continued from the returned cache")
    uncached = ref.generate(prompt, max_new_tokens=12, use_cache=False, **GREEDY)
    assert_same_tokens(ours_full, uncached, "continued from the cache vs one uncached reference run")


def test_scores_and_logits_match_reference(gpt2_pair):
    ref, ours = gpt2_pair
    prompt = torch.randint(0, 100, (2, 5))
    kwargs = dict(
        max_new_tokens=8,
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
        repetition_penalty=1.2,
        **GREEDY,
    )
    got, want = ours.generate(prompt, **kwargs), ref.generate(prompt, **kwargs)
    assert_same_tokens(got.sequences, want.sequences, "sequences")
    for field in ("scores", "logits"):
        ours_steps, ref_steps = getattr(got, field), getattr(want, field)
        assert len(ours_steps) == len(ref_steps) == 8, f"{field}: {len(ours_steps)} steps, reference {len(ref_steps)}"
        for step, (a, b) in enumerate(zip(ours_steps, ref_steps)):
            torch.testing.assert_close(a, b, atol=TOL, rtol=0, msg=lambda m, f=field, s=step: f"{f} of step {s}: {m}")


def test_cached_step_by_step_equals_reference_full_forward(gpt2_pair):
    ref, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        full = ref(ids, use_cache=False).logits
        cache = DynamicCache(config=ours.config)
        out = ours(ids[:, :5], use_cache=True, **{CACHE_KWARG: cache})  # a prefill chunk, then one token at a time
        steps = [out.logits]
        for t in range(5, 12):
            out = ours(ids[:, t : t + 1], use_cache=True, **{CACHE_KWARG: returned_cache(out)})
            steps.append(out.logits)
    assert cache.get_seq_length() == 12, (
        f"the cache passed as {CACHE_KWARG}= holds {cache.get_seq_length()} tokens, not 12"
    )
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=TOL, rtol=0)


def test_logits_to_keep(gpt2_pair):
    ref, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        full = ref(ids).logits
        ours_full = ours(ids).logits
        last = ours(ids, logits_to_keep=1).logits
        picked = ours(ids, logits_to_keep=torch.tensor([2, 5])).logits
    assert last.shape == (2, 1, 101)
    torch.testing.assert_close(ours_full, full, atol=TOL, rtol=0)
    torch.testing.assert_close(last, full[:, -1:], atol=TOL, rtol=0)  # matmul blocking differs by shape
    torch.testing.assert_close(picked, full[:, [2, 5]], atol=TOL, rtol=0)


# --- streamers and pipeline, with the GPT-2 tokenizer ----------------------------------------------------


@pytest.fixture
def real_vocab_pair(tmp_path):
    """(GPT2LMHeadModel, GPTCoreForCausalLM, tokenizer): tiny models (n_embd 48) over GPT-2's 50257 tokens.
    Initialised with std 0.1: at the default 0.02 greedy decoding repeats the last prompt token whatever
    the context, which would hide a broken cache."""
    from gptcore.tokenization import gpt2_tokenizer

    ref, ours = gpt2_and_twin(tmp_path / "gpt2", vocab_size=GPT2_VOCAB_SIZE, initializer_range=0.1)
    return ref, ours, gpt2_tokenizer()


PROMPT = "The quick brown fox jumps over the lazy dog. Then"


def reference_new_text(ref, tokenizer, ids, **kwargs):
    new = ref.generate(ids, **kwargs)[0, ids.size(1) :]
    assert new.numel() > 0
    return tokenizer.decode(new)


def test_text_streamer_prints_reference_text(real_vocab_pair, capsys):
    ref, ours, tokenizer = real_vocab_pair
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    expected = reference_new_text(ref, tokenizer, ids, **kwargs)
    capsys.readouterr()
    ours.generate(ids, streamer=TextStreamer(tokenizer, skip_prompt=True), **kwargs)
    assert capsys.readouterr().out == expected + "\n"


def test_text_iterator_streamer_yields_reference_text(real_vocab_pair):
    ref, ours, tokenizer = real_vocab_pair
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    expected = reference_new_text(ref, tokenizer, ids, **kwargs)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=120)  # a failing generate() ends in Empty
    thread = threading.Thread(target=ours.generate, args=(ids,), kwargs=dict(streamer=streamer, **kwargs))
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed == expected


def test_pipeline_text_generation_matches_reference(real_vocab_pair):
    ref, ours, tokenizer = real_vocab_pair
    kwargs = dict(max_new_tokens=10, do_sample=False)
    got = pipeline("text-generation", model=ours, tokenizer=tokenizer)(PROMPT, **kwargs)[0]["generated_text"]
    want = pipeline("text-generation", model=ref, tokenizer=tokenizer)(PROMPT, **kwargs)[0]["generated_text"]
    assert want.startswith(PROMPT) and len(want) > len(PROMPT)
    assert got == want


# --- the torch-only core --------------------------------------------------------------------------------


def core_twin_of(ref):
    """gptcore's torch-only `GPT`, holding `ref`'s (a GPT2LMHeadModel's) weights."""
    from gptcore.modeling.core import GPT, GPTConfig
    from gptcore.modeling.gpt2_checkpoint import gpt2_state_to_gptcore

    c = ref.config
    config = GPTConfig(
        vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head
    )
    model = GPT(config).eval()
    missing, unexpected = model.load_state_dict(gpt2_state_to_gptcore(ref.state_dict(), config, "ref"), strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # the head is tied to wte
    return model


def test_core_runs_without_transformers_and_matches_gpt2(gpt2_pair):
    """The plain-PyTorch path (core GPT, its own KVCache and generate loop) against GPT2LMHeadModel."""
    from gptcore.modeling.core import KVCache

    ref, _ = gpt2_pair
    model = core_twin_of(ref)
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        expected = ref(ids)
        full, _ = model(ids)
        # targets are the next tokens (shifted by the caller), as GPT-2's `labels` are shifted inside
        _, loss = model(ids[:, :-1], targets=ids[:, 1:])
        cache = KVCache()
        parts = [model(ids[:, :4], cache=cache)[0]]
        parts += [model(ids[:, t : t + 1], cache=cache)[0] for t in range(4, 10)]
    torch.testing.assert_close(full, expected.logits, atol=TOL, rtol=0)
    torch.testing.assert_close(loss, ref(ids, labels=ids).loss.detach(), atol=TOL, rtol=0)
    torch.testing.assert_close(torch.cat(parts, dim=1), expected.logits, atol=TOL, rtol=0)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_core_generate_matches_gpt2_with_one_forward_per_new_token(gpt2_pair):
    ref, _ = gpt2_pair
    model = core_twin_of(ref)
    prompt = torch.randint(0, 100, (2, 3))
    calls = []
    model.transformer.register_forward_hook(lambda module, args, out: calls.append(out.shape[1]))
    greedy = model.generate(prompt, max_new_tokens=6, temperature=0)
    expected = ref.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(greedy, expected)
    assert calls == [3, 1, 1, 1, 1, 1]  # the prompt once, then each new token but the last
