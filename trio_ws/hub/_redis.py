"""A Redis (or Valkey) pub/sub backend for :class:`~trio_ws.hub.Hub`, on coredis.

Theory of operation
-------------------
Every process runs one hub with one :class:`RedisBackend`, which holds two
connections to the server (through coredis, which runs on trio via anyio):

* the **listener** subscribes to the pattern ``<channel_prefix>*`` once and
  hands each message to the local hub. One pattern subscription covers every
  topic, so a topic needs no ``SUBSCRIBE`` round trip before its first message
  can arrive: ``hub.subscribe`` stays synchronous and misses nothing once
  :meth:`~trio_ws.hub.Hub.wait_ready` has returned. The price is that every
  process receives every topic's messages under the prefix, even topics it has
  no subscriber for (they are dropped on arrival).
* the **publisher** sends what ``hub.publish`` queued, several messages per
  round trip (a pipeline of up to ``batch_size`` ``PUBLISH`` commands);
* the **deliverer** hands what the listener received to the hub. coredis
  yields to the scheduler between two messages, so handing each over at once
  would wake every subscriber's task (and cost one ``send`` system call per
  subscriber) for every message. The deliverer instead gathers messages for
  ``coalesce`` seconds (1 ms) after the first one arrives and hands them over
  together, so that each subscriber gets them in one write; it yields
  whenever the hub says a queue is half full.

The publishing process delivers to its own subscribers directly; on Redis each
message carries an 8-byte random id of the process that sent it, and a
process skips its own messages when they come back.

Message format on the channel ``<prefix><topic>``: origin id (8 bytes), a kind
byte (``t`` for text, ``b`` for binary), then the payload (UTF-8 for text).

Outage: when a connection fails, each loop logs it and reconnects with
exponential backoff (``reconnect_initial`` doubling up to ``reconnect_max``
seconds, with jitter). Redis pub/sub delivers at most once and keeps nothing,
so during an outage:

* messages published here reach this process's subscribers only;
* messages published by other processes do not reach this one;
* messages queued for the publisher when its connection failed are dropped;
* none of them are replayed after the reconnection.

All of these are counted (``remote_dropped`` in the statistics). WebSockets
stay connected and subscribed; nothing needs to be re-subscribed by hand.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import coredis

from ._hub import Payload

__all__ = ["RedisBackend"]

logger = logging.getLogger("trio_ws.hub")

_TEXT = b"t"
_BINARY = b"b"
_ORIGIN_SIZE = 8


class RedisBackend:
    """Share a :class:`~trio_ws.hub.Hub`'s topics between processes through Redis pub/sub.

    ``url`` is a coredis URL (``redis://host:port/db``, ``rediss://`` for TLS,
    ``unix:///path``); Valkey works the same. Topics map to channels
    ``channel_prefix + topic``: processes that should share topics use the
    same prefix. ``publish_queue`` bounds the messages waiting for the
    publisher connection (``hub.publish`` waits when it is full);
    ``batch_size`` bounds the ``PUBLISH`` commands sent per round trip.
    The hub's start waits up to ``startup_timeout`` seconds for both
    connections, so that a server started with its hub does not accept
    clients before it hears the other processes; past that it starts anyway
    (logged) and keeps trying. ``coalesce`` is how long messages from other
    processes are gathered before they are handed to the subscribers (adds
    at most that much latency; 0 hands each over at once).

    Needs the ``redis`` extra (``pip install trio_ws[redis]``). Create one
    backend per hub; it connects when the hub starts, and keeps reconnecting
    (see the module documentation) rather than failing the hub.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        channel_prefix: str = "trio_ws:",
        publish_queue: int = 4096,
        batch_size: int = 256,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        startup_timeout: float = 5.0,
        coalesce: float = 0.001,
    ) -> None:
        if publish_queue < 1 or batch_size < 1:
            raise ValueError("publish_queue and batch_size must be at least 1")
        self.url = url
        self.channel_prefix = channel_prefix
        self.publish_queue = publish_queue
        self.batch_size = batch_size
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.startup_timeout = startup_timeout
        self.coalesce = coalesce
        self._inbound: deque[tuple[str, Payload]] = deque()
        self._inbound_lot = trio.lowlevel.ParkingLot()
        self._prefix = channel_prefix.encode()
        self._origin = b""
        self._listening = False
        self._publishing = False
        self._ready = trio.Event()
        self._queue_send: trio.MemorySendChannel[tuple[bytes, bytes]] | None = None
        self._queue_receive: trio.MemoryReceiveChannel[tuple[bytes, bytes]] | None = None
        self._running = False
        self._stats = {
            "remote_published": 0,  # messages Redis accepted from this process
            "remote_received": 0,  # messages from other processes
            "remote_dropped": 0,  # messages published here that did not reach Redis
            "reconnects": 0,  # connections re-established after a failure
            "connection_errors": 0,
        }

    # ------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """True while both connections are up."""
        return self._listening and self._publishing

    def _set_state(self, *, listening: bool | None = None, publishing: bool | None = None) -> None:
        if listening is not None:
            self._listening = listening
        if publishing is not None:
            self._publishing = publishing
        if self.ready:
            self._ready.set()
        elif self._ready.is_set():
            self._ready = trio.Event()

    async def wait_ready(self) -> None:
        """Return once both connections are up (see :meth:`Hub.wait_ready`)."""
        while not self.ready:
            await self._ready.wait()
        await trio.lowlevel.checkpoint()

    def statistics(self) -> dict[str, Any]:
        """Counters: published, received, dropped, reconnects; and ``connected``."""
        return {"connected": self.ready, **self._stats}

    # -------------------------------------------------------------------- run

    async def run(
        self,
        deliver: Callable[[str, Payload], bool],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the listener and the publisher until cancelled (started by the hub)."""
        try:
            import coredis  # noqa: F401  (fail early, with a clear message)
        except ImportError as exc:
            raise RuntimeError("RedisBackend needs coredis: pip install 'trio_ws[redis]'") from exc
        if self._running:
            raise RuntimeError("a RedisBackend serves one hub, once")
        self._running = True
        self._origin = os.urandom(_ORIGIN_SIZE)
        self._ready = trio.Event()
        self._queue_send, self._queue_receive = trio.open_memory_channel[tuple[bytes, bytes]](
            self.publish_queue
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconnecting, "listener", self._listen)
            nursery.start_soon(self._deliverer, deliver)
            nursery.start_soon(self._reconnecting, "publisher", self._publish_loop)
            with trio.move_on_after(self.startup_timeout):
                await self.wait_ready()
            if not self.ready:
                logger.warning(
                    "Redis at %s is not reachable yet: starting without it, still trying",
                    self.url,
                )
            task_status.started()

    @asynccontextmanager
    async def _client(self, timeout: float | None) -> AsyncIterator[coredis.Redis[bytes]]:
        import coredis
        from coredis.retry import NoRetryPolicy

        client = coredis.Redis.from_url(
            self.url,
            decode_responses=False,
            retry_policy=NoRetryPolicy(),
            connect_timeout=self.connect_timeout,
            stream_timeout=timeout,
        )
        async with client:
            yield client

    async def _reconnecting(self, name: str, loop: Callable[..., Any], *args: Any) -> None:
        """Run ``loop`` again and again, with backoff after each failure. Never raises
        but Cancelled."""
        delay = self.reconnect_initial
        failed = False
        while True:
            connected = trio.Event()
            try:
                await loop(connected, *args)
                error: BaseException = ConnectionError("connection closed")
            except Exception as exc:
                error = exc
            except BaseExceptionGroup as group:
                # coredis's own task groups can wrap an error beside our cancellation:
                # let the cancellation through, alone.
                cancelled, _ = group.split(trio.Cancelled)
                if cancelled is not None:
                    raise cancelled from None
                raise
            if connected.is_set():
                delay = self.reconnect_initial
            self._stats["connection_errors"] += 1
            if name == "listener":
                self._set_state(listening=False)
            else:
                self._set_state(publishing=False)
                self._drop_queued()
            if not failed or connected.is_set():
                logger.warning(
                    "Redis %s at %s lost (%s); reconnecting", name, self.url, _describe(error)
                )
            failed = True
            await trio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(delay * 2, self.reconnect_max)

    def _on_connected(self, connected: trio.Event, name: str) -> None:
        if self._stats["connection_errors"]:
            self._stats["reconnects"] += 1
            logger.warning("Redis %s at %s reconnected", name, self.url)
        connected.set()

    # --------------------------------------------------------------- listener

    async def _listen(self, connected: trio.Event) -> None:
        from coredis.retry import NoRetryPolicy

        prefix = self._prefix
        start = len(prefix)
        origin = self._origin
        inbound = self._inbound
        async with (
            self._client(None) as client,
            client.pubsub(
                patterns=[prefix + b"*"],
                ignore_subscribe_messages=True,
                retry_policy=NoRetryPolicy(),  # reconnecting is _reconnecting's job
            ) as pubsub,
        ):
            # The pattern subscription is acknowledged: nothing published from now is missed.
            self._on_connected(connected, "listener")
            self._set_state(listening=True)
            async for message in pubsub:
                data = message["data"]
                channel = message["channel"]
                if not isinstance(data, bytes) or not isinstance(channel, bytes):
                    continue
                if data[:_ORIGIN_SIZE] == origin or len(data) <= _ORIGIN_SIZE:
                    continue
                kind = data[_ORIGIN_SIZE : _ORIGIN_SIZE + 1]
                body = data[_ORIGIN_SIZE + 1 :]
                try:
                    payload: Payload = body.decode() if kind == _TEXT else body
                    topic = channel[start:].decode()
                except UnicodeDecodeError:
                    logger.warning("Dropping a malformed message on Redis channel %r", channel)
                    continue
                self._stats["remote_received"] += 1
                inbound.append((topic, payload))
                if len(inbound) == 1:
                    self._inbound_lot.unpark()

    async def _deliverer(self, deliver: Callable[[str, Payload], bool]) -> None:
        inbound = self._inbound
        while True:
            while not inbound:
                await self._inbound_lot.park()
            if self.coalesce > 0:
                await trio.sleep(self.coalesce)
            while inbound:
                if deliver(*inbound.popleft()):
                    await trio.lowlevel.checkpoint()  # let the subscribers catch up

    # -------------------------------------------------------------- publisher

    async def publish(self, topic: str, payload: Payload) -> None:
        """Queue one message for Redis; drop it (counted) while Redis is unreachable."""
        send = self._queue_send
        if send is None:
            raise RuntimeError("the RedisBackend is not running")
        if not self._publishing:
            self._stats["remote_dropped"] += 1
            await trio.lowlevel.checkpoint()
            return
        if isinstance(payload, str):
            data = b"".join((self._origin, _TEXT, payload.encode()))
        else:
            data = b"".join((self._origin, _BINARY, payload))
        try:
            send.send_nowait((self._prefix + topic.encode(), data))
        except trio.WouldBlock:
            await send.send((self._prefix + topic.encode(), data))  # Redis is behind: wait
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def _publish_loop(self, connected: trio.Event) -> None:
        receive = self._queue_receive
        assert receive is not None
        batch: list[tuple[bytes, bytes]] = []
        try:
            async with self._client(self.command_timeout) as client:
                await client.ping()
                self._on_connected(connected, "publisher")
                self._set_state(publishing=True)
                while True:
                    batch.append(await receive.receive())
                    while len(batch) < self.batch_size:
                        try:
                            batch.append(receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                    if len(batch) == 1:
                        await client.publish(*batch[0])
                    else:
                        async with client.pipeline(transaction=False) as pipe:
                            for channel, data in batch:
                                pipe.publish(channel, data)
                    self._stats["remote_published"] += len(batch)
                    batch.clear()
        finally:
            # Sent or not, these will not be retried: at most once, never twice.
            self._stats["remote_dropped"] += len(batch)

    def _drop_queued(self) -> None:
        receive = self._queue_receive
        assert receive is not None
        while True:
            try:
                receive.receive_nowait()
            except trio.WouldBlock:
                return
            self._stats["remote_dropped"] += 1


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
