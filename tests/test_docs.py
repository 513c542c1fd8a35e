"""README.md and docs/*.md: every relative link and anchor resolves; the README stays a student's page.

A link ``[text](target)`` outside code is checked when its target is relative (no scheme): the
file or folder must exist, relative to the page, and a ``#anchor`` must be the slug of a heading
of the target page, made the way GitHub makes it (lowercase; markup dropped; every character that
is not a letter, digit, space, ``-`` or ``_`` removed; each space a ``-``; ``-1``, ``-2``... for
repeated headings).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 100
SETUP_WITHIN = 30  # the two set-up commands stay on the README's first screen

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the text outside fenced code blocks."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)[0]
        elif fence is not None and match and match.group(1)[0] == fence:
            fence = None
        elif fence is None:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # _emphasis_, not snake_case
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page, repeated headings numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(page: Path) -> list[str]:
    """``page:line: target (why)`` for every relative link or anchor of ``page`` that does not resolve."""
    broken = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if SCHEME.match(target) or target.startswith("//"):
                continue  # an address: tests/test_colab.py checks the lab's own
            path, _, anchor = target.partition("#")
            where = f"{page.name}:{number}: {target}"
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor:
                if dest.is_dir() or dest.suffix.lower() != ".md":
                    broken.append(f"{where} (an anchor into a page that is not Markdown)")
                elif anchor not in anchors(dest):
                    broken.append(f"{where} (no heading with anchor #{anchor} in {dest.name})")
    return broken


def test_docs_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "instructors.md", "authors.md", "training.md", "library.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page), "\n".join(broken_links(page))


def test_readme_is_a_students_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move instructors' and "
        "authors' material to docs/"
    )
    top = "\n".join(lines[:SETUP_WITHIN])
    for command in ("make lab", "make test"):
        assert command in top, f"`{command}` must be in the README's first {SETUP_WITHIN} lines"


def test_readme_links_every_doc():
    text = README.read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in text, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("The four parts", "the-four-parts"),
        ("6. The student's JupyterLab", "6-the-students-jupyterlab"),
        (
            "`dpolab-train`: TRL's `DPOTrainer` on a pairs file",
            "dpolab-train-trls-dpotrainer-on-a-pairs-file",
        ),
        ("PyTorch on a CPU, a GPU and Colab", "pytorch-on-a-cpu-a-gpu-and-colab"),
        ("Bradley–Terry → DPO", "bradleyterry--dpo"),
        ("A [linked](https://example.org) *word*", "a-linked-word"),
        ("snake_case and _emphasis_", "snake_case-and-emphasis"),
    ],
)
def test_slug_is_githubs(heading, expected):
    assert slug(heading) == expected


def test_a_broken_link_or_anchor_fails(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A section\n\n## A section\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok](other.md#a-section) [ok](other.md#a-section-1) [ok](#page) [ok](folder/)\n"
        "[web](https://example.org/missing) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[gone](missing.md)\n"
        "[bad anchor](other.md#no-such-section)\n"
        "[bad local anchor](#nowhere)\n"
        "[anchor into a folder](folder#x)\n",
        encoding="utf-8",
    )
    broken = broken_links(page)
    assert [b.split(": ", 1)[1].split(" (")[0] for b in broken] == [
        "missing.md",
        "other.md#no-such-section",
        "#nowhere",
        "folder#x",
    ], broken
    assert "page.md:8: missing.md (no such file)" in broken
