"""Noisy preferences: flip a fraction ε of the training pairs (chosen and rejected swapped).

Human labels disagree with each other for 20–40 % of pairs in real preference data sets;
cDPO (label smoothing) and IPO were proposed for such noise. :func:`flip_pairs` makes a noisy
copy of clean pairs with a seeded RNG, so an experiment can add noise and measure on the
clean test set what it costs each loss.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import Any


def _swapped(pair: Any) -> Any:
    if dataclasses.is_dataclass(pair):
        return dataclasses.replace(pair, chosen=pair.rejected, rejected=pair.chosen)
    return type(pair)(pair.prompt, pair.rejected, pair.chosen)  # TextPair (a NamedTuple)


def flip_pairs(pairs: Sequence[Any], eps: float, seed: int = 0) -> tuple[list[Any], list[int]]:
    """``(noisy_pairs, flipped)``: a copy of ``pairs`` with ``round(eps * len(pairs))`` of them swapped.

    Which pairs are flipped is drawn with ``random.Random(seed)`` (the global RNG is not
    touched); ``flipped`` lists their indices, sorted. The order of the pairs is kept.
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    n = round(eps * len(pairs))
    flipped = sorted(random.Random(seed).sample(range(len(pairs)), n))
    chosen = set(flipped)
    return [_swapped(p) if i in chosen else p for i, p in enumerate(pairs)], flipped
