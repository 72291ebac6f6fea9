"""The states of one HTTP/2 stream, as seen by the application, and the rules between them.

Theory of operation
-------------------
RFC 9113 §5.1 gives a stream one state (idle, open, half-closed, closed). The application
needs finer and more direct answers: "may I still write?", "will more body arrive?", "why is
this stream dead, and whose fault was it?". So a stream here has two small state machines,
one per direction, and every public operation looks its permission up in a table in this
module instead of combining flags.

Our side (``Send``)::

    IDLE ──final headers──► OPEN ──write_eof()/send_trailers()──► ENDING ──queue empty──► ENDED
      │  (1xx: stays IDLE)    │                                      │
      └──────────── reset, peer reset, connection lost ─────────────┴──────────────► RESET

    IDLE ──headers with end_stream──► ENDED

The peer's side (``Recv``)::

    OPEN ──END_STREAM──► ENDED
      │
      ├──application abandons the body──► DISCARDING ──END_STREAM──► ENDED
      └──reset, peer reset, connection lost──► RESET   (also from DISCARDING; ENDED only by a
                                                       reset while unread bytes remain)

- ``ENDING`` exists because ``write_eof()`` only *queues* the end: END_STREAM leaves after the
  queued body, which may wait for flow-control window.
- ``DISCARDING``: the application will read no more (a handler returned, a client left its
  ``async with``). Arriving DATA is acknowledged at once so it cannot hold the connection
  window that other streams need.
- ``RESET`` carries the error that ended the direction. The two directions usually die
  together; the one exception is RFC 9113 §8.1 on a *client*: RST_STREAM(NO_ERROR) after a
  complete response ends only our sending side, and the response stays readable.
- A stream is *closed* (it leaves the connection's table and gives back its slot) once
  both directions are ENDED or RESET.

A connection has one state machine of its own (``Life``), with every allowed move in
``LIFE_MOVES``::

    NEW ──our preface──► OPEN ──GOAWAY sent or received──► CLOSING ──no streams left──► LINGER
     │                    │                                   │                          │
     └────────────────────┴───────── error, abort, peer gone ─┴──────────────────────────┴─► CLOSED

- ``NEW`` is a cleartext server connection whose first bytes are still being read (prior
  knowledge, h2c Upgrade or HTTP/1.1 is not decided yet): nothing of HTTP/2 was said, so a
  close then writes nothing.
- ``CLOSING``: no new streams; open ones may finish until the grace period ends.
- ``LINGER``: the last GOAWAY is written (over TCP our write side shut at once; over TLS a
  server sends close_notify only once the peer has it all); we read and discard until the
  peer closes too, for a bounded time, so the peer reads our last frames instead of a TCP
  reset.

Errors say who broke which rule: a call the table forbids is the application's mistake and
raises ``RuntimeError`` naming the operation and the state, before anything changes.
"""

from __future__ import annotations

import enum

__all__ = [
    "LIFE_MOVES",
    "SEND_RULES",
    "Life",
    "Recv",
    "Send",
    "check_send",
    "send_terminal",
]


class Send(enum.Enum):
    """Our sending side of a stream."""

    IDLE = "no final headers sent yet"
    OPEN = "open"
    ENDING = "ended by this side (END_STREAM queued)"
    ENDED = "ended by this side"
    RESET = "reset"


class Recv(enum.Enum):
    """The peer's sending side of a stream, as our reader sees it."""

    OPEN = "open"
    DISCARDING = "abandoned by the application (arriving data is discarded)"
    ENDED = "ended by the peer"
    RESET = "reset"


# What each operation on our side may do in each state:
#   "ok"    it proceeds;
#   "drop"  it is silently ignored (as asyncio ignores writes to a closing transport; the
#           next drain() raises the stream's error);
#   "error" it raises the stream's error (the stream is dead and the call wanted it alive);
#   text    it raises RuntimeError with that text (the application called out of order).
_AFTER_END = "stream {id} was already ended by this side"
SEND_RULES: dict[str, dict[Send, str]] = {
    "send_headers": {
        Send.IDLE: "ok",
        Send.OPEN: "final headers were already sent on stream {id}: use send_trailers()",
        Send.ENDING: _AFTER_END,
        Send.ENDED: _AFTER_END,
        Send.RESET: "error",
    },
    "write": {
        Send.IDLE: "send_headers() must be called before write() (stream {id})",
        Send.OPEN: "ok",
        Send.ENDING: _AFTER_END,
        Send.ENDED: _AFTER_END,
        Send.RESET: "drop",
    },
    "end": {  # with trailers
        Send.IDLE: "send_headers() must be called before ending stream {id}",
        Send.OPEN: "ok",
        Send.ENDING: _AFTER_END,
        Send.ENDED: _AFTER_END,
        Send.RESET: "drop",
    },
    "eof": {  # write_eof(): a second one does nothing, as asyncio's transports
        Send.IDLE: "send_headers() must be called before ending stream {id}",
        Send.OPEN: "ok",
        Send.ENDING: "drop",
        Send.ENDED: "drop",
        Send.RESET: "drop",
    },
}


def check_send(op: str, state: Send, stream_id: int) -> str:
    """Look ``op`` up for ``state``: returns "ok", "drop" or "error"; raises on misuse."""
    rule = SEND_RULES[op][state]
    if rule in ("ok", "drop", "error"):
        return rule
    raise RuntimeError(f"cannot {op}: " + rule.format(id=stream_id))


def send_terminal(state: Send) -> bool:
    """True once our side can change no more (END_STREAM handed to h2, or reset)."""
    return state is Send.ENDED or state is Send.RESET



class Life(enum.Enum):
    """The life of a connection; ``may_write``: whether frames may still be written."""

    NEW = ("new (our preface not sent yet)", True)
    OPEN = ("open", True)
    CLOSING = ("closing (GOAWAY sent or received)", True)
    LINGER = ("closed, waiting for the peer to read our last frames", False)
    CLOSED = ("closed", False)

    def __init__(self, text: str, may_write: bool) -> None:
        self.text = text
        self.may_write = may_write


LIFE_MOVES: dict[Life, frozenset[Life]] = {
    Life.NEW: frozenset([Life.OPEN, Life.CLOSED]),
    Life.OPEN: frozenset([Life.CLOSING, Life.CLOSED]),
    Life.CLOSING: frozenset([Life.LINGER, Life.CLOSED]),
    Life.LINGER: frozenset([Life.CLOSED]),
    Life.CLOSED: frozenset(),
}
