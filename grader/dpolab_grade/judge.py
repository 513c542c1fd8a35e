"""The judge: a student's records against the fixtures, outside the kernel.

The hidden tests record what the student's code returned (:class:`dpolab.records.Probe`, in the
kernel); the grader makes the *fixtures* by running the same hidden tests on the solutions, and
:func:`failed_promises` compares the two once the student's kernel has returned. Every parameter of
the comparison (tolerances, the exception expected, the words its message must hold, the message
shown) comes from the fixture, never from the student's record: the kernel only supplies observed
values. See :mod:`dpolab.records` for the kinds of record (``close``, ``equal``, ``same``,
``differs``, ``raises``).
"""

from __future__ import annotations

import math
from typing import Any

# What the hidden tests send and the variable that asks for it: dpolab.records's MIME and ENV
# (tests/test_grade_cli.py checks that they agree). Not imported from there: ``import dpolab``
# imports torch, 2 s of CPU in every worker that judges and never runs a tensor.
MIME = "application/vnd.dpolab.records+json"
ENV = "DPOLAB_RECORDS"


def _float(x: Any) -> float:
    return float(x)  # numbers, and the strings "nan", "inf", "-inf" that dpolab.records wrote


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
