"""Per-connection removal of h2's eager ``repr(frame)`` cost (for the raw-h2 benchmark peers).

Theory of operation
-------------------
``h2`` 4.x logs every received frame with
``self.config.logger.trace("Received frame: %s", repr(frame))`` in
``H2Connection._receive_frame``.  The ``repr`` is evaluated by the caller, so no logger,
however lazy, can avoid it: the string is built before ``trace()`` runs, even with h2's
no-op ``DummyLogger``.  ``hyperframe``'s repr of a DATA frame serializes the whole body and
hex-encodes it before keeping 20 characters, about 1.2 microseconds per KiB: for a
16 KiB DATA frame that is ~20 us, as much as the rest of h2's per-frame work together.

This module makes that repr O(1) without touching any global class and without changing
its text:

* ``install(conn)`` shadows ``_receive_frame`` on that one connection object (an instance
  attribute, no class is modified) with a wrapper that re-classes each DATA / HEADERS /
  PUSH_PROMISE / CONTINUATION / unknown frame carrying more than 256 payload bytes to a
  subclass of the same name (``type(frame).__name__`` is part of the repr), then calls the
  real method.  Those subclasses override only ``_body_repr``: they temporarily cut the
  payload attribute to 11 bytes and call hyperframe's own ``_body_repr``.  The payload only
  reaches the text through ``_raw_data_repr(prefix-of-body)``, which shows at most 10 bytes
  plus ``...`` when there are more, so the text is the same byte for byte, and any change
  upstream in the surrounding format is followed automatically.
* The subclasses are added to that connection's own ``_frame_dispatch_table`` (h2
  dispatches on ``frame.__class__``); ``isinstance`` checks keep working.  Small frames are
  left alone: their stock repr is cheap, and re-classing them would cost as much.
* Safety: ``supported()`` checks the h2 / hyperframe major versions and the private
  attributes this relies on, then compares the fast and stock reprs on sample frames
  (empty, short, long, padded, odd pad lengths).  If anything differs, ``install`` is a
  no-op that returns ``False`` and h2 behaves exactly as shipped.

Other per-frame costs of the same family (found reading h2 4.4.1, hyperframe 6.1, hpack
4.1) are listed in ``benchmarks/README.md``; they are not patched here because they are
not pure waste (copies, event objects, header validation).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import h2
import h2.config
import h2.connection
import hyperframe
import hyperframe.frame as hf

__all__ = ["install", "new_connection", "supported"]

#: Versions whose layout this module was written against.  Any other major version
#: disables the patch (``install`` returns False).
_KNOWN_H2_MAJOR = 4
_KNOWN_HYPERFRAME_MAJOR = 6

# hyperframe shows at most 10 payload bytes (20 hex digits) and appends "..." when there
# are more: 11 bytes are enough to produce the identical text.
_KEEP = 11


def _major(version: str) -> int:
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return -1


def _quiet_subclass(base: type[hf.Frame], attr: str) -> type[hf.Frame]:
    """A subclass of ``base`` with the same name whose ``_body_repr`` is O(1)."""
    stock_body_repr: Callable[[Any], str] = base._body_repr

    def _body_repr(self: Any) -> str:
        payload = getattr(self, attr)
        if payload is None or len(payload) <= _KEEP:
            return stock_body_repr(self)
        # Why not compute the text ourselves: calling the stock method on a cut
        # payload keeps whatever format hyperframe uses around the hex digits.
        self.__dict__[attr] = payload[:_KEEP]
        try:
            return stock_body_repr(self)
        finally:
            self.__dict__[attr] = payload

    ns: dict[str, Any] = {
        "_body_repr": _body_repr,
        "__qualname__": base.__qualname__,
        "__module__": base.__module__,
        "__doc__": base.__doc__,
    }
    return type(base.__name__, (base,), ns)


# Frames whose repr depends on a payload of up to max_frame_size bytes (or, for a HEADERS
# frame reassembled from CONTINUATIONs, up to 64 of them).
_PAYLOAD_ATTR: dict[type[hf.Frame], str] = {
    hf.DataFrame: "data",
    hf.HeadersFrame: "data",
    hf.PushPromiseFrame: "data",
    hf.ContinuationFrame: "data",
    hf.ExtensionFrame: "body",
}

_SWAP: dict[type[hf.Frame], type[hf.Frame]] = {
    base: _quiet_subclass(base, attr) for base, attr in _PAYLOAD_ATTR.items()
}


# Below this payload size the stock repr is cheap (hexlify of <= 256 bytes, ~0.3 us) and
# re-classing would cost about as much as it saves.
_MIN_PAYLOAD = 256

_SWAP_INFO: dict[type[hf.Frame], tuple[type[hf.Frame], str]] = {
    base: (_SWAP[base], attr) for base, attr in _PAYLOAD_ATTR.items()
}


def _sample_frames() -> list[hf.Frame]:
    frames: list[hf.Frame] = []
    for size in (0, 1, 9, 10, 11, 12, 16384):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        for pad in (None, 0, 1, 9, 10, 200):
            d = hf.DataFrame(1, payload)
            if pad is not None:
                d.flags.add("PADDED")
                d.pad_length = pad
            frames.append(d)
        h = hf.HeadersFrame(3, payload)
        h.flags.add("END_HEADERS")
        frames.append(h)
        p = hf.HeadersFrame(5, payload)
        p.flags.add("PRIORITY")
        p.depends_on, p.stream_weight, p.exclusive = 3, 15, True
        frames.append(p)
        frames.append(hf.PushPromiseFrame(1, promised_stream_id=2, data=payload))
        frames.append(hf.ContinuationFrame(7, payload))
        frames.append(hf.ExtensionFrame(0xFA, 9, flag_byte=3, body=payload))
    return frames


@functools.lru_cache(maxsize=1)
def supported() -> bool:
    """True if this h2/hyperframe pair is one the patch knows to be exact."""
    if _major(getattr(h2, "__version__", "")) != _KNOWN_H2_MAJOR:
        return False
    if _major(getattr(hyperframe, "__version__", "")) != _KNOWN_HYPERFRAME_MAJOR:
        return False
    if not hasattr(h2.connection.H2Connection, "_receive_frame"):
        return False
    try:
        for frame in _sample_frames():
            stock = repr(frame)
            frame.__class__ = _SWAP[type(frame)]
            if repr(frame) != stock:
                return False
    except Exception:  # noqa: BLE001 - any surprise means "unknown version": fall back
        return False
    return True


def install(conn: h2.connection.H2Connection) -> bool:
    """Make received-frame reprs O(1) on ``conn``; return True if installed.

    Call it right after constructing the connection.  Only ``conn`` is affected; its
    logs, events and return values are unchanged.  Returns False (leaving ``conn``
    untouched) on an h2/hyperframe version this module does not know.
    """
    if not supported():
        return False
    table = getattr(conn, "_frame_dispatch_table", None)
    receive = getattr(conn, "_receive_frame", None)
    if not isinstance(table, dict) or not callable(receive):
        return False
    if getattr(receive, "_aioh2s_quiet", False):
        return True
    if not all(base in table for base in _SWAP):
        return False
    for base, quiet in _SWAP.items():
        table[quiet] = table[base]
    swap = _SWAP_INFO

    # Why wrap _receive_frame on the instance rather than subclass FrameBuffer: h2's
    # receive_data calls self._receive_frame(frame) once per frame, right before the repr,
    # so an instance attribute is the narrowest hook: one extra call per frame, no extra
    # frame on the StopIteration path that ends each batch, and any FrameBuffer or
    # H2Connection subclass keeps working.
    def _receive_frame(frame: hf.Frame) -> Any:
        info = swap.get(frame.__class__)
        if info is not None and len(getattr(frame, info[1]) or b"") > _MIN_PAYLOAD:
            frame.__class__ = info[0]
        return receive(frame)

    _receive_frame._aioh2s_quiet = True  # type: ignore[attr-defined]
    # An instance attribute shadows the method for this connection only.
    conn.__dict__["_receive_frame"] = _receive_frame
    return True


def new_connection(config: h2.config.H2Configuration) -> h2.connection.H2Connection:
    """``H2Connection(config=config)`` with :func:`install` applied when supported."""
    conn = h2.connection.H2Connection(config=config)
    install(conn)
    return conn
