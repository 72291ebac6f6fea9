"""Core behaviour on real sockets: streams API, flow control, backpressure, bulk, concurrency,
fairness, cancellation, trailers and leaks (issue 2, items 1-7 and 9)."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import random
import time

import pytest

import aioh2s
from aioh2s import ErrorCode, Headers, StreamReset
from helpers import client_for, echo_handler, pattern, serving, sha

MiB = 1024 * 1024


# -- the quickstart and the streams API --------------------------------------------------------


async def test_quickstart_roundtrip() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        assert reader.headers[":path"] == "/echo"
        body = await reader.read()
        writer.send_headers({":status": "200", "content-type": "text/plain"})
        writer.write(b"hello, ")
        writer.write(body)
        await writer.drain()
        writer.send_trailers({"x-len": str(len(body))})

    async with client_for(handler) as (client, _):
        async with client.request({":method": "POST", ":path": "/echo"}) as stream:
            stream.writer.write(b"world")
            stream.writer.write_eof()
            headers = await stream.response_headers()
            body = await stream.reader.read()
            assert headers[":status"] == "200"
            assert headers.get("content-type") == "text/plain"
            assert body == b"hello, world"
            assert stream.reader.trailers == [("x-len", "5")]
            assert stream.reader.at_eof()


async def test_client_fills_pseudo_headers_and_headers_shape() -> None:
    seen: list[Headers] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(reader.headers)
        writer.send_headers([(b":status", b"200"), (b"X-Multi", b"a"), ("x-multi", "b")])
        writer.write_eof()

    async with client_for(handler) as (client, server):
        port = server.sockets[0].getsockname()[1]
        async with client.request([("x-custom", "1")], end_stream=True) as stream:
            h = await stream.response_headers()
            assert await stream.reader.read() == b""
        assert h.getall("x-multi") == ["a", "b"]
        assert h["X-MULTI"] == "a"
        assert "x-multi" in h and "nope" not in h
        assert h.get("nope", "dflt") == "dflt"
        with pytest.raises(KeyError):
            h["nope"]
        assert list(h)[0] == (":status", "200")
        assert len(h) == 3
    req = seen[0]
    assert req[":method"] == "GET"
    assert req[":scheme"] == "http"
    assert req[":authority"] == f"127.0.0.1:{port}"
    assert req[":path"] == "/"
    assert req["x-custom"] == "1"
    # pseudo-headers come first
    assert [n for n, _ in req][:4] == [":method", ":scheme", ":authority", ":path"]


async def test_client_completes_partial_pseudo_headers_and_plain_connect() -> None:
    seen: list[Headers] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(reader.headers)
        writer.send_headers({":status": "200"}, end_stream=True)

    async with client_for(handler) as (client, _server):
        for headers in (
            {":path": "/p", "x-a": "1"},
            [(":method", "POST"), ("x-b", "2")],
            {":method": "CONNECT", ":authority": "example.com:443"},
        ):
            async with client.request(headers, end_stream=True) as stream:
                assert (await stream.response_headers())[":status"] == "200"
        with pytest.raises(aioh2s.ProtocolError):
            client.request([("x-a", "1"), (":path", "/late")])
    names = [[n for n, _ in h] for h in seen]
    assert names[0] == [":path", ":method", ":scheme", ":authority", "x-a"]
    assert seen[0][":path"] == "/p" and seen[0][":method"] == "GET"
    assert names[1] == [":method", ":scheme", ":authority", ":path", "x-b"]
    # RFC 9113 §8.5: a plain CONNECT carries :method and :authority only.
    assert names[2] == [":method", ":authority"]
    assert seen[2][":authority"] == "example.com:443"


async def test_read_methods_mirror_asyncio() -> None:
    body = b"line one\nline two\r\nPARTIAL-SEP-end\nrest-without-newline"

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(await reader.read())
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async with client.request({":method": "POST"}) as stream:
            stream.writer.write(body)
            stream.writer.write_eof()
            r = stream.reader
            await stream.response_headers()
            assert await r.read(0) == b""
            assert await r.readline() == b"line one\n"
            assert await r.readexactly(4) == b"line"
            assert await r.readuntil(b"\r\n") == b" two\r\n"
            assert await r.readuntil(b"-SEP-") == b"PARTIAL-SEP-"
            assert await r.readline() == b"end\n"
            assert not r.at_eof()
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await r.readexactly(100)
            assert ei.value.partial == b"rest-without-newline"
            assert ei.value.expected == 100
            assert r.at_eof()
            assert await r.read() == b""
            assert await r.readline() == b""
            with pytest.raises(asyncio.IncompleteReadError) as ei2:
                await r.readuntil(b"x")
            assert ei2.value.partial == b""


async def test_readuntil_limit_overrun_and_readline_value_error() -> None:
    big = b"x" * 200_000 + b"\n" + b"tail\n"

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(big)
        writer.write_eof()

    async with client_for(handler, read_limit=1000) as (client, _):
        async with client.request() as stream:
            await stream.response_headers()
            with pytest.raises(asyncio.LimitOverrunError):
                await stream.reader.readuntil(b"\n")
            # asyncio's readline discards the over-long line and raises ValueError
            with pytest.raises(ValueError):
                await stream.reader.readline()
            rest = await stream.reader.read()
            assert rest.endswith(b"tail\n")


async def test_async_iteration_yields_chunks() -> None:
    data = pattern(300_000)

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(data)
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async with client.request() as stream:
            await stream.response_headers()
            chunks = [c async for c in stream.reader]
            assert b"".join(chunks) == data
            assert all(chunks)


async def test_writer_extra_info_and_closing() -> None:
    info: dict[str, object] = {}

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        info["stream_id"] = writer.get_extra_info("stream_id")
        info["peername"] = writer.get_extra_info("peername")
        info["sockname"] = writer.get_extra_info("sockname")
        info["ssl_object"] = writer.get_extra_info("ssl_object")
        info["can_write_eof"] = writer.can_write_eof()
        writer.send_headers({":status": "200"})
        writer.writelines([b"a", b"b", bytearray(b"c"), memoryview(b"d")])
        assert not writer.is_closing()
        writer.close()
        assert writer.is_closing()
        with pytest.raises(RuntimeError):
            writer.write(b"after close")
        await asyncio.wait_for(writer.wait_closed(), 5)

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            assert await stream.reader.read() == b"abcd"
            assert stream.writer.is_closing()
    assert info["stream_id"] == 1
    assert info["peername"][0] == "127.0.0.1"  # type: ignore[index]
    assert info["sockname"][0] == "127.0.0.1"  # type: ignore[index]
    assert info["ssl_object"] is None
    assert info["can_write_eof"] is True


async def test_unknown_option_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="stream_windw"):
        await aioh2s.start_server(echo_handler, "127.0.0.1", 0, stream_windw=1)
    with pytest.raises(ValueError, match="connection_window"):
        aioh2s.Config(stream_window=2 * MiB, connection_window=MiB)


# -- flow control and backpressure -------------------------------------------------------------


async def test_windows_are_advertised_and_configurable() -> None:
    async with client_for(
        echo_handler,
        server_options={"stream_window": 300_000, "connection_window": 900_000},
        stream_window=200_000,
    ) as (client, server):
        conn = client._conn
        # The client learnt the server's advertised stream window from SETTINGS.
        assert conn.h2.remote_settings.initial_window_size == 300_000
        assert conn.h2.local_settings.initial_window_size == 200_000
        async with client.request({":method": "POST"}, end_stream=True) as stream:
            await stream.response_headers()
        (served,) = server._connections
        assert served.conn.h2.local_settings.initial_window_size == 300_000
    defaults = aioh2s.Config()
    assert defaults.stream_window > 65535 and defaults.connection_window > 65535


async def test_upload_backpressure_64mib() -> None:
    """The handler does not read: the server buffers at most one stream window and the client's
    drain() blocks; then it reads everything and the checksum matches."""
    window = 256 * 1024
    release = asyncio.Event()
    result: dict[str, object] = {}
    data = pattern(64 * MiB, seed=1)

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        result["stream"] = reader._s
        await release.wait()
        h = hashlib.sha256()
        peak = 0
        async for chunk in reader:
            peak = max(peak, len(chunk) + len(reader._s.buf))
            h.update(chunk)
        result["sha"] = h.hexdigest()
        result["peak"] = peak
        writer.send_headers({":status": "200"}, end_stream=True)

    async with client_for(
        handler, server_options={"stream_window": window, "connection_window": 4 * window}
    ) as (client, server):
        async with client.request({":method": "POST"}) as stream:
            w = stream.writer
            view = memoryview(data)
            sent = 0
            step = 1 * MiB
            w.write(view[:step])
            sent = step
            drain = asyncio.ensure_future(w.drain())
            await asyncio.sleep(0.5)
            # Blocked: the peer's window is exhausted and nobody reads on the other side.
            assert not drain.done()
            s = result["stream"]
            assert len(s.buf) <= window  # type: ignore[attr-defined]
            assert len(s.buf) > 0  # type: ignore[attr-defined]
            (served,) = server._connections
            total_buffered = sum(len(x.buf) for x in served.conn.streams.values())
            assert total_buffered <= window
            # Our own queue is bounded too: what we wrote minus what the window let through.
            assert stream._s.out_size <= step
            release.set()
            await asyncio.wait_for(drain, 10)
            while sent < len(data):
                w.write(view[sent : sent + step])
                sent += step
                await asyncio.wait_for(w.drain(), 10)
                assert stream._s.out_size <= aioh2s.Config().write_low_water
            w.write_eof()
            headers = await asyncio.wait_for(stream.response_headers(), 20)
            assert headers[":status"] == "200"
        assert result["sha"] == sha(data)
        assert result["peak"] <= window  # type: ignore[operator]


async def test_download_backpressure_64mib() -> None:
    """The client stops reading a 64 MiB response: its buffer stays within its window and the
    server's drain() blocks, with a bounded queue; then everything arrives intact."""
    window = 256 * 1024
    data = pattern(64 * MiB, seed=2)
    state: dict[str, object] = {"drain_blocked": False, "max_queued": 0}

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        view = memoryview(data)
        step = 256 * 1024
        for i in range(0, len(data), step):
            writer.write(view[i : i + step])
            state["max_queued"] = max(state["max_queued"], writer._s.out_size)  # type: ignore[call-overload]
            d = asyncio.ensure_future(writer.drain())
            await asyncio.sleep(0)
            if not d.done():
                state["drain_blocked"] = True
            await d
        writer.write_eof()

    async with client_for(handler, stream_window=window, connection_window=window) as (client, _):
        async with client.request() as stream:
            await stream.response_headers()
            await asyncio.sleep(0.5)
            buffered = len(stream._s.buf)
            assert 0 < buffered <= window
            assert state["drain_blocked"] is True
            high = aioh2s.Config().write_high_water
            assert state["max_queued"] <= high + 256 * 1024  # type: ignore[operator]
            h = hashlib.sha256()
            n = 0
            while True:
                chunk = await asyncio.wait_for(stream.reader.read(1 * MiB), 10)
                if not chunk:
                    break
                n += len(chunk)
                h.update(chunk)
            assert n == len(data)
            assert h.hexdigest() == sha(data)


async def test_window_updates_are_batched_for_tiny_reads() -> None:
    """Reading 1 byte at a time must not send a WINDOW_UPDATE per byte."""
    data = pattern(20_000)

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(data)
        writer.write_eof()

    async with client_for(handler) as (client, _):
        sent_frames: list[bytes] = []
        conn = client._conn
        orig = conn.transport.write

        def spy(b: bytes) -> None:
            sent_frames.append(bytes(b))
            orig(b)

        conn.transport.write = spy  # type: ignore[method-assign]
        async with client.request() as stream:
            await stream.response_headers()
            got = bytearray()
            while len(got) < len(data):
                got += await stream.reader.read(1)
            assert bytes(got) == data
        # Count WINDOW_UPDATE frames (type 0x8) in what the client wrote.
        wu = 0
        for blob in sent_frames:
            i = 0
            while i + 9 <= len(blob):
                length = int.from_bytes(blob[i : i + 3], "big")
                if blob[i + 3] == 0x8:
                    wu += 1
                i += 9 + length
        assert wu < 20


# -- bulk ---------------------------------------------------------------------------------------


async def test_bulk_100mib_each_way_one_stream() -> None:
    up = pattern(100 * MiB, seed=3)

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        h = hashlib.sha256()
        n = 0
        async for chunk in reader:
            h.update(chunk)
            n += len(chunk)
        writer.send_headers({":status": "200", "x-up-sha": h.hexdigest(), "x-up-len": str(n)})
        view = memoryview(up)
        step = 1 * MiB
        for i in range(0, len(up), step):
            writer.write(view[i : i + step])
            await writer.drain()
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async with client.request({":method": "POST"}) as stream:
            view = memoryview(up)
            for i in range(0, len(up), MiB):
                stream.writer.write(view[i : i + MiB])
                await stream.writer.drain()
            stream.writer.write_eof()
            headers = await asyncio.wait_for(stream.response_headers(), 60)
            assert headers["x-up-len"] == str(len(up))
            assert headers["x-up-sha"] == sha(up)
            h = hashlib.sha256()
            n = 0
            async for chunk in stream.reader:
                h.update(chunk)
                n += len(chunk)
            assert n == len(up)
            assert h.hexdigest() == sha(up)


async def test_200_concurrent_streams_random_sizes() -> None:
    rng = random.Random(42)
    choices = [0, 1, 100, 16_383, 16_385, 70_000, 300_000, 1_100_000]
    sizes = [rng.choice(choices) for _ in range(200)]

    async def one(client: aioh2s.Client, i: int, size: int) -> None:
        body = pattern(size, seed=i)
        async with client.request({":method": "POST", ":path": f"/{i}"}) as stream:
            async def send() -> None:
                view = memoryview(body)
                for j in range(0, size, 65536):
                    stream.writer.write(view[j : j + 65536])
                    await stream.writer.drain()
                stream.writer.write_eof()

            sender = asyncio.ensure_future(send())
            await stream.response_headers()
            echoed = await stream.reader.read()
            await sender
            assert len(echoed) == size
            assert sha(echoed) == sha(body)
            assert stream.reader.trailers is not None
            assert stream.reader.trailers["x-sha256"] == sha(body)

    async with client_for(echo_handler, server_options={"max_concurrent_streams": 250}) as (
        client,
        _,
    ):
        await asyncio.wait_for(
            asyncio.gather(*(one(client, i, s) for i, s in enumerate(sizes))), 120
        )


# -- concurrency and fairness ------------------------------------------------------------------


async def test_concurrency_limit_waits_fifo_instead_of_failing() -> None:
    active = 0
    peak = 0

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await reader.read()
            await asyncio.sleep(0.02)
            writer.send_headers({":status": "200"})
            writer.write(reader.headers[":path"].encode())
            writer.write_eof()
        finally:
            active -= 1

    client_peak = 0
    order: list[int] = []

    async def one(client: aioh2s.Client, i: int) -> bytes:
        nonlocal client_peak
        async with client.request({":path": f"/{i}"}, end_stream=True) as stream:
            order.append(i)
            client_peak = max(client_peak, client._conn.open_outbound)
            await stream.response_headers()
            return await stream.reader.read()

    async with client_for(handler, server_options={"max_concurrent_streams": 3}) as (client, _):
        results = await asyncio.wait_for(
            asyncio.gather(*(one(client, i) for i in range(20))), 30
        )
    assert results == [f"/{i}".encode() for i in range(20)]
    assert peak <= 3
    assert client_peak <= 3
    assert order == list(range(20))  # FIFO


async def test_fairness_big_upload_does_not_starve_small_requests() -> None:
    upload_done = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/upload":
            n = 0
            async for chunk in reader:
                n += len(chunk)
            writer.send_headers({":status": "200", "x-n": str(n)}, end_stream=True)
            return
        writer.send_headers({":status": "200"})
        writer.write(b"small")
        writer.write_eof()

    async with client_for(handler) as (client, _):
        async def upload() -> None:
            data = pattern(50 * MiB, seed=5)
            async with client.request({":method": "POST", ":path": "/upload"}) as stream:
                view = memoryview(data)
                for i in range(0, len(data), MiB):
                    stream.writer.write(view[i : i + MiB])
                    await stream.writer.drain()
                stream.writer.write_eof()
                h = await stream.response_headers()
                assert h["x-n"] == str(len(data))
            upload_done.set()

        up = asyncio.ensure_future(upload())
        await asyncio.sleep(0.05)  # the upload is under way

        async def small(i: int) -> bool:
            async with client.request({":path": f"/s{i}"}, end_stream=True) as stream:
                await stream.response_headers()
                assert await stream.reader.read() == b"small"
            return upload_done.is_set()

        finished_after_upload = await asyncio.wait_for(
            asyncio.gather(*(small(i) for i in range(100))), 60
        )
        assert not any(finished_after_upload), "small requests waited for the upload"
        await asyncio.wait_for(up, 60)


# -- cancellation and resets --------------------------------------------------------------------


async def test_leaving_request_early_sends_cancel_and_handler_sees_reset() -> None:
    seen: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    started = asyncio.Event()

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/ok":
            writer.send_headers({":status": "200"})
            writer.write(b"fine")
            writer.write_eof()
            return
        writer.send_headers({":status": "200"})
        started.set()
        try:
            await reader.read()
        except StreamReset as e:
            seen.set_result(e)
            raise

    async with client_for(handler) as (client, _):
        async with client.request({":method": "POST", ":path": "/slow"}) as stream:
            await stream.response_headers()
            await started.wait()
        err = await asyncio.wait_for(seen, 5)
        assert isinstance(err, StreamReset)
        assert err.error_code == ErrorCode.CANCEL
        assert err.remote
        # the connection is healthy
        async with client.request({":path": "/ok"}, end_stream=True) as stream:
            await stream.response_headers()
            assert await stream.reader.read() == b"fine"


@pytest.mark.expect_log("aioh2s", "ERROR", "handler failed on stream")
@pytest.mark.expect_log("aioh2s", "ERROR", "handler returned without a response")
async def test_handler_errors_become_500_or_internal_error() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        path = reader.headers[":path"]
        if path == "/before":
            raise RuntimeError("boom before headers")
        if path == "/after":
            writer.send_headers({":status": "200"})
            writer.write(b"partial")
            await writer.drain()
            raise RuntimeError("boom after headers")
        if path == "/silent":
            return
        writer.send_headers({":status": "200"})
        writer.write(b"ok")
        # returning without write_eof ends the stream for us

    async with client_for(handler) as (client, _):
        async with client.request({":path": "/before"}, end_stream=True) as stream:
            assert (await stream.response_headers())[":status"] == "500"
            assert await stream.reader.read() == b""
        async with client.request({":path": "/silent"}, end_stream=True) as stream:
            assert (await stream.response_headers())[":status"] == "500"
        async with client.request({":path": "/after"}, end_stream=True) as stream:
            assert (await stream.response_headers())[":status"] == "200"
            with pytest.raises(StreamReset) as ei:
                await stream.reader.read()
            assert ei.value.error_code == ErrorCode.INTERNAL_ERROR
            assert ei.value.remote
        async with client.request({":path": "/auto-end"}, end_stream=True) as stream:
            await stream.response_headers()
            assert await stream.reader.read() == b"ok"


async def test_cancelling_blocked_read_and_drain_keeps_connection_healthy() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        if reader.headers[":path"] == "/hang":
            await asyncio.sleep(30)
            return
        await echo_handler(reader, writer)

    async with client_for(handler, server_options={"stream_window": 65535}) as (client, _):
        async with client.request({":method": "POST", ":path": "/hang"}) as stream:
            reader_task = asyncio.ensure_future(stream.reader.read())
            stream.writer.write(b"x" * 500_000)  # beyond the 64 KiB window: drain blocks
            drain_task = asyncio.ensure_future(stream.writer.drain())
            await asyncio.sleep(0.2)
            assert not reader_task.done() and not drain_task.done()
            reader_task.cancel()
            drain_task.cancel()
            for t in (reader_task, drain_task):
                with pytest.raises(asyncio.CancelledError):
                    await t
        # the hung stream was reset on exit; other streams work
        async with client.request({":method": "POST", ":path": "/echo"}) as stream:
            stream.writer.write(b"still alive")
            stream.writer.write_eof()
            await stream.response_headers()
            assert await asyncio.wait_for(stream.reader.read(), 5) == b"still alive"


async def test_writer_reset_and_drain_raises() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"x")
        writer.reset(ErrorCode.ENHANCE_YOUR_CALM)
        with pytest.raises(StreamReset):
            await writer.drain()

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            with pytest.raises(StreamReset) as ei:
                await stream.response_headers()
                await stream.reader.read()
            assert ei.value.error_code == ErrorCode.ENHANCE_YOUR_CALM


# -- trailers and 1xx ---------------------------------------------------------------------------


async def test_trailers_both_ways_and_informational_skipped() -> None:
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "103", "link": "</style.css>; rel=preload"})
        writer.send_headers({":status": "100"})
        body = await reader.read()
        assert reader.trailers is not None
        writer.send_headers({":status": "200"})
        writer.write(body)
        writer.send_trailers({"x-echo-trailer": reader.trailers["x-client-trailer"]})

    async with client_for(handler) as (client, _):
        async with client.request({":method": "POST"}) as stream:
            stream.writer.write(b"payload")
            stream.writer.send_trailers({"x-client-trailer": "tv"})
            h = await stream.response_headers()
            assert h[":status"] == "200"
            assert [i[":status"] for i in stream.informational] == ["103", "100"]
            assert await stream.reader.read() == b"payload"
            assert stream.reader.trailers == [("x-echo-trailer", "tv")]


# -- leaks ---------------------------------------------------------------------------------------


def _other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_no_leaks_after_1000_connections() -> None:
    async with serving(echo_handler) as (server, port):
        baseline = _other_tasks()
        for i in range(1000):
            client = await aioh2s.connect("127.0.0.1", port)
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"%d" % i)
                stream.writer.write_eof()
                await stream.response_headers()
                assert await stream.reader.read() == b"%d" % i
            await client.close()
        del client, stream
        for _ in range(100):
            if server.connections == 0 and _other_tasks() <= baseline:
                break
            await asyncio.sleep(0.01)
        assert server.connections == 0
        assert _other_tasks() <= baseline
    gc.collect()
    from aioh2s._connection import Connection

    live = [o for o in gc.get_objects() if isinstance(o, Connection)]
    assert live == []


async def test_no_leaks_after_10000_streams_on_one_connection() -> None:
    async with client_for(echo_handler) as (client, server):
        (served,) = server._connections

        async def one(i: int) -> None:
            async with client.request({":method": "POST"}) as stream:
                stream.writer.write(b"abc")
                stream.writer.write_eof()
                await stream.response_headers()
                assert await stream.reader.read() == b"abc"

        start = time.monotonic()
        for batch in range(100):
            await asyncio.gather(*(one(batch * 100 + i) for i in range(100)))
        assert time.monotonic() - start < 120
        for _ in range(100):
            if not served.tasks and not served.conn.streams:
                break
            await asyncio.sleep(0.01)
        assert client._conn.streams == {}
        assert client._conn.open_outbound == 0
        assert served.conn.streams == {}
        assert not served.tasks
        assert len(served.conn.h2.streams) < 200  # h2 prunes closed streams lazily


@pytest.mark.expect_log("aioh2s", "ERROR", "internal error in the connection reader task")
async def test_reader_task_never_dies_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside the connection's machinery ends the connection and fails waiters."""
    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        await asyncio.sleep(30)

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            read = asyncio.ensure_future(stream.reader.read())
            await asyncio.sleep(0.05)

            conn = client._conn
            dispatch = type(conn).dispatch

            def broken(self: object, ev: object) -> None:
                if self is conn:  # Connection has slots: patched on the class, for this one
                    raise RuntimeError("injected bug")
                dispatch(self, ev)  # type: ignore[arg-type]

            monkeypatch.setattr(type(conn), "dispatch", broken)
            await client.ping(timeout=5) if False else None
            client._conn.h2.ping(b"12345678")
            client._conn.flush()  # the PING ACK arrives and hits the broken dispatch
            with pytest.raises(aioh2s.ConnectionClosed) as ei:
                await asyncio.wait_for(read, 5)
            assert ei.value.error_code == ErrorCode.INTERNAL_ERROR
        assert client.is_closing()
        with pytest.raises(aioh2s.ConnectionClosed):
            async with client.request():
                pass


async def test_large_response_within_window_does_not_stall() -> None:
    """Regression: with a window larger than the body, no WINDOW_UPDATE ever arrives, so the
    sender must keep pumping as the transport drains (it once stopped at 512 KiB)."""
    body = pattern(8 * MiB, seed=9)

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(body)
        writer.write_eof()

    async with client_for(handler, stream_window=16 * MiB, connection_window=64 * MiB) as (
        client,
        _,
    ):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            got = await asyncio.wait_for(stream.reader.read(), 20)
    assert len(got) == len(body) and sha(got) == sha(body)


async def test_idle_stream_memory_is_small() -> None:
    """An idle stream carries no outbound queue until it writes."""
    async with client_for(echo_handler) as (client, _):
        async with client.request({":method": "POST"}) as stream:
            assert stream._s.out is None
            stream.writer.write(b"x")
            assert stream._s.out is not None
            stream.writer.write_eof()
            await stream.response_headers()
            assert await stream.reader.read() == b"x"


@pytest.mark.parametrize(
    "bad",
    [
        {":status": "200", "connection": "keep-alive"},
        {":status": "200", "te": "gzip"},
        {":status": "200", "x-bad": "a\r\nb"},
        {":status": "200", "bad name": "x"},
        {"x-first": "1", ":status": "200"},
        {":status": "200", ":path": "/"},
        {"content-type": "text/plain"},
    ],
)
async def test_invalid_outbound_headers_raise_and_connection_survives(bad: dict[str, str]) -> None:
    errors: list[BaseException] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        try:
            writer.send_headers(bad)
        except aioh2s.ProtocolError as e:
            errors.append(e)
        writer.send_headers({":status": "204"}, end_stream=True)

    async with client_for(handler) as (client, _):
        for _ in range(2):
            async with client.request(end_stream=True) as stream:
                assert (await stream.response_headers())[":status"] == "204"
    assert len(errors) == 2


async def test_client_rejects_invalid_request_headers_before_sending() -> None:
    async with client_for(echo_handler) as (client, _):
        with pytest.raises(aioh2s.ProtocolError):
            client.request({"transfer-encoding": "chunked"})
        with pytest.raises(aioh2s.ProtocolError):
            client.request({":status": "200"})
        async with client.request({":method": "POST"}, end_stream=True) as stream:
            assert (await stream.response_headers())[":status"] == "200"
        assert client._conn.open_outbound == 0


# -- regressions found in review -------------------------------------------------------------


@pytest.mark.parametrize("size", [30_000, 200_000], ids=["complete-unread", "reset-buffered"])
async def test_abandoned_responses_give_back_connection_window(size: int) -> None:
    """Leaving a request with unread body bytes (complete, or reset with bytes buffered) must
    return them to the connection window, or a few such requests stall the connection."""

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        n = int(reader.headers[":path"][1:])
        writer.send_headers({":status": "200"})
        writer.write(b"x" * n)
        writer.write_eof()

    async with client_for(handler, stream_window=65535, connection_window=300_000) as (
        client,
        _,
    ):
        for _ in range(12):  # 12 x >=30 KB unread, well past the 300 KB connection window
            async with client.request({":path": f"/{size}"}, end_stream=True) as stream:
                await stream.response_headers()
                await asyncio.sleep(0.02)
        async with client.request({":path": "/250000"}, end_stream=True) as stream:
            await stream.response_headers()
            body = await asyncio.wait_for(stream.reader.read(), 5)
        assert len(body) == 250_000


async def test_drain_on_a_finished_stream_returns_even_when_write_blocked() -> None:
    done = asyncio.Event()
    results: list[str] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "200"})
        writer.write(b"bye")
        writer.write_eof()
        await writer.wait_closed()
        conn = writer._s.conn
        conn.write_blocked = True  # as if the transport were paused by another stream's data
        try:
            await asyncio.wait_for(writer.drain(), 2)
            results.append("returned")
        finally:
            conn.write_blocked = False
            done.set()

    async with client_for(handler) as (client, _):
        async with client.request(end_stream=True) as stream:
            await stream.response_headers()
            assert await stream.reader.read() == b"bye"
        await asyncio.wait_for(done.wait(), 5)
    assert results == ["returned"]
