"""Everything aioh2s does with h2's private API, behind one version guard.

Theory of operation
-------------------
h2 does most of RFC 9113 for us, but not all of it:
graceful GOAWAY, REFUSED_STREAM for excess streams, frame-length and header-block caps
checked early, counting the resets h2 emits by itself, and the cost of a repr() per frame.
Each of those needs h2 internals (``_receive_frame``, ``_receive_goaway_frame``,
``FrameBuffer._data``, ``_closed_streams``, ...), and private names move between releases
(``FrameBuffer.data`` became ``_data`` in 4.3). So every such use lives here:

- :data:`H2_VERSION` / :data:`SUPPORTED` is the one guard: the h2 releases this module was
  checked against. Each override below that copies h2 code additionally checks the source it
  mirrors (``_QUIET_RECEIVE``) and falls back to h2's own method when it differs, so an h2 this
  was not checked against runs slower, never wrong. ``_h2headers`` (the one-pass inbound header
  check) runs its own differential self-check under the same guard.
- :func:`new_h2` builds the ``H2Connection`` subclass with aioh2s's settings and limits.
- :func:`describe` turns an h2 exception into a sentence: several of h2's messages are only a
  stream id (``StreamClosedError(3)`` prints ``3``).

After an h2 upgrade run ``tests/test_h2conn.py`` and ``tests/test_h2headers.py`` first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import h2
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
import hyperframe.frame
from h2.connection import _decode_headers as _h2_decode_headers
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy

from . import _h2headers
from .config import Config

__all__ = ["H2", "H2_VERSION", "SUPPORTED", "GuardedFrameBuffer", "describe", "new_h2"]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


#: The installed h2, as a comparable tuple.
H2_VERSION = _version(h2.__version__)
#: True for the h2 releases the private-API uses here were checked against (4.4).
SUPPORTED = (4, 4) <= H2_VERSION < (5,)



def describe(e: h2.exceptions.H2Error) -> str:
    """h2's exception as a sentence that says what happened."""
    if isinstance(e, h2.exceptions.StreamClosedError):
        return f"the peer sent a frame on stream {e.stream_id}, which is closed"
    if isinstance(e, h2.exceptions.StreamIDTooLowError):
        return (f"the peer opened stream {e.stream_id}, lower than stream {e.max_stream_id} "
                "it had already opened")
    if isinstance(e, h2.exceptions.NoSuchStreamError):
        return f"the peer sent a frame on stream {e.stream_id}, which was never opened"
    if isinstance(e, h2.exceptions.NoAvailableStreamIDError):
        return "no stream ids are left on this connection"
    text = str(e)
    name = type(e).__name__
    if not text or text.isdigit():
        return f"{name} (stream {text})" if text else name
    return text


# Length rules of fixed-size frames (RFC 9113 §6), by frame type: (length, flags) -> valid.
# RST_STREAM and PRIORITY are left to h2: a bad length there is a stream-level matter.
_FIXED_LENGTHS: dict[int, Callable[[int, int], bool]] = {
    0x4: lambda n, flags: n == 0 if flags & 0x1 else n % 6 == 0,  # SETTINGS (ACK: empty)
    0x6: lambda n, flags: n == 8,  # PING
    0x7: lambda n, flags: n >= 8,  # GOAWAY
    0x8: lambda n, flags: n == 4,  # WINDOW_UPDATE
}


class _CompressionError(h2.exceptions.ProtocolError):
    """A header block HPACK could not decode: a connection error of type COMPRESSION_ERROR."""

    error_code = ErrorCodes.COMPRESSION_ERROR


_BLOCK_FRAMES = (hyperframe.frame.HeadersFrame, hyperframe.frame.PushPromiseFrame)


def _check_countable() -> bool:
    """True if hpack's decoder still has the per-field steps BoundedDecoder counts."""
    try:
        src = inspect.getsource(hpack.Decoder.decode)
    except (OSError, TypeError):
        return False
    names = ("_decode_indexed", "_decode_literal_index", "_decode_literal_no_index",
             "_update_encoding_context")
    return all(n in src and callable(getattr(hpack.Decoder, n, None)) for n in names)


#: Without the steps to count (a future hpack), blocks are decoded uncounted: h2's list-size
#: rule and the header block cap still bound them.
_COUNTABLE = _check_countable()


class BoundedDecoder(hpack.Decoder):
    """hpack's decoder with a cap on the work of one header block (a CPU bound).

    h2's list-size rule counts 32 bytes per field, so a 64 KiB list can still hold ~2,000
    fields, and dynamic table size updates count nothing at all: a block of 100,000 of them
    decodes to an empty list at great cost. Here every field and every size update counts
    one, and past ``max_fields`` the block is refused as oversized (h2: GOAWAY
    ENHANCE_YOUR_CALM; the HPACK context is lost mid-block, so it has to be a connection
    error). A block no longer than ``max_fields`` bytes cannot exceed it (each counts at
    least a byte) and takes hpack's own path untouched.

    Cookie crumbs count a quarter each: browsers send every cookie as its own field (RFC 9113
    §8.2.3), and a site with a couple of hundred cookies is not an attack.
    """

    max_fields = 256
    _left = 0
    _COUNTED = ("_decode_indexed", "_decode_literal_index", "_decode_literal_no_index",
                "_update_encoding_context")

    def decode(self, data: Any, raw: bool = False) -> Any:
        """Decode one header block; ``OversizedHeaderListError`` past ``max_fields``."""
        if len(data) <= self.max_fields or not _COUNTABLE:
            return super().decode(data, raw)
        # A long block: counting versions of the per-field steps shadow hpack's methods on
        # this instance for this one call, so short blocks pay nothing for the bound. Units
        # are quarters: a cookie crumb costs one, any other field or size update four.
        self._left = 4 * self.max_fields
        for name in self._COUNTED:
            setattr(self, name, self._counting(getattr(type(self), name).__get__(self)))
        try:
            return super().decode(data, raw)
        finally:
            for name in self._COUNTED:
                delattr(self, name)

    def _counting(self, step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def counted(data: Any) -> Any:
            self._left -= 4
            if self._left < 0:
                raise hpack.OversizedHeaderListError(
                    f"a header block with more than {self.max_fields} fields and table size "
                    "updates (cookie crumbs count a quarter)"
                )
            result = step(data)
            if result.__class__ is tuple and result[0] and result[0][0] == b"cookie":
                self._left += 3
            return result

        return counted


#: What a frame counts in ``GuardedFrameBuffer.frames_left``, by type (others count 1, ~5 us
#: of work): opening a request stream costs ~70 us of CPU, a DATA frame that wakes a
#: handler ~20 us.
HEADERS_WEIGHT = 32
DATA_WEIGHT = 4
_WEIGHTS = {0x0: DATA_WEIGHT, 0x1: HEADERS_WEIGHT}


class GuardedFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer with the checks and bounds it lacks.

    - A frame longer than our SETTINGS_MAX_FRAME_SIZE is rejected as soon as its 9-byte
      header arrives, instead of being buffered whole first.
    - A header block (HEADERS + CONTINUATION) is capped in bytes while it is assembled
      (CONTINUATION flood), not only after.
    - One ``receive_data`` call parses at most ``frames_left`` frames (a work bound).
    - It tells whether a header block is unfinished (``header_pending``, for the header
      timeout) and counts completed ones.
    """

    max_header_block = 2 * 65536
    _first = True
    #: Frames this ``receive_data`` call may still parse. Once spent, iteration stops with the
    #: rest left buffered, so one call's event list (and the work behind it) stays bounded
    #: however small the peer's frames are; ``receive_data(b"")`` continues (see
    #: ``Connection.receive``).
    frames_left = 1 << 62
    #: Header blocks completed so far (tells one unfinished block from the next).
    header_blocks = 0

    def __next__(self) -> Any:
        if self.frames_left <= 0:
            raise StopIteration
        self.frames_left -= 1
        data = self._data
        if len(data) >= 9:
            length = (data[0] << 16) | (data[1] << 8) | data[2]
            ftype = data[3]
            # Frames are weighted by their work (a HEADERS frame: decoding, validation, a
            # new stream and its handler task; DATA: a handler woken), so that turns stay
            # short however many requests a read holds, and many connections busy at once
            # leave the loop to the others sooner (see Connection.receive).
            self.frames_left -= _WEIGHTS.get(ftype, 1) - 1
            if self._first:
                # RFC 9113 §3.4: the preface's first frame must be SETTINGS (this also turns
                # an HTTP/1.1 answer or random bytes into a plain PROTOCOL_ERROR).
                if ftype != 0x4:
                    raise h2.exceptions.ProtocolError(
                        "the connection preface did not start with a SETTINGS frame"
                    )
                self._first = False
            if length > self.max_frame_size:
                raise h2.exceptions.FrameTooLargeError(
                    f"Received overlong frame: length {length}, max {self.max_frame_size}"
                )
            fixed = _FIXED_LENGTHS.get(ftype)
            if fixed is not None and not fixed(length, data[4]):
                # hyperframe reports these as "non-compliant data" (PROTOCOL_ERROR); RFC 9113
                # §6 calls each a FRAME_SIZE_ERROR.
                raise h2.exceptions.FrameDataMissingError(
                    f"frame of type {ftype:#x} has an invalid length {length}"
                )
        return super().__next__()

    def header_pending(self) -> bool:
        """True while a header block is unfinished.

        That is: HEADERS/CONTINUATION frames are being assembled, or one is partly buffered
        (known from its frame header's fourth byte: a DATA frame held up is no header block).
        """
        data = self._data
        return bool(self._headers_buffer) or (len(data) >= 4 and data[3] in (0x1, 0x9))

    def pending_block_size(self) -> int:
        """Bytes of an unfinished header block held: assembled frames plus partial input."""
        return sum(len(f.data) for f in self._headers_buffer) + len(self._data)

    def has_frame(self) -> bool:
        """True if a complete frame is buffered (``receive_data(b"")`` would parse it)."""
        data = self._data
        return len(data) >= 9 and len(data) >= 9 + ((data[0] << 16) | (data[1] << 8) | data[2])

    def _update_header_buffer(self, f: Any) -> Any:
        result = super()._update_header_buffer(f)
        if result is not None and result.__class__ in _BLOCK_FRAMES:
            self.header_blocks += 1
        pending = self._headers_buffer
        if pending and sum(len(x.data) for x in pending) > self.max_header_block:
            raise h2.exceptions.DenialOfServiceError(
                f"header block exceeds {self.max_header_block} bytes while being assembled"
            )
        return result


def _check_quiet_receive() -> bool:
    """True if h2's ``_receive_frame`` is the 4.4 method H2._receive_frame mirrors."""
    try:
        src = inspect.getsource(h2.connection.H2Connection._receive_frame)
    except (OSError, TypeError):
        return False
    needed = ("_frame_dispatch_table[frame.__class__]", "_stream_is_closed_by_reset",
              "_stream_is_closed_by_end", "StreamIDTooLowError", 'trace("Received frame')
    return SUPPORTED and all(n in src for n in needed) and src.count(
        "except") == 2


_QUIET_RECEIVE = _check_quiet_receive()


_RST_FRAME = hyperframe.frame.RstStreamFrame
_RST_SENT_MAX = 4096
_h2_prepare_for_sending = h2.connection.H2Connection._prepare_for_sending


#: A request refused as malformed costs the reset budget one more reset per this many bytes
#: of its header block.
MALFORMED_BYTES_PER_RESET = 64
MALFORMED_MAX_EXTRA = 4  # at most five resets for one request (a sloppy client is no flood)


class H2(h2.connection.H2Connection):
    """h2's connection with what RFC 9113 and a public server need and h2 4.4 lacks.

    - GOAWAY (§6.8): stock h2 moves to CLOSED on a received GOAWAY (dropping queued output and
      refusing every later frame). A *graceful* one (NO_ERROR) must let streams at or below its
      last stream id finish, so here it only raises the event; :meth:`send_graceful_goaway`
      announces one without closing h2's state machine.
    - Excess streams (§5.1.2): h2 answers a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS with
      a connection error; RFC 9113 says REFUSED_STREAM. The header block is still decoded so
      the HPACK state stays in sync.
    - Every RST_STREAM h2 emits by itself (frames on closed streams, flow-control errors,
      refused streams) is counted in ``auto_resets``, so the connection can hold the peer to
      a reset budget (a malformed request weighted by the size of its header block); resets
      the application asks for are not counted.
    """

    auto_resets = 0
    _app_reset = False
    #: How many closed streams h2 remembers (to tell frames on a stream it reset from frames
    #: on one that ended). h2 keeps 65,536: ~7 MB on a long-lived connection. Frames after our
    #: own resets are recognised by ``_rst_sent`` anyway.
    MAX_CLOSED_STREAMS = 1024

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        # Upper bounds of open streams by id parity, and when to prune closed streams next.
        self._upper = [0, 0]
        self._prune_at = 128
        # Streams we sent RST_STREAM on: frames the peer sent before it saw the reset are
        # ignored (RFC 9113 §5.1) instead of answered with one more reset each.
        self._rst_sent: set[int] = set()

    # h2 counts open streams by walking every stream it holds (and prunes closed ones) each
    # time a stream is opened: O(n) per stream, O(n²) for a busy connection, and the biggest
    # cost of a server answering 100 concurrent small requests. h2 only ever asks "would one
    # more exceed the limit?", so an upper bound below the limit answers without a walk; the
    # exact walk (which also prunes) runs near the limit or when the stream table has doubled.

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        self._upper[stream_id % 2] += 1
        if SUPPORTED:
            _h2headers.install(stream)
        return stream

    def _count_open(self, parity: int, limit: int) -> int:
        upper = self._upper[parity]
        if upper < limit and len(self.streams) < self._prune_at:
            return upper
        exact = self._open_streams(parity)
        self._upper[parity] = exact
        self._prune_at = max(128, 2 * len(self.streams))
        return exact

    @property
    def open_inbound_streams(self) -> int:
        """An upper bound of open peer-initiated streams, exact near the limit (see above)."""
        parity = 0 if self.config.client_side else 1
        return self._count_open(parity, self.local_settings.max_concurrent_streams)

    @property
    def open_outbound_streams(self) -> int:
        """An upper bound of open streams we initiated, exact near the limit (see above)."""
        parity = 1 if self.config.client_side else 0
        return self._count_open(parity, self.remote_settings.max_concurrent_streams)

    def _receive_frame(self, frame: Any) -> Any:
        # h2 4.x starts this method with logger.trace("Received frame: %s", repr(frame)): the
        # repr is built for every frame even when the logger is h2's no-op DummyLogger, and it
        # costs more than the rest of the method for small frames. With the DummyLogger (the
        # only logger aioh2s configures) this is h2 4.4's method without that line; with any
        # other logger, or an h2 this was not checked against, it is h2's own method.
        if not _QUIET_RECEIVE or self.config.logger.__class__ is not h2.config.DummyLogger:
            return super()._receive_frame(frame)
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as e:
            if e.stream_id in self._rst_sent:
                # RFC 9113 §5.1: frames still in flight after *our* RST_STREAM are ignored;
                # answering each with another reset only feeds a peer's reset budget.
                events = e._events
            elif self._stream_is_closed_by_reset(e.stream_id):
                f = hyperframe.frame.RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except h2.exceptions.StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = hyperframe.frame.RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise h2.exceptions.StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        ev = h2.events.ConnectionTerminated()
        ev.error_code = ErrorCodes.NO_ERROR
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]

    def _receive_headers_frame(self, frame: Any) -> Any:
        sid = frame.stream_id
        if sid in self._rst_sent:
            # HEADERS the peer sent before it saw our RST_STREAM (1xx responses or trailers
            # in flight): RFC 9113 §5.1 says ignore them. h2's stream state machine would
            # make them a connection error. Decoded all the same, to keep HPACK in sync.
            try:
                _h2_decode_headers(self.decoder, frame.data)
            except h2.exceptions.ProtocolError as e:
                if isinstance(e.__cause__, (hpack.HPACKError, IndexError)):
                    raise _CompressionError(str(e)) from e
                raise
            return [], []
        try:
            return super()._receive_headers_frame(frame)
        except h2.exceptions.TooManyStreamsError:
            # Raised before h2 decoded the block or touched any state: refuse the stream but
            # decode the block, so the HPACK state stays in sync with the peer's encoder.
            sid = frame.stream_id
            if sid in self._closed_streams:
                # More HEADERS (trailers) for a stream we refused or reset, sent before the peer
                # saw our RST: a stream error, as h2 answers it below the limit. Decode first to
                # keep HPACK in sync.
                _h2_decode_headers(self.decoder, frame.data)
                raise h2.exceptions.StreamClosedError(sid) from None
            if sid <= self.highest_inbound_stream_id or sid % 2 == 0 or self.config.client_side:
                raise  # not a new peer stream: let h2's connection error stand
            _h2_decode_headers(self.decoder, frame.data)
            self.highest_inbound_stream_id = sid
            self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM
            rst = hyperframe.frame.RstStreamFrame(sid)
            rst.error_code = ErrorCodes.REFUSED_STREAM
            return [rst], []
        except h2.exceptions.DenialOfServiceError:
            raise
        except _h2headers.MalformedHeaders as e:
            # RFC 9113 §8.1.1: a malformed request or response is a stream error; the block
            # was decoded, so the connection (and every other stream on it) carries on.
            sid = frame.stream_id
            try:
                self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)  # counted in auto_resets
            except h2.exceptions.ProtocolError:
                raise e from None
            # ...and weighted by the decoding it wasted: pure-Python HPACK spends ~9 us a
            # field, so a flood of long malformed blocks (CVE-2019-9516's empty names) would
            # otherwise buy a second of CPU per thousand streams within the reset budget.
            self.auto_resets += min(len(frame.data) // MALFORMED_BYTES_PER_RESET,
                                    MALFORMED_MAX_EXTRA)
            ev = h2.events.StreamReset(stream_id=sid, error_code=ErrorCodes.PROTOCOL_ERROR,
                                       remote_reset=False)
            return [], [ev]
        except h2.exceptions.ProtocolError as e:
            # h2 reports undecodable header blocks as PROTOCOL_ERROR; RFC 9113 §4.3 says
            # COMPRESSION_ERROR (the HPACK context can no longer be trusted).
            if isinstance(e.__cause__, (hpack.HPACKError, IndexError)):
                raise _CompressionError(str(e)) from e
            raise

    def _handle_data_on_closed_stream(self, events: Any, exc: Any, frame: Any) -> Any:
        already_reset = exc.stream_id in self._rst_sent
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if already_reset:
            # Data in flight after our own reset (§5.1): keep the connection window update,
            # drop h2's RST_STREAM reply.
            frames = [f for f in frames if f.__class__ is not _RST_FRAME]
        return frames, events

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        # Runs for every frame batch h2 queues: kept to a plain loop and a direct call.
        for f in frames:
            if f.__class__ is _RST_FRAME:
                if not self._app_reset:
                    self.auto_resets += 1
                sent = self._rst_sent
                if len(sent) >= _RST_SENT_MAX:
                    sent.clear()  # bounded: at worst one more reply to a late frame
                sent.add(f.stream_id)
        _h2_prepare_for_sending(self, frames)

    def app_reset_stream(self, stream_id: int, error_code: int) -> None:
        """``reset_stream`` on the application's behalf (not counted as peer abuse)."""
        self._app_reset = True
        try:
            self.reset_stream(stream_id, error_code)
        finally:
            self._app_reset = False

    def send_graceful_goaway(self, last_stream_id: int) -> None:
        f = hyperframe.frame.GoAwayFrame(0)
        f.last_stream_id = last_stream_id
        f.error_code = ErrorCodes.NO_ERROR
        self._prepare_for_sending([f])


class _Values(list):  # type: ignore[type-arg]
    """A setting's values (current first, then those awaiting ACK), as h2 uses its deque.

    An empty ``collections.deque`` costs ~760 bytes; h2 keeps one per setting per side, ~15 KB
    of each idle connection's ~28 KB. A one-element list costs 64.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def _compact_settings(settings: h2.settings.Settings) -> None:
    values = getattr(settings, "_settings", None)
    if isinstance(values, dict):
        for key, vals in values.items():
            values[key] = _Values(vals)


def new_h2(client: bool, config: Config) -> H2:
    """An H2Connection with our settings, our limits, and without per-frame repr costs."""
    h2config = h2.config.H2Configuration(
        client_side=client,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        # headers.to_wire() checks and normalises what we send, at a fraction of the cost.
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = H2(config=h2config)
    sc = h2.settings.SettingCodes
    initial: dict[Any, int] = {
        sc.MAX_CONCURRENT_STREAMS: config.max_concurrent_streams,
        sc.INITIAL_WINDOW_SIZE: config.stream_window,
        sc.MAX_FRAME_SIZE: config.max_frame_size,
        sc.MAX_HEADER_LIST_SIZE: config.max_header_list_size,
        # RFC 9113 §5.3.2: we do not use RFC 7540 priorities.
        0x9: 1,
    }
    if client:
        # h2's client default is ENABLE_PUSH=1; we never accept pushes.
        initial[sc.ENABLE_PUSH] = 0
    conn.local_settings = h2.settings.Settings(client=client, initial_values=initial)
    conn.max_inbound_frame_size = config.max_frame_size
    buf = GuardedFrameBuffer(server=not client)
    buf.max_frame_size = config.max_frame_size
    buf.max_header_block = config.header_block_limit
    conn.incoming_buffer = buf
    if SUPPORTED:
        _compact_settings(conn.local_settings)
        _compact_settings(conn.remote_settings)
    decoder = BoundedDecoder()
    decoder.max_fields = config.max_header_fields
    decoder.max_header_list_size = config.max_header_list_size
    conn.decoder = decoder
    return conn

