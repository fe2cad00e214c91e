"""The core is plain PyTorch: where transformers cannot be imported it imports, trains and generates the tokens
transformers' GPT-2 generates on the same weights, and `gptcore.modeling` offers the core alone, with a clear error
for the transformers classes. Where transformers is present, the same import registers the Auto classes."""

import json

import torch

from gptcore.modeling import GPTCoreForCausalLM
from tests.oracle import gpt2_and_twin, tiny_fields
from tests.processes import run_without

CORE_JOB = """
import json, sys
import torch
from gptcore.modeling.core import GPT, GPTConfig
import gptcore.modeling

config = GPTConfig(**json.loads(input()))
model = GPT(config).eval()
model.load_state_dict(torch.load("weights.pt", weights_only=True))
prompt = torch.tensor([[5, 17, 3, 60]])
greedy = model.generate(prompt, max_new_tokens=12, temperature=0)

model.train()
logits, loss = model(prompt[:, :-1], targets=prompt[:, 1:])
loss.backward()
try:
    gptcore.modeling.GPTCoreForCausalLM
    error = None
except ImportError as e:
    error = str(e)
print(json.dumps({
    "transformers_loaded": any(name == "transformers" or name.startswith("transformers.") for name in sys.modules),
    "greedy": greedy.tolist(), "loss": loss.item(), "grad": model.lm_head.weight.grad.abs().sum().item(),
    "core_exported": gptcore.modeling.GPT is GPT, "error": error,
}))
"""


def test_core_runs_without_transformers_and_generates_gpt2s_tokens(tmp_path):
    # wide weights: greedy tokens differ from step to step
    reference, ours = gpt2_and_twin(tmp_path / "gpt2", initializer_range=0.3)
    torch.save(ours.state_dict(), tmp_path / "weights.pt")  # the core's module names are the wrapper's
    core_fields = {
        name: getattr(ours.config, name) for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
    }

    result = run_without("transformers", CORE_JOB, cwd=tmp_path, stdin=json.dumps(core_fields))
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["transformers_loaded"] is False
    prompt = torch.tensor([[5, 17, 3, 60]])
    expected = reference.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert report["greedy"] == expected.tolist()
    assert len(set(report["greedy"][0][4:])) > 1  # not one token repeated: a lost position or cache would show
    assert report["loss"] > 0 and report["grad"] > 0
    assert report["core_exported"]
    assert "needs transformers" in report["error"] and "gptcore.modeling.core" in report["error"]


def test_importing_gptcore_registers_it_with_transformers():
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gptcore", **tiny_fields())
    assert type(AutoModelForCausalLM.from_config(config)) is GPTCoreForCausalLM
    assert transformers.GPTCoreForCausalLM is GPTCoreForCausalLM  # where `transformers serve` looks a class up
