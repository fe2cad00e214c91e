"""Every use of transformers' internals, and every check of its version, lives in `modeling/compat.py`.

A private transformers name is an identifier with one leading underscore that transformers' own library code uses
and that its GPT-2 and Llama model files do not (what those files use is the contract every model written for
transformers follows: `_supports_sdpa`, `config._attn_implementation`, `_init_weights`, ...). This test reads
gptcore's code (the installed folders and the examples) and lists each such name used outside compat, and each
comparison of transformers' version, so that a new transformers release is met by editing compat alone.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import transformers

from tests.processes import REPO_ROOT

PRODUCT_FOLDERS = ("modeling", "tokenization", "conversion", "examples")
COMPAT = REPO_ROOT / "modeling" / "compat.py"
_PRIVATE = re.compile(r"(?<![\w.])_[A-Za-z]\w*|(?<=\.)_[A-Za-z]\w*")


def _names_used(files) -> set[str]:
    names: set[str] = set()
    for path in files:
        names.update(_PRIVATE.findall(path.read_text(errors="ignore")))
    return names


def _defined_in(tree: ast.AST, any_attribute: bool) -> set[str]:
    """Names a module defines: functions, classes, arguments, variables, and attributes it sets (any object's, or
    only self's and cls's)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if any_attribute or (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                names.add(node.attr)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
    return names


def _names_defined(files) -> set[str]:
    names: set[str] = set()
    for path in files:
        try:
            names |= _defined_in(ast.parse(path.read_text(errors="ignore")), any_attribute=True)
        except SyntaxError:
            continue
    return names


@functools.cache
def private_transformers_names() -> frozenset[str]:
    """The single-underscore names transformers' library code defines (functions, classes, arguments, variables and
    attributes), less those its GPT-2 and Llama models use."""
    root = Path(transformers.__file__).parent
    library = [p for p in root.rglob("*.py") if p.relative_to(root).parts[0] != "models" or p.parent.name == "auto"]
    contract = [p for name in ("gpt2", "llama") for p in (root / "models" / name).glob("*.py")]
    return frozenset(name for name in _names_defined(library) if _is_private(name)) - _names_used(contract)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_definitions(tree: ast.AST) -> set[str]:
    return _defined_in(tree, any_attribute=False)


def _mentions_version(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr == "__version__":
            return True
        if isinstance(sub, ast.Call):
            func = sub.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("version", "parse", "Version") or called.startswith("is_transformers_version"):
                return True
    return False


def boundary_violations(source: str, private_names: set[str], own_names: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each private transformers name used in `source` and each version comparison."""
    tree = ast.parse(source)
    found = []

    def private(name: str, line: int) -> None:
        if _is_private(name) and name in private_names and name not in own_names:
            found.append((line, f"private transformers name {name!r}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            private(node.attr, node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformers"):
            for alias in node.names:
                private(alias.name, node.lineno)
        elif isinstance(node, ast.keyword) and node.arg:
            private(node.arg, node.value.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr", "setattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                private(node.args[1].value, node.lineno)
        elif isinstance(node, ast.Compare) and any(_mentions_version(side) for side in [node.left, *node.comparators]):
            found.append((node.lineno, "a version comparison"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")).startswith(
            "is_transformers_version"
        ):
            found.append((node.lineno, "a version comparison"))
    return found


def product_files() -> list[Path]:
    return sorted(p for folder in PRODUCT_FOLDERS for p in (REPO_ROOT / folder).rglob("*.py") if p != COMPAT)


def test_no_private_transformers_name_or_version_check_outside_compat():
    private_names = private_transformers_names()
    assert {"_compile_all_devices", "_raise_exceptions_for_missing_entries"} <= private_names  # the reader works
    assert "_attn_implementation" not in private_names  # the model contract is not private
    violations = []
    for path in product_files():
        source = path.read_text()
        own = _own_definitions(ast.parse(source))
        for line, what in boundary_violations(source, private_names, own):
            violations.append(f"{path.relative_to(REPO_ROOT)}:{line}: {what}")
    assert not violations, "move these into modeling/compat.py:\n" + "\n".join(violations)


def test_the_check_finds_private_names_and_version_comparisons():
    private_names = private_transformers_names()
    source = (
        "import transformers\n"
        "from packaging import version\n"
        "from transformers.utils import cached_file\n"
        "config._compile_all_devices = True\n"
        "cached_file('x', 'y', _raise_exceptions_for_missing_entries=False)\n"
        "if version.parse(transformers.__version__) >= version.parse('5.24'):\n"
        "    pass\n"
        "ok = getattr(model, '_compile_all_devices', False)\n"
        "self._attn_implementation = 'sdpa'\n"
        "print(transformers.__version__)\n"
    )
    found = sorted(boundary_violations(source, private_names, _own_definitions(ast.parse(source))))
    assert [line for line, _ in found] == [4, 5, 6, 8], found
