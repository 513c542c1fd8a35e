"""The losses and what they read: per-sequence log-probs, DPO and its variants, reward metrics.

One module per idea: :mod:`.logprobs` (response log-probs from logits), :mod:`.dpo`,
:mod:`.ipo`, :mod:`.kto`, :mod:`.orpo`, :mod:`.simpo` (each a pure per-example function and
the exercise's class) and :mod:`.metrics` (the numbers people log while training).
"""

from .dpo import DPOLoss, dpo_loss
from .ipo import IPOLoss, ipo_loss
from .kto import KTOLoss, estimate_kl, kto_loss, mismatched_pairs
from .logprobs import response_token_counts, sequence_logps, token_logps
from .metrics import preference_metrics
from .orpo import ORPOLoss, log1mexp, log_odds, orpo_odds_ratio_loss
from .simpo import SimPOLoss, simpo_loss

__all__ = [
    "DPOLoss",
    "IPOLoss",
    "KTOLoss",
    "ORPOLoss",
    "SimPOLoss",
    "dpo_loss",
    "estimate_kl",
    "ipo_loss",
    "kto_loss",
    "log1mexp",
    "log_odds",
    "mismatched_pairs",
    "orpo_odds_ratio_loss",
    "preference_metrics",
    "response_token_counts",
    "sequence_logps",
    "simpo_loss",
    "token_logps",
]
