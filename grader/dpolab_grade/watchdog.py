"""The worker's watchdog: the student's kernel, its processes and its resident memory, from outside.

``prlimit --as`` limits each process's address space, not a tree: a kernel that forks gets
one more allowance per child, and root is exempt from ``RLIMIT_NPROC``. So the worker (the
kernel's parent, outside the sandbox) polls every process below it a few times a second:

- more than ``max_processes`` processes (bubblewrap's own two included), or
- more than ``memory_mb`` of resident memory summed over them (proportional set size: pages a
  forked child shares with its parent count once),

and the whole tree is stopped and killed; the reason goes into the ``ungradable`` row. The
worker makes itself a child subreaper, so a process that double-forks out of the kernel stays
below it (inside bubblewrap's PID namespace it stays there anyway).

The process tree and its memory are read with psutil. In ``dpolab-grade`` the tree is the worker's
(``root`` = the worker, a subreaper); in plain ``nbgrader autograde`` (formgrader's process) it is
the kernel's own (``root`` = the kernel's process): the server's other children are not its business.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import psutil


def become_subreaper() -> None:
    """Orphans of the kernel's tree are re-parented to this process, not to init (Linux)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):  # pragma: no cover
            pass


def user_tasks(uid: int | None = None) -> int:
    """Tasks (threads included) of a real user now: what ``RLIMIT_NPROC`` counts."""
    uid = os.getuid() if uid is None else uid
    n = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        uids = proc.info["uids"]
        if uids is not None and uids.real == uid:
            n += proc.info["num_threads"] or 1
    return n


# ----------------------------------------------------------------------------- the tree
def descendants(root: int, include_root: bool = False) -> list[int]:
    """Every process below ``root`` (its children, theirs, ...), and ``root`` itself if asked."""
    try:
        proc = psutil.Process(root)
        return ([root] if include_root else []) + [p.pid for p in proc.children(recursive=True)]
    except psutil.Error:
        return []


def resident_mb(pids: list[int], proportional: bool) -> float:
    """Resident memory of ``pids`` in MB: RSS (cheap, counts shared pages in each process) or PSS
    (a page shared by a forked child and its parent counts once; Linux)."""
    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proportional and hasattr(psutil.Process, "memory_full_info"):
                info = proc.memory_full_info()
                total += getattr(info, "pss", info.rss)
            else:
                total += proc.memory_info().rss
        except psutil.Error:  # gone, or not ours to read
            continue
    return total / 2**20


def kill_tree(root: int, rounds: int = 20, include_root: bool = False) -> None:
    """Stop every process below ``root`` (so that none forks again), then kill them all."""
    for _ in range(rounds):
        pids = descendants(root, include_root)
        if not pids:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass


# ----------------------------------------------------------------------------- the watchdog
class Watchdog(threading.Thread):
    """Polls the processes below ``root`` (default: this process) every ``interval`` s; kills
    them past the limits. ``root_counts``: the root is the kernel itself, counted and killed too.

    ``reason`` is None, or the plain words of why the tree was killed."""

    def __init__(
        self,
        max_processes: int,
        memory_mb: int,
        interval: float = 0.25,
        root: int | None = None,
        root_counts: bool = False,
        cpu: dict[int, float] | None = None,
    ):
        super().__init__(name="dpolab-watchdog", daemon=True)
        self.max_processes = max_processes
        self.memory_mb = memory_mb
        self.interval = interval
        self.root = os.getpid() if root is None else root
        self.root_counts = root_counts
        self.reason: str | None = None
        self.peak_processes = 0
        self.peak_mb = 0.0
        # the CPU seconds last seen of each process of the tree (``cpu``: shared with other watchdogs)
        self._cpu: dict[int, float] = {} if cpu is None else cpu
        self._stop_event = threading.Event()

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the tree's processes, as last seen (up to one poll late for each)."""
        return sum(self._cpu.values())

    def check(self) -> str | None:
        pids = descendants(self.root, self.root_counts)
        self.peak_processes = max(self.peak_processes, len(pids))
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
                self._cpu[pid] = times.user + times.system
            except psutil.Error:
                pass
        if len(pids) > self.max_processes:
            return f"the notebook started more than {self.max_processes} processes"
        mb = resident_mb(pids, proportional=False)
        if mb > self.memory_mb:  # RSS >= PSS: only then is the exact figure worth reading
            mb = resident_mb(pids, proportional=True)
        self.peak_mb = max(self.peak_mb, mb)
        if mb > self.memory_mb:
            return f"the notebook used more than {self.memory_mb} MB of memory"
        return None

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                reason = self.check()
            except Exception as err:  # a process vanished mid-read, or the like: poll again
                print(f"watchdog: {err!r}", file=sys.stderr, flush=True)
                continue
            if reason:
                if self.reason is None:
                    self.reason = reason
                    print(f"watchdog: {reason}: killing the kernel", flush=True)
                kill_tree(self.root, include_root=self.root_counts)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()
