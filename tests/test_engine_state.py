"""The engine's lifecycle: the state table, the ways a connection ends, and checkpoints.

The first half checks the transition table itself (sans I/O). The rest
drives a real engine against the scripted peer of ``_peer`` and checks
public behaviour only: what ``send_*``, ``receive()`` and ``close()`` do
and report when the connection ends in each way, and which calls yield to
the scheduler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import CloseConnection, Ping, TextMessage

from trio_ws import (
    ClientConnectionResetError,
    ServerTimeoutError,
    WSCloseCode,
    WSMsgType,
    WSTimeoutError,
)
from trio_ws._engine._state import Event, IllegalTransition, State, next_state

from . import _peer
from ._peer import ws_pair

ROLES = ["client", "server"]
STREAMS = {
    # lockstep: send_all returns only once the other side has read it all,
    # so a peer that does not read blocks the writer at once.
    "memory": trio.testing.lockstep_stream_pair,
    "socket": _peer.socket_stream_pair,
}


@pytest.fixture(params=["memory", "socket"])
def over_both(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test over in-memory streams and over a real socket pair (as test_engine)."""
    if request.param == "socket":
        monkeypatch.setattr(_peer, "default_stream_pair", _peer.socket_stream_pair)
    return str(request.param)


def timeout_error(role: str) -> type[Exception]:
    """The heartbeat's error for ``role`` (as aiohttp: the client's names the server)."""
    return ServerTimeoutError if role == "client" else WSTimeoutError


# ---------------------------------------------------------------- the table


def test_close_handshake_paths() -> None:
    assert next_state(State.OPEN, Event.SEND_CLOSE) is State.CLOSE_SENT
    assert next_state(State.CLOSE_SENT, Event.RECEIVE_CLOSE) is State.CLOSED
    assert next_state(State.OPEN, Event.RECEIVE_CLOSE) is State.CLOSE_RECEIVED
    assert next_state(State.CLOSE_RECEIVED, Event.SEND_CLOSE) is State.CLOSED


@pytest.mark.parametrize("state", [State.OPEN, State.CLOSE_SENT, State.CLOSE_RECEIVED])
def test_abort_ends_every_live_state(state: State) -> None:
    assert next_state(state, Event.ABORT) is State.CLOSED


@pytest.mark.parametrize("event", list(Event))
def test_closed_is_final(event: Event) -> None:
    assert next_state(State.CLOSED, event) is State.CLOSED


@pytest.mark.parametrize(
    ("state", "event"),
    [(State.CLOSE_SENT, Event.SEND_CLOSE), (State.CLOSE_RECEIVED, Event.RECEIVE_CLOSE)],
)
def test_a_second_close_frame_the_same_way_is_a_bug(state: State, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=f"{event.name} in {state.name}"):
        next_state(state, event)


# ------------------------------------------------- the three reproductions


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("transport", list(STREAMS))
async def test_send_blocked_on_backpressure_ends_when_the_heartbeat_does(
    role: str, transport: str, autojump_clock: trio.abc.Clock
) -> None:
    """Issue 15 (1): a sender waiting for buffer space wakes when the connection ends.

    The peer stops reading; the heartbeat's ping never gets an answer and
    ends the connection; the blocked ``send_bytes`` raises instead of
    waiting forever.
    """
    async with ws_pair(
        role, stream_pair=STREAMS[transport], heartbeat=1.0, write_limit=16 * 1024
    ) as (ws, _, _):
        with trio.fail_after(60), pytest.raises(ClientConnectionResetError):
            while True:
                await ws.send_bytes(bytes(4096))
        assert trio.current_time() == pytest.approx(1.5)
        assert ws.closed
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), timeout_error(role))


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_receive_while_close_runs_elsewhere_lets_other_tasks_run(role: str) -> None:
    """Issue 15 (2): receive() returning CLOSING/CLOSED is a checkpoint.

    A loop that does not stop on CLOSING must not starve the peer's task
    that answers the close: the close completes within a few iterations.
    """
    async with ws_pair(role) as (ws, peer, nursery):
        closed = trio.Event()

        async def closer() -> None:
            assert await ws.close() is True
            closed.set()

        looping = trio.Event()

        async def answer() -> None:
            event = await peer.next_event()
            assert isinstance(event, CloseConnection)
            await looping.wait()
            await peer.send(event.response())

        nursery.start_soon(closer)
        nursery.start_soon(answer)
        await trio.testing.wait_all_tasks_blocked()  # close() waits for the answer
        # Called while close() waits: CLOSED (as aiohttp). The server raises
        # RuntimeError at the 5th call; each call must let the answer in.
        for _ in range(10_000 if role == "client" else 4):  # bounded: on a spin, nobody else runs
            looping.set()
            with trio.testing.assert_checkpoints():
                msg = await ws.receive()
            assert msg.type is WSMsgType.CLOSED
            if closed.is_set():
                break
        with trio.fail_after(5):
            await closed.wait()
        assert ws.close_code == WSCloseCode.OK


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_peer_close_left_unanswered_past_the_heartbeat(
    role: str, autojump_clock: trio.abc.Clock
) -> None:
    """Issue 15 (3): the heartbeat ends a connection whose peer close is still queued.

    The peer sends data then CLOSE(1000) while the application is busy for
    longer than 1.5 x heartbeat. The close is answered only once the
    messages before it are taken, so the heartbeat ends the connection
    first: the peer never gets a close reply, and the engine says so
    (1006 and the timeout), as aiohttp does. The unanswered close is not
    delivered; the data before it is.
    """
    async with ws_pair(role, heartbeat=1.0) as (ws, peer, _):
        await peer.send(TextMessage(data="data"))
        await peer.send(CloseConnection(code=1000))
        await trio.sleep(2.0)  # the application is busy
        assert (await ws.receive()).data == "data"
        error = await ws.receive()
        assert error.type is WSMsgType.ERROR
        assert isinstance(error.data, timeout_error(role))
        assert (await ws.receive()).type is WSMsgType.CLOSED
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), timeout_error(role))
        assert await ws.close() is False
        assert isinstance(await peer.next_event(), Ping)
        assert await peer.next_event() is None  # no close reply: the stream just ends


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_peer_close_answered_when_taken_within_the_heartbeat(
    role: str, autojump_clock: trio.abc.Clock
) -> None:
    """The counterpart of the case above: taken in time, the close is answered."""
    async with ws_pair(role, heartbeat=1.0) as (ws, peer, _):
        await peer.send(TextMessage(data="data"))
        await peer.send(CloseConnection(code=4000, reason="bye"))
        await trio.sleep(1.2)  # busy, but less than 1.5 x heartbeat
        assert (await ws.receive()).data == "data"
        assert (await ws.receive()).type is WSMsgType.CLOSE
        assert ws.close_code == 4000
        assert ws.exception() is None
        assert isinstance(await peer.next_event(), Ping)
        reply = await peer.next_event()
        assert isinstance(reply, CloseConnection) and reply.code == 4000
        await trio.sleep(10)  # no heartbeat after the close
        assert ws.close_code == 4000
        assert ws.exception() is None


@pytest.mark.usefixtures("over_both")
async def test_heartbeat_stops_once_the_peer_close_is_received(
    autojump_clock: trio.abc.Clock,
) -> None:
    """With autoclose=False the application answers later; no heartbeat meanwhile."""
    async with ws_pair("server", heartbeat=1.0, autoclose=False) as (ws, peer, _):
        await peer.send(CloseConnection(code=4001))
        assert (await ws.receive()).type is WSMsgType.CLOSE
        await trio.sleep(10)
        assert ws.exception() is None
        assert await ws.close() is True
        reply = await peer.next_event()
        assert isinstance(reply, CloseConnection)
        assert ws.close_code == 4001
        assert ws.exception() is None


@pytest.mark.parametrize("role", ROLES)
async def test_the_end_wakes_sender_and_receiver_once_and_for_all(
    role: str, autojump_clock: trio.abc.Clock
) -> None:
    """A sender blocked on backpressure and a waiting receive() both wake at the end."""
    async with ws_pair(role, stream_pair=STREAMS["memory"], heartbeat=1.0, write_limit=1024) as (
        ws,
        _,
        nursery,
    ):
        sender_woken, receiver_woken = trio.Event(), trio.Event()

        async def sender() -> None:
            with pytest.raises(ClientConnectionResetError):
                while True:
                    await ws.send_bytes(bytes(512))
            sender_woken.set()

        async def receiver() -> None:
            msg = await ws.receive()
            assert msg.type is WSMsgType.ERROR
            assert (await ws.receive()).type is WSMsgType.CLOSED
            receiver_woken.set()

        nursery.start_soon(sender)
        nursery.start_soon(receiver)
        with trio.fail_after(60):
            await sender_woken.wait()
            await receiver_woken.wait()
        assert trio.current_time() == pytest.approx(1.5)
        with trio.testing.assert_checkpoints():
            assert await ws.close() is False
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), timeout_error(role))


@pytest.mark.parametrize("role", ROLES)
async def test_close_behind_a_blocked_write_wakes_sender_and_receiver_at_once(
    role: str, autojump_clock: trio.abc.Clock
) -> None:
    """close() while the peer does not read: sends stop and receive() returns at once.

    close() itself waits ``timeout`` (for the peer's close frame; on the
    server, whose receive() was in progress, for its own close frame to be
    written), then reports the timeout (no heartbeat runs once our close
    frame is on its way).
    """
    async with ws_pair(
        role, stream_pair=STREAMS["memory"], heartbeat=1.0, write_limit=1024, timeout=5.0
    ) as (ws, _, nursery):
        woken: dict[str, float] = {}

        async def sender() -> None:
            with pytest.raises(ClientConnectionResetError):
                while True:
                    await ws.send_bytes(bytes(512))
            woken["sender"] = trio.current_time()

        async def receiver() -> None:
            msg = await ws.receive()
            assert msg.type is WSMsgType.CLOSING
            woken["receiver"] = trio.current_time()

        nursery.start_soon(sender)
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with trio.fail_after(60):
            assert await ws.close() is True
        assert woken == {"sender": start, "receiver": start}
        assert trio.current_time() - start == pytest.approx(5.0)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)


@pytest.mark.usefixtures("over_both")
async def test_close_completes_while_the_inbox_is_full(autojump_clock: trio.abc.Clock) -> None:
    """The reader stopped at max_queue still reads the peer's answer to our close."""
    async with ws_pair("server", max_queue=4, timeout=5.0) as (ws, peer, nursery):
        for i in range(10):
            await peer.send(TextMessage(data=str(i)))
        await trio.testing.wait_all_tasks_blocked()  # the reader has stopped

        async def answer() -> None:
            while not isinstance(event := await peer.next_event(), CloseConnection):
                pass
            await peer.send(event.response())

        nursery.start_soon(answer)
        start = trio.current_time()
        assert await ws.close() is True
        assert trio.current_time() == start  # not the 5 s timeout
        assert ws.close_code == WSCloseCode.OK
        assert ws.exception() is None


# ------------------------------------------------------------- checkpoints


@asynccontextmanager
async def no_other_task_runs(nursery: trio.Nursery) -> AsyncIterator[None]:
    """Assert that the block does not yield to the scheduler.

    A task started just before the block can only run once this task yields.
    (``assert_no_checkpoints`` does not fit: these fast paths are cancel
    points, they only skip the scheduler.)
    """
    ran: list[bool] = []

    async def witness() -> None:
        ran.append(True)

    nursery.start_soon(witness)
    yield
    assert not ran, "the block yielded to the scheduler"
    await trio.testing.wait_all_tasks_blocked()
    assert ran


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_receive_from_a_full_inbox_yields_every_32_messages(role: str) -> None:
    async with ws_pair(role, max_queue=100) as (ws, peer, nursery):
        for i in range(64):
            await peer.send(TextMessage(data=str(i)))
        await trio.testing.wait_all_tasks_blocked()
        async with no_other_task_runs(nursery):
            got = [await ws.receive_str() for _ in range(31)]
        with trio.testing.assert_checkpoints():
            got.append(await ws.receive_str())  # the 32nd
        async with no_other_task_runs(nursery):
            got += [await ws.receive_str() for _ in range(31)]
        with trio.testing.assert_checkpoints():
            got.append(await ws.receive_str())
        assert got == [str(i) for i in range(64)]


@pytest.mark.usefixtures("over_both")
async def test_fast_receive_is_still_a_cancel_point() -> None:
    async with ws_pair() as (ws, peer, _):
        await peer.send(TextMessage(data="kept"))
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.receive()
        assert scope.cancelled_caught
        assert await ws.receive_str() == "kept"  # nothing was lost


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_send_below_write_limit_does_not_yield(role: str) -> None:
    async with ws_pair(role) as (ws, peer, nursery):
        async with no_other_task_runs(nursery):
            for i in range(10):
                await ws.send_str(str(i))
        for i in range(10):
            assert await peer.next_event() == TextMessage(data=str(i))
        with trio.CancelScope() as scope:
            scope.cancel()
            await ws.send_str("never")
        assert scope.cancelled_caught


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_waiting_calls_are_checkpoints(role: str) -> None:
    async with ws_pair(role) as (ws, peer, nursery):

        async def later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await peer.send(TextMessage(data="x"))

        nursery.start_soon(later)
        with trio.testing.assert_checkpoints():
            assert await ws.receive_str() == "x"  # waits for input
        with trio.testing.assert_checkpoints():
            await ws.ping(b"p")
        with trio.testing.assert_checkpoints():
            await ws.pong(b"q")
        assert isinstance(await peer.next_event(), Ping)


@pytest.mark.usefixtures("over_both")
@pytest.mark.parametrize("role", ROLES)
async def test_every_call_after_the_end_is_a_checkpoint(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        await peer.send(CloseConnection(code=1000))
        with trio.testing.assert_checkpoints():
            assert (await ws.receive()).type is WSMsgType.CLOSE
        calls: list[Callable[[], Any]] = [
            ws.receive,
            ws.close,
            lambda: ws.send_str("x"),
            lambda: ws.send_bytes(b"x"),
            ws.ping,
            ws.pong,
        ]
        for call in calls:
            with trio.testing.assert_checkpoints():
                with suppress(ClientConnectionResetError):
                    await call()
