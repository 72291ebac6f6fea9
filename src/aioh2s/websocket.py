"""WebSockets over HTTP/2 (RFC 8441): RFC 6455 messages inside an extended CONNECT tunnel.

Theory of operation: the opening handshake of a WebSocket over HTTP/2 *is* an extended
CONNECT (``:protocol websocket``) and its 2xx answer (RFC 8441 §5). This module does that
exchange on either side, :func:`accept` on a server and :func:`connect` on a client, and
hands the tunnel to a :class:`WebSocket` (``aioh2s._websocket``: framing by wsproto, the
reader task, bounded memory, the close handshake). Every option is checked, and every
misuse raises, before anything is sent; :func:`connect`'s ``open_timeout`` bounds the whole
opening (dialling, a free stream slot, the answer).

Not supported: extensions (permessage-deflate offers are declined, which RFC 6455 allows, so
a browser sends uncompressed frames; compression would also need a bound on inflated size),
and sending one message as fragments. Needs the ``wsproto`` extra.
"""

from __future__ import annotations

import asyncio
import re
import ssl as _ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

try:
    import wsproto  # noqa: F401 - only to say what is missing
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "aioh2s.websocket needs wsproto: pip install 'aioh2s[wsproto]'"
    ) from e

from ._websocket import WebSocket, check_options
from .client import Client, RequestStream, end_request
from .client import connect as _connect
from .errors import ConnectTimeout, WebSocketClosed, WebSocketRejected
from .headers import Headers, HeadersLike
from .streams import H2StreamReader, H2StreamWriter

__all__ = [
    "WebSocket",
    "WebSocketClosed",
    "WebSocketRejected",
    "accept",
    "connect",
    "is_websocket",
    "subprotocols",
]

#: How much of a refusal's body WebSocketRejected keeps.
_REJECT_BODY = 64 * 1024
#: An RFC 9110 token: what a subprotocol name must be (RFC 6455 §4.1).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def is_websocket(headers: Headers) -> bool:
    """True when request ``headers`` open a WebSocket (an extended CONNECT for ``websocket``)."""
    return headers.get(":method") == "CONNECT" and headers.get(":protocol") == "websocket"


def subprotocols(headers: Headers) -> list[str]:
    """The subprotocols a WebSocket request offers (``sec-websocket-protocol``), in order."""
    offered: list[str] = []
    for value in headers.getall("sec-websocket-protocol"):
        for p in value.split(","):
            p = p.strip()
            if p and p not in offered:
                offered.append(p)
    return offered


def _check_subprotocols(offered: Sequence[str]) -> list[str]:
    if isinstance(offered, (str, bytes)):
        raise TypeError("subprotocols is a sequence of names, not one string")
    names = list(offered)
    for p in names:
        if not isinstance(p, str) or not _TOKEN.fullmatch(p):
            raise ValueError(f"subprotocol {p!r} is not a token (RFC 6455 §4.1)")
    if len(set(names)) != len(names):
        raise ValueError(f"subprotocols must be unique (RFC 6455 §4.1): {names}")
    return names


# -- opening --------------------------------------------------------------------------------


async def accept(
    reader: H2StreamReader,
    writer: H2StreamWriter,
    *,
    subprotocol: str | None = None,
    headers: HeadersLike | None = None,
    max_message_size: int = 4 * 1024 * 1024,
    close_timeout: float = 10.0,
) -> WebSocket:
    """Server side: answer a WebSocket request (see :func:`is_websocket`) with 200.

    The server must run with ``enable_connect_protocol=True``. ``subprotocol`` must be one the
    client offered (:func:`subprotocols`); ``headers`` adds response fields. A request with a
    ``sec-websocket-version`` other than 13 is answered 400 (with ``sec-websocket-version:
    13``, RFC 6455 §4.4) and raises :class:`~aioh2s.WebSocketRejected`. Misuse (not a
    WebSocket request, headers already sent, a subprotocol not offered) raises ``ValueError``
    before anything is sent.
    """
    request = reader.headers
    if not is_websocket(request):
        raise ValueError("not a WebSocket request (extended CONNECT with :protocol websocket)")
    if writer.headers_sent:
        raise ValueError("the response headers were sent already")
    if subprotocol is not None and subprotocol not in subprotocols(request):
        raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
    check_options(max_message_size, close_timeout)
    response: list[tuple[str, str]] = [(":status", "200")]
    if subprotocol is not None:
        response.append(("sec-websocket-protocol", subprotocol))
    extra = list(Headers(headers).items()) if headers is not None else []
    if request.get("sec-websocket-version") != "13":
        writer.send_headers(
            [(":status", "400"), ("sec-websocket-version", "13"), ("content-length", "0")],
            end_stream=True,
        )
        raise WebSocketRejected(400, Headers({"sec-websocket-version": "13"}), b"")
    reader.allow_slow_body()  # a WebSocket may stay silent for hours (also: exempt anyway)
    writer.send_headers(response + extra)
    return WebSocket(
        reader,
        writer,
        client=False,
        subprotocol=subprotocol,
        max_message_size=max_message_size,
        close_timeout=close_timeout,
    )


class _Opening:
    """``async with websocket.connect(...) as ws`` (also ``ws = await websocket.connect(...)``)."""

    def __init__(self, opener: Any) -> None:
        self._opener = opener
        self._ws: WebSocket | None = None

    def __await__(self) -> Any:
        return self._opener.__await__()

    async def __aenter__(self) -> WebSocket:
        self._ws = await self._opener
        return self._ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._ws is not None
        await self._ws.__aexit__(exc_type, exc, tb)


def connect(
    target: Client | str,
    path: str | None = None,
    *,
    subprotocols: Sequence[str] = (),
    headers: HeadersLike | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    open_timeout: float | None = 10.0,
    max_message_size: int = 4 * 1024 * 1024,
    close_timeout: float = 10.0,
) -> _Opening:
    """Client side: open a WebSocket with an extended CONNECT (RFC 8441).

    ``target`` is a :class:`aioh2s.Client` (``path`` defaults to ``"/"``) or a URL,
    ``wss://host[:port]/path`` (TLS, ALPN h2; ``ssl`` may give the context) or
    ``ws://host[:port]/path`` (h2c with prior knowledge); a URL opens a connection of its own,
    closed with the WebSocket. The server must have enabled extended CONNECT, else
    :class:`~aioh2s.ExtendedConnectUnsupported`; a non-2xx answer raises
    :class:`~aioh2s.WebSocketRejected`. ``open_timeout`` bounds the whole opening (dialling,
    a free stream slot, the answer) and raises :class:`~aioh2s.ConnectTimeout` (a
    ``TimeoutError``).
    Use it as ``async with websocket.connect(url) as ws:`` or ``ws = await
    websocket.connect(url)``.
    """
    offered = _check_subprotocols(subprotocols)
    check_options(max_message_size, close_timeout)
    if open_timeout is not None and not open_timeout > 0:
        raise ValueError("open_timeout must be positive (or None: no limit)")
    extra = list(Headers(headers).items()) if headers is not None else []
    if any(n.startswith(":") for n, _ in extra):
        raise ValueError("headers= takes regular fields; the pseudo-headers are made here")
    options = {"max_message_size": max_message_size, "close_timeout": close_timeout}
    if isinstance(target, Client):
        opening = _open(target, path or "/", offered, extra, None, options)
        return _Opening(_bounded(opening, open_timeout, f"{target!r} {path or '/'}"))
    parts = urlsplit(target)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {target!r}")
    if path is not None:
        raise ValueError("path comes from the URL when target is one")
    tls = parts.scheme == "wss"
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"bad port in {target!r}: {e}") from None
    if port == 0:
        raise ValueError(f"port 0 in {target!r}: nothing listens there")
    port = port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def dial() -> WebSocket:
        client = await _connect(parts.hostname or "", port, ssl=(ssl or True) if tls else None)
        try:
            return await _open(client, resource, offered, extra, client.close, options)
        except BaseException:
            await client.close(grace=0)
            raise

    return _Opening(_bounded(dial(), open_timeout, target))


async def _bounded(opening: Any, seconds: float | None, what: str) -> WebSocket:
    try:
        return await asyncio.wait_for(opening, seconds)  # (cancels it: it cleans up)
    except asyncio.TimeoutError as e:
        if e.args:  # not wait_for's own
            raise
        raise ConnectTimeout(f"the WebSocket to {what} did not open within {seconds} s",
                             seconds) from e


async def _open(
    client: Client,
    path: str,
    offered: Sequence[str],
    extra_headers: list[tuple[str, str]],
    close_client: Any,
    options: dict[str, Any],
) -> WebSocket:
    request: list[tuple[str, str]] = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":path", path),
        ("sec-websocket-version", "13"),
    ]
    if offered:
        request.append(("sec-websocket-protocol", ", ".join(offered)))
    request += extra_headers
    stream: RequestStream = await client.request(request)
    try:
        response = await stream.response_headers()
        status = int(response[":status"])
        if not 200 <= status < 300:
            body = await _some(stream.reader)
            raise WebSocketRejected(status, response, body)
        chosen = response.get("sec-websocket-protocol")
        if chosen is not None and chosen not in offered:
            raise WebSocketRejected(status, response, b"")  # RFC 6455 §4.1: fail it
    except BaseException:
        end_request(stream._s)
        raise

    async def closed() -> None:
        end_request(stream._s)
        if close_client is not None:
            await close_client()

    return WebSocket(
        stream.reader, stream.writer, client=True, subprotocol=chosen, on_closed=closed, **options
    )


async def _some(reader: H2StreamReader) -> bytes:
    body = bytearray()
    while len(body) < _REJECT_BODY:
        chunk = await reader.read(_REJECT_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
