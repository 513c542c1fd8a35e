"""Plain ``nbgrader autograde`` (formgrader's door) grades a hostile class in dpolab-grade's sandbox.

The course's ``nbgrader_config.py`` has ``use_judge(c)`` and nothing else of ours: nbgrader itself
runs each student's kernel, through :class:`dpolab_grade.preprocessors.RecordingExecute`, in
bubblewrap with dpolab-grade's limits and the student package. The class is the hostile class of
``tests/test_grade_cli.py`` (notebook 01, 11 points) in nbgrader's own layout
(``submitted/<student>/<assignment>/``), with more targets for ``snoop``: the course's source
notebooks and gradebook, the fixtures' cache and the student package in the grading user's home.
What is asserted is what the dpolab-grade test asserts: every write and read outside the kernel's
work folder denied, no network, solutions and other submissions byte for byte unchanged, the
gradebook whole, cheats 0, and the whole class graded (each student in the gradebook).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_tools import ASSIGNMENT, SOLUTIONS
from test_grade_cli import MAX_PROCESSES, MEMORY_MB, NB, POINTS, build_class, bwrap_missing, tree_hashes

BIN = Path(sys.executable).parent
CELL_TIMEOUT = 15
# the notebook cases of the dpolab-grade class (the others test dpolab-grade's reading of files)
STUDENTS = [
    "solved", "partial", "untouched", "infinite_loop", "kernel_exit", "memory_bomb", "prints_50mb",
    "fork_bomb", "hides_errors", "snoop", "reads_solutions", "edited_test", "deleted_test",
    "patch_checks_constant", "imports_reference", "copies_reference",
]  # fmt: skip
CHEATS = ["reads_solutions", "patch_checks_constant", "imports_reference", "copies_reference"]
CONFIG = """\
from dpolab_grade.pipeline import use_judge

c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = "sqlite:///{root}/gradebook.db"
c.Execute.timeout = {timeout}
c.RecordingExecute.memory_mb = {memory_mb}
c.RecordingExecute.max_processes = {max_processes}
use_judge(c{sandbox})
"""


def nbgrader(course: Path, home: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home), DPOLAB_DEVICE="cpu")
    env.pop("XDG_CACHE_HOME", None)
    env["PATH"] = path or os.pathsep.join([str(BIN), env["PATH"]])
    return subprocess.run(
        [str(BIN / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True, timeout=1500
    )


def plain_course(root: Path, home: Path, sandbox: str = "") -> None:
    """An nbgrader course at ``root`` with notebook 01 as the assignment, released; judge configured."""
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{NB}.ipynb", root / "source" / ASSIGNMENT)
    (root / "nbgrader_config.py").write_text(
        CONFIG.format(
            root=str(root), timeout=CELL_TIMEOUT, memory_mb=MEMORY_MB, max_processes=MAX_PROCESSES,
            sandbox=f", sandbox={sandbox!r}" if sandbox else "",
        )
    )  # fmt: skip
    home.mkdir(exist_ok=True)
    proc = nbgrader(root, home, "generate_assignment", ASSIGNMENT, "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]


def scores(root: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    if bwrap_missing:
        pytest.skip(f"bubblewrap is needed here: {bwrap_missing}")
    tmp = tmp_path_factory.mktemp("plain_nbgrader")
    root, home = tmp / "out", tmp / "home"  # "out": the course is where snoop's targets point
    extra = {
        "read": {
            "course source": str(root / "source" / ASSIGNMENT / f"{NB}.ipynb"),
            "instructor's home": str(home / "secret.txt"),
        },
        "write": {
            "course source": str(root / "source" / ASSIGNMENT / f"{NB}.ipynb"),
            "course gradebook": str(root / "gradebook.db"),
            "fixtures cache": str(home / ".cache" / "dpolab" / "fixtures" / "pwned.json"),
            "student package cache": str(home / ".cache" / "dpolab" / "student" / "pwned.py"),
        },
    }
    with socket.create_server(("127.0.0.1", 0)) as listener:
        expected = build_class(tmp, listener.getsockname()[1], extra)
        plain_course(root, home)
        (home / "secret.txt").write_text("the instructor's")
        for student in STUDENTS:
            folder = root / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True)
            (handed_in,) = (tmp / "class" / student).rglob(f"{NB}.ipynb")  # flat or nbgrader's layout
            shutil.copy(handed_in, folder)
        kept = [tmp / "class", tmp / "course", root / "source", root / "release", root / "submitted"]
        before = tree_hashes(*kept)
        proc = nbgrader(root, home, "autograde", ASSIGNMENT)
        after = tree_hashes(*kept)
        listener.setblocking(False)
        try:
            listener.accept()
            reached = True
        except BlockingIOError:
            reached = False
    log = proc.stdout + proc.stderr
    (tmp / "autograde.log").write_text(log)
    return {
        "root": root, "home": home, "expected": expected, "log": log, "rc": proc.returncode,
        "before": before, "after": after, "reached": reached, "scores": scores(root),
    }  # fmt: skip


def test_the_whole_class_is_graded(plain):
    """Every student is in the gradebook with a score; the honest ones have their expected scores."""
    got = plain["scores"]
    assert sorted(got) == sorted(STUDENTS), plain["log"][-3000:]
    for student in STUDENTS:
        score, _ = plain["expected"][student]
        if score is not None and student not in CHEATS:
            assert got[student] == score, (student, got[student], score)
    assert "isolation: bubblewrap" in plain["log"]


def test_cheats_earn_nothing(plain):
    for student in CHEATS:
        assert plain["scores"][student] == 0, student


def test_killed_kernels_earn_nothing_they_did_not_run(plain):
    """A kernel that dies (os._exit) or is killed by the watchdog (fork bomb) is logged; the cells
    after it did not run and earn nothing."""
    assert plain["scores"]["kernel_exit"] < POINTS, plain["scores"]
    assert plain["scores"]["fork_bomb"] < POINTS, plain["scores"]
    assert f"the notebook started more than {MAX_PROCESSES} processes" in plain["log"]


def test_nothing_outside_the_kernel_changed(plain):
    """Solutions, the course's source and release, every submission: byte for byte as before."""
    assert plain["after"] == plain["before"]
    assert not Path("/tmp/dpolab-pwned.txt").exists()
    assert (plain["home"] / "secret.txt").read_text() == "the instructor's"
    leftovers = [p for p in plain["home"].rglob("*") if "pwned" in p.name]
    assert leftovers == []
    with sqlite3.connect(plain["root"] / "gradebook.db") as db:  # whole: opens, and holds every student
        assert db.execute("pragma integrity_check").fetchone() == ("ok",)
        ids = {row[0] for row in db.execute("select id from student")}
    assert set(STUDENTS) <= ids
    assert not (plain["root"] / "grades.csv").exists() and not (plain["root"] / "pwned.txt").exists()


def test_snoop_is_denied_everything(plain):
    """Reads, writes, the grader's port, DNS: each denied, from the kernel nbgrader started."""
    graded = plain["root"] / "autograded" / "snoop" / ASSIGNMENT / f"{NB}.ipynb"
    found = re.search(r"SNOOP(\{.*?\})SNOOP", graded.read_text().replace('\\"', '"'))
    assert found, "snoop's report is missing from its graded notebook"
    import json

    report = json.loads(found.group(1))
    assert len(report) >= 14
    # /tmp inside the sandbox is its own (empty, in memory): writing there succeeds and stays there
    assert report.pop("write tmp of the grader") == "DONE"
    assert {k: v for k, v in report.items() if v != "denied"} == {}
    assert not plain["reached"]


def test_the_kernel_imports_the_student_package(plain):
    """The cheater that switched the guard off and imported DPOLoss found no reference to import."""
    graded = plain["root"] / "autograded" / "imports_reference" / ASSIGNMENT / f"{NB}.ipynb"
    assert "DPOLoss is an exercise of notebook 01_dpo_loss" in graded.read_text()
