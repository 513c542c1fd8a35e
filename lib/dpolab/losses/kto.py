r"""Kahneman–Tversky Optimisation (Ethayarajh et al., 2024, arXiv:2402.01306).

KTO needs no pairs: each response is only labelled desirable or undesirable. With the
log-ratio :math:`r = \log\frac{\pi_\theta(y\mid x)}{\pi_\mathrm{ref}(y\mid x)}` and a
reference point :math:`z_0` (an estimate of :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_\mathrm{ref})`),

.. math::

    \mathcal{L}_\mathrm{KTO} = \mathbb{E}\big[\lambda_y - v(x, y)\big],\quad
    v = \begin{cases}
        \lambda_D\,\sigma(\beta(r - z_0)) & y \text{ desirable}\\
        \lambda_U\,\sigma(\beta(z_0 - r)) & y \text{ undesirable}
    \end{cases}

so a desirable example costs :math:`\lambda_D(1 - \sigma(\beta(r - z_0)))` and an
undesirable one :math:`\lambda_U(1 - \sigma(\beta(z_0 - r)))`, averaged over all
examples. :math:`z_0` is a baseline, not something to optimise: it is detached and
clamped at 0 (a KL divergence is never negative). It is estimated from *mismatched*
pairs — each prompt with another example's response — see :func:`estimate_kl`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_float, upcast


def _as_bool(name: str, mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask, device=like.device)
    if mask.shape != like.shape:
        raise ValueError(
            f"{name} must have the shape of log_ratios {tuple(like.shape)}, got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"{name} must hold only 0/1 or True/False")
        mask = mask.bool()
    return mask


def kto_loss(
    log_ratios: torch.Tensor,
    is_desirable: torch.Tensor,
    kl_estimate: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> torch.Tensor:
    """Per-example KTO losses, shape (N,).

    Args:
        log_ratios: (N,) :math:`\\log\\pi_\\theta(y|x) - \\log\\pi_\\mathrm{ref}(y|x)`.
        is_desirable: (N,) bool or 0/1: which responses are desirable.
        kl_estimate: :math:`z_0`, a scalar or an (N,) tensor; detached and clamped at 0 here.
    """
    check_float("log_ratios", log_ratios, ndim=1)
    desirable = _as_bool("is_desirable", is_desirable, log_ratios)
    r = upcast(log_ratios)
    if not isinstance(kl_estimate, torch.Tensor):  # a Python float: build it in r's dtype directly
        kl_estimate = torch.tensor(kl_estimate, dtype=r.dtype, device=r.device)
    z0 = kl_estimate.detach().to(r.dtype)
    if z0.numel() == 1:
        z0 = z0.reshape(())
    elif z0.shape != r.shape:
        raise ValueError(
            f"kl_estimate must be a scalar or have shape {tuple(r.shape)}, got {tuple(z0.shape)}"
        )
    z0 = z0.clamp(min=0)  # a KL divergence is never negative
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (r - z0)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable, desirable_losses, undesirable_losses)


@torch.no_grad()
def estimate_kl(policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    r"""The reference point :math:`z_0 = \max(0, \mathrm{mean}_j[\log\pi_\theta(y'_j|x_j) - \log\pi_\mathrm{ref}(y'_j|x_j)])`.

    Inputs are log-probs of *mismatched* pairs (see :func:`mismatched_pairs`): a
    response scored under a prompt it does not answer tells how far the policy has
    drifted from the reference in general, not on the labelled answer. Detached.
    """
    check_float("policy_kl_logps", policy_kl_logps, ndim=1)
    check_float("ref_kl_logps", ref_kl_logps, ndim=1)
    if policy_kl_logps.shape != ref_kl_logps.shape:
        raise ValueError(
            f"ref_kl_logps must have the shape of policy_kl_logps {tuple(policy_kl_logps.shape)}, "
            f"got {tuple(ref_kl_logps.shape)}"
        )
    return (upcast(policy_kl_logps) - upcast(ref_kl_logps)).mean().clamp(min=0)


def mismatched_pairs(prompts: Sequence, responses: Sequence) -> list[tuple]:
    """Pair each prompt with the previous example's response: ``(prompts[i], responses[i-1])``.

    Shifting by one (as TRL does) guarantees that no prompt meets its own response.
    """
    if len(prompts) != len(responses):
        raise ValueError(
            f"prompts and responses must have the same length, got {len(prompts)} and {len(responses)}"
        )
    if len(prompts) < 2:
        raise ValueError(f"prompts must hold at least 2 examples to mismatch, got {len(prompts)}")
    return [(prompts[i], responses[i - 1]) for i in range(len(prompts))]


class KTOLoss(nn.Module):
    """Batch-mean KTO loss (Exercise 2)."""

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
        super().__init__()
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight

    def forward(
        self, log_ratios: torch.Tensor, is_desirable: torch.Tensor, kl_estimate: torch.Tensor | float
    ) -> torch.Tensor:
        return kto_loss(
            log_ratios, is_desirable, kl_estimate, self.beta, self.desirable_weight, self.undesirable_weight
        ).mean()
