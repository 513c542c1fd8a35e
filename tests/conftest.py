"""Shared fixtures for the dpolab tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest
import torch

from dpolab.grading import random_lm_batch  # noqa: F401  (re-exported for the test modules)
from notebook_tools import make_course


def pytest_configure(config):
    """The kernels of this run (nbval's, nbclient's, plain nbgrader's) keep their IPython profile
    and history in a folder of the run, one per pytest worker, and not in ``~/.ipython``: nothing
    of the run is left in the developer's home, and no history database is shared between workers."""
    config.ipython_dir = tempfile.mkdtemp(prefix="dpolab-tests-ipython-")
    os.environ["IPYTHONDIR"] = config.ipython_dir


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "ipython_dir", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """A copy of the course (this repository's nbgrader_config.py, solutions/) with a freshly
    generated release: the release tests compare it, the grading tests grade submissions in it."""
    return make_course(tmp_path_factory.mktemp("nbgrader"))


# What a fresh environment holding the lab alone says of itself: the grader's module and package
# (none) and dpolab's version.
LAB_ONLY_CHECK = (
    "import importlib.util as u, dpolab; "
    "print(u.find_spec('dpolab.autograde'), u.find_spec('dpolab_grade'), dpolab.__version__)"
)


@pytest.fixture(scope="session")
def grader_venv(tmp_path_factory) -> dict:
    """:func:`build_grader_venv`, as a fixture."""
    return build_grader_venv(tmp_path_factory)


def build_grader_venv(tmp_path_factory) -> dict:
    """A fresh venv (torch first, the CPU build of this run) with the lab alone installed from a copy
    of the repository, then the grader from that copy's own folder (``pip install ./grader``).
    Built once per test run (tests/test_grader_install.py and tests/test_grading_flows.py use it):
    ``{"python": its python, "lab_only": (LAB_ONLY_CHECK's exit code, stdout, stderr) and
    "scripts_before": its dpolab* commands, both before the grader was installed}``."""
    from venv_tools import TORCH, copy_checkout, make_venv, once_per_run, pip_install, venv_env

    with once_per_run(tmp_path_factory, "grader-venv") as (folder, build):
        if build:
            checkout = copy_checkout(folder / "checkout", "grader")
            shutil.rmtree(checkout / "grader" / "dpolab_grade.egg-info", ignore_errors=True)
            # compiled: its kernels import torch in the sandbox, where they cannot write .pyc files
            python = make_venv(folder / "venv", [TORCH], [str(checkout)], compile=True)
            lab_only = subprocess.run(
                [str(python), "-c", LAB_ONLY_CHECK], capture_output=True, text=True, env=venv_env(python)
            )
            before = sorted(p.name for p in python.parent.glob("dpolab*"))
            pip_install(python, str(checkout / "grader"), compile=True)
            (folder / "before.json").write_text(
                json.dumps({"lab_only": [lab_only.returncode, lab_only.stdout, lab_only.stderr],
                            "scripts_before": before})
            )  # fmt: skip
    return {"python": folder / "venv" / "bin" / "python", **json.loads((folder / "before.json").read_text())}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The slowest test files first (about the seconds each took on a 2-core machine, one pytest worker
# each), then the rest in pytest's order, and last the one that waits for a venv another builds:
# `make test` runs three pytest-xdist workers, each taking whole files, with --no-loadscope-reorder.
# Started last, one of the slow ones would leave the other worker idle at the end.
SLOWEST_FIRST = [
    "tests/test_grading_flows.py",  # 400 (it builds conftest's grader_venv while the term goes on)
    "tests/test_browser.py",  # 300 (it builds the Binder environment first)
    "tests/test_grade_cli.py",  # 130
    "tests/test_grade_shards.py",  # 100
    "tests/test_colab.py",  # 100
    "solutions/lab_3_1_5_dpo/05_what_dpo_optimises.ipynb",  # 75 (nbval)
    "tests/test_graded_course.py",  # 90
    "tests/test_nbgrader_sandbox.py",  # 75
    "tests/test_notebooks.py",  # 60
    "solutions/lab_3_1_5_dpo/04_train_with_dpo.ipynb",  # 55 (nbval)
    "tests/test_grade_writes_only_out.py",  # 40
    "tests/test_fail_closed.py",  # 30
    "tests/test_train_cli.py",  # 30
]
LAST = ["tests/test_grader_install.py"]  # grader_venv: built by test_grading_flows.py meanwhile


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    rank.update({path: len(SLOWEST_FIRST) + 1 for path in LAST})
    # a stable sort: within a file, and among the files not named, pytest's order stays
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(SLOWEST_FIRST)))
