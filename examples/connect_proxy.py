r"""An HTTP/2 CONNECT proxy on aioh2s (RFC 9113 §8.5), and a client that tunnels through it.

.. warning::

   This is an *open* proxy: whoever reaches its port reaches, through it, every host and
   port the proxy's machine can, with the proxy's address as the source and from inside
   its firewall. It has no authentication. By default it refuses targets on its own
   machine or link (loopback, link-local such as the cloud metadata service
   169.254.169.254, the unspecified address, multicast), judged on the resolved addresses,
   so a name that points there is refused too; private networks (10/8, 172.16/12,
   192.168/16, fc00::/7) it does reach. Before exposing it beyond 127.0.0.1, give it a
   policy of your own (``allow``, ``allow_address``) and something in front that
   authenticates clients.

Theory of operation
-------------------
Every CONNECT stream is one tunnel. :class:`ConnectProxy` is an ordinary aioh2s handler: it
reads the target from ``:authority`` (``host:port``), resolves the host, opens a TCP
connection to the first address it may reach, and answers ``200`` once that connection is
up. From then on the stream's reader and writer carry the tunnel's bytes, and :func:`relay`
copies them in two tasks:

- up: ``H2StreamReader.read()`` → TCP ``write()``, then ``await drain()`` before reading more;
- down: TCP ``read()`` → ``H2StreamWriter.write()``, then ``await drain()`` before reading more.

Neither task reads faster than the other side takes, so a slow side stops the fast one
instead of growing a buffer. What one tunnel can hold is bounded: up, the stream window
(the client cannot send more than we granted, and we grant only what was read) plus
asyncio's transport buffer to the target (its high-water mark, 64 KiB, plus one chunk);
down, the asyncio ``StreamReader`` (it stops reading the socket at twice its limit) plus
the stream's ``write_high_water`` (drain() waits above it) plus one chunk.

How many tunnels are open at once is bounded too: each costs a file descriptor, and a
process out of descriptors cannot even accept a connection. Past ``max_tunnels`` (tunnels
open or connecting) a CONNECT gets 503 without dialing; the default leaves the server's
connections their share (:func:`default_max_tunnels`).

Ending follows RFC 9113 §8.5 both ways:

- END_STREAM is TCP's FIN: the client's ``write_eof()`` becomes ``write_eof()`` on the TCP
  connection (a half-close, the other direction goes on), and the target's FIN becomes our
  END_STREAM;
- an error of the TCP connection (the target reset it, a write failed) becomes
  RST_STREAM(CONNECT_ERROR); a reset stream or a lost HTTP/2 connection becomes a TCP RST to
  the target (``SO_LINGER`` 0, then close), also when it happens while we are connecting.

Requests it does not tunnel get an answer that says why: 405 for another method, 501 for an
extended CONNECT (``:protocol``: this proxy speaks none), 400 for an ``:authority`` that is
not ``host:port`` with a valid host name or IP literal, 403 when ``allow`` or
``allow_address`` says no, 502 when the target cannot be reached, 503 past ``max_tunnels``
or out of file descriptors, 504 when connecting took longer than ``connect_timeout``.

Run it::

    python examples/connect_proxy.py demo            # target, proxy and client in one process
    python examples/connect_proxy.py serve --port 8080 [--cert cert.pem --key key.pem]
    printf 'GET / HTTP/1.0\r\n\r\n' | \
        python examples/connect_proxy.py client 127.0.0.1:8080 example.com:80

Any HTTP/2 client that sends CONNECT can use it; tests/test_connect_proxy.py runs Go's
``net/http`` client through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import re
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import aioh2s
from aioh2s.config import default_max_connections

log = logging.getLogger("connect_proxy")

#: Bytes moved per read, each way.
CHUNK = 64 * 1024

Opener = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def valid_host(host: str) -> bool:
    """True for an IP literal or a DNS name that can be looked up as it is.

    A name is LDH labels of 1 to 63 characters (RFC 1123 §2.1), 253 at most in all, an
    optional final dot, and not all digits in its last label. Anything else is not
    something to hand to ``getaddrinfo``: ``a..b`` or a 64-character label (Python's IDNA
    codec raises ``UnicodeError``), non-ASCII, or ``127.1`` and ``0x7f000001``, which the C
    library reads as IPv4 addresses (and an ``allow`` looking at names would not).
    """
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not 0 < len(name) <= 253:
        return False
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return False
    try:
        socket.inet_aton(name)  # the C library's idea of an IPv4 address: 0x7f000001...
    except OSError:
        return True
    return False


def parse_authority(authority: str) -> tuple[str, int] | None:
    """``("host", port)`` from ``host:port`` or ``[v6]:port``; None if it is not that."""
    try:
        parts = urlsplit(f"//{authority}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or port is None or parts.netloc != authority or "@" in authority:
        return None
    if authority.startswith("["):  # brackets hold an IPv6 literal, nothing else
        try:
            if ipaddress.ip_address(host).version != 6:
                return None
        except ValueError:
            return None
    return (host, port) if valid_host(host) else None


def not_local(address: IPAddress) -> bool:
    """The default ``allow_address``: False for the proxy's own machine and link.

    That is loopback, link-local (169.254.169.254 is many clouds' metadata service), the
    unspecified address (connecting to it reaches this machine), 0.0.0.0/8 and multicast,
    an IPv4 address mapped into IPv6 judged as itself. Private networks pass.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address) and address in _THIS_NETWORK:
        return False
    return not (address.is_loopback or address.is_link_local or address.is_unspecified
                or address.is_multicast)


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def allow_networks(networks: Iterable[str]) -> Callable[[IPAddress], bool]:
    """An ``allow_address`` that also lets these networks (CIDR, or addresses) through."""
    nets = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allowed(address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not_local(address) or any(address in net for net in nets)

    return allowed


def default_max_tunnels() -> int:
    """The ``max_tunnels`` default: what the server's connections leave of the fd limit.

    aioh2s's server takes up to half the soft ``RLIMIT_NOFILE`` for connections (its
    ``max_connections`` default, :func:`aioh2s.config.default_max_connections`); tunnels get
    as many but for 32 descriptors kept for the process itself (listeners, the event loop,
    logs), at least 1.
    """
    return max(1, default_max_connections() - 32)


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
    close_timeout: float = 10.0,
) -> None:
    """Copy an open tunnel's bytes both ways until both directions ended or one failed.

    A failure of the HTTP/2 side (``StreamReset``, ``ConnectionClosed``) resets the TCP
    connection; a failure of the TCP side (``OSError``) resets the stream with
    CONNECT_ERROR (RFC 9113 §8.5). Cancelling it resets the TCP connection. Once both
    directions ended, the TCP connection closes after what is still buffered for the
    target, which gets ``close_timeout`` seconds to take it; then it is reset.
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
        if failed is None:
            tcp_writer.close()
            try:
                await asyncio.wait_for(tcp_writer.wait_closed(), close_timeout)
            except asyncio.TimeoutError:
                log.info("tunnel to %s: the target took nothing for %s s after the end",
                         _peer(tcp_writer), close_timeout)
                abort_tcp(tcp_writer)
            except OSError:
                pass
    except BaseException as e:  # cancelled (our connection is gone, or shutdown)
        failed = e
        raise
    finally:
        for t in tasks:
            t.cancel()
        # Whatever happens below, the TCP connection does not outlive this call.
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if isinstance(failed, OSError):
                log.info("tunnel to %s failed on the TCP side: %r", _peer(tcp_writer), failed)
                writer.reset(aioh2s.ErrorCode.CONNECT_ERROR)
                tcp_writer.transport.abort()
            elif failed is not None:
                # The stream was reset, the HTTP/2 connection is gone, or we were cancelled.
                if not isinstance(failed, (aioh2s.H2Error, asyncio.CancelledError)):
                    log.error("tunnel to %s failed", _peer(tcp_writer), exc_info=failed)
                abort_tcp(tcp_writer)
            elif not tcp_writer.transport.is_closing():
                abort_tcp(tcp_writer)


def _peer(tcp: asyncio.StreamWriter) -> Any:
    return tcp.get_extra_info("peername")


class Refused(Exception):
    """Why a CONNECT gets no tunnel: an HTTP status and a reason in words."""

    def __init__(self, status: str, why: str) -> None:
        super().__init__(status, why)
        self.status = status
        self.why = why


class ConnectProxy:
    """An aioh2s handler that serves CONNECT requests by tunnelling them over TCP.

    ``allow(host, port)`` may refuse a target by name (403), and ``allow_address(address)``
    each address its name resolved to (default :func:`not_local`: nothing on this machine
    or its link; ``lambda a: True`` lets anything through). ``connect(address, port)`` opens
    the TCP connection to one such address (``asyncio.open_connection`` by default: replace
    it to set socket options); the addresses are tried in turn. Past ``max_tunnels`` open
    or connecting tunnels (default :func:`default_max_tunnels`) a CONNECT gets 503;
    ``close_timeout`` bounds how long a finished tunnel waits for the target to take the
    rest (:func:`relay`).
    ``open`` counts the tunnels open now, ``connecting`` those being dialed, ``opened`` all
    so far, ``busy`` the CONNECTs refused with 503.
    """

    def __init__(
        self,
        *,
        connect: Opener | None = None,
        allow: Callable[[str, int], bool] | None = None,
        allow_address: Callable[[IPAddress], bool] = not_local,
        connect_timeout: float = 10.0,
        max_tunnels: int | None = None,
        close_timeout: float = 10.0,
        chunk: int = CHUNK,
    ) -> None:
        if max_tunnels is not None and max_tunnels < 1:
            raise ValueError("max_tunnels must be at least 1 (or None for the default)")
        self.connect: Opener = connect or asyncio.open_connection
        self.allow = allow
        self.allow_address = allow_address
        self.connect_timeout = connect_timeout
        self.max_tunnels = max_tunnels if max_tunnels is not None else default_max_tunnels()
        self.close_timeout = close_timeout
        self.chunk = chunk
        self.open = 0
        self.connecting = 0
        self.opened = 0
        self.busy = 0
        self._busy_logged = -1e9
        self._busy_unlogged = 0

    async def __call__(
        self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter
    ) -> None:
        """Serve one request: a tunnel for a CONNECT, a refusal for anything else."""
        try:
            tcp_reader, tcp_writer = await self._target(reader.headers)
        except Refused as e:
            extra = {"allow": "CONNECT"} if e.status == "405" else {}
            return _refuse(writer, e.status, e.why + "\n", **extra)
        # The TCP connection is ours from here on: every way out closes it.
        try:
            # The tunnel is open from here on: 2xx, then only DATA. Its bytes pause whenever
            # nobody has anything to say, so it is exempt from the server's min_body_rate
            # (a plain CONNECT is exempt only when its handler says so). If the client reset
            # the stream or lost the connection while we were connecting, this raises, and
            # the target gets a TCP reset.
            reader.allow_slow_body()
            writer.send_headers({":status": "200"})
            self.opened += 1
            await relay(reader, writer, tcp_reader, tcp_writer, self.chunk, self.close_timeout)
        finally:
            self.open -= 1
            if not tcp_writer.transport.is_closing():
                abort_tcp(tcp_writer)

    async def _target(
        self, h: aioh2s.Headers
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The TCP connection this request tunnels to, counted in ``open``; or Refused."""
        if h[":method"] != "CONNECT":
            raise Refused("405", "this is a CONNECT proxy")
        if ":protocol" in h:
            raise Refused("501", f"no extended CONNECT here ({h[':protocol']})")
        authority = h.get(":authority", "")
        target = parse_authority(authority)
        if target is None:
            raise Refused("400", f"{authority!r} is not host:port")
        host, port = target
        if self.allow is not None and not self.allow(host, port):
            raise Refused("403", f"tunnels to {authority} are not allowed")
        if self.open + self.connecting >= self.max_tunnels:
            self._note_busy(authority)
            raise Refused("503", f"too many tunnels open (max_tunnels {self.max_tunnels})")
        # Dialing runs as a task of its own, awaited through asyncio.wait(), which neither
        # cancels it nor swallows our own cancellation: whatever it opened after we gave up
        # (timeout, reset stream, lost connection) is closed by _discard, never left open.
        self.connecting += 1
        dial = asyncio.ensure_future(self._dial(host, port))
        tcp = None
        try:
            done, _ = await asyncio.wait([dial], timeout=self.connect_timeout)
            if not done:
                raise Refused("504", f"connecting to {authority} timed out")
            try:
                tcp = dial.result()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE) and not isinstance(
                        e, socket.gaierror):
                    self._note_busy(authority)
                    raise Refused("503", "out of file descriptors") from None
                log.info("cannot connect to %s: %s", authority, e)
                raise Refused("502", f"cannot connect to {authority}: {e}") from None
            except UnicodeError:  # the IDNA codec's say on a name valid_host() let through
                raise Refused("400", f"{host!r} is not a valid host name") from None
            self.open += 1  # before any await: max_tunnels counts it without a gap
            return tcp
        finally:
            self.connecting -= 1
            if tcp is None:  # not ours: stop the dial, and reset what it opens regardless
                dial.cancel()
                dial.add_done_callback(_discard)

    async def _dial(self, host: str, port: int) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
        """Resolve ``host``, then connect to the first permitted address that answers."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        permitted = [a for a in addresses if self.allow_address(ipaddress.ip_address(a))]
        if not permitted:
            raise Refused("403", f"tunnels to {host} ({', '.join(addresses)}) are not allowed")
        error: OSError | None = None
        for address in permitted:
            try:
                tcp = await self.connect(address, port)
            except OSError as e:
                error = e
                continue
            return tcp
        assert error is not None
        raise error

    def _note_busy(self, authority: str) -> None:
        # One INFO record per 10 s at most: a flood of refusals must not flood the log.
        self.busy += 1
        self._busy_unlogged += 1
        now = time.monotonic()
        if now - self._busy_logged >= 10:
            log.info("max_tunnels (%d) reached or out of fds: refused %d CONNECT(s), the"
                     " last to %s", self.max_tunnels, self._busy_unlogged, authority)
            self._busy_logged = now
            self._busy_unlogged = 0


def _discard(dial: asyncio.Future[Any]) -> None:
    """A dial whose caller gave up: reset the TCP connection it may have opened."""
    if not dial.cancelled() and dial.exception() is None:
        abort_tcp(dial.result()[1])


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
            # Not drain(): it returns at the low-water mark, with bytes and END_STREAM still
            # queued, and leaving the block before they went would reset the tunnel (the
            # target would get a TCP reset instead of the tail and the FIN).
            await tunnel.writer.wait_closed()

        # Both ways at once (the target may answer before it read everything, or end its
        # side first and read on); the first failure either way ends both.
        sending = asyncio.ensure_future(send())
        receiving = asyncio.ensure_future(tunnel.reader.read())  # until the target's FIN
        try:
            await asyncio.wait([sending, receiving], return_when=asyncio.FIRST_EXCEPTION)
            for t in (receiving, sending):
                if t.done() and (error := t.exception()) is not None:
                    raise error
            return receiving.result()
        finally:
            for t in (sending, receiving):
                t.cancel()
            await asyncio.gather(sending, receiving, return_exceptions=True)


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
    proxy = ConnectProxy(allow_address=allow_networks(args.allow),
                         max_tunnels=args.max_tunnels, connect_timeout=args.connect_timeout)
    server = await start_proxy(args.host, args.port, proxy, ssl=ctx)
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
    # The target is on this machine, which the default allow_address refuses: let it in.
    proxy = await start_proxy(proxy=ConnectProxy(allow_address=allow_networks(["127.0.0.1"])))
    target_port = target.sockets[0].getsockname()[1]
    proxy_port = proxy.sockets[0].getsockname()[1]
    async with await aioh2s.connect("127.0.0.1", proxy_port) as client:
        answer = await send_through(client, f"127.0.0.1:{target_port}", b"hello, tunnel")
    print(answer.decode())  # hello, tunnel
    proxy.close()
    await proxy.wait_closed()
    target.close()
    await target.wait_closed()


SERVE_WARNING = """\
Run the CONNECT proxy.

This is an open proxy with no authentication: whoever can reach its port can
reach, through it, any host and port this machine can, from inside its
firewall. It refuses only targets on this machine or its link (loopback,
link-local such as 169.254.169.254, multicast; --allow lets some in), judged
on the resolved addresses; private networks it does reach. Keep --host on
127.0.0.1, or put something that authenticates in front of it.
"""


def _network(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def main() -> None:
    """Command line: ``demo``, ``serve`` or ``client`` (see the module docstring)."""
    p = argparse.ArgumentParser(description="An HTTP/2 CONNECT proxy and its client.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="an echo target, the proxy and a client in one process")
    serve = sub.add_parser(
        "serve", help="run the proxy", description=SERVE_WARNING,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--allow", metavar="NETWORK", action="append", default=[],
                       type=_network, help="also tunnel to this network (CIDR or address)"
                       " although it is local: loopback, link-local... (repeatable; e.g."
                       " --allow 127.0.0.1)")
    serve.add_argument("--max-tunnels", type=_positive, default=None, metavar="N",
                       help="tunnels open at once, beyond which CONNECT gets 503 (default:"
                       f" from the file-descriptor limit, {default_max_tunnels()} here)")
    serve.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="504 when connecting to a target takes longer (default 10)")
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
