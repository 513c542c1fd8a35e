"""Benchmark: ``dpolab-grade`` on a generated class of the full assignment, ``--jobs 1`` against ``--jobs 2``.

The class (default 40 students) submits every notebook of ``solutions/lab_3_1_5_dpo`` (five
notebooks, 50 automatic points; notebook 05's two written answers, 4 points, wait for a grade by
hand, so a correct submission scores 50 here). Students rotate through correct, partial, hostile,
correct, correct (60 % correct, 20 % partly correct with one planted bug per notebook, 20 %
hostile); the hostile ones take turns through eight attacks, each put in every notebook: an infinite loop,
a loop that swallows ``KeyboardInterrupt``, ``os._exit(1)``, a memory bomb, 50 MB printed, a
(bounded) fork bomb, a connection to the grader's port and a DNS lookup, reading the solutions.

Prints the seconds per submission (one student, every notebook) of each run, the speed-up of
``--jobs 2`` over ``--jobs 1`` (issue 9's goal on a 2-core machine: at least 1.7x), whether both
runs gave the same grades, and the outcome of each kind of student. The grader's course (the
release, the gradebook and the fixtures, built from the solutions) is built once, outside the
timings. Run it on an otherwise idle machine; the load average is printed with the figures.

    python benchmarks/bench_grading.py                  # 40 students, the full assignment
    python benchmarks/bench_grading.py --students 5     # a quick check (one of each kind)
    python benchmarks/bench_grading.py --shards 2       # one run against 2 shards + merge (below)
    python benchmarks/bench_grading.py --baseline REV --students 4   # before/after (below)

``--baseline REV`` grades a class of correct students with the grader of git revision REV (checked
out in a temporary worktree; before the grader became its own package it ran as
``python -m dpolab.autograde.cli``) and with this checkout's, ``--jobs 1`` each, on the notebooks
both have, and prints the wall time and the CPU time (core-seconds: every process of the run's
tree, kernels included, polled with psutil) per submission of each, and whether the scores agree.

``--shards N`` measures the cluster recipe instead (deploy/, ``dpolab-grade --shard``): the class
graded in one run with ``--jobs N`` and as N shards run at the same time, each ``--jobs 1`` (the
same cores), then ``dpolab-grade merge``; it prints the wall time and seconds per submission of
both, whether the merge equals the one run, and a table of the time a class of 1,000 students
takes on M machines of C cores, from the measured core-seconds per submission:

    T(M, C) = course + ceil_M x t / C + merge(1000)

``t`` = the one run's wall time x N / students (core-seconds per submission, --jobs N on N cores);
``ceil_M`` = the largest of the M shards of 1,000 ids ``s0000``..``s0999`` (sha256 does not split
them exactly evenly); ``course`` = the grader's course build, once per machine, in parallel;
``merge(1000)`` = the measured merge seconds per student x 1,000. It assumes the per-core speed
holds at C cores (1.90x measured at 2) and that every machine reads the class from shared storage.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from notebook_tools import ASSIGNMENT, RELEASE, SOLUTIONS, solved_release  # noqa: E402

PLANTED = {  # one bug per notebook (tests/test_notebooks.py, tests/test_hidden_tests_nb04.py, _nb05.py)
    "01_dpo_loss": {
        "dpo_loss_answer": ("(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)")
    },
    "02_dpo_variants": {
        "kto_answer": (
            "gain = self.desirable_weight * (1 - torch.sigmoid(self.beta * (r - z0)))",
            "gain = self.desirable_weight * -F.logsigmoid(self.beta * r - z0)",
        )
    },
    "03_preference_data": {"generator_answer": (">= self.min_score_diff", "> self.min_score_diff")},
    "04_train_with_dpo": {"dpo_train_step_answer": ("(margins > 0)", "(margins >= 0)")},
    "05_what_dpo_optimises": {
        "early_stopping_answer": ("if metric > best_metric:", "if metric >= best_metric:")
    },
}
HOSTILE = {
    "infinite_loop": "while True:\n    pass",
    "swallows_interrupt": (
        "import time\nwhile True:\n    try:\n        time.sleep(0.5)\n    except KeyboardInterrupt:\n        pass"
    ),
    "kernel_exit": "import os\nos._exit(1)",
    "memory_bomb": (
        "chunks = []\ntry:\n    while True:\n        chunks.append(bytearray(2**28))\n"
        "finally:\n    chunks.clear()"
    ),
    "prints_50mb": "print('x' * 50_000_000)",
    "fork_bomb": (  # bounded: 500 children at most, each exits after 5 s
        "import os, time\nfor _ in range(500):\n    try:\n        if os.fork() == 0:\n"
        "            time.sleep(5)\n            os._exit(0)\n    except OSError:\n        break\ntime.sleep(3)"
    ),
    "network": (
        "import socket\nfor _try in (lambda: socket.create_connection(('127.0.0.1', PORT), timeout=5),\n"
        "             lambda: socket.getaddrinfo('pypi.org', 443)):\n    try:\n        _try()\n"
        "        print('NETWORK REACHED')\n    except OSError as err:\n        print('no network:', err)"
    ),
    "reads_solutions": "print(open(SOLUTION).read()[:100])",
}
ROTATION = ["correct", "partial", "hostile", "correct", "correct"]


def make_class(folder: Path, solutions: Path, students: int, port: int) -> dict[str, str]:
    """Write the class; return ``{student_id: kind}``."""
    names = sorted(p.name for p in solutions.glob("*.ipynb"))
    attacks = list(HOSTILE)
    kinds = {}
    for i in range(students):
        kind = ROTATION[i % len(ROTATION)]
        if kind == "hostile":
            kind = f"hostile:{attacks[(i // len(ROTATION)) % len(attacks)]}"
        student = f"s{i:03d}"
        kinds[student] = kind
        (folder / student).mkdir(parents=True)
        for name in names:
            stem = name[: -len(".ipynb")]
            nb = solved_release(name, RELEASE, PLANTED.get(stem) if kind == "partial" else None)
            if kind.startswith("hostile:"):
                source = HOSTILE[kind.split(":")[1]]
                source = source.replace("PORT", str(port)).replace("SOLUTION", repr(str(solutions / name)))
                nb.cells.insert(2, nbformat.v4.new_code_cell(source))
            nbformat.write(nb, folder / student / name)
    return kinds


def points(solutions: Path) -> tuple[float, float]:
    """``(automatic, by hand)``: the points of the grade cells (tests), and of the answer cells
    with points (written answers), which wait for a manual grade."""
    out = [0.0, 0.0]
    for path in sorted(solutions.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade"):
                out[bool(meta.get("solution"))] += float(meta.get("points", 0))
    return out[0], out[1]


def grade(submissions: Path, out: Path, solutions: Path, jobs: int, extra: list[str]) -> float:
    from dpolab_grade.cli import main

    start = time.perf_counter()
    rc = main(
        [str(submissions), "--out", str(out), "--solutions", str(solutions), "--jobs", str(jobs), *extra]
    )
    assert rc == 0
    return time.perf_counter() - start


def grade_processes(runs: list[list[str]]) -> list[float]:
    """Start every ``dpolab-grade`` command at once (as a job array would); the wall time of each."""
    import subprocess

    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cmd in runs]
    walls: dict[int, float] = {}
    while len(walls) < len(procs):
        for i, proc in enumerate(procs):
            if i not in walls and proc.poll() is not None:
                assert proc.returncode == 0, f"{' '.join(runs[i])} failed ({proc.returncode})"
                walls[i] = time.perf_counter() - start
        time.sleep(0.5)
    return [walls[i] for i in range(len(procs))]


def sharded(args, tmp: Path, solutions: Path, kinds: dict, extra: list[str], prepared: float) -> None:
    """One run with --jobs N against N concurrent shards of --jobs 1, the merge, the 1,000-student table."""
    from dpolab_grade.shards import merge, shard_of

    n, students = args.shards, args.students
    grade_bin = str(Path(sys.executable).parent / "dpolab-grade")
    base = [str(tmp / "class"), "--solutions", str(solutions), *extra]
    outs = [tmp / f"shard-{k}" for k in range(1, n + 1)]
    threads = str(max(1, (os.cpu_count() or 1) // n))  # as the one run gives each of its n kernels
    for out in outs:
        shutil.copytree(tmp / "out1" / ".grader", out / ".grader")
    before = load()
    (one,) = grade_processes([[grade_bin, *base, "--out", str(tmp / "out1"), "--jobs", str(n)]])
    load_one = (before, load())
    before = load()
    shard_walls = grade_processes(
        [
            [grade_bin, *base, "--out", str(out), "--jobs", "1", "--threads", threads, "--shard", f"{k}/{n}"]
            for k, out in enumerate(outs, 1)
        ]
    )
    shards = max(shard_walls)
    load_shards = (before, load())
    start = time.perf_counter()
    merge(outs, tmp / "merged")
    merged_s = time.perf_counter() - start
    same = all(
        (tmp / "merged" / f).read_text() == (tmp / "out1" / f).read_text()
        for f in ("grades.csv", "cells.csv")
    )
    sizes = [sum(shard_of(s, n) == k for s in kinds) for k in range(1, n + 1)]
    hostile = [sum(shard_of(s, n) == k and kind.startswith("hostile") for s, kind in kinds.items())
               for k in range(1, n + 1)]  # fmt: skip

    per_core = one * n / students  # core-seconds per submission
    merge_per_student = merged_s / students
    print()
    print("=" * 78)
    print(f"dpolab-grade: one run against {n} shards (the cluster recipe)")
    print(
        f"class: {students} students x {args.n_nb} notebooks; {os.cpu_count()} CPUs; "
        f"cell timeout {args.cell_timeout} s"
    )
    print(f"grader's course built once in {prepared:.0f} s (not timed; each shard machine builds its own)")
    print(f"one run, --jobs {n}:            {one:7.1f} s   {one / students:6.2f} s per submission   "
          f"(load before: {load_one[0]}; after: {load_one[1]})")  # fmt: skip
    print(f"{n} shards at once, --jobs 1:   {shards:7.1f} s   {shards / students:6.2f} s per submission   "
          f"shard sizes {sizes} (hostile {hostile}), each shard's wall time {[round(w) for w in shard_walls]} s   "
          f"(load before: {load_shards[0]}; after: {load_shards[1]})")  # fmt: skip
    print(
        f"merge: {merged_s:.1f} s ({merge_per_student:.2f} s per student); "
        f"merged == one run: {'yes' if same else 'NO'}"
    )
    print(f"measured: t = {per_core:.1f} core-seconds per submission")
    print()
    print("A class of 1,000 students on M machines of C cores: T = course + ceil_M x t / C + merge(1000)")
    cores = (2, 8, 32)
    print("| machines M | largest shard | " + " | ".join(f"C = {c}" for c in cores) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in cores) + " |")
    ids = [f"s{i:04d}" for i in range(1000)]
    for machines in (1, 2, 4, 8, 16):
        largest = max(sum(shard_of(s, machines) == k for s in ids) for k in range(1, machines + 1))
        cells = [prepared + largest * per_core / c + merge_per_student * 1000 for c in cores]
        print(f"| {machines} | {largest} | " + " | ".join(_duration(x) for x in cells) + " |")
    print("=" * 78)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def rows(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f)}


def tree_cpu(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """Run ``cmd``; (wall seconds, CPU seconds of its whole process tree). The tree is polled ten
    times a second with psutil (each process's last CPU time counts): the kernels inside
    bubblewrap's PID namespace are in it, though nobody reaps them into a parent's rusage."""
    import subprocess

    import psutil

    seen: dict[int, float] = {}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for q in tree:
            try:
                t = q.cpu_times()
                seen[q.pid] = t.user + t.system
            except psutil.Error:
                pass
        time.sleep(0.1)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode})"
    return time.perf_counter() - start, sum(seen.values())


def before_after(args) -> None:
    """The grader of ``args.baseline`` (a git revision, e.g. the last commit before the speed-up) and
    this checkout's, one after the other on the same class of correct students (every notebook),
    ``--jobs 1``; the course and fixtures of each are built first, outside the timings."""
    import subprocess

    tmp = Path(tempfile.mkdtemp(prefix="bench-before-after-"))
    old = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.baseline],
                   check=True, capture_output=True)  # fmt: skip
    try:
        notebooks = [
            p.stem
            for p in sorted(SOLUTIONS.glob("*.ipynb"))
            if not args.notebooks or p.stem in args.notebooks
        ]
        both = [p.stem for p in sorted((old / "solutions" / ASSIGNMENT).glob("*.ipynb"))]
        notebooks = [nb for nb in notebooks if nb in both]  # what both versions grade
        solutions = tmp / "solutions" / ASSIGNMENT
        solutions.mkdir(parents=True)
        for nb in notebooks:
            shutil.copy(SOLUTIONS / f"{nb}.ipynb", solutions)
        for n, folder in ((1, "warm"), (args.students, "class")):
            for i in range(n):
                d = tmp / folder / f"{folder}{i:02d}"
                d.mkdir(parents=True)
                for nb in notebooks:
                    nbformat.write(solved_release(f"{nb}.ipynb", RELEASE), d / f"{nb}.ipynb")
        env = dict(os.environ, DPOLAB_DEVICE="cpu")
        if (old / "grader").is_dir():  # the grader's own package (grader/), run from its checkout
            before = (
                [sys.executable, "-m", "dpolab_grade.cli"],
                dict(env, PYTHONPATH=os.pathsep.join([str(old / "lib"), str(old / "grader")])),
            )
        else:  # before that, the grader lived in dpolab.autograde (lib/)
            before = ([sys.executable, "-m", "dpolab.autograde.cli"], dict(env, PYTHONPATH=str(old / "lib")))
        after = (
            [sys.executable, "-m", "dpolab_grade.cli"],
            dict(env, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), str(ROOT / "grader")])),
        )  # this checkout's lib/ and grader/, whatever is installed
        runs = {f"before ({args.baseline})": before, "after (this checkout)": after}
        figures = {}
        for i, (label, (cmd, run_env)) in enumerate(runs.items()):
            out = tmp / f"out{i}"
            common = ["--out", str(out), "--solutions", str(solutions), "--jobs", "1", "--no-progress"]
            tree_cpu([*cmd, str(tmp / "warm"), *common], run_env, tmp)  # course, fixtures, student package
            wall, cpu = tree_cpu([*cmd, str(tmp / "class"), *common], run_env, tmp)
            scores = {r["student_id"]: r["score"] for r in csv.DictReader(open(out / "grades.csv"))}
            figures[label] = (wall, cpu, scores)
        print()
        print("=" * 78)
        print(
            f"dpolab-grade before and after: {args.students} correct students x {len(notebooks)} notebooks, --jobs 1"
        )
        print(f"machine: {os.cpu_count()} CPUs; load average before: {load()}")
        for label, (wall, cpu, scores) in figures.items():
            print(f"{label:<28} wall {wall / args.students:6.1f} s   CPU {cpu / args.students:6.1f} core-s per submission"
                  f"   (scores: {sorted(set(scores.values()))})")  # fmt: skip
        (b_wall, b_cpu, b_scores), (a_wall, a_cpu, a_scores) = figures.values()
        print(f"speed-up: {b_cpu / a_cpu:.2f}x in CPU, {b_wall / a_wall:.2f}x in wall time; "
              f"same scores: {'yes' if b_scores == a_scores else 'NO'}")  # fmt: skip
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True
        )
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, default=40, help="size of the class (default 40)")
    p.add_argument("--notebooks", nargs="*", help="notebook names without .ipynb (default: all five)")
    p.add_argument("--cell-timeout", type=int, default=30, help="seconds per cell (default 30)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (class and outputs)")
    p.add_argument("--shards", type=int, default=0,
                   help="N >= 2: one run (--jobs N) against N concurrent shards (--jobs 1), and the "
                   "merge")  # fmt: skip
    p.add_argument("--baseline", metavar="REV",
                   help="compare with the grader of git revision REV on correct students (before/after)")  # fmt: skip
    args = p.parse_args()
    if args.baseline:
        before_after(args)
        return
    os.environ.setdefault("DPOLAB_DEVICE", "cpu")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    import socket

    tmp = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    listener = socket.create_server(("127.0.0.1", 0))  # the "network" students try to reach it
    try:
        solutions = tmp / "solutions" / ASSIGNMENT
        solutions.mkdir(parents=True)
        for path in sorted(SOLUTIONS.glob("*.ipynb")):
            if not args.notebooks or path.stem in args.notebooks:
                shutil.copy(path, solutions)
        kinds = make_class(tmp / "class", solutions, args.students, listener.getsockname()[1])
        extra = ["--cell-timeout", str(args.cell_timeout), "--no-progress"]
        from dpolab_grade.course import prepare_course

        t0 = time.perf_counter()
        course = prepare_course(solutions, ASSIGNMENT, tmp / "out1" / ".grader")  # outside the timings
        shutil.copytree(tmp / "out1" / ".grader", tmp / "out2" / ".grader")
        prepared = time.perf_counter() - t0
        n_nb = len(course.notebooks)
        automatic, by_hand = points(solutions)  # a correct submission scores `automatic` until graded by hand
        count = {
            k: sum(v.split(":")[0] == k for v in kinds.values()) for k in ("correct", "partial", "hostile")
        }

        if args.shards >= 2:
            args.n_nb = n_nb
            sharded(args, tmp, solutions, kinds, extra, prepared)
            return
        seconds = {}
        loads = {}
        for jobs in (1, 2):
            before = load()
            seconds[jobs] = grade(tmp / "class", tmp / f"out{jobs}", solutions, jobs, extra)
            loads[jobs] = (before, load())
        r1, r2 = rows(tmp / "out1"), rows(tmp / "out2")
        same = all((r1[s]["score"], r1[s]["status"]) == (r2[s]["score"], r2[s]["status"]) for s in kinds)
        speedup = seconds[1] / seconds[2]
        listener.setblocking(False)
        try:
            listener.accept()
            reached = "REACHED (the sandbox has a network)"
        except BlockingIOError:
            reached = "never reached"

        print()
        print("=" * 78)
        print("dpolab-grade benchmark")
        print(
            f"class: {args.students} students x {n_nb} notebooks ({automatic:g} automatic points, "
            f"{by_hand:g} by hand): "
            f"{count['correct']} correct, {count['partial']} partial, {count['hostile']} hostile"
        )
        print(
            f"machine: {os.cpu_count()} CPUs; cell timeout {args.cell_timeout} s; "
            f"grader's course built once in {prepared:.0f} s (not timed)"
        )
        for jobs in (1, 2):
            print(
                f"--jobs {jobs}: {seconds[jobs]:8.1f} s in all   "
                f"{seconds[jobs] / args.students:7.2f} s per submission   "
                f"{seconds[jobs] / (args.students * n_nb):6.2f} s per notebook   "
                f"(load average before: {loads[jobs][0]}; after: {loads[jobs][1]})"
            )
        verdict = "met" if speedup >= 1.7 else "NOT met"
        print(f"speed-up of --jobs 2 over --jobs 1: {speedup:.2f}x   (goal >= 1.7x: {verdict})")
        print(f"same scores and statuses from both runs: {'yes' if same else 'NO'}")
        print(f"the grader's loopback port: {reached}")
        print("outcomes (--jobs 2):")
        summary: dict[tuple, int] = {}
        for student, kind in kinds.items():
            row = r2[student]
            reason = row["reason"].split("; ")[0][:70]
            key = (kind, row["status"], f"{float(row['score']):g}/{row['max_score']}", reason)
            summary[key] = summary.get(key, 0) + 1
        for (kind, status, score, reason), n in sorted(summary.items()):
            print(f"  {n:3d} x {kind:28s} {status:10s} {score:>7s}  {reason}")
        wrong = [s for s, k in kinds.items() if k == "correct" and float(r2[s]["score"]) != automatic]
        if wrong:
            print(f"WARNING: correct submissions without full marks: {wrong}")
        print("=" * 78)
        if args.keep:
            print(f"kept: {tmp}")
    finally:
        listener.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
