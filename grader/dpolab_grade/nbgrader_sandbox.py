"""dpolab-grade's sandbox in plain ``nbgrader autograde`` and formgrader.

``use_judge(c)`` (:mod:`dpolab_grade.pipeline`) puts :class:`~dpolab_grade.preprocessors.RecordingExecute`
in nbgrader's autograde pipeline; for each notebook it starts the student's kernel through a
:class:`KernelSandbox`, exactly as ``dpolab-grade``'s workers do (:mod:`dpolab_grade.sandbox`):
``prlimit`` (memory, file size, processes), bubblewrap (no solutions, gradebook, home or other
submissions in sight, uid 65534, no capabilities), no network (ipc sockets), the student package
mounted over the kernel's ``dpolab``, and a watchdog on the kernel's process tree (processes and
resident memory). Where bubblewrap cannot be used, nothing is graded (:mod:`dpolab_grade.isolation`)
unless the config says ``use_judge(c, sandbox="none")``.

Each kernel gets a scratch folder under ``/tmp`` (its kernelspec, its connection file, its ipc
sockets and an empty work folder that the sandbox shows at ``/home/student``, the kernel's cwd);
it is removed when the notebook is done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .isolation import NBGRADER, kernel_package, resolve_sandbox, resolve_transport
from .sandbox import Limits, write_kernelspec
from .watchdog import Watchdog

# Where the kernel's empty work folder appears in the sandbox, and its cwd and HOME: not the
# notebook's folder in the course (whose parents would then exist, empty, inside the sandbox).
SANDBOX_WORK = Path("/home/student")


class KernelSandbox:
    """The sandboxed kernel of one notebook: its scratch folder, its kernel manager, its watchdog.

    Raises :class:`~dpolab_grade.isolation.IsolationError` when ``mode`` cannot be had."""

    def __init__(
        self,
        mode: str,
        limits: Limits,
        kernel_python: str,
        cache: Path,
        notebook_dir: Path,
        forbidden: list[Path],
        log=None,
    ):
        self.limits = limits
        self.use_bwrap, isolation_line = resolve_sandbox(mode, NBGRADER)
        package, package_line = kernel_package(cache, kernel_python, self.use_bwrap, NBGRADER)
        transport, network_line = resolve_transport(self.use_bwrap)
        if log is not None:
            for line in (isolation_line, package_line, network_line):
                log.info("dpolab: %s", line)
        self.scratch = Path(tempfile.mkdtemp(prefix="dpolab-kernel-"))
        work, self.runtime = self.scratch / "work", self.scratch / "runtime"
        self.ipc = self.scratch / "ipc" if transport == "ipc" else None
        for folder in (work, self.runtime, self.ipc):
            if folder is not None:
                folder.mkdir()
        os.chmod(work, 0o777)  # the kernel's (sandboxed) user writes here
        if self.ipc is not None:
            os.chmod(self.ipc, 0o777)  # and creates its sockets here
        self.argv = write_kernelspec(
            self.scratch / "jupyter",
            python=kernel_python,
            limits=limits,
            sandbox=self.use_bwrap,
            work=work,
            notebook_dir=SANDBOX_WORK if self.use_bwrap else Path(notebook_dir).resolve(),
            runtime=self.runtime,
            forbidden=forbidden,
            student_package=package,
            ipc_dir=self.ipc,
        )
        self.watchdog: Watchdog | None = None

    def kernel_manager(self, cls, config):
        """A kernel manager of class ``cls`` that starts this sandbox's ``python3`` kernelspec."""
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager(kernel_dirs=[str(self.scratch / "jupyter" / "kernels")], config=config)
        km = cls(kernel_name="python3", kernel_spec_manager=specs, config=config)
        km.connection_file = str(self.runtime / "kernel.json")  # bound read-only into the sandbox
        if self.ipc is not None:  # sockets in the folder bound into the sandbox, not TCP ports
            km.transport = "ipc"
            km.ip = str(self.ipc / "k")
        return km

    def watch(self, pid: int) -> None:
        """Watch the kernel's process tree (the kernel's own process included) from now on."""
        self.watchdog = Watchdog(self.limits.max_processes, self.limits.memory_mb, root=pid, root_counts=True)
        self.watchdog.start()

    def close(self) -> str | None:
        """Stop the watchdog, remove the scratch folder; the watchdog's reason, if it killed the kernel."""
        reason = None
        if self.watchdog is not None:
            self.watchdog.stop()
            reason = self.watchdog.reason
        shutil.rmtree(self.scratch, ignore_errors=True)
        return reason
