"""nbconvert preprocessors added to nbgrader's pipelines.

``LimitOutputSize`` (autograde and feedback): the text a cell printed is cut to ``max_chars``
characters (images and HTML larger than ten times that are dropped), so that 50 MB of printed
text neither fills the graded notebook nor the feedback.

``HideHiddenTracebacks`` (feedback, before nbgrader's ``ClearHiddenTests``): a failing hidden
test shows the lines around the failing assert in its traceback; in a cell holding hidden
tests the frames of the cell itself are dropped, and so are frames in ``dpolab``'s own source
(the frames in the student's own code stay); a note says so.

``RecordingExecute`` and ``JudgeRecords`` (autograde): the kernel is asked for the hidden tests'
records, and the grader judges them against the fixtures once the kernel has returned.
:mod:`dpolab_grade.pipeline` puts them in nbgrader's pipeline, for every flow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path

from nbconvert.preprocessors import Preprocessor
from nbgrader.api import MissingEntry
from nbgrader.preprocessors import ClearHiddenTests, Execute, OverwriteCells
from nbgrader.utils import compute_checksum
from traitlets import Bool, Integer, Unicode

from .judge import ENV
from .kernel_client import PollingKernelClient
from .sandbox import Limits

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


class RecordingExecute(Execute):
    """nbgrader's ``Execute``, in dpolab-grade's sandbox, with the kernel asked for its hidden tests' records.

    ``sandbox``: ``bwrap`` (the default) starts each student's kernels in bubblewrap with the
    limits below, the student package as its ``dpolab``, no network, a zygote that imports torch
    once per student and a watchdog (:class:`~dpolab_grade.nbgrader_sandbox.KernelSandbox`); where
    bubblewrap cannot be used the notebook is not graded and the log says how to fix it (fail closed). ``none``: no file or network
    isolation, chosen knowingly; the limits, the watchdog and the student package stay.
    ``given``: the kernelspec in force is already sandboxed (``dpolab-grade``'s workers).

    The records: ``DPOLAB_RECORDS=1`` reaches the kernel (its kernelspec sets it); without it a
    hidden test fails its cell (fail closed, :meth:`dpolab.records.Probe.send`).
    """

    sandbox = Unicode("bwrap", help="bwrap | none | given (the kernelspec is sandboxed already)").tag(
        config=True
    )
    kernel_python = Unicode("", help="the Python of the student's kernel (default: this one)").tag(
        config=True
    )
    memory_mb = Integer(
        Limits.memory_mb, help="address space of the kernel, and its tree's resident memory"
    ).tag(config=True)
    file_mb = Integer(Limits.file_mb, help="largest file the kernel may write").tag(config=True)
    max_processes = Integer(Limits.max_processes, help="processes in the kernel's tree").tag(config=True)
    threads = Integer(Limits.threads, help="OMP/MKL threads in the kernel").tag(config=True)
    cache_dir = Unicode("", help="where the student package is built (default: ~/.cache/dpolab/student)").tag(
        config=True
    )

    _kernel_sandbox = None
    _sandboxes = None

    def _make_sandbox(self):
        import sys

        from nbgrader.coursedir import CourseDirectory

        from .fixtures import default_cache
        from .nbgrader_sandbox import KernelSandbox

        limits = Limits(
            cell_timeout=self.timeout or 0,
            memory_mb=self.memory_mb,
            file_mb=self.file_mb,
            max_processes=self.max_processes,
            threads=self.threads,
        )
        root = Path(CourseDirectory(config=self.config).root).resolve()
        cache = Path(self.cache_dir) if self.cache_dir else default_cache().parent / "student"
        return KernelSandbox(
            self.sandbox,
            limits,
            self.kernel_python or sys.executable,
            cache,
            forbidden=[root, default_cache().parent, cache],
            log=self.log,
        )

    def preprocess(self, nb, resources, *args, **kwargs):
        previous = os.environ.get(ENV)
        os.environ[ENV] = "1"
        self._kernel_sandbox = None
        if self.sandbox != "given":  # plain nbgrader
            try:  # the fixtures read, and their digest pinned, before any kernel of this process runs
                read_fixtures(fixtures_path(self.config, resources))
            except Exception:  # JudgeRecords says why, and fails the cells
                pass
            from .nbgrader_sandbox import Sandboxes  # one sandbox per student, kept across their notebooks

            if self._sandboxes is None:
                self._sandboxes = Sandboxes()
            key = resources.get("nbgrader", {}).get("student"), str(resources.get("metadata", {}).get("path"))
            self._kernel_sandbox = self._sandboxes.get(key, self._make_sandbox)
            self._kernel_sandbox.start_notebook()
        try:
            return super().preprocess(nb, resources, *args, **kwargs)
        finally:
            if self._kernel_sandbox is not None:
                reason = self._kernel_sandbox.end_notebook()
                if reason:
                    self.log.error("dpolab: %s: the kernel was killed", reason)
                self._sandboxes.idle()
                self._kernel_sandbox = None
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous

    def create_kernel_manager(self):
        if self._kernel_sandbox is None:
            super().create_kernel_manager()
        else:
            self.km = self._kernel_sandbox.kernel_manager(self.kernel_manager_class, self.config)
        # a cell's reply whose wake-up was missed waits at most a second, not the cell's timeout
        self.km.client_factory = PollingKernelClient
        return self.km


# Each fixtures file's sha256 when this process first read it. nbgrader grades a whole class in one
# process: a kernel that rewrote the file (only possible with sandbox="none", where the kernel is the
# grading user) cannot change what the rest of the run is judged against.
_PINNED: dict[str, str] = {}


def read_fixtures(path: str | Path, sha256: str = "") -> dict:
    """The fixtures in ``path``, used only if their digest is ``sha256`` (``dpolab-grade`` takes it
    when its course is built, before any kernel runs) or, not given, the digest this process saw
    the first time it read the file; raises otherwise."""
    data = Path(path).read_bytes()
    seen = hashlib.sha256(data).hexdigest()
    want = sha256 or _PINNED.setdefault(str(Path(path).resolve()), seen)
    if seen != want:
        raise RuntimeError(
            f"{path} changed while grading (sha256 {seen[:12]}, expected {want[:12]}): not used"
        )
    return json.loads(data)


def fixtures_path(config, resources) -> Path:
    """The fixtures file of this assignment: ``JudgeRecords.fixtures``, or made (once, cached) from
    the course's source notebooks (nbgrader's ``CourseDirectory``: ``source/<assignment>/``)."""
    judge = JudgeRecords(config=config)
    if judge.fixtures:
        return Path(judge.fixtures)
    from nbgrader.coursedir import CourseDirectory

    from .fixtures import cached_fixtures

    coursedir = CourseDirectory(config=config)
    source = Path(coursedir.format_path(coursedir.source_directory, ".", resources["nbgrader"]["assignment"]))
    return cached_fixtures(source, Path(judge.cache_dir) if judge.cache_dir else None, log=judge.log)


class JudgeRecords(Preprocessor):
    """Score the hidden tests outside the kernel (autograde, right after execution).

    A grade cell with fixtures passes only if the records its hidden tests sent match them
    (:func:`dpolab_grade.judge.judge`). Otherwise an error output saying what differs is
    added to the cell, and nbgrader gives it no points. The records are removed from the
    outputs either way (they are for the grader, not for the feedback).

    Fail closed: records with no fixture to judge them against (the fixtures could not be made,
    or have no entry for the cell) fail their cell too. What a grade cell writes to stderr (a
    warning) is kept as ordinary output: nbgrader would score the cell 0 for it, and no student is
    told that a warning costs points.

    ``fixtures``: the fixtures file (``dpolab-grade`` makes it once per run). Left empty (plain
    ``nbgrader autograde``, formgrader), the fixtures are made on first use from the assignment's
    source notebooks (nbgrader's ``CourseDirectory``: ``source/<assignment>/``) and cached under
    ``cache_dir`` by a hash of those files, so a change to the solutions remakes them.
    ``verdicts``: a JSON-lines file where each judged cell's failed promises are appended (for
    ``dpolab-grade``'s class report); empty: not written. The file is used only if its digest is
    ``fixtures_sha256`` or, when that is empty, what this process first read (:func:`read_fixtures`;
    plain nbgrader reads it before its first kernel starts, in ``RecordingExecute``).
    """

    enabled = Bool(True)
    fixtures = Unicode(
        "", help="the fixtures file of the assignment (JSON); empty: made from the source"
    ).tag(config=True)
    cache_dir = Unicode(
        "", help="where fixtures made from the source are kept (default: ~/.cache/dpolab)"
    ).tag(config=True)
    fixtures_sha256 = Unicode(
        "", help="the fixtures file's sha256; empty: as first read by this process"
    ).tag(config=True)
    verdicts = Unicode("", help="append each judged grade cell's failures to this JSON-lines file").tag(
        config=True
    )

    def _load(self, resources) -> dict:
        """``{notebook: {grade_id: records}}``; raises with a reason when none can be had."""
        return read_fixtures(fixtures_path(self.config, resources), self.fixtures_sha256)

    def preprocess(self, nb, resources):
        self._notebook = resources["nbgrader"]["notebook"]
        self._problem = None
        try:
            self._want = self._load(resources).get(self._notebook, {})
        except Exception as err:  # judged as failed below, never as passed
            self._want = {}
            self._problem = f"the grader has no fixtures to judge the hidden tests against ({err})"
            self.log.error("%s", self._problem)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        from nbformat.v4 import new_output

        from .judge import cell_records, describe, failed_promises

        if cell.cell_type != "code":
            return cell, resources
        records, others = cell_records(cell.get("outputs", []))
        cell.outputs = others
        meta = cell.metadata.get("nbgrader", {})
        if not meta.get("grade"):
            return cell, resources
        for output in cell.outputs:
            # nbgrader 0.9 scores a cell 0 for any stderr output: a warning that a correct answer
            # triggers (torch's "Converting a tensor with requires_grad=True to a scalar") would
            # cost the cell. Errors and records decide here; the text stays in the feedback.
            if output.output_type == "stream" and output.name == "stderr":
                output.name = "stdout"
        grade_id = meta.get("grade_id")
        want = self._want.get(grade_id)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:  # already failed in the kernel (a visible test, or the records' fail-closed)
            return cell, resources
        if want is None and not records:
            return cell, resources  # a grade cell without hidden tests
        if want is None:
            why = (
                self._problem
                or f"no fixture for {grade_id} in {self._notebook} (were the solutions changed?)"
            )
            failures = [{"promise": why, "test": grade_id, "key": "", "detail": ""}]
        else:
            failures = failed_promises(records, want)
        self._verdict(grade_id, failures)
        if failures:
            lines = [describe(f) for f in failures]
            shown = lines[:3] + ([f"... and {len(lines) - 3} more"] if len(lines) > 3 else [])
            cell.outputs.append(
                new_output(
                    "error",
                    ename="AssertionError",
                    evalue="hidden test failed: " + shown[0],
                    traceback=[JUDGED] + [f"  - {line}" for line in shown],
                )
            )
        return cell, resources

    def _verdict(self, grade_id: str, failures: list[dict]) -> None:
        if self.verdicts:
            with open(self.verdicts, "a") as f:
                f.write(
                    json.dumps({"notebook": self._notebook, "cell": grade_id, "failures": failures}) + "\n"
                )


class RestoreHiddenTests(OverwriteCells):
    """nbgrader's ``OverwriteCells``, without a false alarm on every test cell.

    A locked test cell is restored from the gradebook, which holds the source version with its
    hidden tests; the release's copy lacks them, so nbgrader logs "Attribute 'checksum' ... has
    changed!" for every cell with hidden tests of every submission, even an untouched one (18
    lines per student here). The warning stays for a cell that is neither the source nor the
    release: real tampering. The cell is restored either way, as nbgrader does.
    """

    def preprocess_cell(self, cell, resources, cell_index):
        self._released = None
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id is not None:
            try:
                source = self.gradebook.find_source_cell(grade_id, self.notebook_id, self.assignment_id)
            except MissingEntry:
                source = None
            if source is not None and source.locked:
                released = copy.deepcopy(cell)
                released.source = source.source
                ClearHiddenTests()._remove_hidden_test_region(released)
                self._released = compute_checksum(released)
        return super().preprocess_cell(cell, resources, cell_index)

    def report_change(self, name, attr, old, new):
        if attr == "checksum" and new == self._released:
            self.log.debug("Cell %s is the release's: its hidden tests are restored", name)
            return
        super().report_change(name, attr, old, new)


def sanitize_preprocessors() -> list:
    """nbgrader 0.9's ``Autograde.sanitize_preprocessors`` with :class:`RestoreHiddenTests`."""
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteKernelspec

    return [ClearOutput, DeduplicateIds, OverwriteKernelspec, RestoreHiddenTests, CheckCellMetadata]
