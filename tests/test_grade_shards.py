"""``dpolab-grade --shard K/N`` and ``dpolab-grade merge``: a class graded in shards equals one run.

One small class (notebook 01 only, as in tests/test_grade_cli.py) is graded twice, at the same
time: in one run, and as 3 shards, each its own ``dpolab-grade --shard K/3`` process as the
tasks of a job array would be; the shards are then merged with ``dpolab-grade merge``. The
merged folder must equal the single run grade for grade (grades.csv, cells.csv, report.html, the
results, in the same order), file for file (each feedback HTML is its shard's byte for byte, and
the single run's but for what differs between any two gradings: random widget ids and where the
kernel's stdout was cut, see ``normalised``) and in nbgrader's gradebook (``nbgrader.api.Gradebook``,
``nbgrader export``). Merges that must be refused are built from copies of the shards' folders with
one thing wrong each.

The recipes under deploy/ are tested too: the Kubernetes manifests against the API's schema
(kubernetes-validate, offline) and their shell commands with a stand-in ``dpolab-grade``; the
Slurm scripts on a one-node Slurm started here (Debian's slurm-wlm and munge, as root), the
array and its merge submitted for real; skipped, saying why, where that cannot start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from notebook_tools import ASSIGNMENT, ROOT, SOLUTIONS, solved_release
from test_grade_cli import NB, PLANTED, POINTS, SANDBOX, read_csv

BIN = Path(sys.executable).parent
SHARDS = 3
RUN = ["--jobs", "1", "--threads", "1", "--cell-timeout", "30", "--no-progress", *SANDBOX]
# student: (layout, planted bug or None or "untouched" or "empty", shard of 3, expected score or None)
# The ids are chosen so that every shard has a student (checked below: sha256(id) % 3 + 1); "ann"
# comes as ann.zip, which sorts after the folder ann-b: a single run lists ann-b first.
CLASS = {
    "ann": ("zip", None, 1, POINTS),
    "ann-b": ("flat", PLANTED, 3, POINTS - 2),
    "bob": ("nbgrader", None, 2, POINTS),
    "empty_file": ("flat", "empty", 3, None),
    "untouched": ("flat", "untouched", 3, 0),
}


def env() -> dict[str, str]:
    """This venv's bin first on PATH: nbgrader runs alembic from it."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DPOLAB_DEVICE="cpu")


def write_class(folder: Path) -> None:
    release = ROOT / "notebooks" / ASSIGNMENT
    name = f"{NB}.ipynb"
    for student, (layout, kind, _, _) in CLASS.items():
        if kind == "empty":
            data = b""
        elif kind == "untouched":
            data = (release / name).read_bytes()
        else:
            data = nbformat.writes(solved_release(name, release, kind)).encode()
        if layout == "zip":
            folder.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(folder / f"{student}.zip", "w") as zf:
                zf.writestr(f"{student}/{name}", data)
            continue
        where = folder / student / ASSIGNMENT if layout == "nbgrader" else folder / student
        where.mkdir(parents=True)
        (where / name).write_bytes(data)


def grade_cmd(p: dict, out: Path, *extra: str) -> list[str]:
    return [str(BIN / "dpolab-grade"), str(p["class"]), "--out", str(out), "--solutions", str(p["solutions"]),
            *RUN, *extra]  # fmt: skip


def merge_cmd(shards: list[Path], out: Path) -> list[str]:
    return [str(BIN / "dpolab-grade"), "merge", *map(str, shards), "--out", str(out)]


def check(cmd: list[str], environ: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` (in ``env()`` unless ``environ``); fail with its output unless it exits 0."""
    proc = subprocess.run(cmd, env=environ or env(), capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once and as 3 concurrent shard processes, then merged."""
    from dpolab_grade.course import prepare_course

    tmp = tmp_path_factory.mktemp("grade_shards")
    p = {"class": tmp / "class", "solutions": tmp / "solutions" / ASSIGNMENT, "tmp": tmp}
    p["solutions"].mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{NB}.ipynb", p["solutions"])
    write_class(p["class"])
    single, shards, merged = (
        tmp / "single",
        [tmp / f"shard-{k}" for k in range(1, SHARDS + 1)],
        tmp / "merged",
    )
    course = prepare_course(p["solutions"], ASSIGNMENT, tmp / "cache")  # built once, for every run
    for out in (single, *shards):
        shutil.copytree(course.root, out / ".grader" / course.root.name)
    start = time.perf_counter()
    runs = [grade_cmd(p, single)] + [grade_cmd(p, out, "--shard", f"{k}/{SHARDS}") for k, out in
                                     enumerate(shards, 1)]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for cmd in runs
    ]
    for cmd, proc in zip(runs, procs, strict=True):
        output = proc.communicate(timeout=600)[0].decode()
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{output[-3000:]}"
    graded_s = time.perf_counter() - start
    check(merge_cmd(shards, merged))
    print(f"\nclass of {len(CLASS)} graded in one run and as {SHARDS} shards, concurrently: {graded_s:.0f} s")
    return {"p": p, "single": single, "shards": shards, "merged": merged, "digest": course.digest}


# What differs between two gradings of the same notebook, on one machine as on several:
# - random ids: notebook 01's explorer widget gets a uuid4 ``model_id`` in the kernel, and nbconvert
#   gives each widget view a uuid4 ``id`` (used twice: the div and ``$('#...')``);
# - where the kernel's stdout is cut: ipykernel sends what ``print`` wrote as it is flushed, so on a
#   busy machine one line sometimes goes as two stream messages (its text, then its newline), which
#   the HTML shows as two output areas instead of one. Same text; the areas are joined back here.
UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<=\"model_id\": \")[0-9a-f]{32}"
)
SPLIT_STREAM = (
    '</pre>\n</div>\n</div>\n<div class="output_area">\n<div class="prompt"></div>\n'
    '<div class="output_subarea output_stream output_stdout output_text">\n<pre>'
)


def normalised(html: bytes) -> bytes:
    """The feedback with its random ids numbered in order of appearance and split stdout joined."""
    ids: dict[str, str] = {}
    text = UUID.sub(lambda m: ids.setdefault(m.group(0), f"ID{len(ids)}"), html.decode())
    return text.replace(SPLIT_STREAM, "").encode()


def feedback_files(out: Path, normalise: bool = True) -> dict[str, bytes]:
    """``{path in OUT: bytes}`` of every feedback file, normalised (or not)."""
    files = sorted(f for f in (out / "feedback").rglob("*") if f.is_file())
    return {
        str(f.relative_to(out)): normalised(f.read_bytes()) if normalise else f.read_bytes() for f in files
    }


# --------------------------------------------------------------------------- the shards
def test_each_shard_grades_its_share_by_a_hash_of_the_id(graded):
    """The documented rule, restated here: shard = sha256(id) % N + 1; every shard has students."""
    for student, (_, _, shard, _) in CLASS.items():
        assert int(hashlib.sha256(student.encode()).hexdigest(), 16) % SHARDS + 1 == shard, student
    for k, out in enumerate(graded["shards"], 1):
        manifest = json.loads((out / "shard.json").read_text())
        mine = sorted(s for s, (_, _, shard, _) in CLASS.items() if shard == k)
        assert (manifest["shard"], manifest["of"], manifest["assignment"]) == (k, SHARDS, ASSIGNMENT)
        assert manifest["digest"] == graded["digest"] and manifest["class_size"] == len(CLASS)
        assert sorted(manifest["students"]) == mine
        assert sorted(r["student_id"] for r in read_csv(out / "grades.csv")) == mine
        assert sorted(f.name for f in (out / "feedback").iterdir()) == [s for s in mine if s != "empty_file"]
    single = json.loads((graded["single"] / "shard.json").read_text())
    assert (single["shard"], single["of"], len(single["students"])) == (1, 1, len(CLASS))


# --------------------------------------------------------------------------- merged == one run
def test_merged_grades_equal_the_single_run(graded):
    """The reports (reports.write_reports) byte for byte, the students in the single run's order."""
    for name in ("grades.csv", "cells.csv", "report.html"):
        merged, single = (graded["merged"] / name).read_text(), (graded["single"] / name).read_text()
        assert merged == single, name
    rows = read_csv(graded["merged"] / "grades.csv")
    assert [r["student_id"] for r in rows] == ["ann-b", "ann", "bob", "empty_file", "untouched"]
    for r in rows:
        score = CLASS[r["student_id"]][3]
        assert r["status"] == ("ungradable" if score is None else "graded"), r
        assert score is None or float(r["score"]) == score, r


def test_merged_results_equal_the_single_run(graded):
    """results/<id>.json, key included (the hash that decides what a re-run regrades); the files they
    name (relative to OUT) are in the merged folder."""

    def results(out: Path) -> dict:
        return {f.stem: json.loads(f.read_text()) for f in sorted((out / "results").glob("*.json"))}

    merged = results(graded["merged"])
    assert merged == results(graded["single"]) and sorted(merged) == sorted(CLASS)
    notebooks = [nb for r in merged.values() for nb in r["notebooks"].values()]
    named = [nb[key] for nb in notebooks for key in ("feedback", "autograded") if key in nb]
    assert len(named) == 2 * (len(CLASS) - 1) and all((graded["merged"] / f).is_file() for f in named), named


def test_merged_folder_is_a_dpolab_grade_out(graded, tmp_path):
    """dpolab-grade on (a copy of) the merged folder finds every student graded: nothing to regrade."""
    out = tmp_path / "merged"
    shutil.copytree(graded["merged"], out)
    before = {f.name: f.stat().st_mtime_ns for f in (out / "results").glob("*.json")}
    check(grade_cmd(graded["p"], out))
    assert {f.name: f.stat().st_mtime_ns for f in (out / "results").glob("*.json")} == before
    assert f"{len(CLASS)} students: {len(CLASS)} unchanged, 0 to grade" in (out / "grading.log").read_text()
    assert (out / "grades.csv").read_text() == (graded["single"] / "grades.csv").read_text()


def test_merged_feedback_is_byte_identical(graded):
    """Each merged feedback file is its shard's, byte for byte, and the single run's but for the
    random ids and stdout cuts that differ between any two gradings (``normalised``)."""
    merged, single = feedback_files(graded["merged"]), feedback_files(graded["single"])
    assert sorted(merged) == sorted(single)
    assert sorted(merged) == sorted(
        f"feedback/{s}/{ASSIGNMENT}/{NB}.html" for s in CLASS if s != "empty_file"
    )
    different = [name for name in merged if merged[name] != single[name]]
    assert not different, different
    for name, data in feedback_files(graded["merged"], normalise=False).items():
        shard = graded["shards"][CLASS[name.split("/")[1]][2] - 1]
        assert data == (shard / name).read_bytes(), name
        assert b"visible tests passed" in data and len(UUID.findall(data.decode())) >= 3, name


def test_merged_gradebook_opens_in_nbgrader(graded):
    from nbgrader.api import Gradebook

    expected = {r["student_id"]: float(r["score"]) for r in read_csv(graded["single"] / "grades.csv")}
    for out in (graded["merged"], graded["single"]):
        with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
            assert sorted(s.id for s in gb.students) == sorted(CLASS)
            scores = {s.student_id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}
        assert scores == expected, out
    # nbgrader's own exporter reads it too (a course folder with only a config)
    course = graded["p"]["tmp"] / "export"
    course.mkdir()
    db_url = f"--CourseDirectory.db_url=sqlite:///{graded['merged'] / 'gradebook.db'}"
    check([sys.executable, "-m", "nbgrader", "export", db_url, "--to", "grades_export.csv"], cwd=course)
    exported = {r["student_id"]: float(r["score"]) for r in read_csv(course / "grades_export.csv")}
    assert exported == expected


def test_rerun_one_shard_and_merge_again(graded, tmp_path):
    """The cluster's re-run: a student resubmits, the array runs again (each shard regrades only what
    changed), and the merge overwrites the previous merge."""
    p, shards = graded["p"], [tmp_path / f"shard-{k}" for k in range(1, SHARDS + 1)]
    for src, dest in zip(graded["shards"], shards, strict=True):
        shutil.copytree(src, dest)
    merged = tmp_path / "merged"
    shutil.copytree(graded["merged"], merged)
    cls = tmp_path / "class"
    shutil.copytree(p["class"], cls)
    nbformat.write(
        solved_release(f"{NB}.ipynb", ROOT / "notebooks" / ASSIGNMENT), cls / "untouched" / f"{NB}.ipynb"
    )
    stamps = {f: f.stat().st_mtime_ns for out in shards for f in (out / "results").glob("*.json")}
    for k, out in enumerate(shards, 1):
        check(grade_cmd(dict(p, **{"class": cls}), out, "--shard", f"{k}/{SHARDS}"))
    assert [f.stem for f, t in stamps.items() if f.stat().st_mtime_ns != t] == ["untouched"]
    check(merge_cmd(shards, merged))
    rows = {r["student_id"]: r["score"] for r in read_csv(merged / "grades.csv")}
    assert rows == {**{r["student_id"]: r["score"] for r in read_csv(graded["merged"] / "grades.csv")},
                    "untouched": str(POINTS)}  # fmt: skip


# --------------------------------------------------------------------------- refusals
@pytest.fixture
def shard_copies(graded, tmp_path):
    """Copies of the 3 shards' folders, to break one thing at a time."""
    copies = [tmp_path / f"shard-{k}" for k in range(1, SHARDS + 1)]
    for src, dest in zip(graded["shards"], copies, strict=True):
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".grader"))
        shutil.copytree(src / ".grader", dest / ".grader", symlinks=True)
    return copies


def edit_manifest(out: Path, **changes) -> None:
    manifest = json.loads((out / "shard.json").read_text())
    manifest.update(changes)
    (out / "shard.json").write_text(json.dumps(manifest))


def refused(shards: list[Path], out: Path, capsys) -> str:
    """``dpolab-grade merge`` exits 2 and changes nothing in ``out``; returns what it said."""
    from dpolab_grade.cli import main

    def files():
        return {f: f.stat().st_mtime_ns for f in out.rglob("*")} if out.exists() else None

    before = files()
    assert main(["merge", *map(str, shards), "--out", str(out)]) == 2
    assert files() == before
    return capsys.readouterr().err


def test_merge_refuses_a_missing_shard(shard_copies, tmp_path, capsys):
    err = refused(shard_copies[:2], tmp_path / "merged", capsys)
    assert "missing shard(s) 3/3" in err and str(shard_copies[1]) in err
    # a task of the array that crashed left no manifest
    (shard_copies[2] / "shard.json").unlink()
    err = refused(shard_copies, tmp_path / "merged", capsys)
    assert f"{shard_copies[2]} has no shard.json" in err


def test_merge_refuses_a_shard_given_twice(shard_copies, tmp_path, capsys):
    err = refused([*shard_copies, shard_copies[0]], tmp_path / "merged", capsys)
    assert "shard 1/3 is given twice" in err


def test_merge_refuses_overlapping_students(shard_copies, tmp_path, capsys):
    """ann-b (shard 3) also claimed by shard 1, e.g. a folder graded with another rule."""
    first = json.loads((shard_copies[0] / "shard.json").read_text())
    shutil.copy(shard_copies[2] / "results" / "ann-b.json", shard_copies[0] / "results")
    edit_manifest(shard_copies[0], students={**first["students"], "ann-b": 0})
    err = refused(shard_copies, tmp_path / "merged", capsys)
    assert "student 'ann-b' was graded in both shard 1/3" in err and "shard 3/3" in err


def test_merge_refuses_shards_of_different_solutions_or_n(shard_copies, tmp_path, capsys):
    edit_manifest(shard_copies[1], digest="0" * 64)
    err = refused(shard_copies, tmp_path / "merged", capsys)
    assert "different solutions or grader versions (course digest)" in err and "shard 2/3" in err
    edit_manifest(shard_copies[1], digest=json.loads((shard_copies[0] / "shard.json").read_text())["digest"])
    edit_manifest(shard_copies[2], of=4)
    err = refused(shard_copies, tmp_path / "merged", capsys)
    assert "a different number of shards N" in err
    edit_manifest(shard_copies[2], of=SHARDS, assignment="lab_other")
    assert "different assignments" in refused(shard_copies, tmp_path / "merged", capsys)
    edit_manifest(shard_copies[2], assignment=ASSIGNMENT, due="2026-12-01 17:00:00 UTC")  # one with --due
    assert "different due dates" in refused(shard_copies, tmp_path / "merged", capsys)


def test_merge_refuses_to_write_over_a_shard_or_another_folder(shard_copies, tmp_path, capsys):
    assert "is one of the shards" in refused(shard_copies, shard_copies[0], capsys)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert "not empty and not the result of a previous merge" in refused(
        shard_copies, tmp_path / "notes", capsys
    )
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_shard_argument_is_checked(capsys):
    from dpolab_grade.cli import parser
    from dpolab_grade.shards import parse_shard

    assert parse_shard("2/8") == (2, 8) and parse_shard("1/1") == (1, 1)
    for bad, words in [
        ("0/3", "1 <= K <= N"),
        ("4/3", "1 <= K <= N"),
        ("2", "expected K/N"),
        ("a/b", "expected K/N"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            parser().parse_args(["class", "--out", "o", "--shard", bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "--shard" in err and words in err, err


# --------------------------------------------------------------------------- the recipes (deploy/)
def fake_grader(tmp: Path) -> dict[str, str]:
    """An environment whose ``dpolab-grade`` prints its arguments instead of grading."""
    (tmp / "bin").mkdir()
    (tmp / "bin" / "dpolab-grade").write_text('#!/bin/sh\necho "$@"\n')
    (tmp / "bin" / "dpolab-grade").chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}",
        "SUBMISSIONS": "/in",
        "GRADING": "/g",
    }


# --------------------------------------------------------------------------- Kubernetes
K8S = ROOT / "deploy" / "kubernetes"


def k8s_documents() -> dict[str, dict]:
    import yaml

    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(K8S.glob("*.yaml"))}


def test_kubernetes_manifests_match_the_api_schema():
    """Validated offline against the schemas kubernetes-validate ships, strict (an unknown field is an
    error): Kubernetes 1.33, the oldest the Job's fields need (backoffLimitPerIndex, hostUsers), and
    the newest shipped. A misspelt field is caught, so the check can fail."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (the test extra)")
    docs = k8s_documents()
    assert sorted(docs) == ["grade-indexed-job.yaml", "merge-job.yaml"]
    for version in ("1.33.0", kv.latest_version()):
        for doc in docs.values():
            kv.validate(doc, version, strict=True)
    broken = json.loads(json.dumps(docs["grade-indexed-job.yaml"]))
    broken["spec"]["completionMod"] = broken["spec"].pop("completionMode")
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.33.0", strict=True)


def test_kubernetes_commands_grade_every_shard_then_merge(tmp_path):
    """The pods' shell commands, run here with a stand-in dpolab-grade that prints its arguments:
    pod index i grades shard i+1 of N = completions, and the merge names every shard once."""
    docs = k8s_documents()
    job, merge = docs["grade-indexed-job.yaml"], docs["merge-job.yaml"]
    n = job["spec"]["completions"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] <= n

    def container_env(doc):
        (c,) = doc["spec"]["template"]["spec"]["containers"]
        return c, {e["name"]: e["value"] for e in c["env"]}

    fake = fake_grader(tmp_path)

    def run(doc, **extra):
        c, variables = container_env(doc)
        assert variables["SHARDS"] == str(n), "SHARDS must equal the grading Job's completions"
        e = {**fake, **variables, **extra}
        return subprocess.run(
            [*c["command"], *c["args"]], env=e, capture_output=True, text=True, check=True
        ).stdout

    for i in range(n):
        words = run(job, JOB_COMPLETION_INDEX=str(i)).split()
        assert words[:3] == ["/in", "--out", f"/out/shard-{i + 1}"]
        assert words[words.index("--shard") + 1] == f"{i + 1}/{n}" and "--sandbox" in words
    assert run(merge).split() == [
        "merge",
        *(f"/out/shard-{k}" for k in range(1, n + 1)),
        "--out",
        "/out/merged",
    ]


# --------------------------------------------------------------------------- Slurm
def test_slurm_scripts_name_the_shard_and_merge_every_shard(tmp_path):
    """deploy/slurm/'s scripts run as Slurm would run them (its variables set by hand), with a
    stand-in dpolab-grade: task K of an array 1-N grades shard K/N; the merge names every shard."""
    e = fake_grader(tmp_path)
    slurm = ROOT / "deploy" / "slurm"
    task = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
            "SLURM_ARRAY_TASK_MAX": "3", "SLURM_CPUS_PER_TASK": "4", "DPOLAB_GRADE_ARGS": "--sandbox bwrap"}  # fmt: skip
    proc = subprocess.run(
        ["bash", slurm / "grade_array.sbatch"], env={**e, **task}, capture_output=True, text=True
    )
    assert (
        proc.stdout.split()
        == "/in --out /g/shard-2 --shard 2/3 --jobs 4 --no-progress --sandbox bwrap".split()
    )
    gaps = {**task, "SLURM_ARRAY_TASK_MIN": "2"}  # --array=2-4: shard numbers would not be 1..N
    proc = subprocess.run(
        ["bash", slurm / "grade_array.sbatch"], env={**e, **gaps}, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "the array must be 1-N" in proc.stderr and not proc.stdout
    proc = subprocess.run(
        ["bash", slurm / "merge.sbatch"], env={**e, "SHARDS": "3"}, capture_output=True, text=True
    )
    assert proc.stdout.split() == "merge /g/shard-1 /g/shard-2 /g/shard-3 --out /g/merged".split()


def start_slurm(folder: Path) -> tuple[dict | None, str]:
    """A one-node Slurm cluster (munged, slurmctld, slurmd) in ``folder``: (its environment, "") or
    (None, why it cannot start). Needs root and Debian's slurm-wlm and munge."""
    missing = [d for d in ("munged", "slurmctld", "slurmd", "sbatch", "slurmd") if not shutil.which(d)]
    if missing:
        return None, f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return None, "slurmd must run as root here (SlurmdUser=root)"
    info = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout
    node = dict(kv.split("=", 1) for kv in info.split() if "=" in kv)
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True)
    (folder / "munge.key").write_bytes(os.urandom(1024))
    (folder / "munge.key").chmod(0o600)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(d=folder, node=node["NodeName"], cpus=node["CPUs"],
                                      memory=node["RealMemory"], ctld=ports[0], slurmd=ports[1]))  # fmt: skip
    daemons = [
        ["munged", "--force", f"--socket={folder}/munge.sock", f"--key-file={folder}/munge.key",
         f"--pid-file={folder}/munged.pid", f"--log-file={folder}/log/munged.log",
         f"--seed-file={folder}/seed"],
        ["slurmctld", "-f", str(conf)],
        ["slurmd", "-f", str(conf)],
    ]  # fmt: skip
    for cmd in daemons:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return None, f"{cmd[0]} did not start: {(proc.stderr or proc.stdout).strip()[-300:]}"
    e = dict(env(), SLURM_CONF=str(conf))
    for _ in range(60):
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%t"], env=e, capture_output=True, text=True).stdout
        if sinfo.strip() == "idle":
            return e, ""
        time.sleep(0.5)
    return None, f"the node never became idle (sinfo: {sinfo.strip()!r}); see {folder}/log"


def stop_slurm(folder: Path) -> None:
    for daemon in ("slurmd", "slurmctld", "munged"):  # the daemons this test started, by their pid file
        try:
            os.kill(int((folder / f"{daemon}.pid").read_text()), 15)
        except (OSError, ValueError):
            pass


SLURM_CONF = """\
ClusterName=dpolabtest
SlurmctldHost={node}
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={node} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def test_slurm_array_then_merge_on_a_one_node_cluster(graded, tmp_path):
    """deploy/slurm/submit.sh on a real (one-node) Slurm: the array of 3 shards, then the merge job
    once every task succeeded (afterok); the merged result equals the single run.

    To halve the kernels this costs, it is the array's second submission: shards 1 and 2 hold their
    earlier results (without their manifests, which only a completed run writes again), so their
    tasks regrade nothing; shard 3 starts empty and grades its students under Slurm."""
    folder = Path(f"/tmp/dpolab-slurm-{os.getpid()}")  # short: munge's socket path has a length limit
    shutil.rmtree(folder, ignore_errors=True)
    e, why = start_slurm(folder)
    try:
        if e is None:
            pytest.skip(f"no Slurm here: {why}")
        grading = tmp_path / "grading"
        for k, shard in enumerate(graded["shards"], 1):
            shutil.copytree(shard / ".grader", grading / f"shard-{k}" / ".grader")  # the grader's course
            if k < SHARDS:
                for part in ("results", "feedback", "autograded", "logs", "gradebook.db"):
                    copy = shutil.copytree if (shard / part).is_dir() else shutil.copy
                    copy(shard / part, grading / f"shard-{k}" / part)
        p = graded["p"]
        e.update(SUBMISSIONS=str(p["class"]), GRADING=str(grading),
                 DPOLAB_GRADE_ARGS=f"--solutions {p['solutions']} --threads 1 --cell-timeout 30")  # fmt: skip
        submit = [str(ROOT / "deploy" / "slurm" / "submit.sh"), str(SHARDS), "--cpus-per-task=1", "--mem=1G"]
        assert f"shards 1-{SHARDS}" in check(submit, e, cwd=tmp_path).stdout
        for _ in range(900):
            if not subprocess.run(["squeue", "-h"], env=e, capture_output=True, text=True).stdout.strip():
                break
            time.sleep(1)
        logs = "\n".join(
            f"{f.name}:\n{f.read_text()[-1500:]}" for f in sorted(tmp_path.glob("dpolab-grade*.log"))
        )
        assert (grading / "merged" / "grades.csv").exists(), f"no merged result; the jobs' logs:\n{logs}"
        assert len(list(tmp_path.glob("dpolab-grade-merge-*.log"))) == 1
        assert len(list(tmp_path.glob("dpolab-grade-*_*.log"))) == SHARDS, logs
        for k in range(1, SHARDS + 1):
            log = (grading / f"shard-{k}" / "grading.log").read_text()
            graded_here = (
                sum(1 for s in CLASS.values() if s[2] == k and s[1] != "empty") if k == SHARDS else 0
            )
            assert f"to grade ({graded_here} notebooks)" in log, (k, log)
        for name in ("grades.csv", "cells.csv"):
            assert (grading / "merged" / name).read_text() == (graded["single"] / name).read_text(), name
        assert feedback_files(grading / "merged") == feedback_files(graded["single"])
    finally:
        stop_slurm(folder)
        shutil.rmtree(folder, ignore_errors=True)
