"""A real browser's WebSocket over HTTP/2 (RFC 8441) to an aioh2s server: headless Chromium.

Chromium uses HTTP/2 for a WebSocket only on an h2 connection it already holds to the origin,
whose SETTINGS enabled extended CONNECT; otherwise it quietly falls back to HTTP/1.1 Upgrade
(which our server refuses). So the page is loaded from the same TLS server first, and the
test asserts on the server side that the WebSocket arrived as an extended CONNECT on the very
connection that served the page. The page exchanges messages both ways (text, binary, 1 MiB
each way), pings nothing (browsers cannot), closes with 1000, then POSTs its findings.

Chromium runs with its own profile directory and is killed (the whole process group) at the
end. Under CI=true a missing chromium fails the test (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
from typing import Any

import pytest

import aioh2s
from aioh2s import websocket
from helpers import pattern, require

pytestmark = pytest.mark.timeout(120)

BIG = 1 << 20

PAGE = """<!doctype html>
<meta charset="utf-8"><title>running</title>
<script>
async function sha(buf) {
  const d = await crypto.subtle.digest("SHA-256", buf);
  return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, "0")).join("");
}
async function run() {
  const out = {events: []};
  const ws = new WebSocket(`wss://${location.host}/echo`, ["echo.v1", "other"]);
  ws.binaryType = "arraybuffer";
  const inbox = [];
  let wake = null;
  ws.onmessage = (e) => { inbox.push(e.data); if (wake) { wake(); wake = null; } };
  const next = async () => {
    while (!inbox.length) await new Promise(r => { wake = r; });
    return inbox.shift();
  };
  const closed = new Promise(r => { ws.onclose = (e) => r({code: e.code, reason: e.reason,
                                                           clean: e.wasClean}); });
  await new Promise((ok, bad) => { ws.onopen = ok; ws.onerror = bad; });
  out.protocol = ws.protocol;
  out.welcome = await next();
  const fromServer = await next();
  out.serverBinary = {len: fromServer.byteLength, sha: await sha(fromServer)};
  ws.send("hello, h2");
  out.text = await next();
  const big = new Uint8Array(BIG);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 11)) & 255;
  ws.send(big);
  const back = await next();
  out.binary = {len: back.byteLength, same: await sha(back) === await sha(big)};
  const bigText = "é".repeat(BIG / 2);
  ws.send(bigText);
  out.bigText = (await next()) === bigText;
  ws.close(1000, "done");
  out.close = await closed;
  await fetch("/result", {method: "POST", body: JSON.stringify(out)});
  document.title = "done";
}
run().catch(e => fetch("/result", {method: "POST", body: JSON.stringify({error: String(e)})}));
</script>
""".replace("BIG", str(BIG))


class BrowserApp:
    def __init__(self) -> None:
        self.page_connections: list[aioh2s.ConnectionHandle] = []
        self.ws_requests: list[tuple[aioh2s.ConnectionHandle, aioh2s.Headers]] = []
        self.closes: list[aioh2s.WebSocketClosed] = []
        self.result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.server_binary = pattern(BIG, seed=8441)

    async def __call__(self, reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        h = reader.headers
        if websocket.is_websocket(h):
            self.ws_requests.append((writer.connection, h))
            offered = websocket.subprotocols(h)
            ws = await websocket.accept(reader, writer, subprotocol=offered[0])
            async with ws:
                await ws.send("welcome")
                await ws.send(self.server_binary)
                try:
                    async for message in ws:
                        await ws.send(message)
                except aioh2s.WebSocketClosed as e:
                    self.closes.append(e)
                    raise
            assert ws.close_code is not None
            self.closes.append(aioh2s.WebSocketClosed(ws.close_code, ws.close_reason or ""))
            return
        if h[":method"] == "POST" and h[":path"] == "/result":
            body = await reader.read()
            writer.send_headers({":status": "204"}, end_stream=True)
            if not self.result.done():
                self.result.set_result(json.loads(body))
            return
        if h[":path"] == "/":
            self.page_connections.append(writer.connection)
            page = PAGE.encode()
            writer.send_headers(
                {":status": "200", "content-type": "text/html", "content-length": str(len(page))}
            )
            writer.write(page)
            writer.write_eof()
            return
        writer.send_headers({":status": "404", "content-length": "0"}, end_stream=True)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        try:
            return require(name)
        except pytest.skip.Exception:
            continue
    return require("chromium")


async def test_chromium_websocket_over_h2(cert_files: Any, tmp_path: Any) -> None:
    browser = _chromium()
    app = BrowserApp()
    ctx = aioh2s.server_ssl_context(cert_files.cert, cert_files.key)
    server = await aioh2s.start_server(app, "127.0.0.1", 0, ssl=ctx, enable_connect_protocol=True)
    port = server.sockets[0].getsockname()[1]
    cmd = [
        browser,
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox will not start
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--ignore-certificate-errors",  # the test CA is not in the profile's store
        f"--user-data-dir={tmp_path / 'profile'}",
        f"https://127.0.0.1:{port}/",
    ]
    log_path = tmp_path / "chromium.log"
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # its helpers too are killed with the group
            )
            try:
                result = await asyncio.wait_for(app.result, 60)
            except asyncio.TimeoutError:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"Chromium reported nothing in 60 s; its log ends:\n{tail}")
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
    finally:
        server.close()
        await server.wait_closed()

    assert "error" not in result, result
    # HTTP/2: the WebSocket was an extended CONNECT on the connection that served the page.
    assert len(app.ws_requests) == 1, app.ws_requests
    conn, request = app.ws_requests[0]
    assert request[":method"] == "CONNECT" and request[":protocol"] == "websocket"
    assert request[":path"] == "/echo" and request[":scheme"] == "https"
    assert request["sec-websocket-version"] == "13"
    assert conn in app.page_connections
    # Messages both ways.
    assert result["protocol"] == "echo.v1"
    assert result["welcome"] == "welcome"
    assert result["serverBinary"] == {
        "len": BIG,
        "sha": hashlib.sha256(app.server_binary).hexdigest(),
    }
    assert result["text"] == "hello, h2"
    assert result["binary"] == {"len": BIG, "same": True}
    assert result["bigText"] is True
    # The close handshake, seen from both sides.
    assert result["close"] == {"code": 1000, "reason": "done", "clean": True}
    assert [(c.code, c.reason, c.local) for c in app.closes] == [(1000, "done", False)]
