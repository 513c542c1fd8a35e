"""``dpolab-grade SUBMISSIONS --out OUT [--jobs N] [--force] [--assignment NAME] [--shard K/N]
[--course DIR] [--due TIME] [--roster FILE]``, ``dpolab-grade merge OUT_1 ... OUT_N --out OUT``
(the shards of a class, merged: shards.py) and ``dpolab-grade export OUT [--format canvas|csv]``
(the reports rebuilt from the gradebook, manual grades included, and a file for the LMS)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .build import skip_iri_formats

skip_iri_formats()  # before nbformat is imported (by nbgrader, below)

from .classroom import parse_time  # noqa: E402
from .isolation import IsolationError  # noqa: E402
from .lms import FORMATS, RosterError, read_roster, write_export  # noqa: E402
from .reports import rebuild  # noqa: E402
from .runner import Options, count_statuses, run  # noqa: E402
from .sandbox import Limits  # noqa: E402
from .shards import merge_main, parse_shard  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dpolab-grade",
        description="Autograde a class's submissions with nbgrader: grades.csv, cells.csv, feedback/.",
    )
    p.add_argument(
        "submissions", type=Path, help="submitted/<student>/<assignment>/, <student>/ or <student>.zip"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (reused: only changes are regraded)"
    )
    p.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="notebooks graded at once (default: cores)"
    )
    p.add_argument("--force", action="store_true", help="regrade every submission")
    p.add_argument("--assignment", default="lab_3_1_5_dpo",
                   help="the nbgrader assignment (its folder under solutions/ and submitted/<student>/)")  # fmt: skip
    p.add_argument("--course", type=Path,
                   help="the nbgrader course folder, read only: the due date in its gradebook, the late "
                   "policy and the exchange in its nbgrader_config.py (default: the current folder, when it "
                   "has an nbgrader_config.py)")  # fmt: skip
    p.add_argument("--due", help="the due date, e.g. '2026-12-01 17:00:00 UTC' (default: the course's)")
    p.add_argument("--roster", type=Path,
                   help="the enrolled students: a CSV with an id (or student_id) column, or an nbgrader "
                   "gradebook.db; each gets a row (missing, 0 when nothing was handed in)")  # fmt: skip
    p.add_argument("--solutions", type=Path, help="source notebooks (default: ./solutions/ASSIGNMENT)")
    p.add_argument("--sandbox", choices=["auto", "bwrap", "none"], default="auto",
                   help="isolation of the student's kernel: auto and bwrap use bubblewrap and refuse to grade "
                   "(exit 2) where it does not work; none grades without isolation, knowingly (the kernel "
                   "still imports the student package, but can read what this user can)")  # fmt: skip
    p.add_argument("--kernel-python", default=sys.executable, help="interpreter of the student's kernel")
    p.add_argument("--kernel-package", choices=["student", "full"], default="student",
                   help="dpolab in the kernel (student: without the exercises' reference, mounted by "
                   "bubblewrap, or first on PYTHONPATH with --sandbox none; full: the reference is "
                   "importable, for testing the grader only)")  # fmt: skip
    d = Limits()
    p.add_argument("--cell-timeout", type=int, default=d.cell_timeout, help="seconds per cell")
    p.add_argument("--notebook-timeout", type=int, default=d.notebook_timeout, help="seconds per notebook")
    p.add_argument("--memory-mb", type=int, default=d.memory_mb, help="address-space limit of the kernel")
    p.add_argument("--max-processes", type=int, default=d.max_processes,
                   help="processes in the kernel's tree before the watchdog kills it")  # fmt: skip
    p.add_argument("--output-chars", type=int, default=d.output_chars, help="characters kept per output")
    p.add_argument("--threads", type=int, help="torch/BLAS threads per kernel (default: cores // jobs)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--shard", type=parse_shard, metavar="K/N",
                   help="grade shard K of N only (a stable share by a hash of the student id); "
                   "then: dpolab-grade merge OUT_1 ... OUT_N --out OUT")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:  # a SUBMISSIONS folder named merge (or export): pass ./merge
        return merge_main(argv[1:])
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    args = parser().parse_args(argv)
    if not args.submissions.is_dir():
        print(f"dpolab-grade: {args.submissions} is not a folder", file=sys.stderr)
        return 2
    course_dir = args.course or (Path.cwd() if Path("nbgrader_config.py").is_file() else None)
    try:
        if args.roster is not None:
            read_roster(args.roster)  # checked before anything is graded
        if args.due:
            parse_time(args.due)
    except (RosterError, ValueError) as err:
        print(f"dpolab-grade: {err}", file=sys.stderr)
        return 2
    solutions = args.solutions or Path("solutions") / args.assignment
    jobs = max(1, args.jobs)
    limits = Limits(
        cell_timeout=args.cell_timeout,
        notebook_timeout=args.notebook_timeout,
        memory_mb=args.memory_mb,
        output_chars=args.output_chars,
        max_processes=args.max_processes,
        threads=args.threads or max(1, (os.cpu_count() or 1) // jobs),
    )
    options = Options(
        submissions=args.submissions.resolve(),
        out=args.out.resolve(),
        solutions=solutions.resolve(),
        assignment=args.assignment,
        jobs=jobs,
        force=args.force,
        limits=limits,
        sandbox=args.sandbox,
        kernel_python=args.kernel_python,
        kernel_package=args.kernel_package,
        progress=not args.no_progress,
        shard=args.shard,
        course_dir=course_dir,
        due=args.due,
        roster=args.roster,
    )
    try:
        results = run(options)
    except IsolationError as err:  # no sandbox and none accepted: nothing graded
        print(f"dpolab-grade: {err}", file=sys.stderr)
        return 2
    print(f"{len(results)} students: {count_statuses(results)} -> {args.out}/grades.csv")
    return 0


def export_main(argv: list[str]) -> int:
    """``dpolab-grade export OUT [--format canvas|csv] [--to FILE]``."""
    p = argparse.ArgumentParser(
        prog="dpolab-grade export",
        description="Rebuild OUT's grades.csv, cells.csv and report.html from its gradebook (manual grades "
        "and regrades made in formgrader included) and write a file for the LMS.",
    )
    p.add_argument("out", type=Path, help="a dpolab-grade --out folder (or a merged one)")
    p.add_argument("--format", choices=FORMATS, default="canvas",
                   help="canvas: Canvas's gradebook import; csv: student_id, names, email, score, max_score")  # fmt: skip
    p.add_argument("--to", type=Path, help="the file to write (default: OUT/<format>.csv)")
    args = p.parse_args(argv)
    if not (args.out / "shard.json").exists():
        print(f"dpolab-grade export: {args.out} is not a completed dpolab-grade run (no shard.json)",
              file=sys.stderr)  # fmt: skip
        return 2
    rows, cells, assignment, roster = rebuild(args.out)
    to = args.to or args.out / f"{args.format}.csv"
    write_export(to, args.format, rows, roster or [], assignment, sum(c.points for c in cells))
    print(f"{len(rows)} students: {count_statuses(rows)} -> {args.out}/grades.csv, {to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
