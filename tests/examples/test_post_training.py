"""Post-training through the ecosystem's trainers trains gptcore as it trains transformers' GPT-2, the oracle.

Both models start from identical weights (a tiny random GPT-2 saved by transformers, loaded by each) and see the same
batches in fp32 (`bf16=False`: TRL's configs default to bf16, whose autocast rounds gptcore's nn.Linear and GPT-2's
Conv1D differently) with plain SGD (Adam scales gradients that are zero up to rounding, of either sign, to +-lr). The
pad token is not EOS: where it is, the two classifiers pool different tokens of a sequence that ends with EOS, by
design (see `GPTCoreForSequenceClassification`). Dropout stays at GPT2Config's defaults: TRL's trainers switch it off,
`Trainer` does not, so the classifier test also checks gptcore draws no dropout that GPT-2 does not.

Also here: the fine-tuning scripts' precision choice overrides TRL's bf16 default.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
    set_seed,
)

from gptcore.modeling import GPTCoreForCausalLM, GPTCoreForSequenceClassification
from gptcore.tokenization import gpt2_tokenizer
from gptcore.training import finetuning, hardware
from tests.oracle import save_random_gpt2
from tests.processes import run_example_in_process

RELATIVE_TOLERANCE = 1e-4
STEPS = 4
PAD = "Ġgazed"  # GPT-2's token " gazed", which none of the texts below holds: the pad token, not EOS
TINY = dict(vocab_size=50257, n_positions=96, n_embd=32, n_layer=2, n_head=4)  # GPT-2's vocabulary: its tokenizer
PAIRS = [
    ("Name a primary colour.", " Red.", " Twelve apples."),
    ("What is 2 + 3?", " 5", " The river is long."),
    ("Give an antonym of hot.", " Cold.", " Paris is in France."),
    ("Say hello in French.", " Bonjour.", " Photosynthesis needs light."),
    ("Spell cat backwards.", " tac", " I like tea."),
    ("Is ice cold?", " Yes.", " Seven."),
    ("Name a planet.", " Mars.", " Quickly."),
    ("Finish: once upon a", " time.", " banana split."),
]


@pytest.fixture
def tokenizer():
    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token = PAD
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert not any("gazed" in text for pair in PAIRS for text in pair)
    return tokenizer


@pytest.fixture
def preference_pairs():
    from datasets import Dataset

    prompts, chosen, rejected = zip(*PAIRS)
    return Dataset.from_dict({"prompt": list(prompts), "chosen": list(chosen), "rejected": list(rejected)})


def training_arguments(config_class, tmp_path, **overrides):
    """`config_class` (TrainingArguments or one of TRL's configs) for a few fp32 SGD steps on the CPU."""
    fields = dict(
        output_dir=str(tmp_path / "trainer"),
        bf16=False,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_steps=STEPS,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        gradient_checkpointing=False,
        seed=7,
    )
    fields.update(overrides)
    return config_class(**fields)


def logged(trainer, key: str) -> list[float]:
    return [record[key] for record in trainer.state.log_history if key in record and "train_runtime" not in record]


def assert_same_training(ours: list[float], gpt2: list[float], what: str) -> float:
    """Equal to RELATIVE_TOLERANCE (values below 1e-6 compared absolutely); returns the largest relative difference."""
    assert len(ours) == len(gpt2) == STEPS, (ours, gpt2)
    differences = [abs(a - b) / max(abs(a), abs(b)) for a, b in zip(ours, gpt2) if max(abs(a), abs(b)) > 1e-6]
    assert all(abs(a - b) <= 1e-6 for a, b in zip(ours, gpt2) if max(abs(a), abs(b)) <= 1e-6), (what, ours, gpt2)
    assert max(differences, default=0.0) <= RELATIVE_TOLERANCE, f"{what}: gptcore {ours} vs GPT-2 {gpt2}"
    return max(differences, default=0.0)


def test_the_classifier_trains_like_gpt2s_under_trainer(tmp_path):
    """Trainer leaves dropout on: gptcore must draw exactly GPT-2's dropout masks, and no other (GPT-2's classifier
    has none before `score`). Dropout probabilities are GPT2Config's defaults (0.1 everywhere)."""
    from datasets import Dataset

    config = GPT2Config(vocab_size=101, n_positions=32, n_embd=32, n_layer=2, n_head=4, num_labels=3, pad_token_id=0)
    assert config.summary_first_dropout > 0 and config.resid_pdrop > 0 and config.attn_pdrop > 0
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(tmp_path / "gpt2")
    generator = torch.Generator().manual_seed(1)
    rows = []
    for i in range(32):
        n = int(torch.randint(4, 16, (1,), generator=generator))
        ids = torch.randint(1, 101, (n,), generator=generator).tolist()
        rows.append({"input_ids": ids + [0] * (16 - n), "attention_mask": [1] * n + [0] * (16 - n), "labels": i % 3})

    def train(model_class):
        # Eager attention: SDPA draws its dropout mask inside the kernel, in its own order.
        model = model_class.from_pretrained(tmp_path / "gpt2", attn_implementation="eager")
        output_dir = str(tmp_path / model_class.__name__)
        args = training_arguments(
            TrainingArguments, tmp_path, output_dir=output_dir, per_device_train_batch_size=8, seed=3
        )
        trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows))
        trainer.train()
        return logged(trainer, "loss"), model

    gpt2_losses, gpt2 = train(GPT2ForSequenceClassification)
    our_losses, ours = train(GPTCoreForSequenceClassification)
    assert type(ours) is GPTCoreForSequenceClassification
    torch.testing.assert_close(torch.tensor(our_losses), torch.tensor(gpt2_losses), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.score.weight, gpt2.score.weight, rtol=1e-4, atol=1e-5)


def test_reward_trainer_trains_gptcore_as_gpt2(tmp_path, tokenizer, preference_pairs):
    from trl import RewardConfig, RewardTrainer

    save_random_gpt2(tmp_path / "lm", GPT2Config(**TINY))
    torch.manual_seed(1)  # the new score head, saved once and loaded by both
    pad = tokenizer.pad_token_id
    scorer = GPT2ForSequenceClassification.from_pretrained(tmp_path / "lm", num_labels=1, pad_token_id=pad)
    scorer.save_pretrained(tmp_path / "rm")
    losses = {}
    for model_class in (GPT2ForSequenceClassification, GPTCoreForSequenceClassification):
        model = model_class.from_pretrained(tmp_path / "rm")
        trainer = RewardTrainer(
            model=model,
            args=training_arguments(RewardConfig, tmp_path),
            train_dataset=preference_pairs,
            processing_class=tokenizer,
        )
        trainer.train()
        losses[model_class] = logged(trainer, "loss")
    assert_same_training(losses[GPTCoreForSequenceClassification], losses[GPT2ForSequenceClassification], "reward loss")


def test_dpo_trainer_trains_gptcore_as_gpt2(tmp_path, tokenizer, preference_pairs):
    from trl import DPOConfig, DPOTrainer

    save_random_gpt2(tmp_path / "lm", GPT2Config(**TINY))
    losses = {}
    for model_class in (GPT2LMHeadModel, GPTCoreForCausalLM):
        model = model_class.from_pretrained(tmp_path / "lm")
        trainer = DPOTrainer(
            model=model,
            ref_model=copy.deepcopy(model),
            args=training_arguments(DPOConfig, tmp_path),
            train_dataset=preference_pairs,
            processing_class=tokenizer,
        )
        trainer.train()
        losses[model_class] = logged(trainer, "loss")
        assert logged(trainer, "rewards/margins")[-1] != 0  # the policy moved away from its reference
    assert_same_training(losses[GPTCoreForCausalLM], losses[GPT2LMHeadModel], "DPO loss")


def word_count_reward(completions: list[str], **kwargs) -> list[float]:
    return [float(len(answer.split())) for answer in completions]


def test_grpo_trainer_samples_and_trains_gptcore_as_gpt2(tmp_path, tokenizer, preference_pairs):
    """Seeded sampling draws the same answers from the same probabilities; with beta > 0 the loss has a KL term to
    the reference model (which TRL loads from the policy's folder: each model's own layout)."""
    from trl import GRPOConfig, GRPOTrainer

    save_random_gpt2(tmp_path / "gpt2", GPT2Config(**TINY))
    GPTCoreForCausalLM.from_pretrained(tmp_path / "gpt2").save_pretrained(tmp_path / "gptcore")
    tokenizer.padding_side = "left"
    logs = {}
    for model_class, folder in ((GPT2LMHeadModel, "gpt2"), (GPTCoreForCausalLM, "gptcore")):
        set_seed(7)
        args = training_arguments(GRPOConfig, tmp_path, num_generations=4, max_completion_length=6, beta=0.1)
        trainer = GRPOTrainer(
            model=model_class.from_pretrained(tmp_path / folder),
            reward_funcs=word_count_reward,
            args=args,
            train_dataset=preference_pairs.select_columns(["prompt"]),
            processing_class=tokenizer,
        )
        assert type(trainer.ref_model) is model_class
        trainer.train()
        logs[model_class] = {key: logged(trainer, key) for key in ("loss", "reward", "kl", "grad_norm")}
    ours, theirs = logs[GPTCoreForCausalLM], logs[GPT2LMHeadModel]
    assert ours["reward"] == theirs["reward"]  # the same sampled answers
    assert any(kl > 0 for kl in ours["kl"][1:])  # the policy moved: the loss is not the advantage term alone
    for key in ("loss", "kl", "grad_norm"):
        assert_same_training(ours[key], theirs[key], f"GRPO {key}")


# Precision: the scripts choose it as the other fine-tuning scripts do, whatever TRL's configs default to.


@pytest.mark.parametrize("config_name", ["RewardConfig", "DPOConfig", "GRPOConfig"])
def test_trl_configs_get_fp32_where_the_hardware_has_no_native_bf16(config_name, tmp_path, monkeypatch):
    import trl

    config_class = getattr(trl, config_name)
    assert config_class(output_dir=str(tmp_path), use_cpu=True).bf16, "TRL's default changed: this test checks nothing"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})  # an AVX2-only CPU
    monkeypatch.setattr("sys.argv", ["script.py", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"])
    *_, training = finetuning.start_finetuning(training_class=config_class)
    assert type(training) is config_class
    assert not training.bf16 and not training.fp16 and training.mixed_precision == "no"

    monkeypatch.setattr("sys.argv", ["script.py", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--bf16"])
    *_, training = finetuning.start_finetuning(training_class=config_class)
    assert training.bf16 and training.mixed_precision == "bf16"  # asked for: the user's choice wins


def test_the_scripts_help_says_how_bf16_is_chosen(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_example_in_process("finetune_dpo.py", "--help", monkeypatch=monkeypatch)
    assert "off unless --mixed_precision chooses it" in " ".join(capsys.readouterr().out.split())
