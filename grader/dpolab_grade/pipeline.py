"""nbgrader's autograde and feedback pipelines with the judge: one definition for every flow.

The hidden tests of this course decide nothing in the student's kernel: they record what the
student's code returned, and :class:`~dpolab_grade.preprocessors.JudgeRecords` judges the
records after the kernel has returned (:mod:`dpolab.records`, :mod:`dpolab_grade.judge`). ``dpolab-grade``'s
workers and a plain ``nbgrader autograde`` (formgrader's Autograde button runs the same app)
both grade with the pipelines below, so they give the same scores.

An instructor's existing nbgrader course gets the judge with one line in ``nbgrader_config.py``::

    from dpolab_grade.pipeline import use_judge; use_judge(c)

which also runs each student's kernel in ``dpolab-grade``'s sandbox (or refuses to grade where
bubblewrap cannot be used, unless told ``use_judge(c, sandbox="none")``). Without it, every hidden test fails its cell with a message that says so (fail closed): a
hidden test that nobody judges never keeps its points.
"""

from __future__ import annotations


def autograde_preprocessors(*after_judge) -> list:
    """nbgrader 0.9's ``Autograde.autograde_preprocessors`` with ``Execute`` asking the kernel
    for records and the judge right after it (``after_judge``: more preprocessors there)."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    from .preprocessors import JudgeRecords, RecordingExecute

    return [
        RecordingExecute,
        JudgeRecords,
        *after_judge,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]


def feedback_preprocessors(*before_header) -> list:
    """``GenerateFeedback.preprocessors`` without the hidden tests: nbgrader's default shows them;
    the lines of a failing hidden test's traceback go too (only its message stays)."""
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    from .preprocessors import HideHiddenTracebacks

    return [GetGrades, HideHiddenTracebacks, ClearHiddenTests, *before_header, CSSHTMLHeaderPreprocessor]


def use_judge(c, sandbox: str = "bwrap") -> None:
    """Configure an nbgrader config ``c`` (``get_config()`` in ``nbgrader_config.py``) to grade as
    ``dpolab-grade`` does: each kernel in the sandbox, the hidden tests' records judged outside it,
    the output capped, the hidden tests kept out of the feedback.

    ``sandbox``: ``"bwrap"`` (the default) runs each student's kernel in bubblewrap with
    dpolab-grade's limits (:class:`~dpolab_grade.preprocessors.RecordingExecute`); where bubblewrap
    cannot be used, no notebook is graded and nbgrader's log says how to fix it. ``"none"``: no
    file or network isolation, chosen knowingly (the limits, the watchdog and the student package,
    never the reference, stay). The limits are ``c.RecordingExecute.memory_mb`` and the like.

    The fixtures (the solution's records) are made on first use from the course's source
    notebooks and cached (``JudgeRecords.cache_dir``, default ``~/.cache/dpolab/fixtures``), out of
    the sandboxed kernel's sight. Deleted grade cells are restored from the gradebook, as
    ``dpolab-grade`` does, and the release's test cells get their hidden tests back without a
    checksum warning (real edits are still logged).
    """
    from .preprocessors import LimitOutputSize, sanitize_preprocessors

    if sandbox not in ("bwrap", "none"):
        raise ValueError(f"use_judge: sandbox must be 'bwrap' or 'none', not {sandbox!r}")
    c.RecordingExecute.sandbox = sandbox
    c.Autograde.sanitize_preprocessors = sanitize_preprocessors()
    c.Autograde.autograde_preprocessors = autograde_preprocessors(LimitOutputSize)
    c.GenerateFeedback.preprocessors = feedback_preprocessors(LimitOutputSize)
    c.OverwriteCells.add_missing_cells = True
