"""benchmarks/_h2patch (used by the raw-h2 benchmark peers only): same logs and events as stock
h2, without O(payload) frame reprs."""

from __future__ import annotations

import io
import logging
import pathlib
import re
import sys

import h2
import h2.config
import h2.connection
import h2.events
import h2.frame_buffer
import hyperframe.frame as hf
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))
import _h2patch  # noqa: E402


class TraceLogger:
    """The logger interface h2 calls (``debug`` and ``trace``), backed by ``logging``."""

    TRACE = 5

    def __init__(self, name: str, stream: io.StringIO) -> None:
        self.log = logging.getLogger(name)
        self.log.propagate = False
        self.log.setLevel(self.TRACE)
        self.log.handlers[:] = [logging.StreamHandler(stream)]

    def debug(self, fmt: str, *args: object) -> None:
        self.log.debug(fmt, *args)

    def trace(self, fmt: str, *args: object) -> None:
        self.log.log(self.TRACE, fmt, *args)


def client_bytes() -> bytes:
    """What a client sends: headers (with CONTINUATION), DATA of many shapes, an unknown frame."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
    big = [(":method", "POST"), (":path", "/up"), (":scheme", "http"), (":authority", "x")]
    # A header block larger than one frame: h2 splits it into HEADERS + CONTINUATION.
    big += [(f"x-h{i}", "v" * 400) for i in range(60)]
    c.send_headers(1, big)
    c.send_data(1, b"")
    c.send_data(1, b"a")
    c.send_data(1, b"0123456789")
    c.send_data(1, b"0123456789A")
    c.send_data(1, b"z" * 16384)
    c.send_data(1, b"p" * 1000, pad_length=7)
    c.send_data(1, b"q" * 3, pad_length=200)
    c.send_data(1, b"r" * 12000, pad_length=0)
    c.send_headers(3, big[:4], end_stream=True)
    c.send_data(1, b"", end_stream=True)
    out = c.data_to_send()
    unknown = hf.ExtensionFrame(0xFA, 0, flag_byte=5, body=b"u" * 5000).serialize()
    return bytes(out) + unknown


def server_pair(logger: object, patched: bool) -> h2.connection.H2Connection:
    cfg = h2.config.H2Configuration(client_side=False, logger=logger)  # type: ignore[arg-type]
    conn = h2.connection.H2Connection(config=cfg)
    # A big receive window so every DATA frame above is accepted.
    conn.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}
    )
    if patched:
        assert _h2patch.install(conn)
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 24)
    return conn


def no_ids(text: str) -> str:
    """h2's debug lines show object ids (``<... at 0x7f...>``), different per run."""
    return re.sub(r" at 0x[0-9a-f]+", " at 0x?", text)


def feed(conn: h2.connection.H2Connection, data: bytes, step: int) -> list[str]:
    events = []
    for i in range(0, len(data), step):
        events += [repr(e) for e in conn.receive_data(data[i : i + step])]
    return events


def test_supported_on_installed_h2() -> None:
    assert _h2patch.supported(), (h2.__version__,)


@pytest.mark.parametrize("step", [7, 4096, 1 << 20])
def test_output_logger_text_identical(step: int) -> None:
    data = client_bytes()
    outs, events = [], []
    for patched in (False, True):
        buf = io.StringIO()
        logger = h2.config.OutputLogger(file=buf, trace_level=True)
        conn = server_pair(logger, patched)
        events.append(feed(conn, data, step))
        outs.append(no_ids(buf.getvalue()))
    assert outs[0] == outs[1]
    assert events[0] == events[1]
    # The comparison covers what matters: payload frames were logged (truncated hex)...
    assert (
        "Received frame: DataFrame(stream_id=1, flags=[]): <hex:7a7a7a7a7a7a7a7a7a7a...>" in outs[1]
    )
    assert "Received frame: ExtensionFrame(" in outs[1]
    assert "Received frame: HeadersFrame(stream_id=1, flags=['END_HEADERS'])" in outs[1]
    assert outs[1].count("Received frame: DataFrame(") == 9


def test_logging_logger_text_identical() -> None:
    data = client_bytes()
    outs = []
    for patched in (False, True):
        buf = io.StringIO()
        conn = server_pair(TraceLogger(f"h2patch-test-{patched}", buf), patched)
        feed(conn, data, 1000)
        outs.append(no_ids(buf.getvalue()))
    assert outs[0] == outs[1]
    assert "Received frame: DataFrame(stream_id=1, flags=['PADDED'])" in outs[1]


def test_frames_keep_their_type_and_name() -> None:
    conn = server_pair(None, patched=True)
    seen: list[hf.Frame] = []
    stock_dispatch = dict(conn._frame_dispatch_table)
    for cls in list(conn._frame_dispatch_table):
        handler = conn._frame_dispatch_table[cls]

        def spy(frame: hf.Frame, _h: object = handler) -> object:
            seen.append(frame)
            return _h(frame)  # type: ignore[operator]

        conn._frame_dispatch_table[cls] = spy
    feed(conn, client_bytes(), 1 << 20)
    data_frames = [f for f in seen if isinstance(f, hf.DataFrame)]
    assert len(data_frames) == 9
    for f in seen:
        assert type(f).__name__ in {c.__name__ for c in stock_dispatch}
    # Large payloads are re-classed (same name) with the payload untouched; small ones,
    # whose stock repr is cheap, are left alone.
    big = [f for f in data_frames if len(f.data) > 256]
    assert len(big) == 3
    assert all(type(f) is not hf.DataFrame for f in big)
    assert all(type(f) is hf.DataFrame for f in data_frames if f not in big)
    assert data_frames[4].data == b"z" * 16384


class _Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0


def count_payload_reprs(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    """Count hyperframe's O(n) repr helpers and the bytes they would hex-encode."""
    counter = _Counter()
    stock_raw = hf._raw_data_repr
    stock_serialize = hf.DataFrame.serialize_body

    def raw(data: bytes | None) -> str:
        counter.calls += 1
        counter.bytes += len(data or b"")
        return stock_raw(data)

    def serialize_body(self: hf.DataFrame) -> bytes:
        counter.calls += 1
        counter.bytes += len(self.data)
        return stock_serialize(self)

    monkeypatch.setattr(hf, "_raw_data_repr", raw)
    monkeypatch.setattr(hf.DataFrame, "serialize_body", serialize_body)
    return counter


def upload_bytes(total: int) -> bytes:
    """A client's preface, one POST and ``total`` bytes of DATA in 16 KiB frames."""
    server = server_pair(None, patched=False)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.receive_data(server.data_to_send())  # the 1 MiB stream window and 16 MiB connection one
    c.send_headers(
        1, [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    )
    chunk = b"d" * 16384
    for _ in range(total // len(chunk)):
        c.send_data(1, chunk)
    return bytes(c.data_to_send())


def test_logging_off_no_payload_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    data = upload_bytes(1 << 20)
    received = []
    # Control: stock h2 with logging off still hex-encodes every DATA payload.
    conn = server_pair(None, patched=False)
    stock = count_payload_reprs(monkeypatch)
    received.append(feed(conn, data, 65536))
    monkeypatch.undo()
    assert stock.bytes >= 2 * (1 << 20)  # serialize_body + _raw_data_repr, 1 MiB each

    conn = server_pair(None, patched=True)
    quiet = count_payload_reprs(monkeypatch)
    received.append(feed(conn, data, 65536))
    monkeypatch.undo()
    frames = (1 << 20) // 16384
    assert received[0] == received[1]
    assert sum("DataReceived" in e for e in received[1]) == frames
    # At most 11 bytes per DATA frame reach the repr helpers, whatever the payload size
    # (plus the small HEADERS frame's header block, under 256 bytes).
    assert quiet.bytes <= 2 * 11 * frames + 256
    assert stock.bytes > 100 * quiet.bytes


def test_unknown_h2_version_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2, "__version__", "5.0.0")
    _h2patch.supported.cache_clear()
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        before = dict(conn._frame_dispatch_table)
        assert _h2patch.install(conn) is False
        assert "_receive_frame" not in conn.__dict__
        assert conn._frame_dispatch_table == before
        assert "_receive_frame" not in _h2patch.new_connection(conn.config).__dict__
    finally:
        monkeypatch.undo()
        _h2patch.supported.cache_clear()
    assert _h2patch.supported()


def test_changed_repr_format_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    # A hyperframe whose repr shows more than a 10-byte prefix: the self-check must notice
    # that the cut payload would change the text, and refuse.
    def wide(data: bytes | None) -> str:
        return "<" + (data or b"").hex()[:40] + ">"

    monkeypatch.setattr(hf, "_raw_data_repr", wide)
    _h2patch.supported.cache_clear()
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        assert _h2patch.install(conn) is False
    finally:
        monkeypatch.undo()
        _h2patch.supported.cache_clear()


def test_missing_private_attributes_fall_back() -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    del conn._frame_dispatch_table
    assert _h2patch.install(conn) is False
    assert "_receive_frame" not in conn.__dict__


def test_install_is_idempotent_and_keeps_buffered_state() -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    data = client_bytes()
    # Half of the preface arrives before install: buffered state must survive.
    assert conn.receive_data(data[:10]) == []
    assert _h2patch.install(conn)
    wrapper = conn.__dict__["_receive_frame"]
    assert _h2patch.install(conn)
    assert conn.__dict__["_receive_frame"] is wrapper  # not wrapped twice
    events = conn.receive_data(data[10:])
    assert any(isinstance(e, h2.events.RequestReceived) for e in events)


def test_only_this_connection_is_touched() -> None:
    patched = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    other = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    assert _h2patch.install(patched)
    assert "_receive_frame" not in other.__dict__
    assert h2.connection.H2Connection._receive_frame is not patched._receive_frame
    assert set(other._frame_dispatch_table) == set(
        h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False)
        )._frame_dispatch_table
    )


def test_subclasses_keep_working() -> None:
    """A FrameBuffer subclass and an H2Connection subclass overriding _receive_frame."""

    class MyBuffer(h2.frame_buffer.FrameBuffer):
        seen = 0

        def __next__(self) -> hf.Frame:
            f = super().__next__()
            MyBuffer.seen += 1
            return f

    class MyConn(h2.connection.H2Connection):
        received: list[str] = []

        def _receive_frame(self, frame: hf.Frame) -> list[h2.events.Event]:
            self.received.append(type(frame).__name__)
            return super()._receive_frame(frame)

    buf = io.StringIO()
    logger = h2.config.OutputLogger(file=buf, trace_level=True)
    conn = MyConn(h2.config.H2Configuration(client_side=False, logger=logger))
    conn.incoming_buffer = MyBuffer(server=True)
    conn.incoming_buffer.max_frame_size = 16384
    conn.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}
    )
    assert _h2patch.install(conn)
    conn.initiate_connection()
    conn.increment_flow_control_window(1 << 24)
    conn.receive_data(client_bytes())
    assert MyBuffer.seen > 10
    assert MyConn.received.count("DataFrame") == 9
    assert "Received frame: DataFrame(stream_id=1, flags=[]): <hex:7a7a7a7a7a7a7a7a7a7a...>" in (
        buf.getvalue()
    )
