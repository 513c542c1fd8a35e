"""Shared fixtures for the dpolab tests."""

from __future__ import annotations

import pytest
import torch

from dpolab.grading import random_lm_batch  # noqa: F401  (re-exported for the test modules)
from notebook_tools import make_course


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """A copy of the course (this repository's nbgrader_config.py, solutions/) with a freshly
    generated release: the release tests compare it, the grading tests grade submissions in it."""
    return make_course(tmp_path_factory.mktemp("nbgrader"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
