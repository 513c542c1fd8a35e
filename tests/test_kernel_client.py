"""The grader's kernel client: a message whose wake-up was missed is found within a second.

(Why: ``dpolab_grade/kernel_client.py``. The miss itself depends on timing; here the socket's
first poll is made to miss a message that is already there, as it does when the edge is lost.)
"""

from __future__ import annotations

import asyncio
import time
from queue import Empty

import zmq
import zmq.asyncio
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.session import Session

from dpolab_grade.kernel_client import SLICE, PollingChannel, PollingKernelClient


async def _receive(channel_class, timeout: float | None) -> tuple[str | None, float]:
    """An ``execute_reply`` waiting in the socket, and a first poll that does not see it: what
    ``channel_class(...).get_msg(timeout)`` returns (None: Empty) and how long it took."""
    context = zmq.asyncio.Context()
    receiver = context.socket(zmq.PAIR)
    sender = zmq.Context.shadow(context.underlying).socket(zmq.PAIR)  # same context: inproc
    try:
        receiver.bind("inproc://reply")
        sender.connect("inproc://reply")
        session = Session()
        session.send(sender, "execute_reply", {"status": "ok"})
        real_poll, polls = receiver.poll, []

        async def poll(timeout=None, flags=zmq.POLLIN):
            polls.append(timeout)
            if len(polls) == 1:  # the lost edge: this poll sleeps its whole time and sees nothing
                await asyncio.sleep(timeout / 1000)
                return 0
            return await real_poll(timeout, flags)

        receiver.poll = poll
        channel = channel_class(receiver, session)
        start = time.monotonic()
        try:
            got = (await channel.get_msg(timeout=timeout))["msg_type"]
        except Empty:
            got = None
        return got, time.monotonic() - start
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()


def test_a_missed_wake_up_costs_at_most_a_slice():
    for timeout in (5.0, None):  # a cell's timeout, and none (nbclient's IOPub wait)
        got, took = asyncio.run(_receive(PollingChannel, timeout))
        assert got == "execute_reply" and SLICE - 0.05 <= took < SLICE + 0.5, (timeout, got, took)
    # jupyter_client's own channel sits out the whole timeout in its one poll
    got, took = asyncio.run(_receive(AsyncZMQSocketChannel, 1.5))
    assert got is None and took >= 1.5


def test_the_timeout_still_holds_when_nothing_comes():
    async def wait(timeout):
        context = zmq.asyncio.Context()
        socket = context.socket(zmq.PAIR)
        try:
            socket.bind("inproc://nothing")
            start = time.monotonic()
            try:
                await PollingChannel(socket, Session()).get_msg(timeout=timeout)
            except Empty:
                return time.monotonic() - start
            raise AssertionError("a message out of nowhere")
        finally:
            socket.close(linger=0)
            context.term()

    assert 2.5 <= asyncio.run(wait(2.5)) < 3.0  # three slices: 1 + 1 + 0.5
    assert asyncio.run(wait(0)) < 0.2


def test_every_graded_kernel_gets_the_polling_client():
    from dpolab_grade.preprocessors import RecordingExecute

    execute = RecordingExecute(kernel_name="python3")
    execute._kernel_sandbox = None  # plain nbgrader with sandbox="none", and dpolab-grade's worker
    km = execute.create_kernel_manager()
    client = km.client()
    assert isinstance(client, PollingKernelClient)
    assert client.shell_channel_class is PollingChannel and client.iopub_channel_class is PollingChannel
