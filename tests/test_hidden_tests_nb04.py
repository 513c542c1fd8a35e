"""Notebook 04's grade cells catch the mistakes students make in Exercise 4, and only those.

The same method as ``test_hidden_tests_catch_mistakes.py`` (whose machinery this module
reuses): the solution notebook's first code cell, answer cells and grade cells run in one
namespace, each answer cell edited by one typical mistake; the set of grade cells that fail
must be exactly the expected one. Every promise of the exercise's spec is listed, with the
mutations that break it, in ``tests/promises/04_train_with_dpo.md``; a test below checks that
the list and these cases agree.

Partial credit: the step's grade cells run the student's ``dpo_train_step`` on a fake causal LM
(``dpolab.grading.ContextFreeLM``) with a ``concatenated_logps`` known to be right for that model
plugged in (``dpolab.grading.with_correct_concatenated_logps``), so a bug in Exercise 4a costs
Test 4a only.

The hidden tests record what the student's code returned and the grader judges the records
outside the kernel (``dpolab.records``, ``dpolab_grade.judge``); ``failing_cells`` does the same. So answers
that patch the comparison functions (``torch.allclose``, ``math.isclose``,
``torch.testing.assert_close``, ``abs``) or the guard (``run_own_code``) earn nothing unless
they are right: see ``PATCHES``. ``hidden_verdicts`` runs the grade cells with their visible
asserts switched off, to check that the records alone catch every mistake.
"""

from __future__ import annotations

import builtins
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import dpolab.grading
from test_hidden_tests_catch_mistakes import (
    Block,
    Case,
    body,
    case,
    failing_cells,
    hidden_only,
    load,
    mutate,
    report,
)

NB4 = "04_train_with_dpo"
CONCAT, STEP = "concatenated_logps_answer", "dpo_train_step_answer"
T_CONCAT, T_STEP, T_METRICS = "test_concatenated_logps", "test_dpo_train_step", "test_step_metrics"
LOSS_CELLS = {T_STEP, T_METRICS}  # a wrong loss moves the parameters wrongly and reports a wrong loss
PROMISES = Path(__file__).resolve().parent / "promises" / f"{NB4}.md"


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("DPOLAB_DEVICE", "cpu")


SHIFT = """\
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:].bool()
"""
SPLIT = "return logps[:n], logps[n:]"
STACK = "input_ids = torch.cat([pad(chosen.input_ids), pad(rejected.input_ids)])  # (2B, T)"
MASKS = "loss_mask = torch.cat([pad(chosen.loss_mask), pad(rejected.loss_mask)])"
SUM = "logps = torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(dim=-1)"
REWARDS = """\
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps.detach())
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps.detach())
"""
BACKWARD_STEP = "    loss.backward()\n    optimizer.step()\n"
LOSS = "loss = -F.logsigmoid(margins).mean()"

TWO_FORWARDS = body("""
    def side_logps(side):
        logits = model(side.input_ids)
        logits = logits[:, :-1].float()
        token_logps = F.log_softmax(logits, dim=-1).gather(-1, side.input_ids[:, 1:, None]).squeeze(-1)
        return (token_logps * side.loss_mask[:, 1:]).sum(-1)

    return side_logps(batch.chosen), side_logps(batch.rejected)
""", 4)  # fmt: skip

STEP_TWO_FORWARDS = """\
    chosen_logps, _ = concatenated_logps(policy, dpolab.PreferenceBatch(batch.chosen, batch.chosen))
    _, rejected_logps = concatenated_logps(policy, dpolab.PreferenceBatch(batch.rejected, batch.rejected))
"""

# every metric left a tensor (the loss one still holds the graph)
METRIC_LINES = [
    (f'"{key}": {expr}.item(),', f'"{key}": {expr},')
    for key, expr in [
        ("loss", "loss"),
        ("accuracy", "(margins > 0).float().mean()"),
        ("chosen_reward", "chosen_rewards.mean()"),
        ("rejected_reward", "rejected_rewards.mean()"),
        ("reward_margin", "margins.mean()"),
        ("chosen_log_prob", "chosen_logps.mean()"),
        ("rejected_log_prob", "rejected_logps.mean()"),
    ]
]

# ---------------------------------------------------------------- mistakes
MISTAKES = [
    # ---- 4a concatenated_logps
    case(NB4, "two-forwards", CONCAT, Block(0), TWO_FORWARDS, {T_CONCAT}),
    case(NB4, "split-swapped", CONCAT, SPLIT, "return logps[n:], logps[:n]", {T_CONCAT}),
    case(NB4, "rows-interleaved", CONCAT, STACK,
         "input_ids = torch.stack([pad(chosen.input_ids), pad(rejected.input_ids)], 1).flatten(0, 1)", {T_CONCAT},
         edits=[(MASKS, "loss_mask = torch.stack([pad(chosen.loss_mask), pad(rejected.loss_mask)], 1).flatten(0, 1)")]),
    case(NB4, "returns-the-stack", CONCAT, SPLIT, "return logps", {T_CONCAT}),
    case(NB4, "left-padding", CONCAT, "return F.pad(t, (0, width - t.shape[1]))",
         "return F.pad(t, (width - t.shape[1], 0))", {T_CONCAT}),
    case(NB4, "no-shift", CONCAT, SHIFT, body("""
        logits = logits.float()
        targets = input_ids
        mask = loss_mask.bool()
    """, 4), {T_CONCAT}),
    case(NB4, "attention-mask", CONCAT, MASKS,
         "loss_mask = torch.cat([pad(chosen.attention_mask), pad(rejected.attention_mask)])", {T_CONCAT}),
    case(NB4, "mean-over-tokens", CONCAT, SUM, SUM + " / mask.sum(dim=-1).clamp(min=1)", {T_CONCAT}),
    case(NB4, "forward-without-grad", CONCAT, "logits = model(input_ids)  # the one forward",
         "with torch.no_grad():\n        logits = model(input_ids)", {T_CONCAT}),
    case(NB4, "logps-detached", CONCAT, SPLIT, "return logps[:n].detach(), logps[n:].detach()", {T_CONCAT}),
    case(NB4, "calls-sequence-logps", CONCAT, Block(0), body("""
        chosen, rejected = batch.chosen, batch.rejected
        width = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1])
        input_ids = torch.cat([F.pad(s.input_ids, (0, width - s.input_ids.shape[1])) for s in (chosen, rejected)])
        loss_mask = torch.cat([F.pad(s.loss_mask, (0, width - s.loss_mask.shape[1])) for s in (chosen, rejected)])
        logps = dpolab.sequence_logps(model(input_ids), input_ids, loss_mask)
        return logps.chunk(2)
    """, 4), {T_CONCAT}),
    # ---- 4b dpo_train_step
    case(NB4, "step-two-forwards", STEP, "    chosen_logps, rejected_logps = concatenated_logps(policy, batch)\n",
         STEP_TWO_FORWARDS, {T_STEP}),
    case(NB4, "no-zero-grad", STEP, "    optimizer.zero_grad()\n", "", {T_STEP}),
    case(NB4, "zero-grad-after-step", STEP, "    optimizer.zero_grad()\n", "",
         {T_STEP}, edits=[(BACKWARD_STEP, BACKWARD_STEP + "    optimizer.zero_grad()\n")]),
    case(NB4, "step-before-backward", STEP, BACKWARD_STEP, "    optimizer.step()\n    loss.backward()\n", {T_STEP}),
    case(NB4, "no-step", STEP, BACKWARD_STEP, "    loss.backward()\n", {T_STEP}),
    case(NB4, "reference-not-detached", STEP, REWARDS, REWARDS.replace(".detach()", ""), {T_STEP}),
    case(NB4, "log-of-sigmoid", STEP, LOSS, "loss = -torch.log(torch.sigmoid(margins)).mean()", {T_STEP}),
    case(NB4, "batch-sum", STEP, LOSS, "loss = -F.logsigmoid(margins).sum()", LOSS_CELLS),
    case(NB4, "beta-missing", STEP, REWARDS, REWARDS.replace("beta * ", ""), LOSS_CELLS),
    case(NB4, "margin-sign-flipped", STEP, LOSS, "loss = -F.logsigmoid(-margins).mean()", LOSS_CELLS),
    case(NB4, "metrics-tensors-with-graph", STEP, *METRIC_LINES[0], {T_METRICS}, edits=METRIC_LINES[1:]),
    case(NB4, "metrics-detached-tensors", STEP, '"loss": loss.item(),', '"loss": loss.detach(),', {T_METRICS}),
    case(NB4, "metric-key-renamed", STEP, '"accuracy":', '"reward_accuracy":', {T_METRICS}),
    case(NB4, "accuracy-counts-ties", STEP, "(margins > 0)", "(margins >= 0)", {T_METRICS}),
    case(NB4, "metric-rewards-without-beta", STEP, '"chosen_reward": chosen_rewards.mean().item(),',
         '"chosen_reward": (chosen_rewards / beta).mean().item(),', {T_METRICS}),
    case(NB4, "metric-margin-of-logps", STEP, '"reward_margin": margins.mean().item(),',
         '"reward_margin": (chosen_logps - rejected_logps).mean().item(),', {T_METRICS}),
    case(NB4, "step-calls-dpo-loss", STEP, LOSS,
         "loss = dpolab.dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)[0].mean()",
         LOSS_CELLS),
]  # fmt: skip


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistake_is_caught_by_its_own_cells(mistake: Case):
    failures = mistake.run()
    assert set(failures) == mistake.fails, (
        f"{mistake.name}: expected exactly {sorted(mistake.fails)} to fail, got:\n{report(failures)}"
    )


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistake_is_caught_by_the_hidden_records_alone(mistake: Case, monkeypatch):
    """What the visible asserts catch, the records catch too (a student can switch the asserts off)."""
    edited = mutate(mistake.notebook, mistake.answer, (mistake.old, mistake.new), *mistake.edits)
    stripped = hidden_only(load(NB4))
    harness = sys.modules[failing_cells.__module__]  # failing_cells reads the notebook through its load()
    monkeypatch.setattr(harness, "load", lambda name, _load=load: stripped if name == NB4 else _load(name))
    failures = failing_cells(mistake.notebook, edited)
    assert set(failures) == mistake.fails, (
        f"{mistake.name}: expected exactly {sorted(mistake.fails)} to fail, got:\n{report(failures)}"
    )


# ---------------------------------------------------------------- correct alternatives
ALTERNATIVES = [
    case(NB4, "concat-zeros-then-fill", CONCAT, Block(0), body("""
        chosen, rejected = batch.chosen, batch.rejected
        b = chosen.input_ids.shape[0]
        width = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1])
        input_ids = chosen.input_ids.new_zeros(2 * b, width)
        loss_mask = chosen.loss_mask.new_zeros(2 * b, width)
        for i, side in enumerate((chosen, rejected)):
            t = side.input_ids.shape[1]
            input_ids[i * b : (i + 1) * b, :t] = side.input_ids
            loss_mask[i * b : (i + 1) * b, :t] = side.loss_mask
        logits = model(input_ids).float()
        token_logps = -F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")
        logps = (token_logps * loss_mask[:, 1:]).sum(-1)
        return logps[:b], logps[b:]
    """, 4)),
    case(NB4, "concat-pad-sequence-logsumexp", CONCAT, Block(0), body("""
        from torch.nn.utils.rnn import pad_sequence

        rows = list(batch.chosen.input_ids) + list(batch.rejected.input_ids)
        masks = list(batch.chosen.loss_mask) + list(batch.rejected.loss_mask)
        input_ids = pad_sequence(rows, batch_first=True)
        loss_mask = pad_sequence(masks, batch_first=True)
        logits = model(input_ids)[:, :-1].double()
        picked = logits.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        token_logps = picked - logits.logsumexp(-1)
        logps = token_logps.masked_fill(loss_mask[:, 1:] == 0, 0.0).sum(1)
        chosen_logps, rejected_logps = logps.chunk(2)
        return chosen_logps.float(), rejected_logps.float()
    """, 4)),
    case(NB4, "concat-passes-attention-mask", CONCAT, "logits = model(input_ids)  # the one forward", body("""
        attention_mask = torch.cat([pad(chosen.attention_mask), pad(rejected.attention_mask)])
        logits = model(input_ids, attention_mask=attention_mask)
    """, 4).strip()),
    case(NB4, "concat-pad-wider-than-needed", CONCAT,
         "width = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1])",
         "width = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1]) + 3"),
    case(NB4, "concat-loop-over-rows-and-positions", CONCAT, Block(0), body("""
        chosen, rejected = batch.chosen, batch.rejected
        b = chosen.input_ids.shape[0]
        width = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1])
        input_ids = torch.cat([F.pad(s.input_ids, (0, width - s.input_ids.shape[1])) for s in (chosen, rejected)])
        loss_mask = torch.cat([F.pad(s.loss_mask, (0, width - s.loss_mask.shape[1])) for s in (chosen, rejected)])
        log_probs = F.log_softmax(model(input_ids).float(), dim=-1)  # the one forward
        totals = []
        for i in range(2 * b):
            total = log_probs.new_zeros(())
            for t in range(width - 1):
                if loss_mask[i, t + 1]:  # logits at t score token t + 1
                    total = total + log_probs[i, t, input_ids[i, t + 1]]
            totals.append(total)
        logps = torch.stack(totals)
        return logps[:b], logps[b:]
    """, 4)),
    case(NB4, "concat-cross-entropy-ignore-index", CONCAT, Block(0), body("""
        sides = (batch.chosen, batch.rejected)
        width = max(s.input_ids.shape[1] for s in sides)
        input_ids = torch.cat([F.pad(s.input_ids, (0, width - s.input_ids.shape[1])) for s in sides])
        loss_mask = torch.cat([F.pad(s.loss_mask, (0, width - s.loss_mask.shape[1])) for s in sides])
        logits = model(input_ids)
        labels = input_ids[:, 1:].masked_fill(loss_mask[:, 1:] == 0, -100)  # -100: not scored
        nll = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), reduction="none")
        logps = -nll.view(labels.shape).sum(-1)
        n = batch.chosen.input_ids.shape[0]
        return logps[:n], logps[n:]
    """, 4)),
    case(NB4, "concat-one-hot-split", CONCAT, Block(0), body("""
        n = len(batch.chosen.input_ids)
        width = max(batch.chosen.input_ids.shape[1], batch.rejected.input_ids.shape[1])
        ids, masks = [], []
        for side in (batch.chosen, batch.rejected):
            extra = width - side.input_ids.shape[1]
            ids.append(F.pad(side.input_ids, (0, extra)))
            masks.append(F.pad(side.loss_mask, (0, extra)))
        input_ids, loss_mask = torch.cat(ids), torch.cat(masks)
        log_probs = model(input_ids)[:, :-1].float().log_softmax(-1)
        picked = (log_probs * F.one_hot(input_ids[:, 1:], log_probs.shape[-1])).sum(-1)
        chosen_logps, rejected_logps = (picked * loss_mask[:, 1:]).sum(-1).split(n)
        return chosen_logps, rejected_logps
    """, 4)),
    case(NB4, "step-policy-zero-grad", STEP, "optimizer.zero_grad()", "policy.zero_grad()"),
    case(NB4, "step-sum-over-batch-size-float", STEP, Block(0), body("""
        optimizer.zero_grad()
        chosen_logps, rejected_logps = concatenated_logps(policy, batch)
        chosen_rewards = beta * (chosen_logps - ref_chosen_logps.detach())
        rejected_rewards = beta * (rejected_logps - ref_rejected_logps.detach())
        margins = chosen_rewards - rejected_rewards
        loss = -F.logsigmoid(margins).sum() / margins.numel()
        loss.backward()
        optimizer.step()
        wins = sum(1 for m in margins.tolist() if m > 0)
        return {
            "loss": float(loss),
            "accuracy": wins / len(margins),
            "chosen_reward": float(chosen_rewards.mean()),
            "rejected_reward": float(rejected_rewards.mean()),
            "reward_margin": float(margins.mean()),
            "chosen_log_prob": float(chosen_logps.mean()),
            "rejected_log_prob": float(rejected_logps.mean()),
        }
    """, 4)),
    case(NB4, "step-grads-to-none-stack-tolist", STEP, Block(0), body("""
        for p in policy.parameters():  # what optimizer.zero_grad() does to the optimiser's parameters
            p.grad = None
        policy_chosen, policy_rejected = concatenated_logps(policy, batch)
        with torch.no_grad():  # constants
            ref_chosen, ref_rejected = ref_chosen_logps.clone(), ref_rejected_logps.clone()
        chosen_rewards = beta * (policy_chosen - ref_chosen)
        rejected_rewards = beta * (policy_rejected - ref_rejected)
        loss = torch.mean(-F.logsigmoid(chosen_rewards - rejected_rewards))
        loss.backward()
        optimizer.step()
        names = ["loss", "accuracy", "chosen_reward", "rejected_reward", "reward_margin", "chosen_log_prob",
                 "rejected_log_prob"]
        values = torch.stack([
            loss,
            (chosen_rewards > rejected_rewards).float().mean(),
            chosen_rewards.mean(),
            rejected_rewards.mean(),
            (chosen_rewards - rejected_rewards).mean(),
            policy_chosen.mean(),
            policy_rejected.mean(),
        ]).detach().tolist()
        return dict(zip(names, values))
    """, 4)),
    case(NB4, "step-loop-over-pairs-item", STEP, Block(0), body("""
        optimizer.zero_grad()
        chosen_logps, rejected_logps = concatenated_logps(policy, batch)
        ref_c, ref_r = ref_chosen_logps.detach(), ref_rejected_logps.detach()
        losses, chosen_rewards, rejected_rewards = [], [], []
        for i in range(len(chosen_logps)):
            chosen_rewards.append(beta * (chosen_logps[i] - ref_c[i]))
            rejected_rewards.append(beta * (rejected_logps[i] - ref_r[i]))
            losses.append(-F.logsigmoid(chosen_rewards[i] - rejected_rewards[i]))
        loss = torch.stack(losses).mean()
        loss.backward()
        optimizer.step()
        n = len(losses)
        return {
            "loss": loss.item(),
            "accuracy": sum((c > r).item() for c, r in zip(chosen_rewards, rejected_rewards)) / n,
            "chosen_reward": sum(c.item() for c in chosen_rewards) / n,
            "rejected_reward": sum(r.item() for r in rejected_rewards) / n,
            "reward_margin": sum((c - r).item() for c, r in zip(chosen_rewards, rejected_rewards)) / n,
            "chosen_log_prob": chosen_logps.mean().item(),
            "rejected_log_prob": rejected_logps.mean().item(),
        }
    """, 4)),
    case(NB4, "step-zero-grad-keep-tensors", STEP, "optimizer.zero_grad()", "optimizer.zero_grad(set_to_none=False)"),
    case(NB4, "step-zero-grad-after-forward", STEP,
         "    optimizer.zero_grad()\n    chosen_logps, rejected_logps = concatenated_logps(policy, batch)\n",
         "    chosen_logps, rejected_logps = concatenated_logps(policy, batch)\n    optimizer.zero_grad()\n"),
    case(NB4, "step-trl-style", STEP, Block(0), body("""
        optimizer.zero_grad()
        policy_chosen, policy_rejected = concatenated_logps(policy, batch)
        with torch.no_grad():  # the reference is a constant
            ref_logratios = ref_chosen_logps - ref_rejected_logps
        logits = beta * ((policy_chosen - policy_rejected) - ref_logratios)
        loss = F.softplus(-logits).mean()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            chosen_rewards = beta * (policy_chosen - ref_chosen_logps)
            rejected_rewards = beta * (policy_rejected - ref_rejected_logps)
            metrics = {
                "loss": loss,
                "accuracy": (chosen_rewards > rejected_rewards).float().mean(),
                "chosen_reward": chosen_rewards.mean(),
                "rejected_reward": rejected_rewards.mean(),
                "reward_margin": (chosen_rewards - rejected_rewards).mean(),
                "chosen_log_prob": policy_chosen.mean(),
                "rejected_log_prob": policy_rejected.mean(),
            }
        return {name: float(value) for name, value in metrics.items()}
    """, 4)),
]  # fmt: skip


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_correct_alternative_passes_every_cell(alternative: Case):
    failures = alternative.run()
    assert not failures, f"{alternative.name}: a correct rewrite fails:\n{report(failures)}"


# ---------------------------------------------------------------- importing the reference
CHEATS = [
    pytest.param(CONCAT, "from dpolab import concatenated_logps", {T_CONCAT}, id="04-import-concatenated_logps"),
    pytest.param(STEP, "from dpolab import dpo_train_step", LOSS_CELLS, id="04-import-dpo_train_step"),
    pytest.param(STEP, "import dpolab\n\n\ndef dpo_train_step(*args, **kwargs):\n    return dpolab.dpo_train_step(*args, **kwargs)\n",
                 LOSS_CELLS, id="04-wrap-dpo_train_step"),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "source", "fails"), CHEATS)
def test_calling_the_reference_scores_nothing(answer, source, fails):
    failures = failing_cells(NB4, {answer: source})
    assert set(failures) == set(fails), f"{source!r} instead of {answer}:\n{report(failures)}"
    assert all("dpolab's reference" in v for v in failures.values()), report(failures)


# ---------------------------------------------------------------- patching the checks
# An answer cell that switches the in-kernel checks off: every comparison passes, abs() is 0 and the
# guard against calling dpolab lets everything through. The records are judged outside the kernel,
# so this earns nothing unless the answer is right.
PATCHES = """\
import builtins
import math

import dpolab.grading
import torch

torch.allclose = lambda *args, **kwargs: True
math.isclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
builtins.abs = lambda x: 0
dpolab.grading.run_own_code = lambda fn, *args, allow=(), **kwargs: fn(*args, **kwargs)

"""
# Answers that do not implement the exercise, but get through the visible tests' asserts once the
# checks are patched: the right shapes, one forward, a graph; metrics with the right keys.
FAKE_CONCAT = """\
def concatenated_logps(model, batch):
    n = batch.chosen.input_ids.shape[0]
    width = max(batch.chosen.input_ids.shape[1], batch.rejected.input_ids.shape[1])
    ids = torch.cat([F.pad(s.input_ids, (0, width - s.input_ids.shape[1])) for s in (batch.chosen, batch.rejected)])
    logps = model(ids).float().mean(dim=(1, 2))
    return logps[:n], logps[n:]
"""
FAKE_STEP = """\
def dpo_train_step(policy, batch, ref_chosen_logps, ref_rejected_logps, optimizer, beta=0.1):
    concatenated_logps(policy, batch)
    keys = ("loss", "accuracy", "chosen_reward", "rejected_reward", "reward_margin", "chosen_log_prob",
            "rejected_log_prob")
    return {key: 0.0 for key in keys}
"""
_PATCHED = [(torch, "allclose"), (math, "isclose"), (torch.testing, "assert_close"), (builtins, "abs"),
            (dpolab.grading, "run_own_code")]  # fmt: skip
_ORIGINALS = [getattr(owner, attr) for owner, attr in _PATCHED]


PATCH_CASES = [
    pytest.param({CONCAT: PATCHES + FAKE_CONCAT}, {T_CONCAT}, id="04-patched-checks-no-concatenated_logps"),
    pytest.param({STEP: PATCHES + FAKE_STEP}, LOSS_CELLS, id="04-patched-checks-no-dpo_train_step"),
    pytest.param({CONCAT: PATCHES + FAKE_CONCAT, STEP: PATCHES + FAKE_STEP}, {T_CONCAT} | LOSS_CELLS,
                 id="04-patched-checks-nothing-implemented"),
    pytest.param({CONCAT: PATCHES + mutate(NB4, CONCAT, (SHIFT, body("""
        logits = logits.float()
        targets = input_ids
        mask = loss_mask.bool()
    """, 4)))[CONCAT]}, {T_CONCAT}, id="04-patched-checks-and-no-shift"),
    pytest.param({STEP: PATCHES + mutate(NB4, STEP, ("    optimizer.zero_grad()\n", ""))[STEP]}, {T_STEP},
                 id="04-patched-checks-and-no-zero-grad"),
    pytest.param({STEP: PATCHES + mutate(NB4, STEP, ("(margins > 0)", "(margins >= 0)"))[STEP]}, {T_METRICS},
                 id="04-patched-checks-and-ties-counted"),
]  # fmt: skip


@pytest.mark.parametrize(("replace", "fails"), PATCH_CASES)
def test_patching_the_checks_earns_nothing(replace, fails):
    failures = failing_cells(NB4, replace)  # run_cells puts back what the answers patched
    assert set(failures) == set(fails), report(failures)
    assert [getattr(owner, attr) for owner, attr in _PATCHED] == _ORIGINALS, "the patches leaked out"
    if all(FAKE_CONCAT in v or FAKE_STEP in v for v in replace.values()):
        # the fakes get through every in-kernel check: only the records judged outside catch them
        assert all(v.startswith("hidden test failed") for v in failures.values()), report(failures)


def test_solution_passes_every_grade_cell():
    failures = failing_cells(NB4)
    assert not failures, f"the unmodified solution fails grade cells:\n{report(failures)}"


# ---------------------------------------------------------------- the promise list
def _promise_rows() -> list[tuple[str, str, str, list[str]]]:
    from test_promises import promise_rows  # the table's parser: | id | promise | where | told | mutations |

    return [
        (r["id"], r["promise"], r["where"], re.findall(r"`([^`]+)`", r["mutations"]))
        for r in promise_rows(PROMISES)
        if re.fullmatch(r"04-P\d\d", r["id"])
    ]


def test_every_promise_has_a_mutation_and_every_mutation_a_promise():
    rows = _promise_rows()
    assert rows, f"no promises found in {PROMISES}"
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"duplicate promise ids: {ids}"
    known = {p.id for p in MISTAKES} | {p.id for p in CHEATS}
    listed = {m for r in rows for m in r[3]}
    empty = [r[0] for r in rows if not r[3]]
    assert not empty, f"promises without a mutation: {empty}"
    assert listed <= known, f"the promise list names unknown mutations: {sorted(listed - known)}"
    assert known <= listed, f"mutations that break no listed promise: {sorted(known - listed)}"
