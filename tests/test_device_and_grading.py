"""The device helper and the notebooks' grading guard."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dpolab
from dpolab import get_device
from dpolab.grading import ReferenceUsedError, random_lm_batch, run_own_code


def test_device_override(monkeypatch):
    monkeypatch.setenv("DPOLAB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("meta") == torch.device("meta")
    monkeypatch.setenv("DPOLAB_DEVICE", "not-a-device")
    with pytest.raises(ValueError, match="DPOLAB_DEVICE"):
        get_device()


def test_device_default_follows_cuda(monkeypatch):
    monkeypatch.delenv("DPOLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else get_device().type
    assert get_device().type == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")


def own_logps(logits, labels, mask):
    tok = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    return (tok * mask[:, 1:]).sum(-1)


def test_run_own_code_accepts_own_code_and_rejects_the_reference():
    logits, labels, mask = random_lm_batch()
    mine = run_own_code(own_logps, logits, labels, mask)
    torch.testing.assert_close(mine, dpolab.sequence_logps(logits, labels, mask))
    with pytest.raises(ReferenceUsedError, match="logprobs.py"):
        run_own_code(dpolab.sequence_logps, logits, labels, mask)

    class Subclassed(dpolab.DPOLoss):  # "implemented" by inheriting the reference
        pass

    with pytest.raises(ReferenceUsedError, match="dpo.py"):
        run_own_code(Subclassed().compute_log_probs, logits, labels, mask)


def test_random_lm_batch_layout():
    logits, labels, mask = random_lm_batch(batch=3, seq_len=8, prompt_len=2, pad_right=2, dtype=torch.float16)
    assert logits.dtype == torch.float16 and labels.dtype == torch.long
    assert mask.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 0, 0]]
    again = random_lm_batch(batch=3, seq_len=8, prompt_len=2, pad_right=2, dtype=torch.float16)
    assert torch.equal(logits, again[0])


def test_batch_with_logps_gives_those_logps():
    from dpolab.grading import batch_with_logps

    want = torch.tensor([-0.1, -1.0, -5.0, -1e-7], dtype=torch.float64)
    logits, labels, mask = batch_with_logps(want, dtype=torch.float64)
    torch.testing.assert_close(dpolab.sequence_logps(logits, labels, mask), want, rtol=1e-7, atol=0)
    with pytest.raises(ValueError, match="logps"):
        batch_with_logps([0.0])


def test_with_correct_log_probs_isolates_forward():
    from dpolab.grading import batch_with_logps, with_correct_log_probs

    class Broken(dpolab.DPOLoss):
        def compute_log_probs(self, logits, labels, loss_mask):
            return torch.zeros(logits.shape[0])

    fixed = with_correct_log_probs(Broken)
    assert fixed.__name__ == "Broken"
    want = torch.tensor([-1e-3, -1.0, -5.0, -1e4], dtype=torch.float64)
    logits, labels, mask = batch_with_logps(want, dtype=torch.float64)
    got = fixed().compute_log_probs(logits, labels, mask)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=0)
    torch.testing.assert_close(got, dpolab.sequence_logps(logits, labels, mask))
    for dtype in (torch.float16, torch.float32, torch.float64):
        out = fixed().compute_log_probs(*batch_with_logps(want, dtype=dtype))
        assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    # forward() with the known-good log-probs is the reference's forward
    chosen, rejected = batch_with_logps([-1.0, -7.0]), batch_with_logps([-3.0, -2.0])
    ref_chosen, ref_rejected = batch_with_logps([-2.0, -6.0])[0], batch_with_logps([-2.5, -2.5])[0]
    args = (chosen[0], rejected[0], chosen[1], rejected[1], chosen[2], rejected[2], ref_chosen, ref_rejected)
    loss, metrics = fixed(beta=0.5, label_smoothing=0.1)(*args)
    want_loss, want_metrics = dpolab.DPOLoss(beta=0.5, label_smoothing=0.1)(*args)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(metrics, want_metrics)
    with pytest.raises(ValueError, match="batch_with_logps"):  # it knows no other batch
        fixed().compute_log_probs(*random_lm_batch())
