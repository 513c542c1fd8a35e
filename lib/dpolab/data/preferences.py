"""Build (prompt, chosen, rejected) preference pairs and store them as JSONL.

Two sources of pairs are supported:

* **scored responses** — several responses per prompt, each with a numeric score
  (from humans, a reward model or a judge): the best are paired with the worst;
* **single responses** — one good response per prompt: a worse one is made from it
  by a fixed rule (``perturb``, ``truncate``, ``shuffle`` or ``refuse``).

The pairs are stored with :func:`~dpolab.data.jsonl.save_jsonl` (re-exported here, as
:func:`~dpolab.data.jsonl.load_jsonl`): that module is not an exercise, and the
graded-course package, which lacks this one, keeps it.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .jsonl import _require_keys
from .jsonl import load_jsonl as load_jsonl  # re-exported: the module where they used to live
from .jsonl import save_jsonl as save_jsonl

Scorer = Callable[[str, str], float]

#: Strategies accepted by :meth:`PreferenceDatasetGenerator.from_single_responses`.
REJECTION_STRATEGIES: tuple[str, ...] = ("perturb", "truncate", "shuffle", "refuse")

#: Words the ``perturb`` strategy inserts.
FILLERS: tuple[str, ...] = ("um", "like", "basically", "I guess", "maybe")

#: The rejected response of the ``refuse`` strategy.
REFUSAL = "I'm sorry, but I can't help with that."

#: :meth:`PreferenceDatasetGenerator.validate_pairs` drops pairs with a response shorter than this.
MIN_RESPONSE_CHARS = 10


@dataclass
class PreferencePair:
    """One comparison: for ``prompt``, ``chosen`` is preferred over ``rejected``."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float | None = None
    rejected_score: float | None = None
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return every field as a plain dict; a missing ``metadata`` becomes ``{}``."""
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "chosen_score": self.chosen_score,
            "rejected_score": self.rejected_score,
            "metadata": self.metadata or {},
        }


def _as_score(index: int, key: str, value: Any) -> float:
    # bool is an int subclass, but True/False as a score is almost surely a mistake;
    # NaN would make the descending sort meaningless.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"record {index}: {key!r} must be a number, got {value!r}")
    return float(value)


def _gap_ok(gap: float, min_diff: float) -> bool:
    # Tolerate float rounding, so e.g. 0.7 - 0.2 (= 0.49999999999999994) meets a threshold of 0.5.
    return gap >= min_diff or math.isclose(gap, min_diff, rel_tol=1e-9, abs_tol=1e-12)


class PreferenceDatasetGenerator:
    """Make :class:`PreferencePair` lists from scored or single responses.

    Args:
        min_score_diff: smallest score gap (chosen minus rejected) for which
            :meth:`from_scored_responses` keeps a pair.
        seed: seed of the generator's own :class:`random.Random`, used by the
            ``perturb`` and ``shuffle`` strategies. The same seed gives the same pairs;
            the global :mod:`random` state is neither read nor changed.
    """

    def __init__(self, min_score_diff: float = 0.5, seed: int | None = None) -> None:
        self.min_score_diff = min_score_diff
        self.rng = random.Random(seed)
        self.quality_scorers: list[Scorer] = []

    def add_scorer(self, scorer: Scorer) -> None:
        """Register ``scorer(prompt, response) -> float`` for :meth:`compute_quality_score`."""
        self.quality_scorers.append(scorer)

    def compute_quality_score(self, prompt: str, response: str) -> float:
        """Return the mean of all registered scorers on (prompt, response); 0.0 if there are none."""
        if not self.quality_scorers:
            return 0.0
        scores = [scorer(prompt, response) for scorer in self.quality_scorers]
        return sum(scores) / len(scores)

    # ------------------------------------------------------------------ scored responses

    def from_scored_responses(
        self,
        data: Iterable[Mapping[str, Any]],
        prompt_key: str = "prompt",
        response_key: str = "response",
        score_key: str = "score",
    ) -> list[PreferencePair]:
        """Pair high- and low-scoring responses to the same prompt.

        Records are grouped by prompt (groups in first-seen order) and each group is
        sorted by score, highest first; equal scores keep their input order. The i-th
        best response is paired with the i-th worst, for ``i`` in ``range(len(group) // 2)``,
        so no response is used twice. A pair is kept only if its score gap is at least
        ``min_score_diff`` (up to float rounding); the gaps shrink as ``i`` grows, so the
        first gap below the threshold ends the group. A prompt with one response gives
        no pair.

        Raises:
            ValueError: a record lacks ``prompt_key``, ``response_key`` or ``score_key``,
                or its score is not a real number (bools and NaN are refused). The
                message names the record's index in ``data``.
        """
        # Validate every record before pairing, so a bad record is reported even when its
        # prompt would produce no pair.
        groups: dict[Any, list[tuple[float, Any]]] = {}
        for index, record in enumerate(data):
            _require_keys(index, record, (prompt_key, response_key, score_key))
            score = _as_score(index, score_key, record[score_key])
            groups.setdefault(record[prompt_key], []).append((score, record[response_key]))

        pairs: list[PreferencePair] = []
        for prompt, responses in groups.items():
            ranked = sorted(responses, key=lambda item: item[0], reverse=True)  # stable
            for i in range(len(ranked) // 2):
                (chosen_score, chosen), (rejected_score, rejected) = ranked[i], ranked[-(i + 1)]
                if not _gap_ok(chosen_score - rejected_score, self.min_score_diff):
                    break
                pairs.append(
                    PreferencePair(
                        prompt=prompt,
                        chosen=chosen,
                        rejected=rejected,
                        chosen_score=chosen_score,
                        rejected_score=rejected_score,
                    )
                )
        return pairs

    # ------------------------------------------------------------------ single responses

    def from_single_responses(
        self,
        data: Iterable[Mapping[str, Any]],
        prompt_key: str = "prompt",
        response_key: str = "response",
        rejection_strategy: str = "perturb",
    ) -> list[PreferencePair]:
        """Make one pair per record, deriving the rejected response from the good one.

        Strategies (``chosen`` is the record's response; "words" are its
        whitespace-separated tokens, re-joined with single spaces):

        * ``"perturb"``: after word ``i``, when ``i % 5 == 0`` and ``rng.random() > 0.5``,
          insert a filler drawn with ``rng.choice`` from :data:`FILLERS`. If no filler was
          inserted, one filler (``rng.choice``) is inserted after the first word, so the
          result always differs from ``chosen``.
        * ``"truncate"``: keep the first third of the words, ``words[:max(1, len(words) // 3)]``.
          A response of one or two words is left unchanged.
        * ``"shuffle"``: split into sentences on ``". "`` (one final ``"."`` is set aside and
          put back at the end, so it does not move with its sentence) and shuffle them with
          the generator's rng. If that leaves the order unchanged, the sentence order is
          reversed instead. A single sentence has its word order reversed. (A text of
          identical sentences, or a single word, cannot change; :meth:`validate_pairs`
          drops such pairs.)
        * ``"refuse"``: the fixed refusal :data:`REFUSAL`.

        Each pair has ``metadata={"strategy": rejection_strategy}`` and no scores.

        Raises:
            ValueError: ``rejection_strategy`` is not one of :data:`REJECTION_STRATEGIES`
                (checked before any record is read), or a record lacks ``prompt_key`` or
                ``response_key`` (the message names the record's index).
        """
        if rejection_strategy not in REJECTION_STRATEGIES:
            raise ValueError(
                f"unknown rejection_strategy {rejection_strategy!r}; "
                f"choose one of {', '.join(REJECTION_STRATEGIES)}"
            )
        make_rejected: Callable[[str], str] = {
            "perturb": self._perturb,
            "truncate": self._truncate,
            "shuffle": self._shuffle,
            "refuse": lambda _chosen: REFUSAL,
        }[rejection_strategy]

        pairs: list[PreferencePair] = []
        for index, record in enumerate(data):
            _require_keys(index, record, (prompt_key, response_key))
            chosen = record[response_key]
            pairs.append(
                PreferencePair(
                    prompt=record[prompt_key],
                    chosen=chosen,
                    rejected=make_rejected(chosen),
                    metadata={"strategy": rejection_strategy},
                )
            )
        return pairs

    def _perturb(self, text: str) -> str:
        words = text.split()
        out: list[str] = []
        for i, word in enumerate(words):
            out.append(word)
            if i % 5 == 0 and self.rng.random() > 0.5:
                out.append(self.rng.choice(FILLERS))
        if len(out) == len(words):
            # Nothing was inserted: a rejected response equal to the chosen one teaches nothing.
            out.insert(min(1, len(out)), self.rng.choice(FILLERS))
        return " ".join(out)

    @staticmethod
    def _truncate(text: str) -> str:
        words = text.split()
        return " ".join(words[: max(1, len(words) // 3)])

    def _shuffle(self, text: str) -> str:
        body, end = (text[:-1], ".") if text.endswith(".") else (text, "")
        sentences = body.split(". ")
        if len(sentences) == 1:
            # Reversing characters (the draft's choice) gives gibberish; reversed words at
            # least keep real tokens.
            return " ".join(reversed(text.split()))
        shuffled = sentences[:]
        self.rng.shuffle(shuffled)
        if shuffled == sentences:
            shuffled.reverse()
        return ". ".join(shuffled) + end

    # ------------------------------------------------------------------ checks and export

    def validate_pairs_report(
        self, pairs: Iterable[PreferencePair]
    ) -> tuple[list[PreferencePair], list[tuple[PreferencePair, str]]]:
        """Split ``pairs`` into ``(valid, dropped)``, where ``dropped`` holds ``(pair, reason)``.

        A pair is dropped if ``chosen`` or ``rejected`` is shorter than
        :data:`MIN_RESPONSE_CHARS` characters, or if they are equal after stripping
        surrounding whitespace. Input order is kept in both lists.
        """
        valid: list[PreferencePair] = []
        dropped: list[tuple[PreferencePair, str]] = []
        for pair in pairs:
            if len(pair.chosen) < MIN_RESPONSE_CHARS:
                dropped.append((pair, f"chosen is shorter than {MIN_RESPONSE_CHARS} characters"))
            elif len(pair.rejected) < MIN_RESPONSE_CHARS:
                dropped.append((pair, f"rejected is shorter than {MIN_RESPONSE_CHARS} characters"))
            elif pair.chosen.strip() == pair.rejected.strip():
                dropped.append((pair, "chosen and rejected are identical"))
            else:
                valid.append(pair)
        return valid, dropped

    def validate_pairs(self, pairs: Iterable[PreferencePair]) -> list[PreferencePair]:
        """Return the pairs that pass :meth:`validate_pairs_report`, in input order."""
        return self.validate_pairs_report(pairs)[0]

    def to_huggingface_format(self, pairs: Iterable[PreferencePair]) -> list[dict[str, str]]:
        """Return ``{"prompt", "chosen", "rejected"}`` dicts, the layout TRL's DPOTrainer reads."""
        return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
