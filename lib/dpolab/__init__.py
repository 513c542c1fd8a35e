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

from . import data, training
from ._exports import absent_getattr, export, public

# module -> public names; a reference module (dpolab._exports.REFERENCE_MODULES) may be absent.
# data and training are always there (only some of their modules may not be): their tables are
# taken as they are; the losses are all reference, so their package may be absent and its
# names are listed here.
_NAMES = {
    **{".data" + module: names for module, names in data._NAMES.items()},
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
    **{".training" + module: names for module, names in training._NAMES.items()},
}
_absent = export(globals(), _NAMES)
__getattr__ = absent_getattr(__name__, _absent)
__all__ = public(_NAMES, _absent)

__version__ = "0.1.0"
