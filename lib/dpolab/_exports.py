"""Which modules hold the exercises' answers, and re-exports that work without them.

The *reference modules* below implement the answer of an exercise (or call one). The
graded-course package that students install (``dpolab-graded-course``, see
:mod:`dpolab_grade.student_package`) is this package without them; self-study
(``make lab``, Colab, Binder) keeps the full package.

``dpolab`` and its subpackages re-export public names through :func:`export`: a name whose
module is absent is not bound, and asking for it raises :class:`ReferenceNotIncludedError`,
which says why (``dpolab.DPOLoss`` -> "DPOLoss is an exercise of notebook 01_dpo_loss: ...").
It is an :class:`ImportError`, not an ``AttributeError``: ``from dpolab import DPOLoss`` shows
its message only then (Python replaces an ``AttributeError`` of a ``from`` import by its own
generic one). So ``hasattr(dpolab, name)`` raises there too: to ask whether the package holds
a name, test ``name in dpolab.__all__`` (absent names are left out of it).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: The reference modules (a package stands for all its modules): the ONE list of them.
REFERENCE_MODULES: dict[str, str] = {
    "dpolab.losses": "DPO, IPO, KTO, ORPO and SimPO (notebooks 01 and 02) and the log-probs they read",
    "dpolab.data.preferences": "PreferencePair and PreferenceDatasetGenerator (notebook 03)",
    "dpolab.training.preference": "concatenated_logps and dpo_train_step (notebook 04), the training loop",
    "dpolab.training.evaluation": "reward accuracy and the results table (they call concatenated_logps)",
    "dpolab.training.hf": "the Hugging Face bridge of notebook 04 (it trains with the reference)",
    "dpolab.training.trl_dpo": "dpolab-train's TRL DPOTrainer run (built on the Hugging Face bridge)",
    "dpolab.training.cli": "the dpolab-train command (it runs dpolab.training.trl_dpo)",
    "dpolab.training.early_stopping": "train_with_early_stopping (notebook 05)",
    "dpolab.training.on_policy": "on_policy_pairs (notebook 05)",
    "dpolab.training.part5": "Part 5's experiments (they train with the reference and call notebook 05's answers)",
}

#: Every exercise (a name defined in a solution block) and its notebook.
EXERCISES: dict[str, str] = {
    "DPOLoss": "01_dpo_loss",
    "IPOLoss": "02_dpo_variants",
    "estimate_kl": "02_dpo_variants",
    "KTOLoss": "02_dpo_variants",
    "ORPOLoss": "02_dpo_variants",
    "SimPOLoss": "02_dpo_variants",
    "PreferencePair": "03_preference_data",
    "PreferenceDatasetGenerator": "03_preference_data",
    "concatenated_logps": "04_train_with_dpo",
    "dpo_train_step": "04_train_with_dpo",
    "train_with_early_stopping": "05_what_dpo_optimises",
    "on_policy_pairs": "05_what_dpo_optimises",
}


class ReferenceNotIncludedError(ImportError):
    """A name of the reference, asked of the graded-course package (which does not include it)."""


def is_reference(module: str) -> bool:
    """True for a reference module or a module inside a reference package."""
    return any(module == m or module.startswith(m + ".") for m in REFERENCE_MODULES)


def absent_message(name: str, module: str) -> str:
    if name in EXERCISES:
        why = f"{name} is an exercise of notebook {EXERCISES[name]}"
    else:
        why = f"{name} is part of the reference ({module})"
    return f"{why}: the graded-course package does not include the reference"


def export(namespace: dict[str, Any], table: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Bind ``table``'s names (module -> names, modules relative to ``namespace``'s package).

    A reference module that is absent (the graded-course package) is skipped; returns the
    names left unbound, each with its module. Any other import error propagates. A name listed
    under two modules is an error: one would silently shadow the other.
    """
    package = namespace["__name__"]
    owners: dict[str, str] = {}
    for relative, names in table.items():
        for name in names:
            if owners.setdefault(name, relative) != relative:
                raise ImportError(f"{package}: {name} is exported by both {owners[name]} and {relative}")
    absent: dict[str, str] = {}
    for relative, names in table.items():
        full = importlib.util.resolve_name(relative, package)
        try:
            module = importlib.import_module(full)
        except ModuleNotFoundError as err:
            if err.name is None or not is_reference(err.name) or not is_reference(full):
                raise
            absent.update(dict.fromkeys(names, full))
            continue
        namespace.update({name: getattr(module, name) for name in names})
    return absent


def absent_getattr(package: str, absent: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that explains the names :func:`export` left unbound.

    With nothing absent (the full package) it is never reached for a public name.
    """

    def __getattr__(name: str) -> Any:
        if name in absent:
            raise ReferenceNotIncludedError(absent_message(name, absent[name]), name=package)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def public(table: Mapping[str, Sequence[str]], absent: Mapping[str, str]) -> list[str]:
    """``__all__``: the names of ``table`` that are bound, sorted."""
    return sorted(name for names in table.values() for name in names if name not in absent)
