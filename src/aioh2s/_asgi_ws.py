"""The websocket scope of :mod:`aioh2s.asgi`: a WebSocket over RFC 8441 as ASGI messages.

Theory of operation
-------------------
A WebSocket request over HTTP/2 is an extended CONNECT (``:protocol websocket``); the
server must advertise it (``enable_connect_protocol=True``, which :func:`aioh2s.asgi.run`
and ``aioh2s serve --asgi`` set). The application runs in the stream's handler task, as for
http, and its messages map onto :mod:`aioh2s.websocket`:

- the first ``receive()`` is ``websocket.connect``: nothing has been answered yet;
- ``websocket.accept`` is :func:`aioh2s.websocket.accept` (200, ``subprotocol``, extra
  ``headers``), which starts the WebSocket's reader task (framing, PINGs, bounded queue);
- ``receive()`` then is the WebSocket's ``receive()``, each message as
  ``websocket.receive`` (``text`` or ``bytes``); once it closed (a close frame either way,
  a reset, the connection lost) ``websocket.disconnect`` with the close code (1005 when the
  peer's frame had none, 1006 when the stream ended without a close handshake) and reason;
- ``websocket.send`` is ``WebSocket.send()`` (it waits on ``drain()``); on a closed
  WebSocket it raises :class:`~aioh2s.asgi.ClientDisconnected`;
- ``websocket.close`` before the accept denies the request with 403 and no body; after it,
  it starts the close handshake with the code and reason given and returns at once (the
  peer's close frame comes as ``websocket.disconnect``); before the accept on a stream the
  client reset already, it raises :class:`~aioh2s.asgi.ClientDisconnected`.
  ``websocket.http.response.start`` and ``.body`` before the accept answer with that
  response instead (the
  ``websocket.http.response`` extension), through the http cycle's own code.

When the server closes gracefully (``Server.close()``, and so :func:`aioh2s.asgi.run`, the
CLI and the workers' graceful stop), each open WebSocket gets a close frame 1001 (going
away) at once, and the application ``websocket.disconnect`` once the client answered it
(the connection tells the cycle: ``Connection.on_closing``), rather than a reset at the end
of the grace period. When the application returns with the WebSocket open, it is closed
with 1000; when it
raises after the accept, with 1011 (the error logged, at DEBUG only once a
``websocket.disconnect`` was delivered: Starlette's ``WebSocketDisconnect`` escaping an
endpoint is the client's ordinary close); before the accept, the error is the
handler's (a 500). Either way the handler waits for the close to finish, which
``close_timeout`` bounds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._asgi_http import (
    DONE,
    START,
    STARTED,
    WEBSOCKET_SEND,
    ClientDisconnected,
    HTTPCycle,
    Message,
    check,
)
from .errors import H2Error, WebSocketClosed, WebSocketRejected
from .streams import H2StreamReader, H2StreamWriter

if TYPE_CHECKING:
    from ._websocket import WebSocket

__all__ = ["WebSocketCycle"]

log = logging.getLogger("aioh2s")

#: The close code of a WebSocket open when its server closes gracefully (RFC 6455 §7.4.1:
#: "a server going down").
GOING_AWAY = 1001

#: Where the WebSocket is.
CONNECTING, HANDSHAKE, OPEN, CLOSED, RESPONDING, DENIED = range(6)
_NAMES = ("before websocket.connect was received", "before the accept",
          "on an open WebSocket", "after the WebSocket closed",
          "during a websocket.http.response", "after the request was denied")


class WebSocketCycle:
    """One WebSocket request: the ``receive`` and ``send`` an ASGI application gets for it."""

    def __init__(self, reader: H2StreamReader, writer: H2StreamWriter, *,
                 max_message_size: int, close_timeout: float) -> None:
        self._r = reader
        self._w = writer
        self.state = CONNECTING
        self.ws: WebSocket | None = None
        self._http = HTTPCycle(reader, writer, 64 * 1024, head=False)
        self._max_message_size = max_message_size
        self._close_timeout = close_timeout
        self._closed: WebSocketClosed | None = None
        #: A ClientDisconnected was raised to the application.
        self.raised = False
        #: A websocket.disconnect was delivered to the application.
        self.disconnected = False

    # -- receive -----------------------------------------------------------------------------

    async def receive(self) -> Message:
        """``websocket.connect``, then each message, then ``websocket.disconnect``."""
        state = self.state
        if state == CONNECTING:
            self.state = HANDSHAKE
            return {"type": "websocket.connect"}
        if state == OPEN:
            ws = self.ws
            assert ws is not None
            try:
                data = await ws.receive()
            except WebSocketClosed as e:
                self.state = CLOSED
                self._closed = e
                return self._disconnect()
            if isinstance(data, str):
                return {"type": "websocket.receive", "text": data}
            return {"type": "websocket.receive", "bytes": data}
        if state == HANDSHAKE or state == RESPONDING:
            # The client waits for our answer and sends nothing: all there is to wait for is
            # the stream's end (a reset, the connection lost, the response complete).
            try:
                await self._w.wait_closed()
            except H2Error:  # the stream's error: the disconnect says it
                pass
        return self._disconnect()

    def _disconnect(self) -> Message:
        self.disconnected = True
        e = self._closed
        if e is None:
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        return {"type": "websocket.disconnect", "code": e.code, "reason": e.reason}

    # -- send --------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Take one message of the application (checked before anything changes)."""
        kind, values = check(message, WEBSOCKET_SEND)
        state = self.state
        if kind == "websocket.send":
            data, text = values
            if (data is None) == (text is None):
                raise ValueError("'websocket.send' message: exactly one of 'bytes' and 'text'"
                                 " must be given (and not None)")
            if state != OPEN:
                if state == CLOSED:
                    self.raised = True
                    raise ClientDisconnected("the WebSocket is closed") from self._closed
                raise self._order(kind)
            ws = self.ws
            assert ws is not None
            try:
                await ws.send(text if data is None else data)
            except WebSocketClosed as e:
                self.raised = True
                self._closed = self._closed or e
                raise ClientDisconnected(f"the WebSocket is closed: {e}") from e
        elif kind == "websocket.accept":
            await self._accept(values[0], values[1])
        elif kind == "websocket.close":
            self._close(values[0], values[1] or "")
        elif kind == "websocket.http.response.start":
            if state not in (CONNECTING, HANDSHAKE):
                raise self._order(kind)
            self._http.start(values[0], values[1], False, kind)
            self.state = RESPONDING
        else:  # websocket.http.response.body
            if state != RESPONDING:
                raise self._order(kind)
            try:
                await self._http.body(values[0], values[1], kind)
            finally:
                self.raised = self._http.raised

    def _order(self, kind: str) -> RuntimeError:
        return RuntimeError(f"{kind!r} message sent {_NAMES[self.state]}")

    async def _accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        from . import websocket  # wsproto is there: the adapter checked

        if self.state not in (CONNECTING, HANDSHAKE):
            raise self._order("websocket.accept")
        if any(n.lower() == b"sec-websocket-protocol" for n, _ in headers):
            raise ValueError("'websocket.accept' message: give the subprotocol as "
                             "'subprotocol', not as a sec-websocket-protocol header")
        if self._w._s.error is not None:
            self.raised = True
            raise ClientDisconnected("the client went away before the accept") from (
                self._w._s.error)
        try:
            self.ws = await websocket.accept(self._r, self._w, subprotocol=subprotocol,
                                             headers=headers,
                                             max_message_size=self._max_message_size,
                                             close_timeout=self._close_timeout)
        except WebSocketRejected as e:  # answered 400 already (sec-websocket-version)
            self.state = CLOSED
            self.raised = True
            raise ClientDisconnected(f"the WebSocket request was refused: {e}") from e
        self.state = OPEN
        conn = self._w._s.conn
        if conn._grace_deadline is not None:  # accepted while this side closes gracefully
            self._going_away()
        else:
            callbacks = conn.on_closing
            if callbacks is None:
                callbacks = conn.on_closing = []
            callbacks.append(self._going_away)

    def _going_away(self) -> None:
        """The server closes gracefully: close frame 1001 now, not a reset once grace ends."""
        ws = self.ws
        if self.state == OPEN and ws is not None and ws.state == "open":
            ws._start_close(GOING_AWAY, "the server is shutting down")

    def forget(self) -> None:
        """The application is done: the connection need not tell this WebSocket it closes."""
        callbacks = self._w._s.conn.on_closing
        if callbacks:
            try:
                callbacks.remove(self._going_away)
            except ValueError:
                pass

    def _close(self, code: int, reason: str) -> None:
        from ._websocket import check_close

        state = self.state
        if state in (CONNECTING, HANDSHAKE):
            error = self._w._s.error
            if error is not None:  # the client gave up waiting: nobody to deny
                self.raised = True
                raise ClientDisconnected("the client went away before the denial") from error
            self._w.send_headers([(":status", "403"), ("content-length", "0")], end_stream=True)
            self.state = DENIED
        elif state == OPEN:
            check_close(code, reason)  # ValueError/TypeError before anything is sent
            ws = self.ws
            assert ws is not None
            ws._start_close(code, reason)  # the peer's answer comes as websocket.disconnect
        elif state == RESPONDING:
            raise self._order("websocket.close")
        # CLOSED, DENIED: nothing left to close

    # -- the end ---------------------------------------------------------------------------

    async def finish(self, error: BaseException | None) -> None:
        """The application returned (``error`` None) or raised: close what it left open."""
        ws = self.ws
        if ws is not None:
            if self.state == OPEN and ws.state == "open":
                ws._start_close(1000 if error is None else 1011, "")
            await ws.wait_closed()  # bounded by close_timeout

    @property
    def answered(self) -> bool:
        """Whether the request was answered (accepted, denied or given a complete response)."""
        return self.state in (OPEN, CLOSED, DENIED) or (
            self.state == RESPONDING and self._http.state == DONE)

    @property
    def response_begun(self) -> bool:
        """Whether a websocket.http.response has sent its headers (a 500 is too late)."""
        return self.state == RESPONDING and self._http.state not in (START, STARTED)
