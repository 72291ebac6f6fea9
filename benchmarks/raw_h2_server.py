"""Raw h2 ceiling server: an asyncio.Protocol driving h2.H2Connection directly.

This is the yardstick for every h2-based server: no streams API, no tasks, no queues.
Routes: ``GET /5`` -> 5-byte body, ``GET /1m`` -> 1 MiB body, ``POST *`` -> read the body
(acknowledging it at once), answer 200 with a small body, ``GET /_mem`` -> JSON memory
stats (used by memory.py). Anything else -> 404.

It still does what an honest server must: respects the peer's flow-control windows
(round-robin over streams with queued data), stops sending while the transport is
paused, and writes ``data_to_send()`` once per ``data_received`` batch.

Prints ``LISTENING <port>`` on stdout once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tracemalloc

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

BODY_5 = b"hello"
BODY_1M = b"x" * (1 << 20)


_last_snapshot: list[tracemalloc.Snapshot] = []


def mem_stats(diff: bool = False) -> bytes:
    """JSON with tracemalloc current bytes (if tracing) and RSS bytes.

    With ``diff``, also the top allocation sites grown since the previous ``diff`` call.
    """
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    out: dict[str, object] = {"traced": traced, "rss": rss}
    if diff and tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        if _last_snapshot:
            stats = snap.compare_to(_last_snapshot[0], "lineno")[:15]
            out["top"] = [
                f"{s.size_diff:>10} B {s.count_diff:>7} blocks  {s.traceback[0]}" for s in stats
            ]
        _last_snapshot[:] = [snap]
    return json.dumps(out).encode()


class RawH2Server(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cfg = h2.config.H2Configuration(client_side=False, header_encoding=None)
        if args.h2patch:
            import _h2patch

            self.conn = _h2patch.new_connection(cfg)
        else:
            self.conn = h2.connection.H2Connection(config=cfg)
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[bytes, bytes]] = {}  # stream id -> (method, path)
        self.pending: dict[int, tuple[memoryview, int]] = {}  # stream id -> (body, offset)
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        c = self.conn
        c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.args.max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.args.stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        c.initiate_connection()
        extra = self.args.connection_window - 65535
        if extra > 0:
            c.increment_flow_control_window(extra)
        transport.write(c.data_to_send())

    def data_received(self, data: bytes) -> None:
        c = self.conn
        try:
            events = c.receive_data(data)
        except h2.exceptions.ProtocolError:
            assert self.transport is not None
            self.transport.write(c.data_to_send())
            self.transport.close()
            return
        for ev in events:
            t = type(ev)
            if t is h2.events.RequestReceived:
                hdrs = dict(ev.headers)
                self.requests[ev.stream_id] = (hdrs[b":method"], hdrs[b":path"])
            elif t is h2.events.DataReceived:
                if ev.flow_controlled_length:
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif t is h2.events.StreamEnded:
                self.respond(ev.stream_id)
            elif t is h2.events.StreamReset:
                self.requests.pop(ev.stream_id, None)
                self.pending.pop(ev.stream_id, None)
            elif t is h2.events.ConnectionTerminated:
                assert self.transport is not None
                self.transport.write(c.data_to_send())
                self.transport.close()
                return
        if self.pending:
            self.pump()
        out = c.data_to_send()
        if out:
            assert self.transport is not None
            self.transport.write(out)

    def respond(self, stream_id: int) -> None:
        method, path = self.requests.pop(stream_id, (b"GET", b"/"))
        c = self.conn
        if method == b"POST":
            body: bytes = b"ok"
        elif path == b"/5":
            body = BODY_5
        elif path == b"/1m":
            body = BODY_1M
        elif path == b"/_mem":
            body = mem_stats()
        elif path == b"/_memdiff":
            body = mem_stats(diff=True)
        else:
            c.send_headers(stream_id, [(b":status", b"404")], end_stream=True)
            return
        c.send_headers(
            stream_id, [(b":status", b"200"), (b"content-length", str(len(body)).encode())]
        )
        if len(body) <= c.max_outbound_frame_size and c.local_flow_control_window(stream_id) >= len(
            body
        ):
            c.send_data(stream_id, body, end_stream=True)
        else:
            self.pending[stream_id] = (memoryview(body), 0)

    def pump(self) -> None:
        """Send queued bodies round-robin, as far as windows and the transport allow."""
        c = self.conn
        frame = c.max_outbound_frame_size
        while self.pending and not self.paused:
            progressed = False
            for sid in list(self.pending):
                body, off = self.pending[sid]
                window = c.local_flow_control_window(sid)
                n = min(window, frame, len(body) - off)
                if n <= 0:
                    continue
                end = off + n == len(body)
                c.send_data(sid, body[off : off + n], end_stream=end)
                progressed = True
                if end:
                    del self.pending[sid]
                else:
                    self.pending[sid] = (body, off + n)
            if not progressed:
                break
            # Bound what one pass queues: let the transport push back.
            if len(c._data_to_send) > 1 << 20:  # noqa: SLF001
                assert self.transport is not None
                self.transport.write(c.data_to_send())

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pending.clear()


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-streams", type=int, default=1000)
    p.add_argument("--stream-window", type=int, default=1 << 20)
    p.add_argument("--connection-window", type=int, default=16 << 20)
    p.add_argument("--h2patch", action="store_true", help="apply aioh2s._h2patch")
    p.add_argument("--tracemalloc", action="store_true")
    p.add_argument("--lifetime", type=float, default=600.0, help="exit after this many s")
    args = p.parse_args(argv)
    if args.tracemalloc:
        tracemalloc.start()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawH2Server(args), args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), args.lifetime)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
