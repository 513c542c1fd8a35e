"""Stamp a student release folder by hand (``nbgrader generate_assignment`` does it already
through this repository's ``nbgrader_config.py``; see :mod:`dpolab_grade.release`)::

    python scripts/stamp_release.py notebooks/lab_3_1_5_dpo
"""

from __future__ import annotations

import sys
from pathlib import Path

from dpolab_grade.release import stamp_folder

if __name__ == "__main__":
    for folder in sys.argv[1:]:
        for p in stamp_folder(Path(folder)):
            print(f"stamped {p}")
