"""examples/pretrain.py's own functions, in this process (fast): its arguments, the model it builds from them, and
its optimizer's parameter groups."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM, preset_config
from gptcore.tokenization import gpt2_tokenizer
from gptcore.training.arguments import ModelArguments
from tests.processes import EXAMPLES

# The script's functions, without running its main.
PRETRAIN = runpy.run_path(str(EXAMPLES / "pretrain.py"))
parse_args, build_model, parameter_groups = (
    PRETRAIN["parse_args"],
    PRETRAIN["build_model"],
    PRETRAIN["parameter_groups"],
)


def test_no_weight_decay_on_biases_layernorms_and_embeddings() -> None:
    model = GPTCoreForCausalLM(GPTCoreConfig(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    names = {id(param): name for name, param in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(param)] for param in decay["params"]) == sorted(
        name for name in names.values() if name.endswith("weight") and (".c_" in name)
    )
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: decayed as an embedding, listed once
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch_size", "6", "--gradient_accumulation_steps", "4"], "multiple of --gradient_accumulation_steps"),
        (["--block_size", "1"], "--block_size must be >= 2"),
        (["--model_name_or_path", "x", "--config", "gpt2"], "brings its own config"),
        (["--overwrite_output_dir", "--resume_from_checkpoint", "latest"], "pass one of them"),
    ],
)
def test_bad_arguments_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_model_options_are_the_shared_model_arguments() -> None:
    model_args, args = parse_args(["--config_overrides", "n_layer=1", "--block_size", "64"])
    assert model_args == ModelArguments(config="cpu-small", config_overrides="n_layer=1")  # the default size, named
    assert args.block_size == 64 and not hasattr(args, "config")  # one place for each option
    model_args, _ = parse_args(["--model_name_or_path", "runs/pretrain/final"])
    assert model_args.config is None  # a checkpoint brings its own


def test_random_weights_take_pretrainings_choices_under_the_overrides() -> None:
    tokenizer = gpt2_tokenizer()
    model_args, args = parse_args(["--config", "gpt2", "--config_overrides", "n_layer=1,attn_pdrop=0.2"])
    config = build_model(model_args, args, tokenizer).config
    gpt2 = preset_config("gpt2")
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (
        1,
        gpt2.n_embd,
        gpt2.n_head,
        gpt2.n_positions,
    )
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.2)  # no dropout unless overridden
    assert config.vocab_size == len(tokenizer) and config.bos_token_id == config.eos_token_id == tokenizer.eos_token_id


def test_a_config_file_is_the_base_the_overrides_change(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    GPTCoreConfig(n_layer=3, n_head=2, n_embd=32, n_positions=64).to_json_file(path)
    model_args, args = parse_args(["--config", str(path), "--config_overrides", "n_layer=1", "--block_size", "64"])
    config = build_model(model_args, args, gpt2_tokenizer()).config
    assert (config.n_layer, config.n_head, config.n_embd, config.n_positions) == (1, 2, 32, 64)
    with pytest.raises(ValueError, match="--block_size 128 exceeds the model's n_positions 64"):
        build_model(*parse_args(["--config", str(path)]), gpt2_tokenizer())
