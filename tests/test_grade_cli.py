"""``dpolab-grade`` end to end: one class graded together, correct, partial and hostile.

The class is graded against a one-notebook assignment (notebook 01 of the lab, 11 points), so
that every student costs one kernel: each hostile case is a real notebook, and the expected
outcome of each is stated in ``CLASS`` (a score out of 11, or ``ungradable`` with words of its
reason). The file and network isolation cases need bubblewrap (``scripts/setup.sh test``
installs it when run as root); without it they are skipped with the reason. The grader listens
on a loopback port while the class is graded: the ``snoop`` student tries to connect to it (and
to look up a name in DNS) from its kernel, and must fail.

Part B of issue 9: the hidden tests only record what the student's code returned, and the grader
judges the records outside the kernel against the solution's (dpolab.records); the
kernel imports the student package, which holds no reference. So answers that patch the checks
(``torch.allclose``, ``math.isclose``, ``abs``, the guard), import the reference or copy its
source earn nothing: the ``patch_*``, ``imports_reference`` and ``copies_reference`` students.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import socket
import sqlite3
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ASSIGNMENT, MARKER, ROOT, SOLUTIONS, grading_meta, solved_release

NB = "01_dpo_loss"
POINTS = 11
CELL_TIMEOUT = 15
NOTEBOOK_TIMEOUT = 150
MEMORY_MB = 3000
MAX_PROCESSES = 64
MEMORY_BOMB = """\
chunks = []
try:
    while True:
        chunks.append(bytearray(2**28))  # 256 MiB, written (zero-filled): real memory
finally:
    print(f"held {len(chunks) / 4:.2f} GiB when the limit stopped it")
    chunks.clear()
"""

bwrap_missing = None
try:
    from dpolab_grade.sandbox import bwrap_available

    bwrap_missing = bwrap_available()
except ImportError as err:  # pragma: no cover
    bwrap_missing = str(err)
# without bubblewrap dpolab-grade refuses to grade unless told --sandbox none (the student package
# is still what the kernel imports: imports_reference is graded either way)
SANDBOX = ["--sandbox", "none"] if bwrap_missing else []


# --------------------------------------------------------------------------- the class
def _cell(source: str):
    return nbformat.v4.new_code_cell(source)


def _with_cell(nb, source: str, at: int = 2):
    nb.cells.insert(at, _cell(source))
    return nb


def _drop(nb, grade_id: str):
    nb.cells = [c for c in nb.cells if grading_meta(c).get("grade_id") != grade_id]
    return nb


def _edit(nb, grade_id: str, source: str):
    for c in nb.cells:
        if grading_meta(c).get("grade_id") == grade_id:
            c.source = source
    return nb


PLANTED = {"dpo_loss_answer": ("(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)")}
KBI_LOOP = """import time
while True:  # swallows the interrupt nbgrader sends at the timeout
    try:
        time.sleep(0.5)
    except KeyboardInterrupt:
        pass
"""
SNOOP = """import json, os, pathlib
found = {}
for what, path in TARGETS["read"].items():
    try:
        pathlib.Path(path).read_bytes()
        found["read " + what] = "DONE"
    except Exception:
        found["read " + what] = "denied"
for what, path in TARGETS["write"].items():
    try:
        with open(path, "a") as f:
            f.write("tampered")
        found["write " + what] = "DONE"
    except Exception:
        found["write " + what] = "denied"
import socket
for what, (host, port) in TARGETS["connect"].items():
    try:
        socket.create_connection((host, port), timeout=5).close()
        found["connect " + what] = "DONE"
    except Exception:
        found["connect " + what] = "denied"
try:
    socket.getaddrinfo("pypi.org", 443)
    found["dns lookup"] = "DONE"
except Exception:
    found["dns lookup"] = "denied"
print("SNOOP" + json.dumps(found, sort_keys=True) + "SNOOP")
"""
# Bounded, so that it cannot take the machine if the limit fails: 500 children at most, each
# sleeps 5 s and exits; the cell then ends by itself (and the case would be graded 11/11).
FORK_BOMB = """import os, time
for _ in range(500):
    try:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
    except OSError:  # RLIMIT_NPROC (a grader that is not root): the watchdog is the limit
        break
time.sleep(3)
"""
# After each failing cell, clear its output (the error) before nbgrader reads it
HIDE_ERRORS = """from IPython import get_ipython
from IPython.display import clear_output

get_ipython().events.register("post_run_cell", lambda result: result.error_in_exec and clear_output())
"""
STEAL_SOLUTION = """import json
_src = json.load(open(SOLUTION_PATH))
exec("\\n".join(
    "".join(c["source"]) for c in _src["cells"]
    if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "dpo_loss_answer"
))
"""


COPY_REFERENCE = """import glob, importlib, inspect, sys
_places = [f"{root}/dpolab/losses/*.py" for root in sys.path] + [REPO + "/lib/dpolab/losses/*.py"]
_sources = [open(path).read() for place in _places for path in glob.glob(place)]
try:
    _sources.append(inspect.getsource(importlib.import_module("dpolab.losses.dpo")))
except Exception as err:
    print("no reference module:", type(err).__name__)
print(f"found {len(_sources)} reference sources")
for _src in _sources:
    exec(_src)
"""


def _patched_answer(*edits) -> str:
    """Notebook 01's answer cell under code that patches every check a kernel could make."""
    from test_hidden_tests_catch_mistakes import DPO, NB1, patched

    return patched(NB1, DPO, *edits)


def _paths(tmp: Path) -> dict:
    return {
        "class": tmp / "class",
        "solutions": tmp / "course" / "solutions" / ASSIGNMENT,
        "out": tmp / "out",
    }


def build_class(tmp: Path, grader_port: int = 9, extra_targets: dict | None = None) -> dict[str, tuple]:
    """Write the class; return ``{student: (expected score or None, reason words)}``.

    ``grader_port``: a loopback port the grader listens on while it grades; ``extra_targets``:
    more paths for ``snoop`` to try (``{"read": {what: path}, "write": {...}}``)."""
    p = _paths(tmp)
    p["solutions"].mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{NB}.ipynb", p["solutions"])
    release = ROOT / "notebooks" / ASSIGNMENT
    name = f"{NB}.ipynb"

    def solved():
        return solved_release(name, release)

    targets = {
        "read": {
            "solutions": str(p["solutions"] / name),
            "repo solutions": str(SOLUTIONS / name),
            "gradebook": str(p["out"] / "gradebook.db"),
            "other student": str(p["class"] / "solved_flat" / name),
        },
        "write": {
            "solutions": str(p["solutions"] / name),
            "other student": str(p["class"] / "solved_flat" / name),
            "out folder": str(p["out"] / "grades.csv"),
            "new file in out": str(p["out"] / "pwned.txt"),
            "tmp of the grader": "/tmp/dpolab-pwned.txt",
        },
        "connect": {
            "grader's loopback port": ["127.0.0.1", grader_port],
            "DNS server": [_nameserver(), 53],
        },
    }
    for kind, paths in (extra_targets or {}).items():
        targets[kind].update(paths)
    targets_line = f"TARGETS = {json.dumps(targets)}\n"
    steal = f"SOLUTION_PATH = {str(p['solutions'] / name)!r}\n" + STEAL_SOLUTION
    not_ours = nbformat.v4.new_notebook()
    not_ours.cells = [_cell("x = 1")]
    not_ours.cells[0].metadata["nbgrader"] = {
        "grade_id": "other_lab_answer",
        "solution": True,
        "grade": False,
    }
    untouched = nbformat.read(release / name, as_version=4)

    def fresh():  # _edit changes the notebook it is given: each case edits its own copy
        return nbformat.read(release / name, as_version=4)

    # student: (notebook or raw bytes, file name, layout, expected score or None, reason words)
    cases = {
        "solved": (solved(), name, "nbgrader", POINTS, ""),
        "solved_flat": (solved(), name, "flat", POINTS, ""),
        "solved_zip": (solved(), name, "zip", POINTS, ""),
        "partial": (solved_release(name, release, PLANTED), name, "flat", POINTS - 2, ""),
        "untouched": (untouched, name, "flat", 0, ""),
        "infinite_loop": (_with_cell(solved(), "while True:\n    pass"), name, "flat", POINTS, ""),
        "swallows_interrupt": (_with_cell(solved(), KBI_LOOP), name, "flat", None, "interrupt"),
        "kernel_exit": (_with_cell(solved(), "import os\nos._exit(1)"), name, "flat", None, "kernel died"),
        "memory_bomb": (
            # Grows until the limit raises MemoryError, then lets go: what is checked is that the
            # limit holds (unlimited, it would take the machine's 24 GB). A bomb that keeps its
            # memory leaves the next cells an amount of headroom that depends on the kernel's
            # imports, so whether they run or the kernel dies would not be a stated outcome.
            _with_cell(solved(), MEMORY_BOMB),
            name, "flat", POINTS, "",
        ),
        "prints_50mb": (_with_cell(solved(), "print('x' * 50_000_000)"), name, "flat", POINTS, ""),
        # the planted bug loses test_metrics; the edit would hide it: restored from the gradebook
        "edited_test": (
            _edit(solved_release(name, release, PLANTED), "test_metrics", "assert True"),
            name, "flat", POINTS - 2, "",
        ),
        "deleted_test": (_drop(solved(), "test_metrics"), name, "flat", POINTS, ""),
        "deleted_answer": (_drop(solved(), "dpo_loss_answer"), name, "flat", 0, ""),
        "renamed": (solved(), "my lab (1).ipynb", "flat", POINTS, "renamed"),
        "malformed_json": (b'{"cells": [', name, "flat", None, "not a valid notebook"),
        "empty_file": (b"", name, "flat", None, "is empty"),
        "other_assignment": (not_ours, name, "flat", None, "not this assignment"),
        # the processes of the kernel's tree are counted from outside: killed past the limit
        "fork_bomb": (_with_cell(solved(), FORK_BOMB), name, "flat", None, f"more than {MAX_PROCESSES} processes"),
        # the failing test cell's error is cleared by the student's hook; nbgrader still sees the
        # error in the kernel's reply: the planted bug loses its 2 points, as for "partial"
        "hides_errors": (
            _with_cell(solved_release(name, release, PLANTED), HIDE_ERRORS),
            name, "flat", POINTS - 2, "",
        ),
        # reads, writes and connects (the grader's port, DNS): all denied, full marks
        "snoop": (_with_cell(solved(), targets_line + SNOOP), name, "flat", POINTS, ""),
        # the answer cell executes the solution read from disk: isolated, it finds nothing
        "reads_solutions": (_edit(fresh(), "dpo_loss_answer", steal), name, "flat", 0, ""),
    }  # fmt: skip
    # part B: patching the checks earns nothing, whatever the answer (records judged outside)
    from test_hidden_tests_catch_mistakes import CONSTANT_FORWARD, CONSTANT_LOG_PROBS, FORWARD, LOG_PROBS

    constant = _patched_answer((LOG_PROBS, CONSTANT_LOG_PROBS), (FORWARD, CONSTANT_FORWARD))
    planted = _patched_answer(PLANTED["dpo_loss_answer"])
    guard_off = "import sys\nimport dpolab.grading\n\ndpolab.grading.run_own_code = lambda fn, *a, allow=(), **k: fn(*a, **k)\n"
    cases.update({
        # constant answers that pass every visible test once abs() and allclose are patched
        "patch_checks_constant": (_edit(fresh(), "dpo_loss_answer", constant), name, "flat", 0, ""),
        # the planted bug under the same patches: still loses test_metrics (2 points)
        "patch_checks_partial": (_edit(fresh(), "dpo_loss_answer", planted), name, "flat", POINTS - 2, ""),
        # the guard switched off, then the reference imported: not in the student package
        "imports_reference": (
            _edit(fresh(), "dpo_loss_answer", guard_off + "from dpolab import DPOLoss  # the reference\n"),
            name, "flat", 0, "",
        ),
        # the reference's source searched for on disk and through inspect, then executed
        "copies_reference": (
            _edit(fresh(), "dpo_loss_answer", guard_off + f"REPO = {str(ROOT)!r}\n" + COPY_REFERENCE),
            name, "flat", 0, "",
        ),
    })  # fmt: skip
    if bwrap_missing:  # without the sandbox these would read or tamper: not graded here
        for student in ("snoop", "reads_solutions", "copies_reference"):
            del cases[student]
    expected = {}
    for student, (nb, filename, layout, score, reason) in cases.items():
        data = nb if isinstance(nb, bytes) else nbformat.writes(nb).encode()
        if layout == "nbgrader":
            folder = p["class"] / student / ASSIGNMENT
        else:
            folder = p["class"] / student
        if layout == "zip":
            p["class"].mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(p["class"] / f"{student}.zip", "w") as zf:
                zf.writestr(f"{student}/{filename}", data)
        else:
            folder.mkdir(parents=True)
            (folder / filename).write_bytes(data)
        expected[student] = (score, reason)
    return expected


def _nameserver() -> str:
    try:
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            if line.startswith("nameserver") and "." in line:
                return line.split()[1]
    except OSError:
        pass
    return "1.1.1.1"


def tree_hashes(*roots: Path) -> dict[str, str]:
    return {
        str(f): hashlib.sha256(f.read_bytes()).hexdigest()
        for root in roots
        for f in sorted(Path(root).rglob("*"))
        if f.is_file()
    }


def grade(p: dict, *extra: str) -> None:
    from dpolab_grade.cli import main

    rc = main(
        [
            str(p["class"]), "--out", str(p["out"]), "--solutions", str(p["solutions"]), "--jobs", "2",
            "--cell-timeout", str(CELL_TIMEOUT), "--notebook-timeout", str(NOTEBOOK_TIMEOUT),
            "--memory-mb", str(MEMORY_MB), "--max-processes", str(MAX_PROCESSES), "--no-progress", *SANDBOX, *extra,
        ]
    )  # fmt: skip
    assert rc == 0


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from dpolab_grade.course import prepare_course

    tmp = tmp_path_factory.mktemp("grade_cli")
    with socket.create_server(("127.0.0.1", 0)) as listener:  # the grader's own port
        expected = build_class(tmp, listener.getsockname()[1])
        p = _paths(tmp)
        master = prepare_course(p["solutions"], ASSIGNMENT, p["out"] / ".grader")
        before = tree_hashes(p["class"], p["solutions"], SOLUTIONS, master.root)
        grade(p)
        after = tree_hashes(p["class"], p["solutions"], SOLUTIONS, master.root)
        listener.setblocking(False)
        try:
            listener.accept()
            reached = True
        except BlockingIOError:
            reached = False
    rows = {r["student_id"]: r for r in read_csv(p["out"] / "grades.csv")}
    return {
        "p": p, "expected": expected, "rows": rows, "before": before, "after": after, "master": master,
        "port_reached": reached,
    }  # fmt: skip


# --------------------------------------------------------------------------- outcomes
def test_every_student_has_one_row(graded):
    assert sorted(graded["rows"]) == sorted(graded["expected"])
    assert all(r["max_score"] == str(POINTS) for r in graded["rows"].values())


def test_each_case_gets_its_expected_outcome(graded):
    wrong = []
    for student, (score, reason) in graded["expected"].items():
        row = graded["rows"][student]
        if score is None:
            ok = row["status"] == "ungradable" and reason in row["reason"]
        else:
            ok = row["status"] == "graded" and float(row["score"]) == score and reason in row["reason"]
        if not ok:
            wrong.append((student, score, reason, dict(row)))
    assert not wrong, "\n".join(map(str, wrong))


def test_correct_submissions_keep_full_marks(graded):
    full = [s for s, (score, _) in graded["expected"].items() if score == POINTS]
    assert len(full) >= 8
    assert all(graded["rows"][s]["score"] == str(POINTS) for s in full)


def test_no_submission_solution_or_gradebook_file_modified(graded):
    assert graded["before"] == graded["after"]
    assert not (graded["p"]["out"] / "pwned.txt").exists()


def test_cells_csv_has_one_column_per_graded_cell(graded):
    rows = read_csv(graded["p"]["out"] / "cells.csv")
    cells = [k for k in rows[0] if k not in ("student_id", "status")]
    assert cells == [
        "test_log_probs",
        "test_dpo_loss",
        "test_label_smoothing",
        "test_reference_free",
        "test_metrics",
    ]
    by_student = {r["student_id"]: r for r in rows}
    assert by_student["partial"]["test_metrics"] == "0" and by_student["partial"]["test_dpo_loss"] == "3"
    assert by_student["empty_file"]["test_metrics"] == ""  # not graded, not 0


def test_merged_gradebook_has_every_grade_once(graded):
    """One submission per student, one grade per grade cell, the same scores as grades.csv."""
    from dpolab_grade.gradebook import scores

    merged = scores(graded["p"]["out"] / "gradebook.db", ASSIGNMENT)
    assert sorted(merged) == sorted(graded["expected"])
    for student, row in graded["rows"].items():
        assert len(merged[student]) == 5
        assert sum(merged[student].values()) == float(row["score"]), student
    with sqlite3.connect(graded["p"]["out"] / "gradebook.db") as db:
        (n,) = db.execute("select count(*) from grade").fetchone()
        (dup,) = db.execute(
            "select count(*) from (select notebook_id, cell_id from grade group by 1, 2 having count(*) > 1)"
        ).fetchone()
    assert dup == 0 and n == 5 * len(graded["expected"])


def test_ungradable_reasons_are_logged(graded):
    log = (graded["p"]["out"] / "grading.log").read_text()
    for student, (score, _) in graded["expected"].items():
        if score is None:
            assert re.search(rf"WARNING {student}: ungradable", log), student


def test_checksum_warnings_only_for_edited_test_cells(graded):
    """nbgrader warns "Attribute 'checksum' ... has changed!" for a test cell the student edited,
    not for the release's test cells, whose hidden tests are restored quietly (RestoreHiddenTests)."""
    logs = graded["p"]["out"] / "logs"
    warned = {p.parent.name for p in logs.glob(f"*/{NB}.log") if "Attribute 'checksum'" in p.read_text()}
    assert warned == {"edited_test"}, warned
    edited = (logs / "edited_test" / f"{NB}.log").read_text()
    assert "Attribute 'checksum' for cell test_metrics has changed!" in edited


def test_output_is_capped(graded):
    html = graded["p"]["out"] / "feedback" / "prints_50mb" / ASSIGNMENT / f"{NB}.html"
    assert html.stat().st_size < 2_000_000


# --------------------------------------------------------------------------- isolation
@pytest.mark.skipif(bool(bwrap_missing), reason=f"no file isolation here: {bwrap_missing}")
def test_student_code_cannot_reach_files(graded):
    html = (graded["p"]["out"] / "feedback" / "snoop" / ASSIGNMENT / f"{NB}.html").read_text()
    found = json.loads(re.search(r"SNOOP(\{.*?\})SNOOP", html.replace("&quot;", '"')).group(1))
    # /tmp inside the sandbox is its own (empty, in memory): writing there succeeds and stays there
    assert found.pop("write tmp of the grader") == "DONE"
    assert found and set(found.values()) == {"denied"}, found
    assert not Path("/tmp/dpolab-pwned.txt").exists()
    assert graded["rows"]["reads_solutions"]["score"] == "0"


@pytest.mark.skipif(bool(bwrap_missing), reason=f"no network isolation here: {bwrap_missing}")
def test_student_code_has_no_network(graded):
    """The kernel speaks to nbgrader over ipc sockets; its sandbox has no network at all."""
    html = (graded["p"]["out"] / "feedback" / "snoop" / ASSIGNMENT / f"{NB}.html").read_text()
    found = json.loads(re.search(r"SNOOP(\{.*?\})SNOOP", html.replace("&quot;", '"')).group(1))
    net = {k: v for k, v in found.items() if k.startswith(("connect", "dns"))}
    assert sorted(net) == ["connect DNS server", "connect grader's loopback port", "dns lookup"]
    assert set(net.values()) == {"denied"}, net
    assert not graded["port_reached"]
    assert "kernel transport: ipc sockets; no network" in (graded["p"]["out"] / "grading.log").read_text()


def test_watchdog_reports_its_reason(graded):
    log = (graded["p"]["out"] / "logs" / "fork_bomb" / f"{NB}.log").read_text()
    assert f"watchdog: the notebook started more than {MAX_PROCESSES} processes: killing the kernel" in log
    for student in ("solved", "snoop", "hides_errors"):
        if student in graded["rows"]:  # the others stayed well below the limits
            log = (graded["p"]["out"] / "logs" / student / f"{NB}.log").read_text()
            peak = int(re.search(r"watchdog: at most (\d+) processes", log).group(1))
            assert 1 <= peak <= 8, (student, peak)


# --------------------------------------------------------------------------- no leaks
class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def html_text(path: Path) -> str:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    import html as html_lib

    return html_lib.unescape("".join(parser.parts))


def marked_lines(kind: str) -> list[str]:
    """Substantial lines between the ``### BEGIN/END {kind}`` markers of the source notebook."""
    lines = []
    for cell in nbformat.read(SOLUTIONS / f"{NB}.ipynb", as_version=4).cells:
        inside = False
        for line in cell.source.splitlines():
            m = MARKER.match(line)
            if m:
                inside = m.group(1) == "BEGIN" and m.group(2) == kind
                continue
            if inside and len(line.strip()) > 25:
                lines.append(line.strip())
    return lines


def test_feedback_shows_no_hidden_test_line(graded):
    hidden = marked_lines("HIDDEN TESTS")
    assert hidden
    files = list((graded["p"]["out"] / "feedback").rglob("*.html"))
    assert len(files) >= 12
    for path in files:
        text = html_text(path)
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{path}: {leaked[:3]}"
    # a failing test cell that holds hidden tests shows its message and the student's frames, not its lines
    partial = html_text(graded["p"]["out"] / "feedback" / "partial" / ASSIGNMENT / f"{NB}.html")
    assert "AssertionError" in partial and "the lines of the hidden test are not shown" in partial


def test_feedback_of_the_release_and_the_release_show_no_solution_line(graded):
    solution = marked_lines("SOLUTION")
    assert solution
    texts = {
        "feedback of the untouched release": html_text(
            graded["p"]["out"] / "feedback" / "untouched" / ASSIGNMENT / f"{NB}.html"
        ),
        "grader's release": (graded["master"].release / f"{NB}.ipynb").read_text(),
    }
    for what, text in texts.items():
        leaked = [line for line in solution + marked_lines("HIDDEN TESTS") if line in text]
        assert not leaked, f"{what}: {leaked[:3]}"


# --------------------------------------------------------------------------- re-runs
def test_rerun_grades_only_what_changed(graded):
    p = graded["p"]
    results = p["out"] / "results"
    stamps = {f.name: f.stat().st_mtime_ns for f in results.glob("*.json")}
    nb = solved_release(f"{NB}.ipynb", ROOT / "notebooks" / ASSIGNMENT, PLANTED)
    nbformat.write(nb, p["class"] / "untouched" / f"{NB}.ipynb")  # the student resubmits
    grade(p)
    changed = {f.name for f in results.glob("*.json") if f.stat().st_mtime_ns != stamps[f.name]}
    assert changed == {"untouched.json"}
    rows = {r["student_id"]: r for r in read_csv(p["out"] / "grades.csv")}
    assert rows["untouched"]["score"] == str(POINTS - 2)
    assert {s: r["score"] for s, r in rows.items() if s != "untouched"} == {
        s: r["score"] for s, r in graded["rows"].items() if s != "untouched"
    }


# --------------------------------------------------------------------------- part B
def test_patching_the_checks_earns_nothing(graded):
    """Answers that patch ``torch.allclose``, ``math.isclose``, ``torch.testing.assert_close``,
    ``abs`` and the guard pass every check a kernel could make; the records say otherwise."""
    rows = graded["rows"]
    assert rows["patch_checks_constant"]["score"] == "0", rows["patch_checks_constant"]
    assert rows["patch_checks_partial"]["score"] == str(POINTS - 2), rows["patch_checks_partial"]
    cells = {r["student_id"]: r for r in read_csv(graded["p"]["out"] / "cells.csv")}
    assert cells["patch_checks_partial"]["test_metrics"] == "0"
    feedback = graded["p"]["out"] / "feedback" / "patch_checks_partial"
    html = "".join(f.read_text() for f in feedback.rglob("*.html"))
    assert "the hidden tests of this cell failed" in html and "[test_metrics: " in html, (
        "the feedback must say which hidden check failed"
    )


def test_the_reference_cannot_be_imported(graded):
    """The kernel's dpolab is the student package, with or without the sandbox: nothing to import."""
    rows = graded["rows"]
    assert rows["imports_reference"]["score"] == "0", rows["imports_reference"]


@pytest.mark.skipif(bool(bwrap_missing), reason=f"needs bubblewrap: {bwrap_missing}")
def test_the_reference_is_not_in_the_kernel(graded):
    """Under the sandbox the reference's files are not there either: nothing to copy."""
    rows = graded["rows"]
    assert rows["copies_reference"]["score"] == "0", rows["copies_reference"]
    log = (graded["p"]["out"] / "logs" / "copies_reference" / f"{NB}.log").read_text()
    assert "found 0 reference sources" in log or "found 0 reference sources" in _feedback_text(
        graded, "copies_reference"
    )


def _feedback_text(graded, student: str) -> str:
    return "".join(f.read_text() for f in (graded["p"]["out"] / "feedback" / student).rglob("*.html"))


# --------------------------------------------------------------------------- inputs (no kernel)
def test_zip_is_read_safely(tmp_path):
    from dpolab_grade.inputs import MAX_NOTEBOOK_BYTES, find_submissions

    good = nbformat.writes(nbformat.v4.new_notebook()).encode()
    with zipfile.ZipFile(tmp_path / "alice.zip", "w") as zf:
        zf.writestr("alice/01_dpo_loss.ipynb", good)
        zf.writestr("../../escape.ipynb", good)
        zf.writestr("/etc/abs.ipynb", good)
        link = zipfile.ZipInfo("alice/link.ipynb")
        link.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(link, "/etc/passwd")
        zf.writestr("alice/big.ipynb", b" " * (MAX_NOTEBOOK_BYTES + 1), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("__MACOSX/alice/._01_dpo_loss.ipynb", b"junk")
    (tmp_path / "bob.zip").write_bytes(b"not a zip")
    (tmp_path / "notes.txt").write_text("ignored")
    subs = {s.student_id: s for s in find_submissions(tmp_path, ASSIGNMENT)}
    assert sorted(subs) == ["alice", "bob"]
    assert list(subs["alice"].files) == ["01_dpo_loss.ipynb"]
    problems = " | ".join(subs["alice"].problems)
    for words in ("unsafe path '../../escape.ipynb'", "unsafe path '/etc/abs.ipynb'", "link", "larger than"):
        assert words in problems
    assert "not a readable zip" in subs["bob"].problems[0]
    assert not (tmp_path.parent / "escape.ipynb").exists()


def test_layouts_and_renamed_notebooks(tmp_path):
    from dpolab_grade.inputs import find_submissions, match_notebooks

    release = ROOT / "notebooks" / ASSIGNMENT
    names = sorted(p.stem for p in release.glob("*.ipynb"))
    (tmp_path / "submitted" / "ann" / ASSIGNMENT).mkdir(parents=True)
    (tmp_path / "submitted" / "ben").mkdir(parents=True)
    for n in names:
        shutil.copy(release / f"{n}.ipynb", tmp_path / "submitted" / "ann" / ASSIGNMENT)
    shutil.copy(release / f"{names[0]}.ipynb", tmp_path / "submitted" / "ben" / "Copy of lab.ipynb")
    (tmp_path / "submitted" / "ben" / f"{names[1]}.ipynb").write_text("")
    expected = {}
    for n in names:
        nb = nbformat.read(release / f"{n}.ipynb", as_version=4)
        expected[n] = {grading_meta(c)["grade_id"] for c in nb.cells if grading_meta(c)}
    subs = {s.student_id: s for s in find_submissions(tmp_path, ASSIGNMENT)}  # the course root
    files, problems, missing, notes = match_notebooks(subs["ann"], expected)
    assert sorted(files) == names and not problems and not missing and not notes
    files, problems, missing, notes = match_notebooks(subs["ben"], expected)
    assert list(files) == [names[0]] and notes == [f"Copy of lab.ipynb graded as {names[0]}.ipynb (renamed)"]
    assert problems == {
        names[1]: f"{names[1]}.ipynb is empty"
    }  # there, but not gradable: the instructor acts
    assert missing == names[2:]  # not handed in: 0 points


def test_notebook_wall_clock_limit(graded, tmp_path):
    """A notebook past --notebook-timeout is killed with its kernel and reported; the run goes on."""
    p = dict(graded["p"], **{"class": tmp_path / "class", "out": tmp_path / "out"})
    shutil.copytree(graded["p"]["out"] / ".grader", p["out"] / ".grader")  # the grader's course, reused
    nb = _with_cell(solved_release(f"{NB}.ipynb", ROOT / "notebooks" / ASSIGNMENT), "while True:\n    pass")
    (p["class"] / "slow").mkdir(parents=True)
    nbformat.write(nb, p["class"] / "slow" / f"{NB}.ipynb")
    from dpolab_grade.cli import main

    args = [str(p["class"]), "--out", str(p["out"]), "--solutions", str(p["solutions"]), "--no-progress"]
    assert main([*args, *SANDBOX, "--cell-timeout", "60", "--notebook-timeout", "12"]) == 0
    (row,) = read_csv(p["out"] / "grades.csv")
    assert row["status"] == "ungradable" and "longer than the 12 s limit" in row["reason"]


def test_kernel_transport_falls_back_to_tcp_with_a_log_line(monkeypatch):
    """ipc sockets: the sandbox gets no network; where ipc is impossible, TCP and a shared network, said."""
    import sys

    from dpolab_grade import isolation, runner, sandbox, worker

    args = (sys.executable, Path("/w"), Path("/nb"), Path("/rt"), [])
    argv = sandbox.bwrap_argv(*args, ipc_dir=Path("/rt/ipc"))
    assert "--share-net" not in argv and argv[argv.index("/rt/ipc") - 1] == "--bind"
    spec = {"unit": "/u", "fixtures": "", "ipc_dir": "/rt/ipc", "transport": "ipc"}
    c = worker.config(spec, worker.Limits(), Path("/u/course"), Path("/u/verdicts.jsonl"))
    assert c.KernelManager.transport == "ipc" and c.KernelManager.ip == "/rt/ipc/k"

    monkeypatch.setattr(isolation, "ipc_unavailable", lambda use_bwrap: "pyzmq has no ipc transport here")
    transport, line = runner.resolve_transport(True)
    assert transport == "tcp" and "no ipc transport" in line and "network is shared" in line
    assert "--share-net" in sandbox.bwrap_argv(*args, ipc_dir=None)
    # the zygote's socket still needs its folder: bound, with the network shared beside it
    argv = sandbox.bwrap_argv(*args, ipc_dir=Path("/rt/ipc"), share_net=True)
    assert "--share-net" in argv and argv[argv.index("/rt/ipc") - 1] == "--bind"
    c = worker.config(
        dict(spec, transport="tcp"), worker.Limits(), Path("/u/course"), Path("/u/verdicts.jsonl")
    )
    assert "transport" not in c.KernelManager


def test_the_feedback_comes_from_templates_compiled_once(monkeypatch):
    """The worker's feedback exporter writes nbgrader's page byte for byte, and compiles no template:
    they were compiled when the worker's module was imported (once per run, in the fork server)."""
    import jinja2
    from nbconvert.exporters import HTMLExporter
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    from dpolab_grade import worker

    v4 = nbformat.v4
    nb = v4.new_notebook(
        cells=[
            v4.new_markdown_cell("# DPO\nThe *loss*: $-\\log \\sigma(\\beta h)$, `beta`."),
            v4.new_code_cell("x = 1\nprint(x)", outputs=[v4.new_output("stream", text="1\n")]),
        ]
    )
    compiled: list[str] = []
    compile_ = jinja2.Environment.compile

    def counting(self, source, name=None, *args, **kwargs):
        compiled.append(name)
        return compile_(self, source, name, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)

    def page(exporter_class) -> str:
        feedback = GenerateFeedback(coursedir=CourseDirectory(), config=Config())
        scores = {"notebook": "01_dpo_loss", "score": 3.0, "max_score": 4.0, "late_penalty": 0}
        html, _ = exporter_class(parent=feedback, config=feedback.config).from_notebook_node(
            nb, resources={"nbgrader": scores}
        )
        return html

    ours = page(worker.FeedbackExporter)
    assert compiled == [] and len(worker.TEMPLATES.code) >= 5, (compiled, len(worker.TEMPLATES.code))
    theirs = page(HTMLExporter)
    assert "index.html.j2" in compiled  # nbconvert's own exporter compiles them again
    assert ours == theirs and "Score: 3.0 / 4.0" in ours and "<em>loss</em>" in ours
    # the worker's configuration gives nbgrader's feedback app that exporter
    c = worker.config({"unit": "/u", "fixtures": ""}, worker.Limits(), Path("/u/course"), Path("/u/v"))
    assert GenerateFeedback(coursedir=CourseDirectory(), config=c).exporter_class is worker.FeedbackExporter


def test_the_judge_reads_what_the_hidden_tests_send():
    """The grader's copy of the records' MIME type and variable agrees with dpolab.records's."""
    from dpolab import records
    from dpolab_grade import judge

    assert (judge.MIME, judge.ENV) == (records.MIME, records.ENV)
