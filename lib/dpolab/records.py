"""Hidden tests that are judged outside the student's kernel.

A guard that lives in the student's process cannot be trusted: the student's code can patch
``torch.allclose``, ``math.isclose`` or builtins, switch a guard off, or clear a cell's error
output. So a hidden test does not decide anything in the kernel. It *observes*: it calls the
student's code on fixed inputs and records what came back, with a :class:`Probe`::

    _p = Probe("test_log_probs")
    _p.close("seed 1", DPOLoss().compute_log_probs(*batch), rtol=1e-4, atol=1e-3,
             msg="log-probs on a batch with a prompt and padding")
    _p.raises("beta < 0", lambda: DPOLoss(beta=-1), exc=ValueError, words=["beta"],
              msg="a negative beta must be rejected with a ValueError naming beta")
    _p.send()

``send`` puts the records in the cell's output (one JSON display, only when the grader asks
for records: ``DPOLAB_RECORDS=1``). The grader makes the *fixtures* by running the same
hidden tests on the solution notebooks (in its own process, never in a student's), and after
a student's notebook has run, :func:`judge` compares the student's records with those
fixtures. Every parameter of the comparison (tolerances, the exception expected, the words
its message must hold, the message shown) is taken from the fixture, never from the
student's record: a student's kernel can only supply observed values. The expected values
never enter the student's kernel, so patching the comparison functions earns nothing.

Kinds of record:

``close``   a value (tensor, number, or lists/tuples/dicts of them) close to the solution's:
            ``|got - want| <= atol + rtol * |want|`` elementwise, same shape; ``dtypes`` lists
            the dtypes a tensor may have.
``equal``   exactly the solution's value (ints, strings, bools, token ids...).
``same``    close to the student's *own* record ``like`` (a property such as "the same seed
            gives the same output", where the reference's values need not be matched).
``differs`` not close to the student's own record ``like`` (e.g. another seed gives another
            output).
``raises``  calling ``fn()`` raised ``exc`` (or a subclass) whose message holds every one of
            ``words``; with ``exc=None``, calling it raised nothing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

MIME = "application/vnd.dpolab.records+json"
ENV = "DPOLAB_RECORDS"  # set to 1 by the grader (fixtures and grading); unset elsewhere
JUDGE_LINE = "from dpolab_grade.pipeline import use_judge; use_judge(c)"
UNJUDGED = (
    "hidden test {test} not graded: this course's hidden tests are judged by the grader, outside "
    "the kernel, and no judge is configured in this nbgrader run. Grade with `dpolab-grade`, or add "
    "this line to nbgrader_config.py: " + JUDGE_LINE + " (see the DPO Lab's docs/instructors.md)"
)


# ------------------------------------------------------------------------------ encoding
def encode(value: Any) -> Any:
    """A JSON-safe copy of ``value``: tensors become ``{"tensor": dtype, "shape", "data"}``."""
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu")
        data = t.double().reshape(-1).tolist() if t.is_floating_point() else t.reshape(-1).tolist()
        return {
            "tensor": str(t.dtype).replace("torch.", ""),
            "shape": list(t.shape),
            "data": [_num(x) for x in data],
        }
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, dict):
        return {"dict": [[str(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list": [encode(v) for v in value]}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return encode(value.item())
    return {"repr": repr(value)[:200]}


def _num(x: float | int) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


# ------------------------------------------------------------------------------ the probe
class Probe:
    """What one hidden test observed; :meth:`send` hands it to the grader."""

    def __init__(self, test: str):
        self.test = test
        self.records: list[dict[str, Any]] = []

    def _add(self, key: str, kind: str, value: Any, **spec: Any) -> None:
        self.records.append({"key": str(key), "kind": kind, "value": value, "spec": spec})

    def close(
        self,
        key: str,
        got: Any,
        *,
        rtol: float = 1e-5,
        atol: float = 1e-8,
        dtypes: Iterable[str] | None = None,
        equal_nan: bool = False,
        msg: str = "",
    ) -> None:
        self._add(key, "close", encode(got), rtol=rtol, atol=atol, equal_nan=equal_nan, msg=msg,
                  dtypes=None if dtypes is None else [str(d).replace("torch.", "") for d in dtypes])  # fmt: skip

    def equal(self, key: str, got: Any, *, msg: str = "") -> None:
        self._add(key, "equal", encode(got), msg=msg)

    def same(
        self, key: str, got: Any, like: str, *, rtol: float = 1e-5, atol: float = 1e-8, msg: str = ""
    ) -> None:
        self._add(key, "same", encode(got), like=like, rtol=rtol, atol=atol, msg=msg)

    def differs(
        self, key: str, got: Any, like: str, *, rtol: float = 1e-5, atol: float = 1e-8, msg: str = ""
    ) -> None:
        self._add(key, "differs", encode(got), like=like, rtol=rtol, atol=atol, msg=msg)

    def raises(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        exc: type[BaseException] | None = ValueError,
        words: Iterable[str] = (),
        msg: str = "",
    ) -> None:
        try:
            fn()
        except Exception as err:  # what was raised is the observation
            value = {"raised": [c.__name__ for c in type(err).__mro__], "message": str(err)[:2000]}
        else:
            value = {"raised": None, "message": ""}
        self._add(key, "raises", value, exc=None if exc is None else exc.__name__, words=list(words), msg=msg)

    def payload(self) -> dict[str, Any]:
        return {"test": self.test, "records": self.records}

    def send(self) -> None:
        """Display the records (only when the grader asked for them: ``DPOLAB_RECORDS=1``).

        Fail closed: while nbgrader autogrades (``NBGRADER_EXECUTION=autograde``) without asking
        for records, no judge will read them, and a hidden test that decided nothing would keep
        its points. So the cell fails, saying how to grade this course.
        """
        if os.environ.get(ENV) != "1":
            if os.environ.get("NBGRADER_EXECUTION") == "autograde":
                raise AssertionError(UNJUDGED.format(test=self.test))
            return
        sink = _SINK.get("list")
        if sink is not None:  # tests of the hidden tests run cells without a kernel
            sink.append(json.loads(json.dumps(self.payload())))
            return
        from IPython.display import display

        display(
            {MIME: self.payload(), "text/plain": f"[{len(self.records)} records of {self.test}]"}, raw=True
        )


_SINK: dict[str, list | None] = {"list": None}


def collect_into(sink: list | None) -> None:
    """Send records to ``sink`` (a list) instead of the cell's output; ``None`` restores it."""
    _SINK["list"] = sink
