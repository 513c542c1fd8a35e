"""Benchmark: ``dpolab-grade`` on a generated class, ``--jobs 1`` against ``--jobs 2``.

The class (default 40 students): 60 % correct, 20 % partly correct (one planted bug per
notebook), 20 % hostile (an infinite loop, ``os._exit(1)``, a memory bomb, 50 MB printed), in
rotation. Prints the seconds per submission of each run, the speed-up of ``--jobs 2`` over
``--jobs 1`` (issue 9's goal on a 2-core machine: at least 1.7x), and checks that both runs
give the same grades.

    python benchmarks/bench_grading.py                       # 40 students, every notebook
    python benchmarks/bench_grading.py --students 10 --notebooks 01_dpo_loss
"""

from __future__ import annotations

import argparse
import filecmp
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

PLANTED = {  # one bug per notebook (tests/test_notebooks.py)
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
}
HOSTILE = [
    "while True:\n    pass",
    "import os\nos._exit(1)",
    "chunks = []\nwhile True:\n    chunks.append(bytearray(2**28))",
    "print('x' * 50_000_000)",
]


def make_class(folder: Path, solutions: Path, students: int) -> None:
    names = sorted(p.name for p in solutions.glob("*.ipynb"))
    for i in range(students):
        kind = ["correct"] * 3 + ["partial", "hostile"]
        kind = kind[i % 5]
        student = folder / f"s{i:03d}_{kind}"
        student.mkdir(parents=True)
        for name in names:
            stem = name[: -len(".ipynb")]
            edits = PLANTED.get(stem) if kind == "partial" else None
            nb = solved_release(name, RELEASE, edits)
            if kind == "hostile":
                nb.cells.insert(2, nbformat.v4.new_code_cell(HOSTILE[(i // 5) % len(HOSTILE)]))
            nbformat.write(nb, student / name)


def grade(submissions: Path, out: Path, solutions: Path, jobs: int, limits: list[str]) -> float:
    from dpolab.autograde.cli import main

    start = time.perf_counter()
    rc = main(
        [str(submissions), "--out", str(out), "--solutions", str(solutions), "--jobs", str(jobs), *limits]
    )
    assert rc == 0
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, default=40)
    p.add_argument("--notebooks", nargs="*", help="notebook names without .ipynb (default: all)")
    p.add_argument("--cell-timeout", type=int, default=20)
    args = p.parse_args()
    os.environ.setdefault("DPOLAB_DEVICE", "cpu")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        solutions = tmp / "solutions" / ASSIGNMENT
        solutions.mkdir(parents=True)
        for path in sorted(SOLUTIONS.glob("*.ipynb")):
            if not args.notebooks or path.stem in args.notebooks:
                shutil.copy(path, solutions)
        make_class(tmp / "class", solutions, args.students)
        limits = ["--cell-timeout", str(args.cell_timeout), "--no-progress"]
        # the grader's course (generate_assignment) once, outside the timings
        from dpolab.autograde.course import prepare_course

        for jobs in (1, 2):
            prepare_course(solutions, ASSIGNMENT, tmp / f"out{jobs}" / ".grader")
        n_nb = len(list(solutions.glob("*.ipynb")))
        print(
            f"class: {args.students} students x {n_nb} notebooks; {os.cpu_count()} CPUs (load: {os.getloadavg()})"
        )
        seconds = {}
        for jobs in (1, 2):
            seconds[jobs] = grade(tmp / "class", tmp / f"out{jobs}", solutions, jobs, limits)
            per = seconds[jobs] / args.students
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(
                f"--jobs {jobs}: {seconds[jobs]:8.1f} s   {per:6.2f} s per submission   (load after: {load})"
            )
        print(f"speed-up of --jobs 2 over --jobs 1: {seconds[1] / seconds[2]:.2f}x (goal >= 1.7x)")
        same = filecmp.cmp(tmp / "out1" / "grades.csv", tmp / "out2" / "grades.csv", shallow=False)
        print(f"same grades.csv from both runs: {same}")
        print((tmp / "out2" / "grades.csv").read_text().splitlines()[0])
        summary: dict[str, int] = {}
        for line in (tmp / "out2" / "grades.csv").read_text().splitlines()[1:]:
            sid, score, max_score, status = line.split(",")[:4]
            key = f"{sid.split('_', 1)[1]} {status} {score}/{max_score}"
            summary[key] = summary.get(key, 0) + 1
        for key, count in sorted(summary.items()):
            print(f"  {count:3d} x {key}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
