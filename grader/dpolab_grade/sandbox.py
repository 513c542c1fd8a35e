"""The student's kernel: resource limits and file isolation.

Every process of a student's sandbox (the zygote and the kernels forked from it,
:mod:`dpolab_grade.student_sandbox`) runs under the command :func:`kernel_prefix` builds:

    prlimit --as=MEMORY --fsize=FILE --core=0 -- [bwrap ...] KERNEL_PYTHON zygote.py serve SOCKET

- ``prlimit``: the address-space limit makes a memory bomb raise ``MemoryError`` (or kill only
  the kernel); the file-size limit caps what the kernel can write.
- ``bwrap`` (bubblewrap, unprivileged user namespaces): a private mount namespace holding only
  the system folders read-only, the kernel's Python (``sys.prefix``, ``sys.base_prefix`` and its
  ``sys.path``) read-only, the runtime folder (connection files) read-only, and one empty
  writable work folder at ``/home/student``, the kernels' cwd and home. The solutions, the gradebook, the other students' submissions, the
  instructor's home and the output folder are simply not there. The kernel runs as uid 65534
  with no capabilities, in its own PID/IPC/UTS namespaces; the environment is cleared.
- No network: the kernel talks to nbgrader over ZeroMQ ``ipc`` sockets (Unix sockets in one
  folder bound writable into the sandbox, :func:`network_argv`), so the sandbox has its own
  network namespace with only a loopback interface: no connection to the grader's ports, to
  the machine's network or to DNS. Where that is impossible (no ``ipc`` in pyzmq, no network
  namespace), the kernel speaks TCP on loopback with the network shared, and the log says so.
- Processes and memory: ``prlimit --nproc`` where the grader is not root (root is exempt from
  it), and, whatever the user, the worker's watchdog (:mod:`dpolab_grade.watchdog`) that
  kills the kernel's whole process tree past ``max_processes`` processes or ``memory_mb`` of
  resident memory (summed over the tree: a forked child has its own address-space limit).

``KERNEL_PYTHON`` is configurable (``--kernel-python``): the student's kernel can run in another
environment than the grader's. Inside bubblewrap the kernel never sees the reference: the
student package (:mod:`dpolab_grade.student_package`) is mounted read-only over the folder
its Python imports ``dpolab`` from (:func:`student_overlay`). Without bubblewrap (only with
``--sandbox none``) its folder comes first on the kernel's ``PYTHONPATH`` (:func:`student_path`):
``import dpolab`` gives the student package, though the reference's files stay readable on disk.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYSTEM_DIRS = ["/usr", "/etc", "/opt"]
SYSTEM_LINKS = {"/bin": "usr/bin", "/sbin": "usr/sbin", "/lib": "usr/lib", "/lib64": "usr/lib64"}


@dataclass
class Limits:
    cell_timeout: int = 60  # seconds per cell (nbgrader's Execute.timeout)
    notebook_timeout: int = 600  # seconds per notebook, kernel start and feedback included
    memory_mb: int = 4096  # address space of the kernel
    file_mb: int = 100  # largest file the kernel may write
    output_chars: int = 20_000  # per output in the graded notebook and the feedback
    threads: int = 1  # OMP/MKL threads in the kernel (jobs x threads <= cores)
    max_processes: int = 64  # processes in the kernel's tree (the watchdog; bwrap's own included)


@functools.cache
def python_paths(python: str) -> tuple[str, ...]:
    """The folders an interpreter needs: its prefixes and its ``sys.path`` (as it sees them)."""
    code = "import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, *sys.path]))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    paths = []
    for p in json.loads(out.stdout):
        p = os.path.realpath(p) if p else ""
        if p and os.path.exists(p) and p not in paths:
            paths.append(p)
    # drop folders inside another one already listed
    return tuple(p for p in paths if not any(p != q and p.startswith(q + os.sep) for q in paths))


@functools.cache
def bwrap_available() -> str | None:
    """Why bubblewrap cannot be used here, or None when it works."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--share-net", "--ro-bind", "/", "/", "--uid", "65534", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"bwrap cannot create a sandbox here: {probe.stderr.strip()[:200]}"
    return None


@functools.cache
def package_folder(python: str, name: str = "dpolab") -> str | None:
    """The folder ``python`` imports package ``name`` from (as it sees it), or None."""
    code = f"import importlib.util as u; s = u.find_spec({name!r}); print(s.submodule_search_locations[0] if s else '')"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/")
    folder = out.stdout.strip()
    return os.path.realpath(folder) if out.returncode == 0 and folder else None


def student_path(student_package: Path) -> str:
    """The kernel's ``PYTHONPATH`` without a sandbox: the folder holding the student ``dpolab`` first.

    ``PYTHONPATH`` comes before site-packages on ``sys.path``, so before an install's ``.pth``
    entries, and the path finder runs before an editable install's finder (appended to
    ``sys.meta_path``). The grader's own ``PYTHONPATH``, if any, follows it."""
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join(filter(None, [str(Path(student_package).parent), inherited]))


def student_import(python: str, student_package: Path) -> str:
    """The file ``python`` imports ``dpolab`` from with :func:`student_path` as its ``PYTHONPATH``
    (what the kernel will import), or why it cannot import it."""
    env = dict(os.environ, PYTHONPATH=student_path(student_package))
    code = "import importlib.util as u; s = u.find_spec('dpolab'); print(s.origin if s else 'no dpolab')"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/", env=env)
    if out.returncode != 0:
        return f"nowhere ({python} failed: {out.stderr.strip()[-200:]})"
    origin = out.stdout.strip()
    return os.path.realpath(origin) if os.path.exists(origin) else origin


def student_overlay(python: str, student_package: Path | None) -> list[str]:
    """bwrap arguments that show ``student_package`` (a ``dpolab`` folder) where ``python`` finds dpolab.

    Mounted over the kernel's own ``dpolab`` folder (for an editable install, ``<repo>/lib/dpolab``),
    after the binds of the Python paths: ``import dpolab`` in the kernel gives the student
    package, and the reference's files (sources and ``__pycache__``) are not there. A build's
    ``dpolab.egg-info`` beside that folder (its SOURCES.txt names the reference's files) is
    hidden under an empty tmpfs.
    """
    if student_package is None:
        return []
    target = package_folder(python)
    if target is None:
        raise RuntimeError(f"{python} cannot import dpolab: the student's kernel needs it")
    argv = ["--ro-bind", str(student_package), target]
    for info in sorted(Path(target).parent.glob("dpolab*.egg-info")):
        argv += ["--tmpfs", str(info)]
    return argv


def ipc_unavailable(sandbox: bool) -> str | None:
    """Why the kernel cannot talk over ``ipc`` sockets without a network, or None when it can."""
    try:
        import zmq
    except ImportError as err:  # pragma: no cover
        return str(err)
    if not zmq.has("ipc"):
        return "pyzmq has no ipc transport here"
    if sandbox:
        probe = subprocess.run(
            ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--uid", "65534", "true"],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            return f"bwrap cannot create a network namespace here: {probe.stderr.strip()[:200]}"
    return None


def network_argv(ipc_dir: Path | None, share_net: bool = False) -> list[str]:
    """bwrap's network: none, with the folder of the ipc sockets bound writable (same path inside);
    shared when there is no ipc folder, or when asked (the kernel then speaks TCP on loopback)."""
    if ipc_dir is None:
        return ["--share-net"]
    return ["--bind", str(ipc_dir), str(ipc_dir)] + (["--share-net"] if share_net else [])


def limit_argv(limits: Limits) -> list[str]:
    """``prlimit``: address space, file size, no core dumps; processes where the grader is not root.

    ``RLIMIT_NPROC`` counts every task (threads included) of the real user, and root is exempt
    from it: it is a backstop against a fork bomb outrunning the watchdog's poll, set well above
    what the user runs now. The precise limit (``max_processes``) is the watchdog's."""
    if not shutil.which("prlimit"):  # util-linux; without it the kernel runs without rlimits
        return []
    argv = ["prlimit", f"--as={limits.memory_mb * 2**20}", f"--fsize={limits.file_mb * 2**20}", "--core=0"]
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        from .watchdog import user_tasks

        argv.append(f"--nproc={user_tasks() + 16 * limits.max_processes}")
    return argv + ["--"]


def bwrap_argv(
    python: str,
    work: Path,
    notebook_dir: Path,
    runtime: Path,
    forbidden: list[Path],
    student_package: Path | None = None,
    ipc_dir: Path | None = None,
    share_net: bool = False,
) -> list[str]:
    """The bubblewrap command: ``work`` (writable) appears at ``notebook_dir``, nothing else of ours."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    for d in SYSTEM_DIRS:
        argv += ["--ro-bind-try", d, d]
    for link, target in SYSTEM_LINKS.items():
        argv += ["--symlink", target, link] if os.path.islink(link) else ["--ro-bind-try", link, link]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    real_forbidden = [os.path.realpath(f) for f in forbidden]
    for p in python_paths(python):
        clash = [f for f in real_forbidden if f == p or f.startswith(p + os.sep)]
        if clash:  # e.g. a sys.path entry that is the course root itself: leave it out
            continue
        argv += ["--ro-bind", p, p]
    argv += student_overlay(python, student_package)
    argv += ["--ro-bind", str(runtime), str(runtime)]
    argv += network_argv(ipc_dir, share_net)
    argv += ["--bind", str(work), str(notebook_dir), "--chdir", str(notebook_dir)]
    argv += ["--uid", "65534", "--gid", "65534", "--cap-drop", "ALL", "--clearenv"]
    return argv


def kernel_env(limits: Limits, home: Path) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "NBGRADER_EXECUTION": "autograde",
        "DPOLAB_RECORDS": "1",  # the hidden tests send their records (dpolab.records)
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(limits.threads)
    if "DPOLAB_DEVICE" in os.environ:
        env["DPOLAB_DEVICE"] = os.environ["DPOLAB_DEVICE"]
    if os.environ.get("PYTHONPATH"):
        # the kernel's Python finds its packages where python_paths and package_folder found them
        # (they ran with this environment): the same folders, bound read-only in the sandbox
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def kernel_prefix(
    *,
    python: str,
    limits: Limits,
    sandbox: bool,
    work: Path,
    notebook_dir: Path,
    runtime: Path,
    forbidden: list[Path],
    student_package: Path | None = None,
    ipc_dir: Path | None = None,
    share_net: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """What runs a command as the student's kernel: (the argv before ``python ...``, the environment).

    With ``sandbox``, the environment is set inside bubblewrap (``--setenv``) and the one returned
    is empty; without, it is the environment the command must be given."""
    argv = limit_argv(limits)
    env = kernel_env(limits, work if not sandbox else notebook_dir)
    if not sandbox and shutil.which("setpriv"):
        # jupyter_client starts kernels in their own session: when the runner kills a worker at
        # the notebook's wall-clock limit, its kernel must die too (bwrap does this itself).
        argv += ["setpriv", "--pdeathsig", "KILL", "--"]
    if sandbox:
        argv += bwrap_argv(
            python, work, notebook_dir, runtime, forbidden, student_package, ipc_dir, share_net
        )
        for key, value in env.items():  # --clearenv: the sandbox sees only these
            argv += ["--setenv", key, value]
        return argv, {}
    if student_package is not None:  # no sandbox to mount it: found first on sys.path instead
        env["PYTHONPATH"] = student_path(student_package)
    return argv, env


def write_spec(
    jupyter_dir: Path, argv: list[str], env: dict[str, str] | None, interrupt_by_message: bool
) -> None:
    """``jupyter_dir/kernels/python3/kernel.json``: the ``python3`` kernel that nbgrader starts."""
    spec = {"argv": argv, "display_name": "Python 3 (dpolab-grade)", "language": "python"}
    if interrupt_by_message:
        # A SIGINT sent to bwrap is not forwarded into its PID namespace (nor one sent to a zygote's
        # launcher to the kernel): the interrupt that ends a cell at its timeout goes as a message
        # on the control channel instead.
        spec["interrupt_mode"] = "message"
    if env:
        spec["env"] = env
    folder = jupyter_dir / "kernels" / "python3"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
