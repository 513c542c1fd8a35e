"""Throwaway virtual environments for the Colab and Binder tests, and a notebook runner.

A notebook runs with ``nbclient`` from the test process against a kernel whose interpreter
is the throwaway environment's python: what the notebook imports comes from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from notebook_tools import ROOT

# The torch this test run uses: a CPU build that pip finds locally. An unpinned torch would
# pull a multi-GB CUDA build.
TORCH = f"torch=={torch.__version__}"
CONDA_TO_PIP = {"pytorch-cpu": "torch", "pytorch": "torch"}  # conda-forge names that differ


def venv_env(python: Path) -> dict[str, str]:
    """os.environ for running the throwaway venv's ``python``: its bin first, no PYTHONPATH.

    (A PYTHONPATH of the developer's, or the lab's own venv, must not leak into it.)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    return env


def pip_install(python: Path, *args: str, compile: bool = False) -> None:
    """``pip install args`` into ``python``'s venv. Without ``compile``, no .pyc for every installed
    file (torch alone is 15 s of CPU): Python writes those of the modules it imports when it first
    imports them. A venv whose Python runs in the grader's sandbox (read-only there) needs them."""
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += [*([] if compile else ["--no-compile"]), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=venv_env(python))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def make_venv(path: Path, *requirement_groups: list[str], compile: bool = False) -> Path:
    """A fresh venv at ``path``; each group is one ``pip install`` (torch first); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    for group in requirement_groups:
        pip_install(python, *group, compile=compile)
    return python


def conda_environment(path) -> tuple[str, dict[str, SpecifierSet], list[str]]:
    """(python version, {pip name: specifier set}, pip section) of a conda environment file."""
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert env["channels"] == ["conda-forge"], f"{path.name}: conda-forge only"
    python, deps, pip_section = None, {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section.extend(dep["pip"])
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+?)\s*([<>=!~].*)?", dep.strip())
        assert match, f"{path.name}: cannot read {dep!r}"
        name, spec = match.group(1), (match.group(2) or "").replace(" ", "")
        if name == "python":
            python = spec.lstrip("=")
            continue
        if name == "pip":
            continue
        assert not re.match(r"=[^=]", spec), (
            f"{path.name}: write {dep!r} with == (conda's = is a prefix match)"
        )
        deps[canonicalize_name(CONDA_TO_PIP.get(name, name))] = SpecifierSet(spec)
    return python, deps, pip_section


def binder_environment(folder: Path) -> tuple[Path, Path]:
    """The pip equivalent of binder/: a venv with binder/environment.yml's packages by the same
    ranges (torch first: this run's CPU build, as conda-forge's ``pytorch-cpu``), a copy of the
    repository, and binder/postBuild run in it. Returns ``(the venv's python, the copy)``."""
    _, deps, _ = conda_environment(ROOT / "binder" / "environment.yml")
    others = [f"{name}{spec}" for name, spec in sorted(deps.items()) if name != "torch"]
    assert TORCH.split("==")[1] in deps["torch"], f"{TORCH} is outside binder's torch range"
    python = make_venv(folder / "venv", [TORCH], [TORCH, *others])
    checkout = copy_checkout(folder / "checkout", "binder", "solutions", "notebooks", "nbgrader_config.py")
    subprocess.run(
        ["bash", "binder/postBuild"], cwd=checkout, env=venv_env(python), check=True, capture_output=True
    )
    return python, checkout


def copy_checkout(dest: Path, *extra: str) -> Path:
    """pyproject.toml, README.md and lib/ (what a pip install of the repository reads), plus ``extra``."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", "lib", *extra):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    return dest


@contextlib.contextmanager
def once_per_run(tmp_path_factory, name: str):
    """A folder for ``name`` shared by every pytest worker of this run, and whether it is new.

    Yields ``(folder, build)``: ``build`` is True for the one worker that must fill the folder (the
    others wait on a lock until it has, then get ``build=False``). Without xdist, the run's own
    temporary folder. (pytest-xdist's recipe for session fixtures built once.)"""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' folders share this one
    folder, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            yield folder, False
            return
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        yield folder, True
        done.touch()  # only once the builder's block has returned without an error


def kernel_manager(tmp: Path, python: Path, env: dict[str, str]):
    """A factory of kernel managers for a kernel running ``python`` with ``env`` added."""
    name = f"venv-{abs(hash((str(python), tuple(sorted(env.items()))))) % 10**8}"
    spec_dir = tmp / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": name,
        "language": "python",
        "env": env,
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return lambda: KernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])
    )


def run_notebook(nb, new_km, cwd: Path, timeout: int = 300) -> list[tuple[int, str, str, str]]:
    """Execute ``nb`` (all cells, errors allowed) in a fresh kernel from ``new_km()``; its errors,
    ``(cell index, cell id, ename, evalue)`` each."""
    km = new_km()
    try:
        # cleanup_kc: stop the client's channels too (nbclient keeps them when it was given the
        # manager). Left running, a heartbeat thread holds a socket of a zmq context whose
        # garbage collection, later in the test process, waits for it forever (Context.term).
        NotebookClient(
            nb, km=km, timeout=timeout, allow_errors=True, resources={"metadata": {"path": str(cwd)}}
        ).execute(cleanup_kc=True)
    finally:
        if km.has_kernel:  # nbclient leaves a kernel it did not create running
            km.shutdown_kernel(now=True)
    return errors_of(nb)


def errors_of(nb) -> list[tuple[int, str, str, str]]:
    return [
        (i, c.get("id"), o.ename, o.evalue)
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def child_env(python: Path, **extra: str) -> dict[str, str]:
    """The kernel's environment: the venv's bin first on PATH, the CPU, quick mode for long notebooks."""
    env = {
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(python.parent.parent),
        "PYTHONPATH": "",  # empty: ignored by Python, and it hides the test run's own
        "DPOLAB_DEVICE": "cpu",
        "DPOLAB_QUICK": "1",
    }
    env.update(extra)
    return env
