"""examples/train_reward_model.py, finetune_dpo.py and finetune_grpo.py end to end on the bundled Self-Instruct pairs,
with a tiny model and a few steps (the rule the pairs are built by is tested in tests/training/test_preference_data.py).

The runs use a 512-token vocabulary learnt from the seed tasks: DPO and GRPO compute log-probabilities over the whole
vocabulary for every token, which over GPT-2's 50,257 tokens would take most of these tests' time."""

from __future__ import annotations

import json
import runpy
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from gptcore.modeling import GPTCoreConfig, GPTCoreForCausalLM, GPTCoreForSequenceClassification
from gptcore.tokenization import format_alpaca, train_tokenizer
from gptcore.training.post_training import even_eval_batches
from gptcore.training.preference_data import PreferenceDataArguments, load_preference_splits
from tests.examples.trainer_flags import QUIET_TRAINER
from tests.processes import EXAMPLES, run_example_in_process, run_without_gptcore

SEED_TASKS = EXAMPLES / "data" / "finetune" / "self_instruct_seed_tasks.jsonl"
VOCAB_SIZE = 512
TINY = dict(n_layer=1, n_head=2, n_embd=32, n_positions=256, vocab_size=VOCAB_SIZE)
FEW_STEPS = "--max_steps 2 --learning_rate 1e-2 --per_device_train_batch_size 4 --per_device_eval_batch_size 32".split()
PNG = b"\x89PNG\r\n\x1a\n"
# Short pairs in TRL's format, for the runs that need not read the bundled data: a few tokens each.
SHORT_PAIRS = [
    {"prompt": f"Question {i}: what comes after {i}?", "chosen": f" {i + 1}.", "rejected": " Blue whales sing."}
    for i in range(16)
]


@pytest.fixture(scope="module")
def small_vocab_checkpoint(tmp_path_factory):
    """A folder with a tiny random GPTCoreForCausalLM and its tokenizer, a byte-level BPE learnt from the seed tasks."""
    folder = tmp_path_factory.mktemp("small_vocab")
    tasks = [json.loads(line) for line in SEED_TASKS.read_text().splitlines()]
    texts = (format_alpaca({"instruction": task["instruction"], **task["instances"][0]}) for task in tasks)
    train_tokenizer(texts, vocab_size=VOCAB_SIZE).save_pretrained(folder)
    torch.manual_seed(0)
    GPTCoreForCausalLM(GPTCoreConfig(**TINY)).save_pretrained(folder)
    return folder


@pytest.fixture
def short_pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(pair) for pair in SHORT_PAIRS) + "\n")
    return str(path)


def run(script: str, out, *args: str, monkeypatch) -> None:
    """examples/`script` in this process with `args`, writing to `out`, with the Trainer's logging quiet."""
    run_example_in_process(script, *args, "--output_dir", str(out), *QUIET_TRAINER, monkeypatch=monkeypatch)


def on_short_pairs(pairs_file: str) -> list[str]:
    """The flags that train on `short_pairs_file`, split in halves and quarters."""
    return ["--data_file", pairs_file, "--split_fractions", "0.5,0.25,0.25"]


def run_dpo(checkpoint, pairs_file: str, out, *flags: str, monkeypatch) -> None:
    """finetune_dpo.py from `checkpoint` on the short pairs, generating one short answer before and after."""
    flags = ("--model_name_or_path", str(checkpoint), *flags, *on_short_pairs(pairs_file), *FEW_STEPS)
    run("finetune_dpo.py", out, *flags, *"--max_generate_samples 1 --max_new_tokens 2".split(), monkeypatch=monkeypatch)


def assert_reported(out, title: str, trainer: str, model_dir=None) -> None:
    """--output_dir has the curves, the model's folder (by default the same) the card."""
    assert (out / "training_curves.png").read_bytes()[:8] == PNG
    card = ((model_dir or out) / "README.md").read_text()
    assert f"# {title}" in card and trainer in card and "| test " in card, card[:2000]


@pytest.mark.parametrize(
    ("asked", "items", "per_prompt", "chosen"),
    [(8, 19, 1, 1), (8, 18, 1, 6), (32, 19, 8, 8), (32, 20, 8, 32), (4, 9, 8, 8)],
)
def test_evaluation_batches_are_cut_equal(asked, items, per_prompt, chosen):
    """TRL weighs each evaluation batch's mean equally: only equal batches give the mean over the test set."""
    args = SimpleNamespace(per_device_eval_batch_size=asked)
    assert even_eval_batches(args, items, per_prompt) == chosen == args.per_device_eval_batch_size
    assert (items * per_prompt) % chosen == 0 and chosen % per_prompt == 0


@pytest.fixture(scope="module")
def reward_model(small_vocab_checkpoint, tmp_path_factory):
    """A reward model trained by the script from the tiny checkpoint, and what it printed."""
    out = tmp_path_factory.mktemp("reward")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run(
            "train_reward_model.py",
            out,
            "--model_name_or_path",
            str(small_vocab_checkpoint),
            "--max_length",
            "200",
            *FEW_STEPS,
            monkeypatch=monkeypatch,
        )
    return out


@torch.no_grad()
def test_reward_model_reports_the_held_out_pairwise_accuracy_of_the_saved_model(reward_model):
    metrics = json.loads((reward_model / "all_results.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    assert type(model) is GPTCoreForSequenceClassification and model.config.num_labels == 1

    def score(text: str) -> float:
        return model(**tokenizer(text + tokenizer.eos_token, return_tensors="pt")).logits.item()

    def fits(pair) -> bool:  # RewardTrainer leaves out pairs longer than --max_length
        texts = (pair["prompt"] + pair[k] + tokenizer.eos_token for k in ("chosen", "rejected"))
        return max(len(tokenizer(text).input_ids) for text in texts) <= 200

    # Recomputed one text at a time: the test pairs that fit --max_length, chosen scored above rejected.
    test = load_preference_splits(PreferenceDataArguments(), seed=42, default_file=SEED_TASKS)["test"]
    kept = [pair for pair in test if fits(pair)]
    accuracy = sum(score(p["prompt"] + p["chosen"]) > score(p["prompt"] + p["rejected"]) for p in kept) / len(kept)
    assert metrics["eval_accuracy"] == pytest.approx(accuracy, abs=1e-6), (metrics, accuracy, len(kept))
    assert 0 <= metrics["before_accuracy"] <= 1 and "before_margin" in metrics and "eval_margin" in metrics
    assert_reported(reward_model, "gptcore reward model", "RewardTrainer")


def test_reward_model_loads_where_gptcore_is_not_installed(reward_model, tmp_path):
    code = f"""
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained({str(reward_model)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(reward_model)!r})
print(type(model).__name__, tuple(model(**tokenizer("A fine answer.", return_tensors="pt")).logits.shape))
"""
    result = run_without_gptcore(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-3:] == ["GPTCoreForSequenceClassification", "(1,", "1)"]


def test_dpo_from_a_model_built_in_memory_trains_against_a_copy_of_it(
    small_vocab_checkpoint, tmp_path, monkeypatch, capsys
):
    """No checkpoint folder: TRL alone would reload the reference from the model's empty `_name_or_path`."""
    out = tmp_path / "dpo"
    overrides = ",".join(f"{key}={value}" for key, value in TINY.items())
    flags = [
        "--tokenizer_name_or_path",
        str(small_vocab_checkpoint),
        "--config_overrides",
        overrides,
        "--max_length",
        "96",
    ]
    run(
        "finetune_dpo.py",
        out,
        *flags,
        *FEW_STEPS,
        *"--max_generate_samples 2 --max_new_tokens 4".split(),
        monkeypatch=monkeypatch,
    )
    printed = capsys.readouterr().out
    assert "mixed precision: no (--mixed_precision no)" in printed and "test reward margin 0.000 before" in printed
    metrics = json.loads((out / "all_results.json").read_text())
    # The policy starts as its reference, and moves away from it.
    assert metrics["before_rewards/margins"] == 0 and metrics["before_rewards/accuracies"] == 0
    assert metrics["eval_rewards/margins"] != 0
    samples = json.loads((out / "test_samples.json").read_text())
    assert len(samples) == 2 and set(samples[0]) == {"prompt", "chosen", "rejected", "before", "after"}
    assert type(AutoModelForCausalLM.from_pretrained(out)) is GPTCoreForCausalLM
    assert_reported(out, "gptcore DPO model", "DPOTrainer")


def test_dpo_with_lora_merges_into_a_plain_checkpoint(small_vocab_checkpoint, short_pairs_file, tmp_path, monkeypatch):
    out = tmp_path / "dpo_lora"
    run_dpo(small_vocab_checkpoint, short_pairs_file, out, "--lora", monkeypatch=monkeypatch)
    metrics = json.loads((out / "all_results.json").read_text())
    assert metrics["lora_merge_max_abs_logit_difference"] < 1e-4 and metrics["eval_rewards/margins"] != 0
    assert (out / "adapter_model.safetensors").is_file()
    merged = GPTCoreForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name in merged.state_dict())
    assert_reported(out, "gptcore DPO model", "DPOTrainer", model_dir=out / "merged")


def test_dpo_with_qlora_trains_adapters_on_a_4bit_base(
    small_vocab_checkpoint, short_pairs_file, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'gptcore[post-training]')")
    out = tmp_path / "dpo_qlora"
    run_dpo(small_vocab_checkpoint, short_pairs_file, out, "--lora", "--load_in_4bit", monkeypatch=monkeypatch)
    printed = capsys.readouterr().out
    assert "--load_in_4bit: quantised linear layers" in printed and "Params4bit" in printed, printed[-3000:]
    metrics = json.loads((out / "all_results.json").read_text())
    assert metrics["eval_rewards/margins"] != 0  # the adapters moved the policy away from its (adapter-off) reference
    assert (out / "adapter_model.safetensors").is_file() and not (out / "merged").exists()


def test_grpo_rule_rewards_read_as_documented():
    script = runpy.run_path(str(EXAMPLES / "finetune_grpo.py"))  # not as __main__: defines, runs nothing
    word_f1, ended_with_eos = script["word_f1"], script["ended_with_eos"]
    assert word_f1(["The cat sat.", "dog", ""], reference=["the cat", "a cat", "cat"]) == [pytest.approx(0.8), 0.0, 0.0]
    assert ended_with_eos([[5, 7, 50256], [5, 7, 9]], eos_token_id=50256) == [1.0, 0.0]


# One evaluation batch: the 19 test prompts, 2 answers each.
GRPO_STEPS = (
    "--max_steps 2 --learning_rate 1e-2 --per_device_train_batch_size 4 --num_generations 2 "
    "--per_device_eval_batch_size 38 --max_completion_length 4"
).split()


def test_grpo_with_the_rule(small_vocab_checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "grpo"
    run(
        "finetune_grpo.py",
        out,
        "--model_name_or_path",
        str(small_vocab_checkpoint),
        *GRPO_STEPS,
        monkeypatch=monkeypatch,
    )
    assert "test mean reward" in capsys.readouterr().out
    metrics = json.loads((out / "all_results.json").read_text())
    expected = {"before_reward", "eval_reward", "eval_rewards/word_f1/mean", "eval_rewards/ended_with_eos/mean"}
    assert expected <= set(metrics)
    assert_reported(out, "gptcore GRPO model", "GRPOTrainer")


def test_grpo_with_a_reward_model(small_vocab_checkpoint, reward_model, short_pairs_file, tmp_path, monkeypatch):
    out = tmp_path / "grpo_rm"
    flags = ["--model_name_or_path", str(small_vocab_checkpoint), "--reward_model", str(reward_model)]
    run("finetune_grpo.py", out, *flags, *on_short_pairs(short_pairs_file), *GRPO_STEPS, monkeypatch=monkeypatch)
    metrics = json.loads((out / "all_results.json").read_text())
    assert "eval_rewards/reward_model/mean" in metrics and "eval_rewards/word_f1/mean" not in metrics
    assert metrics["eval_reward"] == metrics["eval_rewards/reward_model/mean"]
    assert str(reward_model) in (out / "README.md").read_text()
