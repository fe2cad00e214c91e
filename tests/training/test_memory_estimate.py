"""The memory estimate (gptcore.training.memory_estimate) in its own units; its figures are checked against a real model
and measured peaks through examples/estimate.py, in tests/examples/test_estimate_memory.py."""

from __future__ import annotations

from gptcore.training.memory_estimate import format_bytes


def test_sizes_are_shown_in_the_unit_that_keeps_their_digits():
    assert format_bytes(3 * 2**30) == "3.000 GiB" and format_bytes(2**28) == "0.250 GiB"
    assert format_bytes(2**28 - 2**20) == "255.0 MiB" and format_bytes(1536 * 1024) == "1.5 MiB"
