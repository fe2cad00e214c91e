"""What changes between transformers releases, met by `modeling/compat.py`, and loading as transformers users expect."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    DynamicCache,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import BaseModelOutputWithPast

from gptcore.modeling import GPTCoreForCausalLM, GPTCoreForSequenceClassification, GPTCoreModel, compat
from gptcore.modeling.input_checks import check_positions, check_token_ids
from tests.oracle import TOL, gpt2_config, gptcore_config, gptcore_twin, random_gpt2, random_gptcore, save_random_gpt2

# --- the cache argument and output field ----------------------------------------------------------------------


def test_cache_name_follows_the_installed_release():
    import inspect

    from transformers import GenerationMixin

    passes = set(inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters)
    assert compat.CACHE_ARG in passes  # the name generate() hands to forward
    assert compat.CACHE_FIELD in BaseModelOutputWithPast.__dataclass_fields__


def test_forward_takes_the_cache_under_both_names_and_returns_it_under_the_releases_field(gpt2_pair):
    ref, ours = gpt2_pair
    ids = torch.randint(0, 100, (1, 6))
    with torch.no_grad():
        full = ref(ids, use_cache=False).logits
        for name in ("cache", "past_key_values"):
            first = ours(ids[:, :4], use_cache=True)
            cache = getattr(first, compat.CACHE_FIELD)
            assert cache.get_seq_length() == 4
            if name == "past_key_values" and compat.CACHE_ARG == "cache":  # renamed in this release: warned, as there
                with pytest.warns(FutureWarning, match=f"`{name}` is deprecated"):
                    rest = ours(ids[:, 4:], use_cache=True, **{name: cache})
            else:
                rest = ours(ids[:, 4:], use_cache=True, **{name: cache})
            assert getattr(rest, compat.CACHE_FIELD).get_seq_length() == 6, name
            torch.testing.assert_close(rest.logits, full[:, 4:], atol=TOL, rtol=0)
        with pytest.raises(ValueError, match="pass the KV cache once"):
            ours(ids, cache=DynamicCache(config=ours.config), past_key_values=DynamicCache(config=ours.config))


def test_trainer_predictions_leave_the_cache_out(tmp_path):
    """Trainer.predict drops the output keys named by keys_to_ignore_at_inference; with the release's cache name
    missing from it, predictions would be a tuple of (logits, cache tensors)."""
    model = random_gptcore()
    vocab = model.config.vocab_size
    data = [{"input_ids": torch.randint(1, vocab, (8,)), "labels": torch.randint(1, vocab, (8,))} for _ in range(3)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=3, report_to=[], use_cpu=True)
    args.use_cache = True  # releases with this argument (default False) set config.use_cache from it; others keep True
    predictions = Trainer(model=model, args=args).predict(data).predictions
    assert not isinstance(predictions, tuple)
    assert predictions.shape == (3, 8, vocab)


# --- gradient checkpointing through transformers' layer class --------------------------------------------------


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_recomputes_blocks_and_keeps_gradients(use_reentrant):
    model = random_gptcore().train()  # dropout 0: the recomputation sees the same computation
    ids = torch.randint(1, model.config.vocab_size, (2, 10))

    def grads_and_block_calls():
        calls = []
        # hooks on a block's attention: the recomputation may call the block's forward without its hooks
        hooks = [block.attn.register_forward_hook(lambda *a: calls.append(1)) for block in model.transformer.h]
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        for hook in hooks:
            hook.remove()
        return {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)

    plain, plain_calls = grads_and_block_calls()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.is_gradient_checkpointing and all(block.gradient_checkpointing for block in model.transformer.h)
    checkpointed, checkpointed_calls = grads_and_block_calls()
    assert plain_calls == 2 and checkpointed_calls == 4  # each block run again in the backward pass
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=0, msg=name)
    model.gradient_checkpointing_disable()
    assert not any(block.gradient_checkpointing for block in model.transformer.h)
    assert grads_and_block_calls()[1] == 2


# --- packed, padding-free batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_row_longer_than_the_context_matches_gpt2(tmp_path, attn_implementation):
    """Documents packed into one row, positions restarting at each: the row may be longer than n_positions."""
    save_random_gpt2(tmp_path, gpt2_config(n_positions=16))
    # the reference runs SDPA: GPT-2's eager attention in transformers 5.0 cannot take rows longer than n_positions
    ref = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    ours = gptcore_twin(tmp_path, attn_implementation=attn_implementation)
    lengths = [12, 9, 14]  # 35 tokens in a row, n_positions 16
    ids = torch.randint(1, 100, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():  # without a cache, as in training: transformers then masks each document off the others
        packed = ours(ids, position_ids=positions, use_cache=False).logits
        torch.testing.assert_close(packed, ref(ids, position_ids=positions, use_cache=False).logits, atol=TOL, rtol=0)
        start = 0
        for n in lengths:  # each document as if alone
            torch.testing.assert_close(
                packed[:, start : start + n], ref(ids[:, start : start + n]).logits, atol=TOL, rtol=0
            )
            start += n


# --- input checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.int8])
def test_small_integer_token_ids_are_refused_clearly(dtype):
    model = random_gptcore()
    with pytest.raises(ValueError, match="int64 or int32.*convert it with .long"):
        model(torch.tensor([[1, 2, 3]], dtype=dtype))


def test_value_checks_never_read_a_device_tensor_back():
    """On an accelerator a read-back (int(t.max())) stalls every decoding step. Tensors off the CPU are checked on
    their device; a meta tensor, which holds no values, shows that no read-back is attempted."""
    check_token_ids(torch.zeros(2, 5, dtype=torch.long, device="meta"), 10)
    check_positions(torch.zeros(1, 5, dtype=torch.long, device="meta"), 16)
    with pytest.raises(ValueError, match="token id 10"):  # the same checks on CPU still name the value
        check_token_ids(torch.tensor([[1, 10]]), 10)


# --- the logits returned with a loss ---------------------------------------------------------------------------


def test_logits_with_labels_are_the_usual_tensor(gpt2_pair):
    ref, ours = gpt2_pair
    ids = torch.randint(0, 100, (2, 9))
    out = ours(ids, labels=ids)
    assert out.logits.is_contiguous() and out.logits.stride() == ours(ids).logits.stride()
    flat = out.logits.view(-1, 101)  # what users' own loss code does; a transposed view would raise here
    torch.testing.assert_close(flat, ref(ids).logits.view(-1, 101), atol=TOL, rtol=0)
    torch.testing.assert_close(out.loss, ref(ids, labels=ids).loss, atol=TOL, rtol=0)


# --- loading -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
def test_gpt2_folder_loads_with_dtype_auto(tmp_path, key, stored):
    ref = save_random_gpt2(tmp_path, gpt2_config())
    if stored != torch.float32:
        ref.to(stored).save_pretrained(tmp_path)
    ours = GPTCoreForCausalLM.from_pretrained(tmp_path, **{key: "auto"})
    assert ours.dtype == stored
    ids = torch.randint(0, 100, (1, 6))
    atol = TOL if stored == torch.float32 else 2e-2  # bf16 rounding differs between the two kernels' orders
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits.float(), ref.to(stored)(ids).logits.float(), atol=atol, rtol=0)


def test_untied_head_missing_from_its_own_folder_is_refused(tmp_path):
    model = random_gptcore(tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors \['lm_head.weight'\]"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)
    # a classifier built from that folder is a new head on a language model: allowed
    GPTCoreForSequenceClassification.from_pretrained(tmp_path, num_labels=3)


def test_untied_gpt2_head_missing_is_refused(tmp_path):
    ref = save_random_gpt2(tmp_path, gpt2_config(tie_word_embeddings=False))
    state = {k: v.contiguous() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lm_head.weight"):
        GPTCoreForCausalLM.from_pretrained(tmp_path)


def test_gpt2_import_warns_on_a_differing_tied_head_and_checks_layers_on_both_paths(tmp_path, caplog):
    """`from_pretrained` and `python -m gptcore.conversion` read GPT-2 folders through one function."""
    from gptcore.conversion import convert

    ref = save_random_gpt2(tmp_path / "src", gpt2_config())
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1  # stored head that is not the tied one
    save_file(state, tmp_path / "src" / "model.safetensors", metadata={"format": "pt"})
    for load in (
        lambda: GPTCoreForCausalLM.from_pretrained(tmp_path / "src"),
        lambda: convert(tmp_path / "src", tmp_path / "out"),
    ):
        caplog.clear()
        with caplog.at_level("WARNING"):
            load()
        assert "lm_head.weight differs from wte" in caplog.text
    extra = dict(state, **{k.replace(".h.1.", ".h.2."): v.clone() for k, v in state.items() if ".h.1." in k})
    save_file(extra, tmp_path / "src" / "model.safetensors", metadata={"format": "pt"})
    for load in (
        lambda: GPTCoreForCausalLM.from_pretrained(tmp_path / "src"),
        lambda: convert(tmp_path / "src", tmp_path / "out2"),
    ):
        with pytest.raises(ValueError, match=r"n_layer=2 but the weights hold layers 0\.\.2"):
            load()


def test_gpt2_sequence_classification_folder_loads_and_matches(tmp_path):
    ref = random_gpt2(model_class=GPT2ForSequenceClassification, num_labels=3, pad_token_id=0)
    ref.save_pretrained(tmp_path)
    ours = GPTCoreForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 100, (3, 7))
    ids[0, 5:] = 0  # right padding on one row
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=TOL, rtol=0)


def test_mismatched_shapes_raise_runtime_error_unless_ignored(tmp_path, caplog):
    """transformers' contract (`test_load_with_mismatched_shapes`): RuntimeError, or re-initialisation on request."""
    random_gptcore(model_class=GPTCoreForSequenceClassification, pad_token_id=0).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="score.weight"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=42)
    with pytest.raises(RuntimeError, match="wte.weight"):
        AutoModel.from_pretrained(tmp_path, config=gptcore_config(vocab_size=10))
    with caplog.at_level("WARNING"):
        model = AutoModelForSequenceClassification.from_pretrained(
            tmp_path, num_labels=42, ignore_mismatched_sizes=True
        )
    assert model.score.weight.shape == (42, model.config.n_embd)
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 42)


def test_output_loading_info_reports_instead_of_raising(tmp_path):
    """With output_loading_info=True the caller gets transformers' report (every missing tensor) and decides."""
    random_gptcore(model_class=GPTCoreModel).save_pretrained(tmp_path)
    save_file({"tensor": torch.tensor([1, 2])}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing tensors"):
        GPTCoreModel.from_pretrained(tmp_path)
    model, info = GPTCoreModel.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == set(model.state_dict())
    assert set(info["unexpected_keys"]) == {"tensor"}
