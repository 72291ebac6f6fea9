"""Every exception aioh2s raises, in one place.

Theory of operation: a failure in HTTP/2 has a *scope*. It ends one stream (``StreamReset``), or
the whole connection (``ConnectionClosed`` and its subclass ``ConnectionTerminated``, the latter
when the peer said goodbye with GOAWAY), or the connection never came up (``ConnectError``,
raised by ``connect()`` only), or it is a protocol violation (``ProtocolError``), and then it
matters *whose*: the peer's (``RemoteProtocolError``, answered on the wire) or the
application's (``LocalProtocolError``, refused before anything was sent). All of them derive
from ``H2Error`` so ``except aioh2s.H2Error`` catches anything the library raises for network
or protocol reasons. Read methods additionally raise asyncio's own ``IncompleteReadError`` and
``LimitOverrunError``, exactly as :class:`asyncio.StreamReader` does; a header name or value of
the wrong type (an ``int``, ``None``) is a plain ``TypeError``, like any misuse of Python types.

Rules kept here:
- Messages say what the *peer* (or the caller) did, in words, with the RFC 9113 error code name;
  a ``ConnectError`` says which ``host:port`` and which stage (TCP connect, TLS handshake, ALPN,
  HTTP/2 handshake) failed and chains the original error as ``__cause__``.
- ``retry_safe`` is True only when RFC 9113 guarantees the peer did not process the stream
  (REFUSED_STREAM, or a stream above the last stream id of a received GOAWAY).
"""

from __future__ import annotations

import asyncio
import sys

from h2.errors import ErrorCodes

__all__ = [
    "ALPNError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionTerminated",
    "ErrorCode",
    "ExtendedConnectUnsupported",
    "H2Error",
    "H2Timeout",
    "LocalProtocolError",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RemoteProtocolError",
    "RequestTimeout",
    "ResponseTooLarge",
    "StreamReset",
    "WebSocketClosed",
    "WebSocketRejected",
    "WriteTimeout",
]

#: HTTP/2 error codes (RFC 9113 §7), the same ``IntEnum`` as :class:`h2.errors.ErrorCodes`.
ErrorCode = ErrorCodes


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_ERROR_{code:#x}"


def _as_code(code: int) -> ErrorCode | int:
    try:
        return ErrorCode(code)
    except ValueError:
        return code


class H2Error(Exception):
    """Base class of every aioh2s error.

    ``retry_safe`` is True when the peer certainly did not process the request the error ended
    (so sending it again cannot do anything twice); a :class:`aioh2s.Session` retries only
    those, and only when the body can be sent again.
    """

    retry_safe: bool = False


class ProtocolError(H2Error):
    """HTTP/2 was broken, by the peer or by the application: catch this to handle both.

    The subclasses say whose doing it was: :class:`RemoteProtocolError` (the peer) and
    :class:`LocalProtocolError` (the application). ``error_code`` is the RFC 9113 code of the
    violation: for a peer's, the one sent in the GOAWAY or RST_STREAM that answered it.
    """

    def __init__(self, message: str, error_code: int = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code: ErrorCode | int = _as_code(error_code)


class LocalProtocolError(ProtocolError):
    """The *application* asked for something HTTP/2 forbids (a bad header, a call out of order).

    Raised before anything was sent or any state changed, so the stream stays usable.
    ``error_code`` is the code such a violation would carry on the wire; nothing was sent.
    """


class ExtendedConnectUnsupported(LocalProtocolError):
    """An extended CONNECT (``:protocol``, RFC 8441) to a server that did not enable it.

    The server's SETTINGS had no SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, so RFC 8441 §3 forbids
    sending the request; nothing was sent. Another connection to the same server would say the
    same, so it is not ``retry_safe``: fall back to another transport (such as WebSockets over
    HTTP/1.1) instead.
    """


class RemoteProtocolError(ProtocolError):
    """The *peer* broke HTTP/2; ``error_code`` is what we answered it with (GOAWAY/RST_STREAM)."""


class ConnectError(H2Error, OSError):
    """``connect()`` could not establish the HTTP/2 connection (TCP, TLS or the handshake).

    It is both an :class:`H2Error` and an :class:`OSError`, so code written for
    ``asyncio.open_connection`` (``except OSError``) keeps working; the original error is
    ``__cause__``. Nothing was sent, so it is ``retry_safe``.
    """

    retry_safe = True


class StreamReset(H2Error):
    """The stream was reset with RST_STREAM, by the peer (``remote=True``) or by us."""

    def __init__(self, stream_id: int, error_code: int, remote: bool, message: str = "") -> None:
        who = "peer" if remote else "local side"
        text = message or f"stream {stream_id} was reset by the {who} with {_code_name(error_code)}"
        super().__init__(text)
        self.stream_id = stream_id
        self.error_code: ErrorCode | int = _as_code(error_code)
        self.remote = remote
        #: True when the peer refused the stream before processing it (REFUSED_STREAM).
        self.retry_safe = remote and self.error_code == ErrorCode.REFUSED_STREAM


class ConnectionClosed(H2Error):
    """The connection ended while this operation needed it.

    ``error_code`` is the HTTP/2 error code of the ending (NO_ERROR for a clean close),
    ``last_stream_id`` the highest stream id the peer said it processed (when known), and
    ``retry_safe`` whether the operation's stream was certainly not processed by the peer.
    """

    def __init__(
        self,
        message: str,
        error_code: int = ErrorCode.NO_ERROR,
        last_stream_id: int | None = None,
        retry_safe: bool = False,
    ) -> None:
        super().__init__(message)
        self.error_code: ErrorCode | int = _as_code(error_code)
        self.last_stream_id = last_stream_id
        self.retry_safe = retry_safe

    def for_stream(self, stream_id: int, unsent: bool = False) -> ConnectionClosed:
        """A copy of this error as seen by one stream (``retry_safe`` computed for it).

        ``unsent``: not one byte was written since the stream's HEADERS were queued, so the
        peer cannot have seen the request.
        """
        above = self.last_stream_id is not None and stream_id > self.last_stream_id
        safe = above or unsent
        text = str(self)
        if above:
            text += f"; stream {stream_id} was not processed by the peer and is safe to retry"
        elif unsent:
            text += f"; no byte of stream {stream_id} was sent, so it is safe to retry"
        err = type(self)(text, self.error_code, self.last_stream_id, safe)
        err.__cause__ = self.__cause__
        return err


class ConnectionTerminated(ConnectionClosed):
    """The peer sent GOAWAY: streams above ``last_stream_id`` were not processed (retry them)."""


class ALPNError(ConnectError, RemoteProtocolError):
    """The TLS handshake completed but ALPN did not select ``h2``.

    ``negotiated`` is the protocol the peer selected (``None`` when it selected none, e.g. a
    server without ALPN support, or a client that did not offer ``h2``). It is a
    :class:`ConnectError` (``connect()`` could not establish HTTP/2) and a
    :class:`RemoteProtocolError` (the peer does not speak HTTP/2 over TLS); no HTTP/2 frame was
    exchanged, so ``error_code`` is only the code such a refusal would carry. ``peer`` (the
    ``host:port`` connected to), when given, starts the message.
    """

    def __init__(self, negotiated: str | None, peer: str | None = None) -> None:
        if negotiated is None:
            text = (
                "TLS peer did not negotiate HTTP/2: no ALPN protocol was selected (expected 'h2')"
            )
        else:
            text = (
                f"TLS peer did not negotiate HTTP/2: ALPN selected {negotiated!r} (expected 'h2')"
            )
        if peer is not None:
            text = f"cannot connect to {peer}: {text}"
        super().__init__(text)
        self.negotiated = negotiated


# On 3.10 asyncio.TimeoutError is not yet the built-in TimeoutError: be both, so that either
# ``except`` catches ours.
if sys.version_info >= (3, 11):
    class _TimeoutBase(H2Error, TimeoutError):
        pass
else:  # pragma: no cover - 3.10
    class _TimeoutBase(H2Error, TimeoutError, asyncio.TimeoutError):
        pass


class H2Timeout(_TimeoutBase):
    """A timeout of aioh2s fired. ``timeout`` names which one and ``seconds`` is its limit.

    Also a built-in :class:`TimeoutError` (and so an ``asyncio.TimeoutError``). Which one fired
    is the subclass: :class:`ConnectTimeout`, :class:`PoolTimeout`, :class:`ReadTimeout`,
    :class:`WriteTimeout` or :class:`RequestTimeout`.
    """

    timeout = "request"

    def __init__(self, message: str, seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


class ConnectTimeout(ConnectError, H2Timeout):
    """TCP connect, TLS handshake or the HTTP/2 handshake took longer than allowed."""

    timeout = "connect"


class PoolTimeout(H2Timeout):
    """No connection of the pool had a free stream in time. Nothing was sent: retry-safe."""

    timeout = "pool"
    retry_safe = True


class ReadTimeout(H2Timeout):
    """No byte of the response arrived for ``seconds`` while the application waited for one."""

    timeout = "read"


class WriteTimeout(H2Timeout):
    """``drain()`` waited ``seconds`` for the peer to take more of the request body."""

    timeout = "write"


class RequestTimeout(H2Timeout):
    """The whole request (``Session.fetch``) took longer than its total timeout."""

    timeout = "total"


class ResponseTooLarge(H2Error):
    """A response body grew past the ``max_body_size`` the application allowed for it."""


class WebSocketClosed(H2Error):
    """A WebSocket (``aioh2s.websocket``) is closed: no more messages come or may be sent.

    ``code`` and ``reason`` are the close frame's (RFC 6455 §7.4): the peer's when it closed
    first, the one we sent when we did (after ``close()``, or failing the connection because
    the peer broke RFC 6455: 1002, 1007, 1009), or 1006 when the stream ended without a close
    handshake (``__cause__`` is then the ``StreamReset``/``ConnectionClosed``, if any).
    ``local`` says which side started the close. ``clean`` is True for a completed handshake
    with a normal code (1000, 1001, or 1005 for a close frame without one), the case in which
    ``async for message in ws`` simply ends.
    """

    def __init__(self, code: int, reason: str = "", local: bool = False) -> None:
        who = "we" if local else "the peer"
        text = f"WebSocket closed by {who} with code {code}" + (f": {reason}" if reason else "")
        super().__init__(text)
        self.code = code
        self.reason = reason
        self.local = local

    @property
    def clean(self) -> bool:
        """True when the close was a normal one (code 1000, 1001 or 1005)."""
        return self.code in (1000, 1001, 1005)


class WebSocketRejected(H2Error):
    """A WebSocket's opening handshake was refused: no WebSocket was opened.

    On a client, the server answered the extended CONNECT with something other than 2xx (or
    chose a subprotocol that was not offered); ``status``, ``headers`` and ``body`` (its first
    64 KiB at most) are the server's answer. On a server, ``accept()`` raises it after
    answering a request it cannot accept (a ``sec-websocket-version`` other than 13) with 400;
    escaping a handler it is not logged as the handler's failure.
    """

    def __init__(self, status: int, headers: object, body: bytes) -> None:
        super().__init__(f"the server refused the WebSocket with status {status}")
        self.status = status
        self.headers = headers
        self.body = body
