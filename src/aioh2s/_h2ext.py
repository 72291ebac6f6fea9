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
- :class:`TracedH2` and :class:`TracedFrameBuffer` hook h2's per-frame methods for the frame
  trace (``aioh2s._trace``); :func:`set_trace` swaps a connection's h2 object and its frame
  buffer to them and back.

After an h2 upgrade run ``tests/test_h2conn.py`` and ``tests/test_h2headers.py`` first.
"""

from __future__ import annotations

import collections
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
import h2.utilities
import h2.windows
import hpack
import hpack.table
import hyperframe.frame
from h2.connection import _decode_headers as _h2_decode_headers
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy

from . import _h2headers
from ._trace import FrameTrace
from .config import Config

__all__ = [
    "H2", "H2_VERSION", "SUPPORTED", "GuardedFrameBuffer", "TracedFrameBuffer", "TracedH2",
    "describe", "new_h2", "set_trace",
]


def _has_port(authority: bytes) -> bool:
    """``host:port`` with a port (``[v6]:port`` too): what a plain CONNECT must name."""
    host, sep, port = authority.rpartition(b":")
    return bool(sep and host and port.isdigit() and not host.endswith(b":")) and (
        b":" not in host or (host.startswith(b"[") and host.endswith(b"]"))
    )


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


#: What a frame counts in ``GuardedFrameBuffer.frames_left`` when weighted, by type, in
#: units of ~4 us of work (measured with h2 4.4 on the benchmark machine): opening a request
#: stream costs ~130 us, a DATA frame that wakes a handler ~20 us, and any other frame
#: (PING and its reply, WINDOW_UPDATE, PRIORITY, a CONTINUATION) 7-16 us.
HEADERS_WEIGHT = 32
DATA_WEIGHT = 4
OTHER_WEIGHT = 3
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
    #: Frames count their weight (``_WEIGHTS``), not one each: a server's small turns.
    weighted = False
    #: Bytes of the header block being assembled (the fragments h2 keeps).
    _block_bytes = 0

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
            if self.weighted:
                self.frames_left -= _WEIGHTS.get(ftype, OTHER_WEIGHT) - 1
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
        return (self._block_bytes if self._headers_buffer else 0) + len(self._data)

    def has_frame(self) -> bool:
        """True if a complete frame is buffered (``receive_data(b"")`` would parse it)."""
        data = self._data
        return len(data) >= 9 and len(data) >= 9 + ((data[0] << 16) | (data[1] << 8) | data[2])

    def _update_header_buffer(self, f: Any) -> Any:
        result = super()._update_header_buffer(f)
        if result is not None and result.__class__ in _BLOCK_FRAMES:
            self.header_blocks += 1
        if self._headers_buffer:
            # h2 kept ``f`` (a block's first HEADERS or a CONTINUATION): a running total,
            # since summing the kept frames at each made a block of tiny frames quadratic.
            self._block_bytes += len(f.data)
            if self._block_bytes > self.max_header_block:
                raise h2.exceptions.DenialOfServiceError(
                    f"header block exceeds {self.max_header_block} bytes while being assembled"
                )
        elif self._block_bytes:
            self._block_bytes = 0
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


# -- what an idle connection holds ------------------------------------------------------------
#
# An idle server connection is mostly h2's and hpack's objects, and most of those are empty
# containers or copies of the same defaults. The pieces below keep h2's behaviour and make
# them shared or built on first use. Each is used only when SUPPORTED and its own self-check
# pass; otherwise h2's objects are kept as they are (more memory, same behaviour).


def _dispatch_names() -> dict[type, str] | None:
    """Frame class -> name of the H2Connection method h2 dispatches it to (None: unknown)."""
    try:
        table = h2.connection.H2Connection()._frame_dispatch_table
        funcs = {cls: getattr(m, "__func__", None) for cls, m in table.items()}
        names = {cls: f.__name__ for cls, f in funcs.items() if f is not None}
    except Exception:  # noqa: BLE001 - any surprise means: leave h2's table alone
        return None
    for f in funcs.values():
        if f is None or getattr(h2.connection.H2Connection, f.__name__, None) is not f:
            return None
    return names


_DISPATCH_NAMES: dict[type, str] = _dispatch_names() or {}
_QUIET_RECEIVE = _QUIET_RECEIVE and bool(_DISPATCH_NAMES)
#: h2's per-connection frame dispatch table (12 bound methods, ~1.2 KB) and closed-stream
#: dict (~300 bytes) are dropped after h2's __init__ and rebuilt on first use.
_LEAN = _QUIET_RECEIVE and isinstance(
    getattr(h2.connection.H2Connection(), "_closed_streams", None), h2.utilities.SizeLimitDict
)


class _OnFirstUse:
    """A per-instance attribute built on first access.

    A non-data descriptor: once built, the value is stored on the instance, whose attribute
    then shadows the descriptor (no cost after the first access).
    """

    def __init__(self, build: Callable[[Any], Any]) -> None:
        self.build = build
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.build(obj)
        return value


def _build_dispatch_table(conn: Any) -> dict[type, Any]:
    return {cls: getattr(conn, name) for cls, name in _DISPATCH_NAMES.items()}


def _build_closed_streams(conn: Any) -> Any:
    return h2.utilities.SizeLimitDict(size_limit=conn.MAX_CLOSED_STREAMS)


_validate_setting = getattr(h2.settings, "_validate_setting", None)
_SHARED_MAX = 256
_SHAREABLE_LEN = 12
SettingCodes = h2.settings.SettingCodes
#: RFC 9113 §6.5.2's settings, RFC 8441's ENABLE_CONNECT_PROTOCOL (8) and RFC 9218's
#: NO_RFC7540_PRIORITIES (9); any other id a peer sends is ignored.
_KNOWN_SETTINGS = frozenset([1, 2, 3, 4, 5, 6, 8, 9])
#: Read-only settings dicts, by content: connections with equal settings share one.
_shared_settings: dict[tuple[Any, ...], dict[Any, Any]] = {}
#: (client, initial values) -> the shared dict of h2's defaults with those values.
_initial_settings: dict[tuple[Any, ...], dict[Any, Any]] = {}


def _share(values: dict[Any, Any]) -> dict[Any, Any]:
    """The shared dict equal to ``values`` (all ints), which becomes it if there is none.

    Only dicts of the settings RFC 9113 defines are shared: anything else is the peer's
    invention (unknown ids are dropped on receipt anyway), and a cache of dicts a peer
    shapes would outlive it.
    """
    if len(values) > _SHAREABLE_LEN or any(k.__class__ is not SettingCodes for k in values):
        return values
    # Key types count: h2 uses SettingCodes members for known settings and ints otherwise.
    key = tuple((k.__class__, k, v) for k, v in values.items())
    shared = _shared_settings.get(key)
    if shared is None:
        if len(_shared_settings) >= _SHARED_MAX:
            _shared_settings.clear()  # bounded: later connections just stop sharing these
        shared = _shared_settings[key] = values
    return shared


class CompactSettings(h2.settings.Settings):
    """h2's ``Settings`` with an int per setting, sharing one dict while nothing changes.

    h2 keeps a deque per setting (current value first, then values awaiting ACK): ~760 bytes
    each, and a connection has two ``Settings`` with ~6 settings each. Here a setting is its
    current value, or a list ``[current, pending...]`` while new values await their ACK
    (``current`` is None for a setting that had no value, as in h2). While every setting is
    settled the dict is a shared read-only one (every connection of a server has the same
    local settings, and most peers send the same SETTINGS): the first change copies it.
    """

    _own = False

    def __init__(
        self, client: bool = True, initial_values: dict[Any, int] | None = None
    ) -> None:
        self._client = client
        key = (client, *((k.__class__, k, v) for k, v in (initial_values or {}).items()))
        values = _initial_settings.get(key)
        if values is None:
            # h2 builds and validates the defaults (and raises what it would raise).
            stock = h2.settings.Settings(client=client, initial_values=initial_values)
            values = _share({k: v[0] for k, v in stock._settings.items()})
            if len(_initial_settings) >= _SHARED_MAX:
                _initial_settings.clear()
            _initial_settings[key] = values
        self._settings: Any = values

    def _owned(self) -> dict[Any, Any]:
        if not self._own:
            self._settings = dict(self._settings)
            self._own = True
        values: dict[Any, Any] = self._settings
        return values

    def acknowledge(self) -> dict[Any, h2.settings.ChangedSetting]:
        """Apply the oldest pending value of each setting (as h2's ``acknowledge``)."""
        changed: dict[Any, h2.settings.ChangedSetting] = {}
        if not self._own:
            return changed  # a shared dict holds no pending values
        values = self._settings
        for k, v in values.items():
            if v.__class__ is list and len(v) > 1:
                old = v.pop(0)
                new = v[0]
                changed[k] = h2.settings.ChangedSetting(k, old, new)
                if len(v) == 1:
                    values[k] = new
        if changed and all(v.__class__ is not list for v in values.values()):
            self._settings = _share(values)
            self._own = False
        return changed

    def __getitem__(self, key: Any) -> int:
        v: Any = self._settings[key]
        if v.__class__ is list:
            v = v[0]
            if v is None:
                raise KeyError  # as h2: pending, never acknowledged
        value: int = v
        return value

    def __setitem__(self, key: Any, value: int) -> None:
        assert _validate_setting is not None
        invalid = _validate_setting(key, value)
        if invalid:
            raise h2.exceptions.InvalidSettingsValueError(
                f"Setting {key} has invalid value {value}", error_code=invalid
            )
        values = self._owned()
        v = values.get(key, _MISSING)
        if v is _MISSING:
            values[key] = [None, value]
        elif v.__class__ is list:
            v.append(value)
        else:
            values[key] = [v, value]

    def __delitem__(self, key: Any) -> None:
        del self._owned()[key]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, h2.settings.Settings):
            return _stacks(self) == _stacks(other)
        return NotImplemented

    __hash__ = h2.settings.Settings.__hash__


_MISSING: Any = object()


def _stacks(settings: h2.settings.Settings) -> dict[Any, list[Any]]:
    return {k: list(v) if isinstance(v, (list, collections.deque)) else [v]
            for k, v in settings._settings.items()}


def _check_settings() -> bool:
    """True if CompactSettings behaves as h2's Settings on a script of their uses."""
    if not SUPPORTED or not callable(_validate_setting):
        return False

    def view(s: h2.settings.Settings) -> list[Any]:
        return [(k, s.get(k)) for k in s]

    def script(cls: type[h2.settings.Settings]) -> list[Any]:
        codes = h2.settings.SettingCodes
        a = cls(client=False, initial_values={codes.MAX_CONCURRENT_STREAMS: 7})
        b = cls(client=False, initial_values={codes.MAX_CONCURRENT_STREAMS: 7})
        out: list[Any] = [view(a), a == b, len(a), a.max_concurrent_streams]
        a.update({4: 1000, 1: 0, 0xF0: 5})
        a[4] = 2000
        out += [view(a), a == b, a.initial_window_size, a.header_table_size]
        for _ in range(3):
            ch = a.acknowledge()
            out.append([(k, c.setting, c.original_value, c.new_value) for k, c in ch.items()])
            out += [view(a), a == b, [type(k) for k in a]]
        del a[0xF0]
        out += [view(a), b.acknowledge(), view(b)]
        try:
            a[4] = 2**31
        except h2.exceptions.InvalidSettingsValueError as e:
            out.append(("invalid", e.error_code))
        out.append(view(a))
        return out

    try:
        return script(CompactSettings) == script(h2.settings.Settings)
    except Exception:  # noqa: BLE001 - any difference: keep h2's own
        return False


_COMPACT_SETTINGS = _check_settings()


class _NoEntries(tuple):  # type: ignore[type-arg]
    """The empty dynamic table of a :class:`LazyTable` (clearing it is a no-op)."""

    __slots__ = ()

    def clear(self) -> None:
        pass

    def __repr__(self) -> str:
        return "deque([])"


_NO_ENTRIES = _NoEntries()


class LazyTable(hpack.table.HeaderTable):
    """hpack's header table without its deque (~760 bytes) until the first entry.

    Every connection has two tables (its encoder's and its decoder's); an idle one uses
    neither. (Built in place of hpack's: changing an existing table's class would turn its
    compact attribute storage into a dict, which costs more than it saves.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.dynamic_entries = _NO_ENTRIES  # type: ignore[assignment]

    def add(self, name: bytes, value: bytes) -> None:
        """Add an entry (hpack's ``add``), creating the deque first."""
        if isinstance(self.dynamic_entries, _NoEntries):
            self.dynamic_entries = collections.deque()
        super().add(name, value)


def _lazy_table(coder: hpack.Encoder | hpack.Decoder) -> None:
    """Give a fresh encoder or decoder a LazyTable."""
    table = coder.header_table
    if (_LAZY_TABLES and table.__class__ is hpack.table.HeaderTable and not table.dynamic_entries
            and table.maxsize == table.DEFAULT_SIZE and not table.resized):
        coder.header_table = LazyTable()


def _check_lazy_tables() -> bool:
    """True if hpack's table only grows in ``add`` and encodes the same with LazyTable."""
    # Names the methods' bytecode uses (inspect.getsource would tokenize them: ms at import).
    mutators = {"append", "appendleft", "extend", "extendleft", "insert", "pop", "popleft",
                "remove", "rotate", "clear", "sort", "reverse"}
    used: dict[str, set[str]] = {}
    for name, member in vars(hpack.table.HeaderTable).items():
        funcs = ([member.fget, member.fset, member.fdel] if isinstance(member, property)
                 else [member])
        for f in funcs:
            code = getattr(f, "__code__", None)
            if code is not None and "dynamic_entries" in code.co_names:
                used.setdefault(name, set()).update(mutators & set(code.co_names))
    if not SUPPORTED or not set().union(*used.values()) <= {"appendleft", "clear", "pop"} or [
        n for n, names in used.items() if "appendleft" in names
    ] != ["add"]:
        return False
    headers = [(b":status", b"200"), (b"x-a", b"1" * 40), (b"x-a", b"1" * 40), (b"x-b", b"2")]
    blocks = []
    for lazy in (False, True):
        enc, dec = hpack.Encoder(), hpack.Decoder()
        if lazy:
            enc.header_table = LazyTable()
            dec.header_table = LazyTable()
        enc.header_table_size = 64
        out = [enc.encode(headers) for _ in range(3)]
        blocks.append((out, [dec.decode(b) for b in out], repr(enc.header_table)))
    return blocks[0] == blocks[1]


_LAZY_TABLES = _check_lazy_tables()

#: hpack's Huffman encoder holds only two module-level tables: one serves every connection.
_HUFFMAN = hpack.Encoder().huffman_coder
_SHARE_HUFFMAN = SUPPORTED and set(vars(_HUFFMAN)) == {
    "huffman_code_list", "huffman_code_list_lengths"
}


def _h2_configuration(client: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client,
        header_encoding=None,
        validate_inbound_headers=True,
        normalize_inbound_headers=True,
        # headers.to_wire() checks and normalises what we send, at a fraction of the cost.
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


#: One h2 configuration per side: h2 only reads it, so every connection shares it.
_H2_CONFIGS = {False: _h2_configuration(False), True: _h2_configuration(True)}


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
    #: Whether this object traces its frames (see :class:`TracedH2`).
    traced = False
    #: How many closed streams h2 remembers (to tell frames on a stream it reset from frames
    #: on one that ended). h2 keeps 65,536: ~7 MB on a long-lived connection. Frames after our
    #: own resets are recognised by ``_rst_sent`` anyway.
    MAX_CLOSED_STREAMS = 1024

    # Upper bounds of open streams by id parity, and when to prune closed streams next.
    # (Class defaults: an idle connection stores none of them.)
    _upper_even = 0
    _upper_odd = 0
    _prune_at = 128
    #: Streams we sent RST_STREAM on: frames the peer sent before it saw the reset are
    #: ignored (RFC 9113 §5.1) instead of answered with one more reset each. The shared empty
    #: frozenset until the first reset: an empty set costs 216 bytes.
    _rst_sent: set[int] | frozenset[int] = frozenset()
    _frame_dispatch_table = _OnFirstUse(_build_dispatch_table)
    _closed_streams = _OnFirstUse(_build_closed_streams)

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        if _LEAN:
            # Built again on first use (see _OnFirstUse): an idle connection needs neither.
            del self._frame_dispatch_table
            del self._closed_streams

    # h2 counts open streams by walking every stream it holds (and prunes closed ones) each
    # time a stream is opened: O(n) per stream, O(n²) for a busy connection, and the biggest
    # cost of a server answering 100 concurrent small requests. h2 only ever asks "would one
    # more exceed the limit?", so an upper bound below the limit answers without a walk; the
    # exact walk (which also prunes) runs near the limit or when the stream table has doubled.

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        if stream_id & 1:
            self._upper_odd += 1
        else:
            self._upper_even += 1
        _h2headers.install(stream)
        return stream

    def _count_open(self, parity: int, limit: int) -> int:
        upper = self._upper_odd if parity else self._upper_even
        if upper < limit and len(self.streams) < self._prune_at:
            return upper
        exact = self._open_streams(parity)
        if parity:
            self._upper_odd = exact
        else:
            self._upper_even = exact
        self._prune_at = max(128, 2 * len(self.streams))
        return exact

    def forget_closed_streams(self) -> None:
        """Drop h2's closed streams now (as stock h2 does each time a stream opens).

        The connection calls this when it has no stream left: otherwise up to ``_prune_at``
        closed streams (~450 bytes each) would stay until the next count near the limit.
        """
        if self.streams:
            self._count_open(0 if self.config.client_side else 1, 0)  # the exact walk
            if not self.streams:
                self.streams = {}  # a dict keeps its size when its entries are removed

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
            # By name rather than through h2's per-connection table of bound methods (~1.2 KB
            # each, see _LEAN); the lookup finds the same methods, overrides included.
            frames, events = getattr(self, _DISPATCH_NAMES[frame.__class__])(frame)
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

    def _receive_naked_continuation(self, frame: Any) -> Any:
        # RFC 9113 §6.10: a CONTINUATION not preceded by HEADERS or CONTINUATION is a
        # connection error of type PROTOCOL_ERROR, whatever the stream's state. h2 asks the
        # stream, and for one it has forgotten answers STREAM_CLOSED.
        raise h2.exceptions.ProtocolError(
            f"CONTINUATION frame on stream {frame.stream_id} without a header block to continue"
        )

    def _receive_settings_frame(self, frame: Any) -> Any:
        # RFC 9113 §6.5.2: unknown settings MUST be ignored. h2 stores every id it is sent
        # (a deque each), so a peer could make one connection hold ~65,000 of them.
        settings = frame.settings
        if any(k not in _KNOWN_SETTINGS for k in settings):
            for k in [k for k in settings if k not in _KNOWN_SETTINGS]:
                del settings[k]
        return super()._receive_settings_frame(frame)

    def _receive_goaway_frame(self, frame: Any) -> Any:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        ev = h2.events.ConnectionTerminated()
        ev.error_code = ErrorCodes.NO_ERROR
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]

    def _receive_headers_frame(self, frame: Any) -> Any:
        try:
            if frame.stream_id in self._rst_sent:
                # HEADERS the peer sent before it saw our RST_STREAM (1xx responses or
                # trailers in flight): RFC 9113 §5.1 says ignore them; h2's stream state
                # machine would make them a connection error. Decoded all the same, to keep
                # HPACK in sync (an undecodable block is mapped below like any other).
                _h2_decode_headers(self.decoder, frame.data)
                return [], []
            frames, events = super()._receive_headers_frame(frame)
            why = self._tunnel_rules(events)
            if why is not None:
                raise _h2headers.MalformedHeaders(why)
            return frames, events
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

    def _tunnel_rules(self, events: list[Any]) -> str | None:
        """CONNECT's rules h2 does not apply; why a request breaks them (None: it does not).

        h2 checks the pseudo-headers of both kinds (plain CONNECT without ``:scheme`` and
        ``:path``, extended CONNECT with them, ``:protocol`` only on CONNECT) but not that a
        plain CONNECT names its target in ``:authority`` (RFC 9113 §8.5: a Host field does not
        do), nor that ``:protocol`` needs our SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3).
        (Content-Length on CONNECT is ``_h2headers.CheckedStream``'s business.)
        """
        for ev in events:
            cls = ev.__class__
            if cls is h2.events.RequestReceived:
                method = protocol = authority = None
                for n, v in ev.headers:
                    if n[0] != 0x3A:  # pseudo-headers come first (h2 checked it)
                        break
                    if n == b":method":
                        method = v
                    elif n == b":protocol":
                        protocol = v
                    elif n == b":authority":
                        authority = v
                if method != b"CONNECT":
                    return None  # (h2 refused a :protocol on any other method)
                if protocol is not None:
                    if not self.local_settings.enable_connect_protocol:
                        return ("an extended CONNECT (:protocol) although we did not send"
                                " SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3)")
                    if not protocol:
                        return "an empty :protocol (RFC 8441 §4)"
                elif not authority:
                    return "a CONNECT request without :authority (RFC 9113 §8.5)"
                elif not _has_port(authority):
                    return "a CONNECT request whose :authority has no port (RFC 9113 §8.5)"
        return None

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
                if isinstance(sent, frozenset):
                    sent = self._rst_sent = set()
                elif len(sent) >= _RST_SENT_MAX:
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


class TracedFrameBuffer(GuardedFrameBuffer):
    """A :class:`GuardedFrameBuffer` that reports every frame it parses to its ``trace``.

    The receive half of the frame trace lives here rather than in ``_receive_frame``: h2's
    buffer merges a header block's CONTINUATION frames into its HEADERS (or PUSH_PROMISE)
    frame before h2 sees it, so from there a CONTINUATION was never traced and the HEADERS
    line showed the merged flags. ``_update_header_buffer`` is where each parsed frame
    passes, one by one, before that merge. The length comes from the frame's 9-byte header,
    read in ``__next__`` (hyperframe's ``body_len`` of a padded HEADERS frame is one short:
    it leaves out the Pad Length byte). Swapped in with :class:`TracedH2` (``set_trace``).
    """

    trace: FrameTrace
    _wire_length = 0  # payload length of the frame being parsed, from its header

    def __next__(self) -> Any:
        data = self._data
        if len(data) >= 9:
            # Parsed again here (the guard above parses it too) only while tracing.
            self._wire_length = (data[0] << 16) | (data[1] << 8) | data[2]
        return super().__next__()

    def _update_header_buffer(self, f: Any) -> Any:
        # Called for each frame right after it is parsed, before the next one's __next__.
        self.trace.received(f, self._wire_length)
        return super()._update_header_buffer(f)


class TracedH2(H2):
    """An :class:`H2` that reports every frame it queues to its ``trace``.

    A connection's h2 object becomes one (its class is swapped, see :func:`set_trace`) only
    while the frame trace is on, so that an untraced connection pays nothing per frame.
    Received frames are reported by its frame buffer (:class:`TracedFrameBuffer`), sent ones
    once serialized (so their lengths are known). h2 writes two SETTINGS frames straight
    into its output instead of through ``_prepare_for_sending``: the connection preface's
    (``initiate_connection``, also called for an h2c upgrade), reported here from the
    settings h2 put into it.
    """

    traced = True
    trace: FrameTrace

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        super()._prepare_for_sending(frames)
        self.trace.sent(frames)

    def initiate_connection(self) -> None:
        super().initiate_connection()
        f = hyperframe.frame.SettingsFrame(0)
        for setting, value in self.local_settings.items():
            f.settings[setting] = value
        f.body_len = 6 * len(f.settings)
        self.trace.sent([f])


def set_trace(conn: H2, trace: FrameTrace | None) -> None:
    """Start (``trace``) or stop (None) tracing the frames of ``conn``.

    The h2 object's class is swapped, and so is its frame buffer's (which reports received
    frames). Each pair of classes has the same layout (the traced ones add no slots), so
    the swap is safe at any point between two h2 calls.
    """
    buf = conn.incoming_buffer
    if trace is None:
        conn.__class__ = H2
        conn.__dict__.pop("trace", None)
        if isinstance(buf, TracedFrameBuffer):
            buf.__class__ = GuardedFrameBuffer  # type: ignore[assignment]
            buf.__dict__.pop("trace", None)
            buf.__dict__.pop("_wire_length", None)
    else:
        conn.trace = trace  # type: ignore[attr-defined]
        conn.__class__ = TracedH2
        if isinstance(buf, GuardedFrameBuffer):
            buf.trace = trace  # type: ignore[attr-defined]
            buf.__class__ = TracedFrameBuffer


def _initial_values(client: bool, config: Config) -> dict[Any, int]:
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
    elif config.enable_connect_protocol:
        initial[sc.ENABLE_CONNECT_PROTOCOL] = 1  # RFC 8441 §3
    return initial


def _stock_h2(client: bool, config: Config) -> H2:
    """h2's __init__, then our settings, buffer and decoder in place of h2's."""
    conn = H2(config=_H2_CONFIGS[client])
    initial = _initial_values(client, config)
    if _COMPACT_SETTINGS:
        conn.local_settings = CompactSettings(client=client, initial_values=initial)
        conn.remote_settings = CompactSettings(client=not client)
    else:
        conn.local_settings = h2.settings.Settings(client=client, initial_values=initial)
    conn.incoming_buffer = GuardedFrameBuffer(server=not client)
    conn.decoder = BoundedDecoder()
    return conn


#: The connection window h2's __init__ starts from (RFC 9113 §6.9.2: 65,535).
_H2_CONNECTION_WINDOW = h2.connection.H2Connection().local_settings.initial_window_size


def _fresh_h2(client: bool, config: Config) -> H2:
    """What ``_stock_h2`` builds, without building (and dropping) h2's own parts first.

    h2's validating ``Settings``, built and replaced, were most of the CPU an accepted
    connection spent in h2's __init__. Used only if ``_check_fresh`` found the two equal.
    """
    conn = H2.__new__(H2)
    conn.state_machine = h2.connection.H2ConnectionStateMachine()
    conn.streams = {}
    conn.highest_inbound_stream_id = 0
    conn.highest_outbound_stream_id = 0
    conn.encoder = hpack.Encoder()
    conn.decoder = BoundedDecoder()
    conn.config = _H2_CONFIGS[client]
    conn.local_settings = CompactSettings(client, _initial_values(client, config))
    remote = conn.remote_settings = CompactSettings(not client)
    conn.outbound_flow_control_window = remote.initial_window_size
    conn.max_outbound_frame_size = remote.max_frame_size
    conn.max_inbound_frame_size = config.max_frame_size  # set by new_h2 anyway
    conn.incoming_buffer = GuardedFrameBuffer(server=not client)
    conn._header_frames = []
    conn._data_to_send = bytearray()
    conn._inbound_flow_control_window_manager = h2.windows.WindowManager(
        max_window_size=_H2_CONNECTION_WINDOW
    )
    return conn


def _shape(obj: Any, depth: int = 3) -> Any:
    """A comparable summary of an object's state, ``depth`` attribute levels deep."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, bytearray, type)):
        return obj
    if isinstance(obj, (list, tuple, collections.deque)):
        return (type(obj), [_shape(x, depth - 1) for x in obj] if depth else len(obj))
    if isinstance(obj, dict):
        return (type(obj), sorted((repr(k), _shape(v, depth - 1)) for k, v in obj.items())
                if depth else len(obj))
    state = getattr(obj, "__dict__", None)
    if state is None or not depth or isinstance(obj, h2.config.H2Configuration):
        return type(obj)
    return (type(obj), sorted((k, _shape(v, depth - 1)) for k, v in state.items()))


def _check_fresh() -> bool:
    """True if ``_fresh_h2`` builds what ``_stock_h2`` does.

    An h2 whose __init__ changed in any way this can see gets the stock path.
    """
    if not (_LEAN and _COMPACT_SETTINGS and hasattr(h2.connection, "H2ConnectionStateMachine")):
        return False
    try:
        cfg = Config()
        for client in (False, True):
            stock, fresh = _stock_h2(client, cfg), _fresh_h2(client, cfg)
            stock.max_inbound_frame_size = cfg.max_frame_size
            if _shape(stock) != _shape(fresh):
                return False
            for c in (stock, fresh):
                c.initiate_connection()
            if stock.data_to_send() != fresh.data_to_send():
                return False
    except Exception:  # noqa: BLE001 - any surprise: the stock path
        return False
    return True


_FAST_INIT = _check_fresh()


def new_h2(client: bool, config: Config) -> H2:
    """An H2Connection with our settings, our limits, and without per-frame repr costs."""
    conn = _fresh_h2(client, config) if _FAST_INIT else _stock_h2(client, config)
    conn.max_inbound_frame_size = config.max_frame_size
    buf = conn.incoming_buffer
    buf.max_frame_size = config.max_frame_size
    buf.max_header_block = config.header_block_limit  # type: ignore[attr-defined]
    decoder = conn.decoder
    decoder.max_fields = config.max_header_fields  # type: ignore[attr-defined]
    decoder.max_header_list_size = config.max_header_list_size
    _lazy_table(decoder)
    encoder = conn.encoder
    _lazy_table(encoder)
    if _SHARE_HUFFMAN and encoder.huffman_coder.__class__ is _HUFFMAN.__class__:
        encoder.huffman_coder = _HUFFMAN
    return conn
