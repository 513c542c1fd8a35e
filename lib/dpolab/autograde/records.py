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
JUDGE_LINE = "from dpolab.autograde.pipeline import use_judge; use_judge(c)"
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


def _float(x: Any) -> float:
    return float(x)  # numbers, and the strings "nan", "inf", "-inf" that _num wrote


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


# ------------------------------------------------------------------------------ judging
class Mismatch(Exception):
    pass


def _close(got: Any, want: Any, rtol: float, atol: float, equal_nan: bool, dtypes, path: str = "") -> None:
    """Raise :class:`Mismatch` saying where ``got`` and ``want`` differ."""
    where = f" at {path}" if path else ""
    if isinstance(want, dict) and "tensor" in want:
        if not (isinstance(got, dict) and "tensor" in got):
            raise Mismatch(f"expected a tensor{where}, got {_show(got)}")
        if dtypes is not None and got["tensor"] not in dtypes:
            raise Mismatch(f"dtype {got['tensor']}{where}, expected one of {', '.join(dtypes)}")
        if list(got["shape"]) != list(want["shape"]):
            raise Mismatch(f"shape {tuple(got['shape'])}{where}, expected {tuple(want['shape'])}")
        g, w = got["data"], want["data"]
        if len(g) != len(w):
            raise Mismatch(f"{len(g)} values{where}, expected {len(w)}")
        for i, (a, b) in enumerate(zip(g, w, strict=True)):
            if not _num_close(a, b, rtol, atol, equal_nan):
                raise Mismatch(
                    f"value {_show_num(a)} at flat index {i}{where}, expected {_show_num(b)}"
                    + (f" (got {_show(got)}, expected {_show(want)})" if len(w) <= 8 else "")
                )
        return
    if isinstance(want, dict) and "list" in want:
        if not (isinstance(got, dict) and "list" in got) or len(got["list"]) != len(want["list"]):
            raise Mismatch(f"expected {len(want['list'])} items{where}, got {_show(got)}")
        for i, (a, b) in enumerate(zip(got["list"], want["list"], strict=True)):
            _close(a, b, rtol, atol, equal_nan, dtypes, f"{path}[{i}]")
        return
    if isinstance(want, dict) and "dict" in want:
        if not (isinstance(got, dict) and "dict" in got):
            raise Mismatch(f"expected a dict{where}, got {_show(got)}")
        gk, wk = [k for k, _ in got["dict"]], [k for k, _ in want["dict"]]
        if sorted(gk) != sorted(wk):
            raise Mismatch(f"keys {gk}{where}, expected {wk}")
        gd = dict((k, v) for k, v in got["dict"])
        for k, b in want["dict"]:
            _close(gd[k], b, rtol, atol, equal_nan, dtypes, f"{path}[{k!r}]")
        return
    if (
        isinstance(want, bool)
        or want is None
        or (isinstance(want, str) and want not in ("nan", "inf", "-inf"))
    ):
        if got != want or type(got) is not type(want):
            raise Mismatch(f"{_show(got)}{where}, expected {_show(want)}")
        return
    if isinstance(want, (int, float, str)):  # a number (or a non-finite one)
        if isinstance(got, bool) or not isinstance(got, (int, float, str)):
            raise Mismatch(f"{_show(got)}{where}, expected the number {_show_num(want)}")
        try:
            ok = _num_close(got, want, rtol, atol, equal_nan)
        except ValueError:
            ok = False
        if not ok:
            raise Mismatch(f"{_show_num(got)}{where}, expected {_show_num(want)}")
        return
    if got != want:
        raise Mismatch(f"{_show(got)}{where}, expected {_show(want)}")


def _num_close(a: Any, b: Any, rtol: float, atol: float, equal_nan: bool) -> bool:
    a, b = _float(a), _float(b)
    if math.isnan(a) or math.isnan(b):
        return equal_nan and math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _show_num(x: Any) -> str:
    try:
        return f"{_float(x):.6g}"
    except (TypeError, ValueError):
        return _show(x)


def _show(value: Any) -> str:
    if isinstance(value, dict) and "tensor" in value:
        data = value["data"]
        shown = ", ".join(_show_num(x) for x in data[:8]) + (", ..." if len(data) > 8 else "")
        return f"tensor(shape {tuple(value['shape'])}, {value['tensor']}: [{shown}])"
    if isinstance(value, dict) and "list" in value:
        return (
            "["
            + ", ".join(_show(v) for v in value["list"][:8])
            + (", ..." if len(value["list"]) > 8 else "")
            + "]"
        )
    if isinstance(value, dict) and "dict" in value:
        return "{" + ", ".join(f"{k!r}: {_show(v)}" for k, v in value["dict"][:8]) + "}"
    if isinstance(value, dict) and "repr" in value:
        return str(value["repr"])
    return repr(value)[:200]


def _check(rec: dict, want: dict, own: dict[str, dict]) -> None:
    spec = want["spec"]  # the fixture's: never the student's
    kind, got = want["kind"], rec.get("value")
    if rec.get("kind") != kind:
        raise Mismatch("the hidden test did not record this check")
    if kind == "close":
        _close(got, want["value"], spec["rtol"], spec["atol"], spec["equal_nan"], spec["dtypes"])
    elif kind == "equal":
        _close(got, want["value"], 0.0, 0.0, False, None)
    elif kind in ("same", "differs"):
        other = own.get(spec["like"])
        if other is None:
            raise Mismatch(f"no record {spec['like']!r} to compare with")
        try:
            _close(got, other.get("value"), spec["rtol"], spec["atol"], False, None)
            agree = True
        except Mismatch as err:
            agree, why = False, str(err)
        if kind == "same" and not agree:
            raise Mismatch(f"differs from {spec['like']!r}: {why}")
        if kind == "differs" and agree:
            raise Mismatch(f"is the same as {spec['like']!r}")
    elif kind == "raises":
        raised = got.get("raised") if isinstance(got, dict) else None
        message = got.get("message", "") if isinstance(got, dict) else ""
        if spec["exc"] is None:
            if raised:
                raise Mismatch(f"raised {raised[0]}: {str(message)[:300]}")
            return
        if not raised:
            raise Mismatch(f"no {spec['exc']} was raised")
        if spec["exc"] not in raised:
            raise Mismatch(f"raised {raised[0]} ({str(message)[:200]}), expected a {spec['exc']}")
        missing = [w for w in spec["words"] if w not in str(message)]
        if missing:
            raise Mismatch(
                f"the {spec['exc']} message {str(message)[:200]!r} does not mention {', '.join(map(repr, missing))}"
            )
    else:
        raise Mismatch(f"unknown kind of record {kind!r}")


def judge(got: list[dict] | None, want: list[dict]) -> list[str]:
    """Compare a cell's records (``got``, from the student's kernel) with its fixtures.

    ``got`` and ``want`` are lists of :meth:`Probe.payload` (one per ``send``). Returns the
    failures, one line each (empty: the cell passes). Records missing, extra, duplicated or
    out of order fail: the fixture fixes which observations the hidden test makes.
    """
    return [describe(f) for f in failed_promises(got, want)]


def describe(failure: dict[str, str]) -> str:
    """One failure of :func:`failed_promises` as a line: the promise, which check, what differed."""
    if not failure["key"]:
        return failure["promise"]
    return f"{failure['promise']} [{failure['test']}: {failure['key']}]: {failure['detail']}"


def failed_promises(got: list[dict] | None, want: list[dict]) -> list[dict[str, str]]:
    """:func:`judge`'s failures as ``{"promise", "test", "key", "detail"}``: the promise is the
    fixture's message (what the spec promised), the same for every student who broke it, so a
    class report can count them."""

    def whole(why: str, test: str = "") -> list[dict[str, str]]:
        return [{"promise": why, "test": test, "key": "", "detail": ""}]

    if not got:
        return whole("the hidden test sent no results (it stopped early, or its output was removed)")
    if len(got) != len(want):
        return whole(f"the hidden tests sent {len(got)} sets of results, expected {len(want)}")
    failures = []
    for g, w in zip(got, want, strict=True):
        if not isinstance(g, dict) or g.get("test") != w["test"] or not isinstance(g.get("records"), list):
            return whole(f"unexpected results in place of those of {w['test']}", w["test"])
        grecs, wrecs = g["records"], w["records"]
        if [r.get("key") if isinstance(r, dict) else None for r in grecs] != [r["key"] for r in wrecs]:
            return whole(
                f"{w['test']}: the results do not match the hidden test's checks (missing, extra or reordered)",
                w["test"],
            )
        own = {r["key"]: r for r in grecs}
        for rec, fixture in zip(grecs, wrecs, strict=True):
            try:
                _check(rec, fixture, own)
            except Mismatch as err:
                promise = fixture["spec"].get("msg") or fixture["key"]
                failures.append(
                    {"promise": promise, "test": w["test"], "key": fixture["key"], "detail": str(err)}
                )
    return failures


def cell_records(outputs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split a cell's outputs into (records, other outputs)."""
    records, others = [], []
    for out in outputs:
        data = out.get("data", {}) if out.get("output_type") in ("display_data", "execute_result") else {}
        if MIME in data:
            records.append(data[MIME])
        else:
            others.append(out)
    return records, others
