"""Held-out prompts split into a validation set and a test set, disjoint and stated.

Early stopping chooses a checkpoint by its score on held-out prompts; that score is then
biased upwards (of many evaluations, the best was kept), so the checkpoint is reported on
*other* prompts. :func:`split_held_out` splits the task's held-out prompts by their unordered
operand pair: ``a+b=`` and ``b+a=`` always land in the same half, so no validation prompt
has its mirror image in the test set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_OPERANDS = re.compile(r"^(\d+)\+(\d+)=$")


def _key(prompt: str) -> tuple[int, int]:
    match = _OPERANDS.match(prompt)
    if match is None:
        raise ValueError(f"prompt must look like '58+67=', got {prompt!r}")
    a, b = int(match.group(1)), int(match.group(2))
    return min(a, b), max(a, b)


def split_held_out(prompts: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(validation, test)``: the first half of the operand pairs (in order of first appearance), then the rest.

    Both orders of a pair go to the same half; the halves are disjoint and together hold every prompt.
    """
    keys = list(dict.fromkeys(_key(p) for p in prompts))
    first = set(keys[: len(keys) // 2])
    validation = [p for p in prompts if _key(p) in first]
    test = [p for p in prompts if _key(p) not in first]
    return validation, test
