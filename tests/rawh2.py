"""A scriptable HTTP/2 server on plain h2 (not aioh2s), for testing our client's lifecycle.

``RawH2Server(on_event)`` accepts connections on 127.0.0.1; for every h2 event it calls
``on_event(peer, event)``, where ``peer.conn`` is the ``h2.connection.H2Connection`` and
``peer.flush()`` / ``peer.close()`` act on the socket. ``RawH2Server(on_event, ssl=ctx)``
serves TLS instead of h2c (give ``ctx`` ALPN ``h2``). Nothing here comes from aioh2s.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings


class RawPeer(asyncio.Protocol):
    def __init__(self, server: RawH2Server) -> None:
        self.server = server
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.transport: asyncio.Transport | None = None
        self.auto_ack_pings = server.auto_ack_pings
        self.quiet = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        srv = self.server
        srv.peers.append(self)
        srv.accepted += 1
        if srv.pre_connect is not None and srv.pre_connect(self):
            self.quiet = True  # it dealt with the connection (aborted it, or stays silent)
            return
        if srv.settings:
            self.conn.local_settings = h2.settings.Settings(
                client=False, initial_values=srv.settings
            )
        self.conn.initiate_connection()
        self.flush()
        if srv.on_connect is not None:
            srv.on_connect(self)
            self.flush()

    def data_received(self, data: bytes) -> None:
        if self.quiet:
            return
        if not self.auto_ack_pings and b"\x00\x00\x08\x06\x00" in data:
            # Swallow PING frames (type 6, no ACK flag) so they are never answered.
            out = bytearray()
            i = 0
            while i + 9 <= len(data):
                length = int.from_bytes(data[i : i + 3], "big")
                if data[i + 3] == 6 and not data[i + 4] & 1:
                    self.server.pings_seen += 1
                else:
                    out += data[i : i + 9 + length]
                i += 9 + length
            out += data[i:]
            data = bytes(out)
        try:
            events = self.conn.receive_data(data)
        except Exception:
            self.flush()
            if self.transport:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.PingReceived):
                self.server.pings_seen += 1
            self.server.on_event(self, ev)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def respond(self, stream_id: int, body: bytes = b"", status: str = "200") -> None:
        self.conn.send_headers(stream_id, [(":status", status)], end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RawH2Server:
    def __init__(
        self,
        on_event: Callable[[RawPeer, Any], None],
        auto_ack_pings: bool = True,
        ssl: _ssl.SSLContext | None = None,
        *,
        settings: dict[int, int] | None = None,
        on_connect: Callable[[RawPeer], None] | None = None,
        pre_connect: Callable[[RawPeer], bool] | None = None,
    ) -> None:
        #: ``settings``: our SETTINGS; ``on_connect(peer)`` runs after our preface;
        #: ``pre_connect(peer)`` before it, and a True result means no preface at all.
        self.settings = settings
        self.on_connect = on_connect
        self.pre_connect = pre_connect
        self.accepted = 0
        self.on_event = on_event
        self.ssl = ssl
        self.peers: list[RawPeer] = []
        self.auto_ack_pings = auto_ack_pings
        self.pings_seen = 0
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def __aenter__(self) -> RawH2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RawPeer(self), "127.0.0.1", 0, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for p in self.peers:
            p.close()
        self._server.close()
        await self._server.wait_closed()
