"""nbconvert preprocessors added to nbgrader's pipelines.

``LimitOutputSize`` (autograde and feedback): every output is cut to ``max_chars`` characters,
so that 50 MB of printed text neither fills the graded notebook nor the feedback.

``HideHiddenTracebacks`` (feedback, before nbgrader's ``ClearHiddenTests``): a failing hidden
test shows the lines around the failing assert in its traceback; in a cell holding hidden
tests the frames of the cell itself are dropped (the frames in the student's own code stay),
and a note says so.
"""

from __future__ import annotations

import re

from nbconvert.preprocessors import Preprocessor
from traitlets import Integer

HIDDEN = "### BEGIN HIDDEN TESTS"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LimitOutputSize(Preprocessor):
    max_chars = Integer(20_000, help="characters kept per output").tag(config=True)

    def _cut(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        return text[: self.max_chars] + f"\n... [{len(text) - self.max_chars} characters cut by dpolab-grade]\n"

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                out.text = self._cut(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                for mime, value in list(out.get("data", {}).items()):
                    if isinstance(value, str) and len(value) > self.max_chars:
                        if mime == "text/plain":
                            out.data[mime] = self._cut(value)
                        else:  # a truncated image or HTML is garbage: drop it
                            del out.data[mime]
                            out.data.setdefault("text/plain", "[output too large: removed by dpolab-grade]")
            elif out.output_type == "error":
                out.evalue = self._cut(out.evalue)
                out.traceback = [self._cut(t) for t in out.traceback[-50:]]
        return cell, resources


class HideHiddenTracebacks(Preprocessor):
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or HIDDEN not in cell.source:
            return cell, resources
        own_frame = f"Cell In[{cell.execution_count}]" if cell.execution_count else None
        for out in cell.get("outputs", []):
            if out.output_type != "error":
                continue
            kept = []
            for entry in out.traceback:
                plain = ANSI.sub("", entry)
                if plain.lstrip().startswith("Cell In[") and (own_frame is None or own_frame in plain):
                    continue  # this cell's own lines: the hidden tests
                if "<ipython-input-" in plain or (plain.lstrip().startswith("File ") and "dpolab" in plain):
                    continue  # old IPython's form of the same; the reference's own source
                kept.append(entry)
            kept.insert(
                min(1, len(kept)), "(the lines of the hidden test are not shown; the message says what failed)"
            )
            out.traceback = kept
        return cell, resources
