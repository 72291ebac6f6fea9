r"""An HTTP/2 CONNECT proxy on aioh2s (RFC 9113 §8.5), and a client that tunnels through it.

Theory of operation
-------------------
Every CONNECT stream is one tunnel. :class:`ConnectProxy` is an ordinary aioh2s handler: it
reads the target from ``:authority`` (``host:port``), opens a TCP connection to it, and
answers ``200`` once that connection is up. From then on the stream's reader and writer
carry the tunnel's bytes, and :func:`relay` copies them in two tasks:

- up: ``H2StreamReader.read()`` → TCP ``write()``, then ``await drain()`` before reading more;
- down: TCP ``read()`` → ``H2StreamWriter.write()``, then ``await drain()`` before reading more.

Neither task reads faster than the other side takes, so a slow side stops the fast one
instead of growing a buffer. What one tunnel can hold is bounded: up, the stream window
(the client cannot send more than we granted, and we grant only what was read) plus
asyncio's transport buffer to the target (its high-water mark, 64 KiB, plus one chunk);
down, the asyncio ``StreamReader`` (it stops reading the socket at twice its limit) plus
the stream's ``write_high_water`` (drain() waits above it) plus one chunk.

Ending follows RFC 9113 §8.5 both ways:

- END_STREAM is TCP's FIN: the client's ``write_eof()`` becomes ``write_eof()`` on the TCP
  connection (a half-close, the other direction goes on), and the target's FIN becomes our
  END_STREAM;
- an error of the TCP connection (the target reset it, a write failed) becomes
  RST_STREAM(CONNECT_ERROR); a reset stream or a lost HTTP/2 connection becomes a TCP RST to
  the target (``SO_LINGER`` 0, then close).

Requests it does not tunnel get an answer that says why: 405 for another method, 501 for an
extended CONNECT (``:protocol``: this proxy speaks none), 400 for an ``:authority`` that is
not ``host:port``, 403 when ``allow`` says no, 502 when the target cannot be reached, 504
when connecting took longer than ``connect_timeout``.

Run it::

    python examples/connect_proxy.py demo            # target, proxy and client in one process
    python examples/connect_proxy.py serve --port 8080 [--cert cert.pem --key key.pem]
    printf 'GET / HTTP/1.0\r\n\r\n' | \
        python examples/connect_proxy.py client 127.0.0.1:8080 example.com:80

Any HTTP/2 client that sends CONNECT can use it; tests/test_tunnels.py runs Go's
``net/http`` client through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aioh2s

log = logging.getLogger("connect_proxy")

#: Bytes moved per read, each way.
CHUNK = 64 * 1024

Opener = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def parse_authority(authority: str) -> tuple[str, int] | None:
    """``("host", port)`` from ``host:port`` or ``[v6]:port``; None if it is not that."""
    try:
        parts = urlsplit(f"//{authority}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or port is None or parts.netloc != authority or "@" in authority:
        return None
    return host, port


def abort_tcp(tcp: asyncio.StreamWriter) -> None:
    """Close a TCP connection with RST rather than FIN: its peer sees an error, not an end."""
    sock = tcp.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tcp.transport.abort()


async def _up(reader: aioh2s.H2StreamReader, tcp: asyncio.StreamWriter, chunk: int) -> None:
    # read() grants the client window only for what it returns: while drain() waits for a
    # slow target, the client's window closes and it stops sending.
    while data := await reader.read(chunk):
        tcp.write(data)
        await tcp.drain()
    if tcp.can_write_eof():
        tcp.write_eof()  # END_STREAM is FIN (RFC 9113 §8.5): a half-close


async def _down(tcp: asyncio.StreamReader, writer: aioh2s.H2StreamWriter, chunk: int) -> None:
    while data := await tcp.read(chunk):
        writer.write(data)
        await writer.drain()  # waits for the client's window: a slow client stops the target
    writer.write_eof()  # FIN is END_STREAM


async def relay(
    reader: aioh2s.H2StreamReader,
    writer: aioh2s.H2StreamWriter,
    tcp_reader: asyncio.StreamReader,
    tcp_writer: asyncio.StreamWriter,
    chunk: int = CHUNK,
) -> None:
    """Copy an open tunnel's bytes both ways until both directions ended or one failed.

    A failure of the HTTP/2 side (``StreamReset``, ``ConnectionClosed``) resets the TCP
    connection; a failure of the TCP side (``OSError``) resets the stream with
    CONNECT_ERROR (RFC 9113 §8.5). Cancelling it resets the TCP connection.
    """
    tasks = [
        asyncio.ensure_future(_up(reader, tcp_writer, chunk)),
        asyncio.ensure_future(_down(tcp_reader, writer, chunk)),
    ]
    failed: BaseException | None = None
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                failed = t.exception()
                break
    except asyncio.CancelledError:
        failed = asyncio.CancelledError()
        raise
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if failed is None:
            tcp_writer.close()
            with contextlib.suppress(OSError):
                await tcp_writer.wait_closed()
        elif isinstance(failed, OSError):
            log.info("tunnel to %s failed on the TCP side: %r", _peer(tcp_writer), failed)
            writer.reset(aioh2s.ErrorCode.CONNECT_ERROR)
            tcp_writer.transport.abort()
        else:
            # The stream was reset, the HTTP/2 connection is gone, or we were cancelled.
            if not isinstance(failed, (aioh2s.H2Error, asyncio.CancelledError)):
                log.error("tunnel to %s failed", _peer(tcp_writer), exc_info=failed)
            abort_tcp(tcp_writer)


def _peer(tcp: asyncio.StreamWriter) -> Any:
    return tcp.get_extra_info("peername")


class ConnectProxy:
    """An aioh2s handler that serves CONNECT requests by tunnelling them over TCP.

    ``connect(host, port)`` opens the TCP connection (``asyncio.open_connection`` by default:
    replace it to pick addresses or socket options); ``allow(host, port)`` may refuse a
    target (403). ``open`` counts the tunnels open now, ``opened`` all so far.
    """

    def __init__(
        self,
        *,
        connect: Opener | None = None,
        allow: Callable[[str, int], bool] | None = None,
        connect_timeout: float = 10.0,
        chunk: int = CHUNK,
    ) -> None:
        self.connect: Opener = connect or asyncio.open_connection
        self.allow = allow
        self.connect_timeout = connect_timeout
        self.chunk = chunk
        self.open = 0
        self.opened = 0

    async def __call__(
        self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter
    ) -> None:
        """Serve one request: a tunnel for a CONNECT, a refusal for anything else."""
        h = reader.headers
        if h[":method"] != "CONNECT":
            return _refuse(writer, "405", "this is a CONNECT proxy\n", allow="CONNECT")
        if ":protocol" in h:
            return _refuse(writer, "501", f"no extended CONNECT here ({h[':protocol']})\n")
        authority = h.get(":authority", "")
        target = parse_authority(authority)
        if target is None:
            return _refuse(writer, "400", f"{authority!r} is not host:port\n")
        host, port = target
        if self.allow is not None and not self.allow(host, port):
            return _refuse(writer, "403", f"tunnels to {authority} are not allowed\n")
        try:
            tcp_reader, tcp_writer = await asyncio.wait_for(
                self.connect(host, port), self.connect_timeout
            )
        except asyncio.TimeoutError:
            return _refuse(writer, "504", f"connecting to {authority} timed out\n")
        except OSError as e:
            log.info("cannot connect to %s: %s", authority, e)
            return _refuse(writer, "502", f"cannot connect to {authority}: {e}\n")
        # The tunnel is open from here on: 2xx, then only DATA. (aioh2s also exempts an
        # open tunnel from min_body_rate: its bytes pause whenever nobody has anything to say.)
        writer.send_headers({":status": "200"})
        self.open += 1
        self.opened += 1
        try:
            await relay(reader, writer, tcp_reader, tcp_writer, self.chunk)
        finally:
            self.open -= 1


def _refuse(writer: aioh2s.H2StreamWriter, status: str, why: str, **extra: str) -> None:
    body = why.encode()
    writer.send_headers({":status": status, "content-type": "text/plain",
                         "content-length": str(len(body)), **extra})
    writer.write(body)
    writer.write_eof()


async def start_proxy(
    host: str = "127.0.0.1", port: int = 0, proxy: ConnectProxy | None = None, **options: Any
) -> aioh2s.Server:
    """Serve :class:`ConnectProxy` on ``host:port``; ``options`` go to ``start_server``."""
    return await aioh2s.start_server(proxy or ConnectProxy(), host, port, **options)


# -- the client side ------------------------------------------------------------------------


async def send_through(
    client: aioh2s.Client, target: str, data: bytes | AsyncIterable[bytes]
) -> bytes:
    """Tunnel to ``target`` through the proxy ``client`` is connected to; send ``data``.

    Half-closes the tunnel after ``data`` and returns everything the target sent until it
    closed its side. Raises ``ConnectionRefusedError`` if the proxy did not answer 2xx, and
    ``aioh2s.StreamReset`` (CONNECT_ERROR) if the target's connection failed.
    """
    async with client.connect_tunnel(target) as tunnel:
        headers = await tunnel.response_headers()
        if headers[":status"][:1] != "2":
            why = (await tunnel.reader.read()).decode("utf-8", "replace").strip()
            raise ConnectionRefusedError(f"the proxy answered {headers[':status']}: {why}")

        async def send() -> None:
            if isinstance(data, (bytes, bytearray, memoryview)):
                tunnel.writer.write(data)
            else:
                async for chunk in data:
                    tunnel.writer.write(chunk)
                    await tunnel.writer.drain()
            tunnel.writer.write_eof()
            await tunnel.writer.drain()

        sending = asyncio.ensure_future(send())
        try:
            answer = await tunnel.reader.read()  # until the target's FIN (END_STREAM)
            await sending
        finally:
            sending.cancel()
        return answer


async def _stdin() -> AsyncIterable[bytes]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while chunk := await reader.read(CHUNK):
        yield chunk


def _client_tls(ca: str | None) -> dict[str, Any]:
    if ca is None:
        return {}
    return {"ssl": aioh2s.client_ssl_context(ca), "server_hostname": "localhost"}


async def _client_main(args: argparse.Namespace) -> None:
    proxy = parse_authority(args.proxy)
    if proxy is None:
        raise SystemExit(f"proxy {args.proxy!r} is not host:port")
    async with await aioh2s.connect(*proxy, **_client_tls(args.ca)) as client:
        sys.stdout.buffer.write(await send_through(client, args.target, _stdin()))


async def _serve_main(args: argparse.Namespace) -> None:
    ctx: ssl.SSLContext | None = None
    if args.cert:
        ctx = aioh2s.server_ssl_context(args.cert, args.key)
    server = await start_proxy(args.host, args.port, ssl=ctx)
    print(f"CONNECT proxy on {server.sockets[0].getsockname()}", file=sys.stderr)
    async with server:
        await server.serve_forever()


async def _demo() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):  # a TCP echo server stands in for a target
            writer.write(data)
            await writer.drain()
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = await start_proxy()
    target_port = target.sockets[0].getsockname()[1]
    proxy_port = proxy.sockets[0].getsockname()[1]
    async with await aioh2s.connect("127.0.0.1", proxy_port) as client:
        answer = await send_through(client, f"127.0.0.1:{target_port}", b"hello, tunnel")
    print(answer.decode())  # hello, tunnel
    proxy.close()
    await proxy.wait_closed()
    target.close()
    await target.wait_closed()


def main() -> None:
    """Command line: ``demo``, ``serve`` or ``client`` (see the module docstring)."""
    p = argparse.ArgumentParser(description="An HTTP/2 CONNECT proxy and its client.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="an echo target, the proxy and a client in one process")
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--cert", help="TLS certificate chain (PEM); h2c without it")
    serve.add_argument("--key", help="TLS private key (PEM)")
    client = sub.add_parser("client", help="pipe stdin to TARGET through PROXY, and back")
    client.add_argument("proxy", help="the proxy, host:port")
    client.add_argument("target", help="where to tunnel to, host:port")
    client.add_argument("--ca", help="CA file: speak TLS to the proxy (h2c without it)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.command == "demo":
        asyncio.run(_demo())
    elif args.command == "serve":
        asyncio.run(_serve_main(args))
    else:
        asyncio.run(_client_main(args))


if __name__ == "__main__":
    main()
