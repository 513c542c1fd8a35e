"""A kernel client that looks for a kernel's message at least once a second.

nbclient (nbgrader's ``Execute``) waits for a cell's ``execute_reply`` with one asyncio ``poll``
of the shell socket for the cell's whole timeout. That poll can miss its wake-up: ZeroMQ
signals a socket's file descriptor on an edge, and nbclient also *sends* on the shell socket
while a cell runs (it answers for the ``Output`` widget of ``ipywidgets.interact``, as a browser
would). A reply that arrives during such a send sits in the socket, unseen, until the poll's
timeout ends, when pyzmq looks once more and finds it (nbclient issue #312). Notebook 01's
``interact`` cell did this in 4 of 22 plain ``nbgrader autograde`` runs on a busy 2-core machine:
the cell took its whole 60 s timeout, and then the grades were right. With this client, none of
68 runs took more than 7 s.

:class:`PollingChannel` polls in slices of at most one second, so a missed wake-up costs at most
a second. :class:`~dpolab_grade.preprocessors.RecordingExecute` gives every kernel it starts
this client, in ``dpolab-grade`` and in plain nbgrader with ``use_judge(c)``.
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import Type

SLICE = 1.0  # seconds: the longest a message can wait unseen in the socket


class PollingChannel(AsyncZMQSocketChannel):
    """A channel whose ``get_msg(timeout)`` polls in slices of at most :data:`SLICE` seconds."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else max(0.0, min(SLICE, deadline - time.monotonic()))
            try:
                return await super().get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class PollingKernelClient(AsyncKernelClient):
    """nbclient's asyncio kernel client, with :class:`PollingChannel` for every ZeroMQ channel."""

    shell_channel_class = Type(PollingChannel)
    iopub_channel_class = Type(PollingChannel)
    stdin_channel_class = Type(PollingChannel)
    control_channel_class = Type(PollingChannel)
