"""dpolab: reference implementations for the DPO Lab (Lab 3.1.5).

Exercise classes (same names and signatures as in the notebooks)::

    from dpolab import DPOLoss, IPOLoss, KTOLoss, ORPOLoss, SimPOLoss
    from dpolab import PreferencePair, PreferenceDatasetGenerator

Pure functions on per-sequence log-probs (per-example losses) live beside them:
:func:`dpo_loss`, :func:`ipo_loss`, :func:`kto_loss`, :func:`orpo_odds_ratio_loss`,
:func:`simpo_loss`, and :func:`sequence_logps` extracts those log-probs from logits.
"""

from .data import (
    PreferenceBatch,
    PreferenceDatasetGenerator,
    PreferencePair,
    SequenceBatch,
    collate_preferences,
    load_jsonl,
    pad_sequences,
    save_jsonl,
)
from .device import get_device
from .losses import (
    DPOLoss,
    IPOLoss,
    KTOLoss,
    ORPOLoss,
    SimPOLoss,
    dpo_loss,
    estimate_kl,
    ipo_loss,
    kto_loss,
    log1mexp,
    log_odds,
    mismatched_pairs,
    orpo_odds_ratio_loss,
    preference_metrics,
    response_token_counts,
    sequence_logps,
    simpo_loss,
    token_logps,
)

__version__ = "0.1.0"

__all__ = [
    "DPOLoss",
    "IPOLoss",
    "KTOLoss",
    "ORPOLoss",
    "PreferenceBatch",
    "PreferenceDatasetGenerator",
    "PreferencePair",
    "SequenceBatch",
    "SimPOLoss",
    "collate_preferences",
    "dpo_loss",
    "estimate_kl",
    "get_device",
    "ipo_loss",
    "kto_loss",
    "load_jsonl",
    "log1mexp",
    "log_odds",
    "mismatched_pairs",
    "orpo_odds_ratio_loss",
    "pad_sequences",
    "preference_metrics",
    "response_token_counts",
    "save_jsonl",
    "sequence_logps",
    "simpo_loss",
    "token_logps",
]
