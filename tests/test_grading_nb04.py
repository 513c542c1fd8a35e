"""The grading helpers of notebook 04: the guard's allow-list, the oracles and the isolation of the step;
the numbers its visible tests hard-code and the results table it ships, against the reference."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

import dpolab
from dpolab import GPTConfig, TinyGPT
from dpolab.grading import (
    ContextFreeLM,
    CountingLM,
    ReferenceUsedError,
    context_free_concatenated_logps,
    random_preference_batch,
    run_own_code,
    with_correct_concatenated_logps,
)
from dpolab.training.variants_results import load_variant_results
from nb04_oracle import separate_logps, visible_concat_numbers, visible_step_numbers

NB4 = Path(__file__).resolve().parents[1] / "solutions" / "lab_3_1_5_dpo" / "04_train_with_dpo.ipynb"

CONFIG = GPTConfig(vocab_size=11, block_size=24, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture
def lm():
    torch.manual_seed(0)
    return TinyGPT(CONFIG)


def test_the_model_needs_the_allow_list_and_nothing_else_gets_through(lm):
    ids = torch.randint(1, 11, (2, 5))
    with pytest.raises(ReferenceUsedError, match="model.py:forward"):
        run_own_code(lm, ids)  # TinyGPT lives in dpolab: without allow it is flagged
    assert run_own_code(lm, ids, allow=[lm]).shape == (2, 5, 11)
    # code the allowed model runs in other dpolab files is allowed too (generate -> generation.py)
    out = run_own_code(lm.generate, ids, 2, allow=[TinyGPT])
    assert out.shape == (2, 7)

    def cheat(model, x):
        logits = model(x)
        return dpolab.sequence_logps(logits, x, torch.ones_like(x))

    with pytest.raises(ReferenceUsedError, match="sequence_logps"):
        run_own_code(cheat, lm, ids, allow=[lm])


def test_allow_list_scope_ends_when_the_allowed_call_returns(lm):
    ids = torch.randint(1, 11, (2, 5))

    def after(model, x):
        model(x)
        return dpolab.response_token_counts(torch.ones_like(x))  # after the model returned: flagged

    with pytest.raises(ReferenceUsedError, match="response_token_counts"):
        run_own_code(after, lm, ids, allow=[lm])


def test_random_preference_batch_is_seeded_and_ragged():
    a = random_preference_batch(batch=4, seed=3, chosen_len=(1, 2), rejected_len=(6, 8))
    b = random_preference_batch(batch=4, seed=3, chosen_len=(1, 2), rejected_len=(6, 8))
    assert torch.equal(a.chosen.input_ids, b.chosen.input_ids)
    assert torch.equal(a.rejected.input_ids, b.rejected.input_ids)
    assert a.chosen.input_ids.shape[1] < a.rejected.input_ids.shape[1]
    assert (a.chosen.input_ids[a.chosen.attention_mask.bool()] > 0).all()  # ids avoid the padding id


def test_oracles_agree_with_the_library(lm):
    batch = random_preference_batch(batch=5, seed=4, chosen_len=(0, 9), rejected_len=(1, 3))
    counted = CountingLM(lm)
    two = separate_logps(counted, batch)
    assert [c[0] for c in counted.calls] == [5, 5]
    lib = dpolab.concatenated_logps(lm, batch)
    for x, y in zip(two, lib, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_context_free_oracle_is_right_for_its_model_only(lm):
    batch = random_preference_batch(batch=5, seed=4, chosen_len=(0, 9), rejected_len=(1, 3))
    fake = ContextFreeLM(vocab_size=11, seed=7)
    counted = CountingLM(fake)
    got = context_free_concatenated_logps(counted, batch)
    width = max(batch.chosen.input_ids.shape[1], batch.rejected.input_ids.shape[1])
    assert counted.calls == [(10, width)]  # one concatenated forward
    for x, y, z in zip(got, dpolab.concatenated_logps(fake, batch), separate_logps(fake, batch), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x, z, atol=1e-5, rtol=1e-5)
    # by hand: the count of each response token times log softmax(w)
    logp = torch.log_softmax(fake.w.detach(), -1)
    ids, mask = batch.chosen.input_ids[0], batch.chosen.loss_mask[0]
    by_hand = sum(float(logp[t]) for t, m in zip(ids.tolist(), mask.tolist(), strict=True) if m)
    assert got[0][0].item() == pytest.approx(by_hand, abs=1e-5)
    (got[0].sum() - got[1].sum()).backward()  # differentiable in w
    assert fake.w.grad is not None and fake.w.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ContextFreeLM"):
        context_free_concatenated_logps(lm, batch)  # a real causal LM: refused


def test_separate_logps_mistake_variants_by_hand(lm):
    batch = random_preference_batch(batch=2, seed=5)
    side = batch.chosen
    with torch.no_grad():
        logps = F.log_softmax(lm(side.input_ids), dim=-1)
        token = logps.gather(-1, side.input_ids.unsqueeze(-1)).squeeze(-1)  # position t scores token t
        no_shift = (token * side.loss_mask).sum(-1)
        shifted = (
            logps[:, :-1].gather(-1, side.input_ids[:, 1:, None]).squeeze(-1) * side.loss_mask[:, 1:]
        ).sum(-1)
        prompt_too = (
            logps[:, :-1].gather(-1, side.input_ids[:, 1:, None]).squeeze(-1) * side.attention_mask[:, 1:]
        ).sum(-1)
        torch.testing.assert_close(separate_logps(lm, batch, shift=False)[0], no_shift)
        torch.testing.assert_close(separate_logps(lm, batch)[0], shifted)
        torch.testing.assert_close(separate_logps(lm, batch, mask="attention_mask")[0], prompt_too)
        torch.testing.assert_close(
            separate_logps(lm, batch, average=True)[0], shifted / side.loss_mask[:, 1:].sum(-1)
        )


def test_with_correct_concatenated_logps_swaps_only_that_global():
    namespace = {"torch": torch}
    exec(
        "def concatenated_logps(model, batch):\n    raise NotImplementedError()\n\n"
        "def step(model, batch, scale=2.0, *, offset=0.0):\n"
        "    c, r = concatenated_logps(model, batch)\n    return scale * (c - r) + offset\n",
        namespace,
    )
    batch = random_preference_batch(batch=3, seed=6)
    fake = ContextFreeLM(vocab_size=11, seed=8)
    checked = with_correct_concatenated_logps(namespace["step"])
    c, r = dpolab.concatenated_logps(fake, batch)
    torch.testing.assert_close(checked(fake, batch, offset=1.0), 2.0 * (c - r) + 1.0)
    with pytest.raises(NotImplementedError):  # the student's own function is untouched
        namespace["step"](fake, batch)


# ---------------------------------------------------------------- the numbers the notebook hard-codes
def _literal(grade_id: str, name: str):
    """The literal assigned to ``name`` in grade cell ``grade_id`` of the solution notebook."""
    nb = nbformat.read(NB4, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    source = cell.source[: cell.source.index("### BEGIN HIDDEN TESTS")]
    (value,) = [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]
    ]
    return ast.literal_eval(value)


def test_visible_concatenated_logps_numbers_are_the_references():
    written, computed = _literal("test_concatenated_logps", "expected_logps"), visible_concat_numbers()
    assert written.keys() == computed.keys()
    for key, want in computed.items():
        for side_written, side_want in zip(written[key], want, strict=True):
            assert side_written == pytest.approx(side_want, abs=2e-5), key


def test_visible_step_numbers_are_the_references():
    assert _literal("test_dpo_train_step", "expected_w") == pytest.approx(visible_step_numbers(), abs=2e-6)


def test_the_step_tests_have_won_and_lost_pairs():
    """The set-ups of the step's and the metrics' tests: margins neither all positive nor all negative
    (a sign error or an accuracy counting ties must show)."""
    for ref_seed, policy_seed, batch_seed, size in [(1, 2, 1, 4), (30, 130, 30, 6), (31, 131, 31, 6)]:
        batch = random_preference_batch(batch=size, vocab_size=11, seed=batch_seed)
        with torch.no_grad():
            pc, pr = dpolab.concatenated_logps(ContextFreeLM(11, seed=policy_seed), batch)
            rc, rr = dpolab.concatenated_logps(ContextFreeLM(11, seed=ref_seed), batch)
        won = ((pc - rc) - (pr - rr) > 0).float().mean().item()
        assert 0 < won < 1, (ref_seed, won)


# ---------------------------------------------------------------- the results table shipped for section 5
def test_the_shipped_variants_table_says_what_the_notebook_says():
    table = load_variant_results()
    rows = {row["method"]: row for row in table["runs"]}
    assert list(rows) == ["DPO", "DPO+NLL", "IPO", "KTO", "ORPO", "SimPO"]
    for row in rows.values():
        assert set(row) == {"method", "task_metric", "reward_accuracy", "kl", "wall_time_s"}
        assert 0 <= row["task_metric"] <= 1 and 0 <= row["reward_accuracy"] <= 1
        assert math.isfinite(row["kl"]) and row["kl"] >= 0 and row["wall_time_s"] > 0
    assert rows["DPO+NLL"]["task_metric"] >= table["sft_task_metric"] + 0.30
    with_nll = min(rows["DPO+NLL"]["task_metric"], rows["ORPO"]["task_metric"])
    assert with_nll > max(rows[m]["task_metric"] for m in ("DPO", "IPO", "KTO", "SimPO"))
