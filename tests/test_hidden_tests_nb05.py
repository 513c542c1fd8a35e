"""Notebook 05's grade cells catch the mistakes students make in Exercise 5, and only those.

The machinery of ``test_hidden_tests_catch_mistakes.py``: the solution notebook's first code
cell, answer cells and grade cells run in one namespace (the experiments between them are
skipped), each answer cell edited by one typical mistake; the set of grade cells that fail must
be exactly the expected one, through the visible asserts and through the hidden records alone
(judged outside the kernel). Every promise of the exercise's spec is listed, with the mutations
that break it, in ``tests/promises/05_what_dpo_optimises.md``.

Test 5a runs the student's ``train_with_early_stopping`` on a one-weight model that every
training step moves by 1, with scripted validation metrics; Test 5b runs ``on_policy_pairs`` on
``dpolab.grading.LetterLM`` (samples known in advance) and ``dpolab.grading.PairRecorder`` (a
stand-in for Part 3's generator that records what it is given).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

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

NB5 = "05_what_dpo_optimises"
STOP, PAIRS = "early_stopping_answer", "on_policy_answer"
T_STOP, T_PAIRS = "test_early_stopping", "test_on_policy_pairs"
PROMISES = Path(__file__).resolve().parent / "promises" / f"{NB5}.md"


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("DPOLAB_DEVICE", "cpu")


COPY = "best_weights = copy.deepcopy(model.state_dict())  # a copy: the live tensors keep changing"
COPY2 = "            best_weights = copy.deepcopy(model.state_dict())\n"
PATIENCE = "            if bad == patience:"
IMPROVES = "if metric > best_metric:"
RETURN = "    return model, best_step, test(model), history"
SAMPLE = "repeated = [prompt for prompt in prompts for _ in range(k)]  # k samples of each, one batch"
CALL = "    return generator.from_scored_responses(records)"

MISTAKES = [
    # ---- 5a train_with_early_stopping
    case(NB5, "live-weights", STOP, COPY, "best_weights = model.state_dict()", {T_STOP},
         edits=[(COPY2, "            best_weights = model.state_dict()\n")]),
    case(NB5, "patience-off-by-one", STOP, PATIENCE, "            if bad > patience:", {T_STOP}),
    case(NB5, "reports-validation-metric", STOP, RETURN,
         "    model.load_state_dict(best_weights)\n    return model, best_step, best_metric, history", {T_STOP},
         edits=[("    model.load_state_dict(best_weights)\n    return", "    return")]),
    case(NB5, "stops-on-training-loss", STOP, "        train_step(model)\n", "        loss = train_step(model)\n",
         {T_STOP}, edits=[("        metric = validate(model)\n", "        metric = -loss\n")]),
    case(NB5, "test-on-last-weights", STOP, RETURN, "    return model, best_step, test(model), history", {T_STOP},
         edits=[("    model.load_state_dict(best_weights)\n", "")]),
    case(NB5, "no-step-0", STOP, "    best_metric = validate(model)  # step 0: the model we start from is a candidate too\n",
         "    best_metric = float('-inf')\n", {T_STOP}, edits=[("    history = [(0, best_metric)]", "    history = []")]),
    case(NB5, "tie-improves", STOP, IMPROVES, "if metric >= best_metric:", {T_STOP}),
    case(NB5, "evaluates-every-step", STOP, "        if step % eval_every:\n            continue\n", "", {T_STOP}),
    # ---- 5b on_policy_pairs
    case(NB5, "pairs-not-from-the-policy", PAIRS, "    responses = complete(\n", body("""
        from dpolab import ArithmeticTask

        responses = [ArithmeticTask.answer(p) if i % 2 else ArithmeticTask.sloppy_answer(p) for i, p in enumerate(repeated)]
        _ = complete(
    """, 4), {T_PAIRS}),
    case(NB5, "ties-kept", PAIRS, CALL, "    generator.min_score_diff = 0.0\n" + CALL, {T_PAIRS}),
    case(NB5, "generator-bypassed", PAIRS, CALL, body("""
        best = {}
        worst = {}
        for r in records:
            p = r["prompt"]
            if p not in best or r["score"] > best[p]["score"]:
                best[p] = r
            if p not in worst or r["score"] < worst[p]["score"]:
                worst[p] = r
        return [types.SimpleNamespace(prompt=p, chosen=best[p]["response"], rejected=worst[p]["response"],
                                      chosen_score=best[p]["score"], rejected_score=worst[p]["score"])
                for p in best if best[p]["score"] > worst[p]["score"]]
    """, 4).replace("        best = {}", "    import types\n\n    best = {}", 1), {T_PAIRS}),
    case(NB5, "sample-count-not-k", PAIRS, SAMPLE, "repeated = [prompt for prompt in prompts for _ in range(k - 1)]",
         {T_PAIRS}),
    case(NB5, "one-sample-per-prompt-k-times", PAIRS, SAMPLE, "repeated = list(prompts) * 1", {T_PAIRS}),
    case(NB5, "greedy-not-sampled", PAIRS, "temperature=temperature", "temperature=0.0", {T_PAIRS}),
    case(NB5, "temperature-fixed-at-1", PAIRS, "temperature=temperature", "temperature=1.0", {T_PAIRS}),
    case(NB5, "scorer-ignored", PAIRS, '"score": scorer(prompt, response)',
         '"score": float(response == str(sum(map(int, prompt[:-1].split("+")))))', {T_PAIRS}),
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
    stripped = hidden_only(load(NB5))
    harness = sys.modules[failing_cells.__module__]
    monkeypatch.setattr(harness, "load", lambda name, _load=load: stripped if name == NB5 else _load(name))
    failures = failing_cells(mistake.notebook, edited)
    assert set(failures) == mistake.fails, (
        f"{mistake.name}: expected exactly {sorted(mistake.fails)} to fail, got:\n{report(failures)}"
    )


# ---------------------------------------------------------------- correct alternatives
ALTERNATIVES = [
    case(NB5, "stop-deepcopy-model-while-loop", STOP, Block(0), body("""
        best = (validate(model), 0, copy.deepcopy(model))  # (metric, step, a copy of the whole model)
        history = [(0, best[0])]
        step, since_best = 0, 0
        while step < max_steps and since_best < patience:
            step += 1
            train_step(model)
            if step % eval_every == 0:
                score = validate(model)
                history.append((step, score))
                if score > best[0]:
                    best, since_best = (score, step, copy.deepcopy(model)), 0
                else:
                    since_best += 1
        return best[2], best[1], test(best[2]), history
    """, 4)),
    case(NB5, "stop-clone-tensors-zero-based", STOP, Block(0), body("""
        def snapshot():
            return {name: t.detach().clone() for name, t in model.state_dict().items()}

        history = [(0, validate(model))]
        best_metric, best_step, best_state = history[0][1], 0, snapshot()
        for i in range(max_steps):
            train_step(model)
            if (i + 1) % eval_every != 0:
                continue
            history.append((i + 1, validate(model)))
            if history[-1][1] > best_metric:
                best_metric, best_step, best_state = history[-1][1], i + 1, snapshot()
            elif len(history) - 1 - [s for s, _ in history].index(best_step) >= patience:
                break
        model.load_state_dict(best_state)
        result = test(model)
        return model, best_step, result, history
    """, 4)),
    case(NB5, "stop-count-evaluations", STOP, Block(0), body("""
        import io

        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)  # a copy, as bytes
        scores = [validate(model)]
        steps_done = [0]
        best_index = 0
        for step in range(1, max_steps + 1):
            train_step(model)
            if step % eval_every == 0:
                scores.append(validate(model))
                steps_done.append(step)
                if scores[-1] > scores[best_index]:
                    best_index = len(scores) - 1
                    buffer = io.BytesIO()
                    torch.save(model.state_dict(), buffer)
                if len(scores) - 1 - best_index == patience:
                    break
        buffer.seek(0)
        model.load_state_dict(torch.load(buffer))
        return model, steps_done[best_index], test(model), list(zip(steps_done, scores))
    """, 4)),
    case(NB5, "pairs-one-prompt-at-a-time", PAIRS, Block(0), body("""
        rng = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
        pairs = []
        for prompt in prompts:
            samples = complete(policy, tokenizer, [prompt] * k, max_new_tokens, temperature=temperature, generator=rng)
            records = [{"prompt": prompt, "response": r, "score": scorer(prompt, r)} for r in samples]
            pairs.extend(generator.from_scored_responses(records))
        return pairs
    """, 4)),
    case(NB5, "pairs-loop-custom-keys", PAIRS, Block(0), body("""
        device = next(policy.parameters()).device
        rng = torch.Generator(device=device).manual_seed(seed)
        rows = []
        for prompt in prompts:
            for _ in range(k):
                (response,) = complete(policy, tokenizer, [prompt], max_new_tokens, device=device,
                                       temperature=temperature, generator=rng)
                rows.append({"question": prompt, "answer": response, "reward": float(scorer(prompt, response))})
        return list(generator.from_scored_responses(rows, prompt_key="question", response_key="answer",
                                                    score_key="reward"))
    """, 4)),
    case(NB5, "pairs-dict-records-sorted-prompts", PAIRS, Block(0), body("""
        rng = torch.Generator().manual_seed(seed)
        batch = [p for p in prompts for _ in range(k)]
        texts = complete(policy, tokenizer, batch, max_new_tokens, temperature=temperature, generator=rng)
        records = []
        for prompt, text in zip(batch, texts):
            records.append(dict(prompt=prompt, response=text, score=scorer(prompt, text)))
        out = generator.from_scored_responses(records)
        return out
    """, 4)),
]  # fmt: skip


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_correct_alternative_passes_every_cell(alternative: Case):
    failures = alternative.run()
    assert not failures, f"{alternative.name}: a correct rewrite fails:\n{report(failures)}"


# ---------------------------------------------------------------- importing the reference
CHEATS = [
    pytest.param(STOP, "from dpolab import train_with_early_stopping", {T_STOP}, id="05-import-train_with_early_stopping"),
    pytest.param(PAIRS, "from dpolab import on_policy_pairs, complete", {T_PAIRS}, id="05-import-on_policy_pairs"),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "source", "fails"), CHEATS)
def test_calling_the_reference_scores_nothing(answer, source, fails):
    failures = failing_cells(NB5, {answer: source})
    assert set(failures) == set(fails), f"{source!r} instead of {answer}:\n{report(failures)}"


def test_solution_passes_every_grade_cell():
    failures = failing_cells(NB5)
    assert not failures, f"the unmodified solution fails grade cells:\n{report(failures)}"


def test_solution_cells_are_the_library_reference():
    """One source of truth: the answer cells are dpolab's functions, with nbgrader's markers."""
    import inspect

    from dpolab.training import early_stopping, on_policy
    from notebook_tools import strip_markers

    for answer, fn in ((STOP, early_stopping.train_with_early_stopping), (PAIRS, on_policy.on_policy_pairs)):
        cell = strip_markers(load(NB5).answer(answer).source)
        source = inspect.getsource(fn)
        assert cell.endswith(source.rstrip("\n")), f"{answer} differs from dpolab's {fn.__name__}"


# ---------------------------------------------------------------- the promise list
def test_every_promise_has_a_mutation_and_every_mutation_a_promise():
    from test_promises import promise_rows

    rows = [
        (r["id"], re.findall(r"`([^`]+)`", r["mutations"]))
        for r in promise_rows(PROMISES)
        if re.fullmatch(r"05-P\d\d", r["id"])
    ]
    assert rows, f"no promises found in {PROMISES}"
    known = {p.id for p in MISTAKES} | {p.id for p in CHEATS}
    listed = {m for _, ms in rows for m in ms}
    assert not [i for i, ms in rows if not ms], "promises without a mutation"
    assert listed <= known, f"the promise list names unknown mutations: {sorted(listed - known)}"
    assert known <= listed, f"mutations that break no listed promise: {sorted(known - listed)}"
