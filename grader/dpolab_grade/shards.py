"""A class graded in shards on several machines, then merged into one ``dpolab-grade`` OUT.

``dpolab-grade SUBMISSIONS --out OUT_K --shard K/N`` grades the students of shard ``K`` only
(1 <= K <= N). A student belongs to shard ``K`` when

    int(sha256(student_id as UTF-8).hexdigest(), 16) % N == K - 1

a stable rule: it depends on the id alone, not on the machine, the Python version
(``hash()`` is salted per process) or on who else submitted, so a late submission does not
move anyone, and every shard of a job array, each reading the same SUBMISSIONS, agrees on
who is whose without talking to the others.

When its run completes, each OUT gets a manifest, ``OUT/shard.json``: the shard, the digest of
the grader's course (``course.digest``: the solutions, nbgrader's and dpolab's versions), the
assignment, the limits, and the students it graded with their place in the class
(``find_submissions`` order, the order of a single run's CSVs). A run without ``--shard`` writes
one too, as shard 1/1.

``dpolab-grade merge OUT_1 ... OUT_N --out OUT`` reads the manifests and builds OUT as one run
over the whole class would have: ``results/``, ``feedback/``, ``autograded/``, ``logs/``, the
grader's course (``.grader/``), the gradebook (one ``merge_student`` per student, as the runner
does) and the reports (``reports.write_reports``). It refuses, with exit code 2 and a line that
names the folders, shards that are missing (or did not complete) or given twice, of different
``N``, graded from different solutions, assignments, limits or SUBMISSIONS, or that share a student.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .classroom import Course, format_time, parse_time
from .course import GraderCourse
from .gradebook import add_students, ensure_gradebook, merge_student
from .inputs import Submission
from .reports import write_reports

MANIFEST = "shard.json"
# OUT/<folder>/<student_id>/: copied by merge
STUDENT_FOLDERS = ("feedback", "autograded", "submitted", "logs")


# --------------------------------------------------------------------------- choosing a share
def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N; the argparse type of ``--shard``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 2/8, shard 2 of 8), got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"K/N needs 1 <= K <= N (shards are numbered from 1), got {text!r}")
    return k, n


def shard_of(student_id: str, n: int) -> int:
    """The shard (1..n) a student belongs to: sha256 of the id, modulo n, plus one."""
    return int(hashlib.sha256(student_id.encode("utf-8")).hexdigest(), 16) % n + 1


def share(out: Path, subs: list[Submission], shard: tuple[int, int] | None) -> list[Submission]:
    """The submissions this run grades (all of them without a shard), in class order.

    The manifest of a previous run is removed: ``write_manifest`` writes it again only when
    this run completes, so a shard that crashed is never merged."""
    (out / MANIFEST).unlink(missing_ok=True)
    if shard is None:
        return subs
    k, n = shard
    return [s for s in subs if shard_of(s.student_id, n) == k]


def write_manifest(
    out: Path,
    shard: tuple[int, int] | None,
    course: GraderCourse,
    everyone: list[Submission],
    graded: list[dict],
    limits: dict,
    classroom: Course,
) -> None:
    """``OUT/shard.json``: what ``merge`` needs to check and order this shard's students."""
    place = {s.student_id: i for i, s in enumerate(everyone)}
    k, n = shard or (1, 1)
    manifest = {
        "shard": k,
        "of": n,
        "digest": course.digest,
        "assignment": course.assignment,
        "limits": limits,
        "due": format_time(classroom.due),
        "exchange": {"course_id": classroom.course_id, "root": classroom.exchange_root},
        "class_size": len(everyone),
        "students": {r["student_id"]: place[r["student_id"]] for r in graded},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))


# --------------------------------------------------------------------------- merging
class MergeError(Exception):
    """Shards that cannot be merged; the message says which folders and why."""


@dataclass
class Shard:
    out: Path
    manifest: dict

    @property
    def name(self) -> str:
        return f"shard {self.manifest['shard']}/{self.manifest['of']} ({self.out})"


def read_shards(outs: list[Path]) -> list[Shard]:
    """The shards' manifests, checked to form one whole class; raises MergeError otherwise."""
    shards = []
    for out in outs:
        path = out / MANIFEST
        if not path.exists():
            raise MergeError(
                f"{out} has no {MANIFEST}: not a completed dpolab-grade run (did the shard fail?)"
            )
        shards.append(Shard(out, json.loads(path.read_text())))
    first = shards[0]
    for s in shards[1:]:
        for key, what in [
            ("of", "a different number of shards N"),
            ("digest", "different solutions or grader versions (course digest)"),
            ("assignment", "different assignments"),
            ("limits", "different limits (timeouts, memory, output)"),
            ("due", "different due dates"),
            ("class_size", "different SUBMISSIONS (class size)"),
        ]:
            if s.manifest[key] != first.manifest[key]:
                mine, theirs = str(s.manifest[key])[:70], str(first.manifest[key])[:70]
                raise MergeError(f"{s.name} and {first.name} were graded with {what}: {mine} vs {theirs}")
    n = first.manifest["of"]
    given: dict[int, Shard] = {}
    for s in shards:
        k = s.manifest["shard"]
        if k in given:
            raise MergeError(f"shard {k}/{n} is given twice: {given[k].out} and {s.out}")
        given[k] = s
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in given]
    if missing:
        raise MergeError(f"missing shard(s) {', '.join(missing)}; given: {', '.join(s.name for s in shards)}")
    owner: dict[str, Shard] = {}
    for s in shards:
        for student in s.manifest["students"]:
            if student in owner:
                raise MergeError(f"student {student!r} was graded in both {owner[student].name} and {s.name}")
            owner[student] = s
            if not (s.out / "results" / f"{student}.json").exists():
                raise MergeError(f"{s.name} lists {student!r} but has no results/{student}.json")
    if len(owner) != first.manifest["class_size"]:
        raise MergeError(
            f"the shards graded {len(owner)} students, but the class has {first.manifest['class_size']}"
        )
    return sorted(shards, key=lambda s: s.manifest["shard"])


def _copy_tree(src: Path, dest: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True)


def merge(outs: list[Path], out: Path) -> list[dict]:
    """Merge the OUT folders of every shard into ``out``; return one result per student, in class order."""
    outs = [Path(o).resolve() for o in outs]
    out = Path(out).resolve()
    if out in outs:
        raise MergeError(f"--out {out} is one of the shards: merge into a new folder")
    if out.exists() and any(out.iterdir()) and "merged_from" not in _manifest_or_empty(out):
        raise MergeError(f"--out {out} is not empty and not the result of a previous merge")
    shards = read_shards(outs)
    first = shards[0].manifest
    digest, assignment = first["digest"], first["assignment"]

    for part in ("results", *STUDENT_FOLDERS, "gradebook.db", "roster.json", MANIFEST):  # a previous merge
        path = out / part
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (out / "results").mkdir(parents=True)
    # The grader's course (and the student package) of the first shard: the merged OUT is then a
    # dpolab-grade OUT like any other (all shards were built from the same solutions).
    grader = shards[0].out / ".grader"
    for cache in [grader / digest[:16], *grader.glob("student-*")]:
        _copy_tree(cache, out / ".grader" / cache.name)
    (out / ".grader" / "current").write_text(digest)
    course = GraderCourse(out / ".grader" / digest[:16], assignment, digest)

    place: dict[str, int] = {}
    results: dict[str, dict] = {}
    for s in shards:
        for student, i in s.manifest["students"].items():
            # results name their files relative to OUT: they hold in the merged OUT as they are
            shutil.copy(s.out / "results" / f"{student}.json", out / "results")
            for folder in STUDENT_FOLDERS:
                _copy_tree(s.out / folder / student, out / folder / student)
            result = json.loads((out / "results" / f"{student}.json").read_text())
            place[student], results[student] = i, result
    ordered = [results[s] for s in sorted(results, key=place.__getitem__)]

    gradebook = out / "gradebook.db"
    due = first.get("due")
    exchange = first.get("exchange") or {}
    classroom = Course(
        due=parse_time(due) if due else None,
        course_id=exchange.get("course_id", ""),
        exchange_root=exchange.get("root", ""),
    )
    ensure_gradebook(gradebook, course.gradebook, classroom)
    roster = None
    if (shards[0].out / "roster.json").exists():  # every shard ran with the same --roster
        shutil.copy(shards[0].out / "roster.json", out / "roster.json")
        roster = json.loads((out / "roster.json").read_text())
        add_students(gradebook, roster)
    for r in ordered:
        merge_student(gradebook, assignment, r)
    rows = write_reports(out, ordered, course.grade_cells(), assignment, roster)

    with open(out / "grading.log", "w") as log:
        for s in shards:
            log.write(f"==== {s.name}\n")
            if (s.out / "grading.log").exists():
                log.write((s.out / "grading.log").read_text())
        log.write(f"==== merged {len(shards)} shards: {len(ordered)} students -> {out / 'grades.csv'}\n")
    students = {r["student_id"]: place[r["student_id"]] for r in ordered}
    manifest = dict(first, shard=1, of=1, students=students, merged_from=[str(s.out) for s in shards])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return rows


def _manifest_or_empty(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def merge_main(argv: list[str]) -> int:
    """``dpolab-grade merge OUT_1 ... OUT_N --out OUT``."""
    p = argparse.ArgumentParser(
        prog="dpolab-grade merge",
        description="Merge the OUT folders of dpolab-grade --shard K/N runs (every K once) into one OUT.",
    )
    p.add_argument("shards", type=Path, nargs="+", help="the --out folder of each shard")
    p.add_argument("--out", type=Path, required=True, help="the merged folder (new, or a previous merge)")
    args = p.parse_args(argv)
    try:
        results = merge(args.shards, args.out)
    except MergeError as err:
        print(f"dpolab-grade merge: {err}", file=sys.stderr)
        return 2
    print(f"merged {len(args.shards)} shards: {len(results)} students -> {args.out}/grades.csv")
    return 0
