"""The visible tests of notebook 01 name the mistake that was made.

Each case below edits the solution's ``DPOLoss`` into a common slip, runs the set-up cell, that
answer and one visible test cell *of the student release* (what a student runs, without the hidden
tests), and checks that the cell stops with an ``AssertionError`` whose message carries the hint
written for that slip: a hint that never fires on the mistake it names is no help.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "lab_3_1_5_dpo"
NB1 = "01_dpo_loss"
ANSWER = "dpo_loss_answer"
LOGP, LOSS, LS, METRICS = "test_log_probs", "test_dpo_loss", "test_label_smoothing", "test_metrics"


@pytest.fixture(autouse=True)
def _cpu_one_thread(monkeypatch):
    monkeypatch.setenv("DPOLAB_DEVICE", "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


@functools.cache
def _sources() -> tuple[str, str, dict[str, str]]:
    """The solution's set-up cell and answer cell, and the release's visible test cells."""
    solution = nbformat.read(ROOT / "solutions" / ASSIGNMENT / f"{NB1}.ipynb", as_version=4)
    code = [c for c in solution.cells if c.cell_type == "code"]
    (answer,) = (c.source for c in code if _grade_id(c) == ANSWER)
    release = nbformat.read(ROOT / "notebooks" / ASSIGNMENT / f"{NB1}.ipynb", as_version=4)
    tests = {
        _grade_id(c): c.source
        for c in release.cells
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
    }
    assert not any("BEGIN HIDDEN TESTS" in s for s in tests.values()), "the release shows hidden tests"
    return code[0].source, answer, tests


def run_visible(test_id: str, edits: tuple[tuple[str, str], ...] = ()) -> BaseException | None:
    """Run the set-up, the edited answer and the visible test cell ``test_id``; what it raised."""
    setup, answer, tests = _sources()
    for old, new in edits:
        assert answer.count(old) == 1, f"the answer no longer contains exactly one {old!r}"
        answer = answer.replace(old, new)
    ns: dict = {"__name__": "__main__"}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(setup, "<setup>", "exec"), ns)
        exec(compile(answer, f"<{ANSWER}>", "exec"), ns)
        try:
            exec(compile(tests[test_id], f"<{test_id}>", "exec"), ns)
        except Exception as err:  # the cell fails, as in the notebook
            return err
    return None


SHIFT = "        logits = logits[:, :-1]\n        targets = labels[:, 1:]\n        mask = loss_mask[:, 1:].bool()\n"
SUM = "return torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(dim=-1)"
UPCAST = "logits = logits.to(torch.promote_types(logits.dtype, torch.float32))"
SMOOTH = "losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)"
MARGIN = "logits = chosen_rewards - rejected_rewards  # beta * h"
# the attention mask, built from the loss mask: 1 on the prompt and the response, 0 on the padding
ATTENTION = "mask = (loss_mask.flip(-1).cumsum(-1).flip(-1) > 0)[:, 1:]"

SLIPS = [
    # ---- Test 1a: each value the slip gives on the test's sequence has its own message
    (LOGP, "mask-not-shifted", [("mask = loss_mask[:, 1:].bool()", "mask = loss_mask[:, :-1].bool()")],
     "the loss mask was not shifted"),
    (LOGP, "no-shift", [(SHIFT, "        targets = labels\n        mask = loss_mask.bool()\n")], "no shift"),
    (LOGP, "labels-not-shifted", [("targets = labels[:, 1:]", "targets = labels[:, :-1]")],
     "the labels were not shifted"),
    (LOGP, "attention-mask", [("mask = loss_mask[:, 1:].bool()", ATTENTION)], "the prompt token was counted"),
    (LOGP, "mask-ignored", [(SUM, "return token_logps.sum(dim=-1)")], "every token was counted"),
    (LOGP, "mean-over-response-tokens", [(SUM, SUM + " / mask.sum(dim=-1).clamp(min=1)")],
     "the mean over the response tokens"),
    (LOGP, "mean-over-positions", [(SUM, SUM.replace(".sum(dim=-1)", ".mean(dim=-1)"))],
     "the mean over all positions"),
    (LOGP, "empty-row-nan", [(SUM, "n = mask.sum(dim=-1)\n        return (token_logps * mask).sum(dim=-1) / n * n")],
     "no response tokens should give 0"),
    (LOGP, "log-of-softmax", [("F.log_softmax(logits, dim=-1)", "torch.log(torch.softmax(logits, dim=-1))")],
     "use log_softmax"),
    (LOGP, "no-upcast", [(UPCAST, "pass")], "must be upcast"),
    (LOGP, "detached", [(SUM, SUM + ".detach()")], "must stay differentiable"),
    (LOGP, "keepdim", [(SUM, SUM.replace("sum(dim=-1)", "sum(dim=-1, keepdim=True)"))], "shape (1,)"),
    # ---- Test 1b
    (LOSS, "beta-missing", [("self.beta * (policy_chosen", "(policy_chosen"), ("self.beta * (policy_rejected", "(policy_rejected")],
     "beta is missing"),
    (LOSS, "margin-sign-flipped", [(MARGIN, "logits = rejected_rewards - chosen_rewards")], "the sign is flipped"),
    (LOSS, "batch-sum", [("loss = losses.mean()", "loss = losses.sum()")], "take the mean"),
    (LOSS, "loss-not-reduced", [("loss = losses.mean()", "loss = losses")], "the loss must be a scalar"),
    (LOSS, "metrics-first", [("        return loss, metrics\n", "        return metrics, loss\n")],
     "forward must return (loss, metrics)"),
    (LOSS, "log-of-sigmoid", [(SMOOTH, "losses = -(1 - eps) * torch.log(torch.sigmoid(logits)) - eps * torch.log(torch.sigmoid(-logits))")],
     "use F.logsigmoid"),
    (LOSS, "margin-clamped", [(MARGIN, "logits = (chosen_rewards - rejected_rewards).clamp(-50, 50)")], "no clamping"),
    # ---- Test 1c
    (LS, "smoothing-ignored", [("eps = self.label_smoothing", "eps = 0.0")], "label_smoothing is ignored"),
    (LS, "smoothing-weights-swapped", [(SMOOTH, "losses = -eps * F.logsigmoid(logits) - (1 - eps) * F.logsigmoid(-logits)")],
     "the weights are swapped"),
    (LS, "smoothing-term-log-of-sigmoid", [(SMOOTH, "losses = -(1 - eps) * F.logsigmoid(logits) - eps * torch.log(torch.sigmoid(-logits))")],
     "use F.logsigmoid for both terms"),
    (LS, "smoothing-term-detached", [(SMOOTH, SMOOTH.replace("F.logsigmoid(-logits)", "F.logsigmoid(-logits).detach()"))], "is not that of the formula"),
    # ---- Test 1e
    (METRICS, "accuracy-counts-ties", [("(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)")],
     "a tie is not a win"),
    (METRICS, "metrics-not-detached", [("        with torch.no_grad():\n            metrics = {", "        if True:\n            metrics = {")],
     "must be detached"),
]  # fmt: skip


@pytest.mark.parametrize("test_id", [LOGP, LOSS, LS, "test_reference_free", METRICS])
def test_the_solution_passes_the_visible_tests(test_id):
    err = run_visible(test_id)
    assert err is None, f"{test_id}: the solution fails its visible test: {err!r}"


@pytest.mark.parametrize(("test_id", "name", "edits", "hint"), SLIPS, ids=[f"{s[0]}-{s[1]}" for s in SLIPS])
def test_the_visible_test_names_the_slip(test_id, name, edits, hint):
    err = run_visible(test_id, tuple(edits))
    assert isinstance(err, AssertionError), (
        f"{name}: expected the visible {test_id} to fail an assert, got {err!r}"
    )
    assert hint in str(err), f"{name}: expected the hint {hint!r}, got: {err}"
