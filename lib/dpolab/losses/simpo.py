r"""SimPO: Simple Preference Optimisation (Meng et al., 2024, arXiv:2405.14734).

No reference model; the implicit reward is the *length-normalised* log-probability
:math:`\frac{\beta}{|y|}\log\pi_\theta(y\mid x)`, and a target margin γ > 0 separates
the rewards of chosen and rejected:

.. math::

    \mathcal{L}_\mathrm{SimPO} = -\log\sigma\Big(\beta\,\bar{\ell}_w - \beta\,\bar{\ell}_l - \gamma\Big)

where :math:`\bar\ell = \frac{1}{|y|}\log\pi_\theta(y\mid x)` is the per-token average
log-probability. (Plain DPO with its reference dropped is *not* SimPO: it is neither
length-normalised nor given a margin.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_per_example, upcast


def simpo_loss(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Per-example SimPO losses, shape (B,)."""
    check_per_example(
        ("chosen_avg_log_probs", chosen_avg_logps), ("rejected_avg_log_probs", rejected_avg_logps)
    )
    logits = beta * (upcast(chosen_avg_logps) - upcast(rejected_avg_logps)) - gamma
    return -F.logsigmoid(logits)


class SimPOLoss(nn.Module):
    """Batch-mean SimPO loss (Exercise 2)."""

    def __init__(self, beta: float = 2.0, gamma: float = 1.0):
        super().__init__()
        self.beta = beta
        self.gamma = gamma

    def forward(
        self, chosen_avg_log_probs: torch.Tensor, rejected_avg_log_probs: torch.Tensor
    ) -> torch.Tensor:
        return simpo_loss(chosen_avg_log_probs, rejected_avg_log_probs, self.beta, self.gamma).mean()
