"""Self-checking messages: who sent them, in which order, and a sha256 of the body.

A message of ``size`` bytes (text or binary) from sender ``k`` with sequence
number ``seq`` is fully determined by ``(seed, k, seq, size, text)``:

* ``size >= HEADER_ROOM``: ``"{k}:{seq}:{sha256(body).hexdigest()}:" + body``;
  the body is half pseudo-random (hex digits for text) and half a repeated
  filler, so permessage-deflate has something to compress and something not.
* ``size == 1``: one character/byte naming the sender and ``seq % 16``.
* ``size == 0``: only sender 0 sends empty messages, so one is still
  attributable to its sender.

:func:`check_body` is what an echoing peer can verify without knowing the
schedule (the hash); :class:`Expectations` is what the sending side verifies
(every message, exactly, in order per sender, nothing lost or doubled).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

MiB = 1024 * 1024
#: The sizes every case sends: the frame length encodings' boundaries (7/16/64 bits) and 1 MiB.
SIZES = (0, 1, 125, 126, 65535, 65536, MiB)
HEADER_ROOM = 80  # "k:seq:" + 64 hex digits + ":" fits in this for seq < 10**10
_ONE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

Data = str | bytes


def make_message(seed: int, sender: int, seq: int, size: int, text: bool) -> Data:
    """The message ``sender`` sends as number ``seq`` (see the module docstring)."""
    if size == 0:
        assert sender == 0, "only sender 0 sends empty messages"
        return "" if text else b""
    if size == 1:
        index = sender * 16 + seq % 16
        return _ONE[index] if text else bytes([index])
    assert size >= HEADER_ROOM, size
    rng = random.Random(f"{seed}:{sender}:{seq}")
    prefix_len = len(f"{sender}:{seq}:") + 64 + 1
    body_len = size - prefix_len
    noise = rng.randbytes(body_len // 4 + 1)
    if text:
        filler = f"<{sender}.{seq}>" * (body_len // 4 + 1)
        body = (noise.hex() + filler)[:body_len].encode()
    else:
        body = (noise + bytes([seq % 256]) * body_len)[:body_len]
    head = f"{sender}:{seq}:{hashlib.sha256(body).hexdigest()}:".encode()
    message = head + body
    assert len(message) == size
    return message.decode() if text else message


def _raw(data: Data) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def attribute(data: Data) -> tuple[int, int | None]:
    """``(sender, seq or None)`` of a received message; raises ValueError if it has no header."""
    raw = _raw(data)
    if not raw:
        return 0, None
    if len(raw) == 1:
        index = _ONE.index(data) if isinstance(data, str) else raw[0]
        return index // 16, None
    head = raw[:HEADER_ROOM].split(b":", 3)
    if len(head) < 4:
        raise ValueError(f"no header in a {len(raw)}-byte message: {raw[:40]!r}")
    return int(head[0]), int(head[1])


def check_body(data: Data) -> str | None:
    """None if the message's body matches the sha256 in its header, else what is wrong."""
    raw = _raw(data)
    if len(raw) < 2:
        return None
    parts = raw.split(b":", 3)
    if len(parts) != 4 or len(parts[2]) != 64:
        return f"no header in a {len(raw)}-byte message: {raw[:40]!r}"
    digest = hashlib.sha256(parts[3]).hexdigest().encode()
    if digest != parts[2]:
        return (
            f"sha256 mismatch in a {len(raw)}-byte message from sender {parts[0]!r} "
            f"seq {parts[1]!r}: header {parts[2][:16]!r}..., body {digest[:16]!r}..."
        )
    return None


@dataclass
class Schedule:
    """What each sender sends, in order: ``(size, text)`` per message.

    Messages are generated once, up front (:meth:`prepare`): generating a 1 MiB
    message takes ~10 ms, and a test that spends that inside the event loop
    delays pongs and can trip a 0.05 s heartbeat on its own.
    """

    seed: int
    per_sender: list[list[tuple[int, bool]]]
    _cache: dict[tuple[int, int], Data] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, seed: int, senders: int, sizes: tuple[int, ...], extra: int = 0) -> Schedule:
        """Each sender sends every size in ``sizes`` (0 only for sender 0) plus ``extra``
        small or medium messages, in a seeded random order, text or binary at random."""
        rng = random.Random(seed)
        plan: list[list[tuple[int, bool]]] = []
        for k in range(senders):
            mine = [s for s in sizes if s or k == 0]
            small = [s for s in (0, 1, 125, 126, 300, 4000, 20000, 100_000) if s or k == 0]
            mine += [rng.choice(small) for _ in range(extra)]
            rng.shuffle(mine)
            plan.append([(s, rng.random() < 0.5) for s in mine])
        return cls(seed, plan)

    def prepare(self) -> None:
        """Generate every message now rather than while the connection runs."""
        for sender, plan in enumerate(self.per_sender):
            for seq in range(len(plan)):
                self.message(sender, seq)

    def message(self, sender: int, seq: int) -> Data:
        key = (sender, seq)
        data = self._cache.get(key)
        if data is None:
            size, text = self.per_sender[sender][seq]
            data = self._cache[key] = make_message(self.seed, sender, seq, size, text)
        return data

    @property
    def total(self) -> int:
        return sum(len(p) for p in self.per_sender)


@dataclass
class Expectations:
    """The receiving end of a :class:`Schedule`: each message once, in order per sender."""

    schedule: Schedule
    next_seq: list[int] = field(default_factory=list)
    received: int = 0

    def __post_init__(self) -> None:
        self.next_seq = [0] * len(self.schedule.per_sender)

    def check(self, data: Data) -> None:
        """Account for one received message; raises AssertionError naming what is wrong."""
        problem = check_body(data)
        assert problem is None, problem
        try:
            sender, seq = attribute(data)
        except ValueError as exc:
            raise AssertionError(str(exc)) from None
        assert 0 <= sender < len(self.next_seq), f"unknown sender {sender}"
        expected_seq = self.next_seq[sender]
        assert expected_seq < len(self.schedule.per_sender[sender]), (
            f"sender {sender}: an extra message (all {expected_seq} already received)"
        )
        if seq is not None:
            assert seq == expected_seq, f"sender {sender}: got seq {seq}, expected {expected_seq}"
        expected = self.schedule.message(sender, expected_seq)
        if data != expected:
            raise AssertionError(
                f"sender {sender} seq {expected_seq}: got {type(data).__name__} of "
                f"{len(_raw(data))} bytes {_raw(data)[:24]!r}, expected "
                f"{type(expected).__name__} of {len(_raw(expected))} bytes {_raw(expected)[:24]!r}"
            )
        self.next_seq[sender] += 1
        self.received += 1

    @property
    def complete(self) -> bool:
        return self.received == self.schedule.total
