"""What the grader builds from: a digest of what grading depends on, and a module run apart.

The grader's course (:mod:`dpolab_grade.course`) and the fixtures (:mod:`dpolab_grade.fixtures`) are
cached under :func:`digest`; each is made by :func:`run_module` in a subprocess with a throwaway
``HOME``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path


def nbgrader_env() -> dict[str, str]:
    """This interpreter's environment: nbgrader runs ``alembic`` from PATH."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def digest(solutions: Path) -> str:
    """A hash of what the grading depends on: the solutions, nbgrader's version and dpolab's own
    source (the hidden tests call its helpers: a new dpolab makes new fixtures)."""
    import nbgrader

    import dpolab

    h = hashlib.sha256(f"nbgrader {nbgrader.__version__}".encode())
    package = Path(dpolab.__file__).parent
    files = [(solutions, p) for p in sorted(Path(solutions).rglob("*")) if p.is_file()]
    files += [(package, p) for p in sorted(package.rglob("*")) if p.suffix in (".py", ".json")]
    for root, path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_module(cwd: Path, failure: str, module: str, *args: str) -> None:
    """``python -m module args`` in ``cwd`` with this environment and a throwaway ``HOME`` (what
    jupyter and IPython write there, and no instructor config read from it); raises with its
    output if it fails."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dpolab-home-") as home:
        env = nbgrader_env()
        env["HOME"] = home
        env.setdefault("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
        proc = subprocess.run(
            [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{failure}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
