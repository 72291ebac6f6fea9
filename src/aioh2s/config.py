"""Every tunable of a connection, with a safe default, in one frozen dataclass.

Theory of operation: ``connect()`` and ``start_server()`` take these as keyword arguments and
build one :class:`Config`; the connection reads it and nothing else. Each field is a limit a
public server needs (the defaults must be safe to face the internet) or a buffer size that
trades memory for throughput. :meth:`Config.from_options` rejects unknown keywords with the
list of known ones, so a typo fails loudly instead of silently using a default.
:class:`ConfigOptions` spells the same fields out as a ``TypedDict`` for ``**options:
Unpack[ConfigOptions]`` in the signatures of ``connect()`` and ``start_server()``, so editors
complete the names and type checkers reject a misspelt one too (a test keeps the two lists
equal). ``Unpack`` is in :mod:`typing` from Python 3.11; on 3.10 only type checkers need it
(from ``typing_extensions``, which they ship), so nothing is imported at run time.

Memory rules the defaults keep (see README, "Flow control"):
- a stream buffers at most ``stream_window`` unread inbound bytes, a connection at most
  ``connection_window`` over all its streams: the peer cannot send more than we granted, and we
  grant only what the application has consumed;
- a writer that awaits ``drain()`` has at most ``write_high_water`` bytes queued per stream.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, TypedDict

__all__ = ["Config", "ConfigOptions", "SessionConfigOptions", "default_max_connections"]

KiB = 1024
MiB = 1024 * KiB


def default_max_connections() -> int:
    """The server's connection cap when ``max_connections`` is None.

    Half the soft file-descriptor limit, leaving the other half to the application (files,
    upstream connections), and at most 10,000 (about 300 MB of idle connections): a server
    that runs out of descriptors stalls every accept, so the cap must come first. 1,000 where
    the limit is unknown.
    """
    try:
        import resource
    except ImportError:  # not on POSIX
        return 1000
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1000
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 10_000
    return max(16, min(10_000, soft // 2))


class SessionConfigOptions(TypedDict, total=False):
    """The :class:`Config` fields a :class:`aioh2s.Session` takes as keywords.

    All of them but the three that are Session arguments of their own (per origin, not per
    server): ``max_connections``, ``idle_timeout`` and ``keepalive_interval``. Each field
    means what the :class:`Config` field of that name means; ``handshake_timeout`` becomes
    the Session's ``Timeouts.connect`` unless ``timeout=`` is given.
    """

    handshake_timeout: float | None
    max_concurrent_streams: int
    stream_window: int
    connection_window: int
    max_frame_size: int
    max_header_list_size: int
    max_header_fields: int
    write_high_water: int
    write_low_water: int
    transport_high_water: int
    read_limit: int
    header_timeout: float | None
    min_body_rate: float | None
    body_rate_grace: float
    keepalive_timeout: float
    grace: float
    linger: float
    first_request_wait: float | None
    reset_handler_timeout: float
    read_size: int
    max_request_memory: int | None
    idle_near_cap: float
    max_reset_burst: int
    max_reset_rate: float
    max_server_reset_burst: int
    max_server_reset_rate: float
    max_glitch_burst: int
    max_glitch_rate: float
    max_queued_control: int
    max_control_burst: int
    max_control_rate: float
    max_header_block_size: int | None
    enable_connect_protocol: bool


class ConfigOptions(SessionConfigOptions, total=False):
    """Every :class:`Config` field, as the keywords of ``connect()`` and ``start_server()``.

    ``connect(host, port, stream_window=2**20)`` is ``connect(host, port,
    config=Config(stream_window=2**20))``; see :class:`Config` for what each field means.
    """

    idle_timeout: float | None
    keepalive_interval: float | None
    max_connections: int | None


@dataclass(frozen=True)
class Config:
    """Limits and buffer sizes of one HTTP/2 connection (client or server side)."""

    #: SETTINGS_MAX_CONCURRENT_STREAMS we advertise: streams the peer may open at once.
    max_concurrent_streams: int = 100
    #: SETTINGS_INITIAL_WINDOW_SIZE we advertise: unread bytes one stream may buffer.
    stream_window: int = 1 * MiB
    #: Connection-level receive window: unread bytes all streams together may buffer.
    connection_window: int = 4 * MiB
    #: SETTINGS_MAX_FRAME_SIZE we advertise (16,384 .. 16,777,215).
    max_frame_size: int = 16 * KiB
    #: SETTINGS_MAX_HEADER_LIST_SIZE: cap on a decoded header list (HPACK-bomb bound).
    max_header_list_size: int = 64 * KiB
    #: Fields (and HPACK table size updates) one header block may hold: a CPU bound that the
    #: list size does not give. Past it: GOAWAY(ENHANCE_YOUR_CALM). Apache's default is 100.
    max_header_fields: int = 256
    #: ``drain()`` blocks while a stream has more than this many unsent bytes queued...
    write_high_water: int = 256 * KiB
    #: ...until it falls to this many.
    write_low_water: int = 64 * KiB
    #: Bytes the transport may hold before we stop moving stream data into it (and stop reading).
    transport_high_water: int = 512 * KiB
    #: ``readline()``/``readuntil()`` limit, clamped to half the stream window (see streams.py).
    read_limit: int = 64 * KiB
    #: Seconds for the peer's preface and first SETTINGS to arrive (slowloris bound).
    handshake_timeout: float | None = 10.0
    #: Server: seconds a header block may take from its first frame's header to its end
    #: (HEADERS sent a byte a second, an unfinished block held open): then
    #: GOAWAY(ENHANCE_YOUR_CALM). Generous enough for a slow uplink. None: no limit.
    header_timeout: float | None = 10.0
    #: Server: request bodies must arrive at least this fast (bytes per second, over all
    #: streams of a connection), measured in windows of...
    min_body_rate: float | None = 240.0
    #: ...this many seconds that its handlers spend waiting for body bytes; a slower window
    #: ends the connection with GOAWAY(ENHANCE_YOUR_CALM).
    #: Kestrel's defaults. A CONNECT tunnel is exempt once its handler answered it with a 2xx
    #: (its bytes pause by design), and so is any stream whose handler calls
    #: ``reader.allow_slow_body()`` (gRPC streaming calls should). None (the rate): no minimum.
    body_rate_grace: float = 5.0
    #: Server: seconds without open streams before a graceful GOAWAY and close (None: never).
    idle_timeout: float | None = 300.0
    #: Seconds of silence before we send a keepalive PING (None: no keepalive).
    keepalive_interval: float | None = None
    #: Seconds to wait for a keepalive PING's ACK before closing the connection.
    keepalive_timeout: float = 20.0
    #: Seconds open streams get to finish after a graceful close starts, before they are reset.
    grace: float = 30.0
    #: Seconds a closing connection waits for the peer to read our last frames and close its
    #: side (after a graceful close, or for the transport buffer to drain) before aborting.
    #: After a graceful close, up to the rest of the grace period while the peer's TCP has
    #: not acknowledged everything we sent or the peer sent something in the last ``linger``.
    linger: float = 1.0
    #: Server: seconds ``Server.close()`` gives a connection that has made no request yet
    #: (accepted an instant before, or its TLS handshake under way) to make its first ones
    #: before its GOAWAY (at most the grace period; ``wait_closed()`` waits that long at most
    #: for handshakes under way). None: 0 for ``start_server()``, where an idle connection
    #: is closed at once, and 1 s in :func:`aioh2s.serve`'s workers, whose rolling restarts
    #: close servers under load: a client that opens a connection per request and never
    #: retries is then served instead of refused.
    first_request_wait: float | None = None
    #: Seconds a server handler may keep running after its stream was reset before it is cancelled.
    reset_handler_timeout: float = 1.0
    #: The connection's input buffer: the transport pauses reading once this much waits
    #: unparsed. With what the reader task is still working through, one connection holds
    #: at most about twice this plus two 64 KiB reads of input.
    read_size: int = 128 * KiB
    #: Server: most connections served at once; more are closed on accept. None: derived
    #: from the file-descriptor limit (:func:`default_max_connections`). Above three quarters
    #: of it, connections idle for ``idle_near_cap`` seconds are closed to make room.
    max_connections: int | None = None
    #: Server: bytes all connections together may hold for their peers' requests: decoded
    #: header lists of open streams and unfinished header blocks. (Request bodies are bounded
    #: by flow control per connection instead: culling an honest uploader would be worse.)
    #: At it new streams get REFUSED_STREAM (safe to retry), after ending connections whose
    #: header block stayed unfinished for over 0.25 s if that makes room; a quarter past
    #: it the connections holding the most are ended (GOAWAY ENHANCE_YOUR_CALM). None: no
    #: server-wide budget.
    max_request_memory: int | None = 32 * MiB
    #: Server: seconds without open streams after which a connection may be closed while the
    #: server is near ``max_connections`` (instead of ``idle_timeout``).
    idle_near_cap: float = 2.0
    #: Stream resets (received, or forced by the peer's errors) allowed in a burst...
    max_reset_burst: int = 1000
    #: ...and per second after it (Rapid Reset / MadeYouReset / reset floods): then
    #: GOAWAY(ENHANCE_YOUR_CALM). nghttp2's budget.
    max_reset_rate: float = 33.0
    #: Server: stream resets received over all connections in a burst...
    max_server_reset_burst: int = 2000
    #: ...and per second after it: while overdrawn (no debt is kept), every connection that
    #: reset 20 live streams in the last second or two, and half the streams it opened then,
    #: is ended (GOAWAY ENHANCE_YOUR_CALM).
    max_server_reset_rate: float = 1000.0
    #: Frames that make no progress (empty DATA, PRIORITY, unknown types, tiny WINDOW_UPDATEs)
    #: allowed in a burst...
    max_glitch_burst: int = 10000
    #: ...and per second after it: then GOAWAY(ENHANCE_YOUR_CALM). nghttp2's budget.
    max_glitch_rate: float = 330.0
    #: PING/SETTINGS replies that may pile up unsent while the peer does not read (floods).
    max_queued_control: int = 1000
    #: PING and SETTINGS frames (not ACKs) the peer may send in a burst...
    max_control_burst: int = 200
    #: ...and per second after it, whether or not it reads our replies: then
    #: GOAWAY(ENHANCE_YOUR_CALM). Keepalive and BDP pings stay far below it.
    max_control_rate: float = 20.0
    #: Bytes a header block may reach while HEADERS+CONTINUATION frames are assembled
    #: (CONTINUATION flood); None means twice ``max_header_list_size``.
    max_header_block_size: int | None = None
    #: Server: advertise SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441), so that clients may
    #: send extended CONNECT requests (``:protocol``, e.g. WebSockets over HTTP/2) to the
    #: handler. Without it such a request is malformed: RST_STREAM(PROTOCOL_ERROR). Plain
    #: CONNECT (RFC 9113 §8.5) reaches the handler either way. A client ignores it.
    enable_connect_protocol: bool = False

    def __post_init__(self) -> None:
        if not 16 * KiB <= self.max_frame_size <= 16 * MiB - 1:
            raise ValueError("max_frame_size must be between 16384 and 16777215")
        if not 1 <= self.stream_window <= 2**31 - 1:
            raise ValueError("stream_window must be between 1 and 2**31-1")
        if not self.stream_window <= self.connection_window <= 2**31 - 1:
            raise ValueError("connection_window must be >= stream_window and <= 2**31-1")
        if self.max_concurrent_streams < 1:
            raise ValueError("max_concurrent_streams must be at least 1")
        if not 0 <= self.write_low_water <= self.write_high_water:
            raise ValueError("write_low_water must be between 0 and write_high_water")
        if self.max_header_list_size < 1 * KiB:
            raise ValueError("max_header_list_size must be at least 1024")
        if self.max_header_fields < 16:
            raise ValueError("max_header_fields must be at least 16")
        for name in ("handshake_timeout", "header_timeout", "idle_timeout",
                     "keepalive_interval"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None")
        if self.min_body_rate is not None and not self.min_body_rate > 0:
            raise ValueError("min_body_rate must be a positive number of bytes/s or None")
        if not self.body_rate_grace > 0:
            raise ValueError("body_rate_grace must be a positive number of seconds")
        if not isinstance(self.enable_connect_protocol, bool):
            raise TypeError("enable_connect_protocol must be True or False")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1 (or None for the default)")
        if self.first_request_wait is not None and not self.first_request_wait >= 0:
            raise ValueError("first_request_wait must be a number of seconds >= 0 or None")
        for name in ("keepalive_timeout", "grace", "reset_handler_timeout", "linger",
                     "idle_near_cap"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0")

    @classmethod
    def from_options(cls, config: Config | None = None, **options: Any) -> Config:
        """``config`` (or the defaults) with ``options`` replaced; unknown names raise TypeError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        base = config if config is not None else cls()
        return dataclasses.replace(base, **options) if options else base

    @property
    def first_request_time(self) -> float:
        """``first_request_wait`` in force for a server of our own (None: 0)."""
        return self.first_request_wait or 0.0

    @property
    def header_block_limit(self) -> int:
        """The header block cap in force (see ``max_header_block_size``)."""
        if self.max_header_block_size is not None:
            return self.max_header_block_size
        return 2 * self.max_header_list_size

    @property
    def effective_read_limit(self) -> int:
        """``read_limit`` clamped so a full stream window always trips it (never a hang)."""
        return max(1, min(self.read_limit, self.stream_window // 2))
