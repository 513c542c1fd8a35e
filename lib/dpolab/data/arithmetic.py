r"""A synthetic task with an exact measure: two-digit addition, and a sloppy adder who forgets to carry.

Prompts are ``"58+67="``. The correct response is ``"125"``. The *sloppy* response forgets
the carry from the units column: 8 + 7 = 15, write 5, and (forgetting the 1) 5 + 6 = 11,
giving ``"115"`` — always exactly 10 less than the sum, and only on prompts whose units
digits carry (``a % 10 + b % 10 >= 10``, about 45 % of them).

The SFT data is written by a teacher who is sloppy on most carry prompts, so supervised
fine-tuning learns both behaviours and, greedily, mostly the sloppy one. Preference pairs
on carry prompts (chosen: correct, rejected: sloppy) then teach the model to carry. The
measure is exact: a response scores 1 when it is the correct sum, character for
character, else 0.

Every prompt ``a+b=`` is tied to its unordered pair {a, b}: the held-out pairs (and so both
``a+b=`` and ``b+a=``) never appear in SFT data or training pairs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch


class TextPair(NamedTuple):
    """(prompt, chosen, rejected): the pairs' type where the exercise's class is absent."""

    prompt: str
    chosen: str
    rejected: str

    def to_dict(self) -> dict[str, str]:
        return dict(self._asdict())


try:  # the full package: notebook 03's PreferencePair (the reference of that exercise)
    from .preferences import PreferencePair as _Pair
except ModuleNotFoundError as err:  # the graded-course package holds no exercise's answer
    if err.name != "dpolab.data.preferences":
        raise
    _Pair = TextPair

_PROMPT = re.compile(r"^(\d+)\+(\d+)=$")


def _parse(prompt: str) -> tuple[int, int]:
    match = _PROMPT.match(prompt) if isinstance(prompt, str) else None
    if match is None:
        raise ValueError(f"prompt must look like '58+67=', got {prompt!r}")
    return int(match.group(1)), int(match.group(2))


def carries(a: int, b: int) -> bool:
    """Whether adding the units digits of ``a`` and ``b`` carries a 1 into the tens."""
    return a % 10 + b % 10 >= 10


class ArithmeticTask:
    """Two-digit addition with a sloppy teacher, generated from ``seed``.

    Args:
        seed: every split and every sloppy answer follows from it.
        sloppy_rate: the fraction of SFT answers to *carry* prompts that forget the carry.
        n_eval: number of held-out evaluation prompts (all of them carry prompts, where the
            two behaviours differ).
        low, high: operand range, inclusive (two digits each by default, so all prompts
            have the same length).

    Attributes:
        train_prompts: prompts available for SFT data and training pairs.
        eval_prompts: held-out carry prompts (never in ``train_prompts``).
    """

    def __init__(
        self,
        seed: int = 0,
        sloppy_rate: float = 0.8,
        n_eval: int = 256,
        low: int = 10,
        high: int = 99,
    ):
        if not 0.0 <= sloppy_rate <= 1.0:
            raise ValueError(f"sloppy_rate must be in [0, 1], got {sloppy_rate}")
        if not 0 <= low < high:
            raise ValueError(f"low and high must satisfy 0 <= low < high, got {low} and {high}")
        self.seed = seed
        self.sloppy_rate = sloppy_rate
        self.low, self.high = low, high
        rng = random.Random(seed)
        unordered = [(a, b) for a in range(low, high + 1) for b in range(a, high + 1)]
        rng.shuffle(unordered)
        carry_pairs = [p for p in unordered if carries(*p)]
        if not 0 < n_eval < len(carry_pairs):
            raise ValueError(f"n_eval must be in [1, {len(carry_pairs)}), got {n_eval}")
        # Hold out whole unordered pairs: neither a+b= nor b+a= is ever trained on.
        held_out: set[tuple[int, int]] = set()
        self.eval_prompts: list[str] = []
        for pair in carry_pairs:
            if len(self.eval_prompts) >= n_eval:
                break
            held_out.add(pair)
            self.eval_prompts.extend(_orders(*pair))
        self.eval_prompts = self.eval_prompts[:n_eval]
        self.train_prompts: list[str] = [
            p for pair in unordered if pair not in held_out for p in _orders(*pair)
        ]
        rng.shuffle(self.train_prompts)
        self._rng_seed = rng.randrange(2**31)

    # --- the exact measure -------------------------------------------------------------
    @staticmethod
    def prompt(a: int, b: int) -> str:
        return f"{a}+{b}="

    @staticmethod
    def answer(prompt: str) -> str:
        """The correct response to ``prompt``."""
        a, b = _parse(prompt)
        return str(a + b)

    @staticmethod
    def sloppy_answer(prompt: str) -> str:
        """The response of an adder who forgets the carry (equals :meth:`answer` when nothing carries)."""
        a, b = _parse(prompt)
        return str(a + b - 10) if carries(a, b) else str(a + b)

    @classmethod
    def score(cls, prompt: str, response: str) -> float:
        """1.0 if ``response`` is exactly the correct sum, else 0.0."""
        return float(response == cls.answer(prompt))

    # --- data --------------------------------------------------------------------------
    def sft_examples(self, n: int | None = None) -> list[tuple[str, str]]:
        """(prompt, response) pairs for SFT: ``sloppy_rate`` of the carry answers are sloppy.

        ``n`` examples (default: one per training prompt), drawn without replacement
        while the training prompts last. Seeded: the same task gives the same list.
        """
        rng = random.Random(self._rng_seed)
        n = len(self.train_prompts) if n is None else n
        out = []
        for i in range(n):
            prompt = self.train_prompts[i % len(self.train_prompts)]
            sloppy = self.sloppy_answer(prompt)
            if sloppy != self.answer(prompt) and rng.random() < self.sloppy_rate:
                out.append((prompt, sloppy))
            else:
                out.append((prompt, self.answer(prompt)))
        return out

    def preference_pairs(self, split: str = "train", n: int | None = None) -> list[Any]:
        """Pairs on carry prompts: chosen = correct sum, rejected = the forgotten carry.

        :class:`~dpolab.PreferencePair` objects (:class:`TextPair` in the graded-course package,
        which holds no exercise): ``.prompt``, ``.chosen``, ``.rejected``.

        ``split="train"`` draws from the training prompts, ``split="eval"`` from the
        held-out ones (for the implicit-reward accuracy on held-out pairs).
        """
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        pool = self.train_prompts if split == "train" else self.eval_prompts
        prompts = [p for p in pool if carries(*_parse(p))]
        if n is not None:
            if not 0 < n <= len(prompts):
                raise ValueError(f"n must be in [1, {len(prompts)}] for split {split!r}, got {n}")
            prompts = prompts[:n]
        return [_Pair(p, self.answer(p), self.sloppy_answer(p)) for p in prompts]

    # --- evaluation --------------------------------------------------------------------
    def evaluate(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        max_new_tokens: int = 4,
        return_responses: bool = False,
    ) -> float | tuple[float, list[str]]:
        """The task metric: the fraction of ``prompts`` (default: the held-out ones) answered exactly, greedily."""
        from ..training.generation import complete

        prompts = self.eval_prompts if prompts is None else list(prompts)
        responses = complete(model, tokenizer, prompts, max_new_tokens=max_new_tokens, device=device)
        accuracy = sum(self.score(p, r) for p, r in zip(prompts, responses, strict=True)) / len(prompts)
        return (accuracy, responses) if return_responses else accuracy


def _orders(a: int, b: int) -> list[str]:
    """``a+b=`` and ``b+a=`` (one prompt when a == b)."""
    return list(dict.fromkeys([ArithmeticTask.prompt(a, b), ArithmeticTask.prompt(b, a)]))
