"""Shared fixtures for the dpolab tests."""

from __future__ import annotations

import pytest
import torch

from dpolab.grading import random_lm_batch  # noqa: F401  (re-exported for the test modules)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
