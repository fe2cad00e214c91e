"""Unit tests of examples/pretrain.py, its checkpoints (gptcore.training.pretraining) and its data (in-process,
fast)."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM, preset_config
from gptcore.tokenization import gpt2_tokenizer
from gptcore.training.arguments import ModelArguments
from gptcore.training.lm_data import (
    document_position_ids,
    load_text_datasets,
    pack_into_blocks,
    split_validation,
    tokenize_documents,
    unigram_baseline,
)
from gptcore.training.pretraining.checkpoints import (
    COMPLETE_MARKER,
    TrainingProgress,
    prune_checkpoints,
    resolve_checkpoint,
)
from tests.processes import EXAMPLES

# The script's functions, without running its main.
PRETRAIN = runpy.run_path(str(EXAMPLES / "pretrain.py"))
parse_args, build_model, parameter_groups = (
    PRETRAIN["parse_args"],
    PRETRAIN["build_model"],
    PRETRAIN["parameter_groups"],
)

EOS = 63


def test_positions_restart_at_every_eos() -> None:
    ids = torch.tensor([[5, 6, EOS, 7, 8, EOS, EOS, 9], [EOS, 1, 2, 3, 4, 5, 6, 7]])
    expected = torch.tensor([[0, 1, 0, 1, 2, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert torch.equal(document_position_ids(ids, EOS), expected)


def test_packed_documents_do_not_attend_to_each_other() -> None:
    torch.manual_seed(0)
    config = GPTCoreConfig(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=EOS, eos_token_id=EOS
    )
    model = GPTCoreForCausalLM(config).eval()
    first = torch.randint(0, EOS, (1, 7))
    second = torch.cat([torch.tensor([[EOS]]), torch.randint(0, EOS, (1, 6))], dim=1)  # the EOS opens document 2
    packed = torch.cat([first, second], dim=1)
    with torch.no_grad():
        alone = model(second, use_cache=False).logits
        isolated = model(packed, position_ids=document_position_ids(packed, EOS), use_cache=False).logits[:, 7:]
        plain = model(packed, use_cache=False).logits[:, 7:]
    torch.testing.assert_close(isolated, alone, rtol=1e-5, atol=1e-5)
    assert (plain - alone).abs().max() > 1e-2  # a plain causal mask does let document 2 see document 1


def test_documents_are_joined_with_eos_and_cut_into_blocks() -> None:
    tokenizer = gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    texts = ["Hello world", "", "Alice was", "beginning to get very tired"]
    docs = tokenize_documents(Dataset.from_dict({"text": texts}), tokenizer, "text", num_proc=None)
    assert docs["input_ids"] == [tokenizer(t)["input_ids"] + [eos] for t in texts if t]  # the empty one vanishes
    stream = [token for doc in docs["input_ids"] for token in doc]
    blocks = pack_into_blocks(docs, block_size=4, num_proc=None)["input_ids"]
    assert blocks == [stream[i : i + 4] for i in range(0, len(stream) - 3, 4)]
    assert len(stream) % 4 != 0 and len(blocks) == len(stream) // 4  # the tail that fills no block is dropped


def test_validation_split_is_held_out_and_seeded() -> None:
    blocks = Dataset.from_dict({"input_ids": [[i, i] for i in range(100)]})
    train, val = split_validation(blocks, None, 5.0, max_eval_blocks=3, seed=1)
    train_again, val_again = split_validation(blocks, None, 5.0, max_eval_blocks=3, seed=1)
    assert len(train) == 95 and len(val) == 3
    assert val["input_ids"] == val_again["input_ids"] and train["input_ids"] == train_again["input_ids"]
    assert not {block[0] for block in val["input_ids"]} & {block[0] for block in train["input_ids"]}
    with pytest.raises(ValueError, match="too few"):
        split_validation(Dataset.from_dict({"input_ids": [[1, 2]]}), None, 5.0, 3, seed=1)


def test_unigram_baseline_is_add_one_smoothed_cross_entropy() -> None:
    train = Dataset.from_dict({"input_ids": [[0, 0, 1, 2]]})  # counts 2, 1, 1, 0 over a vocabulary of 4
    val = Dataset.from_dict({"input_ids": [[3, 0, 1]]})  # targets: 0 and 1 (the first token is never predicted)
    nats, n_train = unigram_baseline(train, val, vocab_size=4)
    assert n_train == 4
    assert nats == pytest.approx(-(math.log(3 / 8) + math.log(2 / 8)) / 2)


def _checkpoint(root: Path, name: str, complete: bool) -> Path:
    path = root / name
    path.mkdir(parents=True)
    if complete:
        (path / COMPLETE_MARKER).write_text("{}")
    return path


def test_latest_is_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    assert resolve_checkpoint("latest", tmp_path / "checkpoints") is None
    _checkpoint(tmp_path, "step-2", complete=True)
    newest = _checkpoint(tmp_path, "step-10", complete=True)
    incomplete = _checkpoint(tmp_path, "step-12", complete=False)
    _checkpoint(tmp_path, ".tmp-step-14", complete=True)
    assert resolve_checkpoint("latest", tmp_path) == newest
    assert resolve_checkpoint(str(newest), tmp_path) == newest
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(str(incomplete), tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "step-99"), tmp_path)
    prune_checkpoints(tmp_path, keep=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-10", "step-12"]


def test_resuming_with_other_data_settings_is_refused() -> None:
    saved = TrainingProgress({"seed": 1, "batch_size": 8, "train_files": ["a.txt"]})
    saved.step = 5
    state = json.loads(json.dumps(saved.state_dict()))  # as a checkpoint keeps it
    resumed = TrainingProgress({"seed": 1, "batch_size": 16, "train_files": ["a.txt"]})
    with pytest.raises(ValueError, match="--batch_size was 8, now 16"):
        resumed.load_state_dict(state)
    same = TrainingProgress({"seed": 1, "batch_size": 8, "train_files": ["a.txt"]})
    same.load_state_dict(state)
    assert same.step == 5


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


def test_without_training_files_the_engine_has_no_default_data() -> None:
    """The bundled books are examples/pretrain.py's default; the installed package knows no path into examples/."""
    with pytest.raises(ValueError, match="no training data: pass --train_files .* or --dataset_name"):
        load_text_datasets(None, None, None, None, "text", "document", streaming=False)
