"""The HTTP/1.1 front doors: cleartext (h2c Upgrade, RFC 7540 §3.2, a 505, or GOAWAY) and TLS.

Theory of operation: a cleartext HTTP/2 server normally sees the 24-byte connection preface
first. :func:`front_door` reads just enough of the first bytes for :func:`classify` to tell
three things apart:

- the preface (or a prefix of it, when more bytes are to come): handed to h2 unchanged;
- an HTTP/1.x request line (``METHOD SP request-target SP HTTP/1.x CRLF``): the request head
  is read (bounded) and parsed strictly, and then only HTTP/1.1 answers it;
- anything else: an invalid connection preface, a connection error PROTOCOL_ERROR (RFC 9113
  §3.4). Our SETTINGS and a GOAWAY(PROTOCOL_ERROR) are sent and the connection is closed. An
  HTTP/1.1 text would be a guess about a peer that spoke neither protocol.

An HTTP/1.x request is then:

- malformed: ``400 Bad Request`` (or ``413``/``431`` for a body or head that is too large),
  before any switch. Requests must follow the field rules HTTP/2 would apply to them, checked
  by :mod:`aioh2s.headers` (names are tokens, values have no NUL, CR or LF), carry exactly one
  ``Host`` (HTTP/1.1, and any upgrade), at most one decimal ``Content-Length``, and an upgrade's
  ``HTTP2-Settings`` must decode exactly as h2's ``initiate_upgrade_connection`` will decode
  it, to settings h2 accepts;
- an h2c upgrade (``Upgrade: h2c``, exactly one ``HTTP2-Settings``, ``Connection`` naming both):
  its body (``Content-Length`` only, bounded by the stream window) is read, ``101 Switching
  Protocols`` is sent, and the request becomes stream 1, half-closed by the client;
- anything else: ``505 HTTP Version Not Supported`` with a one-line explanation.

Every HTTP/1.1 answer closes the connection: never a hang and never a garbled exchange. None of
this is logged above DEBUG: a bad request is the peer's business, not an operator's.

TLS has a front door too, :class:`TLSFrontDoor`, for a connection whose ALPN selected nothing
(a client that offered no protocol at all, or only ones we do not speak: ``curl --http1.1``
offers only ``http/1.1``) or ``http/1.1`` (a server context that offers it). It answers what
the client then sends as the cleartext door does, with two differences. An HTTP/1.x request
gets the 505 (or the 400) whatever it asks for, since an h2c Upgrade exists only for
cleartext (RFC 7540 §3.2). And the outcome is logged at INFO on ``aioh2s`` (at most one
record per 10 s, counting the others): an operator who set up TLS expects to hear why a TLS
client got nothing but an error. The HTTP/2 preface without ALPN (RFC 9113 §3.3 asks clients
for ALPN over TLS) is served, like prior knowledge on cleartext: refusing it would help
nobody.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.exceptions
import h2.settings

from ._trace import peer_label
from .errors import ConnectionClosed, ErrorCode, RemoteProtocolError
from .headers import valid_name, valid_value

if TYPE_CHECKING:
    from ._connection import Connection
    from ._wire import Wire

__all__ = [
    "BadRequest",
    "Http1Request",
    "check_http2_settings",
    "classify",
    "front_door",
    "parse_request",
    "read_request",
    "response",
    "TLSFrontDoor",
]

log = logging.getLogger("aioh2s")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_HEAD = 64 * 1024

#: What :func:`classify` says about the first bytes of a connection.
H2, HTTP1, MORE, INVALID = "h2", "http1", "more", "invalid"

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# RFC 9112 §3: method SP request-target SP HTTP-version. The target is anything but controls
# and spaces (its finer grammar is the handler's business, as in HTTP/2's :path).
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb"{1,20}) ([^\x00-\x20\x7f]+) (HTTP/1\.[0-9])")
_METHOD = re.compile(_TOKEN + rb"{1,20}")
_TARGET = re.compile(rb"[^\x00-\x20\x7f]*")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*=*")
# Headers that are meaningful only to the HTTP/1.1 hop and must not reach HTTP/2 (RFC 9113 §8.2.2).
_HOP = {b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"proxy-connection",
        b"transfer-encoding", b"host", b"te"}


class BadRequest(Exception):
    """An HTTP/1.x request we answer with an error ``status`` and a one-line ``str()``."""

    def __init__(self, message: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _could_start_request_line(data: bytes) -> bool:
    """True if ``data`` (no CRLF yet) can still grow into a valid HTTP/1.x request line."""
    method, sp, rest = data.partition(b" ")
    if not _METHOD.fullmatch(method):
        return False
    if not sp:
        return True
    target, sp, version = rest.partition(b" ")
    if not _TARGET.fullmatch(target):
        return False
    if not sp:
        return True
    if not target:
        return False
    # A prefix of "HTTP/1.x", perhaps followed by the CR of the CRLF.
    if len(version) <= 7:
        return b"HTTP/1."[: len(version)] == version
    return (version[:7] == b"HTTP/1." and version[7:8].isdigit()
            and version[8:] in (b"", b"\r"))


def classify(data: bytes | bytearray) -> str:
    """What the first bytes of a connection are: ``H2``, ``HTTP1``, ``INVALID`` or ``MORE``.

    ``MORE`` means that the bytes so far are a prefix of both valid answers' inputs, or of
    one of them: read more (or give up at EOF or :data:`MAX_HEAD`).
    """
    n = min(len(data), len(PREFACE))
    if data[:n] == PREFACE[:n]:
        return H2 if n == len(PREFACE) else MORE
    line, lf, _ = data.partition(b"\n")
    if lf:
        # A bare LF ending the request line is still recognisably HTTP/1 (RFC 9112 §2.2 lets a
        # recipient accept it); parse_request() then refuses it with a 400.
        return HTTP1 if _REQUEST_LINE.fullmatch(line.removesuffix(b"\r")) else INVALID
    if len(data) > MAX_HEAD or not _could_start_request_line(bytes(data)):
        return INVALID
    return MORE


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

    def _tokens(self, name: bytes) -> list[bytes]:
        return [t.strip() for t in b",".join(self.get(name)).lower().split(b",")]

    def upgrade_settings(self) -> bytes | None:
        """The HTTP2-Settings value if this is an h2c upgrade request, else None.

        Only the shape of the request is checked here; the value itself is checked by
        :func:`check_http2_settings`.
        """
        if b"h2c" not in self._tokens(b"upgrade"):
            return None
        settings = self.get(b"http2-settings")
        if len(settings) != 1:
            return None  # RFC 7540 §3.2.1: MUST NOT upgrade without exactly one
        conn = self._tokens(b"connection")
        if b"upgrade" not in conn or b"http2-settings" not in conn:
            return None
        return settings[0]

    def content_length(self) -> int:
        """The body length (0 without ``Content-Length``); :class:`BadRequest` if malformed."""
        values = self.get(b"content-length")
        if not values:
            return 0
        if len(values) != 1 or not _DIGITS.fullmatch(values[0]):
            raise BadRequest("Content-Length must be one decimal number")
        return int(values[0])

    def h2_headers(self, scheme: bytes) -> list[tuple[bytes, bytes]]:
        """The request as HTTP/2 header fields (pseudo-headers first, hop headers dropped).

        Also dropped: the fields that ``Connection`` names, which are hop-by-hop as well
        (RFC 9110 §7.6.1).
        """
        hop = _HOP | set(self._tokens(b"connection"))
        out = [(b":method", self.method), (b":scheme", scheme),
               (b":authority", self.get(b"host")[0]), (b":path", self.target)]
        out += [(n, v) for n, v in self.headers if n not in hop]
        return out


async def read_request(
    wire: Wire, first: bytes | bytearray
) -> tuple[bytes, bytes]:
    """Read until the end of the request head; return (head, bytes after it). Bounded."""
    data = first
    if not data.partition(b"\n")[0].endswith(b"\r"):
        raise BadRequest("the request line must end with CRLF, not a bare LF (RFC 9112 §2.2)")
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEAD:
            raise BadRequest("request head too large", 431, "Request Header Fields Too Large")
        chunk = await wire.read()
        if not chunk:
            raise ConnectionResetError("connection closed in the request head")
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise BadRequest("request head too large", 431, "Request Header Fields Too Large")
    return head, rest


def parse_request(head: bytes) -> Http1Request:
    """Parse and check a request head; :class:`BadRequest` says what is wrong with it.

    Field names are lowercased, then must be what HTTP/2 accepts (tokens), as must values
    (no NUL, CR or LF: a bare LF or CR inside a line is refused, not taken as a line break).
    HTTP/1.1 requests and upgrades need exactly one ``Host``.
    """
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise BadRequest("malformed request line (lines must end with CRLF)")
    req = Http1Request(m[1], m[2], m[3])
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest("malformed header line (no colon)")
        name = name.lower()
        value = value.strip(b" \t")
        if not valid_name(name):
            raise BadRequest(f"invalid header name {name[:60]!r} (RFC 9110 §5.6.2; no obs-fold)")
        if not valid_value(value):
            raise BadRequest(f"header {name[:60]!r} has a NUL, CR or LF in its value")
        req.headers.append((name, value))
    hosts = req.get(b"host")
    if len(hosts) > 1 or (not hosts and (req.version != b"HTTP/1.0"
                                         or req.upgrade_settings() is not None)):
        raise BadRequest(f"a request needs exactly one Host header, not {len(hosts)}"
                         " (RFC 9112 §3.2)")
    return req


def check_http2_settings(value: bytes) -> None:
    """Raise :class:`BadRequest` unless h2 will accept ``value`` as the upgrade's SETTINGS.

    It is decoded exactly as h2's ``initiate_upgrade_connection`` decodes it
    (``base64.urlsafe_b64decode``), after checking that it uses only the base64url alphabet
    (which that decoder would silently skip over), then parsed as a SETTINGS payload and each
    setting checked as h2 checks received settings.
    """
    if not _BASE64URL.fullmatch(value):
        raise BadRequest("HTTP2-Settings is not base64url (RFC 7540 §3.2.1)")
    try:
        payload = base64.urlsafe_b64decode(value)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"HTTP2-Settings is not valid base64url: {e}") from None
    if len(payload) % 6:
        raise BadRequest(f"HTTP2-Settings decodes to {len(payload)} bytes, which is not a"
                         " whole number of 6-byte settings (RFC 9113 §6.5.1)")
    values: dict[h2.settings.SettingCodes | int, int] = {}
    for ident, v in struct.iter_unpack("!HL", payload):
        values[ident] = v
    try:
        # The client's settings, as h2 holds them on a server: Settings(client=True).
        h2.settings.Settings(client=True, initial_values=values)  # type: ignore[arg-type]
    except h2.exceptions.InvalidSettingsValueError as e:
        raise BadRequest(f"HTTP2-Settings has an invalid setting: {e}") from None


def response(status: int, reason: str, text: str = "", extra: str = "") -> bytes:
    """A complete HTTP/1.1 response with a short text body."""
    body = text.encode()
    head = f"HTTP/1.1 {status} {reason}\r\n{extra}"
    if status != 101:
        head += (f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n")
    return head.encode() + b"\r\n" + body


_505_TEXT = (
    "This server speaks HTTP/2 only: use prior knowledge (curl --http2-prior-knowledge),"
    " h2c Upgrade, or TLS with ALPN h2.\n"
)


_505_TLS_TEXT = (
    "This server speaks HTTP/2 only: offer ALPN h2 in the TLS handshake"
    " (curl --http2, or any HTTP/2 client).\n"
)


def _refuse_garbage(conn: Connection, data: bytes | bytearray) -> bytes:
    """Answer first bytes that are neither HTTP/2 nor HTTP/1.x; returns no h2 bytes.

    RFC 9113 §3.4: our SETTINGS first (the server preface), then GOAWAY(PROTOCOL_ERROR).
    """
    conn.initiate()
    conn.abort(
        RemoteProtocolError(f"invalid connection preface: {data[:24]!r}",
                            ErrorCode.PROTOCOL_ERROR),
        ErrorCode.PROTOCOL_ERROR,
    )
    return b""


def _refuse(conn: Connection, status: int, reason: str, text: str, why: str) -> bytes:
    conn.transport.write(response(status, reason, text))
    conn.abort(ConnectionClosed(why), None)
    return b""


async def front_door(conn: Connection, data: bytes | bytearray) -> bytes | bytearray:
    """First bytes of a cleartext connection: h2 preface, h2c Upgrade, HTTP/1.1, or garbage.

    Returns the bytes to feed h2 (after our preface was sent), or ``b""`` when the connection
    was answered and closed here.
    """
    wire = conn.wire
    kind = classify(data)
    while kind == MORE:
        more = await wire.read()
        if conn.closed:
            return b""  # closed while we waited (server.close(), handshake timeout)
        if not more:
            if PREFACE.startswith(data):
                return data  # h2 sees the truncated preface, then the EOF
            conn.abort(ConnectionClosed("the peer closed the connection in its request line"),
                       None)
            return b""
        data += more
        kind = classify(data)
    if kind == H2:
        conn.initiate(flush=False)  # sent with the replies to these first bytes: one write
        return data
    if kind == INVALID:
        return _refuse_garbage(conn, data)
    try:
        head, rest = await read_request(wire, data)
        if conn.closed:
            return b""
        req = parse_request(head)
        settings = req.upgrade_settings()
        if settings is None:
            return _refuse(conn, 505, "HTTP Version Not Supported", _505_TEXT,
                           "HTTP/1.1 request without h2c Upgrade: answered 505")
        if req.method == b"CONNECT" or not (req.target[:1] == b"/" or req.target == b"*"):
            # It would become stream 1 with :scheme and :path made up from the target: a plain
            # CONNECT that skipped the rules of RFC 9113 §8.5 (say, a proxy dialling Host).
            raise BadRequest("only a request with an origin-form target (not CONNECT) can be"
                             " upgraded to h2c")
        check_http2_settings(settings)
        length = req.content_length()
        if req.get(b"transfer-encoding") or length > conn.config.stream_window:
            raise BadRequest("h2c Upgrade requests may carry at most one stream window of body,"
                             " with Content-Length", 413, "Content Too Large")
    except BadRequest as e:
        return _refuse(conn, e.status, e.reason, f"{e}\n", f"bad HTTP/1.1 request: {e}")
    except ConnectionResetError as e:
        conn.abort(ConnectionClosed(str(e)), None)
        return b""
    while len(rest) < length:
        more = await wire.read()
        if conn.closed:
            return b""
        if not more:
            conn.abort(ConnectionClosed("connection closed in the h2c Upgrade body"), None)
            return b""
        rest += more
    body, rest = rest[:length], rest[length:]
    conn.transport.write(response(
        101, "Switching Protocols", extra="Connection: Upgrade\r\nUpgrade: h2c\r\n"
    ))
    conn.initiate_upgrade(settings, req.h2_headers(b"http"), body)
    return rest


class TLSFrontDoor:
    """The first bytes of a server's TLS connections whose ALPN did not select ``h2``.

    One per server (``Server`` sets it as each such connection's ``front_door``); see the
    module's docstring for what it answers. ALPN selected nothing (the client offered no
    protocol, or none we speak), or ``http/1.1`` (a server context that offers it too).

    Every outcome but HTTP/2 is logged at INFO on ``aioh2s``, throttled as the server's
    ``max_connections`` refusals are: at most one record per :attr:`INTERVAL` seconds,
    counting the ones left out, since a flood of such connections must not flood the log.
    """

    #: Seconds between two records; the refusals in between are only counted.
    INTERVAL = 10.0

    __slots__ = ("_unlogged", "_logged_at")

    def __init__(self) -> None:
        self._unlogged = 0  # refusals since the last record, not logged one by one
        self._logged_at = -1e300

    def log(self, text: str) -> None:
        """Log one refusal (``text``, after ``aioh2s: ``) at INFO, or only count it.

        Also used by ``Server`` for a TLS client whose ALPN selected another protocol.
        """
        now = time.monotonic()
        if now - self._logged_at < self.INTERVAL:
            self._unlogged += 1
            return
        more = self._unlogged
        self._unlogged = 0
        self._logged_at = now
        tail = (f" ({more} more TLS connection(s) refused like this since the last such"
                f" record, not logged one by one)" if more else "")
        log.info("aioh2s: %s%s", text, tail)

    def _note(self, conn: Connection, peer: str, what: str) -> None:
        """Log (throttled) how the front door ended ``peer``'s connection: ``what``."""
        ssl_object = conn.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        how = ("no ALPN protocol was selected (the client did not offer ALPN h2)" if alpn is None
               else f"ALPN selected {alpn!r}")
        self.log(f"closing TLS connection from {peer}: {how}, and {what}")

    def _timed_out(self, conn: Connection, peer: str, where: str) -> None:
        """The connection was closed while the client's HTTP/1.x text was incomplete.

        Logged only when our handshake timeout closed it, saying so (the client did not
        hang up): a ``server.close()`` meanwhile is the operator's own doing.
        """
        err = conn.error
        if isinstance(err, ConnectionClosed) and err.error_code == ErrorCode.SETTINGS_TIMEOUT:
            self._note(conn, peer, f"{where} was still incomplete when the server closed the"
                       f" connection: {err}")

    async def __call__(self, conn: Connection, data: bytes | bytearray) -> bytes | bytearray:
        """Answer the first bytes ``data``; return what to feed h2 next.

        That is the bytes for h2 (after our preface was sent), or ``b""`` when the connection
        was answered and closed here.
        """
        wire = conn.wire
        peer = peer_label(conn.get_extra_info("peername"))
        kind = classify(data)
        while kind == MORE:
            more = await wire.read()
            if conn.closed:
                if not PREFACE.startswith(data):
                    self._timed_out(conn, peer, "what looked like its HTTP/1.x request line")
                return b""
            if not more:
                if PREFACE.startswith(data):
                    return data  # h2 sees the truncated preface, then the EOF
                self._note(conn, peer, "it closed in what looked like an HTTP/1.x request line")
                conn.abort(
                    ConnectionClosed("the peer closed the connection in its request line"), None
                )
                return b""
            data += more
            kind = classify(data)
        if kind == H2:
            log.debug("aioh2s: TLS connection from %s sent the HTTP/2 preface without ALPN h2:"
                      " serving it", peer)
            conn.initiate(flush=False)
            return data
        if kind == INVALID:
            self._note(conn, peer, "its first bytes are neither HTTP/2 nor HTTP/1.x:"
                       " GOAWAY(PROTOCOL_ERROR)")
            return _refuse_garbage(conn, data)
        try:
            head, _rest = await read_request(wire, data)
            if conn.closed:
                return b""
            parse_request(head)
        except BadRequest as e:
            self._note(conn, peer, f"it sent a malformed HTTP/1.x request: answered"
                       f" {e.status} ({e})")
            return _refuse(conn, e.status, e.reason, f"{e}\n", f"bad HTTP/1.1 request: {e}")
        except ConnectionResetError as e:
            if conn.closed:
                # Not the client's doing: the read ended because we closed (the handshake
                # timeout cut a client trickling its head).
                self._timed_out(conn, peer, "its HTTP/1.x request head")
                return b""
            self._note(conn, peer, "it closed in an HTTP/1.x request head")
            conn.abort(ConnectionClosed(str(e)), None)
            return b""
        self._note(conn, peer, "it sent an HTTP/1.x request: answered 505 HTTP Version Not"
                   " Supported")
        return _refuse(conn, 505, "HTTP Version Not Supported", _505_TLS_TEXT,
                       "HTTP/1.1 request over TLS without ALPN h2: answered 505")
