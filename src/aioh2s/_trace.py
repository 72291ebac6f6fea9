"""The frame trace: one DEBUG line per HTTP/2 frame sent or received, on ``aioh2s.frames``.

Theory of operation
-------------------
DEBUG logging of the whole process is mostly hpack's lines, one per header field. What helps
with an HTTP/2 problem is the conversation, frame by frame, as ``nghttp -v`` prints it. So
each connection can trace its frames on the logger :data:`log` (``aioh2s.frames``): one
record per frame, ``[peer] send|recv TYPE stream=N length=N flags=... key fields``, e.g.::

    [127.0.0.1:8000] send HEADERS stream=1 length=31 flags=END_STREAM|END_HEADERS
    [127.0.0.1:8000] recv SETTINGS stream=0 length=24 flags=0 MAX_CONCURRENT_STREAMS=100 ...
    [127.0.0.1:8000] recv WINDOW_UPDATE stream=0 length=4 flags=0 increment=3145728

Key fields: SETTINGS values, WINDOW_UPDATE increments, RST_STREAM and GOAWAY error codes
(GOAWAY's last stream id and debug data too), PING data, priorities, promised streams and
padding. Header blocks are not decoded: HPACK is stateful, and the headers themselves are
the application's (the CLI's ``-v`` prints them). Each record also carries the attributes
``h2_side`` (``client``/``server``), ``h2_peer``, ``h2_direction`` (``send``/``recv``) and
``h2_frame`` (the line without the peer), for filters and formatters.

"No cost when off": nothing per frame checks whether tracing is on. The connection asks
:func:`enabled` once per reader turn (and when it starts), and only when the answer changed
does it swap the classes of its h2 object and of that object's frame buffer to or from
``_h2ext.TracedH2`` and ``_h2ext.TracedFrameBuffer``, whose hooks call
:meth:`FrameTrace.received` / :meth:`FrameTrace.sent`. A connection therefore starts or
stops tracing at its next input after the logger's level changed.

What the two directions mean. A received frame is reported as it was on the wire, as soon
as it is parsed: each CONTINUATION frame on its own line (h2 merges a header block into its
first frame before processing it), with the length from the frame's 9-byte header. A sent
frame is reported when h2 has serialized it into the connection's output buffer, which is
before it reaches the socket: frames queued just as a connection is aborted (a protocol
error, a timeout, ``close_now``) may be reported as sent and never reach the peer.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["FrameTrace", "describe", "enabled", "log", "peer_label"]

#: The logger of the frame trace (DEBUG records only).
log = logging.getLogger("aioh2s.frames")

_DEBUG = logging.DEBUG

_SETTINGS = {
    0x1: "HEADER_TABLE_SIZE",
    0x2: "ENABLE_PUSH",
    0x3: "MAX_CONCURRENT_STREAMS",
    0x4: "INITIAL_WINDOW_SIZE",
    0x5: "MAX_FRAME_SIZE",
    0x6: "MAX_HEADER_LIST_SIZE",
    0x8: "ENABLE_CONNECT_PROTOCOL",
    0x9: "NO_RFC7540_PRIORITIES",
}

_TYPES = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x2: "PRIORITY",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
    0x9: "CONTINUATION",
    0xA: "ALTSVC",
}


def enabled() -> bool:
    """Whether the frame trace is switched on (``aioh2s.frames`` logs DEBUG)."""
    return log.isEnabledFor(_DEBUG)


def peer_label(peername: Any) -> str:
    """A socket address as aioh2s's messages show it: ``host:port``, ``[v6]:port``, or ``?``."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host = str(peername[0])
        return f"[{host}]:{peername[1]}" if ":" in host else f"{host}:{peername[1]}"
    return str(peername) if peername else "?"


def _error_name(code: int) -> str:
    from .errors import ErrorCode

    try:
        return ErrorCode(code).name
    except ValueError:
        return f"{code:#x}"


def describe(frame: Any, length: int | None = None) -> str:
    """One frame (a hyperframe ``Frame``) as ``TYPE stream=N length=N flags=... fields``.

    ``length`` is the payload length from the frame's header, for a received frame: the
    ``body_len`` hyperframe's parser sets leaves out a padded HEADERS frame's Pad Length byte.
    """
    ftype = frame.type  # (an unknown frame, hyperframe's ExtensionFrame, has its own)
    name = _TYPES.get(ftype, f"UNKNOWN(type={ftype:#x})" if isinstance(ftype, int) else "UNKNOWN")
    flags = frame.flags
    names = [f.name for f in frame.defined_flags if f.name in flags]
    if not frame.defined_flags:
        flag_byte = getattr(frame, "flag_byte", 0)  # an unknown frame's raw flags
        text_flags = f"{flag_byte:#04x}" if flag_byte else "0"
    else:
        text_flags = "|".join(names) or "0"
    size = frame.body_len if length is None else length
    parts = [name, f"stream={frame.stream_id}", f"length={size}", f"flags={text_flags}"]
    pad = getattr(frame, "pad_length", 0)
    if pad:
        parts.append(f"padding={pad}")
    if name == "SETTINGS":
        parts += [f"{_SETTINGS.get(k, f'{k:#x}')}={v}" for k, v in frame.settings.items()]
    elif name == "WINDOW_UPDATE":
        parts.append(f"increment={frame.window_increment}")
    elif name == "RST_STREAM":
        parts.append(f"error={_error_name(frame.error_code)}")
    elif name == "GOAWAY":
        parts.append(f"last_stream={frame.last_stream_id}")
        parts.append(f"error={_error_name(frame.error_code)}")
        if frame.additional_data:
            parts.append(f"debug={bytes(frame.additional_data[:200])!r}")
    elif name == "PING":
        parts.append(f"data={bytes(frame.opaque_data).hex()}")
    elif name == "PUSH_PROMISE":
        parts.append(f"promised_stream={frame.promised_stream_id}")
    if name in ("HEADERS", "PRIORITY") and (name == "PRIORITY" or "PRIORITY" in flags):
        parts.append(
            f"depends_on={frame.depends_on} weight={frame.stream_weight + 1}"
            f" exclusive={int(bool(frame.exclusive))}"
        )
    return " ".join(parts)


class FrameTrace:
    """The trace of one connection: who it talks to, and the two hooks."""

    __slots__ = ("side", "peer")

    def __init__(self, client: bool, peername: Any) -> None:
        self.side = "client" if client else "server"
        self.peer = peer_label(peername)

    def _emit(self, direction: str, frame: Any, length: int | None = None) -> None:
        text = describe(frame, length)
        log.debug(
            "[%s] %s %s", self.peer, direction, text,
            extra={"h2_side": self.side, "h2_peer": self.peer, "h2_direction": direction,
                   "h2_frame": text},
        )

    def received(self, frame: Any, length: int | None = None) -> None:
        """A frame just parsed (``length``: its header's), before h2 merges or processes it."""
        self._emit("recv", frame, length)

    def sent(self, frames: Any) -> None:
        """Frames h2 just serialized into its output."""
        for frame in frames:
            self._emit("send", frame)
