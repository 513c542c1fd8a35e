"""An independent oracle: dpolab's losses against TRL 1.16.0's own loss code.

TRL keeps most of its losses inside trainer methods. We call those methods *unbound*
(``DPOTrainer._compute_loss(standin, model, inputs, return_outputs=False)``) with a
minimal stand-in ``self``: a namespace holding exactly the attributes the method reads.
No model or tokenizer is ever loaded. The ``model`` handed to a trainer is
:class:`FakeFusedLM`, which plays a causal LM patched by TRL's ``add_fused_lm_head``:
it returns a real :class:`trl.trainer.utils.FusedCausalLMOutput` whose ``log_probs`` are
per-token log-probabilities *we* chose (or computed from logits we chose), zeroed where
TRL's labels are ``-100``, exactly as the fused head does. So TRL itself decides which
tokens count, from the ``completion_mask`` we hand it.

The stand-ins are written against TRL 1.16.0 (attribute names, output fields, metric
keys), hence the hard version check below: on another version the test module fails
to import with a clear message rather than comparing against the wrong code.

Tolerances: 1e-5 (rtol and atol) in float32, 1e-9 in float64. The one exception is
ORPO in float64: TRL's ``odds_ratio_loss`` casts its inputs to float32 (``.float()``),
so it cannot be more accurate than float32, and we hold it to the float32 tolerance.
"""

from __future__ import annotations

from collections import defaultdict
from types import MethodType, SimpleNamespace

import pytest
import torch
import trl
from trl import DPOTrainer, KTOTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer
from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp
from trl.trainer.utils import FusedCausalLMOutput, selective_log_softmax

from dpolab.losses.dpo import DPOLoss, dpo_loss
from dpolab.losses.ipo import ipo_loss
from dpolab.losses.kto import estimate_kl, kto_loss
from dpolab.losses.logprobs import response_token_counts, sequence_logps, token_logps
from dpolab.losses.metrics import preference_metrics
from dpolab.losses.orpo import log1mexp, orpo_odds_ratio_loss
from dpolab.losses.simpo import simpo_loss
from dpolab.training.hf import TRL_LOG_NAMES

TRL_VERSION = "1.16.0"
if trl.__version__ != TRL_VERSION:
    raise RuntimeError(
        f"tests/test_trl_oracle.py calls TRL {TRL_VERSION}'s trainer methods with hand-made stand-in `self` "
        f"objects written for that exact version, but trl {trl.__version__} is installed. "
        f"Install it with `pip install trl=={TRL_VERSION}` (as in the `test` extra of pyproject.toml), "
        "or port the stand-ins to the new version after reading its source."
    )

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.float64: {"rtol": 1e-9, "atol": 1e-9},
}
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]
SEEDS = [0, 1, 2]

# TRL's name for each of dpolab.losses.metrics.preference_metrics' keys (DPOTrainer._metrics[mode]).
TRL_METRIC_NAMES = {ours: theirs for ours, theirs in TRL_LOG_NAMES.items() if ours != "loss"}


def close(actual, expected, dtype, msg, tol=None):
    """``assert_close`` at the dtype's tolerance; python floats become tensors of ``dtype``."""
    actual = torch.as_tensor(actual, dtype=dtype).detach()
    expected = torch.as_tensor(expected, dtype=dtype).detach()
    torch.testing.assert_close(actual, expected, **(tol or TOL[dtype]), msg=lambda m: f"{msg}\n{m}")


# ------------------------------------------------------------------ stand-ins
ACCELERATOR = SimpleNamespace(
    device=torch.device("cpu"),
    gather=lambda x: x,  # a single process: gathering is the identity
    gather_for_metrics=lambda x: x,
)


def new_metrics():
    return {"train": defaultdict(list), "eval": defaultdict(list)}


class FakeFusedLM:
    """Plays ``model(**kwargs, labels=labels, fused_lm_head=True)`` of a TRL-patched causal LM.

    ``rows`` pairs an ``input_ids`` tensor with either per-token log-probs of shape
    (N, T-1) (position t scores token t+1) or logits of shape (N, T, V), from which the
    log-probs are taken with TRL's ``selective_log_softmax``. A call is matched to its
    entry by its ``input_ids``; as in ``add_fused_lm_head``, every per-token field is 0
    where the shifted label is -100.
    """

    def __init__(self, *rows):
        self.rows = rows
        self.calls = 0

    def __call__(self, *, input_ids, labels, fused_lm_head=False, **kwargs):
        assert fused_lm_head, "TRL 1.16 is expected to ask for the fused LM head"
        matches = [v for ids, v in self.rows if ids.shape == input_ids.shape and torch.equal(ids, input_ids)]
        assert len(matches) == 1, f"FakeFusedLM got unregistered input_ids {input_ids}"
        values = matches[0]
        self.calls += 1
        shift_labels = labels[:, 1:]
        mask = shift_labels != -100
        if values.ndim == 3:  # logits
            log_probs = selective_log_softmax(values[:, :-1], shift_labels.clamp(min=0))
        else:
            log_probs = values
        log_probs = log_probs.masked_fill(~mask, 0.0)
        zeros = torch.zeros_like(log_probs).detach()
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / mask.sum().clamp(min=1),
            log_probs=log_probs,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=torch.zeros_like(mask),
            label_mask=mask,
        )


def dpo_standin(beta, loss_type="sigmoid", label_smoothing=0.0, ref_model=None):
    """What ``DPOTrainer._compute_loss`` reads from ``self`` (TRL 1.16, no PEFT, no MoE, no WPO)."""
    return SimpleNamespace(
        model=SimpleNamespace(training=True, is_gradient_checkpointing=False),
        accelerator=ACCELERATOR,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=ref_model is None,
        ref_model=ref_model,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics=new_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
    )


def kto_standin(beta, desirable_weight, undesirable_weight):
    """What ``KTOTrainer._compute_loss`` reads from ``self`` (precomputed reference log-probs)."""
    standin = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=ACCELERATOR,
        calculate_KL=True,
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        loss_type="kto",
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
        _metrics=new_metrics(),
        _total_train_tokens=0,
        _tp_size=1,
    )
    standin._compute_kl_logps = MethodType(KTOTrainer._compute_kl_logps, standin)
    return standin


# ------------------------------------------------------------------ random data
def token_batch(n, seq_len, vocab, gen, min_prompt=1):
    """``input_ids``, ``attention_mask`` and ``completion_mask`` (int64, shape (n, T)).

    Each row: left padding (some rows), a prompt of at least ``min_prompt`` tokens, a
    response of at least 1 token, right padding. The completion mask is 1 on the response.
    """
    input_ids = torch.randint(0, vocab, (n, seq_len), generator=gen)
    attention_mask = torch.zeros(n, seq_len, dtype=torch.long)
    completion_mask = torch.zeros(n, seq_len, dtype=torch.long)
    for i in range(n):
        left = int(torch.randint(0, 2, (), generator=gen)) if i % 3 == 0 else 0
        prompt = int(torch.randint(min_prompt, 4, (), generator=gen))
        start = left + prompt
        end = int(torch.randint(start + 1, seq_len + 1, (), generator=gen))
        attention_mask[i, left:end] = 1
        completion_mask[i, start:end] = 1
    return input_ids, attention_mask, completion_mask


def masked_sums(per_token, completion_mask):
    """Sum of per-token log-probs (N, T-1) over the scored response tokens."""
    return torch.where(completion_mask[:, 1:].bool(), per_token, torch.zeros_like(per_token)).sum(-1)


def dpo_batch(batch, seq_len, dtype, seed, vocab=32):
    """A TRL 1.16 DPO batch ([chosen; rejected] rows) with per-token policy log-probs."""
    gen = torch.Generator().manual_seed(seed)
    input_ids, attention_mask, completion_mask = token_batch(2 * batch, seq_len, vocab, gen)
    per_token = (-3 * torch.rand(2 * batch, seq_len - 1, generator=gen, dtype=torch.float64)).to(dtype)
    policy = masked_sums(per_token, completion_mask)
    # Reference log-probs near the policy's, so that the log-ratios are O(1) of both signs.
    ref = (policy.double() + 2 * torch.randn(2 * batch, generator=gen, dtype=torch.float64)).to(dtype)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref[:batch],
        "ref_rejected_logps": ref[batch:],
    }
    return inputs, per_token, policy, ref


def single_pair(inputs, per_token, i, batch):
    """Pair ``i`` of a DPO batch as a batch of its own (chosen row i, rejected row batch + i)."""
    rows = [i, batch + i]
    sub = {k: inputs[k][rows] for k in ("input_ids", "attention_mask", "completion_mask")}
    sub["ref_chosen_logps"] = inputs["ref_chosen_logps"][i : i + 1]
    sub["ref_rejected_logps"] = inputs["ref_rejected_logps"][i : i + 1]
    return sub, per_token[rows]


def trl_dpo(inputs, per_token, beta, loss_type="sigmoid", label_smoothing=0.0):
    standin = dpo_standin(beta, loss_type, label_smoothing)
    model = FakeFusedLM((inputs["input_ids"], per_token))
    loss = DPOTrainer._compute_loss(standin, model, inputs, return_outputs=False)
    assert model.calls == 1
    return loss, standin._metrics["train"]


def trl_dpo_per_pair(inputs, per_token, batch, beta, loss_type="sigmoid", label_smoothing=0.0):
    """TRL only returns the batch mean: a batch of one pair exposes each pair's loss."""
    return torch.stack(
        [
            trl_dpo(*single_pair(inputs, per_token, i, batch), beta, loss_type, label_smoothing)[0]
            for i in range(batch)
        ]
    )


# ------------------------------------------------------------------ 1. DPO (sigmoid)
@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dpo_sigmoid_matches_trl(dtype, seed, beta):
    batch = 8
    inputs, per_token, policy, ref = dpo_batch(batch, 10, dtype, seed)
    trl_loss, trl_metrics = trl_dpo(inputs, per_token, beta)
    ours = dpo_loss(policy[:batch], policy[batch:], ref[:batch], ref[batch:], beta=beta)
    assert ours.dtype == dtype and trl_loss.dtype == dtype
    close(ours.mean(), trl_loss, dtype, f"DPO batch-mean loss vs TRL sigmoid (beta={beta}, seed={seed})")

    trl_per_pair = trl_dpo_per_pair(inputs, per_token, batch, beta)
    close(ours, trl_per_pair, dtype, f"DPO per-pair losses vs TRL sigmoid on one-pair batches (beta={beta})")

    # The logged metrics: every dpolab metric against TRL's name for it.
    metrics = preference_metrics(policy[:batch], policy[batch:], ref[:batch], ref[batch:], beta)
    assert set(TRL_METRIC_NAMES.values()) <= set(trl_metrics), sorted(trl_metrics)
    for ours_key, trl_key in TRL_METRIC_NAMES.items():
        assert len(trl_metrics[trl_key]) == 1
        close(metrics[ours_key], trl_metrics[trl_key][0], dtype, f"metric {ours_key} vs TRL {trl_key}")


# ------------------------------------------------------------------ 1b. cDPO (label smoothing)
@pytest.mark.parametrize("label_smoothing", [0.1, 0.3])
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cdpo_label_smoothing_matches_trl_aot_on_single_pairs(dtype, seed, label_smoothing):
    """TRL 1.16's "sigmoid" ignores label_smoothing; its "aot" loss is the cDPO formula
    -(1-ε) logσ(βh) - ε logσ(-βh) with h sorted over the batch, and on a one-pair batch the
    sort is the identity, so it gives each pair's cDPO loss."""
    batch, beta = 8, 0.2
    inputs, per_token, policy, ref = dpo_batch(batch, 10, dtype, seed)
    ours = dpo_loss(
        policy[:batch], policy[batch:], ref[:batch], ref[batch:], beta=beta, label_smoothing=label_smoothing
    )
    trl_per_pair = trl_dpo_per_pair(inputs, per_token, batch, beta, "aot", label_smoothing)
    close(
        ours,
        trl_per_pair,
        dtype,
        f"cDPO per-pair losses vs TRL aot on one-pair batches (eps={label_smoothing})",
    )


# ------------------------------------------------------------------ 1c. DPO end to end, from logits
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dpo_module_from_logits_matches_trl(dtype, seed):
    """DPOLoss on logits (its own log-prob extraction, masks and reference handling) vs
    DPOTrainer with a policy and a reference model that score the same logits with TRL's
    selective_log_softmax; loss, metrics and the gradient with respect to the logits."""
    batch, seq_len, vocab, beta = 4, 9, 23, 0.3
    gen = torch.Generator().manual_seed(100 + seed)
    input_ids, attention_mask, completion_mask = token_batch(2 * batch, seq_len, vocab, gen)
    logits = torch.randn(2 * batch, seq_len, vocab, generator=gen, dtype=torch.float64).to(dtype)
    ref_logits = (logits.double() + 0.5 * torch.randn(logits.shape, generator=gen, dtype=torch.float64)).to(
        dtype
    )

    trl_logits = logits.clone().requires_grad_(True)
    standin = dpo_standin(beta, ref_model=FakeFusedLM((input_ids, ref_logits)))
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
    trl_loss = DPOTrainer._compute_loss(
        standin, FakeFusedLM((input_ids, trl_logits)), inputs, return_outputs=False
    )
    trl_loss.backward()
    assert standin.ref_model.calls == 1, "TRL should have scored the reference itself"

    our_logits = logits.clone().requires_grad_(True)
    c, r = slice(0, batch), slice(batch, 2 * batch)
    loss, metrics = DPOLoss(beta=beta)(
        our_logits[c],
        our_logits[r],
        input_ids[c],
        input_ids[r],
        completion_mask[c],
        completion_mask[r],
        ref_logits[c],
        ref_logits[r],
    )
    loss.backward()
    close(loss, trl_loss, dtype, "DPOLoss from logits vs TRL DPOTrainer._compute_loss")
    trl_metrics = standin._metrics["train"]
    for ours_key, trl_key in TRL_METRIC_NAMES.items():
        close(
            metrics[ours_key], trl_metrics[trl_key][0], dtype, f"DPOLoss metric {ours_key} vs TRL {trl_key}"
        )
    close(our_logits.grad, trl_logits.grad, dtype, "gradient of the DPO loss w.r.t. the policy logits")


# ------------------------------------------------------------------ 2. IPO
@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ipo_matches_trl(dtype, seed, beta):
    """TRL's "ipo" divides each log-ratio by its completion length; we do the same outside."""
    batch = 8
    inputs, per_token, policy, ref = dpo_batch(batch, 12, dtype, seed)
    trl_loss, _ = trl_dpo(inputs, per_token, beta, "ipo")

    completion_mask = inputs["completion_mask"]
    lengths = response_token_counts(completion_mask)
    # TRL divides by completion_mask.sum(1); dpolab counts the *scored* tokens, mask[:, 1:].
    # They agree whenever a prompt precedes the response, as here.
    assert torch.equal(lengths, completion_mask.sum(1))
    avg_log_ratio = (policy - ref) / lengths.clamp(min=1)
    ours = ipo_loss(avg_log_ratio[:batch], avg_log_ratio[batch:], beta)
    assert ours.dtype == dtype
    close(ours.mean(), trl_loss, dtype, f"IPO batch-mean loss vs TRL ipo (beta={beta}, seed={seed})")
    trl_per_pair = trl_dpo_per_pair(inputs, per_token, batch, beta, "ipo")
    close(ours, trl_per_pair, dtype, f"IPO per-pair losses vs TRL ipo on one-pair batches (beta={beta})")


# ------------------------------------------------------------------ 3. log-prob extraction
def logprob_batch(dtype, seed, batch=4, seq_len=12, vocab=50):
    gen = torch.Generator().manual_seed(200 + seed)
    logits = (3 * torch.randn(batch, seq_len, vocab, generator=gen, dtype=torch.float64)).to(dtype)
    labels, _, loss_mask = token_batch(batch, seq_len, vocab, gen)
    return logits, labels, loss_mask


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_logprobs_match_trl_selective_log_softmax(dtype, seed):
    logits, labels, loss_mask = logprob_batch(dtype, seed)
    shift_logits, shift_labels, shift_mask = logits[:, :-1], labels[:, 1:], loss_mask[:, 1:]

    trl_tokens = selective_log_softmax(shift_logits, shift_labels)
    close(token_logps(shift_logits, shift_labels), trl_tokens, dtype, "token_logps vs selective_log_softmax")

    trl_sum = (trl_tokens * shift_mask).sum(-1)
    trl_avg = trl_sum / shift_mask.sum(-1)
    close(sequence_logps(logits, labels, loss_mask), trl_sum, dtype, "sequence_logps (sum) vs TRL masked sum")
    close(
        sequence_logps(logits, labels, loss_mask, average=True),
        trl_avg,
        dtype,
        "sequence_logps(average=True) vs TRL masked mean",
    )

    # TRL's own sum/mean helper (CPO/ORPO), on labels with -100 outside the response;
    # dpolab must accept such labels too.
    masked_labels = labels.masked_fill(loss_mask == 0, -100)
    for average in (False, True):
        trl_value = CPOTrainer.get_batch_logps(logits, masked_labels, average_log_prob=average)
        ours = sequence_logps(logits, masked_labels, loss_mask, average=average)
        close(ours, trl_value, dtype, f"sequence_logps(average={average}) vs CPOTrainer.get_batch_logps")


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_logprob_gradients_match_trl(dtype, seed):
    """dpolab writes the backward pass by hand; TRL's goes through autograd."""
    logits, labels, loss_mask = logprob_batch(dtype, seed)
    weights = torch.randn(logits.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    weights = weights.to(dtype)
    for average in (False, True):
        ours_in = logits.clone().requires_grad_(True)
        (sequence_logps(ours_in, labels, loss_mask, average=average) * weights).sum().backward()

        trl_in = logits.clone().requires_grad_(True)
        shift_mask = loss_mask[:, 1:]
        trl_value = (selective_log_softmax(trl_in[:, :-1], labels[:, 1:]) * shift_mask).sum(-1)
        if average:
            trl_value = trl_value / shift_mask.sum(-1)
        (trl_value * weights).sum().backward()
        close(ours_in.grad, trl_in.grad, dtype, f"d sequence_logps(average={average}) / d logits vs TRL")


# ------------------------------------------------------------------ 4. ORPO
def random_avg_logps(n, dtype, gen):
    """Average log-probs in (-3, -1e-3)."""
    return (-(1e-3 + (3 - 1e-3) * torch.rand(n, generator=gen, dtype=torch.float64))).to(dtype)


@pytest.mark.parametrize("beta", [1.0, 0.1])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_orpo_odds_ratio_matches_trl(dtype, seed, beta):
    """TRL returns (β logσ(log_odds), β·chosen, β·rejected, mean logσ(log_odds), mean log_odds):
    the *negated* loss, scaled by β (its trainer subtracts the mean from the NLL)."""
    batch = 8
    gen = torch.Generator().manual_seed(300 + seed)
    chosen, rejected = random_avg_logps(batch, dtype, gen), random_avg_logps(batch, dtype, gen)
    standin = SimpleNamespace(beta=beta, accelerator=ACCELERATOR)
    trl_losses, _, _, trl_mean_ratio, trl_mean_log_odds = ORPOTrainer.odds_ratio_loss(
        standin, chosen, rejected
    )
    assert trl_losses.dtype == torch.float32, "TRL 1.16 computes the odds ratio in float32"
    ours, log_odds_ratio = orpo_odds_ratio_loss(chosen, rejected)
    assert ours.dtype == dtype

    tol = TOL[torch.float32]  # TRL casts its inputs to float32: it cannot do better (module docstring)
    close(ours, -trl_losses / beta, dtype, f"ORPO per-example loss vs -TRL losses / beta (beta={beta})", tol)
    close(ours.mean(), -trl_mean_ratio, dtype, "ORPO mean loss vs -TRL mean logsigmoid(log_odds)", tol)
    close(log_odds_ratio.mean(), trl_mean_log_odds, dtype, "mean log odds ratio vs TRL", tol)
    trl_log_odds = torch.stack(
        [
            ORPOTrainer.odds_ratio_loss(standin, chosen[i : i + 1], rejected[i : i + 1])[4]
            for i in range(batch)
        ]
    )
    close(log_odds_ratio, trl_log_odds, dtype, "per-example log odds ratio vs TRL (one-example batches)", tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1mexp_matches_trl(dtype):
    gen = torch.Generator().manual_seed(400)
    ln2 = 0.6931471805599453
    x = torch.cat(
        [
            -torch.logspace(-20, 2, 200, dtype=torch.float64),  # from -1e-20 to -100
            -ln2 + torch.linspace(-1e-6, 1e-6, 21, dtype=torch.float64),  # both sides of the switch
            -50 * torch.rand(100, generator=gen, dtype=torch.float64),
        ]
    ).to(dtype)
    close(log1mexp(x), trl_log1mexp(x), dtype, "dpolab log1mexp vs trl log1mexp")


# ------------------------------------------------------------------ 5. SimPO
@pytest.mark.parametrize(("beta", "gamma"), [(2.0, 1.0), (2.5, 0.5), (10.0, 3.0)])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_simpo_matches_trl_cpo(dtype, seed, beta, gamma):
    """TRL: -logσ(β((c - r) - γ/β)); dpolab: -logσ(β(c - r) - γ). The same function."""
    batch = 8
    gen = torch.Generator().manual_seed(500 + seed)
    chosen, rejected = random_avg_logps(batch, dtype, gen), random_avg_logps(batch, dtype, gen)
    standin = SimpleNamespace(
        alpha=0.0,
        accelerator=ACCELERATOR,
        loss_type="simpo",
        simpo_gamma=gamma,
        beta=beta,
        label_smoothing=0.0,
    )
    trl_losses, _, _ = CPOTrainer.cpo_loss(standin, chosen, rejected)
    ours = simpo_loss(chosen, rejected, beta, gamma)
    assert ours.dtype == dtype and trl_losses.dtype == dtype
    close(ours, trl_losses, dtype, f"SimPO per-example losses vs TRL CPO simpo (beta={beta}, gamma={gamma})")


# ------------------------------------------------------------------ 6. KTO
KTO_CASES = [
    # (sign of the KL estimate, beta, desirable_weight, undesirable_weight)
    pytest.param("positive", 0.5, 1.0, 1.0, id="kl>0-equal-weights"),
    pytest.param("positive", 0.5, 1.0, 1.5, id="kl>0-unequal-weights"),
    pytest.param("negative", 0.3, 0.8, 1.33, id="kl<0-clamped-unequal-weights"),
]


def kto_batch(n, seq_len, dtype, seed, kl_sign, vocab=32):
    gen = torch.Generator().manual_seed(600 + seed)
    input_ids, attention_mask, completion_mask = token_batch(n, seq_len, vocab, gen)
    kl_input_ids, kl_attention_mask, kl_completion_mask = token_batch(n, seq_len, vocab, gen)
    label = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])[:n]
    per_token = (-3 * torch.rand(n, seq_len - 1, generator=gen, dtype=torch.float64)).to(dtype)
    kl_per_token = (-3 * torch.rand(n, seq_len - 1, generator=gen, dtype=torch.float64)).to(dtype)
    policy = masked_sums(per_token, completion_mask)
    policy_kl = masked_sums(kl_per_token, kl_completion_mask)
    ref = (policy.double() + 2 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)
    # The mean KL log-ratio is ±0.8 plus noise of zero mean.
    shift = 0.8 if kl_sign == "positive" else -0.8
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    ref_kl = (policy_kl.double() - shift - (noise - noise.mean())).to(dtype)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "KL_input_ids": kl_input_ids,
        "KL_attention_mask": kl_attention_mask,
        "KL_completion_mask": kl_completion_mask,
        "label": label,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    return inputs, per_token, kl_per_token, policy, policy_kl, ref, ref_kl


def trl_kto(inputs, per_token, kl_per_token, beta, wd, wu):
    standin = kto_standin(beta, wd, wu)
    model = FakeFusedLM((inputs["input_ids"], per_token), (inputs["KL_input_ids"], kl_per_token))
    loss = KTOTrainer._compute_loss(standin, model, inputs, return_outputs=False)
    assert model.calls == 2, "TRL should score the completions and the KL completions"
    return loss, standin._metrics["train"]


@pytest.mark.parametrize(("kl_sign", "beta", "wd", "wu"), KTO_CASES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kto_matches_trl(dtype, seed, kl_sign, beta, wd, wu):
    n = 8
    inputs, per_token, kl_per_token, policy, policy_kl, ref, ref_kl = kto_batch(n, 10, dtype, seed, kl_sign)
    trl_loss, trl_metrics = trl_kto(inputs, per_token, kl_per_token, beta, wd, wu)

    raw_kl = (policy_kl - ref_kl).mean()
    assert (raw_kl > 0) == (kl_sign == "positive"), "the data should give a KL estimate of the intended sign"
    z0 = estimate_kl(policy_kl, ref_kl)
    close(z0, trl_metrics["kl"][0], dtype, f"estimate_kl vs TRL's logged kl (raw mean {raw_kl.item():.4f})")

    log_ratios = policy - ref
    desirable = inputs["label"].bool()
    ours = kto_loss(log_ratios, desirable, z0, beta, wd, wu)
    assert ours.dtype == dtype
    close(ours.mean(), trl_loss, dtype, f"KTO mean loss vs TRL kto ({kl_sign} KL, weights {wd}/{wu})")
    # kto_loss clamps the estimate itself: the raw (possibly negative) mean gives the same losses.
    close(
        kto_loss(log_ratios, desirable, raw_kl, beta, wd, wu), ours, dtype, "kto_loss with the unclamped KL"
    )

    # Per example: one-example batches that keep the whole KL batch (so the same z0).
    trl_per_example = []
    for i in range(n):
        sub = dict(inputs)
        for key in ("input_ids", "attention_mask", "completion_mask", "label", "ref_logps"):
            sub[key] = inputs[key][i : i + 1]
        trl_per_example.append(trl_kto(sub, per_token[i : i + 1], kl_per_token, beta, wd, wu)[0])
    close(ours, torch.stack(trl_per_example), dtype, "KTO per-example losses vs TRL on one-example batches")
