"""Weight layouts as data: tables of (source name, our name, transform), applied strictly.

A table is a list of `Rule`s. Names may contain `{i}` (the layer index, expanded for every layer).
A rule can read several source tensors (e.g. separate query/key/value matrices concatenated into
our fused `c_attn`). Every transform has an inverse, so the reverse direction (our layout back to the
source layout) is derived from the same table with `reverse_rules` rather than written twice.

`apply_rules` is strict: every source tensor is consumed or matched by an ignore pattern, every
target tensor is produced, shapes are checked against the model, and each failure names the tensor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

# name -> (function(list of source tensors, number of targets) -> tensor, name of the inverse)
# The inverse of a many-to-one transform is one-to-many; "split0" returns a tuple.
_TRANSFORMS: dict[str, tuple[Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], str]] = {
    "copy": (lambda ts: ts[0], "copy"),
    # GPT-2's Conv1D stores (in, out); nn.Linear stores (out, in).
    "transpose": (lambda ts: ts[0].t().contiguous(), "transpose"),
    # OpenAI's TF release stores Conv1D weights as (1, in, out).
    "squeeze0_transpose": (lambda ts: ts[0].squeeze(0).t().contiguous(), "transpose_unsqueeze0"),
    "transpose_unsqueeze0": (lambda ts: ts[0].t().unsqueeze(0).contiguous(), "squeeze0_transpose"),
    "concat0": (lambda ts: torch.cat(ts, dim=0), "split0"),
    "split0": (lambda ts, n: tuple(t.contiguous() for t in ts[0].chunk(n, dim=0)), "concat0"),
}


@dataclass(frozen=True)
class Rule:
    """`target` is made from `sources` (one name or several) by the named `transform`.

    `optional`: when none of the sources exist the target is left out instead of raising
    (used for a tied `lm_head.weight`, which checkpoints may or may not store).
    """

    sources: str | tuple[str, ...]
    target: str | tuple[str, ...]
    transform: str = "copy"
    optional: bool = False

    def source_names(self) -> tuple[str, ...]:
        return (self.sources,) if isinstance(self.sources, str) else tuple(self.sources)

    def target_names(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)


def reverse_rules(rules: Sequence[Rule]) -> list[Rule]:
    """The same table read backwards: our names become sources, transforms are inverted."""
    return [Rule(rule.target, rule.sources, _TRANSFORMS[rule.transform][1], rule.optional) for rule in rules]


LAYER = "{i}"  # stands for the layer index in a name


def layer_names(template: str, n_layer: int) -> list[str]:
    """`template` with `{i}` filled in for each layer 0 .. n_layer-1; a name without `{i}` stands alone."""
    return [template.format(i=i) for i in range(n_layer)] if LAYER in template else [template]


def expand_rules(rules: Iterable[Rule], n_layer: int) -> list[Rule]:
    """One rule per layer for each rule naming `{i}`; rules without `{i}` appear once."""
    expanded = []
    for rule in rules:
        n_sources = len(rule.source_names())
        names = rule.source_names() + rule.target_names()
        for filled in zip(*(layer_names(name, n_layer) for name in names), strict=True):
            expanded.append(Rule(filled[:n_sources], filled[n_sources:], rule.transform, rule.optional))
    return expanded


def _pattern(name: str) -> re.Pattern[str]:
    """`name` as a regex; its `{i}` matches (and captures) a layer index."""
    return re.compile(re.escape(name).replace(re.escape(LAYER), r"(\d+)") + r"\Z")


def apply_rules(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[Rule],
    n_layer: int,
    ignore: Sequence[str] = (),
    expected_shapes: Mapping[str, Sequence[int]] | None = None,
    source_description: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """Convert `state_dict` with `rules`; raise ValueError naming any missing, leftover or misshapen tensor,
    or layers other than the config's 0 .. n_layer-1."""
    check_layer_count(state_dict, rules, n_layer, source_description)
    converted: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    missing: list[str] = []
    for rule in expand_rules(rules, n_layer):
        names = rule.source_names()
        present = [n for n in names if n in state_dict]
        if not present and rule.optional:
            continue
        if len(present) != len(names):
            missing.extend(n for n in names if n not in state_dict)
            continue
        func = _TRANSFORMS[rule.transform][0]
        targets = rule.target_names()
        tensors = [state_dict[n] for n in names]
        result = func(tensors, len(targets)) if len(targets) > 1 else func(tensors)
        for name, tensor in zip(targets, result if len(targets) > 1 else (result,)):
            converted[name] = tensor
        consumed.update(names)
    if missing:
        raise ValueError(
            f"{source_description} is missing {len(missing)} tensor(s) this layout needs, e.g. "
            f"{missing[:5]}; the file is incomplete or not in the layout it was read as"
        )
    ignore_patterns = [_pattern(p) for p in ignore]
    leftover = sorted(k for k in state_dict if k not in consumed and not any(p.match(k) for p in ignore_patterns))
    if leftover:
        raise ValueError(
            f"{source_description} has {len(leftover)} tensor(s) this layout does not know, e.g. {leftover[:5]}; "
            "the checkpoint has a different architecture or more layers than its config says"
        )
    if expected_shapes is not None:
        check_shapes(converted, expected_shapes, source_description)
    return converted


def head_is_tied(state_dict: Mapping[str, torch.Tensor], head: str, embedding: str) -> bool:
    """True when the output head is absent or holds exactly the token embedding."""
    if head not in state_dict:
        return True
    return embedding in state_dict and torch.equal(state_dict[head], state_dict[embedding])


def check_layer_count(
    state_dict: Mapping[str, torch.Tensor], rules: Sequence[Rule], n_layer: int, description: str
) -> None:
    """The layer indices present in the weights must be exactly 0 .. n_layer-1 of the config."""
    patterns = [_pattern(name) for rule in rules for name in rule.source_names() if LAYER in name]
    found = {int(m.group(1)) for key in state_dict for p in patterns if (m := p.match(key))}
    if found and found != set(range(n_layer)):
        raise ValueError(
            f"{description}: the config says n_layer={n_layer} but the weights hold layers {_ranges(sorted(found))}; "
            "the config does not match the weights (or the file is incomplete)"
        )


def _ranges(indices: list[int]) -> str:
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}..{indices[-1]}"
    return str(indices)


def check_shapes(
    tensors: Mapping[str, torch.Tensor], expected_shapes: Mapping[str, Sequence[int]], source_description: str
) -> None:
    """Every expected tensor present with the expected shape; the first mismatch is named."""
    absent = [name for name in expected_shapes if name not in tensors]
    if absent:
        raise ValueError(f"{source_description}: no tensor for {absent[:5]} after conversion")
    for name, tensor in tensors.items():
        if name not in expected_shapes:
            raise ValueError(f"{source_description}: converted tensor {name!r} has no place in the model")
        if tuple(tensor.shape) != tuple(expected_shapes[name]):
            raise ValueError(
                f"{source_description}: tensor {name!r} has shape {tuple(tensor.shape)} but the model config "
                f"expects {tuple(expected_shapes[name])}; the config does not match the weights"
            )
