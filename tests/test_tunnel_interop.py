"""Tunnels with a peer nobody here wrote: Node's http2, both ways, over h2c and TLS.

Node's client opens a plain CONNECT and an extended CONNECT (RFC 8441) to our server, which
enables extended CONNECT or not; our client opens both kinds to Node's server, which enables
it (``tests/interop/node_tunnel.js``). Each tunnel echoes, and after the client's END_STREAM
its server side still sends ``after EOF`` before it ends: a half-close, in both
implementations. (Go's client through the CONNECT proxy example is in
tests/test_connect_proxy.py.) A missing Node skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import aioh2s
from helpers import require
from peers import _Child

pytestmark = pytest.mark.timeout(60)

NODE_TUNNEL = Path(__file__).resolve().parent / "interop" / "node_tunnel.js"


async def echo_after_eof(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    if reader.headers[":method"] != "CONNECT":
        writer.send_headers({":status": "404"}, end_stream=True)
        return
    writer.send_headers({":status": "200", "x-protocol": reader.headers.get(":protocol", "")})
    async for chunk in reader:
        writer.write(chunk)
        await writer.drain()
    writer.write(b"after EOF")
    writer.write_eof()


@pytest.mark.parametrize("enable", [True, False], ids=["enabled", "not-enabled"])
async def test_node_client_tunnels_to_our_server(wire: Any, enable: bool) -> None:
    node = require("node")
    seen: list[aioh2s.Headers] = []

    async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        seen.append(reader.headers)
        await echo_after_eof(reader, writer)

    async with wire.serving(handler, enable_connect_protocol=enable) as (_server, port):
        argv = [node, str(NODE_TUNNEL), "client", wire.url(port)]
        if wire.tls:
            argv.append(wire.certs.ca)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, f"{argv}: {out.decode()} {err.decode()}"
    res = json.loads(out)
    assert res["enableConnectProtocol"] is enable
    assert res["plain"] == {"status": 200, "body": "pingafter EOF"}, res
    assert seen[0] == [(":method", "CONNECT"), (":authority", "example.com:443")]
    if enable:
        assert res["extended"] == {"status": 200, "body": "pingafter EOF"}, res
        ext = dict(seen[1])
        assert ext[":protocol"] == "websocket" and ext[":path"] == "/chat"
        assert ext[":scheme"] == ("https" if wire.tls else "http")
    else:
        # Node 20 sends it anyway, and our RST_STREAM(PROTOCOL_ERROR) makes its request fail
        # with ERR_HTTP2_STREAM_ERROR (a Node that refuses to send it is as good); our
        # handler never sees it.
        assert "extended_error" in res or "error" in res.get("extended", {}), res
        assert len(seen) == 1


async def test_our_client_tunnels_to_node_server(wire: Any) -> None:
    node = require("node")
    argv = [node, str(NODE_TUNNEL), "server"]
    if wire.tls:
        argv += [wire.certs.cert, wire.certs.key]
    child = _Child("node-tunnel", argv)
    try:
        port = child.read_listen_line()
        client = await wire.connect(port)
        try:
            async with client.connect_tunnel("example.com:443") as t:
                headers = await t.response_headers()
                assert headers[":status"] == "200"
                assert headers["x-authority"] == "example.com:443"
                assert headers["x-protocol"] == ""
                t.writer.write(b"one")
                assert await t.reader.readexactly(3) == b"one"
                t.writer.write_eof()
                assert await t.reader.read() == b"after EOF"
            req = {":method": "CONNECT", ":protocol": "websocket", ":path": "/chat"}
            async with client.request(req) as t:
                headers = await t.response_headers()
                assert headers[":status"] == "200" and headers["x-protocol"] == "websocket"
                t.writer.write(b"frame")
                t.writer.write_eof()
                assert await t.reader.read() == b"frameafter EOF"
        finally:
            await client.close(grace=1)
    finally:
        child.stop()
        child.remove_log()
