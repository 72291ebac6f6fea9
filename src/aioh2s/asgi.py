"""ASGI 3 applications (Starlette, FastAPI, Django, ...) served by aioh2s.

Theory of operation
-------------------
:class:`ASGIAdapter` wraps an ASGI application as an aioh2s handler: ``start_server(adapter,
...)`` calls it once per request stream, in the stream's own task, and it calls the
application in that same task with the request's scope and a ``receive``/``send`` pair made
of the stream's reader and writer (``aioh2s._asgi_http``, and ``aioh2s._asgi_ws`` for
WebSockets over RFC 8441). Nothing is buffered between the two: ``receive()`` reads one
chunk, so the client's window follows the application's reads, and ``send()`` waits on
``drain()``, so a slow client slows the application. Errors follow a handler's rules: an
exception before the response started gives the client a 500, after it a reset
(RST_STREAM INTERNAL_ERROR), and is logged on the ``aioh2s`` logger; a
:class:`ClientDisconnected` (what ``send()`` raises once the client went away) escaping the
application is not logged.

The lifespan scope runs in a task of its own for the server's life: :meth:`startup` sends
``lifespan.startup`` and waits for the answer, :meth:`shutdown` sends ``lifespan.shutdown``
after the server closed (both bounded by their timeouts). ``lifespan="auto"`` (the
default) takes an application that raises, or returns, before answering the startup as one
without lifespan support, as the spec says, and logs that at INFO; ``"on"`` makes that an
error, ``"off"`` sends nothing. The ``state`` dict the application filled in during startup
is copied (shallowly) into every request's scope.

:func:`run` serves an application until SIGINT or SIGTERM (startup, serve, graceful close,
shutdown); ``aioh2s serve --asgi module:app`` does the same from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import ssl as _ssl
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._asgi_http import (
    ASGI_VERSION,
    DONE,
    LIFESPAN_SEND,
    ASGIApp,
    ClientDisconnected,
    HTTPCycle,
    Message,
    check,
    request_scope,
)
from ._state import Send
from .errors import ErrorCode
from .server import Server, start_server
from .streams import H2StreamReader, H2StreamWriter

if sys.version_info >= (3, 11):
    from typing import Unpack
elif TYPE_CHECKING:  # only type checkers need it on 3.10 (see aioh2s.config)
    from typing_extensions import Unpack

if TYPE_CHECKING:
    from .config import ConfigOptions

__all__ = [
    "ASGIAdapter",
    "ASGIApp",
    "ClientDisconnected",
    "LifespanFailure",
    "load_app",
    "run",
    "serve",
    "split_app_spec",
]

log = logging.getLogger("aioh2s")

_LIFESPAN_MODES = ("auto", "on", "off")
_SLOW_BODY_MODES = ("auto", "always", "never")


class LifespanFailure(RuntimeError):
    """The application's lifespan startup or shutdown failed (``.failed``, error, timeout)."""


def _caused_by_disconnect(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was raised while handling, our :class:`ClientDisconnected`.

    Frameworks turn it into errors of their own (Starlette's ``ClientDisconnect``, raised in
    its ``except OSError``): those are the client's doing too.
    """
    for _ in range(16):
        if exc is None:
            return False
        if isinstance(exc, ClientDisconnected):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class _Lifespan:
    """The lifespan scope: one task running the application for the server's life."""

    def __init__(self, app: ASGIApp, mode: str, startup_timeout: float,
                 shutdown_timeout: float) -> None:
        self.app = app
        self.mode = mode
        self.timeouts = (startup_timeout, shutdown_timeout)
        self.state: dict[str, Any] = {}
        self.supported = False
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] | None = None
        self._reply: asyncio.Future[tuple[str, str]] | None = None
        self._phase = "startup"
        self._error: BaseException | None = None
        self._answer = ""  # the application's last answer (lifespan.startup.complete, ...)

    async def _receive(self) -> Message:
        assert self._inbox is not None
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        kind, values = check(message, LIFESPAN_SEND)
        if not kind.startswith(f"lifespan.{self._phase}.") or self._reply is None or (
                self._reply.done()):
            raise RuntimeError(f"{kind!r} message sent out of turn (during {self._phase})")
        self._reply.set_result((kind, values[0] if values else ""))
        self._answer = kind

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as e:
            self._error = e
            if self._answer.endswith(".failed"):
                # It said so first (Starlette raises again after lifespan.*.failed): the
                # phase that waited for the answer reports the failure.
                log.debug("aioh2s: the ASGI lifespan scope raised %r after %s", e,
                          self._answer)
            elif self._reply is None or self._reply.done():
                # Between the phases nobody waits for an answer that would report it.
                log.exception("aioh2s: the ASGI lifespan scope failed after its %s",
                              self._phase)
        finally:
            if self._reply is not None and not self._reply.done():
                self._reply.set_result(("", ""))  # ended without answering

    async def _ask(self, phase: str, timeout: float) -> tuple[str, str]:
        assert self._inbox is not None and self._task is not None
        self._phase = phase
        reply = self._reply = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait({"type": f"lifespan.{phase}"})
        try:
            done, _ = await asyncio.wait({reply}, timeout=timeout)
        except BaseException:
            await self._stop()  # cancelled: leave no task behind
            raise
        if not done:
            await self._stop()
            raise LifespanFailure(f"ASGI lifespan {phase} did not complete within {timeout} s")
        kind, text = reply.result()
        return kind, text

    async def _stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=5)

    async def startup(self) -> None:
        if self.mode == "off" or self._task is not None:
            return
        scope = {"type": "lifespan", "asgi": {"version": ASGI_VERSION, "spec_version": "2.0"},
                 "state": self.state}
        self._inbox = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._main(scope))
        kind, text = await self._ask("startup", self.timeouts[0])
        if kind == "lifespan.startup.complete":
            self.supported = True
            return
        if kind == "lifespan.startup.failed":
            await self._stop()
            log.error("aioh2s: ASGI lifespan startup failed: %s", text)
            raise LifespanFailure(f"ASGI lifespan startup failed: {text}")
        error = self._error
        if self.mode == "on":
            raise LifespanFailure(
                "ASGI lifespan startup: the application "
                + (f"raised {error!r}" if error else "returned without answering")) from error
        # "auto": the spec's rule for applications without lifespan support.
        log.info("aioh2s: the ASGI application does not support lifespan (it %s); going on"
                 " without it", f"raised {error!r}" if error else "returned")

    async def shutdown(self) -> None:
        if not self.supported or self._task is None:
            return
        self.supported = False
        if self._task.done():
            return  # it ended after its startup: nothing is listening
        kind, text = await self._ask("shutdown", self.timeouts[1])
        if kind == "lifespan.shutdown.complete":
            try:  # it returns now, as a rule; one that does not is cancelled
                await asyncio.wait({self._task}, timeout=1.0)
            finally:
                await self._stop()
            return
        await self._stop()
        if kind == "lifespan.shutdown.failed":
            log.error("aioh2s: ASGI lifespan shutdown failed: %s", text)
            raise LifespanFailure(f"ASGI lifespan shutdown failed: {text}")
        error = self._error
        log.error("aioh2s: ASGI lifespan shutdown: the application %s",
                  "raised" if error else "returned without answering", exc_info=error)
        raise LifespanFailure(
            "ASGI lifespan shutdown: the application "
            + (f"raised {error!r}" if error else "returned without answering")) from error


class ASGIAdapter:
    """An ASGI 3 application as an aioh2s handler: ``start_server(ASGIAdapter(app), ...)``.

    ``lifespan``: ``"auto"`` (default; an application that fails its lifespan scope is run
    without one), ``"on"`` (then that is an error) or ``"off"``. ``root_path`` is the prefix
    a proxy in front took off the path (prepended to ``path`` and ``raw_path``, and given as
    ``root_path``). ``chunk_size`` bounds one ``http.request`` message's body.
    ``startup_timeout``/``shutdown_timeout`` bound the lifespan's answers (60 s each).
    WebSockets need ``enable_connect_protocol=True`` on the server and the ``wsproto`` extra;
    ``ws_max_message_size`` and ``ws_close_timeout`` are :func:`aioh2s.websocket.accept`'s
    options. Call :meth:`startup` before serving and :meth:`shutdown` after the server closed.

    ``slow_body`` says which request bodies are exempt from the server's ``min_body_rate``
    (the guard against uploads that trickle, Slowloris): ``"auto"`` (default) those whose
    response began before the body ended (a bidirectional stream: its body pauses whenever
    the client has nothing to say), ``"always"`` every one (behind a proxy that guards
    against slow clients itself), ``"never"`` none.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        lifespan: str = "auto",
        root_path: str = "",
        chunk_size: int = 64 * 1024,
        startup_timeout: float = 60.0,
        shutdown_timeout: float = 60.0,
        ws_max_message_size: int = 4 * 1024 * 1024,
        ws_close_timeout: float = 10.0,
        slow_body: str = "auto",
    ) -> None:
        if not callable(app):
            raise TypeError(f"an ASGI application is a callable, not {type(app).__name__}")
        if lifespan not in _LIFESPAN_MODES:
            raise ValueError(f"lifespan must be one of {_LIFESPAN_MODES}, not {lifespan!r}")
        if not isinstance(root_path, str) or root_path.endswith("/") or (
                root_path and not root_path.startswith("/")):
            raise ValueError(f"root_path {root_path!r} must be empty or start with '/' and not"
                             " end with one")
        if slow_body not in _SLOW_BODY_MODES:
            raise ValueError(f"slow_body must be one of {_SLOW_BODY_MODES}, not {slow_body!r}")
        if type(chunk_size) is not int or chunk_size < 1:
            raise ValueError("chunk_size must be a positive int (bytes)")
        for name, t in (("startup_timeout", startup_timeout),
                        ("shutdown_timeout", shutdown_timeout)):
            if not isinstance(t, (int, float)) or not 0 < t < float("inf"):
                raise ValueError(f"{name} must be a positive, finite number of seconds")
        if type(ws_max_message_size) is not int or ws_max_message_size < 1:
            raise ValueError("ws_max_message_size must be a positive int (bytes)")
        if not isinstance(ws_close_timeout, (int, float)) or not 0 < ws_close_timeout < float(
                "inf"):
            raise ValueError("ws_close_timeout must be a positive, finite number of seconds")
        self.app = app
        self.root_path = root_path
        self.chunk_size = chunk_size
        self._ws_max_message_size = ws_max_message_size
        self._ws_close_timeout = ws_close_timeout
        self._lifespan = _Lifespan(app, lifespan, startup_timeout, shutdown_timeout)
        self.slow_body = slow_body
        self._slow_auto = slow_body == "auto"
        self._slow_always = slow_body == "always"

    def __repr__(self) -> str:
        return f"<aioh2s.asgi.ASGIAdapter {self.app!r}>"

    @property
    def state(self) -> dict[str, Any]:
        """The lifespan state (what the application stored during startup); copied per request."""
        return self._lifespan.state

    async def startup(self) -> None:
        """Run the lifespan startup (nothing if the application has none, in "auto" mode).

        Raises :class:`LifespanFailure` if the application sent ``lifespan.startup.failed``,
        did not answer within ``startup_timeout``, or (``lifespan="on"``) raised.
        """
        await self._lifespan.startup()

    async def shutdown(self) -> None:
        """Run the lifespan shutdown, after the server closed (nothing if startup did not run).

        Raises :class:`LifespanFailure` on ``lifespan.shutdown.failed``, an error, a timeout.
        """
        await self._lifespan.shutdown()

    async def __call__(self, reader: H2StreamReader, writer: H2StreamWriter) -> None:
        """Serve one request stream with the application (the aioh2s handler)."""
        s = reader._s
        if s.tunnel:
            await self._tunnel(reader, writer)
            return
        scope = request_scope("http", reader, writer, self.root_path, self._lifespan.state)
        scope["extensions"] = {"http.response.trailers": {}, "http.response.early_hint": {}}
        if self._slow_always:
            reader.allow_slow_body()
        cycle = HTTPCycle(reader, writer, self.chunk_size, scope["method"] == "HEAD",
                          self._slow_auto)
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception as e:
            if cycle.raised and _caused_by_disconnect(e):
                log.debug("aioh2s: ASGI application of stream %d ended by %r", s.id, e)
                return
            if cycle.state == DONE:
                log.exception("aioh2s: ASGI application failed on stream %d after its"
                              " response", s.id)
                return
            raise  # the server's rule: 500 before the response began, else a reset; logged
        if cycle.state != DONE and s.send is not Send.RESET:
            log.error("aioh2s: ASGI application returned without completing its response on"
                      " stream %d", s.id)
            if s.send is Send.IDLE:
                writer.send_headers([(":status", "500"), ("content-length", "0")], True)
            else:
                writer.reset(ErrorCode.INTERNAL_ERROR)

    async def _tunnel(self, reader: H2StreamReader, writer: H2StreamWriter) -> None:
        try:
            from . import websocket
        except ImportError:  # pragma: no cover - the wsproto extra is not installed
            websocket = None  # type: ignore[assignment]
        if websocket is None or not websocket.is_websocket(reader.headers):
            # A plain CONNECT, or a protocol other than websocket: ASGI has no scope for it.
            writer.send_headers([(":status", "501"), ("content-length", "0")], True)
            return
        from ._asgi_ws import WebSocketCycle

        scope = request_scope("websocket", reader, writer, self.root_path,
                              self._lifespan.state)
        del scope["method"]
        scope["subprotocols"] = websocket.subprotocols(reader.headers)
        scope["extensions"] = {"websocket.http.response": {}}
        cycle = WebSocketCycle(reader, writer, max_message_size=self._ws_max_message_size,
                               close_timeout=self._ws_close_timeout)
        s = reader._s
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception as e:
            if cycle.raised and _caused_by_disconnect(e) or cycle.disconnected:
                # (After the disconnect: a framework's own exception for it, Starlette's
                # WebSocketDisconnect, escaping the endpoint as the client closed.)
                log.debug("aioh2s: ASGI application of stream %d ended by %r", s.id, e)
            elif cycle.ws is None:
                raise  # not accepted: the handler's failure (500, or a reset)
            else:
                log.exception("aioh2s: ASGI application failed on WebSocket stream %d", s.id)
            await cycle.finish(e)
            return
        finally:
            cycle.forget()
        if not cycle.answered and s.send is not Send.RESET:
            log.error("aioh2s: ASGI application returned without accepting or denying the"
                      " WebSocket on stream %d", s.id)
            if s.send is Send.IDLE:
                writer.send_headers([(":status", "500"), ("content-length", "0")], True)
            else:
                writer.reset(ErrorCode.INTERNAL_ERROR)
        await cycle.finish(None)


def split_app_spec(spec: str) -> tuple[str, str]:
    """``(module, attribute)`` of a ``"package.module:attribute"`` spec, or ValueError.

    Nothing is imported: a supervisor checks the spec it hands to its workers with it.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or not all(
            p.isidentifier() for p in (*module_name.split("."), *attr.split("."))):
        raise ValueError(f"ASGI application {spec!r} is not a 'package.module:attribute' spec")
    return module_name, attr


def load_app(spec: str) -> ASGIApp:
    """The application a ``"package.module:attribute"`` spec names (imported now)."""
    module_name, attr = split_app_spec(spec)
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"ASGI application {spec!r}: {obj!r} has no attribute"
                                 f" {part!r}") from None
    if not callable(obj):
        raise TypeError(f"ASGI application {spec!r} is {obj!r}, not a callable")
    return obj  # type: ignore[no-any-return]


async def serve(
    app: ASGIApp | ASGIAdapter,
    host: str | Sequence[str] | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl: _ssl.SSLContext | None = None,
    ready: Callable[[Server], object] | None = None,
    **options: Unpack[ConfigOptions],
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, as :func:`run` does, in a running loop.

    ``ready(server)`` is called once the server listens (the lifespan startup done). A
    second signal during the graceful close cuts the open streams' grace to 0. A signal
    during the lifespan startup cancels it: :class:`LifespanFailure`, as for a failed one.
    """
    adapter = app if isinstance(app, ASGIAdapter) else ASGIAdapter(app)
    if "enable_connect_protocol" not in options:
        try:
            import wsproto  # noqa: F401 - WebSockets only when aioh2s.websocket can run
        except ImportError:  # pragma: no cover - the extra is not installed
            pass
        else:
            options["enable_connect_protocol"] = True
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server: Server | None = None

    def on_signal() -> None:
        if stop.is_set() and server is not None:
            server.close(0)  # a second signal: no more grace for the open streams
        stop.set()

    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal)
            signals.append(sig)
    try:
        await _startup_until(adapter, stop)
        try:
            server = await start_server(adapter, host, port, ssl=ssl, **options)
            try:
                if ready is not None:
                    ready(server)
                await stop.wait()
            finally:
                server.close()
                await server.wait_closed()
        finally:
            await adapter.shutdown()
    finally:
        for sig in signals:  # (kept until the end: a signal during the close is not fatal)
            loop.remove_signal_handler(sig)


async def _startup_until(adapter: ASGIAdapter, stop: asyncio.Event) -> None:
    """``adapter.startup()``, cancelled if ``stop`` is set first (SIGINT or SIGTERM).

    A startup that hangs must not make the operator's signal wait ``startup_timeout``: the
    interrupted startup is a :class:`LifespanFailure` (the server never served; the
    lifespan shutdown is not run, as after any failed startup).
    """
    loop = asyncio.get_running_loop()
    startup = loop.create_task(adapter.startup())
    stopped = loop.create_task(stop.wait())
    try:
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopped, startup):
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
    if startup.cancelled():
        raise LifespanFailure("ASGI lifespan startup interrupted by SIGINT or SIGTERM")
    startup.result()


def run(
    app: ASGIApp | ASGIAdapter,
    host: str | Sequence[str] | None = "127.0.0.1",
    port: int = 8000,
    *,
    ssl: _ssl.SSLContext | None = None,
    **options: Unpack[ConfigOptions],
) -> None:
    """Serve an ASGI application until SIGINT or SIGTERM; blocks, like :func:`asyncio.run`.

    Runs the lifespan startup, listens (WebSockets enabled when wsproto is installed),
    and on the signal closes gracefully (GOAWAY, at most the ``grace`` option's seconds,
    30 by default, for the open streams, and for work the application does after its
    responses; open WebSockets get a close frame 1001 at once), then runs the lifespan
    shutdown. A signal during the lifespan startup cancels it and raises
    :class:`LifespanFailure`, as a failed startup does. Pass an
    :class:`ASGIAdapter` for its options; ``options`` are :func:`aioh2s.start_server`'s.
    """
    asyncio.run(serve(app, host, port, ssl=ssl, **options))
