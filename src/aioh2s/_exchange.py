"""One request of a Session in flight: sending its body beside the response, and its attempts.

Theory of operation: a :class:`~aioh2s.Session` sends a request body in a task of its own
(:func:`upload`) while the response is awaited and read, so a server that answers, or echoes,
before it read everything still gets its answer read. :class:`Exchange` ties that task to
the request's stream: :meth:`Exchange.end` ends the stream (resetting what is unfinished)
and waits for the task, delivering a cancellation of the caller once it has. The upload
stops at a reset (a server that answered early and said NO_ERROR wants no more), fails the
stream when the body's iterator fails (so the wait for the response wakes), and never hides
a cancellation. :class:`Attempts` is what the retry rule remembers between attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING

from ._state import Send
from ._stream import Stream
from .client import RequestStream, end_request
from .errors import ErrorCode, ResponseTooLarge, StreamReset

if TYPE_CHECKING:
    from ._origin import Pooled

__all__ = ["Attempts", "Body", "Exchange", "abandon", "drain", "read_body", "upload"]

#: A request body: bytes (sent again on a retry), an async iterable of bytes, or None.
Body = bytes | bytearray | memoryview | AsyncIterable[bytes] | None


class Exchange:
    """One request of a Session in flight: its stream, and the task sending its body."""

    __slots__ = ("stream", "upload", "stopping")

    def __init__(self, stream: RequestStream) -> None:
        self.stream = stream
        self.upload: asyncio.Future[None] | None = None
        self.stopping = False  # end() is cancelling the upload (any other cancel is a failure)

    def upload_error(self) -> BaseException | None:
        """What stopped the body from going out, once it has (None: nothing, or not yet)."""
        up = self.upload
        if up is None or not up.done() or up.cancelled():
            return None
        return up.exception()

    async def uploaded(self) -> None:
        """Wait until the whole body went out; raise what stopped it."""
        if self.upload is not None:
            await asyncio.shield(self.upload)

    async def end(self) -> None:
        """The exchange is over: stop the body, end the stream (reset if unfinished).

        Waits for the upload task to finish (it only has to notice its cancellation); a
        cancellation of the caller meanwhile is delivered once it has.
        """
        end_request(self.stream._s)
        up = self.upload
        if up is None:
            return
        if not up.done():
            self.stopping = True
            up.cancel()
        cancelled = False
        while not up.done():
            try:
                await asyncio.wait([up])
            except asyncio.CancelledError:
                cancelled = True
        if not up.cancelled():
            up.exception()  # retrieved: it was raised already, or is moot now
        if cancelled:
            raise asyncio.CancelledError()


async def upload(s: Stream, body: Body, state: Attempts, ex: Exchange) -> None:
    try:
        if isinstance(body, (bytes, bytearray, memoryview)):
            s.write(body)  # queued whole: it is in memory already
        elif body is not None:
            state.started = True
            async for chunk in body:
                if s.send is Send.RESET:
                    return  # the server answered and stopped the body (_drain let it pass)
                s.write(chunk)
                await drain(s)
            if s.send is Send.RESET:
                return
        if s.send is Send.OPEN:
            s.end()
        await drain(s)
    except asyncio.CancelledError:
        if ex.stopping:
            raise
        # The body's iterator was cancelled by somebody else: the body is broken.
        abandon(s)
        raise RuntimeError("the request body's async iterator raised CancelledError") from None
    except BaseException:
        abandon(s)
        raise


def abandon(s: Stream) -> None:
    # Nothing more will come: tell the server, and wake the wait for the response.
    if not s.closed:
        s.conn.reset_stream(s, ErrorCode.CANCEL)
        s.conn.flush()


class Attempts:
    """How often one request was sent again, and what the retries should avoid."""

    __slots__ = ("tries", "started", "last", "avoid")

    def __init__(self) -> None:
        self.tries = 0
        self.started = False  # a chunk of a streaming body was taken: it cannot be replayed
        self.last: Pooled | None = None  # the connection of the latest attempt
        self.avoid: Pooled | None = None

    def note(self, e: BaseException) -> None:
        """A retry follows ``e``: after REFUSED_STREAM, keep off the connection that refused."""
        refused = isinstance(e, StreamReset) and e.error_code == ErrorCode.REFUSED_STREAM
        self.avoid = self.last if refused else None


async def drain(s: Stream) -> None:
    try:
        await s.drain()
    except StreamReset as e:
        # RFC 9113 §8.1: a server may answer before reading the whole body, then reset the
        # stream with NO_ERROR to stop it; the response still counts.
        if not (e.remote and e.error_code == ErrorCode.NO_ERROR):
            raise


async def read_body(stream: RequestStream, limit: int | None, url: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    reader = stream.reader
    while True:
        chunk = await reader.read(256 * 1024)
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if limit is not None and size > limit:
            raise ResponseTooLarge(f"the response body of {url} is over {limit} bytes")
        parts.append(chunk)


# A plain CONNECT's :authority is the tunnel's target, not the server to connect to, so it
# does not fit a pool keyed by :authority. An extended CONNECT (RFC 8441) does: its
# :authority is the server's.
