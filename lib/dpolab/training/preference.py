r"""Preference training: one concatenated forward per step, the reference scored once, any of the lab's losses.

Three ideas make a DPO step cheap (the model's forward and backward are nearly all of it):

1. **One forward for chosen and rejected.** The two responses of a pair are padded to
   one width and stacked into a (2B, T) batch: one call to the model instead of two,
   bigger matrix multiplies, one backward. :func:`concatenated_logps`.
2. **The reference is a constant.** :math:`\log\pi_\mathrm{ref}(y\mid x)` never changes
   during training, so it is computed once, before the first step, under ``no_grad``
   (:func:`precompute_reference_logps`), not by a second model at every step.
3. **Everything else is small tensors.** The losses read (B,) log-probs.

:func:`dpo_train_step` is one optimiser step of DPO; :func:`train_preference` is the loop
for DPO, IPO, KTO, ORPO and SimPO, with an optional NLL term on the chosen responses (RPO).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..data.batching import PreferenceBatch, PreferenceData, SequenceBatch, _gather
from ..losses.dpo import dpo_loss
from ..losses.ipo import ipo_loss
from ..losses.kto import estimate_kl, kto_loss
from ..losses.logprobs import response_token_counts, sequence_logps
from ..losses.metrics import preference_metrics
from ..losses.orpo import orpo_odds_ratio_loss
from ..losses.simpo import simpo_loss
from .generation import logits_of
from .recipe import DEFAULT_BETA
from .sft import cosine_lr, progress_bar

#: Losses that need no reference model (the reference then only serves the metrics).
REFERENCE_FREE = ("orpo", "simpo")

METRIC_KEYS = (
    "loss",
    "accuracy",
    "chosen_reward",
    "rejected_reward",
    "reward_margin",
    "chosen_log_prob",
    "rejected_log_prob",
)


def _pad_to(x: torch.Tensor, width: int, value: int = 0) -> torch.Tensor:
    return F.pad(x, (0, width - x.shape[1]), value=value)


def concatenate(batch: PreferenceBatch, pad_token_id: int = 0) -> SequenceBatch:
    """Chosen rows on top of rejected rows, right-padded to one width: a (2B, T) :class:`SequenceBatch`."""
    chosen, rejected = batch.chosen, batch.rejected
    if chosen.input_ids.shape[0] != rejected.input_ids.shape[0]:
        raise ValueError(
            "batch.chosen and batch.rejected must hold the same number of rows, "
            f"got {chosen.input_ids.shape[0]} and {rejected.input_ids.shape[0]}"
        )
    width = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1])
    return SequenceBatch(
        torch.cat(
            [_pad_to(chosen.input_ids, width, pad_token_id), _pad_to(rejected.input_ids, width, pad_token_id)]
        ),
        torch.cat([_pad_to(chosen.attention_mask, width), _pad_to(rejected.attention_mask, width)]),
        torch.cat([_pad_to(chosen.loss_mask, width), _pad_to(rejected.loss_mask, width)]),
    )


def concatenated_logps(
    model: Any, batch: PreferenceBatch, average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(chosen_logps, rejected_logps)``, each (B,), from ONE forward over the stacked (2B, T) batch.

    :math:`\log\pi(y\mid x) = \sum_t m_{t+1}\log\mathrm{softmax}(z_t)[\ell_{t+1}]` over each
    response (``average=True``: divided by its number of tokens). ``model(input_ids,
    attention_mask=...)`` may return the logits or an object with ``.logits`` (Hugging
    Face). With right padding, the extra padding added to the shorter side changes no
    real position's logits (causal attention looks left only).
    """
    if not isinstance(batch, PreferenceBatch):
        raise ValueError(f"batch must be a dpolab.PreferenceBatch, got {type(batch).__name__}")
    stacked = concatenate(batch)
    logits = logits_of(model(stacked.input_ids, attention_mask=stacked.attention_mask))
    logps = sequence_logps(logits, stacked.input_ids, stacked.loss_mask, average=average)
    n = batch.chosen.input_ids.shape[0]
    return logps[:n], logps[n:]


def dpo_train_step(
    policy: torch.nn.Module,
    batch: PreferenceBatch,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    beta: float = 0.1,
) -> dict[str, float]:
    """One optimiser step of DPO; returns the loss and the reward metrics as Python floats.

    Zero the gradients, one concatenated forward, the batch-mean DPO loss (reference
    log-probs are constants: :func:`~dpolab.losses.dpo.dpo_loss` detaches them), backward,
    step. Keys: ``loss``, ``accuracy``, ``chosen_reward``, ``rejected_reward``,
    ``reward_margin``, ``chosen_log_prob``, ``rejected_log_prob``.
    """
    optimizer.zero_grad(set_to_none=True)
    policy_chosen_logps, policy_rejected_logps = concatenated_logps(policy, batch)
    loss = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    ).mean()
    loss.backward()
    optimizer.step()
    metrics = preference_metrics(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return _as_floats({"loss": loss.detach(), **metrics})


def _as_floats(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    # One device-to-host copy for all of them, not one per .item().
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))


@torch.no_grad()
def precompute_reference_logps(
    ref_model: Any,
    batches: PreferenceBatch | Iterable[PreferenceBatch],
    average: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of every pair, computed once before training: ``(chosen, rejected)``.

    ``batches`` is one :class:`PreferenceBatch` (results of shape (B,)) or an iterable of
    them (results concatenated in order). Runs under ``no_grad`` with the model in eval
    mode (its mode is restored), one concatenated forward per batch.
    """
    single = isinstance(batches, PreferenceBatch)
    was_training = ref_model.training
    ref_model.eval()
    chosen, rejected = [], []
    try:
        for batch in [batches] if single else batches:
            if device is not None:
                batch = batch.to(device)
            c, r = concatenated_logps(ref_model, batch, average=average)
            chosen.append(c)
            rejected.append(r)
    finally:
        ref_model.train(was_training)
    if not chosen:
        raise ValueError("batches must hold at least one PreferenceBatch")
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def sequence_logps_of(model: Any, batch: SequenceBatch) -> torch.Tensor:
    """Per-row summed response log-probs of a :class:`SequenceBatch` under ``model``, no gradient."""
    logits = logits_of(model(batch.input_ids, attention_mask=batch.attention_mask))
    return sequence_logps(logits, batch.input_ids, batch.loss_mask)


def preference_loss(
    loss: str,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    kl_estimate: torch.Tensor | None = None,
    simpo_gamma: float = 1.0,
) -> torch.Tensor:
    """The batch-mean loss ``loss`` from summed log-probs (and token counts, for the averaged ones).

    * ``dpo``: :func:`~dpolab.losses.dpo.dpo_loss` on summed log-probs;
    * ``ipo``: :func:`~dpolab.losses.ipo.ipo_loss` on per-token *average* log-ratios (as the
      IPO authors and TRL do);
    * ``kto``: :func:`~dpolab.losses.kto.kto_loss` with chosen as desirable, rejected as
      undesirable, reference point ``kl_estimate``;
    * ``orpo``: NLL of the chosen tokens + β·odds-ratio loss (β is ORPO's λ), no reference;
    * ``simpo``: :func:`~dpolab.losses.simpo.simpo_loss` on average log-probs, margin ``simpo_gamma``.
    """
    c_tok, r_tok = chosen_tokens.clamp(min=1), rejected_tokens.clamp(min=1)
    if loss == "dpo":
        return dpo_loss(
            policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
        ).mean()
    if loss == "ipo":
        chosen_ratio = (policy_chosen_logps - ref_chosen_logps) / c_tok
        rejected_ratio = (policy_rejected_logps - ref_rejected_logps) / r_tok
        return ipo_loss(chosen_ratio, rejected_ratio, beta).mean()
    if loss == "kto":
        log_ratios = torch.cat(
            [policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps]
        )
        desirable = torch.cat(
            [torch.ones_like(c_tok, dtype=torch.bool), torch.zeros_like(r_tok, dtype=torch.bool)]
        )
        return kto_loss(log_ratios, desirable, 0.0 if kl_estimate is None else kl_estimate, beta).mean()
    if loss == "orpo":
        nll = -policy_chosen_logps.sum() / c_tok.sum()
        or_losses, _ = orpo_odds_ratio_loss(policy_chosen_logps / c_tok, policy_rejected_logps / r_tok)
        return nll + beta * or_losses.mean()
    if loss == "simpo":
        return simpo_loss(
            policy_chosen_logps / c_tok, policy_rejected_logps / r_tok, beta, simpo_gamma
        ).mean()
    raise ValueError(f"loss must be one of {tuple(DEFAULT_BETA)}, got {loss!r}")


def reference_scores(
    ref_model: Any, data: PreferenceData, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``(chosen, rejected)`` log-probs of every pair of ``data``, as
    :class:`PreferenceSteps` scores them (batches of at least 256 pairs)."""
    return precompute_reference_logps(ref_model, data.batches(max(batch_size, 256)))


def _per_pair(logps: Any, n: int, device: torch.device, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Given ``(chosen, rejected)`` log-probs as tensors on ``device``, each of shape (n,)."""
    chosen, rejected = (torch.as_tensor(t, device=device).detach() for t in logps)
    if chosen.shape != (n,) or rejected.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},) (one per pair), got {tuple(chosen.shape)} and {tuple(rejected.shape)}"
        )
    return chosen, rejected


class PreferenceSteps:
    """A preference-training run, one optimiser step per call: ``steps()`` returns that step's metrics.

    The set-up of :func:`train_preference` (the reference scored once, AdamW with warm-up and
    cosine decay over ``steps``, batches drawn by a generator seeded by ``seed``) without its
    loop, so that another loop (early stopping, on-policy rounds) can decide when to stop,
    evaluate or change the pairs. Arguments as in :func:`train_preference`;
    ``label_smoothing`` is cDPO's ε (``loss="dpo"`` only). ``policy`` is trained in place.
    ``reference_logps``: the reference model's ``(chosen, rejected)`` log-probs of ``pairs`` when
    they are scored already (:func:`reference_scores`); ``reference`` is still the model.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        reference: torch.nn.Module | tuple[torch.Tensor, torch.Tensor] | None,
        pairs: Sequence[Any],
        tokenizer: Any,
        *,
        loss: str = "dpo",
        beta: float | None = None,
        nll_weight: float = 0.0,
        steps: int = 100,
        batch_size: int = 32,
        lr: float = 1e-3,
        warmup: int = 10,
        seed: int = 0,
        device: torch.device | str | None = None,
        simpo_gamma: float = 1.0,
        label_smoothing: float = 0.0,
        reference_logps: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        if loss not in DEFAULT_BETA:
            raise ValueError(f"loss must be one of {tuple(DEFAULT_BETA)}, got {loss!r}")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
        if nll_weight < 0:
            raise ValueError(f"nll_weight must be >= 0, got {nll_weight}")
        if label_smoothing and loss != "dpo":
            raise ValueError(f"label_smoothing is cDPO's: it needs loss='dpo', got {loss!r}")
        self.loss, self.nll_weight, self.simpo_gamma = loss, nll_weight, simpo_gamma
        self.label_smoothing, self.batch_size = label_smoothing, batch_size
        self.beta = DEFAULT_BETA[loss] if beta is None else beta
        self.device = device = (
            torch.device(device) if device is not None else next(policy.parameters()).device
        )
        torch.manual_seed(seed)
        self.policy = policy.to(device)
        self.data = data = PreferenceData(pairs, tokenizer, device)
        self.ref_model = ref_model = reference if isinstance(reference, torch.nn.Module) else None

        # --- the reference, scored once ----------------------------------------------
        if (
            ref_model is not None and reference_logps is not None
        ):  # scored already (a sweep's cells share them)
            ref_model.to(device)
            self.ref_chosen, self.ref_rejected = _per_pair(
                reference_logps, len(data), device, "reference_logps"
            )
        elif ref_model is not None:
            ref_model.to(device)
            self.ref_chosen, self.ref_rejected = reference_scores(ref_model, data, batch_size)
        elif reference is not None:
            self.ref_chosen, self.ref_rejected = _per_pair(
                reference, len(data), device, "reference log-probs"
            )
        elif loss in REFERENCE_FREE:
            self.ref_chosen = self.ref_rejected = torch.zeros(len(data), device=device)
        else:
            raise ValueError(f"reference must be given for loss={loss!r} (a model or precomputed log-probs)")
        if loss == "kto":
            if ref_model is None:
                raise ValueError("reference must be a model for loss='kto' (its KL rows are scored once too)")
            self.kl_rows = data.mismatched()
            was_training = ref_model.training
            ref_model.eval()
            self.ref_kl = sequence_logps_of(ref_model, self.kl_rows)
            ref_model.train(was_training)

        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_lr(s, steps, min(warmup, steps))
        )
        self.generator = torch.Generator().manual_seed(seed)
        policy.train()

    def __call__(self) -> dict[str, float]:
        """One optimiser step on a random batch; the loss and the reward metrics, as floats."""
        policy, data, loss = self.policy, self.data, self.loss
        rows = torch.randint(len(data), (min(self.batch_size, len(data)),), generator=self.generator).to(
            self.device
        )
        batch = data.batch(rows)
        policy_chosen, policy_rejected = concatenated_logps(policy, batch)
        chosen_tokens = response_token_counts(batch.chosen.loss_mask)
        rejected_tokens = response_token_counts(batch.rejected.loss_mask)
        kl_estimate = None
        if loss == "kto":
            # z0 from mismatched pairs: a no-grad forward of the policy on B rows.
            policy_kl = sequence_logps_of(policy, _gather(self.kl_rows, rows))
            kl_estimate = estimate_kl(policy_kl, self.ref_kl[rows])
        ref_chosen, ref_rejected = self.ref_chosen[rows], self.ref_rejected[rows]
        if self.label_smoothing:
            total = dpo_loss(
                policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta, self.label_smoothing
            ).mean()
        else:
            total = preference_loss(
                loss,
                policy_chosen,
                policy_rejected,
                ref_chosen,
                ref_rejected,
                chosen_tokens,
                rejected_tokens,
                self.beta,
                kl_estimate=kl_estimate,
                simpo_gamma=self.simpo_gamma,
            )
        if self.nll_weight:
            total = total + self.nll_weight * (-policy_chosen.sum() / chosen_tokens.sum().clamp(min=1))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        # Rewards use DPO's β-scaled log-ratio for every loss (β = the loss's β), so runs compare.
        metrics = preference_metrics(policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta)
        return _as_floats({"loss": total.detach(), **metrics})


def train_preference(
    policy: torch.nn.Module,
    reference: torch.nn.Module | tuple[torch.Tensor, torch.Tensor] | None,
    pairs: Sequence[Any],
    tokenizer: Any,
    *,
    loss: str = "dpo",
    beta: float | None = None,
    nll_weight: float = 0.0,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    warmup: int = 10,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    simpo_gamma: float = 1.0,
    eval_every: int = 0,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    kl_prompts: Sequence[str] | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, list[float]]:
    r"""Train ``policy`` on preference ``pairs`` with ``loss``; returns the per-step history.

    Args:
        policy: any causal LM returning logits (or ``.logits``); trained in place.
        reference: the frozen reference model, or its precomputed ``(chosen, rejected)``
            log-probs in the order of ``pairs`` (:func:`precompute_reference_logps`), or
            ``None`` for ORPO/SimPO (rewards are then measured against 0). A model is
            scored once, before the first step; it is never called during the steps.
        pairs: :class:`~dpolab.PreferencePair` or mappings with prompt/chosen/rejected.
        loss: ``"dpo"``, ``"ipo"``, ``"kto"``, ``"orpo"`` or ``"simpo"`` (:func:`preference_loss`).
        beta: the loss's β (default :data:`DEFAULT_BETA`).
        label_smoothing: cDPO's ε (``loss="dpo"``): the DPO loss of a pair whose label is
            flipped with probability ε (:func:`~dpolab.losses.dpo.dpo_loss`).
        nll_weight: α of an added NLL term on the chosen responses,
            :math:`\alpha\cdot(-\sum\log\pi(y_w\mid x)/\sum|y_w|)` (RPO; keeps the chosen
            likelihood from falling).
        eval_every: every ``eval_every`` steps (and after the last; 0: never), record
            ``"eval_step"``, an estimate of :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_\mathrm{ref})`
            (``"kl"``: :func:`~dpolab.training.evaluation.kl_to_reference` on ``kl_prompts``,
            default up to 64 prompts of ``pairs``; only with a reference model) and whatever
            ``eval_fn(policy)`` returns (e.g. the task metric). It runs inside the loop
            (its time counts in a run's wall time), so keep it small.

    Returns ``{"step", "loss", "accuracy", "chosen_reward", "rejected_reward",
    "reward_margin", "chosen_log_prob", "rejected_log_prob", "lr"}`` (one value per step)
    plus ``"eval_step"``, ``"kl"`` and ``eval_fn``'s keys when ``eval_every`` is set. Batches are drawn with a
    generator seeded by ``seed`` (``torch.manual_seed(seed)`` is set too, for dropout
    and KTO); AdamW with warm-up and cosine decay.
    """
    run = PreferenceSteps(
        policy,
        reference,
        pairs,
        tokenizer,
        loss=loss,
        beta=beta,
        nll_weight=nll_weight,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        seed=seed,
        device=device,
        simpo_gamma=simpo_gamma,
        label_smoothing=label_smoothing,
    )
    ref_model, device = run.ref_model, run.device
    if eval_every and ref_model is not None:
        from .evaluation import kl_to_reference

        kl_prompts = list(kl_prompts) if kl_prompts is not None else list(dict.fromkeys(_prompts(pairs)))[:64]
        max_new = max(len(r) for r in run.data.chosen + run.data.rejected) + 1

    history: dict[str, list[float]] = {k: [] for k in ("step", *METRIC_KEYS, "lr")}
    if eval_every:
        history["eval_step"] = []
    for step in progress_bar(steps, progress, loss.upper() + (f"+NLL({nll_weight:g})" if nll_weight else "")):
        for key, value in run().items():
            history[key].append(value)
        history["step"].append(step)
        history["lr"].append(run.scheduler.get_last_lr()[0])
        if eval_every and ((step + 1) % eval_every == 0 or step == steps - 1):
            history["eval_step"].append(step)
            scores = {}
            if ref_model is not None:
                scores["kl"] = kl_to_reference(
                    policy, ref_model, tokenizer, kl_prompts, max_new, device, seed=seed
                )
            if eval_fn is not None:
                scores.update(eval_fn(policy))
            for key, value in scores.items():
                history.setdefault(key, []).append(float(value))
            policy.train()
    return history


def _prompts(pairs: Sequence[Any]) -> list[str]:
    return [p["prompt"] if isinstance(p, dict) else p.prompt for p in pairs]
