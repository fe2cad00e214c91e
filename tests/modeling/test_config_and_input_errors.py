"""Bad configs and bad inputs raise ValueError with a message that says what was wrong."""

import pytest
import torch

from gptcore.modeling import GPTCoreConfig
from tests.oracle import TINY_GPT2_CONFIGS, TOL, gpt2_and_twin, random_gptcore

SHALLOW = TINY_GPT2_CONFIGS["shallow"]  # the messages below name its sizes: vocabulary 50, n_positions 16, n_embd 16


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(n_embd=50, n_head=4), "divisible by n_head"),
        (dict(n_layer=0), "n_layer must be >= 1"),
        (dict(n_head=-2), "n_head must be >= 1"),
        (dict(vocab_size=0), "vocab_size must be >= 1"),
        (dict(n_positions=0), "n_positions must be >= 1"),
        (dict(n_embd=64.0), "n_embd must be an integer"),
        (dict(n_layer="2"), "n_layer must be an integer"),
        (dict(n_layer=True), "n_layer must be an integer"),
        (dict(n_inner=0), "n_inner must be a positive integer"),
        (dict(resid_pdrop=1.5), "resid_pdrop is a dropout probability"),
        (dict(attn_pdrop=-0.1), "attn_pdrop is a dropout probability"),
        (dict(layer_norm_epsilon=0), "layer_norm_epsilon must be > 0"),
        (dict(activation_function="swish-ish"), "activation_function='swish-ish' is not supported"),
    ],
)
def test_bad_config_values_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        GPTCoreConfig(**fields)


@pytest.fixture(scope="module")
def model():
    return random_gptcore(**SHALLOW)


def test_input_longer_than_n_positions(model):
    with pytest.raises(ValueError, match="exceeds n_positions=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_cache_plus_input_longer_than_n_positions(model):
    out = model(torch.zeros(1, 10, dtype=torch.long), use_cache=True)
    with pytest.raises(ValueError, match=r"sequence length 20 \(cached \+ new tokens\) exceeds n_positions=16"):
        model(torch.zeros(1, 10, dtype=torch.long), past_key_values=out.past_key_values)


def test_generate_past_n_positions(model):
    with pytest.raises(ValueError, match="exceeds n_positions"):
        model.generate(torch.zeros(1, 10, dtype=torch.long), max_new_tokens=10, do_sample=False, pad_token_id=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_ids=torch.tensor([[1, 50]])), "token id 50, outside the vocabulary"),
        (dict(input_ids=torch.tensor([[-1, 3]])), "token id -1, outside the vocabulary"),
        (dict(input_ids=torch.tensor([[1.0, 2.0]])), "must be an integer tensor"),
        (dict(input_ids=torch.tensor([1, 2, 3])), r"shape \(batch, seq_len\)"),
        (dict(input_ids=torch.zeros(0, 4, dtype=torch.long)), "is empty"),
        (dict(input_ids=torch.tensor([[1, 2]]), position_ids=torch.tensor([[0, 16]])), r"position_ids contains 16"),
        (dict(input_ids=torch.tensor([[1, 2]]), attention_mask=torch.ones(2, 2)), r"attention_mask has shape \(2, 2\)"),
        (dict(inputs_embeds=torch.zeros(1, 3, 7)), r"inputs_embeds must have shape \(batch, seq_len, 16\)"),
        (dict(), "exactly one of input_ids or inputs_embeds"),
    ],
)
def test_bad_inputs_are_refused(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_an_all_padding_row_leaves_the_other_rows_alone(tmp_path, attn_implementation):
    """A batch row with no real token (attention_mask all 0) is not an error for a causal LM, as in
    transformers: it gives finite logits, and the real rows are GPT-2's for those rows alone."""
    ref, model = gpt2_and_twin(tmp_path, attn_implementation=attn_implementation, **SHALLOW)
    ids = torch.randint(0, SHALLOW["vocab_size"], (2, 6))
    mask = torch.tensor([[1] * 6, [0] * 6])
    with torch.no_grad():
        batch = model(ids, attention_mask=mask).logits
        alone = ref(ids[:1]).logits
    assert torch.isfinite(batch).all()
    torch.testing.assert_close(batch[:1], alone, atol=TOL, rtol=0)
