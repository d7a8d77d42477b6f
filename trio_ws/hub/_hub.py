"""Topic fan-out to WebSockets: the :class:`Hub`.

Theory of operation
-------------------
A :class:`Hub` maps topics to subscribed WebSockets. ``publish(topic, data)``
encodes ``data`` once (``str`` is sent as TEXT, ``bytes`` as BINARY, anything
else as JSON text), appends it to the queue of every local subscriber of
``topic`` without waiting, then hands it to the backend, which carries it to
the hubs of other processes (see :mod:`trio_ws.hub._redis`).

Who owns which task: the hub owns one nursery, opened by ``async with hub``
(or :func:`open_hub`). In it run

* one **drain task per subscribed WebSocket**, the only task that sends the
  hub's messages to it. It empties that subscriber's queue in order and sleeps
  when the queue is empty, so a slow subscriber only ever waits for itself;
* the backend's tasks, if it has any (the Redis backend runs two).

Each subscriber's queue holds at most ``queue_size`` messages. A message that
finds the queue full is an **overflow**, handled by the ``overflow`` policy:

* ``"close"`` (default): the subscriber is dropped from every topic at once,
  its queue is discarded, and its drain task closes the WebSocket with 1013
  TRY_AGAIN_LATER. Clients that reconnect get a fresh start.
* ``"drop"``: that one message is dropped for that subscriber (and counted in
  :meth:`Hub.statistics`); it stays subscribed and receives later messages.

Invariants: ``publish`` never waits for a subscriber; memory per subscriber is
bounded by ``queue_size`` messages plus the WebSocket's own ``write_limit``;
background tasks never raise into the hub's nursery (a failed send forgets
that subscriber, nothing more).

When the hub exits, its nursery is cancelled: queued messages that were not
sent yet are discarded and every subscription ends. Subscribing or publishing
outside ``async with hub`` raises ``RuntimeError``.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol

import trio

from .._models import WSCloseCode

__all__ = ["Backend", "Hub", "HubStatistics", "Overflow", "Subscriber", "open_hub"]

logger = logging.getLogger("trio_ws.hub")

Overflow = Literal["close", "drop"]
Payload = str | bytes


class Subscriber(Protocol):
    """What the hub needs from a WebSocket: both trio_ws classes qualify."""

    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, *, code: int, message: bytes) -> bool: ...


class Backend(Protocol):
    """Carries published messages between the hubs of several processes.

    ``run`` is started in the hub's nursery with ``nursery.start``; it calls
    ``deliver(topic, payload)`` for every message another process published,
    and must never raise (it retries instead). ``deliver`` never waits; it
    returns True when some subscriber's queue is half full: the backend should
    then yield (``trio.lowlevel.checkpoint()``) before delivering more. ``publish`` sends one local
    message to the other processes; it may wait (backpressure) but must not
    raise while the backend is unreachable.
    """

    async def run(
        self,
        deliver: Callable[[str, Payload], bool],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None: ...

    async def publish(self, topic: str, payload: Payload) -> None: ...

    async def wait_ready(self) -> None: ...

    def statistics(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HubStatistics:
    """Counters since the hub started (see :meth:`Hub.statistics`)."""

    topics: int  #: topics with at least one local subscriber
    subscribers: int  #: WebSockets subscribed to at least one topic
    published: int  #: ``publish()`` calls in this process
    received: int  #: messages that arrived from other processes through the backend
    queued: int  #: messages queued for local subscribers
    sent: int  #: messages sent to local subscribers
    dropped: int  #: messages dropped for a full queue (``overflow="drop"``)
    closed_slow: int  #: subscribers closed with 1013 (``overflow="close"``)
    backend: dict[str, Any]  #: the backend's own counters (empty without one)


class _Sub:
    """One subscribed WebSocket: its topics, its queue and its drain task's scope."""

    __slots__ = ("lot", "overflowed", "queue", "retired", "scope", "topics", "ws")

    def __init__(self, ws: Subscriber) -> None:
        self.ws = ws
        self.topics: set[str] = set()
        self.queue: deque[Payload] = deque()
        self.lot = trio.lowlevel.ParkingLot()
        self.scope = trio.CancelScope()
        self.retired = False  # no more messages: finish the queue, then end
        self.overflowed = False  # close with 1013 once the drain task stops


class Hub:
    """Publish messages to every WebSocket subscribed to a topic.

    ``backend`` is ``None`` for a hub that serves this process only, or a
    :class:`~trio_ws.hub.RedisBackend` to reach the subscribers of other
    processes too. ``queue_size`` bounds the messages waiting for one
    subscriber; ``overflow`` says what happens past it (see the module
    documentation): ``"close"`` closes that WebSocket with 1013,
    ``"drop"`` drops the message for it. ``dumps`` encodes published values
    that are neither ``str`` nor ``bytes``.

    A hub is started once, by ``async with hub:``; :func:`open_hub` creates and
    starts one. A hub created before ``os.fork()`` and started in each child
    serves each process separately (this is what :func:`trio_ws.hub.run_app`
    does for ``workers``).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        queue_size: int = 64,
        overflow: Overflow = "close",
        dumps: Callable[[Any], str] = json.dumps,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if overflow not in ("close", "drop"):
            raise ValueError(f"overflow must be 'close' or 'drop', not {overflow!r}")
        self.backend = backend
        self.queue_size = queue_size
        self.overflow: Overflow = overflow
        self._dumps = dumps
        self._topics: dict[str, dict[Subscriber, _Sub]] = {}
        self._subs: dict[Subscriber, _Sub] = {}
        self._nursery: trio.Nursery | None = None
        self._started = False
        self._published = 0
        self._received = 0
        self._queued = 0
        self._sent = 0
        self._dropped = 0
        self._closed_slow = 0
        self._deepest = 0  # the longest queue after the last delivery

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Hub:
        if self._started:
            raise RuntimeError("a Hub can be started only once")
        self._started = True
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        try:
            if self.backend is not None:
                await nursery.start(self.backend.run, self._deliver_remote)
        except BaseException as exc:
            nursery.cancel_scope.cancel()
            await self._nursery_cm.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._nursery = nursery
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        nursery = self._nursery
        assert nursery is not None
        self._nursery = None
        nursery.cancel_scope.cancel()
        try:
            # The hub's tasks never raise: the block's own exception (if any)
            # propagates as it was raised, not wrapped in an ExceptionGroup.
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            self._topics.clear()
            self._subs.clear()
        return None

    @property
    def running(self) -> bool:
        """True between entering and leaving ``async with hub``."""
        return self._nursery is not None

    def _check_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the Hub is not running: use 'async with open_hub() as hub'")
        return self._nursery

    async def wait_ready(self) -> None:
        """Return once the backend can carry messages (at once without one).

        With Redis: once this process both listens and can publish. Wait with
        a timeout of your own (``trio.fail_after``) if Redis may be down.
        """
        self._check_running()
        if self.backend is None:
            await trio.lowlevel.checkpoint()
        else:
            await self.backend.wait_ready()

    # ---------------------------------------------------------- subscriptions

    def subscribe(self, ws: Subscriber, topic: str) -> None:
        """Send ``ws`` every later message published to ``topic``.

        Subscribing twice to one topic changes nothing. The first subscription
        of ``ws`` starts its drain task. Call :meth:`unsubscribe` when the
        WebSocket's handler ends (or use :meth:`subscribed`): a subscriber whose
        sends fail is forgotten too, but only when a message is sent to it.
        """
        nursery = self._check_running()
        sub = self._subs.get(ws)
        if sub is None:
            sub = self._subs[ws] = _Sub(ws)
            nursery.start_soon(self._drain, sub)
        sub.topics.add(topic)
        self._topics.setdefault(topic, {})[ws] = sub

    def unsubscribe(self, ws: Subscriber, topic: str | None = None) -> None:
        """Stop sending ``ws`` the messages of ``topic``, or of every topic if ``None``.

        Messages already queued for ``ws`` are still sent. Unknown WebSockets
        and topics are ignored.
        """
        sub = self._subs.get(ws)
        if sub is None:
            return
        topics = list(sub.topics) if topic is None else [topic]
        for name in topics:
            sub.topics.discard(name)
            members = self._topics.get(name)
            if members is not None:
                members.pop(ws, None)
                if not members:
                    del self._topics[name]
        if not sub.topics:
            del self._subs[ws]
            sub.retired = True
            sub.lot.unpark_all()

    @contextmanager
    def subscribed(self, ws: Subscriber, *topics: str) -> Iterator[None]:
        """``with hub.subscribed(ws, "room"):`` subscribes for the block's duration."""
        for topic in topics:
            self.subscribe(ws, topic)
        try:
            yield
        finally:
            for topic in topics:
                self.unsubscribe(ws, topic)

    def topics(self, ws: Subscriber | None = None) -> set[str]:
        """The topics ``ws`` is subscribed to, or every topic with a local subscriber."""
        if ws is None:
            return set(self._topics)
        sub = self._subs.get(ws)
        return set(sub.topics) if sub is not None else set()

    def subscribers(self, topic: str) -> int:
        """How many local WebSockets are subscribed to ``topic``."""
        return len(self._topics.get(topic, ()))

    # ------------------------------------------------------------- publishing

    async def publish(self, topic: str, data: Any) -> int:
        """Send ``data`` to every subscriber of ``topic``, here and through the backend.

        ``str`` is sent as a TEXT message, ``bytes`` (or bytearray, memoryview)
        as BINARY, any other value as the JSON text of ``dumps(data)``.
        Returns how many local subscribers it was queued for. It never waits
        for a subscriber and always checks for cancellation. It yields to the
        scheduler only once some subscriber's queue is half full (or when the
        backend pushes back): a burst of publishes then reaches each WebSocket
        as one write, while a long loop of ``publish`` calls still lets the
        drain tasks run before any queue overflows. While the backend is
        unreachable the message reaches local subscribers only. Raises
        ``TypeError`` for data ``dumps`` rejects.
        """
        self._check_running()
        payload: Payload
        if isinstance(data, (str, bytes)):
            payload = data
        elif isinstance(data, (bytearray, memoryview)):
            payload = bytes(data)
        else:
            payload = self._dumps(data)
        self._published += 1
        count = self._deliver(topic, payload)
        deepest = self._deepest
        if self.backend is not None:
            await self.backend.publish(topic, payload)
        if deepest * 2 >= self.queue_size:
            await trio.lowlevel.checkpoint()  # let the drain tasks catch up
        elif self.backend is None:
            await trio.lowlevel.checkpoint_if_cancelled()
        return count

    def _deliver_remote(self, topic: str, payload: Payload) -> bool:
        self._received += 1
        self._deliver(topic, payload)
        return self._deepest * 2 >= self.queue_size

    def _deliver(self, topic: str, payload: Payload) -> int:
        """Queue ``payload`` for the local subscribers of ``topic``; never waits."""
        members = self._topics.get(topic)
        self._deepest = 0
        if not members:
            return 0
        limit = self.queue_size
        count = deepest = 0
        for sub in list(members.values()):
            queue = sub.queue
            depth = len(queue)
            if depth >= limit:
                self._on_overflow(sub)
                continue
            queue.append(payload)
            count += 1
            if depth == 0:
                sub.lot.unpark()
            if depth >= deepest:
                deepest = depth + 1
        self._queued += count
        self._deepest = deepest
        return count

    def _on_overflow(self, sub: _Sub) -> None:
        if self.overflow == "drop":
            self._dropped += 1
            return
        logger.warning(
            "A subscriber fell %d messages behind on %s; closing it with 1013",
            self.queue_size,
            ", ".join(sorted(sub.topics)),
        )
        self._closed_slow += 1
        self.unsubscribe(sub.ws)
        sub.overflowed = True
        sub.queue.clear()
        sub.scope.cancel()

    # ----------------------------------------------------------------- drain

    async def _drain(self, sub: _Sub) -> None:
        """Send ``sub`` its queued messages in order. Never raises but Cancelled."""
        ws = sub.ws
        queue = sub.queue
        try:
            with sub.scope:
                while True:
                    while queue:
                        payload = queue.popleft()
                        if isinstance(payload, str):
                            await ws.send_str(payload)
                        else:
                            await ws.send_bytes(payload)
                        self._sent += 1
                    if sub.retired:
                        return
                    await sub.lot.park()
        except Exception as exc:
            # The WebSocket closed or broke: nothing more can reach it.
            logger.debug("Hub: dropping a subscriber whose send failed: %r", exc)
            self._forget(sub)
            return
        finally:
            queue.clear()
        if sub.overflowed and not ws.closed:
            try:
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"subscriber too slow")
            except Exception as exc:  # pragma: no cover - close() records its own failures
                logger.debug("Hub: closing a slow subscriber failed: %r", exc)

    def _forget(self, sub: _Sub) -> None:
        if self._subs.get(sub.ws) is sub:
            self.unsubscribe(sub.ws)

    # ------------------------------------------------------------ statistics

    def statistics(self) -> HubStatistics:
        """Counters for monitoring and tests; see :class:`HubStatistics`."""
        return HubStatistics(
            topics=len(self._topics),
            subscribers=len(self._subs),
            published=self._published,
            received=self._received,
            queued=self._queued,
            sent=self._sent,
            dropped=self._dropped,
            closed_slow=self._closed_slow,
            backend=self.backend.statistics() if self.backend is not None else {},
        )


@asynccontextmanager
async def open_hub(
    backend: Backend | None = None,
    *,
    queue_size: int = 64,
    overflow: Overflow = "close",
    dumps: Callable[[Any], str] = json.dumps,
) -> AsyncIterator[Hub]:
    """Create a :class:`Hub` and run it for the block: ``async with open_hub() as hub:``.

    The hub's tasks (one per subscriber, plus the backend's) live in a
    nursery it owns; they end when the block does.
    """
    async with Hub(backend, queue_size=queue_size, overflow=overflow, dumps=dumps) as hub:
        yield hub
