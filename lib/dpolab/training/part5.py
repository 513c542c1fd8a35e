r"""Part 5's experiments: over-optimisation, early stopping, β × learning rate, on-policy pairs, noise.

Every experiment starts from one SFT model of notebook 04's recipe (seed 0) and trains a copy
of it with :class:`~dpolab.training.preference.PreferenceSteps` (the library's loop, one step
at a time). A *seed* below is the preference run's seed: the order of its batches (and KTO's
mismatched rows); the SFT model, the pairs and the prompts are the same for every seed.

* :func:`run_cell` trains one method at one (β, learning rate, seed) with early stopping
  (:func:`~dpolab.training.early_stopping.train_with_early_stopping`): every ``eval_every``
  steps the task metric on the **validation** prompts, and the KL to the reference (the
  curve); the checkpoint with the best validation metric is then measured on the **test**
  prompts (:func:`~dpolab.training.heldout.split_held_out`: disjoint halves of the held-out
  prompts).
* :func:`run_on_policy` runs rounds of generate → pair → DPO
  (:func:`~dpolab.training.on_policy.on_policy_pairs`) against offline teacher pairs on the
  same budget.
* Noise: :func:`run_cell` on pairs flipped by :func:`~dpolab.training.noise.flip_pairs`.

``experiments/sweep_part5.py`` runs the grid below and writes ``part5_results.json``; notebook
05 loads it (:func:`dpolab.training.part5_results.load_part5_results`).

**β for the averaged losses.** DPO, KTO and the rewards read *summed* log-ratios (a response
here has 4 tokens, of which the chosen and the rejected usually differ in one). IPO (as its
authors and TRL compute it) and SimPO read *per-token averages*: IPO regresses the averaged
margin onto :math:`1/(2\beta)`, so β = 0.1 asks for 5 nats per token — about 20 nats on the
one token that differs, far beyond anything useful. Its grid is therefore β ∈ {0.5, 2, 8}
(targets of 1, 0.25 and 0.0625 nats per token). SimPO's β multiplies an average too (its
paper uses 2 to 10).
"""

from __future__ import annotations

import copy
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.batching import PreferenceData
from .displacement import response_logps
from .early_stopping import train_with_early_stopping
from .heldout import split_held_out
from .kl import kl_to_reference
from .noise import flip_pairs
from .on_policy import on_policy_pairs
from .preference import PreferenceSteps, reference_scores
from .recipe import LAB_RECIPE, Recipe, run_sft

#: Each method's loss settings (``nll_weight`` is DPO+NLL's α; ORPO's β is its λ).
METHODS: dict[str, dict[str, Any]] = {
    "DPO": {"loss": "dpo"},
    "DPO+NLL": {"loss": "dpo", "nll_weight": 1.0},
    "IPO": {"loss": "ipo"},
    "KTO": {"loss": "kto"},
    "ORPO": {"loss": "orpo"},
    "SimPO": {"loss": "simpo"},
}
#: The sweep's grid: three β per method (IPO's on the per-token scale, see the module doc) ...
BETAS: dict[str, tuple[float, ...]] = {
    "DPO": (0.1, 0.3, 1.0),
    "DPO+NLL": (0.1, 0.3, 1.0),
    "IPO": (0.5, 2.0, 8.0),
    "KTO": (0.1, 0.3, 1.0),
    "ORPO": (0.1, 0.3, 1.0),
    "SimPO": (1.0, 2.0, 5.0),
}
#: ... three learning rates (notebook 04's 1e-4 in the middle), three seeds.
LRS: tuple[float, ...] = (3e-5, 1e-4, 3e-4)
SEEDS: tuple[int, ...] = (0, 1, 2)
#: Training budget, evaluation and early stopping of every cell.
STEPS, EVAL_EVERY, PATIENCE = 150, 10, 3
#: Prompts for the KL estimate at each evaluation (the first of the validation set).
N_KL = 64
#: The noise experiment: fractions of flipped training pairs, and its methods (cDPO: label smoothing = ε).
NOISE_EPS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
NOISE_METHODS: dict[str, dict[str, Any]] = {
    "DPO": {"method": "DPO", "beta": 0.1},
    "cDPO": {"method": "DPO", "beta": 0.1, "label_smoothing": "eps"},
    "IPO": {"method": "IPO", "beta": 2.0},
}
#: The on-policy experiment: rounds of generate -> pair -> DPO, k samples per prompt at this temperature.
ON_POLICY = {"rounds": 3, "steps_per_round": 50, "k": 8, "temperature": 1.0, "prompts_per_round": 256}


@dataclass
class Setup:
    """What every experiment shares: the task, the tokenizer, the SFT model (the reference), the splits."""

    recipe: Recipe
    task: Any
    tokenizer: Any
    sft_model: torch.nn.Module
    train_pairs: list[Any]
    validation: list[str]
    test: list[str]
    device: torch.device
    _scored: list[tuple[Any, int, tuple[torch.Tensor, torch.Tensor]]] = field(
        default_factory=list, repr=False
    )

    def reference_logps(self, pairs: Sequence[Any], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The SFT model's log-probs of ``pairs``, scored once per list of pairs: the cells of a
        sweep train on the same pairs against the same reference (the same tensors as scoring
        them again)."""
        for scored, size, logps in self._scored:
            if scored is pairs and size == batch_size:  # the list itself, kept here: no reused id
                return logps
        data = PreferenceData(pairs, self.tokenizer, self.device)
        logps = reference_scores(self.sft_model, data, batch_size)
        self._scored.append((pairs, batch_size, logps))
        return logps


def make_setup(
    recipe: Recipe | None = None, device: torch.device | str = "cpu", progress: bool = False
) -> Setup:
    """The SFT model of ``recipe`` (default: notebook 04's full recipe), seed 0, and the held-out split."""
    from ..data.tokenizer import CharTokenizer

    recipe = recipe or LAB_RECIPE
    task, tokenizer = recipe.task(seed=0), CharTokenizer()
    sft_model, _ = run_sft(task, tokenizer, recipe, seed=0, device=device, progress=progress)
    validation, test = split_held_out(task.eval_prompts)
    return Setup(
        recipe,
        task,
        tokenizer,
        sft_model,
        task.preference_pairs("train"),
        validation,
        test,
        torch.device(device),
    )


def measure(setup: Setup, model: torch.nn.Module, prompts: Sequence[str]) -> dict[str, float]:
    """Task metric, KL to the reference and mean log-prob of the correct answers, on ``prompts``."""
    task, tok = setup.task, setup.tokenizer
    return {
        "task_metric": task.evaluate(model, tok, prompts, device=setup.device),
        "kl": kl_to_reference(model, setup.sft_model, tok, prompts, 5, device=setup.device),
        "chosen_logp": statistics.fmean(
            response_logps(model, tok, prompts, [task.answer(p) for p in prompts])
        ),
    }


def run_cell(
    setup: Setup,
    method: str,
    beta: float,
    lr: float,
    seed: int,
    *,
    steps: int = STEPS,
    eval_every: int = EVAL_EVERY,
    patience: int | None = PATIENCE,
    pairs: Sequence[Any] | None = None,
    label_smoothing: float = 0.0,
    keep_model: bool = False,
) -> dict[str, Any]:
    """One method at one (β, lr, seed), early-stopped on validation, measured on test.

    ``patience=None`` never stops early (the whole curve). Returns the settings, ``best_step``,
    ``val_metric`` (the best), the test ``task_metric``, ``kl`` and ``chosen_logp`` of that
    checkpoint, and the ``curve`` ``{"step", "val_metric", "kl"}`` of every evaluation
    (``model``: the checkpoint, with ``keep_model``).
    """
    policy = copy.deepcopy(setup.sft_model)
    pairs = setup.train_pairs if pairs is None else pairs
    run = PreferenceSteps(
        policy,
        setup.sft_model,
        pairs,
        setup.tokenizer,
        **METHODS[method],
        beta=beta,
        steps=steps,
        batch_size=setup.recipe.batch_size,
        lr=lr,
        seed=seed,
        device=setup.device,
        label_smoothing=label_smoothing,
        reference_logps=setup.reference_logps(pairs, setup.recipe.batch_size),
    )
    kls: list[float] = []

    def validate(model: torch.nn.Module) -> float:
        kls.append(kl_to_reference(model, setup.sft_model, setup.tokenizer, setup.validation[:N_KL], 5))
        return setup.task.evaluate(model, setup.tokenizer, setup.validation, device=setup.device)

    def test(model: torch.nn.Module) -> float:
        return setup.task.evaluate(model, setup.tokenizer, setup.test, device=setup.device)

    never = steps // eval_every + 1
    model, best_step, test_metric, history = train_with_early_stopping(
        policy, lambda _model: run()["loss"], validate, test, steps, eval_every, patience or never
    )
    scores = measure(setup, model, setup.test)
    out = {
        "method": method,
        "beta": beta,
        "lr": lr,
        "seed": seed,
        "label_smoothing": label_smoothing,
        "best_step": best_step,
        "val_metric": max(m for _, m in history),
        **scores,
        "curve": {"step": [s for s, _ in history], "val_metric": [m for _, m in history], "kl": kls},
    }
    assert out["task_metric"] == test_metric
    if keep_model:
        out["model"] = model
    return out


def train_steps(
    setup: Setup, method: str, beta: float, lr: float, seed: int, steps: int = STEPS
) -> torch.nn.Module:
    """A copy of the SFT model trained ``steps`` steps of ``method`` (no early stopping): the model at the end."""
    policy = copy.deepcopy(setup.sft_model)
    run = PreferenceSteps(
        policy, setup.sft_model, setup.train_pairs, setup.tokenizer, **METHODS[method], beta=beta, steps=steps,
        batch_size=setup.recipe.batch_size, lr=lr, seed=seed, device=setup.device,
        reference_logps=setup.reference_logps(setup.train_pairs, setup.recipe.batch_size),
    )  # fmt: skip
    for _ in range(steps):
        run()
    return policy.eval()


def run_noise(setup: Setup, name: str, eps: float, seed: int, **kwargs: Any) -> dict[str, Any]:
    """One cell of the noise experiment: ``name`` of :data:`NOISE_METHODS` on pairs with a fraction ``eps`` flipped."""
    spec = dict(NOISE_METHODS[name])
    smoothing = eps if spec.pop("label_smoothing", None) == "eps" else 0.0
    noisy, _ = flip_pairs(setup.train_pairs, eps, seed=1000 + seed)
    row = run_cell(
        setup, spec["method"], spec["beta"], 1e-4, seed, pairs=noisy, label_smoothing=smoothing, **kwargs
    )
    return {**row, "method": name, "eps": eps}


def run_on_policy(
    setup: Setup,
    generator: Any,
    seed: int,
    *,
    rounds: int = ON_POLICY["rounds"],
    steps_per_round: int = ON_POLICY["steps_per_round"],
    k: int = ON_POLICY["k"],
    temperature: float = ON_POLICY["temperature"],
    prompts_per_round: int = ON_POLICY["prompts_per_round"],
    beta: float = 0.1,
    lr: float = 1e-4,
    pair_fn: Any = on_policy_pairs,
) -> dict[str, Any]:
    """Rounds of generate → pair → DPO, and DPO on the teacher's pairs of the same prompts, same budget.

    Each round samples ``prompts_per_round`` training carry prompts, builds pairs from ``k``
    samples per prompt of the *current* policy (:func:`on_policy_pairs`, ``generator``: Part 3's
    ``PreferenceDatasetGenerator``) and trains ``steps_per_round`` DPO steps on them (the
    reference stays the SFT model). The offline run trains ``rounds * steps_per_round`` steps
    on the teacher's pairs of the same prompts. Both are measured on the test prompts.
    ``pair_fn``: the function that builds the pairs (notebook 05 passes the student's own).
    """
    task, tok = setup.task, setup.tokenizer
    rng = random.Random(seed)
    carry_prompts = [p.prompt for p in setup.train_pairs]
    policy = copy.deepcopy(setup.sft_model)
    seen: list[str] = []
    per_round = []
    for r in range(rounds):
        prompts = rng.sample(carry_prompts, prompts_per_round)
        seen += prompts
        pairs = on_policy_pairs(
            policy, prompts, tok, generator, task.score, k, temperature, seed=100 * seed + r
        )
        run = PreferenceSteps(
            policy, setup.sft_model, pairs, tok, loss="dpo", beta=beta, steps=steps_per_round,
            batch_size=setup.recipe.batch_size, lr=lr, seed=100 * seed + r, device=setup.device,
        )  # fmt: skip
        for _ in range(steps_per_round):
            run()
        per_round.append({"round": r + 1, "pairs": len(pairs), **measure(setup, policy, setup.test)})
    offline = copy.deepcopy(setup.sft_model)
    by_prompt = {p.prompt: p for p in setup.train_pairs}
    teacher = [by_prompt[p] for p in dict.fromkeys(seen)]
    run = PreferenceSteps(
        offline, setup.sft_model, teacher, tok, loss="dpo", beta=beta, steps=rounds * steps_per_round,
        batch_size=setup.recipe.batch_size, lr=lr, seed=seed, device=setup.device,
    )  # fmt: skip
    for _ in range(rounds * steps_per_round):
        run()
    return {
        "seed": seed,
        "on_policy": per_round,
        "offline": {"pairs": len(teacher), **measure(setup, offline, setup.test)},
    }


def most_displaced(setup: Setup, model: torch.nn.Module, pairs: Sequence[Any]) -> Any:
    """The pair of ``pairs`` whose chosen response lost the most log-probability (``model`` against the SFT model)."""
    chosen = [p.chosen for p in pairs]
    prompts = [p.prompt for p in pairs]
    after = response_logps(model, setup.tokenizer, prompts, chosen)
    before = response_logps(setup.sft_model, setup.tokenizer, prompts, chosen)
    change = [a - b for a, b in zip(after, before, strict=True)]
    return pairs[change.index(min(change))]


def summarise(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Group ``rows`` by ``keys`` (e.g. method, β, lr) and give each group's mean and sd over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for key, group in groups.items():
        entry = dict(zip(keys, key, strict=True))
        entry["n_seeds"] = len(group)
        for name in ("task_metric", "kl", "chosen_logp", "best_step", "val_metric"):
            values = [g[name] for g in group]
            entry[name] = statistics.fmean(values)
            entry[name + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out
