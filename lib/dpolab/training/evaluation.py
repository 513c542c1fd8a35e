r"""Measure a tuned policy: the task metric, the implicit-reward accuracy, the KL to the reference.

The KL estimator lives in :mod:`.kl` (:func:`kl_to_reference`, re-exported here); the
reward accuracy scores pairs with :func:`~dpolab.training.preference.concatenated_logps`.
:func:`run_preference` trains and measures one method: one row of notebook 04's table.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.batching import PreferenceData
from .kl import kl_to_reference
from .preference import concatenated_logps, train_preference


@torch.no_grad()
def reward_accuracy(
    policy: Any, reference: Any, pairs: Sequence[Any], tokenizer: Any, batch_size: int = 128
) -> float:
    r"""Fraction of ``pairs`` whose implicit reward prefers the chosen response.

    The DPO reward :math:`\beta\log\frac{\pi_\theta(y\mid x)}{\pi_\mathrm{ref}(y\mid x)}`
    for every method (β > 0 does not change which response wins), so that methods
    trained with different losses are measured the same way. Ties count as failures.
    """
    device = next(policy.parameters()).device
    data = PreferenceData(pairs, tokenizer, device)
    modes = policy.training, reference.training
    policy.eval()
    reference.eval()
    wins = 0
    try:
        for batch in data.batches(batch_size):
            pc, pr = concatenated_logps(policy, batch)
            rc, rr = concatenated_logps(reference, batch)
            wins += int(((pc - rc) > (pr - rr)).sum())
    finally:
        policy.train(modes[0])
        reference.train(modes[1])
    return wins / len(data)


@dataclass
class PreferenceRun:
    """One row of the results table, with what produced it."""

    method: str
    task_metric: float  # exact-answer accuracy on the held-out prompts (greedy)
    reward_accuracy: float  # implicit-reward accuracy on held-out pairs
    kl: float  # KL(policy || reference) per response, nats (see kl_to_reference)
    wall_time_s: float  # training, reference precompute included (evaluation excluded)
    history: dict[str, list[float]] = field(repr=False)
    policy: torch.nn.Module = field(repr=False)

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "task_metric": self.task_metric,
            "reward_accuracy": self.reward_accuracy,
            "kl": self.kl,
            "wall_time_s": self.wall_time_s,
        }


def evaluate_policy(
    policy: Any,
    reference: Any,
    task: Any,
    tokenizer: Any,
    eval_pairs: Sequence[Any] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """``task_metric``, ``reward_accuracy`` and ``kl`` of ``policy`` on ``task``'s held-out data."""
    device = next(policy.parameters()).device
    eval_pairs = task.preference_pairs("eval") if eval_pairs is None else eval_pairs
    max_new = max(len(tokenizer.encode(p.chosen)) for p in eval_pairs) + 2
    return {
        "task_metric": task.evaluate(policy, tokenizer, device=device),
        "reward_accuracy": reward_accuracy(policy, reference, eval_pairs, tokenizer),
        "kl": kl_to_reference(
            policy, reference, tokenizer, task.eval_prompts, max_new, device=device, seed=seed
        ),
    }


def run_preference(
    sft_model: torch.nn.Module,
    task: Any,
    tokenizer: Any,
    *,
    loss: str = "dpo",
    method: str | None = None,
    pairs: Sequence[Any] | None = None,
    recipe: Any = None,
    seed: int = 0,
    track_task_metric: bool = False,
    **train_kwargs: Any,
) -> PreferenceRun:
    """Copy ``sft_model``, tune the copy with ``loss`` on ``task``'s pairs, measure it: one table row.

    The SFT model is the reference and stays untouched. Steps, batch size and learning
    rate come from ``recipe`` (default :func:`~dpolab.training.recipe.lab_recipe`);
    ``train_kwargs`` override them and reach :func:`~dpolab.training.preference.train_preference`
    (``beta``, ``nll_weight``, ``device``, ``progress``, ``eval_every`` ...).
    ``track_task_metric`` adds the task metric on 64 held-out prompts to every evaluation
    (``eval_every``). ``method`` names the row (default: the loss, ``+NLL`` with ``nll_weight``).
    """
    from .recipe import lab_recipe

    recipe = recipe or lab_recipe()
    kwargs = {**recipe.train_kwargs(), **train_kwargs}
    kwargs.setdefault("device", next(sft_model.parameters()).device)
    if track_task_metric:
        probe = task.eval_prompts[:64]
        kwargs["eval_fn"] = lambda policy: {"task_metric": task.evaluate(policy, tokenizer, probe)}
    reference = sft_model
    reference.eval()
    policy = copy.deepcopy(sft_model)
    pairs = task.preference_pairs("train") if pairs is None else pairs
    if method is None:
        method = loss.upper() + ("+NLL" if kwargs.get("nll_weight") else "")
    start = time.perf_counter()
    history = train_preference(policy, reference, pairs, tokenizer, loss=loss, seed=seed, **kwargs)
    wall = time.perf_counter() - start
    scores = evaluate_policy(policy, reference, task, tokenizer, seed=seed)
    policy.eval()
    return PreferenceRun(method=method, wall_time_s=wall, history=history, policy=policy, **scores)
