"""``OUT/report.html``: what the class got right and wrong, in one self-contained page.

Four parts, each computed from the same results as ``grades.csv`` and ``cells.csv``:

1. the score distribution (a histogram of the students' scores, and their count per status);
2. each grade cell's pass rate: full points, among the students with a score in ``cells.csv``;
3. the promises that failed most often: the judge's verdicts on the hidden tests' records
   (each failed promise counted once per student), the things to teach again;
4. the incomplete and ungradable students with their reasons.

The figures are PNGs embedded as ``data:`` URIs, so the page can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

from .course import GradeCell

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
"""


def _fmt(x: float) -> str:
    return f"{x:g}"


def cell_pass_rates(results: list[dict], cells: list[GradeCell]) -> list[tuple[GradeCell, int, int]]:
    """``(cell, students with full points, students scored)`` per grade cell: scored are the students
    with a number in ``cells.csv`` (their notebook was graded, or not handed in: 0; an answer still
    to grade by hand has none)."""
    rows = []
    for c in cells:
        scored = [r["notebooks"][c.notebook]["grades"] for r in results if _scored(r, c.notebook)]
        scored = [g for g in scored if c.name in g]
        rows.append((c, sum(g.get(c.name, 0) >= c.points for g in scored), len(scored)))
    return rows


def promise_counts(results: list[dict]) -> list[tuple[str, str, str, int]]:
    """``(notebook, grade cell, promise, students)``, most frequent first.

    A promise is the message of the hidden test's check (the same for every student). Cells that
    failed in the kernel (a visible test, a stub) were not judged and are not counted here."""
    counts: Counter = Counter()
    for r in results:
        seen = set()
        for notebook, nb in r["notebooks"].items():
            if nb.get("status") != "graded":
                continue
            for cell, failures in (nb.get("failed") or {}).items():
                seen.update((notebook, cell, f["promise"]) for f in failures)
        counts.update(seen)
    return [(*key, n) for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _manual(results: list[dict], cells: list[GradeCell]) -> str:
    """A paragraph on the answers graded by hand: their points, and what still waits in formgrader."""
    manual = [c for c in cells if c.manual]
    if not manual:
        return ""
    points = sum(c.points for c in manual)
    waiting = [r for r in results if r.get("manual_pending")]
    pending = sum(r["manual_pending"] for r in waiting)
    return (
        f"<p>Of the {_fmt(sum(c.points for c in cells))} points, {_fmt(points)} are graded by hand "
        f"({len(manual)} written answers, in formgrader). Awaiting manual grading: {_fmt(pending)} points "
        f"of {len(waiting)} students; the scores above count them once graded (then run "
        "<code>dpolab-grade export OUT</code>).</p>"
    )


def _scored(result: dict, notebook: str) -> bool:
    return result["notebooks"].get(notebook, {}).get("status") in ("graded", "missing")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figures(results: list[dict], rates, max_score: float) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display; the grader may run headless
    import matplotlib.pyplot as plt

    scores = [r["score"] for r in results]
    fig, ax = plt.subplots(figsize=(7, 3))
    bins = max(1, min(20, int(max_score) + 1))
    ax.hist(scores, bins=bins, range=(0, max_score), color="#4c72b0", edgecolor="white")
    ax.set_xlabel(f"score (out of {_fmt(max_score)})")
    ax.set_ylabel("students")
    ax.set_title(f"Score distribution ({len(results)} students)")
    distribution = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rates) + 1))
    labels = [f"{c.notebook[:2]} {c.name}" for c, _, _ in rates]
    values = [100 * p / n if n else 0 for _, p, n in rates]
    ax.barh(labels[::-1], values[::-1], color="#55a868")
    ax.set_xlim(0, 100)
    ax.set_xlabel("students with full points (%)")
    pass_rates = _png(fig)
    plt.close(fig)
    return distribution, pass_rates


def _table(head: list[str], rows: list[list], numeric: set[int] = frozenset(), table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    out = [f"<table{ident}><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        tds = "".join(
            f'<td class="num">{html.escape(str(v))}</td>'
            if i in numeric
            else f"<td>{html.escape(str(v))}</td>"
            for i, v in enumerate(row)
        )
        out.append(f"<tr>{tds}</tr>")
    return "\n".join(out + ["</table>"])


def write_class_report(out: Path, results: list[dict], cells: list[GradeCell], top: int = 15) -> Path:
    """Write ``out/report.html``; return its path."""
    max_score = sum(c.points for c in cells)
    rates = cell_pass_rates(results, cells)
    promises = promise_counts(results)
    statuses = Counter(r["status"] for r in results)
    scores = sorted(r["score"] for r in results)
    mean = sum(scores) / len(scores) if scores else 0.0
    median = (scores[(len(scores) - 1) // 2] + scores[len(scores) // 2]) / 2 if scores else 0.0
    distribution, pass_rates = _figures(results, rates, max_score)
    attention = [r for r in results if r["status"] != "graded"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Class report</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>Class report</h1>",
        _table(
            [
                "students",
                "graded",
                "incomplete",
                "ungradable",
                "missing",
                "mean score",
                "median score",
                "out of",
            ],
            [
                [
                    len(results),
                    statuses["graded"],
                    statuses["incomplete"],
                    statuses["ungradable"],
                    statuses["missing"],
                    f"{mean:.2f}",
                    _fmt(median),
                    _fmt(max_score),
                ]
            ],
            numeric=set(range(8)),
            table_id="summary",
        ),  # fmt: skip
        _manual(results, cells),
        "<h2>Score distribution</h2>",
        f'<img alt="score distribution" src="{distribution}">',
        "<h2>Pass rate of each grade cell</h2>",
        "<p>Full points, among the students with a score for the cell (a notebook not handed in scores 0).</p>",
        f'<img alt="pass rates" src="{pass_rates}">',
        _table(
            ["notebook", "grade cell", "points", "full points", "scored", "pass rate"],
            [
                [c.notebook, c.name, _fmt(c.points), p, n, f"{100 * p / n:.0f}%" if n else "-"]
                for c, p, n in rates
            ],
            numeric={2, 3, 4, 5},
            table_id="cells",
        ),  # fmt: skip
        f"<h2>Promises that failed most often (top {top})</h2>",
        "<p>Each failed check of a hidden test, counted once per student: what to teach again.</p>",
        _table(
            ["students", "notebook", "grade cell", "promise"],
            [[n, nb, cell, promise] for nb, cell, promise, n in promises[:top]],
            numeric={0},
            table_id="promises",
        ),  # fmt: skip
        "<h2>Incomplete and ungradable</h2>",
        _table(
            ["student", "status", "score", "reason"],
            [[r["student_id"], r["status"], _fmt(r["score"]), r["reason"]] for r in attention],
            numeric={2},
            table_id="attention",
        )
        if attention
        else "<p>None: every student was graded.</p>",
        "</body></html>",
    ]
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
