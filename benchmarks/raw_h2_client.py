"""Raw h2 ceiling client: an asyncio.Protocol driving h2.H2Connection directly.

Two modes on one connection:

* ``gets``: N GET requests with at most C in flight (a new one starts as one ends).
* ``download``: one GET of a large body, counted and acknowledged as it arrives.

Received DATA is acknowledged at once; ``data_to_send()`` is written once per
``data_received`` batch.  Prints one JSON line: ``{"seconds": ..., "cpu_seconds": ...,
"requests": ..., "bytes": ...}`` (``cpu_seconds``: this process's CPU time over the same
section as ``seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


class RawH2Client(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace, done: asyncio.Future[None]) -> None:
        self.args = args
        self.done = done
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        if args.h2patch:
            import _h2patch

            self.conn = _h2patch.new_connection(cfg)
        else:
            self.conn = h2.connection.H2Connection(config=cfg)
        self.transport: asyncio.Transport | None = None
        self.authority = f"{args.host}:{args.port}".encode()
        self.headers = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", self.authority),
            (b":path", args.path.encode()),
        ]
        self.to_start = args.n
        self.finished = 0
        self.in_flight = 0
        self.bytes = 0
        self.statuses: dict[bytes, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        c = self.conn
        c.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.args.stream_window,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            },
        )
        c.initiate_connection()
        extra = self.args.connection_window - 65535
        if extra > 0:
            c.increment_flow_control_window(extra)
        self.start_more()
        transport.write(c.data_to_send())

    def start_more(self) -> None:
        c = self.conn
        while self.to_start and self.in_flight < self.args.c:
            c.send_headers(c.get_next_available_stream_id(), self.headers, end_stream=True)
            self.to_start -= 1
            self.in_flight += 1

    def data_received(self, data: bytes) -> None:
        c = self.conn
        for ev in c.receive_data(data):
            t = type(ev)
            if t is h2.events.DataReceived:
                self.bytes += len(ev.data)
                if ev.flow_controlled_length:
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif t is h2.events.ResponseReceived:
                status = dict(ev.headers)[b":status"]
                self.statuses[status] = self.statuses.get(status, 0) + 1
            elif t is h2.events.StreamEnded or t is h2.events.StreamReset:
                self.in_flight -= 1
                self.finished += 1
            elif t is h2.events.ConnectionTerminated:
                if not self.done.done():
                    self.done.set_exception(ConnectionError(f"GOAWAY {ev.error_code!r}"))
        self.start_more()
        assert self.transport is not None
        out = c.data_to_send()
        if out:
            self.transport.write(out)
        if self.finished == self.args.n and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("connection lost"))


async def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/5")
    p.add_argument("-n", type=int, default=5000, help="requests")
    p.add_argument("-c", type=int, default=1, help="concurrency (streams in flight)")
    p.add_argument("--stream-window", type=int, default=16 << 20)
    p.add_argument("--connection-window", type=int, default=64 << 20)
    p.add_argument("--h2patch", action="store_true", help="apply aioh2s._h2patch")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    t0 = time.perf_counter()
    c0 = time.process_time()
    transport, proto = await loop.create_connection(
        lambda: RawH2Client(args, done), args.host, args.port
    )
    try:
        await asyncio.wait_for(done, args.timeout)
    finally:
        transport.close()
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "requests": proto.finished,
        "bytes": proto.bytes,
        "statuses": {k.decode(): v for k, v in proto.statuses.items()},
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    asyncio.run(main())
