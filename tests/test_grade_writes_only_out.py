"""``dpolab-grade`` writes only inside ``--out``: run from a full nbgrader course folder.

The course holds what an instructor's does mid-term: ``source/``, ``release/``, ``submitted/``
(with nbgrader's ``timestamp.txt``), ``autograded/`` and ``feedback/`` of plain nbgrader, a
gradebook with the assignment's due date, and ``nbgrader_config.py``. ``dpolab-grade`` is run
there as docs/instructors.md says (the current folder is the course), with ``HOME`` and ``TMPDIR`` of
the test's own: after a normal run, a rerun, ``--force``, two shards and their merge, every file
outside the OUT folders is the same byte for byte, the temporary folder is empty again (no
scratch folder left) and ``HOME`` holds nothing but the fixtures' cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ASSIGNMENT, ROOT, SOLUTIONS, solved_release
from test_grade_cli import SANDBOX

BIN = Path(sys.executable).parent
NB = "01_dpo_loss.ipynb"
OUTS = ("grading", "grading-1", "grading-2", "grading-merged")
RUN = ["--jobs", "1", "--threads", "1", "--cell-timeout", "30", "--no-progress", *SANDBOX]
COURSE_CONFIG = """\
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "dpo-lab"
c.Exchange.root = {exchange!r}
"""


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file (and ``"<dir>"`` for every folder) under ``root``."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in skip:
            continue
        out[str(rel)] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    from nbgrader.api import Gradebook

    tmp = tmp_path_factory.mktemp("writes_only_out")
    course = tmp / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(SOLUTIONS / NB, course / "source" / ASSIGNMENT)
    (course / "release" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / ASSIGNMENT / NB, course / "release" / ASSIGNMENT)
    (course / "nbgrader_config.py").write_text(COURSE_CONFIG.format(exchange=str(tmp / "exchange")))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.update_or_create_assignment(ASSIGNMENT, duedate="2026-12-01 17:00:00 UTC")
    ann = course / "submitted" / "ann" / ASSIGNMENT
    ann.mkdir(parents=True)
    nbformat.write(solved_release(NB, ROOT / "notebooks" / ASSIGNMENT), ann / NB)
    (ann / "timestamp.txt").write_text("2026-12-01 16:59:00.000000 UTC")
    (ann / "submission_secret.txt").write_text("secret")
    bob = course / "submitted" / "bob" / ASSIGNMENT
    bob.mkdir(parents=True)
    (bob / NB).write_bytes(b"")  # ungradable at once: no kernel
    (bob / "timestamp.txt").write_text("2026-12-02 09:00:00.000000 UTC")
    for place, name in (("autograded", "precious.txt"), ("feedback", "01_dpo_loss.html")):
        (course / place / "someone" / ASSIGNMENT).mkdir(parents=True)
        (course / place / "someone" / ASSIGNMENT / name).write_text(f"plain nbgrader's {place}")
    home, tmpdir = tmp / "home", tmp / "tmpdir"
    home.mkdir()
    tmpdir.mkdir()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmpdir), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("XDG_CACHE_HOME", None)  # the fixtures' cache: ~/.cache/dpolab, a cache the grader owns
    env["DPOLAB_DEVICE"] = "cpu"
    return {"course": course, "home": home, "tmpdir": tmpdir, "env": env}


def dpolab_grade(c: dict, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(BIN / "dpolab-grade"), *args], cwd=c["course"], env=c["env"], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"dpolab-grade {' '.join(args)}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


RUNS = {
    "normal run": [["submitted", "--out", "grading", "--solutions", f"source/{ASSIGNMENT}", *RUN]],
    "rerun": [["submitted", "--out", "grading", "--solutions", f"source/{ASSIGNMENT}", *RUN]],
    "--force": [["submitted", "--out", "grading", "--solutions", f"source/{ASSIGNMENT}", *RUN, "--force"]],
    "shards": [
        [
            "submitted",
            "--out",
            f"grading-{k}",
            "--solutions",
            f"source/{ASSIGNMENT}",
            *RUN,
            "--shard",
            f"{k}/2",
        ]
        for k in (1, 2)
    ],
    "merge": [["merge", "grading-1", "grading-2", "--out", "grading-merged"]],
}


@pytest.fixture(scope="module")
def runs(course) -> dict:
    """Each run: the course (OUT folders left out), TMPDIR and HOME before and after."""
    seen = {}
    for name, commands in RUNS.items():
        before = snapshot(course["course"], OUTS)
        for args in commands:
            dpolab_grade(course, *args)
        seen[name] = {
            "before": before,
            "after": snapshot(course["course"], OUTS),
            "tmpdir": snapshot(course["tmpdir"]),
            "home": snapshot(course["home"]),
        }
    return seen


@pytest.mark.parametrize("name", list(RUNS))
def test_nothing_outside_out_changes(runs, name):
    run = runs[name]
    changed = sorted(
        k for k in run["before"].keys() | run["after"].keys() if run["before"].get(k) != run["after"].get(k)
    )
    assert not changed, f"{name} changed files outside --out: {changed}"
    assert "autograded/someone/lab_3_1_5_dpo/precious.txt" in run["after"]


@pytest.mark.parametrize("name", list(RUNS))
def test_no_scratch_folder_is_left_in_the_temporary_folder(runs, name):
    assert runs[name]["tmpdir"] == {}, f"{name} left {sorted(runs[name]['tmpdir'])[:10]} in TMPDIR"


def test_home_holds_only_caches(runs):
    """The fixtures' cache (and matplotlib's font cache, made by the class report): ~/.cache only."""
    files = [k for k, v in runs["merge"]["home"].items() if v != "<dir>"]
    assert any(f.startswith(".cache/dpolab/fixtures/") for f in files), files
    assert all(f.startswith(".cache/") for f in files), files


def test_out_is_an_nbgrader_course_folder_of_the_term(course, runs):
    """OUT holds submitted/ (formgrader counts submissions there) and, beside each student's graded
    notebooks and feedback, the exchange files that ``nbgrader release_feedback`` reads."""
    import csv

    out = course["course"] / "grading"
    ann = ("ann", ASSIGNMENT)
    assert (out / "submitted" / Path(*ann) / NB).read_bytes() == (
        course["course"] / "submitted" / Path(*ann) / NB
    ).read_bytes()
    for place in ("submitted", "autograded", "feedback"):
        for name in ("timestamp.txt", "submission_secret.txt"):
            assert (out / place / Path(*ann) / name).read_bytes() == (
                course["course"] / "submitted" / Path(*ann) / name
            ).read_bytes(), (place, name)
    rows = {r["student_id"]: r for r in csv.DictReader(open(out / "grades.csv", newline=""))}
    assert rows["ann"]["timestamp"] == "2026-12-01 16:59:00 UTC" and rows["ann"]["seconds_late"] == "0"
    assert rows["bob"]["seconds_late"] == str(16 * 3600) and "late by 16 h 00 min" in rows["bob"]["reason"]
    config = (out / "nbgrader_config.py").read_text()
    assert "c.CourseDirectory.course_id = 'dpo-lab'" in config and "c.Exchange.root = " in config
