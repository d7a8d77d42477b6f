"""The connection engine over in-memory streams against a scripted wsproto peer."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)

from trio_ws import (
    ClientConnectionResetError,
    ServerTimeoutError,
    WebSocketError,
    WSCloseCode,
    WSMessage,
    WSMessageTypeError,
    WSMsgType,
    WSTimeoutError,
)
from trio_ws._models import WS_CLOSED_MESSAGE as WS_CLOSED

from . import _peer
from ._peer import ws_pair

ROLES = ["client", "server"]


@pytest.fixture(autouse=True, params=["memory", "socket"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every engine test runs over in-memory streams and over a real socket pair.

    Over a socket the engine reads and writes the file descriptor itself, and
    receive() reads the socket from the application's task while it waits.
    """
    if request.param == "socket":
        monkeypatch.setattr(_peer, "default_stream_pair", _peer.socket_stream_pair)
    return str(request.param)


@pytest.mark.parametrize("role", ROLES)
async def test_send_every_kind(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        await ws.send_str("héllo")
        await ws.send_bytes(b"\x00\x01")
        await ws.send_bytes(bytearray(b"ba"))
        await ws.send_bytes(memoryview(b"mv"))
        await ws.send_json({"a": [1, 2]})
        await ws.send_json({"b": 1}, dumps=lambda o: "custom")
        await ws.ping(b"p1")
        await ws.pong(b"p2")
        got = [await peer.next_event() for _ in range(8)]
        assert got[0] == TextMessage(data="héllo")
        assert got[1] == BytesMessage(data=b"\x00\x01")
        assert got[2] == BytesMessage(data=b"ba")
        assert got[3] == BytesMessage(data=b"mv")
        assert got[4] == TextMessage(data='{"a": [1, 2]}')
        assert got[5] == TextMessage(data="custom")
        assert got[6] == Ping(payload=b"p1")
        assert got[7] == Pong(payload=b"p2")


async def test_send_type_errors() -> None:
    async with ws_pair() as (ws, _, _):
        with pytest.raises(TypeError, match="must be str"):
            await ws.send_str(b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="byte-ish"):
            await ws.send_bytes("x")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="125"):
            await ws.ping(b"x" * 126)


@pytest.mark.parametrize("role", ROLES)
async def test_receive_every_kind(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        await peer.send(TextMessage(data="t"))
        await peer.send(BytesMessage(data=b"b"))
        await peer.send(TextMessage(data='{"k": 2}'))
        await peer.send(TextMessage(data="s"))
        assert await ws.receive() == WSMessage(WSMsgType.TEXT, "t", "")
        assert await ws.receive_bytes() == b"b"
        assert await ws.receive_json() == {"k": 2}
        assert await ws.receive_str() == "s"
        await peer.send(BytesMessage(data=b"x"))
        with pytest.raises(WSMessageTypeError, match=r"is not WSMsgType\.TEXT") as info:
            await ws.receive_str()
        assert isinstance(info.value, TypeError)
        await peer.send(TextMessage(data="y"))
        with pytest.raises(WSMessageTypeError, match=r"is not WSMsgType\.BINARY"):
            await ws.receive_bytes()


async def test_message_json_helper() -> None:
    msg = WSMessage(WSMsgType.TEXT, '{"x": 1}', "")
    assert msg.json() == {"x": 1}
    assert msg.json(loads=lambda s: s.upper()) == '{"X": 1}'


@pytest.mark.parametrize("role", ROLES)
async def test_fragmented_message_is_joined(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        await peer.send(TextMessage(data="ab", message_finished=False))
        await peer.send(TextMessage(data="cd", message_finished=False))
        await peer.send(Ping(payload=b"mid"))  # control frames may interleave
        await peer.send(TextMessage(data="é", message_finished=True))
        await peer.send(BytesMessage(data=b"1", message_finished=False))
        await peer.send(BytesMessage(data=b"2", message_finished=True))
        assert await ws.receive() == WSMessage(WSMsgType.TEXT, "abcdé", "")
        assert await ws.receive() == WSMessage(WSMsgType.BINARY, b"12", "")
        assert await peer.next_event() == Pong(payload=b"mid")


async def test_input_one_byte_at_a_time() -> None:
    async with ws_pair("server") as (ws, peer, _):
        data = b"".join(
            [
                peer.conn.send(TextMessage(data="x" * 300)),
                peer.conn.send(BytesMessage(data=b"y" * 70000)),
                peer.conn.send(TextMessage(data="zé")),
            ]
        )
        for i in range(len(data)):
            await peer.send_raw(data[i : i + 1])
        assert (await ws.receive()).data == "x" * 300
        assert (await ws.receive()).data == b"y" * 70000
        assert (await ws.receive()).data == "zé"


@pytest.mark.parametrize("role", ROLES)
async def test_autoping_answers_without_receive(role: str) -> None:
    async with ws_pair(role) as (_, peer, _):
        await peer.send(Ping(payload=b"are you there"))
        # Nobody calls receive(): the reader task answers anyway.
        assert await peer.next_event() == Pong(payload=b"are you there")


async def test_autoping_false_yields_ping_and_pong() -> None:
    async with ws_pair(autoping=False) as (ws, peer, _):
        await peer.send(Ping(payload=b"pp"))
        await peer.send(Pong(payload=b"qq"))
        assert await ws.receive() == WSMessage(WSMsgType.PING, b"pp", "")
        assert await ws.receive() == WSMessage(WSMsgType.PONG, b"qq", "")
        await ws.pong(b"pp")
        assert await peer.next_event() == Pong(payload=b"pp")


@pytest.mark.parametrize("role", ROLES)
async def test_peer_initiated_close(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        await peer.send(TextMessage(data="last"))
        await peer.send(CloseConnection(code=4001, reason="bye"))
        assert await ws.receive() == WSMessage(WSMsgType.TEXT, "last", "")
        assert await ws.receive() == WSMessage(WSMsgType.CLOSE, 4001, "bye")
        assert ws.closed
        assert ws.close_code == 4001
        reply = await peer.next_event()
        assert isinstance(reply, CloseConnection)
        assert reply.code == 4001
        assert (await ws.receive()).type == WSMsgType.CLOSED
        assert await ws.close() is False
        with pytest.raises(ClientConnectionResetError, match="closing transport"):
            await ws.send_str("late")


async def test_server_receive_after_close_raises_on_fifth_call() -> None:
    async with ws_pair("server") as (ws, peer, _):
        await peer.send(CloseConnection(code=1000))
        assert (await ws.receive()).type == WSMsgType.CLOSE
        for _ in range(4):
            assert (await ws.receive()).type == WSMsgType.CLOSED
        with pytest.raises(RuntimeError, match="closed"):
            await ws.receive()


async def test_client_receive_after_close_always_closed() -> None:
    async with ws_pair("client") as (ws, peer, _):
        await peer.send(CloseConnection(code=1000))
        assert (await ws.receive()).type == WSMsgType.CLOSE
        for _ in range(10):
            assert (await ws.receive()).type == WSMsgType.CLOSED


@pytest.mark.parametrize("role", ROLES)
async def test_local_close_handshake(role: str) -> None:
    async with ws_pair(role) as (ws, peer, nursery):
        await ws.send_str("before")
        result: list[bool] = []

        async def closer() -> None:
            result.append(await ws.close(code=4000, message=b"done"))

        nursery.start_soon(closer)
        assert await peer.next_event() == TextMessage(data="before")
        event = await peer.next_event()
        assert isinstance(event, CloseConnection)
        assert (event.code, event.reason) == (4000, "done")
        await peer.send(event.response())
        await _peer.finished(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert result == [True]
        assert ws.close_code == 4000
        assert ws.exception() is None
        assert await ws.close() is False


async def test_close_empty_payload_gives_zero_code() -> None:
    async with ws_pair() as (ws, peer, _):
        await peer.send_raw(b"\x88\x00")
        msg = await ws.receive()
        assert msg == WSMessage(WSMsgType.CLOSE, 0, "")


async def test_close_timeout_when_peer_never_answers(autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair(timeout=5.0) as (ws, peer, _):
        start = trio.current_time()
        assert await ws.close() is True
        assert trio.current_time() - start == pytest.approx(5.0)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), WSTimeoutError)
        assert isinstance(await peer.next_event(), CloseConnection)


@pytest.mark.parametrize("role", ROLES)
async def test_receive_in_progress_when_close_begins_returns_closing_then_closed(
    role: str, autojump_clock: trio.abc.Clock
) -> None:
    """As aiohttp: the receive() that waits when close() begins gets CLOSING, later ones CLOSED.

    The server then ends the connection once its CLOSE is written, without
    waiting for the peer's answer (close_code is the code it sent; it reads
    on until the peer hangs up, a bounded linger); the client waits for it.
    """
    async with ws_pair(role, timeout=10.0) as (ws, peer, nursery):
        got: list[WSMessage] = []

        async def reader() -> None:
            got.append(await ws.receive())

        result: list[bool] = []

        async def closer() -> None:
            result.append(await ws.close(code=4000))

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        nursery.start_soon(closer)
        event = await peer.next_event()
        assert isinstance(event, CloseConnection) and event.code == 4000
        await trio.testing.wait_all_tasks_blocked()
        assert got == [WSMessage(WSMsgType.CLOSING, None, None)]
        if role == "server":
            # Our CLOSE, then end of stream; the server reads on until the
            # peer's answer or hang-up (nothing it sent is lost to a reset).
            assert await peer.next_event() is None
            await peer.stream.aclose()
            with trio.fail_after(1):
                await _peer.finished(ws)
        else:
            assert not _peer.is_finished(ws)  # the client waits for the answer
            await peer.send(CloseConnection(code=4000))
            await _peer.finished(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == start
        assert result == [True]
        assert ws.close_code == 4000
        assert ws.exception() is None
        assert (await ws.receive()).type == WSMsgType.CLOSED


@pytest.mark.parametrize("role", ROLES)
async def test_receive_called_while_close_waits_returns_closed(
    role: str, autojump_clock: trio.abc.Clock
) -> None:
    """A receive() that starts while close() waits for the answer gets CLOSED (aiohttp)."""
    async with ws_pair(role) as (ws, peer, nursery):
        nursery.start_soon(ws.close)
        assert isinstance(await peer.next_event(), CloseConnection)
        assert (await ws.receive()).type == WSMsgType.CLOSED
        assert not _peer.is_finished(ws)
        await peer.send(CloseConnection(code=1000))
        await _peer.finished(ws)
        assert ws.close_code == WSCloseCode.OK


@pytest.mark.parametrize("role", ROLES)
async def test_peer_vanishes_without_close(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        await peer.stream.aclose()
        assert (await ws.receive()).type == WSMsgType.CLOSED
        assert ws.closed
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), ClientConnectionResetError)


async def test_receive_timeout(autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair("client", receive_timeout=2.0) as (ws, peer, _):
        with pytest.raises(WSTimeoutError) as info:
            await ws.receive()
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, trio.TooSlowError)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE  # client rule (aiohttp)
        # still usable
        await peer.send(TextMessage(data="late"))
        assert await ws.receive_str() == "late"
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)


async def test_server_receive_timeout_keeps_close_code(autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair("server") as (ws, _, _):
        with pytest.raises(WSTimeoutError):
            await ws.receive(timeout=1.0)
        assert ws.close_code is None


async def test_cancelled_receive_keeps_connection_usable() -> None:
    async with ws_pair() as (ws, peer, _):
        with trio.move_on_after(0.05) as scope:
            await ws.receive()
        assert scope.cancelled_caught
        await peer.send(TextMessage(data="after"))
        assert await ws.receive_str() == "after"


async def test_concurrent_receive_is_refused() -> None:
    async with ws_pair() as (ws, peer, nursery):
        nursery.start_soon(ws.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="Concurrent call"):
            await ws.receive()
        await peer.send(TextMessage(data="x"))


@pytest.mark.parametrize("role", ROLES)
async def test_heartbeat_timeout(role: str, autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair(role, heartbeat=10.0, autoping=True) as (ws, peer, _):
        start = trio.current_time()
        assert isinstance(await peer.next_event(), Ping)  # the heartbeat's ping; never answered
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert trio.current_time() - start == pytest.approx(15.0)
        assert ws.closed
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        expected = ServerTimeoutError if role == "client" else WSTimeoutError
        assert isinstance(ws.exception(), expected)
        assert "No PONG received after 5.0 seconds" in str(ws.exception())
        assert (await ws.receive()).type == WSMsgType.CLOSED


async def test_heartbeat_kept_alive_by_pongs(autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair(heartbeat=10.0) as (ws, peer, _):
        for _ in range(3):
            event = await peer.next_event()
            assert isinstance(event, Ping)
            await peer.send(event.response())
        assert not ws.closed
        assert trio.current_time() >= 30.0


@pytest.mark.parametrize("role", ROLES)
async def test_message_too_big_single_frame(role: str) -> None:
    async with ws_pair(role, max_msg_size=1000) as (ws, peer, _):
        await peer.send(BytesMessage(data=b"x" * 1000))  # exactly the limit: accepted
        assert len(await ws.receive_bytes()) == 1000
        # Only the header of an oversized frame is sent: rejected on the declared length.
        header = peer.conn.send(BytesMessage(data=b"y" * 5000))[:14]
        await peer.send_raw(header)
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert isinstance(msg.data, WebSocketError)
        assert msg.data.code == WSCloseCode.MESSAGE_TOO_BIG
        assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG
        event = await peer.next_event()
        assert isinstance(event, CloseConnection)
        assert event.code == WSCloseCode.MESSAGE_TOO_BIG
        assert (await ws.receive()).type == WSMsgType.CLOSED


async def test_message_too_big_across_fragments() -> None:
    async with ws_pair("server", max_msg_size=1000) as (ws, peer, _):
        for _ in range(3):
            await peer.send(TextMessage(data="a" * 400, message_finished=False))
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert msg.data.code == 1009
        assert isinstance(ws.exception(), WebSocketError)  # server keeps it (aiohttp)


async def test_compressed_bomb_is_not_inflated(autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair("server", deflate=True, max_msg_size=2**20) as (ws, peer, _):
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk = b"\x00" * 2**20
        payload = b"".join(compressor.compress(chunk) for _ in range(64))  # 64 MiB inflated
        payload += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
        n = len(payload)
        assert n < 2**17
        if n < 65536:
            length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
        header = bytes([0xC2]) + length + b"\x00\x00\x00\x00"  # RSV1, masked with key 0
        await peer.send_raw(header + payload)
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert msg.data.code == WSCloseCode.MESSAGE_TOO_BIG


async def test_compressed_messages_round_trip() -> None:
    async with ws_pair("client", deflate=True) as (ws, peer, _):
        await peer.send(TextMessage(data="z" * 10000))
        assert await ws.receive_str() == "z" * 10000
        await ws.send_str("q" * 5000)
        await ws.send_str("plain", compress=0)
        assert await peer.next_event() == TextMessage(data="q" * 5000)
        assert await peer.next_event() == TextMessage(data="plain")


@pytest.mark.parametrize("role", ROLES)
async def test_invalid_utf8_closes_1007(role: str) -> None:
    async with ws_pair(role) as (ws, peer, _):
        # A valid frame, then invalid UTF-8 split across two fragments.
        await peer.send(TextMessage(data="ok"))
        frame1 = bytearray(peer.conn.send(BytesMessage(data=b"a\xce", message_finished=False)))
        frame1[0] = (frame1[0] & 0xF0) | 0x1  # turn the first frame into TEXT
        await peer.send_raw(bytes(frame1))
        await peer.send(BytesMessage(data=b"\xff", message_finished=True))
        assert await ws.receive_str() == "ok"
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert ws.close_code == WSCloseCode.INVALID_TEXT
        event = await peer.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1007


@pytest.mark.parametrize(
    "raw",
    [
        b"\x83\x80\x00\x00\x00\x00",  # reserved opcode 3
        b"\x09\x80\x00\x00\x00\x00",  # fragmented control frame
        b"\x81\x01a",  # unmasked frame to a server
        b"\xf1\x80\x00\x00\x00\x00",  # reserved bits without an extension
        b"\x88\x82\x00\x00\x00\x00\x03\xe4",  # close code 996 (out of range)
    ],
)
async def test_protocol_errors_close_1002(raw: bytes) -> None:
    async with ws_pair("server") as (ws, peer, _):
        await peer.send_raw(raw)
        msg = await ws.receive()
        assert msg.type == WSMsgType.ERROR
        assert ws.close_code == WSCloseCode.PROTOCOL_ERROR
        event = await peer.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1002


async def test_async_for_yields_until_close() -> None:
    async with ws_pair() as (ws, peer, _):
        for i in range(3):
            await peer.send(TextMessage(data=str(i)))
        await peer.send(CloseConnection(code=1000))
        got = [msg.data async for msg in ws]
        assert got == ["0", "1", "2"]


async def test_async_for_yields_error_then_stops() -> None:
    async with ws_pair("server") as (ws, peer, _):
        await peer.send_raw(b"\x83\x80\x00\x00\x00\x00")
        kinds = [msg.type async for msg in ws]
        assert kinds == [WSMsgType.ERROR]


async def test_autoclose_false_lets_app_answer() -> None:
    async with ws_pair(autoclose=False) as (ws, peer, _):
        await peer.send(CloseConnection(code=1001, reason="away"))
        assert await ws.receive() == WSMessage(WSMsgType.CLOSE, 1001, "away")
        assert not ws.closed
        assert await ws.close() is True
        event = await peer.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1000
        assert ws.close_code == 1001  # the peer's code, not 1006 (issue 16)


async def test_send_backpressure_with_non_reading_peer() -> None:
    async with ws_pair(stream_pair=trio.testing.lockstep_stream_pair, write_limit=1024) as (
        ws,
        peer,
        _,
    ):
        sent = 0
        with trio.move_on_after(0.5) as scope:
            while True:
                await ws.send_bytes(b"x" * 100)
                sent += 1
        assert scope.cancelled_caught  # send_bytes blocked: the peer does not read
        # Nothing reached the peer: all of it is queued, and at most
        # write_limit plus one frame was accepted.
        assert sent * 102 <= 1024 + 102
        # Reading resumes the sender.
        for _ in range(3):
            assert isinstance(await peer.next_event(), BytesMessage)


async def test_receive_backpressure_stops_reading() -> None:
    """With ``max_queue`` messages queued the reader stops: the peer's sends block.

    Over lockstep streams a send returns only once the engine has read it.
    """
    async with ws_pair("server", stream_pair=trio.testing.lockstep_stream_pair, max_queue=8) as (
        ws,
        peer,
        nursery,
    ):
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(50):
                await peer.send(TextMessage(data=str(i)))
                sent += 1

        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 8  # the 9th waits: the reader stopped reading
        got = [await ws.receive_str() for _ in range(50)]  # reading resumes as they are taken
        assert got == [str(i) for i in range(50)]
        await trio.testing.wait_all_tasks_blocked()
        assert sent == 50


async def test_ping_flood_does_not_queue_unbounded_pongs() -> None:
    async with ws_pair(
        "server", stream_pair=trio.testing.lockstep_stream_pair, write_limit=512
    ) as (_, peer, nursery):
        flood = peer.conn.send(Ping(payload=b"x" * 100)) * 2000

        async def sender() -> None:
            with trio.move_on_after(0.5):
                await peer.send_raw(flood)

        nursery.start_soon(sender)
        await trio.sleep(0.6)
        pongs = 0
        while True:
            with trio.move_on_after(0.2):
                event = await peer.next_event()
                assert event == Pong(payload=b"x" * 100)
                pongs += 1
                continue
            break
        # Past write_limit only the latest ping is remembered: the pongs
        # written are what fits in write_limit, plus the one remembered.
        assert 1 <= pongs <= (512 + 128) // 102 + 2


async def test_cancelling_owner_sends_going_away_and_leaves_no_task() -> None:
    a, b = trio.testing.memory_stream_pair()
    from ._peer import Peer, make_ws

    peer = Peer(b, client=False)
    ws = make_ws("client")
    with trio.CancelScope() as outer:
        async with trio.open_nursery() as nursery:
            _peer.start(ws, nursery, a)
            try:
                outer.cancel()
                await trio.sleep_forever()
            except BaseException as exc:
                await _peer.owner_exit(ws, exc)
                raise
    assert _peer.is_finished(ws)
    assert len(nursery.child_tasks) == 0
    event = await peer.next_event()
    assert isinstance(event, CloseConnection)
    assert event.code == WSCloseCode.GOING_AWAY


async def test_no_task_outlives_the_connection() -> None:
    before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    async with ws_pair(heartbeat=5.0) as (ws, peer, nursery):
        assert len(nursery.child_tasks) == 1  # _run, which holds reader/writer/heartbeat
        await peer.send(CloseConnection(code=1000))
        await _peer.finished(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 0
    after = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    assert after == before


async def test_messages_sent_before_close_arrive_first() -> None:
    async with ws_pair() as (ws, peer, nursery):
        for i in range(100):
            await ws.send_str(str(i))
        nursery.start_soon(ws.close)
        got = []
        while True:
            event = await peer.next_event()
            if isinstance(event, CloseConnection):
                await peer.send(event.response())
                break
            got.append(event.data)  # type: ignore[union-attr]
        assert got == [str(i) for i in range(100)]


async def test_write_failure_marks_connection_lost() -> None:
    async with ws_pair() as (ws, peer, _):
        await peer.stream.aclose()
        with trio.fail_after(2):
            while not ws.closed:
                try:
                    await ws.send_str("x")
                except ClientConnectionResetError:
                    break
                await trio.sleep(0.01)
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE


async def test_heartbeat_tolerates_paused_reader(autojump_clock: trio.abc.Clock) -> None:
    async with ws_pair(heartbeat=1.0, max_queue=4) as (ws, peer, nursery):

        async def answer_pings() -> None:
            while True:
                event = await peer.next_event()
                if isinstance(event, Ping):
                    await peer.send(event.response())
                if event is None:
                    return

        nursery.start_soon(answer_pings)
        for i in range(20):
            await peer.send(TextMessage(data=str(i)))
        await trio.sleep(10)  # the application is busy: the reader is paused
        got = [await ws.receive_str() for _ in range(20)]
        assert got == [str(i) for i in range(20)]
        assert not ws.closed
        assert ws.exception() is None


@pytest.mark.parametrize("role", ROLES)
async def test_socket_changes_hands_between_receive_and_reader(role: str) -> None:
    """Over a plain socket, a receive() that is answered reads the socket itself after.

    The reader hands the socket to the receive() it woke; from then on an echo
    loop's receive() waits on the socket and reads it in its own task, and the
    reader takes the socket back (and answers pings) while nobody is in receive().
    """
    async with ws_pair(role, stream_pair=_peer.socket_stream_pair) as (ws, peer, nursery):
        done = trio.Event()

        async def echo_loop() -> None:
            async for msg in ws:
                await ws.send_str(msg.data)
                if msg.data == "last":
                    break
            done.set()

        await trio.testing.wait_all_tasks_blocked()
        assert _peer.socket_owner(ws) == "reader waits"  # nobody in receive()
        await peer.send(Ping(payload=b"before"))
        assert await peer.next_event() == Pong(payload=b"before")
        nursery.start_soon(echo_loop)
        await trio.testing.wait_all_tasks_blocked()
        assert _peer.socket_owner(ws) == "reader waits"  # receive() waits for the reader
        for text in ["1", "2"]:
            await peer.send(TextMessage(data=text))
            assert await peer.next_event() == TextMessage(data=text)
            await trio.testing.wait_all_tasks_blocked()
            # The loop is back in receive(), waiting on the socket itself.
            assert _peer.socket_owner(ws) == "receive waits"
        await peer.send(Ping(payload=b"during"))
        assert await peer.next_event() == Pong(payload=b"during")  # answered by receive()
        await peer.send(TextMessage(data="last"))
        assert await peer.next_event() == TextMessage(data="last")
        await done.wait()
        await trio.testing.wait_all_tasks_blocked()
        # The loop has ended: the reader has the socket back and answers pings.
        assert _peer.socket_owner(ws) == "reader waits"
        await peer.send(Ping(payload=b"after"))
        assert await peer.next_event() == Pong(payload=b"after")


async def echoing_over_the_socket(
    ws: Any, peer: _peer.Peer, nursery: trio.Nursery
) -> list[WSMessage]:
    """Start an echo loop on ``ws`` and bring it to wait in receive() on the socket.

    Returns the list the loop records every message it receives in; the loop
    ends at the first message that is not TEXT.
    """
    got: list[WSMessage] = []

    async def echo_loop() -> None:
        while True:
            msg = await ws.receive()
            got.append(msg)
            if msg.type is not WSMsgType.TEXT:
                return
            await ws.send_str(msg.data)

    nursery.start_soon(echo_loop)
    await peer.send(TextMessage(data="x"))
    assert await peer.next_event() == TextMessage(data="x")
    await trio.testing.wait_all_tasks_blocked()
    return got


async def closing_returned_then_over(ws: Any, peer: _peer.Peer, got: list[WSMessage]) -> None:
    """At the close frame: the echo loop's receive() returned CLOSING, and the
    server ended the connection without waiting for the peer's answer."""
    event = await peer.next_event()
    assert isinstance(event, CloseConnection)
    with trio.fail_after(5):
        await _peer.finished(ws)
    await trio.testing.wait_all_tasks_blocked()
    assert got[1:] == [WSMessage(WSMsgType.CLOSING, None, None)]
    assert await peer.next_event() is None
    assert ws.close_code == WSCloseCode.OK
    assert ws.exception() is None


async def test_close_from_another_task_wakes_receive_reading_the_socket() -> None:
    async with ws_pair("server", stream_pair=_peer.socket_stream_pair) as (ws, peer, nursery):
        got = await echoing_over_the_socket(ws, peer, nursery)
        assert _peer.socket_owner(ws) == "receive waits"
        nursery.start_soon(ws.close)
        await closing_returned_then_over(ws, peer, got)


async def test_peer_vanishes_while_receive_reads_the_socket() -> None:
    async with ws_pair("client", stream_pair=_peer.socket_stream_pair) as (ws, peer, nursery):
        got = await echoing_over_the_socket(ws, peer, nursery)
        assert _peer.socket_owner(ws) == "receive waits"
        await peer.stream.aclose()
        with trio.fail_after(5):
            await _peer.finished(ws)
        await trio.testing.wait_all_tasks_blocked()
        assert got[1:] == [WS_CLOSED]
        assert ws.close_code == WSCloseCode.ABNORMAL_CLOSURE
        assert isinstance(ws.exception(), ClientConnectionResetError)


async def test_close_wakes_receive_during_a_blocked_write() -> None:
    """close() in another task while the writer waits for a peer that reads late.

    The receive() waiting on the socket returns CLOSING at once; the wake-up
    (``notify_closing`` on the socket) does not cut the write short: every
    byte still reaches the peer, then our close frame.
    """
    async with ws_pair("server", stream_pair=_peer.socket_stream_pair) as (ws, peer, nursery):
        got = await echoing_over_the_socket(ws, peer, nursery)
        assert _peer.socket_owner(ws) == "receive waits"
        big = bytes(8 * 2**20)
        await ws.send_bytes(big)  # far more than the socket buffers hold: the writer waits
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ws.close)
        await trio.testing.wait_all_tasks_blocked()
        assert got[1:] == [WSMessage(WSMsgType.CLOSING, None, None)]  # woken at once
        assert not _peer.is_finished(ws)  # the write goes on
        received = b""
        while len(received) < len(big):
            part = await peer.next_event()
            assert isinstance(part, BytesMessage)
            received += part.data
        assert received == big
        await closing_returned_then_over(ws, peer, got)
