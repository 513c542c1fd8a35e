"""The grading helpers of notebook 04: the guard's allow-list, the oracles and the isolation of the step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dpolab
from dpolab import GPTConfig, TinyGPT
from dpolab.grading import (
    CountingLM,
    ReferenceUsedError,
    plain_concatenated_logps,
    random_preference_batch,
    run_own_code,
    separate_logps,
    with_correct_concatenated_logps,
)

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


def test_concatenated_oracles_agree_with_the_library(lm):
    batch = random_preference_batch(batch=5, seed=4, chosen_len=(0, 9), rejected_len=(1, 3))
    counted = CountingLM(lm)
    plain = plain_concatenated_logps(counted, batch)
    assert counted.calls == [(10, max(batch.chosen.input_ids.shape[1], batch.rejected.input_ids.shape[1]))]
    two = separate_logps(counted, batch)
    assert len(counted.calls) == 3
    lib = dpolab.concatenated_logps(lm, batch)
    for x, y, z in zip(plain, two, lib, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x, z, atol=1e-5, rtol=1e-5)


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


def test_with_correct_concatenated_logps_swaps_only_that_global(lm):
    namespace = {"torch": torch}
    exec(
        "def concatenated_logps(model, batch):\n    raise NotImplementedError()\n\n"
        "def step(model, batch, scale=2.0, *, offset=0.0):\n"
        "    c, r = concatenated_logps(model, batch)\n    return scale * (c - r) + offset\n",
        namespace,
    )
    batch = random_preference_batch(batch=3, seed=6)
    checked = with_correct_concatenated_logps(namespace["step"])
    c, r = plain_concatenated_logps(lm, batch)
    torch.testing.assert_close(checked(lm, batch, offset=1.0), 2.0 * (c - r) + 1.0)
    with pytest.raises(NotImplementedError):  # the student's own function is untouched
        namespace["step"](lm, batch)
