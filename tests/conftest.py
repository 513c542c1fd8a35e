"""Shared fixtures: seeded random inputs for the loss tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_lm_batch(batch=4, seq_len=10, vocab=17, prompt_len=3, dtype=torch.float32, pad_right=2, seed=0):
    """Logits, labels and a loss mask: ``prompt_len`` prompt tokens, then response, then padding.

    Row i has ``pad_right - (i % (pad_right + 1))`` padding positions so lengths differ.
    """
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq_len, vocab, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq_len), generator=g)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    for i in range(batch):
        end = seq_len - (i % (pad_right + 1))
        mask[i, prompt_len:end] = 1
    return logits, labels, mask
