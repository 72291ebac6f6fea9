"""The HTTP/1.1 front door of a cleartext server: h2c Upgrade (RFC 7540 §3.2) or a clear 505.

Theory of operation: a cleartext HTTP/2 server normally sees the 24-byte connection preface
first. If instead the first bytes look like an HTTP/1.x request line, :func:`read_request`
reads the request head (bounded) and :func:`parse_request` decides:

- ``Upgrade: h2c`` with exactly one ``HTTP2-Settings`` header and ``Connection`` naming both:
  the request is upgraded. Its body (``Content-Length`` only, bounded by the stream window) is
  read, ``101 Switching Protocols`` is sent, and the request becomes stream 1, half-closed by
  the client, exactly as RFC 7540 §3.2 describes.
- anything else gets ``505 HTTP Version Not Supported`` with a one-line explanation and the
  connection is closed: never a hang and never a garbled exchange.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

__all__ = ["Http1Request", "looks_like_http1", "parse_request", "read_request", "response"]

MAX_HEAD = 64 * 1024
_METHOD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Headers that are meaningful only to the HTTP/1.1 hop and must not reach HTTP/2 (RFC 9113 §8.2.2).
_HOP = {b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"proxy-connection",
        b"transfer-encoding", b"host", b"te"}


def looks_like_http1(data: bytes) -> bool:
    """True if ``data`` starts like an HTTP/1.x request line ("GET /..."), not the h2 preface."""
    i = 0
    while i < len(data) and i < 20 and data[i] in _METHOD_CHARS:
        i += 1
    return 0 < i < len(data) and data[i : i + 1] == b" " and not data.startswith(b"PRI ")


@dataclass
class Http1Request:
    """A parsed HTTP/1.x request head."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def get(self, name: bytes) -> list[bytes]:
        """All values of a (lowercase) header name."""
        return [v for n, v in self.headers if n == name]

    def upgrade_settings(self) -> bytes | None:
        """The HTTP2-Settings value if this is a valid h2c upgrade request, else None."""
        upgrade = b",".join(self.get(b"upgrade")).lower()
        if b"h2c" not in [t.strip() for t in upgrade.split(b",")]:
            return None
        settings = self.get(b"http2-settings")
        if len(settings) != 1:
            return None
        conn = [t.strip() for t in b",".join(self.get(b"connection")).lower().split(b",")]
        if b"upgrade" not in conn or b"http2-settings" not in conn:
            return None
        return settings[0].strip()

    def h2_headers(self, scheme: bytes) -> list[tuple[bytes, bytes]]:
        """The request as HTTP/2 header fields (pseudo-headers first, hop headers dropped)."""
        host = self.get(b"host")
        out = [(b":method", self.method), (b":scheme", scheme),
               (b":authority", host[0] if host else b"localhost"), (b":path", self.target)]
        out += [(n, v) for n, v in self.headers if n not in _HOP]
        return out


async def read_request(reader: asyncio.StreamReader, first: bytes) -> tuple[bytes, bytes]:
    """Read until the end of the request head; return (head, bytes after it). Bounded."""
    data = first
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise ValueError("request head too large")
        chunk = await reader.read(65536)
        if not chunk:
            raise ValueError("connection closed in the request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_request(head: bytes) -> Http1Request:
    """Parse a request head; ``ValueError`` if it is not HTTP/1.x."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x request line")
    req = Http1Request(parts[0], parts[1], parts[2])
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ValueError("malformed header line")
        req.headers.append((name.lower(), value.strip()))
    return req


def response(status: int, reason: str, text: str = "", extra: str = "") -> bytes:
    """A complete HTTP/1.1 response with a short text body."""
    body = text.encode()
    head = f"HTTP/1.1 {status} {reason}\r\n{extra}"
    if status != 101:
        head += (f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n")
    return head.encode() + b"\r\n" + body
