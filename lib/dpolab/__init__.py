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

The graded-course package (``dpolab-graded-course``) is this package without the reference
modules listed in :data:`dpolab._exports.REFERENCE_MODULES`: there the helpers import as
usual, and asking for a reference name (``dpolab.DPOLoss``) raises an ``ImportError`` that
names its exercise.
"""

from ._exports import absent_getattr, export, public

# module -> public names; a reference module (dpolab._exports.REFERENCE_MODULES) may be absent
_NAMES = {
    ".data.arithmetic": ["ArithmeticTask"],
    ".data.batching": [
        "PreferenceBatch",
        "PreferenceData",
        "SequenceBatch",
        "collate_preferences",
        "encode_examples",
        "encode_pairs",
        "pad_sequences",
    ],
    ".data.jsonl": ["load_jsonl", "save_jsonl"],
    ".data.preferences": ["PreferenceDatasetGenerator", "PreferencePair"],  # reference
    ".data.tokenizer": ["CharTokenizer"],
    ".device": ["get_device"],
    ".losses": [  # reference
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
    ],
    ".training.evaluation": ["PreferenceRun", "evaluate_policy", "reward_accuracy", "run_preference"],  # ref.
    ".training.generation": ["complete", "generate"],
    ".training.kl": ["kl_to_reference"],
    ".training.model": ["GPTConfig", "TinyGPT"],
    ".training.preference": [  # reference
        "concatenated_logps",
        "dpo_train_step",
        "precompute_reference_logps",
        "preference_loss",
        "train_preference",
    ],
    ".training.recipe": ["DEFAULT_BETA", "LAB_RECIPE", "Recipe", "lab_recipe", "quick_mode", "run_sft"],
    ".training.sft": ["cosine_lr", "train_sft"],
}
_absent = export(globals(), _NAMES)
__getattr__ = absent_getattr(__name__, _absent)
__all__ = public(_NAMES, _absent)

__version__ = "0.1.0"
