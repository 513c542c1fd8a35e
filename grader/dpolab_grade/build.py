"""What the grader builds from: a digest of what grading depends on, and a module run apart.

The grader's course (:mod:`dpolab_grade.course`) and the fixtures (:mod:`dpolab_grade.fixtures`) are
cached under :func:`digest`; each is made by :func:`run_module` in a subprocess with a throwaway
``HOME``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

# jsonschema's format checkers import rfc3987_syntax where it is installed (jupyter_events asks for
# it), which compiles 38 Lark grammars: about 1 s of CPU in every process that imports nbformat, for
# IRI formats that no notebook schema uses. The grader's own processes (the CLI, its workers and
# the modules it runs) do without them.
SKIP_IRI_FORMATS = "import sys; sys.modules.setdefault('rfc3987_syntax', None)"


def skip_iri_formats() -> None:
    sys.modules.setdefault("rfc3987_syntax", None)


def dpolab_folder() -> Path:
    """The folder of the ``dpolab`` this interpreter imports, found without importing it (that
    would import torch: a second of CPU in processes that only read its files)."""
    spec = importlib.util.find_spec("dpolab")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("dpolab is not installed beside the grader")
    return Path(spec.origin).resolve().parent


def reference_modules() -> dict[str, str]:
    """``dpolab._exports.REFERENCE_MODULES``, read from its file (standard library only)."""
    spec = importlib.util.spec_from_file_location("_dpolab_exports", dpolab_folder() / "_exports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.REFERENCE_MODULES)


def nbgrader_env() -> dict[str, str]:
    """This interpreter's environment: nbgrader runs ``alembic`` from PATH."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def digest(solutions: Path) -> str:
    """A hash of what the grading depends on: the solutions, nbgrader's version and dpolab's own
    source (the hidden tests call its helpers: a new dpolab makes new fixtures)."""
    import nbgrader

    h = hashlib.sha256(f"nbgrader {nbgrader.__version__}".encode())
    package = dpolab_folder()
    files = [(solutions, p) for p in sorted(Path(solutions).rglob("*")) if p.is_file()]
    files += [(package, p) for p in sorted(package.rglob("*")) if p.suffix in (".py", ".json")]
    for root, path in files:
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_module(cwd: Path, failure: str, module: str, *args: str) -> None:
    """``python -m module args`` (without IRI formats) in ``cwd`` with this environment and a
    throwaway ``HOME`` (what jupyter and IPython write there, and no instructor config read from
    it); raises with its output if it fails."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dpolab-home-") as home:
        env = nbgrader_env()
        env["HOME"] = home
        env.setdefault("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
        proc = subprocess.run(
            [sys.executable, "-c", f"{SKIP_IRI_FORMATS}; import runpy; runpy.run_module({module!r}, "
             "run_name='__main__', alter_sys=True)", *args],
            cwd=cwd, env=env, capture_output=True, text=True,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{failure}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
