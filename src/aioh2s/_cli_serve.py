"""``aioh2s serve [DIR]``: a file server, echo server (``--echo``, ``--ws-echo``) or ASGI app.

Theory of operation: the command is one coroutine (:func:`run`) built only on the public API
(``aioh2s.start_server``), one handler per request. :class:`_FileServer` serves DIR (default
``.``): GET and HEAD, content-type from :mod:`mimetypes`, content-length, single byte ranges
(206/416, :func:`_parse_range`), 301 to add a directory's trailing slash, index.html or a
listing for directories, 404 for anything missing *or outside DIR*, 405 for other methods.
A request path is percent-decoded once, split on ``/``, any ``..`` segment is refused, and
the joined path is resolved (following symlinks) and must still lie under DIR
(:meth:`_FileServer.resolve`). Files are streamed in chunks with ``write`` + ``await
drain()``, so the client's flow-control window paces them and memory per stream stays one
chunk. :class:`EchoServer` (``--echo``) instead streams every request body back and ends
with trailers ``x-request-bytes`` and ``x-sha256``.

``--ws-echo`` adds WebSockets over HTTP/2 (RFC 8441) to either: the server advertises
extended CONNECT (``enable_connect_protocol``), and :class:`_WebSocketEcho` accepts a
WebSocket request on any path (the first subprotocol offered, if any) and sends each message
back as it came, text as text and binary as binary, passing every other request on. Its
access log line names the path, the messages echoed and the close code. A shutdown closes
the open WebSockets with 1001 (going away) first. A message that arrives together with the
client's close frame is not echoed: once the close frame is in, aioh2s.websocket sends
nothing more. aioh2s.websocket needs wsproto, imported only with ``--ws-echo``.

``--asgi MODULE:APP`` serves an ASGI application instead (:mod:`aioh2s._cli_asgi` makes
the handler and maps its failures to exit codes): its lifespan startup runs before the
server listens and its shutdown after the server closed, and extended CONNECT is enabled
when wsproto is installed, for its WebSocket routes.

It listens on h2c, or TLS with ``--tls-cert/--tls-key`` or ``--self-signed`` (a throwaway
CA and certificate from ``trustme``, the CA written where ``--cacert`` can find it). The
first line on stdout is the listening URL (read it to learn the port chosen for ``--port
0``), printed once the signal handlers are in place; an access log goes to stderr unless
``-q``, and so do the library's INFO records saying why a connection was refused (a TLS
client without ALPN ``h2``). SIGINT/SIGTERM close the server gracefully (GOAWAY, then
in-flight streams finish, for at most 10 s). With ``--workers N`` the same handler is served
from N processes by :func:`aioh2s.serve` (:mod:`aioh2s._cli_workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import hashlib
import html
import logging
import mimetypes
import os
import shutil
import signal
import ssl
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, unquote

import aioh2s
from aioh2s import _cli_asgi
from aioh2s._cli_common import (
    CHUNK,
    EXIT_CONNECT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_TLS,
    EXIT_USAGE,
    CLIError,
    epilog,
    wsproto_missing,
)
from aioh2s.errors import (
    ConnectionClosed,
    ErrorCode,
    StreamReset,
    WebSocketClosed,
    WebSocketRejected,
)
from aioh2s.tls import server_ssl_context

if TYPE_CHECKING:
    from aioh2s.websocket import WebSocket

__all__ = ["SERVE_EXIT_CODES", "EchoServer", "add_parser", "build_handler", "check_args", "run",
           "tls_files"]

#: ``serve``'s exit codes (printed by ``aioh2s serve --help``).
SERVE_EXIT_CODES = (
    (EXIT_OK, "stopped by SIGINT or SIGTERM, after a graceful shutdown"),
    (EXIT_USAGE, "usage error (DIR is not a directory, a lone --tls-cert), or --ws-echo without"
     " the wsproto package"),
    (EXIT_CONNECT, "cannot listen on the address, or (--workers) the workers could not start"),
    (EXIT_TLS, "TLS setup failed: unreadable certificate or key, or --self-signed without"
     " trustme"),
    (EXIT_ERROR, "--asgi: the application cannot be imported, or its lifespan startup or"
     " shutdown failed (a signal during the startup cancels it: this code too)"),
)


class _Unsatisfiable(Exception):
    pass


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Parse a ``Range`` header into an inclusive ``(first, last)``, or ``None`` to ignore it.

    Only a single ``bytes`` range is honoured; anything else (other units, several ranges,
    bad syntax) is ignored and the whole file is served, as RFC 9110 §14.2 allows. Raises
    :class:`_Unsatisfiable` for a valid range outside the file (answered with 416).
    """
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        return None
    if first_s == "":
        if last_s == "":
            return None
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise _Unsatisfiable
    return first, min(last, size - 1)


class _FileServer:
    """The ``serve DIR`` request handler."""

    def __init__(self, root: Path, access_log: bool) -> None:
        self.root = root
        self.access_log = access_log

    def resolve(self, raw_path: str) -> Path | None:
        """Map a request ``:path`` to a file or directory inside the root, or ``None``."""
        if not raw_path.startswith("/"):
            return None  # "*" (OPTIONS) or absolute-form: nothing to serve.
        path = raw_path.split("?", 1)[0].split("#", 1)[0]
        try:
            decoded = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return None
        if "\x00" in decoded:
            return None
        parts = [p for p in decoded.split("/") if p not in ("", ".")]
        for p in parts:
            if p == ".." or (os.sep != "/" and os.sep in p) or (os.altsep and os.altsep in p):
                return None
            if os.name == "nt" and ":" in p:
                return None  # drive letters and alternate data streams
        try:
            resolved = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        # resolve() followed every symlink: this is where a link pointing out is caught.
        if resolved != self.root and not resolved.is_relative_to(self.root):
            return None
        return resolved

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        """Answer one request."""
        req = reader.headers
        method = req.get(":method", "")
        raw_path = req.get(":path", "")
        status, sent = 500, 0
        try:
            status, sent = await self.respond(method, raw_path, req, writer)
        except (StreamReset, ConnectionClosed):
            status = 499  # the client went away mid-response; nothing left to tell it
        finally:
            if self.access_log:
                peer = writer.get_extra_info("peername")
                who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "-"
                print(f'{who} "{method} {raw_path}" {status} {sent}', file=sys.stderr, flush=True)

    async def respond(
        self, method: str, raw_path: str, req: aioh2s.Headers, writer: aioh2s.H2StreamWriter
    ) -> tuple[int, int]:
        """Send the response; return ``(status, body bytes sent)`` for the access log."""
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return await _simple(
                writer, 405, "method not allowed\n", head, [("allow", "GET, HEAD")]
            )
        target = self.resolve(raw_path)
        if target is None:
            return await _simple(writer, 404, "not found\n", head)
        if target.is_dir():
            path_only = raw_path.split("?", 1)[0]
            if not path_only.endswith("/"):
                # Relative links in the listing need the trailing slash. One leading slash
                # only: "//host/dir" would be a protocol-relative redirect to another site.
                location = "/" + path_only.lstrip("/\\") + "/"
                return await _simple(writer, 301, "moved\n", head, [("location", location)])
            index = target / "index.html"
            if index.is_file():
                target = index
            else:
                return await _simple(
                    writer,
                    200,
                    self.listing(target, path_only),
                    head,
                    content_type="text/html; charset=utf-8",
                )
        if not target.is_file():
            # Sockets, FIFOs, devices: opening a FIFO would block the event loop.
            return await _simple(writer, 404, "not found\n", head)
        try:
            f = open(target, "rb")
        except PermissionError:
            return await _simple(writer, 403, "forbidden\n", head)
        except OSError:
            return await _simple(writer, 404, "not found\n", head)
        with f:
            return await self.send_file(f, target, req, writer, head)

    async def send_file(
        self,
        f: BinaryIO,
        target: Path,
        req: aioh2s.Headers,
        writer: aioh2s.H2StreamWriter,
        head: bool,
    ) -> tuple[int, int]:
        """Send a regular file, or the single byte range the request asked for."""
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return await _simple(writer, 404, "not found\n", head)
        size = st.st_size
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        first, last = 0, size - 1
        status = 200
        extra: list[tuple[str, str]] = []
        range_value = req.get("range")
        if_range = req.get("if-range")
        if range_value is not None and (if_range is None or if_range == last_modified):
            try:
                rng = _parse_range(range_value, size)
            except _Unsatisfiable:
                return await _simple(
                    writer,
                    416,
                    "range not satisfiable\n",
                    head,
                    [("content-range", f"bytes */{size}")],
                )
            if rng is not None:
                first, last = rng
                status = 206
                extra.append(("content-range", f"bytes {first}-{last}/{size}"))
        length = last - first + 1
        writer.send_headers(
            [
                (":status", str(status)),
                ("content-type", ctype),
                ("content-length", str(length)),
                ("accept-ranges", "bytes"),
                ("last-modified", last_modified),
                *extra,
            ]
        )
        if head or length == 0:
            writer.write_eof()
            return status, 0
        f.seek(first)
        remaining = length
        while remaining:
            # A local file read of 64 KiB takes microseconds; a thread hop per chunk would
            # cost more than the blocking read it avoids.
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                # The file shrank under us: the promised content-length cannot be met.
                writer.reset(ErrorCode.INTERNAL_ERROR)
                return status, length - remaining
            writer.write(chunk)
            remaining -= len(chunk)
            await writer.drain()
        writer.write_eof()
        return status, length

    def listing(self, directory: Path, url_path: str) -> str:
        """A minimal HTML index of *directory* (entries that resolve outside are hidden)."""
        rows = []
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            if self.resolve(url_path + quote(entry.name)) is None:
                continue
            name = entry.name + ("/" if entry.is_dir() else "")
            rows.append(f'<li><a href="{quote(name)}">{html.escape(name)}</a></li>')
        title = html.escape(unquote(url_path))
        return (
            f"<!doctype html>\n<title>Index of {title}</title>\n<h1>Index of {title}</h1>\n"
            f"<ul>\n{chr(10).join(rows)}\n</ul>\n"
        )


async def _simple(
    writer: aioh2s.H2StreamWriter,
    status: int,
    text: str,
    head: bool,
    extra: Sequence[tuple[str, str]] = (),
    content_type: str = "text/plain; charset=utf-8",
) -> tuple[int, int]:
    data = text.encode()
    writer.send_headers(
        [
            (":status", str(status)),
            ("content-type", content_type),
            ("content-length", str(len(data))),
            *extra,
        ]
    )
    if not head:
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    return status, 0 if head else len(data)


class EchoServer:
    """The ``serve --echo`` handler: stream the body back, then trailers with its size/hash."""

    def __init__(self, access_log: bool) -> None:
        self.access_log = access_log

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        """Echo one request."""
        req = reader.headers
        head = req.get(":method") == "HEAD"
        writer.send_headers(
            [
                (":status", "200"),
                ("content-type", req.get("content-type", "application/octet-stream")),
            ]
        )
        digest = hashlib.sha256()
        n = 0
        try:
            async for chunk in reader:
                digest.update(chunk)
                n += len(chunk)
                if not head:
                    writer.write(chunk)
                    await writer.drain()
            writer.send_trailers([("x-request-bytes", str(n)), ("x-sha256", digest.hexdigest())])
        except (StreamReset, ConnectionClosed):
            return
        finally:
            if self.access_log:
                print(
                    f'"{req.get(":method")} {req.get(":path")}" echo {n}',
                    file=sys.stderr,
                    flush=True,
                )


class _WebSocketEcho:
    """``serve --ws-echo``: WebSocket requests (any path) get each message back as it came.

    Every other request goes to ``inner`` (the file server, or ``--echo``). The first
    subprotocol a client offers is accepted. Only built once wsproto was found (``run``).
    """

    def __init__(self, inner: aioh2s.Handler, access_log: bool) -> None:
        self.inner = inner
        self.access_log = access_log
        self.open: set[WebSocket] = set()

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        """Echo one WebSocket, or pass the request on."""
        from aioh2s import websocket  # wsproto is there: run() checked

        req = reader.headers
        if not websocket.is_websocket(req):
            await self.inner(reader, writer)
            return
        path = req.get(":path", "")
        offered = websocket.subprotocols(req)
        try:
            ws = await websocket.accept(reader, writer, subprotocol=offered[0] if offered else None)
        except WebSocketRejected as e:  # answered already (a sec-websocket-version not 13)
            self._log(writer, f'"CONNECT {path}" {e.status} 0')
            return
        echoed = 0
        self.open.add(ws)
        try:
            async with ws:
                async for message in ws:
                    await ws.send(message)
                    echoed += 1
        except WebSocketClosed:
            pass  # the close code says how (the access log line)
        finally:
            self.open.discard(ws)
            closed = f"close {ws.close_code}" + (f" {ws.close_reason}" if ws.close_reason else "")
            self._log(writer, f'"CONNECT {path}" websocket, {echoed} messages echoed, {closed}')

    def _log(self, writer: aioh2s.H2StreamWriter, line: str) -> None:
        if self.access_log:
            peer = writer.get_extra_info("peername")
            who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "-"
            print(f"{who} {line}", file=sys.stderr, flush=True)

    async def close_all(self) -> None:
        """Close the open WebSockets with 1001 (going away), waiting 5 s at most."""
        closing = [ws.close(1001, "server shutting down") for ws in self.open]
        if closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 5)


def _self_signed(host: str, tmpdir: str) -> tuple[str, str]:
    try:
        import trustme
    except ImportError:
        raise CLIError(
            EXIT_TLS,
            "--self-signed needs the 'trustme' package: pip install trustme "
            "(or pass --tls-cert and --tls-key)",
        ) from None
    ca = trustme.CA(organization_name="aioh2s self-signed")
    names = ["localhost", "127.0.0.1", "::1"]
    if host and host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    leaf = ca.issue_cert(*names)
    cert = os.path.join(tmpdir, "cert.pem")
    key = os.path.join(tmpdir, "key.pem")
    ca_path = os.path.join(tmpdir, "ca.pem")
    with open(cert, "wb") as fh:
        for pem in leaf.cert_chain_pems:
            fh.write(pem.bytes())
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_path)
    print(
        f"aioh2s: self-signed certificate for {', '.join(names)}; CA certificate: {ca_path} "
        "(curl --cacert / aioh2s get --cacert)",
        file=sys.stderr,
        flush=True,
    )
    return cert, key


def check_args(args: argparse.Namespace) -> Path:
    """Refuse what cannot be served (CLIError); the resolved DIR."""
    if args.self_signed and (args.tls_cert or args.tls_key):
        raise CLIError(EXIT_USAGE, "--self-signed and --tls-cert/--tls-key are exclusive")
    root = Path(args.dir)
    if not root.is_dir():
        raise CLIError(EXIT_USAGE, f"{args.dir} is not a directory")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CLIError(EXIT_USAGE, "--tls-cert and --tls-key go together")
    if args.ws_echo:
        try:
            from aioh2s import websocket  # noqa: F401  (to learn whether wsproto is there)
        except ImportError as e:
            raise wsproto_missing("--ws-echo") from e
    return root.resolve()


def listening_url(tls: bool, host: str, port: int) -> str:
    """The URL ``serve`` prints as its first line on stdout (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def tls_files(args: argparse.Namespace, tmpdir: str | None) -> tuple[str | None, str | None]:
    """The certificate and key to serve (a fresh self-signed pair in ``tmpdir``), checked."""
    cert, key = args.tls_cert, args.tls_key
    if args.self_signed:
        assert tmpdir is not None
        cert, key = _self_signed(args.host, tmpdir)
    if cert:
        try:
            server_ssl_context(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise CLIError(EXIT_TLS, f"cannot load certificate {cert} / key {key}: {e}") from e
    return cert, key


def build_handler(root: Path, echo: bool, ws_echo: bool,
                  access_log: bool) -> tuple[aioh2s.Handler, _WebSocketEcho | None]:
    """The handler the options ask for, and its WebSocket echo (to close) if any."""
    handler: aioh2s.Handler
    handler = EchoServer(access_log) if echo else _FileServer(root, access_log)
    websockets = None
    if ws_echo:
        handler = websockets = _WebSocketEcho(handler, access_log)
    return handler, websockets


async def run(args: argparse.Namespace) -> int:
    """``aioh2s serve``: listen until SIGINT or SIGTERM; returns the exit code."""
    root = check_args(args)
    asgi = _cli_asgi.adapter(args) if args.asgi else None
    tmpdir: str | None = None
    try:
        ctx: ssl.SSLContext | None = None
        if args.self_signed:
            tmpdir = tempfile.mkdtemp(prefix="aioh2s-")
        cert, key = tls_files(args, tmpdir)
        if cert:
            ctx = server_ssl_context(cert, key)
        if not args.quiet:
            # The library says at INFO why it refused a connection (a TLS client without
            # ALPN h2, for one): an operator trying curl against the server wants to know.
            logging.getLogger("aioh2s").setLevel(logging.INFO)
        handler, websockets = build_handler(root, args.echo, args.ws_echo, not args.quiet)
        extended_connect = args.ws_echo
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Handlers before the lifespan startup (a signal cancels one that hangs), and before
        # the URL is printed: whoever reads the URL may signal at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        if asgi is not None:
            handler = asgi
            extended_connect = _cli_asgi.wsproto_installed()
            await _cli_asgi.step(_cli_asgi.startup_until(asgi, stop))
        try:
            server = await aioh2s.start_server(
                handler, args.host, args.port, ssl=ctx, enable_connect_protocol=extended_connect
            )
        except OSError as e:
            if asgi is not None:
                await _cli_asgi.step(asgi.shutdown())
            raise CLIError(
                EXIT_CONNECT, f"cannot listen on {args.host}:{args.port}: {e.strerror or e}"
            ) from e
        sockname = server.sockets[0].getsockname()
        print(listening_url(ctx is not None, sockname[0], sockname[1]), flush=True)
        try:
            await stop.wait()
        finally:
            if websockets is not None:
                await websockets.close_all()
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 10)
            if asgi is not None:
                await _cli_asgi.step(asgi.shutdown())  # after the server closed (the spec)
        return EXIT_OK
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` and its options to the command line's subcommands."""
    s = sub.add_parser(
        "serve",
        help="serve a directory (or echo bodies and WebSocket messages) over HTTP/2",
        description="Serve DIR over HTTP/2 (h2c, or TLS with a certificate). "
        "The first line on stdout is the listening URL.",
        epilog=epilog(SERVE_EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("dir", nargs="?", default=".", metavar="DIR")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain (with --tls-key)")
    s.add_argument("--tls-key", metavar="FILE", help="PEM private key (with --tls-cert)")
    s.add_argument(
        "--self-signed",
        action="store_true",
        help="TLS with a throwaway certificate from a throwaway CA (needs trustme)",
    )
    s.add_argument(
        "--echo",
        action="store_true",
        help="echo request bodies back, with trailers x-request-bytes and x-sha256",
    )
    s.add_argument(
        "--ws-echo",
        action="store_true",
        help="also answer WebSocket requests (RFC 8441, any path), sending each message back;"
        " other requests are served as without it (needs wsproto)",
    )
    s.add_argument(
        "--asgi",
        metavar="MODULE:APP",
        help="serve the ASGI application APP of MODULE (imported from the current directory"
        " too) instead of DIR, with its lifespan; WebSockets too when wsproto is installed",
    )
    s.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no access log on stderr (nor why a connection was refused)",
    )
    s.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="serve from N worker processes sharing the port (aioh2s.serve: SIGHUP replaces "
        "them one by one, a dead one is restarted; more than 1 needs Linux)",
    )
    s.add_argument(
        "--start-timeout",
        type=float,
        metavar="S",
        help="with --workers: a worker not accepting connections S seconds after it started "
        "(the import and the lifespan startup included) is killed (default 60)",
    )
    from aioh2s import _cli_workers

    s.set_defaults(run=run, run_blocking=_cli_workers.run)
