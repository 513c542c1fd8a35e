"""Fail closed: the student's kernel is isolated as asked, or nothing is graded.

One policy for every door: ``dpolab-grade`` (``--sandbox auto|bwrap|none``) and plain ``nbgrader
autograde`` / formgrader (``use_judge(c, sandbox="bwrap"|"none")`` in ``nbgrader_config.py``).

- bubblewrap, the default: where it cannot be used, :func:`resolve_sandbox` raises
  :class:`IsolationError` with the three ways out (install it, the container recipe, or choose
  ``none`` knowingly); nothing is graded.
- ``none``: no file or network isolation, chosen by the instructor. The kernel still imports the
  student package (:mod:`dpolab_grade.student_package`), never the reference:
  :func:`kernel_package` checks what the kernel's Python will import and refuses otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .sandbox import bwrap_available, ipc_unavailable, student_import, student_path


class IsolationError(Exception):
    """The student's kernel cannot be isolated as asked: nothing is graded."""


@dataclass(frozen=True)
class Door:
    """How the instructor spells the choices in this door (for the messages)."""

    mode: str  # the setting that asked for bubblewrap, with {mode}
    none: str  # how to choose no sandbox
    kernel_python: str  # how to choose another kernel environment
    default: str  # the mode when nothing is said


NBGRADER = Door(
    'use_judge(c, sandbox="{mode}")',
    'use_judge(c, sandbox="none")',
    "c.RecordingExecute.kernel_python",
    "bwrap",
)


def refusal(mode: str, why_not: str, door: Door) -> str:
    """What the grader says when bubblewrap is needed and unusable."""
    default = " (the default)" if mode == door.default else ""
    return (
        f"refusing to grade: {door.mode.format(mode=mode)}{default} needs bubblewrap to isolate the student's "
        f"kernel, but {why_not}. Without it, student code could read the solutions, the gradebook and the "
        "other submissions. Nothing was written. To fix it, either\n"
        "  - install bubblewrap: apt-get install bubblewrap (it needs unprivileged user namespaces: "
        "sysctl kernel.unprivileged_userns_clone=1 where that setting exists; in Docker, the "
        "--security-opt flags of docs/instructors.md), or\n"
        "  - grade in the container recipe of docs/instructors.md (section 10, At scale), or\n"
        f"  - pass {door.none} to grade without isolation, knowing the risk (the kernel still "
        "imports the student package, not the reference)"
    )


def resolve_sandbox(mode: str, door: Door) -> tuple[bool, str]:
    """(use bubblewrap?, a line for the log); raises IsolationError where bubblewrap is needed and unusable.

    Fails closed: only ``none`` grades without a sandbox."""
    if mode == "none":
        return False, (
            f"isolation: none ({door.none}): student code can read and write what this user can; "
            "resource limits (prlimit) and the watchdog only"
        )
    if mode not in ("auto", "bwrap"):
        raise IsolationError(f"unknown sandbox {mode!r}: bwrap (auto) or none")
    why_not = bwrap_available()
    if why_not is not None:
        raise IsolationError(refusal(mode, why_not, door))
    return True, "isolation: bubblewrap (private mounts, uid 65534, no capabilities) + prlimit"


def kernel_package(cache: Path, kernel_python: str, use_bwrap: bool, door: Door) -> tuple[Path, str]:
    """The student package the kernel imports as ``dpolab``, and a line for the log.

    Built once per version of dpolab under ``cache`` (:func:`~dpolab_grade.student_package.build_package`).
    With bubblewrap it is mounted over the kernel's ``dpolab`` folder; without, its parent folder
    comes first on the kernel's ``PYTHONPATH``, checked here: IsolationError when the kernel's
    Python would still import another ``dpolab``.
    """
    from .student_package import build_package

    folder = build_package(cache)
    if use_bwrap:
        return folder, f"kernel package: the student dpolab ({folder}), mounted over the kernel's dpolab"
    imported = student_import(kernel_python, folder)
    if imported != os.path.realpath(folder / "__init__.py"):
        raise IsolationError(
            f"refusing to grade: with {student_path(folder)} first on its PYTHONPATH, the kernel's Python "
            f"({kernel_python}) imports dpolab from {imported}, not the student package {folder}. "
            f"Install bubblewrap (then the student package is mounted over it), or choose ({door.kernel_python}) "
            "the Python of an environment without a dpolab that shadows PYTHONPATH"
        )
    return folder, (
        f"kernel package: the student dpolab ({folder}), first on the kernel's PYTHONPATH "
        "(no sandbox: the reference's files can still be read from disk)"
    )


def resolve_transport(use_bwrap: bool) -> tuple[str, str]:
    """(the kernel's transport, a line for the log): ``ipc`` lets the sandbox have no network."""
    why_not = ipc_unavailable(use_bwrap)
    if why_not is None:
        net = "no network in the sandbox" if use_bwrap else "the network is not cut (no sandbox)"
        return "ipc", f"kernel transport: ipc sockets; {net}"
    return "tcp", f"kernel transport: tcp on loopback ({why_not}); the kernel's network is shared"
