"""Tests for dpolab.training: the concatenated forward, the DPO step, the reference precompute,
the SFT and preference loops, and the evaluation helpers."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dpolab import (
    CharTokenizer,
    GPTConfig,
    PreferencePair,
    TinyGPT,
    collate_preferences,
    concatenated_logps,
    dpo_loss,
    dpo_train_step,
    kl_to_reference,
    precompute_reference_logps,
    preference_metrics,
    reward_accuracy,
    sequence_logps,
    train_preference,
    train_sft,
)
from dpolab.training.preference import DEFAULT_BETA

TOK = CharTokenizer("0123456789+=")


def tiny(seed: int = 0, **kw) -> TinyGPT:
    torch.manual_seed(seed)
    config = {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32} | kw
    return TinyGPT(GPTConfig(vocab_size=TOK.vocab_size, **config))


def pairs(n: int = 16) -> list[PreferencePair]:
    # chosen: the sum; rejected: the sum minus 10 (the lab's forgotten carry), lengths differ
    out = []
    for i in range(n):
        a, b = 15 + 3 * i, 27 + 5 * i
        out.append(PreferencePair(f"{a}+{b}=", str(a + b), str(a + b - 10) + "7" * (i % 3)))
    return out


def batch_of(ps):
    enc = [(TOK.encode(p.prompt), TOK.encode(p.chosen, True), TOK.encode(p.rejected, True)) for p in ps]
    return collate_preferences(*zip(*enc, strict=True), pad_token_id=TOK.pad_token_id)


class CountingLM(nn.Module):
    """Wraps a model and counts its forward calls (and the rows it saw)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, input_ids, attention_mask=None):
        self.calls += 1
        self.rows += input_ids.shape[0]
        return self.model(input_ids, attention_mask=attention_mask)


class HFStyle(nn.Module):
    """Returns an object with ``.logits``, as Hugging Face models do."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.model(input_ids))


# --- concatenated_logps --------------------------------------------------------------------


@pytest.mark.parametrize("average", [False, True])
def test_concatenated_forward_equals_two_separate_forwards(average):
    model = tiny().eval()
    batch = batch_of(pairs(8))
    assert batch.chosen.input_ids.shape[1] != batch.rejected.input_ids.shape[1]  # padding is exercised
    chosen, rejected = concatenated_logps(model, batch, average=average)
    for side, got in (("chosen", chosen), ("rejected", rejected)):
        rows = getattr(batch, side)
        want = sequence_logps(model(rows.input_ids), rows.input_ids, rows.loss_mask, average=average)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert chosen.shape == rejected.shape == (8,)


def test_concatenated_forward_is_one_call_and_accepts_dot_logits():
    model = CountingLM(HFStyle(tiny().eval()))
    batch = batch_of(pairs(4))
    chosen, rejected = concatenated_logps(model, batch)
    assert (model.calls, model.rows) == (1, 8)
    want = concatenated_logps(model.model.model, batch)
    torch.testing.assert_close(chosen, want[0], rtol=0, atol=0)
    torch.testing.assert_close(rejected, want[1], rtol=0, atol=0)


def test_concatenated_forward_rejects_bad_batches():
    model = tiny()
    with pytest.raises(ValueError, match="batch"):
        concatenated_logps(model, (1, 2))
    batch = batch_of(pairs(4))
    batch.rejected = batch_of(pairs(3)).rejected
    with pytest.raises(ValueError, match="rejected"):
        concatenated_logps(model, batch)
    with pytest.raises(ValueError, match="logits"):
        concatenated_logps(lambda ids, attention_mask=None: ids.tolist(), batch_of(pairs(2)))


# --- dpo_train_step ------------------------------------------------------------------------


def test_dpo_train_step_is_one_sgd_step_on_the_dpo_loss():
    policy, reference = tiny(seed=1), tiny(seed=2)
    batch = batch_of(pairs(6))
    ref_c, ref_r = precompute_reference_logps(reference, batch)
    # The expected step, computed independently with autograd on a copy.
    twin = copy.deepcopy(policy)
    c = sequence_logps(twin(batch.chosen.input_ids), batch.chosen.input_ids, batch.chosen.loss_mask)
    r = sequence_logps(twin(batch.rejected.input_ids), batch.rejected.input_ids, batch.rejected.loss_mask)
    want_loss = dpo_loss(c, r, ref_c, ref_r, beta=0.3).mean()
    want_loss.backward()
    want_metrics = preference_metrics(c, r, ref_c, ref_r, 0.3)
    # Stale gradients must be zeroed by the step, not added.
    for p in policy.parameters():
        p.grad = torch.full_like(p, 1e3)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    metrics = dpo_train_step(policy, batch, ref_c, ref_r, optimizer, beta=0.3)
    assert set(metrics) == {"loss", *want_metrics}
    assert all(type(v) is float for v in metrics.values())
    assert metrics["loss"] == pytest.approx(want_loss.item(), rel=1e-6)
    for key, value in want_metrics.items():
        assert metrics[key] == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key
    for (name, p), q in zip(policy.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q - 0.5 * q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_dpo_train_step_treats_the_reference_as_a_constant():
    policy = tiny()
    batch = batch_of(pairs(4))
    ref_c = torch.full((4,), -3.0, requires_grad=True)
    ref_r = torch.full((4,), -2.0, requires_grad=True)
    dpo_train_step(policy, batch, ref_c, ref_r, torch.optim.SGD(policy.parameters(), lr=0.1))
    assert ref_c.grad is None and ref_r.grad is None


def test_a_shared_first_token_cancels_in_the_margin_and_gets_no_gradient():
    """Notebook 04's account of likelihood displacement: `143` (chosen) and `133` (rejected) start
    with the same token in the same context, so its log-prob enters h with coefficient 0 and the
    DPO loss puts no gradient on it; the tokens from the first difference on carry all of it."""
    policy, reference = tiny(seed=1).double().eval(), tiny(seed=2).double().eval()
    batch = batch_of([PreferencePair("47+96=", "143", "133")])
    ids = torch.cat([batch.chosen.input_ids, batch.rejected.input_ids])  # both sides: one width
    mask = torch.cat([batch.chosen.loss_mask, batch.rejected.loss_mask])[:, 1:].double()
    first = int(mask[0].nonzero()[0])  # the position whose logits score the shared `1`
    assert mask[1, first] == 1 and ids[0, first + 1] == ids[1, first + 1] == TOK.encode("1")[0]
    assert ids[0, first + 2] != ids[1, first + 2]  # `4` against `3`: the first difference

    def token_logps(model):  # (2, T - 1): the log-prob of each next token
        return torch.log_softmax(model(ids)[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)

    def loss_of(policy_tokens, keep):  # the DPO loss on the tokens that `keep` selects
        with torch.no_grad():
            ref = (token_logps(reference) * keep).sum(-1)
        logps = (policy_tokens * keep).sum(-1)
        return dpo_loss(logps[:1], logps[1:], ref[:1], ref[1:], beta=0.5).mean()

    # Per token: the shared `1` has one log-prob, entering h once with + and once with -.
    tokens = token_logps(policy)
    torch.testing.assert_close(tokens[0, first], tokens[1, first], rtol=0, atol=1e-12)
    leaves = tokens.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss_of(leaves, mask), leaves)
    assert (grad[0, first] + grad[1, first]).item() == 0.0  # its coefficient in h is 0
    later = mask[0].bool() & (torch.arange(mask.shape[1]) > first)
    assert later.sum() == 3  # the second and third digits and the end token
    assert (grad[0, later] < 0).all() and (grad[1, later] > 0).all()  # chosen pushed up, rejected down

    # Per parameter: taking the shared token out of both sides changes neither the loss nor its gradient,
    # and on the shared token alone the gradient is 0.
    def loss_and_grads(keep):
        loss = loss_of(token_logps(policy), keep)
        return loss, torch.autograd.grad(loss, list(policy.parameters()))

    shared = torch.zeros_like(mask)
    shared[:, first] = 1
    loss_all, grads_all = loss_and_grads(mask)
    loss_rest, grads_rest = loss_and_grads(mask - shared)
    torch.testing.assert_close(loss_rest, loss_all, rtol=1e-12, atol=1e-12)
    for g_rest, g_all in zip(grads_rest, grads_all, strict=True):
        torch.testing.assert_close(g_rest, g_all, rtol=1e-9, atol=1e-12)
    assert max(g.abs().max().item() for g in grads_all) > 1e-3  # the pair does move the policy
    _, grads_shared = loss_and_grads(shared)
    assert max(g.abs().max().item() for g in grads_shared) < 1e-12


# --- the reference, computed once ----------------------------------------------------------


def test_precompute_matches_the_forward_without_grad_and_restores_the_mode():
    ref = tiny().train()
    batches = [batch_of(pairs(16)[:10]), batch_of(pairs(16)[10:])]
    chosen, rejected = precompute_reference_logps(ref, batches)
    assert ref.training and not chosen.requires_grad and chosen.shape == rejected.shape == (16,)
    ref.eval()
    want = concatenated_logps(ref, batch_of(pairs(16)))
    torch.testing.assert_close(chosen, want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rejected, want[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batches"):
        precompute_reference_logps(ref, [])


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_the_reference_is_scored_once_however_many_steps(loss):
    data = pairs(300)
    calls = []
    for steps in (2, 6):
        ref = CountingLM(tiny(seed=1))
        train_preference(tiny(), ref, data, TOK, loss=loss, steps=steps, batch_size=8, progress=False)
        calls.append(ref.calls)
    # 300 pairs in batches of 256 (two forwards of chosen+rejected), + KTO's mismatched rows (one)
    assert calls == [2 + (loss == "kto")] * 2


# --- train_preference ----------------------------------------------------------------------


def test_a_few_dpo_steps_raise_the_reward_accuracy_on_a_fixed_batch():
    reference = tiny(seed=3).eval()
    policy = copy.deepcopy(reference)
    data = pairs(16)
    assert reward_accuracy(policy, reference, data, TOK) == 0.0  # policy == reference: all ties
    history = train_preference(policy, reference, data, TOK, steps=15, batch_size=16, lr=3e-3, progress=False)
    assert reward_accuracy(policy, reference, data, TOK) >= 0.9
    assert history["accuracy"][0] == 0.0 and history["accuracy"][-1] >= 0.9
    assert history["loss"][0] == pytest.approx(0.693147, abs=1e-5)  # ln 2 at the start
    assert history["loss"][-1] < 0.6
    assert history["reward_margin"][-1] > 0


@pytest.mark.parametrize("loss", list(DEFAULT_BETA))
def test_every_loss_trains_and_logs_the_same_keys(loss):
    reference = tiny(seed=4).eval()
    policy = copy.deepcopy(reference)
    history = train_preference(
        policy,
        reference,
        pairs(16),
        TOK,
        loss=loss,
        steps=12,
        batch_size=16,
        lr=3e-3,
        progress=False,
        eval_every=6,
    )
    for key in ("loss", "accuracy", "chosen_reward", "rejected_reward", "reward_margin"):
        assert len(history[key]) == 12 and all(torch.isfinite(torch.tensor(history[key])))
    assert history["step"] == list(range(12)) and history["eval_step"] == [5, 11]
    assert history["kl"][0] > 0 and len(history["kl"]) == 2
    assert history["loss"][-1] < history["loss"][0]
    assert history["reward_margin"][-1] > 0


def test_the_nll_term_adds_the_chosen_token_nll():
    # At step 0 the policy is the reference: DPO gives ln 2, the NLL term is α · (-mean chosen token log-prob).
    reference = tiny(seed=5).eval()
    data = pairs(16)
    rows = torch.randint(16, (16,), generator=torch.Generator().manual_seed(0))  # the loop's first draw
    batch = batch_of([data[i] for i in rows.tolist()])
    chosen, _ = concatenated_logps(reference, batch)
    nll = -chosen.sum() / batch.chosen.loss_mask[:, 1:].sum()
    history = train_preference(
        copy.deepcopy(reference), reference, data, TOK, nll_weight=0.5, steps=1, batch_size=16, progress=False
    )
    assert history["loss"][0] == pytest.approx(0.693147 + 0.5 * nll.item(), rel=1e-5)


def test_precomputed_reference_gives_the_same_run_as_the_model():
    reference = tiny(seed=6).eval()
    data = pairs(16)
    logps = precompute_reference_logps(reference, batch_of(data))
    a = train_preference(
        copy.deepcopy(reference), reference, data, TOK, steps=5, batch_size=4, progress=False
    )
    b = train_preference(copy.deepcopy(reference), logps, data, TOK, steps=5, batch_size=4, progress=False)
    for key in ("loss", "accuracy", "reward_margin", "chosen_log_prob"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


def test_the_same_seed_gives_the_same_run():
    reference = tiny(seed=7).eval()
    runs = [
        train_preference(
            copy.deepcopy(reference), reference, pairs(16), TOK, steps=4, batch_size=4, seed=9, progress=False
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_train_preference_rejects_bad_arguments():
    model = tiny()
    with pytest.raises(ValueError, match="loss"):
        train_preference(model, model, pairs(4), TOK, loss="ppo", progress=False)
    with pytest.raises(ValueError, match="reference"):
        train_preference(model, None, pairs(4), TOK, loss="dpo", progress=False)
    with pytest.raises(ValueError, match=r"reference log-probs must have shape \(4,\)"):
        train_preference(model, (torch.zeros(3), torch.zeros(3)), pairs(4), TOK, progress=False)
    with pytest.raises(ValueError, match="record 1"):
        train_preference(model, model, [pairs(1)[0], {"prompt": "1+1="}], TOK, progress=False)
    with pytest.raises(ValueError, match="nll_weight"):
        train_preference(model, model, pairs(4), TOK, nll_weight=-1, progress=False)
    # ORPO and SimPO need no reference
    train_preference(model, None, pairs(4), TOK, loss="simpo", steps=1, progress=False)


# --- SFT -----------------------------------------------------------------------------------


def test_sft_learns_a_mapping_it_is_shown():
    # response = the prompt's digit + 1, with EOS: learnable in a few dozen steps
    examples = [(f"{d}=", str(d + 1)) for d in range(9)]
    model = tiny(seed=8)
    history = train_sft(model, examples, TOK, steps=80, batch_size=16, lr=1e-2, warmup=5, progress=False)
    assert history["loss"][-1] < 0.05 < history["loss"][0]
    from dpolab import complete

    assert complete(model, TOK, [p for p, _ in examples], max_new_tokens=3) == [r for _, r in examples]


def test_sft_rejects_empty_data():
    with pytest.raises(ValueError, match="examples"):
        train_sft(tiny(), [], TOK, progress=False)
    with pytest.raises(ValueError, match=r"examples\[1\]"):
        train_sft(tiny(), [("1=", "2"), ("2=",)], TOK, progress=False)


# --- evaluation ----------------------------------------------------------------------------


def test_kl_is_zero_against_itself_and_matches_the_exact_kl():
    tok = CharTokenizer("ab")
    policy, reference = (
        TinyGPT(GPTConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=8)) for _ in "pr"
    )
    assert kl_to_reference(policy, policy, tok, ["a"], max_new_tokens=2) == pytest.approx(0.0, abs=1e-7)
    # Exact sequence KL by enumeration: responses of up to 2 tokens, stopping at EOS (id 1).
    with torch.no_grad():

        def dists(model, ids):
            return torch.log_softmax(model(torch.tensor([ids]))[0, -1], -1)

        prompt = tok.encode("a")
        exact = 0.0
        lp, lq = dists(policy, prompt), dists(reference, prompt)
        exact += float((lp.exp() * (lp - lq)).sum())
        for t in range(4):
            if t == 1:
                continue  # EOS: the response ends
            lp2, lq2 = dists(policy, prompt + [t]), dists(reference, prompt + [t])
            exact += float(lp[t].exp() * (lp2.exp() * (lp2 - lq2)).sum())
    estimate = kl_to_reference(policy, reference, tok, ["a"] * 4000, max_new_tokens=2, seed=0)
    assert estimate == pytest.approx(exact, rel=0.05)


def test_the_quick_recipe_runs_sft_and_a_results_row_end_to_end():
    import dataclasses

    from dpolab import LAB_RECIPE, run_preference, run_sft

    recipe = dataclasses.replace(LAB_RECIPE.quick(), sft_steps=30, steps=10, n_eval=32, n_embd=64)
    task = recipe.task(seed=0)
    tok = CharTokenizer()
    sft, history = run_sft(task, tok, recipe, seed=0, progress=False)
    assert len(history["loss"]) == recipe.sft_steps and history["loss"][-1] < history["loss"][0]
    before = [p.detach().clone() for p in sft.parameters()]
    run = run_preference(
        sft,
        task,
        tok,
        loss="dpo",
        nll_weight=1.0,
        recipe=recipe,
        progress=False,
        eval_every=5,
        track_task_metric=True,
    )
    assert run.method == "DPO+NLL" and len(run.history["loss"]) == recipe.steps
    assert len(run.history["task_metric"]) == len(run.history["kl"]) == len(run.history["eval_step"]) == 2
    assert 0 <= run.task_metric <= 1 and 0 <= run.reward_accuracy <= 1 and run.kl >= 0 and run.wall_time_s > 0
    assert set(run.row()) == {"method", "task_metric", "reward_accuracy", "kl", "wall_time_s"}
    # the SFT model is the reference: it must come back untouched
    assert all(torch.equal(a, b) for a, b in zip(before, sft.parameters(), strict=True))
