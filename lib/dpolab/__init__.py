"""dpolab: reference implementations for the DPO Lab (Lab 3.1.5).

Exercise classes (same names and signatures as in the notebooks)::

    from dpolab import DPOLoss, IPOLoss, KTOLoss, ORPOLoss, SimPOLoss
    from dpolab import PreferencePair, PreferenceDatasetGenerator

Pure functions on per-sequence log-probs (per-example losses) live beside them:
:func:`dpo_loss`, :func:`ipo_loss`, :func:`kto_loss`, :func:`orpo_odds_ratio_loss`,
:func:`simpo_loss`, and :func:`sequence_logps` extracts those log-probs from logits.

Notebook 04 trains a model: :class:`TinyGPT`, :class:`CharTokenizer`, :class:`ArithmeticTask`,
:func:`train_sft`, :func:`concatenated_logps`, :func:`dpo_train_step`,
:func:`precompute_reference_logps`, :func:`train_preference`, :func:`run_preference`.

Subpackages: :mod:`dpolab.losses`, :mod:`dpolab.data`, :mod:`dpolab.training`; every public
name is re-exported here, so ``from dpolab import ...`` does not depend on the layout.
"""

from .data import (
    ArithmeticTask,
    CharTokenizer,
    PreferenceBatch,
    PreferenceDatasetGenerator,
    PreferencePair,
    SequenceBatch,
    collate_preferences,
    encode_examples,
    encode_pairs,
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
from .training import (
    DEFAULT_BETA,
    LAB_RECIPE,
    GPTConfig,
    PreferenceRun,
    Recipe,
    TinyGPT,
    complete,
    concatenated_logps,
    dpo_train_step,
    evaluate_policy,
    generate,
    kl_to_reference,
    lab_recipe,
    precompute_reference_logps,
    preference_loss,
    quick_mode,
    reward_accuracy,
    run_preference,
    run_sft,
    train_preference,
    train_sft,
)

__version__ = "0.1.0"

__all__ = [
    "ArithmeticTask",
    "CharTokenizer",
    "DEFAULT_BETA",
    "DPOLoss",
    "GPTConfig",
    "IPOLoss",
    "KTOLoss",
    "LAB_RECIPE",
    "ORPOLoss",
    "PreferenceBatch",
    "PreferenceDatasetGenerator",
    "PreferencePair",
    "PreferenceRun",
    "Recipe",
    "SequenceBatch",
    "SimPOLoss",
    "TinyGPT",
    "collate_preferences",
    "complete",
    "concatenated_logps",
    "dpo_loss",
    "dpo_train_step",
    "encode_examples",
    "encode_pairs",
    "estimate_kl",
    "evaluate_policy",
    "generate",
    "get_device",
    "ipo_loss",
    "kl_to_reference",
    "kto_loss",
    "lab_recipe",
    "load_jsonl",
    "log1mexp",
    "log_odds",
    "mismatched_pairs",
    "orpo_odds_ratio_loss",
    "pad_sequences",
    "precompute_reference_logps",
    "preference_loss",
    "preference_metrics",
    "quick_mode",
    "response_token_counts",
    "reward_accuracy",
    "run_preference",
    "run_sft",
    "save_jsonl",
    "sequence_logps",
    "simpo_loss",
    "token_logps",
    "train_preference",
    "train_sft",
]
