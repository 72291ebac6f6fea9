"""aioh2s: HTTP/2 for asyncio with the ergonomics of ``asyncio.open_connection``.

Each HTTP/2 stream is an :class:`H2StreamReader` / :class:`H2StreamWriter` pair, so handlers and
clients are ordinary async read/write loops, and flow control is managed for you: ``await
writer.drain()`` waits on the peer's window, and the reader grants window only as the
application consumes bytes.

Client::

    client = await aioh2s.connect("127.0.0.1", port)
    async with client.request({":method": "POST", ":path": "/echo"}) as stream:
        stream.writer.write(b"world"); stream.writer.write_eof()
        headers = await stream.response_headers()
        body = await stream.reader.read()

Server::

    async def handler(reader, writer):
        body = await reader.read()
        writer.send_headers({":status": "200"})
        writer.write(body)
        writer.write_eof()

    server = await aioh2s.start_server(handler, "127.0.0.1", 8080)
"""

from .client import Client, RequestStream, connect
from .config import Config, ConfigOptions, SessionConfigOptions
from .errors import (
    ALPNError,
    ConnectError,
    ConnectionClosed,
    ConnectionTerminated,
    ConnectTimeout,
    ErrorCode,
    ExtendedConnectUnsupported,
    H2Error,
    H2Timeout,
    LocalProtocolError,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    RequestTimeout,
    ResponseTooLarge,
    StreamReset,
    WebSocketClosed,
    WebSocketRejected,
    WriteTimeout,
)
from .headers import Headers, HeadersLike
from .server import Handler, Server, start_server
from .session import Response, Session, SessionStream, Timeouts
from .streams import ConnectionHandle, H2StreamReader, H2StreamWriter
from .tls import client_ssl_context, server_ssl_context
from .workers import serve

__version__ = "0.1.0"

__all__ = [
    "ALPNError",
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "Config",
    "ConfigOptions",
    "ConnectionClosed",
    "ConnectionHandle",
    "ConnectionTerminated",
    "ErrorCode",
    "ExtendedConnectUnsupported",
    "H2Error",
    "H2Timeout",
    "H2StreamReader",
    "H2StreamWriter",
    "Handler",
    "Headers",
    "HeadersLike",
    "LocalProtocolError",
    "PoolTimeout",
    "ProtocolError",
    "ReadTimeout",
    "RemoteProtocolError",
    "RequestStream",
    "RequestTimeout",
    "Response",
    "ResponseTooLarge",
    "Server",
    "Session",
    "SessionConfigOptions",
    "SessionStream",
    "StreamReset",
    "Timeouts",
    "WebSocketClosed",
    "WebSocketRejected",
    "WriteTimeout",
    "__version__",
    "client_ssl_context",
    "connect",
    "serve",
    "server_ssl_context",
    "start_server",
]
