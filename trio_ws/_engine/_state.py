"""The lifecycle of one WebSocket: every legal step of the close handshake, in one table.

Theory of operation
-------------------
A connection is in exactly one :class:`State` at a time, and only the three
:class:`Event` kinds move it, through :data:`TRANSITIONS`:

* ``OPEN``: both sides may send.
* ``CLOSE_SENT``: our CLOSE frame is on its way (``close()``, a protocol
  error, going away); we send nothing more and wait for the peer's CLOSE.
* ``CLOSE_RECEIVED``: the peer's CLOSE was received and ours is not sent
  yet. With ``autoclose`` this lasts no time at all (the answer is queued at
  once); without it, until the application calls ``close()``.
* ``CLOSED``: over. Either both CLOSE frames went (the handshake is done),
  or the connection ended without that (``ABORT``: lost, timed out,
  cancelled, a protocol error). ``CLOSED`` is final: a later event changes
  nothing, so the first way the connection ended is the one reported
  (except that the engine reports 1006 when it drops the connection with
  our CLOSE frame, queued as the state became ``CLOSED``, still unsent:
  see ``_core.py``).

A peer's CLOSE counts as *received* when the engine acts on it: at once when
nothing is queued before it, else when the application has taken the
messages queued before it (or calls ``close()``). Until then it is input
waiting in the inbox like any message, and the connection is still ``OPEN``.

What each state allows (the engine reads this table, it does not restate it):

================  ============  ==========================  =========
state             app may send  the peer may still send     heartbeat
================  ============  ==========================  =========
OPEN              yes           yes                         yes
CLOSE_SENT        no            its CLOSE (data discarded)  no
CLOSE_RECEIVED    yes           nothing                     no
CLOSED            no            nothing                     no
================  ============  ==========================  =========

This module is sans I/O: no trio, no clock, no socket. A step not in the
table is a bug in the engine and raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "Event", "IllegalTransition", "State", "next_state"]


class State(enum.Enum):
    """Where the close handshake of one connection stands."""

    OPEN = "open"
    CLOSE_SENT = "close sent"
    CLOSE_RECEIVED = "close received"
    CLOSED = "closed"


class Event(enum.Enum):
    """What moves a connection from one :class:`State` to the next."""

    SEND_CLOSE = "send close"  # our CLOSE frame was queued
    RECEIVE_CLOSE = "receive close"  # the peer's CLOSE frame was acted on
    ABORT = "abort"  # the connection ends now, without (completing) the handshake


class IllegalTransition(RuntimeError):
    """An event that the current state does not allow: a bug in the engine."""


#: Every legal step. ``CLOSED`` takes any event and stays ``CLOSED``.
TRANSITIONS: Final[dict[tuple[State, Event], State]] = {
    (State.OPEN, Event.SEND_CLOSE): State.CLOSE_SENT,
    (State.OPEN, Event.RECEIVE_CLOSE): State.CLOSE_RECEIVED,
    (State.OPEN, Event.ABORT): State.CLOSED,
    (State.CLOSE_SENT, Event.RECEIVE_CLOSE): State.CLOSED,
    (State.CLOSE_SENT, Event.ABORT): State.CLOSED,
    (State.CLOSE_RECEIVED, Event.SEND_CLOSE): State.CLOSED,
    (State.CLOSE_RECEIVED, Event.ABORT): State.CLOSED,
    **{(State.CLOSED, event): State.CLOSED for event in Event},
}


def next_state(state: State, event: Event) -> State:
    """The state after ``event`` in ``state``.

    Raises :class:`IllegalTransition` for a step the table does not allow
    (a second CLOSE sent, or received, the same way).
    """
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(f"{event.name} in {state.name}") from None
