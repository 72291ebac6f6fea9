"""aioh2s's h2 subclass (_connection._H2) behaves like stock h2 where it is meant to, and skips
the per-frame repr() when h2's logger is the no-op DummyLogger."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import hyperframe.frame
import pytest

from aioh2s import _h2ext as _connection


def _client_bytes() -> list[bytes]:
    """A client's byte stream: requests, bodies, a reset, frames on closed/reset streams."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    chunks = [c.data_to_send()]
    hdrs = [(":method", "POST"), (":path", "/"), (":scheme", "http"), (":authority", "x")]
    for sid in (1, 3, 5):
        c.send_headers(sid, hdrs)
        c.send_data(sid, b"x" * 1000)
        chunks.append(c.data_to_send())
    c.end_stream(1)
    c.reset_stream(3)
    chunks.append(c.data_to_send())
    # DATA on the reset stream 3 (a stream error for the server), then a PING.
    f = hyperframe.frame.DataFrame(3)
    f.data = b"late"
    chunks.append(f.serialize())
    c.ping(b"12345678")
    chunks.append(c.data_to_send())
    return chunks


def _run(conn: h2.connection.H2Connection) -> tuple[list[str], bytes]:
    conn.initiate_connection()
    out = conn.data_to_send()
    seen = []
    for chunk in _client_bytes():
        for ev in conn.receive_data(chunk):
            seen.append(repr(ev))
        out += conn.data_to_send()
    return seen, out


def test_quiet_receive_matches_stock_h2() -> None:
    assert _connection._QUIET_RECEIVE, "h2 changed: the quiet receive path is off"
    config = h2.config.H2Configuration(client_side=False)
    stock = _run(h2.connection.H2Connection(config=config))
    ours = _run(_connection.H2(config=h2.config.H2Configuration(client_side=False)))
    assert ours == stock
    assert any("StreamReset" in e or "StreamEnded" in e for e in stock[0])


def test_no_frame_repr_with_the_dummy_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = hyperframe.frame.Frame.__repr__

    def counting(self: hyperframe.frame.Frame) -> str:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(hyperframe.frame.Frame, "__repr__", counting)
    _run(_connection.H2(config=h2.config.H2Configuration(client_side=False)))
    assert calls == 0
    # With a real logger, h2's own method runs and logs the (identical) repr.
    config = h2.config.H2Configuration(client_side=False, logger=h2.config.DummyLogger())

    class Recording(h2.config.DummyLogger):
        lines: list[str] = []

        def trace(self, fmt: str, *args: object) -> None:
            self.lines.append(fmt % args)

    config.logger = Recording()
    _run(_connection.H2(config=config))
    assert calls > 0
    assert any(line.startswith("Received frame: ") for line in Recording.lines)
