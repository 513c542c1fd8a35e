r"""Identity Preference Optimisation (Azar et al., 2023, arXiv:2310.12036).

IPO regresses the margin of log-ratios :math:`h` onto a fixed target instead of pushing
it to infinity, so it does not overfit deterministic preferences:

.. math::

    \mathcal{L}_\mathrm{IPO} = \Big(h - \frac{1}{2\beta}\Big)^2,\qquad
    h = \log\frac{\pi_\theta(y_w\mid x)}{\pi_\mathrm{ref}(y_w\mid x)}
      - \log\frac{\pi_\theta(y_l\mid x)}{\pi_\mathrm{ref}(y_l\mid x)}

(β is the paper's τ). TRL feeds it per-token *average* log-ratios, as the IPO authors
did in their experiments; the function is the same, only the inputs differ.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_per_example, check_positive, upcast


def ipo_loss(
    chosen_log_ratio: torch.Tensor, rejected_log_ratio: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """Per-example IPO losses, shape (B,)."""
    check_per_example(("chosen_log_ratio", chosen_log_ratio), ("rejected_log_ratio", rejected_log_ratio))
    check_positive("beta", beta)
    margin = upcast(chosen_log_ratio) - upcast(rejected_log_ratio)
    return (margin - 1 / (2 * beta)) ** 2


class IPOLoss(nn.Module):
    """Batch-mean IPO loss (Exercise 2)."""

    def __init__(self, beta: float = 0.1):
        super().__init__()
        check_positive("beta", beta)
        self.beta = beta

    def forward(self, chosen_log_ratio: torch.Tensor, rejected_log_ratio: torch.Tensor) -> torch.Tensor:
        return ipo_loss(chosen_log_ratio, rejected_log_ratio, self.beta).mean()
