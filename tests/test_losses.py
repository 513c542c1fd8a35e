"""The losses against closed forms, gradients, invariances and extreme inputs."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import random_lm_batch
from dpolab import (
    DPOLoss,
    IPOLoss,
    KTOLoss,
    ORPOLoss,
    SimPOLoss,
    dpo_loss,
    estimate_kl,
    ipo_loss,
    kto_loss,
    log1mexp,
    log_odds,
    mismatched_pairs,
    orpo_odds_ratio_loss,
    simpo_loss,
)

LN2 = math.log(2)
t64 = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def dpo_at_margin(margin, beta=0.1, eps=0.0):
    """DPO loss for a single pair whose log-ratio margin is ``margin`` (no reference)."""
    return dpo_loss(t64(margin), t64(0.0), beta=beta, label_smoothing=eps).item()


# ---------------------------------------------------------------- closed forms
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25, 0.5])
def test_dpo_zero_margin_is_ln2(eps):
    assert dpo_at_margin(0.0, eps=eps) == pytest.approx(LN2, abs=1e-15)


def test_dpo_closed_forms():
    assert dpo_at_margin(1.0) == pytest.approx(0.6443966600735709, abs=1e-15)
    assert dpo_at_margin(10.0) == pytest.approx(0.31326168751822286, abs=1e-15)
    assert dpo_at_margin(10.0, eps=0.1) == pytest.approx(0.4132616875182229, abs=1e-15)


def test_dpo_uses_the_reference():
    # policy margin 3, reference margin 2 -> log-ratio margin 1
    got = dpo_loss(t64(-1.0), t64(-4.0), t64(-2.0), t64(-4.0), beta=0.1)
    assert got.item() == pytest.approx(0.6443966600735709, abs=1e-15)
    free = dpo_loss(t64(-1.0), t64(-4.0), t64(-2.0), t64(-4.0), beta=0.1, reference_free=True)
    assert free.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))), abs=1e-15)


def test_ipo_closed_forms():
    beta = 0.1
    assert ipo_loss(t64(1 / (2 * beta)), t64(0.0), beta).item() == pytest.approx(0.0, abs=1e-12)
    assert ipo_loss(t64(0.0), t64(0.0), beta).item() == pytest.approx(1 / (4 * beta**2), abs=1e-12)
    assert IPOLoss(beta=0.5)(t64(2.0, 0.0), t64(0.0, 0.0)).item() == pytest.approx((1 + 1) / 2)


@pytest.mark.parametrize(("w_d", "w_u"), [(1.0, 1.0), (1.33, 0.5)])
def test_kto_at_reference_point_is_half_weight(w_d, w_u):
    r = t64(0.3, 0.3)
    got = kto_loss(
        r, torch.tensor([True, False]), 0.3, beta=0.1, desirable_weight=w_d, undesirable_weight=w_u
    )
    torch.testing.assert_close(got, t64(0.5 * w_d, 0.5 * w_u))


def test_kto_hand_computed():
    beta, z0 = 0.5, 0.2
    r = t64(1.0, -1.0, 1.0)
    got = KTOLoss(beta=beta, desirable_weight=2.0, undesirable_weight=1.0)(r, torch.tensor([1, 0, 0]), z0)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    parts = [2.0 * (1 - sig(beta * (1.0 - z0))), 1 - sig(beta * (z0 + 1.0)), 1 - sig(beta * (z0 - 1.0))]
    assert got.item() == pytest.approx(sum(parts) / 3, abs=1e-15)


def test_kto_kl_is_clamped_and_detached():
    r = t64(0.5, -0.5)
    desirable = torch.tensor([True, False])
    at_zero = kto_loss(r, desirable, 0.0)
    torch.testing.assert_close(kto_loss(r, desirable, torch.tensor(-3.0, dtype=torch.float64)), at_zero)
    kl = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    kto_loss(r.requires_grad_(), desirable, kl).sum().backward()
    assert kl.grad is None and r.grad is not None


def test_kto_not_the_seed_form():
    # The seed used -logsigmoid(beta*r - z0): at r = z0 = 0 that is ln 2, not 0.5.
    assert KTOLoss()(t64(0.0), torch.tensor([True]), 0.0).item() == pytest.approx(0.5)


def test_estimate_kl_and_mismatched_pairs():
    policy, ref = t64(-1.0, -2.0, -3.0), t64(-1.5, -2.5, -2.0)
    assert estimate_kl(policy, ref).item() == pytest.approx(0.0, abs=1e-15)  # mean of 0.5, 0.5, -1.0
    assert estimate_kl(policy, ref - 0.3).item() == pytest.approx(0.3, abs=1e-15)
    assert estimate_kl(t64(-1.0, -1.0), t64(-1.5, -2.5)).item() == pytest.approx(1.0)
    assert estimate_kl(t64(-2.0), t64(-1.0)).item() == 0.0  # clamped
    p = torch.tensor([-1.0, -1.0], requires_grad=True)
    assert not estimate_kl(p, torch.tensor([-2.0, -2.0])).requires_grad
    assert mismatched_pairs(["a", "b", "c"], ["A", "B", "C"]) == [("a", "C"), ("b", "A"), ("c", "B")]
    with pytest.raises(ValueError, match="prompts"):
        mismatched_pairs(["a"], ["A"])


def test_simpo_closed_forms():
    for gamma in (0.0, 0.5, 1.0, 2.0):
        got = simpo_loss(t64(-1.3), t64(-1.3), beta=2.0, gamma=gamma).item()
        assert got == pytest.approx(math.log(1 + math.exp(gamma)), abs=1e-14)
    # beta 2, averages -1 vs -2, gamma 1: -log sigma(2*1 - 1) = -log sigma(1)
    assert SimPOLoss()(t64(-1.0), t64(-2.0)).item() == pytest.approx(0.31326168751822286, abs=1e-15)


def test_orpo_closed_form():
    losses, ratio = orpo_odds_ratio_loss(t64(math.log(0.5)), t64(math.log(0.25)))
    assert ratio.item() == pytest.approx(math.log(3), abs=1e-14)  # odds 1 vs 1/3
    assert losses.item() == pytest.approx(math.log(4 / 3), abs=1e-14)


def test_log1mexp_accuracy():
    x = torch.tensor([-1e-20, -1e-10, -1e-3, -0.5, -math.log(2), -1.0, -10.0, -50.0], dtype=torch.float64)
    exact = [math.log(-math.expm1(v)) if v > -1 else math.log1p(-math.exp(v)) for v in x.tolist()]
    torch.testing.assert_close(log1mexp(x), torch.tensor(exact, dtype=torch.float64), rtol=1e-14, atol=0)
    x32 = torch.tensor([-1e-7, -1e-30], dtype=torch.float32)
    # log1p(-exp(x)) gives -inf (or garbage) here; log1mexp keeps every digit
    torch.testing.assert_close(log1mexp(x32), torch.log(-x32.double()).float(), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- gradients
def test_dpo_gradient_at_zero_margin_is_minus_beta_over_two():
    for beta in (0.1, 0.5, 2.0):
        delta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        dpo_loss(delta, torch.zeros(1, dtype=torch.float64), beta=beta).sum().backward()
        assert delta.grad.item() == pytest.approx(-beta / 2, abs=1e-15)


def _vec(n=5, seed=0, scale=1.0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g, dtype=torch.float64) * scale + offset).requires_grad_()


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gradcheck_dpo(eps):
    args = (_vec(seed=1), _vec(seed=2))
    ref = (_vec(seed=3).detach(), _vec(seed=4).detach())
    assert torch.autograd.gradcheck(lambda c, r: dpo_loss(c, r, *ref, beta=0.3, label_smoothing=eps), args)


def test_gradcheck_ipo_kto_simpo_orpo():
    assert torch.autograd.gradcheck(lambda c, r: ipo_loss(c, r, 0.2), (_vec(seed=1), _vec(seed=2)))
    desirable = torch.tensor([True, False, True, False, False])
    assert torch.autograd.gradcheck(lambda r: kto_loss(r, desirable, 0.1, 0.5, 1.2, 0.8), (_vec(seed=3),))
    assert torch.autograd.gradcheck(lambda c, r: simpo_loss(c, r, 2.0, 0.7), (_vec(seed=4), _vec(seed=5)))
    c = _vec(seed=6, scale=0.5, offset=-1.5).detach().clamp(max=-1e-3).requires_grad_()
    r = _vec(seed=7, scale=0.5, offset=-0.3).detach().clamp(max=-1e-3).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, r: orpo_odds_ratio_loss(c, r)[0], (c, r))


def test_gradcheck_dpo_loss_module_on_logits(monkeypatch):
    logits_c, labels_c, mask_c = random_lm_batch(
        batch=2, seq_len=5, vocab=4, prompt_len=2, dtype=torch.float64
    )
    logits_r, labels_r, mask_r = random_lm_batch(
        batch=2, seq_len=6, vocab=4, prompt_len=2, dtype=torch.float64, seed=1
    )
    ref_c, ref_r = torch.randn_like(logits_c), torch.randn_like(logits_r)
    loss = DPOLoss(beta=0.5, label_smoothing=0.1)

    def f(pc, pr):
        return loss(pc, pr, labels_c, labels_r, mask_c, mask_r, ref_c, ref_r)[0]

    assert torch.autograd.gradcheck(f, (logits_c.requires_grad_(), logits_r.requires_grad_()))


def test_no_gradient_reaches_the_reference():
    lc, yc, mc = random_lm_batch()
    lr, yr, mr = random_lm_batch(seed=1)
    pol_c, pol_r = lc.clone().requires_grad_(), lr.clone().requires_grad_()
    ref_c, ref_r = (lc + 0.1).requires_grad_(), (lr - 0.1).requires_grad_()
    loss, metrics = DPOLoss()(pol_c, pol_r, yc, yr, mc, mr, ref_c, ref_r)
    loss.backward()
    assert ref_c.grad is None and ref_r.grad is None
    assert pol_c.grad is not None and pol_c.grad.abs().sum() > 0
    assert all(not v.requires_grad for v in metrics.values())


# ---------------------------------------------------------------- invariances
def test_dpo_shift_invariance_and_permutation():
    c, r, rc, rr = _vec(8, 1).detach(), _vec(8, 2).detach(), _vec(8, 3).detach(), _vec(8, 4).detach()
    base = dpo_loss(c, r, rc, rr, beta=0.2, label_smoothing=0.1)
    torch.testing.assert_close(dpo_loss(c + 7.5, r + 7.5, rc, rr, beta=0.2, label_smoothing=0.1), base)
    perm = torch.randperm(8)
    torch.testing.assert_close(dpo_loss(c[perm], r[perm], rc[perm], rr[perm], 0.2, 0.1), base[perm])
    torch.testing.assert_close(ipo_loss(c[perm], r[perm])[None], ipo_loss(c, r)[perm][None])


def test_dpo_module_matches_function_and_metrics():
    lc, yc, mc = random_lm_batch(seed=2)
    lr, yr, mr = random_lm_batch(seed=3)
    ref_c, ref_r = random_lm_batch(seed=4)[0], random_lm_batch(seed=5)[0]
    m = DPOLoss(beta=0.2, label_smoothing=0.05)
    loss, metrics = m(lc, lr, yc, yr, mc, mr, ref_c, ref_r)
    pc, pr = m.compute_log_probs(lc, yc, mc), m.compute_log_probs(lr, yr, mr)
    rc, rr = m.compute_log_probs(ref_c, yc, mc), m.compute_log_probs(ref_r, yr, mr)
    torch.testing.assert_close(loss, dpo_loss(pc, pr, rc, rr, 0.2, 0.05).mean())
    cr, rj = 0.2 * (pc - rc), 0.2 * (pr - rr)
    torch.testing.assert_close(metrics["chosen_reward"], cr.mean())
    torch.testing.assert_close(metrics["rejected_reward"], rj.mean())
    torch.testing.assert_close(metrics["reward_margin"], (cr - rj).mean())
    torch.testing.assert_close(metrics["accuracy"], (cr > rj).float().mean())
    torch.testing.assert_close(metrics["chosen_log_prob"], pc.mean())
    torch.testing.assert_close(metrics["rejected_log_prob"], pr.mean())
    assert set(metrics) == {
        "loss", "accuracy", "chosen_reward", "rejected_reward", "reward_margin", "chosen_log_prob", "rejected_log_prob"
    }  # fmt: skip
    # reference-free: ignores the given reference
    free_loss, free = DPOLoss(beta=0.2, reference_free=True)(lc, lr, yc, yr, mc, mr, ref_c, ref_r)
    torch.testing.assert_close(free_loss, dpo_loss(pc, pr, beta=0.2).mean())
    torch.testing.assert_close(free["chosen_reward"], 0.2 * pc.mean())


def test_accuracy_is_strict():
    logits, labels, mask = random_lm_batch(batch=2)
    _, metrics = DPOLoss()(logits, logits, labels, labels, mask, mask)  # identical: every margin is 0
    assert metrics["accuracy"].item() == 0.0


# ---------------------------------------------------------------- numerics
def test_extreme_margins_are_finite():
    big = torch.tensor([1e4, -1e4, 0.0], requires_grad=True)
    for eps in (0.0, 0.1):
        loss = dpo_loss(big, torch.zeros(3), beta=1.0, label_smoothing=eps)
        assert torch.isfinite(loss).all()
        loss.sum().backward()
        assert torch.isfinite(big.grad).all()
    assert dpo_loss(torch.tensor([-1e4]), torch.zeros(1), beta=1.0).item() == pytest.approx(1e4)
    for f in (lambda c: simpo_loss(c, torch.zeros(3)), lambda c: ipo_loss(c, torch.zeros(3))):
        assert torch.isfinite(f(big)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32(dtype):
    c, r = torch.tensor([-3.0, -5.0], dtype=dtype), torch.tensor([-4.0, -1.0], dtype=dtype)
    assert dpo_loss(c, r, c, r).dtype == torch.float32
    assert ipo_loss(c, r).dtype == torch.float32
    assert kto_loss(c, torch.tensor([1, 0]), 0.1).dtype == torch.float32
    assert simpo_loss(c, r).dtype == torch.float32
    assert orpo_odds_ratio_loss(c / 10, r / 10)[0].dtype == torch.float32
    logits, labels, mask = random_lm_batch(dtype=dtype)
    loss, _ = ORPOLoss()(logits, logits, labels, labels, mask, mask)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_orpo_near_zero_log_probs_are_finite():
    # p -> 1: avg log-prob 0 exactly, -1e-30, -1e-8 (the naive log1p(-exp(x)) gives -inf or NaN)
    c = torch.tensor([0.0, -1e-30, -1e-8, -2.0], requires_grad=True)
    r = torch.tensor([-1e-8, 0.0, -3.0, -1e-30], requires_grad=True)
    losses, ratio = orpo_odds_ratio_loss(c, r)
    assert torch.isfinite(losses).all() and torch.isfinite(ratio).all()
    losses.sum().backward()
    assert torch.isfinite(c.grad).all() and torch.isfinite(r.grad).all()
    # log-odds of p = 1 - 1e-8 is about ln(1e8) = 18.42
    assert log_odds(torch.tensor([-1e-8], dtype=torch.float64)).item() == pytest.approx(
        math.log(1e8), rel=1e-7
    )


def test_orpo_module_hand_check_and_extremes():
    lc, yc, mc = random_lm_batch(seed=6)
    lr, yr, mr = random_lm_batch(seed=7)
    loss, metrics = ORPOLoss(lambda_orpo=0.25)(lc, lr, yc, yr, mc, mr)
    from dpolab import sequence_logps

    sums = sequence_logps(lc, yc, mc)
    n = mc[:, 1:].sum(-1)
    nll = -sums.sum() / n.sum()
    or_loss = orpo_odds_ratio_loss(sums / n, sequence_logps(lr, yr, mr, average=True))[0].mean()
    torch.testing.assert_close(metrics["sft_loss"], nll)
    torch.testing.assert_close(metrics["orpo_loss"], or_loss)
    torch.testing.assert_close(loss, nll + 0.25 * or_loss)
    assert set(metrics) == {"sft_loss", "orpo_loss", "total_loss", "log_odds_ratio", "accuracy"}
    # logits x1000 and an empty row: finite loss and gradients
    big_c, big_r = (lc * 1000).requires_grad_(), (lr * 1000).requires_grad_()
    mc2 = mc.clone()
    mc2[0] = 0
    loss, _ = ORPOLoss()(big_c, big_r, yc, yr, mc2, mr)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big_c.grad).all() and torch.isfinite(big_r.grad).all()


def test_dpo_module_extreme_logits_and_empty_mask():
    lc, yc, mc = random_lm_batch(seed=8)
    lr, yr, mr = random_lm_batch(seed=9)
    mr[2] = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        pc, pr = (lc * 1000).to(dtype).requires_grad_(), (lr * 1000).to(dtype).requires_grad_()
        loss, metrics = DPOLoss()(pc, pr, yc, yr, mc, mr, (lc * 900).to(dtype), (lr * 900).to(dtype))
        loss.backward()
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in metrics.values())
        assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()


# ---------------------------------------------------------------- bad input
def test_bad_inputs_name_the_argument():
    v = torch.zeros(3)
    with pytest.raises(ValueError, match="policy_rejected_logps"):
        dpo_loss(v, torch.zeros(4))
    with pytest.raises(ValueError, match="ref_chosen_logps"):
        dpo_loss(v, v, torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(v, v, label_smoothing=0.7)
    with pytest.raises(ValueError, match="rejected_log_ratio"):
        IPOLoss()(v, torch.zeros(3, 1))
    with pytest.raises(ValueError, match="beta"):
        IPOLoss(beta=0.0)
    with pytest.raises(ValueError, match="is_desirable"):
        KTOLoss()(v, torch.tensor([1, 0]), 0.0)
    with pytest.raises(ValueError, match="is_desirable"):
        KTOLoss()(v, torch.tensor([1, 2, 0]), 0.0)
    with pytest.raises(ValueError, match="kl_estimate"):
        KTOLoss()(v, torch.tensor([1, 0, 0]), torch.zeros(2))
    with pytest.raises(ValueError, match="log_ratios"):
        KTOLoss()(torch.zeros(3, dtype=torch.long), torch.tensor([1, 0, 0]), 0.0)
    with pytest.raises(ValueError, match="rejected_avg_log_probs"):
        SimPOLoss()(v, torch.zeros(2))
    logits, labels, mask = random_lm_batch(batch=2)
    with pytest.raises(ValueError, match="rejected_labels"):
        DPOLoss()(logits, logits, labels, labels.float(), mask, mask)
    with pytest.raises(ValueError, match="chosen_loss_mask"):
        DPOLoss()(logits, logits, labels, labels, mask[:, :-1], mask)
    with pytest.raises(ValueError, match="reference_chosen_logits"):
        DPOLoss()(logits, logits, labels, labels, mask, mask, logits[:1], logits)
    with pytest.raises(ValueError, match="batch size"):
        DPOLoss()(logits, logits[:1], labels, labels[:1], mask, mask[:1])
    with pytest.raises(ValueError, match="rejected_logits"):
        ORPOLoss()(logits, logits[:, :, :3].long(), labels, labels, mask, mask)
