"""Per-sequence log-probabilities: shift, mask, precision, memory-safe extraction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import random_lm_batch
from dpolab import (
    DPOLoss,
    collate_preferences,
    pad_sequences,
    response_token_counts,
    sequence_logps,
    token_logps,
)
from dpolab.losses import logprobs as logprobs_module


def naive_sequence_logps(logits, labels, mask, average=False):
    """The textbook version, in float64: log_softmax, shift, gather, mask."""
    lp = F.log_softmax(logits.double()[:, :-1], dim=-1)
    tok = lp.gather(-1, labels[:, 1:, None]).squeeze(-1)
    m = mask[:, 1:].double()
    total = (tok * m).sum(-1)
    return total / m.sum(-1).clamp(min=1) if average else total


def test_hand_computed_two_token_response():
    # vocab 2, logits [0, ln 3] -> p(token 1) = 3/4, p(token 0) = 1/4.
    logits = torch.tensor([[[0.0, math.log(3)], [0.0, math.log(3)], [5.0, 5.0]]])
    labels = torch.tensor([[0, 1, 0]])  # prompt token 0; response tokens 1, 0
    mask = torch.tensor([[0, 1, 1]])
    expected = math.log(3 / 4) + math.log(1 / 4)
    assert sequence_logps(logits, labels, mask).item() == pytest.approx(expected, abs=1e-6)
    assert sequence_logps(logits, labels, mask, average=True).item() == pytest.approx(expected / 2, abs=1e-6)


@pytest.mark.parametrize("average", [False, True])
def test_matches_naive_float64(average):
    logits, labels, mask = random_lm_batch(dtype=torch.float64)
    got = sequence_logps(logits, labels, mask, average=average)
    torch.testing.assert_close(
        got, naive_sequence_logps(logits, labels, mask, average), atol=1e-12, rtol=1e-12
    )


def test_chunked_path_equals_one_chunk(monkeypatch):
    logits, labels, mask = random_lm_batch(batch=3, seq_len=9, vocab=11)
    whole = sequence_logps(logits, labels, mask)
    monkeypatch.setattr(logprobs_module, "_CHUNK_ELEMENTS", 11 * 2)  # 2 rows per chunk
    torch.testing.assert_close(sequence_logps(logits, labels, mask), whole, atol=1e-6, rtol=0)


def test_gradient_matches_autograd_of_naive(monkeypatch):
    monkeypatch.setattr(logprobs_module, "_CHUNK_ELEMENTS", 17 * 3)  # several chunks
    logits, labels, mask = random_lm_batch(dtype=torch.float64)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    w = torch.randn(4, dtype=torch.float64)
    (sequence_logps(a, labels, mask) * w).sum().backward()
    (naive_sequence_logps(b, labels, mask) * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-12, rtol=1e-10)


def test_gradcheck_token_logps(monkeypatch):
    monkeypatch.setattr(logprobs_module, "_CHUNK_ELEMENTS", 5 * 2)
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (2, 3))
    assert torch.autograd.gradcheck(lambda z: token_logps(z, targets), (logits,))


def test_prompt_and_padding_do_not_count():
    logits, labels, mask = random_lm_batch()
    base = sequence_logps(logits, labels, mask)
    changed = labels.clone()
    changed[mask == 0] = (changed[mask == 0] + 1) % 17  # every prompt and padding token id
    # With the logits held fixed, the log-probs of non-response tokens must not enter the sum.
    torch.testing.assert_close(sequence_logps(logits, changed, mask), base)
    assert not torch.allclose(sequence_logps(logits, changed, torch.ones_like(mask)), base)


def test_extra_right_padding_changes_nothing():
    batch = collate_preferences([[5, 6], [7]], [[1, 2, 3], [4]], [[8], [9, 9, 9, 9]])
    ids, mask = batch.chosen.input_ids, batch.chosen.loss_mask
    torch.manual_seed(1)
    logits = torch.randn(ids.shape[0], ids.shape[1] + 4, 12)
    padded_ids = F.pad(ids, (0, 4), value=0)
    padded_mask = F.pad(mask, (0, 4), value=0)
    short = sequence_logps(logits[:, : ids.shape[1]], ids, mask)
    long = sequence_logps(logits, padded_ids, padded_mask)
    torch.testing.assert_close(short, long)


def test_empty_mask_gives_zero_not_nan():
    logits, labels, mask = random_lm_batch()
    mask[1] = 0
    total = sequence_logps(logits, labels, mask)
    avg = sequence_logps(logits, labels, mask, average=True)
    assert total[1].item() == 0.0 and avg[1].item() == 0.0
    assert torch.isfinite(total).all() and torch.isfinite(avg).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast(dtype):
    logits, labels, mask = random_lm_batch(dtype=dtype)
    got = sequence_logps(logits.requires_grad_(), labels, mask)
    assert got.dtype == torch.float32
    # exact reference: the same half-precision logits, evaluated in float64
    torch.testing.assert_close(
        got.double(), naive_sequence_logps(logits.detach(), labels, mask), atol=1e-4, rtol=1e-5
    )
    got.sum().backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad).all()


def test_float64_stays_float64():
    logits, labels, mask = random_lm_batch(dtype=torch.float64)
    assert sequence_logps(logits, labels, mask).dtype == torch.float64


def test_huge_logits_are_finite():
    logits, labels, mask = random_lm_batch()
    logits = (logits * 1000).requires_grad_()
    out = sequence_logps(logits, labels, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.double(), naive_sequence_logps(logits.detach(), labels, mask), rtol=1e-6, atol=1e-2
    )
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # the naive "log of softmax" underflows to log(0) = -inf on the same input
    naive = torch.log(torch.softmax(logits.detach()[:, :-1], -1)).gather(-1, labels[:, 1:, None])
    assert torch.isinf(naive).any()


def test_placeholder_labels_under_the_mask_are_fine():
    logits, labels, mask = random_lm_batch()
    with_ignore = labels.masked_fill(mask == 0, -100)  # TRL / HF convention
    torch.testing.assert_close(
        sequence_logps(logits, with_ignore, mask), sequence_logps(logits, labels, mask)
    )


def test_response_token_counts():
    mask = torch.tensor([[0, 0, 1, 1, 0], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    assert response_token_counts(mask).tolist() == [2, 2, 0]  # position 0 is never scored


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"logits": torch.randn(2, 5)}, "logits"),
        ({"labels": torch.zeros(2, 5)}, "labels"),  # float labels
        ({"labels": torch.zeros(2, 4, dtype=torch.long)}, "labels"),
        ({"loss_mask": torch.ones(2, 4)}, "loss_mask"),
        ({"labels": torch.full((2, 5), 99)}, "labels"),  # out of vocabulary
        ({"logits": torch.zeros(2, 5, 7, dtype=torch.long)}, "logits"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = {
        "logits": torch.randn(2, 5, 7),
        "labels": torch.zeros(2, 5, dtype=torch.long),
        "loss_mask": torch.ones(2, 5),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}"):
        sequence_logps(**args)


def test_pad_sequences_layout():
    b = pad_sequences([[5, 6], [7]], [[1, 2, 3], []], pad_token_id=0)
    assert b.input_ids.tolist() == [[5, 6, 1, 2, 3], [7, 0, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert b.loss_mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]]
    t = pad_sequences([[5, 6]], [[1, 2, 3]], max_length=4)
    assert t.input_ids.tolist() == [[5, 6, 1, 2]] and t.loss_mask.tolist() == [[0, 0, 1, 1]]
    with pytest.raises(ValueError, match="responses"):
        pad_sequences([[1]], [[1], [2]])
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        pad_sequences([[1, 2, 3]], [[4]], max_length=3)


def test_summing_prompt_tokens_changes_rewards_not_loss():
    """The seed's bug: masking with the attention mask sums prompt tokens too.

    The DPO loss does not see it (chosen and rejected share the prompt, its terms cancel
    in the log-ratio margin), but every logged reward and log-prob is wrong.
    """
    torch.manual_seed(3)
    batch = collate_preferences([[3, 4, 5, 6]] * 2, [[7, 8], [9, 1]], [[2, 2], [1, 7]])
    c, r = batch.chosen, batch.rejected
    vocab = 10
    # prompt logits identical for chosen/rejected rows (same prompt, causal model)
    pol_c, pol_r = torch.randn(2, 6, vocab), torch.randn(2, 6, vocab)
    ref_c, ref_r = torch.randn(2, 6, vocab), torch.randn(2, 6, vocab)
    pol_r[:, :3], ref_r[:, :3] = pol_c[:, :3], ref_c[:, :3]
    right_loss, right = DPOLoss(beta=0.1)(
        pol_c, pol_r, c.input_ids, r.input_ids, c.loss_mask, r.loss_mask, ref_c, ref_r
    )
    wrong_loss, wrong = DPOLoss(beta=0.1)(
        pol_c, pol_r, c.input_ids, r.input_ids, c.attention_mask, r.attention_mask, ref_c, ref_r
    )
    torch.testing.assert_close(wrong_loss, right_loss)  # prompt terms cancel in the loss
    assert abs(wrong["chosen_reward"] - right["chosen_reward"]) > 1e-3
    assert abs(wrong["chosen_log_prob"] - right["chosen_log_prob"]) > 1e-1
