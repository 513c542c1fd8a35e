"""Find a class's submissions and read each file safely.

Three layouts are accepted under ``SUBMISSIONS``:

- nbgrader's ``<student_id>/<assignment>/*.ipynb`` (``SUBMISSIONS`` may also be the course root
  holding ``submitted/``),
- a flat LMS export: ``<student_id>/*.ipynb`` (sub-folders searched too),
- ``<student_id>.zip`` holding the notebooks (read in memory, never extracted: no path
  traversal, no links, caps on member count and sizes).

In nbgrader's layout the two small files that ``nbgrader collect`` keeps beside the notebooks
are read too (:data:`EXCHANGE_FILES`): ``timestamp.txt`` (when the student submitted: deadlines)
and ``submission_secret.txt`` (``nbgrader release_feedback`` needs both in the feedback folder).

Nothing under ``SUBMISSIONS`` is ever written.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

MAX_NOTEBOOK_BYTES = 20 * 2**20
MAX_ZIP_TOTAL_BYTES = 100 * 2**20
MAX_ZIP_MEMBERS = 200
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,99}$")
EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")
MAX_EXCHANGE_FILE_BYTES = 4096


@dataclass
class Submission:
    """One student's files: ``{file name: bytes}``, and what went wrong reading them."""

    student_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    exchange: dict[str, bytes] = field(default_factory=dict)  # {name in EXCHANGE_FILES: bytes}

    @property
    def timestamp(self) -> str | None:
        """nbgrader's submission time (``2026-12-01 17:02:03.123456 UTC``), or None."""
        text = self.exchange.get("timestamp.txt", b"").decode("utf-8", "replace").strip()
        return text or None

    def digest(self) -> str:
        """A hash of every file name and content: re-grade only when it changes."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        for name in sorted(self.exchange):
            h.update(b"exchange\0" + name.encode() + b"\0" + self.exchange[name])
        for problem in self.problems:
            h.update(problem.encode())
        return h.hexdigest()


def _is_notebook(name: str) -> bool:
    parts = Path(name).parts
    return (
        name.lower().endswith(".ipynb")
        and not any(p.startswith(".") or p == "__MACOSX" for p in parts)
        and ".ipynb_checkpoints" not in parts
    )


def _read_folder(folder: Path, sub: Submission) -> None:
    for path in sorted(folder.rglob("*.ipynb")):
        rel = path.relative_to(folder)
        if not _is_notebook(str(rel)):
            continue
        if path.is_symlink() or not path.is_file():
            sub.problems.append(f"{rel} is a link or not a regular file: ignored")
            continue
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            sub.problems.append(f"{rel} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB: ignored")
            continue
        _add(sub, path.name, path.read_bytes())


def _read_exchange_files(folder: Path, sub: Submission) -> None:
    for name in EXCHANGE_FILES:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            continue
        if path.stat().st_size > MAX_EXCHANGE_FILE_BYTES:
            sub.problems.append(f"{name} is larger than {MAX_EXCHANGE_FILE_BYTES} bytes: ignored")
            continue
        sub.exchange[name] = path.read_bytes()


def _add(sub: Submission, name: str, data: bytes) -> None:
    if name in sub.files:
        sub.problems.append(f"two files named {name}: the first one is graded")
        return
    sub.files[name] = data


def _read_zip(path: Path, sub: Submission) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                sub.problems.append(f"{path.name} holds more than {MAX_ZIP_MEMBERS} files: not read")
                return
            total = 0
            for info in members:
                name = info.filename
                if info.is_dir():
                    continue
                parts = Path(name.replace("\\", "/")).parts
                mode = info.external_attr >> 16
                if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    sub.problems.append(f"{path.name}: unsafe path {name!r} ignored")
                    continue
                if not _is_notebook(name):
                    continue
                if stat.S_ISLNK(mode):
                    sub.problems.append(f"{path.name}: link {name!r} ignored")
                    continue
                if info.file_size > MAX_NOTEBOOK_BYTES:
                    sub.problems.append(
                        f"{path.name}: {name} is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
                    )
                    continue
                with zf.open(info) as f:  # the header's size may lie: read at most the cap
                    data = f.read(MAX_NOTEBOOK_BYTES + 1)
                total += len(data)
                if len(data) > MAX_NOTEBOOK_BYTES or total > MAX_ZIP_TOTAL_BYTES:
                    sub.problems.append(f"{path.name}: too much data (size caps): stopped reading")
                    return
                _add(sub, parts[-1], data)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        sub.problems.append(f"{path.name} is not a readable zip file ({err})")


def find_submissions(root: Path, assignment: str) -> list[Submission]:
    """Every student under ``root``, in student-id order."""
    root = Path(root)
    if (root / "submitted").is_dir() and not (root / "submitted" / assignment).exists():
        root = root / "submitted"
    found: dict[str, Submission] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        student = entry.stem if entry.suffix.lower() == ".zip" else entry.name
        if entry.is_file() and entry.suffix.lower() != ".zip":
            continue
        sub = found.setdefault(student, Submission(student))
        if not STUDENT_ID.match(student):
            sub.problems.append(
                f"{student!r} is not a usable student id (letters, digits, _.@+-): nothing was graded; "
                "rename its folder or zip and run dpolab-grade again"
            )
            continue
        if entry.is_symlink():
            sub.problems.append(f"{entry.name} is a link: ignored")
        elif entry.is_dir():
            nbgrader_layout = entry / assignment
            _read_folder(nbgrader_layout if nbgrader_layout.is_dir() else entry, sub)
            if nbgrader_layout.is_dir():
                _read_exchange_files(nbgrader_layout, sub)
        else:
            _read_zip(entry, sub)
    return list(found.values())


def _read_notebook(name: str, data: bytes):
    """(notebook, None) or (None, why it cannot be graded)."""
    import nbformat

    if not data.strip():
        return None, f"{name} is empty"
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
    except UnicodeDecodeError:
        return None, f"{name} is not a text file (not UTF-8)"
    except Exception as err:  # nbformat raises several kinds for broken JSON / not a notebook
        return None, f"{name} is not a valid notebook ({type(err).__name__}: {str(err)[:120]})"
    if not isinstance(nb.get("cells"), list):
        return None, f"{name} is not a valid notebook (no cells)"
    return nb, None


def _ids(nb) -> set[str]:
    out = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str):
            out.add(meta["grade_id"])
    return out


def match_notebooks(
    sub: Submission, expected: dict[str, set[str]]
) -> tuple[dict[str, bytes], dict[str, str], list[str], list[str]]:
    """Which file is which notebook of the assignment.

    ``expected`` maps each notebook (name without ``.ipynb``) to the nbgrader ids of its cells.
    A file is that notebook when it has the name and at least one of those ids, or (renamed)
    when the notebook's own file is missing and the file holds the most of its ids.
    Returns ``(files to grade, {notebook: why it cannot be graded}, notebooks not handed in,
    notes)``: a file that is there but cannot be graded needs the instructor; a notebook not
    handed in scores 0.
    """
    parsed, broken = {}, {}
    for name, data in sub.files.items():
        nb, why = _read_notebook(name, data)
        if nb is None:
            broken[name] = why
        else:
            parsed[name] = _ids(nb)
    chosen: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    missing: list[str] = []
    notes: list[str] = []
    used: set[str] = set()
    for notebook, ids in expected.items():
        name = f"{notebook}.ipynb"
        if name in broken:
            problems[notebook] = broken[name]
            used.add(name)
        elif name in parsed and parsed[name] & ids:
            chosen[notebook] = sub.files[name]
            used.add(name)
    for notebook, ids in expected.items():
        if notebook in chosen or notebook in problems:
            continue
        candidates = sorted(
            ((len(parsed[n] & ids), n) for n in parsed if n not in used and parsed[n] & ids), reverse=True
        )
        if candidates:
            name = candidates[0][1]
            chosen[notebook] = sub.files[name]
            used.add(name)
            notes.append(f"{name} graded as {notebook}.ipynb (renamed)")
        elif f"{notebook}.ipynb" in parsed:
            used.add(f"{notebook}.ipynb")
            problems[notebook] = (
                f"{notebook}.ipynb is not this assignment's notebook (none of its graded cells)"
            )
        else:
            missing.append(notebook)
    others = sorted(set(sub.files) - used)
    if others:
        notes.append("not part of the assignment, ignored: " + ", ".join(others))
    return chosen, problems, sorted(missing), notes
