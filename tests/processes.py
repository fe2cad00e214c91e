"""Running code as a user would: example scripts as commands, and code in an interpreter without gptcore."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"


def _blocker(package: str) -> str:
    """Code that makes `package` unimportable however it is installed (editable finder or site-packages): an import
    hook at the front of sys.meta_path, checked before anything else runs."""
    return f'''
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == {package!r} or name.startswith({package + "."!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _Block())
try:
    import {package}
    raise SystemExit("{package} is still importable; the test environment leaks")
except ModuleNotFoundError:
    pass
'''


def run_without(
    package: str, code: str, cwd: Path, stdin: str | None = None, timeout: int = 300, python: str | None = None
):
    """Run `code` in a fresh interpreter (of this venv, or `python`) in which `package` cannot be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HOME"] = str(cwd / "hf_home")  # a fresh cache for remote-code modules
    return subprocess.run(
        [python or sys.executable, "-c", _blocker(package) + code],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_without_gptcore(code: str, cwd: Path, stdin: str | None = None, timeout: int = 300, python: str | None = None):
    """Run `code` in a fresh interpreter in which gptcore cannot be imported: what plain transformers sees."""
    return run_without("gptcore", code, cwd, stdin=stdin, timeout=timeout, python=python)


def run_example(script: str, *args: str, cwd: Path | None = None, timeout: int = 300):
    """Run `python examples/<script> args...` as a user would; fail the test with its output if it fails."""
    # One thread, as in the test process (see tests/conftest.py): tiny models gain nothing from more.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd or REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{script} {' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def run_example_in_process(script: str, *args: str, monkeypatch) -> None:
    """Run examples/<script> in this process, as `python examples/<script> args...` would run it, without
    paying again for starting an interpreter and importing torch and transformers."""
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.syspath_prepend(str(EXAMPLES))  # what Python does for `python examples/<script>`
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
