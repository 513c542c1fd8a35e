"""dpolab-grade's sandbox in plain ``nbgrader autograde`` and formgrader.

``use_judge(c)`` (:mod:`dpolab_grade.pipeline`) puts :class:`~dpolab_grade.preprocessors.RecordingExecute`
in nbgrader's autograde pipeline; it starts each student's kernels through a :class:`KernelSandbox`,
exactly as ``dpolab-grade``'s workers do (:mod:`dpolab_grade.student_sandbox`): ``prlimit``
(memory, file size, processes), bubblewrap (no solutions, gradebook, home or other submissions in
sight, uid 65534, no capabilities), no network (ipc sockets), the student package mounted over the
kernel's ``dpolab``, a zygote that imports torch once per student, and a watchdog on the sandbox's
process tree (processes and resident memory) while a notebook runs. Where bubblewrap cannot be
used, nothing is graded (:mod:`dpolab_grade.isolation`) unless the config says
``use_judge(c, sandbox="none")``.

nbgrader grades a student's notebooks one after another: the sandbox lives as long as the student
(its scratch folder under ``/tmp`` holds the kernelspec, the connection files, the sockets and
the kernels' work folder), and goes when the next student comes, after ``IDLE_SECONDS`` without a
notebook (a formgrader server keeps nothing running), or when the process exits.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from .isolation import NBGRADER, kernel_package, resolve_sandbox, resolve_transport
from .sandbox import Limits
from .student_sandbox import StudentSandbox
from .watchdog import Watchdog

IDLE_SECONDS = 30


class KernelSandbox:
    """The sandbox of one student's kernels, for nbgrader's kernel manager.

    Raises :class:`~dpolab_grade.isolation.IsolationError` when ``mode`` cannot be had."""

    def __init__(
        self, mode: str, limits: Limits, kernel_python: str, cache: Path, forbidden: list[Path], log=None
    ):
        self.limits = limits
        use_bwrap, isolation_line = resolve_sandbox(mode, NBGRADER)
        package, package_line = kernel_package(cache, kernel_python, use_bwrap, NBGRADER)
        transport, network_line = resolve_transport(use_bwrap)
        if log is not None:
            for line in (isolation_line, package_line, network_line):
                log.info("dpolab: %s", line)
        self.scratch = Path(tempfile.mkdtemp(prefix="dpolab-kernel-"))
        self.student = StudentSandbox(
            self.scratch, python=kernel_python, limits=limits, use_bwrap=use_bwrap, transport=transport,
            forbidden=forbidden, student_package=package,
        )  # fmt: skip
        self.watchdog: Watchdog | None = None
        self.closed = False
        atexit.register(self.close)

    def kernel_manager(self, cls, config):
        """A kernel manager of class ``cls`` whose ``python3`` kernel is a fork of the zygote."""
        from jupyter_client.kernelspec import KernelSpecManager

        specs = KernelSpecManager(kernel_dirs=[str(self.student.jupyter / "kernels")], config=config)
        km = cls(kernel_name="python3", kernel_spec_manager=specs, config=config)
        # in the folder bound read-only into the sandbox
        km.connection_file = str(self.student.runtime / f"kernel-{uuid.uuid4().hex[:8]}.json")
        if self.student.transport == "ipc":  # sockets in the folder bound into the sandbox, not TCP ports
            km.transport = "ipc"
            km.ip = str(self.student.ipc / "k")
        return km

    def start_notebook(self) -> None:
        """Before a notebook: the zygote running, and a watchdog on the sandbox's processes."""
        root = self.student.ensure_zygote()
        self.watchdog = Watchdog(
            self.limits.max_processes, self.limits.memory_mb, root=root, root_counts=True
        )
        self.watchdog.start()

    def end_notebook(self) -> str | None:
        """After it: the watchdog stopped; its reason, if it killed the kernels."""
        reason = None
        if self.watchdog is not None:
            self.watchdog.stop()
            reason = self.watchdog.reason
            self.watchdog = None
        return reason

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.end_notebook()
        self.student.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


class Sandboxes:
    """The sandbox of the student being graded now, kept across their notebooks."""

    def __init__(self):
        self.key = None
        self.current: KernelSandbox | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def get(self, key, make) -> KernelSandbox:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            if self.current is not None and (self.key != key or self.current.closed):
                self.current.close()
                self.current = None
            if self.current is None:
                self.current, self.key = make(), key
            return self.current

    def idle(self) -> None:
        """A notebook is done: close the sandbox unless another notebook comes soon."""
        with self._lock:
            self._timer = threading.Timer(IDLE_SECONDS, self._close)
            self._timer.daemon = True
            self._timer.start()

    def _close(self) -> None:
        with self._lock:
            if self.current is not None:
                self.current.close()
                self.current = None
