"""The results table of notebook 04's section 5 (DPO and its variants), shipped as data.

Notebook 04 trains DPO, DPO+NLL, IPO, KTO, ORPO and SimPO with the library's losses
(:func:`~dpolab.training.evaluation.run_preference`). The package of a graded course does not
hold those losses (they are the answers of Parts 1 and 2), so there the notebook shows instead
the table of a full run of the lab's recipe, saved in ``variants_results.json`` beside this
module: ``{"recipe": {...}, "sft_task_metric": float, "runs": [{"method", "task_metric",
"reward_accuracy", "kl", "wall_time_s"}, ...]}`` (task metric and reward accuracy as fractions,
KL in nats per response, wall time in seconds on the machine that made the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).with_name("variants_results.json")


def load_variant_results(path: str | Path = RESULTS_FILE) -> dict[str, Any]:
    """The saved results table (see the module's docstring for its fields)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
