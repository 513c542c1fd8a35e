"""Every promise an exercise's spec makes is broken by at least one mutation of the mutation suite.

``tests/promises/<notebook stem>.md`` lists, one table row per promise, what the spec tells the
student a result must be, where it says so, the words of the *student release* that say it
(``told``: one or more quotes in “…”, each found verbatim in ``notebooks/<assignment>/<stem>.ipynb``:
its markdown, a stub's docstring or a visible test's message), and the mutations (pytest ids of
the ``MISTAKES`` cases, in backticks) that break it:

    | id | promise | where | told | mutations |
    | --- | --- | --- | --- | --- |
    | 01-P07 | 0 for a row with no response tokens | Exercise 1 | “a row with no response tokens gives 0” | `01-logps-empty-row-nan` |

A hidden test grades only what the student was told: a promise whose words are not in the
release is either written into the student's text or its hidden check goes.

The mutations are collected from the module-level ``MISTAKES`` list of every
``tests/test_hidden_tests_*.py``, so a new notebook's suite and promise list are picked up
without editing this file. That each mutation fails exactly its own grade cells is checked by
the suites themselves.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PROMISES = TESTS / "promises"
RELEASE = TESTS.parent / "notebooks" / "lab_3_1_5_dpo"
HEADER = ["id", "promise", "where", "told", "mutations"]
QUOTE = re.compile(r"“([^”]+)”")
MIN_QUOTE_CHARS = 12  # a quote says something: "Returns" alone is not a promise
# The notebooks whose every mutation must also appear in their promise list (the reverse check).
FULLY_LISTED = ("01", "02", "03")


def _module(path: Path):
    name = path.stem
    if name in sys.modules:  # already imported by pytest
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def mutation_ids(lists: tuple[str, ...] = ("MISTAKES",)) -> dict[str, str]:
    """``{pytest id: module file name}`` of every case in the ``lists`` of every mutation suite.

    ``MISTAKES`` are the wrong answers; ``CHEATS`` (optional) the answers that call the
    reference, which a promise such as "written by you, not imported" may name too.
    """
    ids: dict[str, str] = {}
    for path in sorted(TESTS.glob("test_hidden_tests_*.py")):
        module = _module(path)
        assert hasattr(module, "MISTAKES"), f"{path.name} has no module-level MISTAKES list"
        for param in (p for name in lists for p in getattr(module, name, [])):
            assert param.id not in ids, f"mutation id {param.id!r} is in both {ids[param.id]} and {path.name}"
            ids[param.id] = path.name
    return ids


def _cells(line: str) -> list[str]:
    # split on the table's pipes, not on escaped ones (\|) inside a cell
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def promise_rows(path: Path) -> list[dict[str, str]]:
    """The rows of the promise table in ``path``, as ``{column: text}``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("|") and _cells(line) == HEADER]
    assert len(starts) == 1, f"{path.name}: expected one table with header | {' | '.join(HEADER)} |"
    rows = []
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == len(HEADER), f"{path.name}: a row needs {len(HEADER)} cells: {line}"
        rows.append(dict(zip(HEADER, cells, strict=True)))
    assert rows, f"{path.name}: the promise table is empty"
    return rows


PROMISE_FILES = sorted(PROMISES.glob("*.md"))


def test_there_are_promise_lists():
    stems = {p.stem[:2] for p in PROMISE_FILES}
    assert set(FULLY_LISTED) <= stems, f"missing promise lists for notebooks {set(FULLY_LISTED) - stems}"


@pytest.mark.parametrize("path", PROMISE_FILES, ids=lambda p: p.stem)
def test_every_promise_names_a_mutation_that_exists(path):
    known = mutation_ids(("MISTAKES", "CHEATS"))
    seen = set()
    for row in promise_rows(path):
        pid = row["id"]
        assert re.fullmatch(rf"{re.escape(path.stem[:2])}-P\d+", pid), (
            f"{path.name}: promise id {pid!r} should look like {path.stem[:2]}-P07"
        )
        assert pid not in seen, f"{path.name}: promise id {pid} is used twice"
        seen.add(pid)
        assert row["promise"] and row["where"], f"{path.name} {pid}: say what is promised and where"
        names = re.findall(r"`([^`]+)`", row["mutations"])
        assert names, f"{path.name} {pid}: name at least one mutation (in backticks) that breaks it"
        unknown = [n for n in names if n not in known]
        assert not unknown, (
            f"{path.name} {pid}: no MISTAKES or CHEATS case has the id {unknown} "
            f"(tests/test_hidden_tests_*.py define {len(known)} cases)"
        )


@pytest.mark.parametrize("notebook", FULLY_LISTED)
def test_every_mutation_belongs_to_a_promise(notebook):
    (path,) = (p for p in PROMISE_FILES if p.stem.startswith(notebook))
    listed = {n for row in promise_rows(path) for n in re.findall(r"`([^`]+)`", row["mutations"])}
    cases = {i for i in mutation_ids() if i.startswith(f"{notebook}-")}
    assert cases - listed == set(), f"{path.name} does not list the mutations {sorted(cases - listed)}"


def test_the_checker_reads_tables_with_escaped_pipes(tmp_path):
    path = tmp_path / "99_example.md"
    path.write_text(
        "# x\n\n| id | promise | where | told | mutations |\n| --- | --- | --- | --- | --- |\n"
        "| 99-P01 | finite for \\|x\\| up to 1e3 | cell 3 | “for \\|β·h\\| up to 1e3” | `99-a`, `99-b` |\n\ntext\n",
        encoding="utf-8",
    )
    (row,) = promise_rows(path)
    assert row["promise"] == "finite for \\|x\\| up to 1e3"
    assert quotes(row) == ["for |β·h| up to 1e3"]
    assert re.findall(r"`([^`]+)`", row["mutations"]) == ["99-a", "99-b"]


# --------------------------------------------------------------------------- told, then graded
def normalised(text: str) -> str:
    """Whitespace runs as one space: a quote may span the line breaks of a markdown cell."""
    return re.sub(r"\s+", " ", text).strip()


def quotes(row: dict[str, str]) -> list[str]:
    return [q.replace("\\|", "|") for q in QUOTE.findall(row["told"])]


def student_text(notebook: Path) -> str:
    """Everything a student reads in a release notebook: every cell's source, normalised."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return normalised("\n".join(cell.source for cell in nb.cells))


def untold(path: Path, text: str) -> list[str]:
    """``id: what is wrong`` for every promise of ``path`` without a quote found in ``text``."""
    problems = []
    for row in promise_rows(path):
        found = quotes(row)
        if not found:
            problems.append(f"{row['id']}: no quote of the student release in the 'told' column")
        for q in found:
            if len(q) < MIN_QUOTE_CHARS:
                problems.append(f"{row['id']}: quote too short to state a promise: “{q}”")
            elif normalised(q) not in text:
                problems.append(f"{row['id']}: not in {RELEASE.name}/{path.stem}.ipynb: “{q}”")
    return problems


@pytest.mark.parametrize("path", PROMISE_FILES, ids=lambda p: p.stem)
def test_every_promise_quotes_the_student_release(path):
    problems = untold(path, student_text(RELEASE / f"{path.stem}.ipynb"))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_quote_check_fails_when_a_quoted_sentence_is_removed():
    """Each notebook: take the first promise's first quote out of the release's text, and the
    check names that promise."""
    for path in PROMISE_FILES:
        row = promise_rows(path)[0]
        (first, *_) = quotes(row) or ["(no quote)"]
        text = student_text(RELEASE / f"{path.stem}.ipynb").replace(normalised(first), "")
        assert any(p.startswith(f"{row['id']}:") for p in untold(path, text)), path.name
