"""Figures for the notebooks. Each function draws one picture and returns the figure.

Curves are computed here from their formulas (not from the exercises' reference, which the
graded-course package does not include), so they draw even before the exercises are done.
Import matplotlib lazily: the library itself does not need it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def dpo_loss_and_weight(margins: torch.Tensor, beta: float, label_smoothing: float = 0.0):
    r"""DPO loss and its gradient weight at each log-ratio margin :math:`h`, in float64.

    The loss is :math:`-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)`
    (ε: label smoothing).

    The weight is :math:`-\frac{1}{\beta}\frac{\partial\mathcal{L}}{\partial h}`; for ε = 0 it
    is :math:`\sigma(-\beta h)`: large for pairs the model gets wrong, near 0 for pairs it
    already ranks confidently — DPO's built-in focus on its mistakes.
    """
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    h = margins.detach().double().requires_grad_()
    z = beta * h
    loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    (grad,) = torch.autograd.grad(loss.sum(), h)
    return loss.detach(), -grad / beta


def plot_dpo_loss(betas: Sequence[float] = (0.1, 0.5, 1.0), label_smoothing: float = 0.0, span: float = 20.0):
    """Two panels against the margin h: the DPO loss, and the gradient weight."""
    import matplotlib.pyplot as plt

    margins = torch.linspace(-span, span, 401, dtype=torch.float64)
    fig, (ax_loss, ax_weight) = plt.subplots(1, 2, figsize=(10, 3.6))
    for beta in betas:
        loss, weight = dpo_loss_and_weight(margins, beta, label_smoothing)
        ax_loss.plot(margins, loss, label=f"β = {beta}")
        ax_weight.plot(margins, weight, label=f"β = {beta}")
    ax_loss.set(xlabel="margin h = log-ratio(chosen) − log-ratio(rejected)", ylabel="loss",
                title=f"DPO loss (label smoothing ε = {label_smoothing})")  # fmt: skip
    ax_weight.set(xlabel="margin h", ylabel="−(1/β) ∂L/∂h", title="gradient weight (σ(−βh) when ε = 0)")
    for ax in (ax_loss, ax_weight):
        ax.axvline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_losses_vs_margin(
    margins: torch.Tensor,
    curves: Mapping[str, torch.Tensor],
    title: str = "",
    ylim: tuple[float, float] | None = None,
    xlabel: str = "margin",
):
    """Several losses (one curve per name) against a common x axis (``xlabel``), optionally clipped to ``ylim``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in curves.items():
        ax.plot(margins.cpu(), values.detach().cpu(), label=name)
    ax.set(xlabel=xlabel, ylabel="loss", title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.axvline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_preference_dataset(pairs: Sequence) -> object:
    """Score gaps (where pairs carry scores) and chosen vs rejected lengths in words."""
    import matplotlib.pyplot as plt

    gaps = [p.chosen_score - p.rejected_score for p in pairs if p.chosen_score is not None]
    chosen_len = [len(p.chosen.split()) for p in pairs]
    rejected_len = [len(p.rejected.split()) for p in pairs]
    fig, (ax_gap, ax_len) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_gap.hist(gaps, bins=10, color="tab:purple")
    ax_gap.set(xlabel="score(chosen) − score(rejected)", ylabel="pairs", title="score gaps")
    top = max(chosen_len + rejected_len + [1])
    ax_len.scatter(rejected_len, chosen_len, alpha=0.7)
    ax_len.plot([0, top], [0, top], color="grey", lw=0.8, label="same length")
    ax_len.set(
        xlabel="rejected length (words)", ylabel="chosen length (words)", title="length: chosen vs rejected"
    )
    ax_len.legend()
    for ax in (ax_gap, ax_len):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
