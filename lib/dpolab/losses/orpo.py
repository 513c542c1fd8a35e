r"""ORPO: Odds Ratio Preference Optimisation (Hong et al., 2024, arXiv:2403.07691).

No reference model and no separate SFT stage: the loss is the usual NLL on the chosen
response plus λ times an odds-ratio term. With :math:`P(y\mid x) = \exp\big(\frac{1}{|y|}
\log\pi_\theta(y\mid x)\big)` (per-token *average* log-prob) and
:math:`\mathrm{odds}(y\mid x) = \frac{P}{1-P}`,

.. math::

    \mathcal{L}_\mathrm{OR} = -\log\sigma\Big(\log\frac{\mathrm{odds}(y_w\mid x)}{\mathrm{odds}(y_l\mid x)}\Big),
    \qquad \mathcal{L}_\mathrm{ORPO} = \mathcal{L}_\mathrm{SFT} + \lambda\,\mathcal{L}_\mathrm{OR}

:math:`\log\mathrm{odds} = \bar\ell - \log(1 - e^{\bar\ell})`. As :math:`\bar\ell \to 0`
(P → 1) the naive ``log(1 - exp(x))`` loses every digit, so we use :func:`log1mexp`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_per_example, check_token_inputs, upcast
from .logprobs import response_token_counts, sequence_logps

_LN2 = math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 - e^{x})` for :math:`x < 0`, accurate everywhere (Mächler, 2012).

    Near 0, ``1 - exp(x)`` cancels catastrophically, so use ``log(-expm1(x))``; far
    below, ``expm1`` rounds to -1, so use ``log1p(-exp(x))``. The switch is at -ln 2.
    Each branch only ever sees inputs in its own range, so that the branch *not*
    selected by ``torch.where`` cannot produce an inf or NaN gradient.
    """
    near_zero = x > -_LN2
    x_near = torch.where(near_zero, x, torch.full_like(x, -_LN2))
    x_far = torch.where(near_zero, torch.full_like(x, -_LN2), x)
    return torch.where(near_zero, torch.log(-torch.expm1(x_near)), torch.log1p(-torch.exp(x_far)))


def log_odds(avg_logps: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\frac{P}{1-P}` from :math:`\log P` (a per-token average log-prob ≤ 0).

    ``avg_logps`` is capped just below 0 (at minus the smallest normal number), where
    P = 1 and the odds are infinite: the log-odds stay finite (about 87 in float32).
    """
    x = upcast(avg_logps).clamp(max=-torch.finfo(upcast(avg_logps).dtype).tiny)
    return x - log1mexp(x)


def orpo_odds_ratio_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example odds-ratio losses and log odds ratios, each of shape (B,)."""
    check_per_example(("chosen_avg_logps", chosen_avg_logps), ("rejected_avg_logps", rejected_avg_logps))
    log_odds_ratio = log_odds(chosen_avg_logps) - log_odds(rejected_avg_logps)
    return -F.logsigmoid(log_odds_ratio), log_odds_ratio


class ORPOLoss(nn.Module):
    """ORPO on model logits (Exercise 2): ``forward`` returns ``(total_loss, metrics)``.

    The SFT term is the token-mean NLL over all chosen response tokens of the batch.
    """

    def __init__(self, lambda_orpo: float = 0.1):
        super().__init__()
        self.lambda_orpo = lambda_orpo

    def forward(
        self,
        chosen_logits: torch.Tensor,
        rejected_logits: torch.Tensor,
        chosen_labels: torch.Tensor,
        rejected_labels: torch.Tensor,
        chosen_mask: torch.Tensor,
        rejected_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_token_inputs(chosen_logits, chosen_labels, chosen_mask, prefix="chosen_")
        check_token_inputs(rejected_logits, rejected_labels, rejected_mask, prefix="rejected_")
        if chosen_logits.shape[0] != rejected_logits.shape[0]:
            raise ValueError(
                "chosen_logits and rejected_logits must have the same batch size, "
                f"got {chosen_logits.shape[0]} and {rejected_logits.shape[0]}"
            )
        chosen_sum = sequence_logps(chosen_logits, chosen_labels, chosen_mask)
        chosen_tokens = response_token_counts(chosen_mask)
        rejected_avg = sequence_logps(rejected_logits, rejected_labels, rejected_mask, average=True)
        chosen_avg = chosen_sum / chosen_tokens.clamp(min=1)

        sft_loss = -chosen_sum.sum() / chosen_tokens.sum().clamp(min=1)
        or_losses, log_odds_ratio = orpo_odds_ratio_loss(chosen_avg, rejected_avg)
        orpo_loss = or_losses.mean()
        total_loss = sft_loss + self.lambda_orpo * orpo_loss
        metrics = {
            "sft_loss": sft_loss.detach(),
            "orpo_loss": orpo_loss.detach(),
            "total_loss": total_loss.detach(),
            "log_odds_ratio": log_odds_ratio.mean().detach(),
            "accuracy": (log_odds_ratio > 0).float().mean().detach(),
        }
        return total_loss, metrics
