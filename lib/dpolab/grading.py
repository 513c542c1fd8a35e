"""Helpers for the notebooks' tests (visible and hidden): random inputs and a guard.

The hidden tests compare a student's class against the reference in this package. A
student could pass them by importing the reference instead of writing it;
:func:`run_own_code` runs a call under a profiler and fails if any function defined in
``dpolab`` (outside this module) executes during it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_THIS_FILE = os.path.abspath(__file__)


class ReferenceUsedError(AssertionError):
    """The code under test called into ``dpolab`` instead of implementing the exercise."""


def run_own_code(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn(*args, **kwargs)`` and fail if it runs any of dpolab's reference code.

    Raises :class:`ReferenceUsedError` (an ``AssertionError``: no points) naming the
    reference function that ran.
    """
    used: list[str] = []

    def profiler(frame, event, arg):  # called by the interpreter on every Python call
        if event == "call" and not used:
            filename = os.path.abspath(frame.f_code.co_filename)
            if filename.startswith(_PACKAGE_DIR) and filename != _THIS_FILE:
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
    from .losses.orpo import log1mexp

    logps = torch.as_tensor(logps, dtype=torch.float64).reshape(-1)
    if (logps >= 0).any():
        raise ValueError(f"logps must be < 0, got {logps.tolist()}")
    logits = torch.zeros(len(logps), 2, 2, dtype=torch.float64)
    logits[:, 0, 1] = logps - log1mexp(logps)  # logit(p) = log p - log(1 - p)
    labels = torch.tensor([[0, 1]] * len(logps))
    loss_mask = torch.tensor([[0, 1]] * len(logps))
    return logits.to(device=device, dtype=dtype), labels.to(device), loss_mask.to(device)


def _plain_sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    # Written out here (not a call into dpolab.losses.logprobs) so that run_own_code does not flag it.
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    mask = loss_mask[:, 1:].bool()
    targets = labels[:, 1:].masked_fill(~mask, 0)
    token = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, token, torch.zeros_like(token)).sum(-1)


def with_correct_log_probs(loss_class: type) -> type:
    """A subclass of ``loss_class`` whose ``compute_log_probs`` is known to be right.

    The tests of ``forward`` use it, so that they grade ``forward`` alone: a bug in the
    log-probabilities costs the log-probability points, not every part of the exercise.
    """

    class WithCorrectLogProbs(loss_class):
        def compute_log_probs(self, logits, labels, loss_mask):
            return _plain_sequence_logps(logits, labels, loss_mask)

    WithCorrectLogProbs.__name__ = WithCorrectLogProbs.__qualname__ = loss_class.__name__
    return WithCorrectLogProbs
