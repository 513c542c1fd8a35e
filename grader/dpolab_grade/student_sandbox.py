"""One student's sandbox, with a zygote in it: where every kernel of the student's notebooks runs.

Used by ``dpolab-grade``'s workers (:mod:`dpolab_grade.worker`) and by plain ``nbgrader autograde``
(:mod:`dpolab_grade.nbgrader_sandbox`). The sandbox (:mod:`dpolab_grade.sandbox`: prlimit,
bubblewrap, no network, the student package) is started once per student, with a *zygote*
(:mod:`dpolab_grade.zygote`) in it that imports torch, numpy, matplotlib and ipykernel; the
``python3`` kernelspec written here starts each notebook's kernel as a fork of it. The student's
kernels share one empty work folder (``/home/student`` in the sandbox), as the student's notebooks
share theirs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .sandbox import Limits, kernel_prefix, write_spec

ZYGOTE = Path(__file__).with_name("zygote.py")
SANDBOX_WORK = Path("/home/student")  # the kernels' cwd and HOME in the sandbox
SOCKET_PATH_MAX = 100  # a Unix socket's path: 107 bytes on Linux; "-NNNNN" follows the prefix


class StudentSandbox:
    """The folders of one student's sandbox under ``scratch``, its kernelspec, and its zygote.

    ``transport``: ``ipc`` (the kernels' ZeroMQ sockets in a folder bound into the sandbox, which
    then has no network) or ``tcp`` (loopback, the network shared)."""

    def __init__(
        self,
        scratch: Path,
        *,
        python: str,
        limits: Limits,
        use_bwrap: bool,
        transport: str,
        forbidden: list[Path],
        student_package: Path | None,
    ):
        self.python, self.scratch = python, Path(scratch)
        self.work, self.runtime = self.scratch / "work", self.scratch / "runtime"
        for d in (self.work, self.runtime):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o777)  # the kernel's (sandboxed) user writes here
        self.ipc, self._ipc_cleanup = self._ipc_folder()
        self.socket = str(self.ipc / "zygote")
        self.transport = transport
        shutil.copy(ZYGOTE, self.runtime / "zygote.py")  # visible in the sandbox (runtime is bound)
        self.prefix, self.env = kernel_prefix(
            python=python,
            limits=limits,
            sandbox=use_bwrap,
            work=self.work,
            notebook_dir=SANDBOX_WORK if use_bwrap else self.work,
            runtime=self.runtime,
            forbidden=forbidden,
            student_package=student_package,
            ipc_dir=self.ipc,
            share_net=transport != "ipc",
        )
        # nbgrader starts "python3": a launcher that asks the zygote for a forked kernel
        launcher = [sys.executable, "-I", "-S", str(self.runtime / "zygote.py"), "launch", self.socket]
        write_spec(self.jupyter, launcher + ["{connection_file}"], None, interrupt_by_message=True)
        self.zygote: subprocess.Popen | None = None

    @property
    def jupyter(self) -> Path:
        """The folder with ``kernels/python3/kernel.json`` (for ``JUPYTER_PATH``)."""
        return self.scratch / "jupyter"

    def _ipc_folder(self) -> tuple[Path, Path | None]:
        """The folder of the zygote's socket and the kernels' ipc sockets: ``runtime/ipc``, or a
        shorter one under /tmp when that path is too long for a Unix socket (then removed at the end)."""
        folder = self.runtime / "ipc"
        cleanup = None
        if len(str(folder / "k-65535")) > SOCKET_PATH_MAX:
            folder = cleanup = Path(tempfile.mkdtemp(prefix="dpolab-ipc-", dir="/tmp"))
        if len(str(folder / "k-65535")) > SOCKET_PATH_MAX:  # pragma: no cover
            raise RuntimeError(f"the socket path {folder} is too long")
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o777)  # the kernel's (sandboxed) user creates its sockets here
        return folder, cleanup

    def ensure_zygote(self) -> int:
        """Start the zygote if it is not running (first notebook, or killed with a notebook's
        kernel); its process id (the sandbox's outermost process)."""
        if self.zygote is not None and self.zygote.poll() is None:
            return self.zygote.pid
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        argv = self.prefix + [self.python, str(self.runtime / "zygote.py"), "serve", self.socket]
        print("kernel:", " ".join(argv), flush=True)
        env = self.env or {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.zygote = subprocess.Popen(argv, env=env, cwd=self.work, stdin=subprocess.DEVNULL)
        return self.zygote.pid

    def stop(self) -> None:
        """Stop the zygote (and with it every process of the sandbox); remove a /tmp socket folder."""
        if self.zygote is not None and self.zygote.poll() is None:
            self.zygote.kill()
            self.zygote.wait()
        if self._ipc_cleanup is not None:
            shutil.rmtree(self._ipc_cleanup, ignore_errors=True)
