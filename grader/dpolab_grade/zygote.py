"""Kernels forked from one warm process: a student's notebooks pay ``import torch`` once.

    python zygote.py serve SOCKET            # in the student's sandbox: imports, then waits
    python zygote.py launch SOCKET CONNFILE  # the kernelspec's command: one kernel, forked

A fresh kernel spends about 2.5 s of CPU importing torch, numpy and ipykernel before the
notebook's first line runs; the four notebooks of a submission paid it four times. The worker
(:mod:`dpolab_grade.worker`) starts one *zygote* per student, inside the student's sandbox and
limits, which imports them once and never runs student code. Each notebook's kernel is then
``os.fork()`` of it: a fresh process with its own memory, in its own session, whose Python state
is the zygote's (nothing of the previous notebook's kernel: that one was a sibling, and is gone).
The random generators that Python and numpy seed from the OS at import are seeded again in the
child, as a new process would have them.

``launch`` runs outside the sandbox as the kernel manager's process: it asks the zygote for a
kernel over a Unix socket, prints nothing, and lives as long as the kernel. When the kernel
manager stops it (or the worker is killed), the socket closes and the zygote kills the kernel's
whole session; when the kernel exits, ``launch`` exits with its status. Interrupts go as
messages on the control channel (the kernelspec's ``interrupt_mode``), not as signals.

Only the standard library is imported at the top: ``launch`` must start in milliseconds (it runs
with ``python -I -S``), and ``serve`` runs with the kernel's Python, which may be another
environment than the grader's (``--kernel-python``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

# What the lab's notebooks import first; imported once, in the zygote. (matplotlib with the
# kernel's backend, Agg: its font cache is built once too.)
PRELOAD = [
    "numpy", "torch", "matplotlib.pyplot", "IPython", "ipykernel.kernelapp",
    "dpolab", "dpolab.grading", "dpolab.plotting",
]  # fmt: skip


def serve(path: str) -> None:
    import ctypes
    import importlib

    try:  # orphans of a kernel come to the zygote, which kills and reaps them after each kernel
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # pragma: no cover
        pass

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as err:  # e.g. no dpolab: the kernel's own import will say so
            print(f"zygote: {name} not preloaded ({type(err).__name__}: {err})", flush=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".tmp")
    os.rename(path + ".tmp", path)  # the socket appears only once it is bound: the worker waits for it
    server.listen(4)
    while True:
        conn, _ = server.accept()
        # the request, and the launcher's stdout and stderr: the kernel writes its log where
        # the launcher's would go (the notebook's log)
        data, fds, _, _ = socket.recv_fds(conn, 65536, 2)
        request = json.loads(data.decode())
        pid = os.fork()
        if pid == 0:
            server.close()
            conn.close()
            for fd, target in zip(fds, (1, 2), strict=False):  # fewer if the launcher had none
                os.dup2(fd, target)
            _kernel(request["connection_file"])  # never returns
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        status = _watch(conn, pid)
        try:
            conn.sendall(json.dumps({"exit": status}).encode() + b"\n")
        except OSError:
            pass
        conn.close()


def _kernel(connection_file: str) -> None:
    """In the forked child: a new session, fresh seeds, then ipykernel as ``ipykernel_launcher`` runs it."""
    try:
        os.setsid()
        import random

        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ipykernel import kernelapp

        sys.argv = ["ipykernel_launcher", "-f", connection_file]
        kernelapp.launch_new_instance(argv=["-f", connection_file])
        code = 0
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _watch(conn: socket.socket, pid: int) -> int:
    """Wait for the kernel to exit, or for ``launch`` to go (then kill the kernel's session)."""
    conn.settimeout(0.1)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _kill_session(pid)  # what the kernel left behind in its session
            return os.waitstatus_to_exitcode(status)
        try:
            if conn.recv(1) == b"":  # launch was stopped: the kernel goes too
                _kill_session(pid)
                os.waitpid(pid, 0)
                return -signal.SIGKILL
        except TimeoutError:
            continue
        except OSError:
            _kill_session(pid)
            os.waitpid(pid, 0)
            return -signal.SIGKILL


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # reap what the kernel forked and left (orphans come here: the zygote is their subreaper)
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not done:
            return


def launch(path: str, connection_file: str) -> int:
    """Ask the zygote at ``path`` for a kernel; exit when it does (status), or when stopped."""
    deadline = time.monotonic() + 120
    while True:
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            break
        except OSError:
            conn.close()
            if time.monotonic() > deadline:
                print(f"zygote: no zygote at {path}", file=sys.stderr)
                return 1
            time.sleep(0.05)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # closing the socket stops the kernel
    socket.send_fds(conn, [json.dumps({"connection_file": connection_file}).encode()], [1, 2])
    reader = conn.makefile()
    for line in reader:
        message = json.loads(line)
        if "exit" in message:
            status = message["exit"]
            return status if status >= 0 else 128 - status
    return 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(launch(sys.argv[2], sys.argv[3]))
