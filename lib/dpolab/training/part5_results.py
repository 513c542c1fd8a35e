"""The results of Part 5's experiments (``experiments/sweep_part5.py``), shipped as data.

Notebook 05 loads them for its β × learning-rate table and frontier, its noise figure and the
on-policy comparison, and re-runs a small slice live. A graded course's package holds none of
the training code these experiments need (it trains with the reference losses), so there the
notebook shows these numbers only. The fields are described in ``experiments/sweep_part5.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).with_name("part5_results.json")


def load_part5_results(path: str | Path = RESULTS_FILE) -> dict[str, Any]:
    """The saved results of Part 5's sweep (see ``experiments/sweep_part5.py`` for the fields)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
