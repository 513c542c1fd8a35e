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

psutil when it is installed, otherwise ``/proc`` (Linux).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if d.stat().st_uid == uid:
                n += int(_status(d.name).get("Threads", "1"))
        except (OSError, ValueError):
            continue
    return n


def _status(pid) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


# ----------------------------------------------------------------------------- the tree
def descendants(root: int) -> list[int]:
    """Every process below ``root`` (its children, theirs, ...)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(root).children(recursive=True)]
        except psutil.Error:
            return []
    children: dict[int, list[int]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def resident_mb(pids: list[int], proportional: bool) -> float:
    """Resident memory of ``pids`` in MB: RSS (cheap, counts shared pages in each process) or PSS."""
    total = 0
    for pid in pids:
        try:
            if proportional:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
            else:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * PAGE
        except (OSError, StopIteration, ValueError, IndexError):
            if not os.path.exists(f"/proc/{pid}"):
                continue
            try:  # no /proc files to read (not Linux, or not allowed): psutil's RSS
                import psutil

                total += psutil.Process(pid).memory_info().rss
            except Exception:
                continue
    return total / 2**20


def kill_tree(root: int, rounds: int = 20) -> None:
    """Stop every process below ``root`` (so that none forks again), then kill them all."""
    for _ in range(rounds):
        pids = descendants(root)
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
    """Polls the processes below this one every ``interval`` s; kills them past the limits.

    ``reason`` is None, or the plain words of why the tree was killed."""

    def __init__(self, max_processes: int, memory_mb: int, interval: float = 0.25):
        super().__init__(name="dpolab-watchdog", daemon=True)
        self.max_processes = max_processes
        self.memory_mb = memory_mb
        self.interval = interval
        self.reason: str | None = None
        self.peak_processes = 0
        self.peak_mb = 0.0
        self._stop_event = threading.Event()

    def check(self) -> str | None:
        pids = descendants(os.getpid())
        self.peak_processes = max(self.peak_processes, len(pids))
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
                kill_tree(os.getpid())

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()
