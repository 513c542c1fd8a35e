"""nbconvert preprocessors added to nbgrader's pipelines.

``LimitOutputSize`` (autograde and feedback): the text a cell printed is cut to ``max_chars``
characters (images and HTML larger than ten times that are dropped), so that 50 MB of printed
text neither fills the graded notebook nor the feedback.

``HideHiddenTracebacks`` (feedback, before nbgrader's ``ClearHiddenTests``): a failing hidden
test shows the lines around the failing assert in its traceback; in a cell holding hidden
tests the frames of the cell itself are dropped, and so are frames in ``dpolab``'s own source
(the frames in the student's own code stay); a note says so.
"""

from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Bool, Integer, Unicode

HIDDEN = "### BEGIN HIDDEN TESTS"
JUDGED = "AssertionError: the hidden tests of this cell failed (checked by the grader):"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LimitOutputSize(Preprocessor):
    enabled = Bool(True)  # nbconvert's default is off; nbgrader registers its pipeline as is
    max_chars = Integer(20_000, help="characters of text kept per cell (stream and text outputs)").tag(
        config=True
    )

    def _cut(self, text: str, budget: int) -> str:
        if len(text) <= budget:
            return text
        return text[:budget] + f"\n... [{len(text) - budget} characters cut by dpolab-grade]\n"

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        budget = self.max_chars  # for the whole cell: the kernel sends a long print in many chunks
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                if budget <= 0:
                    continue
                text = out.text
                out.text = self._cut(text, budget)
                budget -= len(text)
            elif out.output_type in ("execute_result", "display_data"):
                for mime, value in list(out.get("data", {}).items()):
                    if not isinstance(value, str):
                        continue
                    if mime == "text/plain":
                        out.data[mime] = self._cut(value, max(budget, 200))
                    elif len(value) > 10 * self.max_chars:  # a cut image or HTML is garbage: drop it
                        del out.data[mime]
                        out.data.setdefault("text/plain", "[output too large: removed by dpolab-grade]")
                budget -= sum(len(v) for v in out.data.values() if isinstance(v, str))
            elif out.output_type == "error":
                out.evalue = self._cut(out.evalue, self.max_chars)
                out.traceback = [self._cut(t, self.max_chars) for t in out.traceback[-50:]]
            kept.append(out)
        cell.outputs = kept
        return cell, resources


class HideHiddenTracebacks(Preprocessor):
    enabled = Bool(True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or HIDDEN not in cell.source:
            return cell, resources
        own_frame = f"Cell In[{cell.execution_count}]" if cell.execution_count else None
        for out in cell.get("outputs", []):
            if out.output_type != "error" or out.traceback[:1] == [JUDGED]:
                continue  # not an error, or the grader's verdict (JudgeRecords): nothing hidden in it
            kept = []
            for entry in out.traceback:
                plain = ANSI.sub("", entry)
                if plain.lstrip().startswith("Cell In[") and (own_frame is None or own_frame in plain):
                    continue  # this cell's own lines: the hidden tests
                if "<ipython-input-" in plain or (plain.lstrip().startswith("File ") and "dpolab" in plain):
                    continue  # old IPython's form of the same; the reference's own source
                kept.append(entry)
            kept.insert(
                min(2, len(kept)),
                "(the lines of the hidden test are not shown; the message says what failed)",
            )
            out.traceback = kept
        return cell, resources


class JudgeRecords(Preprocessor):
    """Score the hidden tests outside the kernel (autograde, right after execution).

    A grade cell with fixtures passes only if the records its hidden tests sent match them
    (:func:`dpolab.autograde.records.judge`). Otherwise an error output saying what differs is
    added to the cell, and nbgrader gives it no points. The records are removed from the
    outputs either way (they are for the grader, not for the feedback).
    """

    enabled = Bool(True)
    fixtures = Unicode("", help="the fixtures file of the assignment (JSON)").tag(config=True)

    def preprocess(self, nb, resources):
        import json

        self._want = {}
        if self.fixtures:
            with open(self.fixtures) as f:
                everything = json.load(f)
            self._want = everything.get(resources["nbgrader"]["notebook"], {})
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        from nbformat.v4 import new_output

        from .records import cell_records, judge

        if cell.cell_type != "code":
            return cell, resources
        records, others = cell_records(cell.get("outputs", []))
        cell.outputs = others
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        want = self._want.get(grade_id) if cell.metadata.get("nbgrader", {}).get("grade") else None
        if want is None:
            return cell, resources
        if any(o.output_type == "error" for o in cell.outputs):
            return cell, resources  # already failed in the kernel
        failures = judge(records, want)
        if failures:
            shown = failures[:3] + ([f"... and {len(failures) - 3} more"] if len(failures) > 3 else [])
            cell.outputs.append(
                new_output(
                    "error",
                    ename="AssertionError",
                    evalue="hidden test failed: " + shown[0],
                    traceback=[
                        "AssertionError: the hidden tests of this cell failed (checked by the grader):"
                    ]
                    + [f"  - {line}" for line in shown],
                )
            )
        return cell, resources
