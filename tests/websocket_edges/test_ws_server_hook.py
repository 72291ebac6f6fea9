"""The server takes a WebSocket error escaping a handler as the peer's doing only once the
handler answered: one from a WebSocket of its own elsewhere, before answering, is a failure."""
from __future__ import annotations

import asyncio
import logging

import pytest
from _common import ON, aioh2s, client_for, serving, websocket

pytestmark = pytest.mark.timeout(30)


@pytest.mark.expect_log("aioh2s", logging.ERROR, "handler failed")
async def test_an_upstream_refusal_in_a_proxy_handler_is_answered() -> None:
    async def refusing(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
        writer.send_headers({":status": "403", "content-length": "0"}, end_stream=True)

    async with serving(refusing, **ON) as (_up, up_port):
        upstream = await aioh2s.connect("127.0.0.1", up_port)
        try:

            async def proxy(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
                # A bug in this app: it lets the upstream's refusal escape, before answering.
                async with websocket.connect(upstream, "/up"):
                    pass

            async with client_for(proxy) as (client, _):
                async with client.request({":path": "/"}, end_stream=True) as st:
                    # 500, and the handler's failure logged: not this stream's WebSocket.
                    h = await asyncio.wait_for(st.response_headers(), 5)
                    assert h[":status"] == "500"
        finally:
            await upstream.close()
