"""A folder saved with remote code under one transformers release loads under another, without gptcore.

`.ci/run` runs the suite in two environments, the newest transformers release and the oldest the project
supports, and points GPTCORE_OTHER_PYTHON at the other environment's interpreter; each run then checks both
directions. Run by hand: `GPTCORE_OTHER_PYTHON=.venv-floor/bin/python .venv/bin/python -m pytest tests/...`.
"""

import json
import os
import subprocess

import pytest
import transformers

from gptcore.modeling import GPTCoreForCausalLM
from tests.oracle import gpt2_config, save_random_gpt2
from tests.processes import REPO_ROOT, run_without_gptcore

OTHER_PYTHON = os.environ.get("GPTCORE_OTHER_PYTHON")
pytestmark = [
    pytest.mark.slow,  # interpreters of two transformers releases
    pytest.mark.skipif(
        not OTHER_PYTHON, reason="set GPTCORE_OTHER_PYTHON to a Python with another transformers release (.ci/run does)"
    ),
]

PROMPT = [[5, 17, 42, 8], [60, 2, 33, 91]]

# Loads `gptcore` (remote code, gptcore unimportable) and `gpt2` (plain GPT2LMHeadModel) from the cwd and prints
# both greedy continuations and the release it ran under.
LOAD_AND_GENERATE = f"""
import json, torch, transformers
from transformers import AutoModelForCausalLM, GPT2LMHeadModel
prompt = torch.tensor({PROMPT})
kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
ours = AutoModelForCausalLM.from_pretrained("gptcore", trust_remote_code=True).eval()
assert type(ours).__name__ == "GPTCoreForCausalLM", type(ours)
ref = GPT2LMHeadModel.from_pretrained("gpt2").eval()
print(json.dumps({{"release": transformers.__version__, "ours": ours.generate(prompt, **kwargs).tolist(),
                   "ref": ref.generate(prompt, **kwargs).tolist()}}))
"""

# Saves a random GPT-2 folder and its gptcore twin (with remote code) into the cwd, under the running release.
SAVE = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})  # this checkout's tests package
from tests.oracle import gpt2_config, save_random_gpt2
from gptcore.modeling import GPTCoreForCausalLM
save_random_gpt2("gpt2", gpt2_config(), seed=3)
GPTCoreForCausalLM.from_pretrained("gpt2").save_pretrained("gptcore")
"""


def check(result: subprocess.CompletedProcess, saved_under: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["ours"] == out["ref"], f"saved under {saved_under}, loaded under {out['release']}: tokens differ"


def test_saved_here_loads_under_the_other_release(tmp_path):
    save_random_gpt2(tmp_path / "gpt2", gpt2_config(), seed=3)
    GPTCoreForCausalLM.from_pretrained(tmp_path / "gpt2").save_pretrained(tmp_path / "gptcore")
    check(run_without_gptcore(LOAD_AND_GENERATE, cwd=tmp_path, python=OTHER_PYTHON), transformers.__version__)


def test_saved_under_the_other_release_loads_here(tmp_path):
    saved = subprocess.run([OTHER_PYTHON, "-c", SAVE], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert saved.returncode == 0, saved.stderr[-3000:]
    check(run_without_gptcore(LOAD_AND_GENERATE, cwd=tmp_path), "the other release")
