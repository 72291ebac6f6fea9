"""Server memory per idle open stream and per idle connection.

Starts a benchmark server (``aioh2s_server.py`` or ``raw_h2_server.py``) in a child
process, then from this process:

1. asks ``GET /_mem`` for a baseline (tracemalloc's current bytes and RSS);
2. either opens N streams on one connection (HEADERS without END_STREAM, path ``/idle``),
   sends a PING and waits for its ACK, so the server has processed every HEADERS frame,
   or opens M connections that each finish the handshake (preface, SETTINGS both ways,
   PING answered) and stay idle;
3. waits a moment for handler tasks to start and block and asks ``/_mem`` again: the delta
   over N (or M) is the cost of one idle open stream (or connection).

Every sample gets a fresh server process.

The load side writes frames with hpack/hyperframe directly: an h2 client would spend
O(n^2) in ``H2Connection._open_streams`` counting its own 10,000 streams.

Two passes per server: one with ``tracemalloc`` in the server (precise Python heap bytes,
excluding kernel socket buffers; 2,000 streams by default because h2 spends O(open
streams) per new stream and tracemalloc slows that 5x), one without it with the full
10,000 streams (RSS delta; tracemalloc's bookkeeping would inflate RSS).  Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hpack
from hyperframe.frame import HeadersFrame, PingFrame, SettingsFrame, WindowUpdateFrame

HERE = Path(__file__).resolve().parent
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PING_ACK = 0x6, 0x1


class Wire:
    """A minimal HTTP/2 client on asyncio streams: just enough to hold streams open."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.next_id = 1

    @classmethod
    async def open(cls, host: str, port: int) -> Wire:
        r, w = await asyncio.open_connection(host, port)
        self = cls(r, w)
        settings = SettingsFrame(0, settings={0x2: 0, 0x4: 1 << 20})
        w.write(PREFACE + settings.serialize())
        return self

    async def read_frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        body = await self.reader.readexactly(length) if length else b""
        sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        if head[3] == 0x4 and not head[4] & 0x1:  # SETTINGS: acknowledge it
            self.writer.write(SettingsFrame(0, flags=["ACK"]).serialize())
        return head[3], head[4], sid, body

    async def ping_pong(self, timeout: float) -> list[tuple[int, int, int, bytes]]:
        """Send a PING, return the frames read until its ACK (the server is caught up)."""
        self.writer.write(PingFrame(0, b"memcheck").serialize())
        frames = []

        async def until_ack() -> None:
            while True:
                f = await self.read_frame()
                frames.append(f)
                if f[:2] == PING_ACK:
                    return

        await asyncio.wait_for(until_ack(), timeout)
        return frames

    def open_streams(self, n: int, authority: bytes) -> None:
        for _ in range(n):
            block = self.encoder.encode(
                [
                    (b":method", b"POST"),
                    (b":scheme", b"http"),
                    (b":authority", authority),
                    (b":path", b"/idle"),
                ]
            )
            f = HeadersFrame(self.next_id, block, flags=["END_HEADERS"])
            self.writer.write(f.serialize())
            self.next_id += 2

    async def get(self, path: bytes, authority: bytes, timeout: float) -> bytes:
        sid = self.next_id
        self.next_id += 2
        block = self.encoder.encode(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", authority),
                (b":path", path),
            ]
        )
        self.writer.write(HeadersFrame(sid, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        body = b""

        async def until_end() -> None:
            nonlocal body
            while True:
                typ, flags, fsid, payload = await self.read_frame()
                if fsid != sid:
                    continue
                if typ == 0x0:
                    body += payload
                    if payload:
                        self.writer.write(
                            WindowUpdateFrame(sid, window_increment=len(payload)).serialize()
                        )
                        self.writer.write(
                            WindowUpdateFrame(0, window_increment=len(payload)).serialize()
                        )
                elif typ == 0x1:
                    self.decoder.decode(payload)
                if flags & 0x1 and typ in (0x0, 0x1):
                    return
                if typ == 0x3:
                    raise ConnectionError(f"stream {sid} reset")

        await asyncio.wait_for(until_end(), timeout)
        return body

    def close(self) -> None:
        self.writer.close()


async def measure(port: int, what: str, n: int, settle: float, top: bool) -> dict[str, Any]:
    """Open ``n`` idle streams (``what="stream"``) or connections; return the deltas."""
    host = "127.0.0.1"
    authority = f"{host}:{port}".encode()
    ctl = await Wire.open(host, port)
    await ctl.ping_pong(10)

    async def mem(path: bytes = b"/_mem") -> dict[str, Any]:
        await asyncio.sleep(settle)
        data: dict[str, Any] = json.loads(await ctl.get(path, authority, 60))
        return data

    out: dict[str, Any] = {"n": n}
    if top:
        await mem(b"/_memdiff")
    before = await mem()
    t0 = time.perf_counter()
    opened: list[Wire] = []
    if what == "stream":
        w = await Wire.open(host, port)
        opened.append(w)
        await w.ping_pong(10)
        for i in range(0, n, 500):
            w.open_streams(min(500, n - i), authority)
            await w.writer.drain()
        frames = await w.ping_pong(120)
        refused = sum(1 for f in frames if f[0] == 0x3)
        out["refused"] = refused
        out["goaway"] = any(f[0] == 0x7 for f in frames)
        n -= refused
    else:
        for _ in range(n):
            opened.append(await Wire.open(host, port))
        await asyncio.gather(*(c.ping_pong(60) for c in opened))
    out["seconds"] = time.perf_counter() - t0
    after = await mem()
    if top:
        out["top"] = (await mem(b"/_memdiff")).get("top")
    out.update(delta(before, after, n))
    for c in opened:
        c.close()
    ctl.close()
    return out


def delta(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float | None]:
    n = max(n, 1)
    res: dict[str, float | None] = {}
    for key in ("traced", "rss"):
        if before.get(key) is None or after.get(key) is None:
            res[key] = None
        else:
            res[key] = (after[key] - before[key]) / n
    return res


def start_server(
    kind: str, trace: bool, max_streams: int, env: dict[str, str]
) -> tuple[subprocess.Popen[str], int]:
    script = {"aioh2s": "aioh2s_server.py", "raw": "raw_h2_server.py"}[kind]
    cmd = [
        sys.executable,
        str(HERE / script),
        "--max-streams",
        str(max_streams),
        "--lifetime",
        "300",
    ]
    if trace:
        cmd.append("--tracemalloc")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert proc.stdout is not None
    line = read_line(proc, 20)
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r}")
    return proc, int(line.split()[1])


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        return ""
    return proc.stdout.readline().strip()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(
    kind: str, n_streams: int, n_conns: int, settle: float, trace_streams: int, top: bool
) -> dict[str, Any]:
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    result: dict[str, Any] = {"server": kind}
    # A fresh server for every sample: memory freed by one test would otherwise be reused
    # by the next one and hide from its RSS delta.
    for trace in (True, False):
        key = "tracemalloc" if trace else "rss"
        field = "traced" if trace else "rss"
        result[key] = {}
        for what, n in (
            ("stream", min(n_streams, trace_streams) if trace else n_streams),
            ("connection", n_conns),
        ):
            if n <= 0:
                continue
            proc, port = start_server(kind, trace, max(2 * n, 1000), env)
            try:
                m = asyncio.run(
                    asyncio.wait_for(measure(port, what, n, settle, top and trace), 240)
                )
            finally:
                stop(proc)
            result[key][what] = {
                "n": m["n"],
                "bytes_each": m[field],
                "seconds": m["seconds"],
                "refused": m.get("refused"),
                "top": m.get("top"),
            }
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--server", choices=["aioh2s", "raw"], required=True)
    p.add_argument("--streams", type=int, default=10_000)
    p.add_argument("--connections", type=int, default=1_000)
    p.add_argument(
        "--trace-streams",
        type=int,
        default=2_000,
        help="streams in the tracemalloc pass (h2 is O(n^2) in open streams, and 5x slower "
        "under tracemalloc; per-stream bytes are linear)",
    )
    p.add_argument("--settle", type=float, default=0.5, help="seconds before each sample")
    p.add_argument("--top", action="store_true", help="report the top allocation sites")
    args = p.parse_args(argv)
    res = run(
        args.server, args.streams, args.connections, args.settle, args.trace_streams, args.top
    )
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
