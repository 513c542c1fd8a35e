"""Helpers for the notebooks' tests (visible and hidden): random inputs and a guard.

The hidden tests compare a student's class against the reference in this package. A
student could pass them by importing the reference instead of writing it;
:func:`run_own_code` runs a call under a profiler and fails if any function defined in
``dpolab`` (outside this module) executes during it.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from collections.abc import Callable, Iterable
from typing import Any

import torch

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_THIS_FILE = os.path.abspath(__file__)


class ReferenceUsedError(AssertionError):
    """The code under test called into ``dpolab`` instead of implementing the exercise."""


def _source_file(obj: Any) -> str:
    """The file that defines ``obj``: a module, a class, a function, or an instance's class."""
    if isinstance(obj, str):
        return os.path.abspath(obj)
    if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj)):
        obj = type(obj)
    return os.path.abspath(inspect.getfile(obj))


def run_own_code(fn: Callable[..., Any], *args: Any, allow: Iterable[Any] = (), **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` and fail if it runs any of dpolab's reference code.

    Raises :class:`ReferenceUsedError` (an ``AssertionError``: no points) naming the
    reference function that ran.

    ``allow`` lists dpolab code the exercise may run, given as modules, classes, functions
    or instances (an instance stands for its class): calls into the files that define them
    are not flagged, nor is anything those calls run in turn. Notebook 04 passes the model
    under test here: a student's training step must run ``TinyGPT``, which lives in dpolab.
    """
    allowed = {_source_file(a) for a in allow}
    used: list[str] = []
    inside: list[Any] = []  # frames of allowed code that are running

    def profiler(frame, event, arg):  # called by the interpreter on every Python call
        if inside:
            if event == "return" and frame is inside[-1]:
                inside.pop()
            return
        if event == "call" and not used:
            filename = os.path.abspath(frame.f_code.co_filename)
            if filename in allowed:
                inside.append(frame)
            elif filename.startswith(_PACKAGE_DIR) and filename != _THIS_FILE:
                used.append(f"{os.path.basename(filename)}:{frame.f_code.co_name}")

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    if used:
        raise ReferenceUsedError(
            f"your code called dpolab's reference ({used[0]}): the exercise is to implement it yourself"
        )
    return result


def random_lm_batch(
    batch: int = 4,
    seq_len: int = 10,
    vocab: int = 17,
    prompt_len: int = 3,
    pad_right: int = 2,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded ``(logits, labels, loss_mask)``: prompt tokens, then response, then padding.

    Row ``i`` ends with ``i % (pad_right + 1)`` padding positions, so lengths differ.
    Generated on the CPU in float64 and moved, so every device sees the same numbers.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq_len, vocab, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, vocab, (batch, seq_len), generator=g)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for i in range(batch):
        mask[i, prompt_len : seq_len - (i % (pad_right + 1))] = 1
    return logits.to(device=device, dtype=dtype), labels.to(device), mask.to(device)


def batch_with_logps(
    logps, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, labels, loss_mask)`` of one-token responses whose log-probs are ``logps``.

    Each row is a prompt token (position 0) and a response token (position 1, id 1) over a
    vocabulary of 2. ``logits[:, 0] = [0, logit(p)]`` with ``p = exp(logp)``, so that
    ``log softmax(logits[:, 0])[1] = logp`` exactly: tests can pick the log-probs they need.
    """
    logps = torch.as_tensor(logps, dtype=torch.float64).reshape(-1)
    if (logps >= 0).any():
        raise ValueError(f"logps must be < 0, got {logps.tolist()}")
    logits = torch.zeros(len(logps), 2, 2, dtype=torch.float64)
    # logit(p) = log p - log(1 - p); in float64, log(1 - p) = log(-expm1(log p)) is exact enough here
    logits[:, 0, 1] = logps - torch.log(-torch.expm1(logps))
    labels = torch.tensor([[0, 1]] * len(logps))
    loss_mask = torch.tensor([[0, 1]] * len(logps))
    return logits.to(device=device, dtype=dtype), labels.to(device), loss_mask.to(device)


def with_correct_log_probs(loss_class: type) -> type:
    """A subclass of ``loss_class`` whose ``compute_log_probs`` is known to be right on the
    one-token batches of :func:`batch_with_logps` (and refuses any other batch).

    The tests of ``forward`` use it, so that they grade ``forward`` alone: a bug in the
    log-probabilities costs the log-probability points, not every part of the exercise. On
    those batches the log-prob has a closed form (a softmax over two symbols), so this is not
    the exercise's answer, which must work on any sequence.
    """

    class WithCorrectLogProbs(loss_class):
        def compute_log_probs(self, logits, labels, loss_mask):
            ones = torch.ones_like(labels[:, 1:]) if labels.dim() == 2 else None
            if (
                logits.dim() != 3
                or tuple(logits.shape[1:]) != (2, 2)
                or ones is None
                or not bool((labels[:, 1:] == ones).all())
                or not bool((loss_mask[:, :1] == 0).all())
            ):
                raise ValueError("with_correct_log_probs only knows the batches of batch_with_logps")
            z = logits[:, 0].to(torch.promote_types(logits.dtype, torch.float32))
            logp = -torch.nn.functional.softplus(z[:, 0] - z[:, 1])  # log of e^z1 / (e^z0 + e^z1)
            return logp * loss_mask[:, 1].to(logp.dtype)

    WithCorrectLogProbs.__name__ = WithCorrectLogProbs.__qualname__ = loss_class.__name__
    return WithCorrectLogProbs


# --------------------------------------------------------------------------- notebook 04
# Helpers for the tests of Exercise 4 (a training step). Everything here runs outside the
# guard's reach (this module is exempt), so the tests can plug in known-good pieces.


class CountingLM(torch.nn.Module):
    """Wraps a causal LM and records the shape of ``input_ids`` at each forward call.

    ``calls`` lists those shapes: one concatenated forward over B pairs shows as one
    ``(2B, T)`` entry; separate chosen and rejected forwards show as two ``(B, T_i)`` entries.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, ...]] = []

    def forward(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(tuple(input_ids.shape))
        return self.model(input_ids, *args, **kwargs)


class ContextFreeLM(torch.nn.Module):
    r"""A fake causal LM for the tests of a training step: it ignores the context.

    Its only parameter is a vector ``w`` of ``vocab_size`` logits, returned at every position
    of every row: ``model(input_ids)`` is ``w`` broadcast to ``(N, T, V)``. So the log-prob of
    a response is a closed form, :math:`\sum_{t\in y}\log\mathrm{softmax}(w)[y_t]` (the
    tokens' order and the prompt do not matter), and :func:`context_free_concatenated_logps`
    is known to be right for it. ``w`` is drawn from a generator seeded by ``seed``
    (``N(0, scale^2)``).
    """

    def __init__(self, vocab_size: int = 11, seed: int = 0, scale: float = 1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(vocab_size, generator=g) * scale)

    def forward(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.w.expand(*input_ids.shape, self.w.shape[0])


def context_free_concatenated_logps(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Known-good ``concatenated_logps`` for a :class:`ContextFreeLM` (possibly wrapped in
    :class:`CountingLM`), and for no other model: it refuses logits that depend on the context.

    One forward over the chosen and the rejected rows stacked (so :class:`CountingLM` sees one
    ``(2B, T)`` call); each row's log-prob is then the closed form of :class:`ContextFreeLM`,
    the count of each response token times its log-probability. This is not the exercise's
    answer, which must work for any causal LM.
    """
    sides = (batch.chosen, batch.rejected)
    width = max(side.input_ids.shape[1] for side in sides)
    input_ids, loss_mask = (
        torch.cat(
            [
                torch.nn.functional.pad(getattr(side, name), (0, width - side.input_ids.shape[1]))
                for side in sides
            ]
        )
        for name in ("input_ids", "loss_mask")
    )
    scores = model(input_ids)  # a single forward over all 2B rows
    if scores.dim() != 3 or not bool((scores == scores[:1, :1]).all()):
        raise ValueError(
            "context_free_concatenated_logps only knows ContextFreeLM (logits that ignore the context)"
        )
    log_probs = torch.log_softmax(scores[:, 0].to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
    # counts[i, v]: how often token v is a response token of row i (position 0 is never scored)
    counts = torch.zeros_like(log_probs).scatter_add_(
        1, input_ids[:, 1:], loss_mask[:, 1:].to(log_probs.dtype)
    )
    per_row = (counts * log_probs).sum(-1)
    return per_row[: len(per_row) // 2], per_row[len(per_row) // 2 :]


def with_correct_concatenated_logps(step_fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``step_fn`` that sees :func:`context_free_concatenated_logps` as its
    ``concatenated_logps`` (a global of the notebook).

    The tests of ``dpo_train_step`` use it on :class:`ContextFreeLM` policies, so that they
    grade the step alone: a bug in the student's ``concatenated_logps`` costs that function's
    points, not the step's too. (A step that does not call ``concatenated_logps`` is graded
    as written.)
    """
    namespace = {**step_fn.__globals__, "concatenated_logps": context_free_concatenated_logps}
    checked = types.FunctionType(
        step_fn.__code__, namespace, step_fn.__name__, step_fn.__defaults__, step_fn.__closure__
    )
    checked.__kwdefaults__ = step_fn.__kwdefaults__
    return checked


def random_preference_batch(
    batch: int = 3,
    vocab_size: int = 11,
    prompt_len: tuple[int, int] = (2, 5),
    chosen_len: tuple[int, int] = (1, 6),
    rejected_len: tuple[int, int] = (1, 6),
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Any:
    """A seeded :class:`~dpolab.PreferenceBatch` of random token ids, lengths drawn per row.

    Lengths are drawn uniformly from the inclusive ranges, so rows differ and the chosen and
    rejected sides usually have different widths. Token ids avoid 0 (the padding id).
    """
    from . import collate_preferences  # the package, wherever the module lives

    g = torch.Generator().manual_seed(seed)

    def rows(lengths: tuple[int, int]) -> list[list[int]]:
        out = []
        for _ in range(batch):
            n = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
            out.append(torch.randint(1, vocab_size, (n,), generator=g).tolist())
        return out

    prompts, chosen, rejected = rows(prompt_len), rows(chosen_len), rows(rejected_len)
    return collate_preferences(prompts, chosen, rejected, pad_token_id=0).to(device)


# --------------------------------------------------------------------------- notebook 05
# Test doubles for Exercise 5b (on-policy pairs): a policy whose samples are known, and a pair
# generator that records what it is given.


class LetterLM(torch.nn.Module):
    r"""A fake causal LM whose response is one letter, then EOS: its samples are known in advance.

    After any context that does not end in one of ``letters``, the next-token logits are
    ``letters``' values (every other token far below); after a letter, EOS. So a sampled
    response is a single letter, drawn from ``softmax(logits / temperature)``, and greedy
    decoding always gives the letter with the largest logit. ``tokenizer`` is the lab's
    :class:`~dpolab.CharTokenizer` (its ids).
    """

    def __init__(self, tokenizer: Any, letters: dict[str, float]):
        super().__init__()
        self.vocab_size = tokenizer.vocab_size
        self.eos = tokenizer.eos_token_id
        self.letter_ids = [tokenizer.encode(ch)[0] for ch in letters]
        self.letter_logits = torch.tensor(list(letters.values()), dtype=torch.float32)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter: the device and no state

    def forward(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        n, t = input_ids.shape
        logits = torch.full((n, t, self.vocab_size), -30.0, device=input_ids.device) + 0 * self.anchor
        after_letter = torch.isin(input_ids, torch.tensor(self.letter_ids, device=input_ids.device))
        ids = torch.tensor(self.letter_ids, device=input_ids.device)
        logits[..., ids] = torch.where(
            after_letter[..., None],
            torch.tensor(-30.0, device=input_ids.device),
            self.letter_logits.to(input_ids.device),
        )
        logits[..., self.eos] = torch.where(after_letter, 0.0, -30.0)
        return logits


class ScoredPair(types.SimpleNamespace):
    """A pair as :class:`PairRecorder` makes it: prompt, chosen, rejected and their scores."""


class PairRecorder:
    """A stand-in for Part 3's ``PreferenceDatasetGenerator`` that records what it is given.

    ``from_scored_responses(data, prompt_key="prompt", response_key="response", score_key="score")``
    stores every record it receives (``records``) and returns, per prompt in first-seen order,
    one pair: the first response with the highest score against the last with the lowest,
    kept when their gap is at least ``min_score_diff`` (so a prompt whose responses all score
    the same gives none). Every pair it returned is in ``returned``.
    """

    def __init__(self, min_score_diff: float = 0.5):
        self.min_score_diff = float(min_score_diff)  # a gap, compared with float scores
        self.records: list[dict[str, Any]] = []
        self.returned: list[ScoredPair] = []
        self.calls = 0

    def from_scored_responses(
        self,
        data: Iterable[Any],
        prompt_key: str = "prompt",
        response_key: str = "response",
        score_key: str = "score",
    ) -> list[ScoredPair]:
        self.calls += 1
        groups: dict[Any, list[tuple[float, Any]]] = {}
        for record in data:
            entry = {
                "prompt": record[prompt_key],
                "response": record[response_key],
                "score": record[score_key],
            }
            self.records.append(entry)
            groups.setdefault(entry["prompt"], []).append((float(entry["score"]), entry["response"]))
        pairs = []
        for prompt, scored in groups.items():
            top = max(s for s, _ in scored)
            low = min(s for s, _ in scored)
            chosen = next(r for s, r in scored if s == top)
            rejected = [r for s, r in scored if s == low][-1]
            if top - low >= self.min_score_diff:
                pairs.append(ScoredPair(prompt=prompt, chosen=chosen, rejected=rejected, chosen_score=top,
                                        rejected_score=low))  # fmt: skip
        self.returned += pairs
        return pairs


# --------------------------------------------------------------------------- hidden tests
# The hidden tests record what the student's code returned; the grader judges the records
# outside the student's kernel (see dpolab.records).
from .records import Probe as Probe  # noqa: E402  (re-exported for the hidden tests)
