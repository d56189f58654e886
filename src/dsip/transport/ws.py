"""ws/1.0 — the mandatory WebSocket binding (§13.2), on ``websockets`` (asyncio API).

Binding rules and how they map onto the library:

* ``wss`` only, TLS 1.3 (§13.2): servers and clients take an ``ssl.SSLContext``; plain
  ``ws://`` is refused by ``connect_ws`` unless ``allow_insecure=True`` (tests of the
  refusal itself, never a deployment).
* One envelope per message, 65,536-byte cap: ``max_size=MAX_FRAME_BYTES`` makes websockets
  refuse a larger message from its frame header, before buffering the payload, and close
  with 1009 — the spec's "close with status 1009" — so oversize frames never reach a parser.
* No compression: ``compression=None`` (compression oracles, §13.2).
* Keepalive with WebSocket Ping/Pong, not DSIP envelopes (§13.2): *clients* ping every
  30 s and give up after 60 s more without a pong (the 90 s liveness bound). Servers answer
  pings but run no per-connection ping task — at 10,000 idle connections those tasks alone
  cost tens of MiB — and detect dead clients with kernel TCP keepalive (idle 60 s, then 3
  probes 10 s apart: within the same 90 s), which costs nothing in the process.
* Backpressure: ``send`` waits for the transport's write buffer to drain below
  ``write_limit``; ``max_queue`` bounds unread incoming messages, so a slow reader throttles
  its peer through TCP instead of growing memory.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from dsip.errors import TransportError
from dsip.transport.base import CLOSE_NORMAL, MAX_FRAME_BYTES, ConnectionClosed, FrameConnection

__all__ = ["PING_INTERVAL", "PING_TIMEOUT", "WsConnection", "WsServer", "connect_ws", "serve_ws"]

logger = logging.getLogger("dsip.transport.ws")

PING_INTERVAL = 30.0
PING_TIMEOUT = 60.0
_COMMON: dict[str, Any] = {
    "max_size": MAX_FRAME_BYTES,
    "compression": None,
    "ping_interval": PING_INTERVAL,
    "ping_timeout": PING_TIMEOUT,
    "max_queue": 32,
    "write_limit": 2**16,
    "close_timeout": 5,
}


class WsConnection:
    """A ``FrameConnection`` over one WebSocket."""

    def __init__(self, ws: ServerConnection | ClientConnection) -> None:
        self._ws = ws
        addr = ws.remote_address
        self._ip = str(addr[0]) if addr else "?"
        self._remote = f"{addr[0]}:{addr[1]}" if addr else "?"

    @property
    def remote(self) -> str:
        return self._remote

    @property
    def remote_ip(self) -> str:
        return self._ip

    @property
    def closed(self) -> bool:
        return self._ws.close_code is not None

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def send(self, frame: str | bytes) -> None:
        try:
            await self._ws.send(frame)
        except WsConnectionClosed as exc:
            raise ConnectionClosed(
                f"send on closed connection: {exc}", close_code=_code(exc)
            ) from None

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.recv()
        except WsConnectionClosed as exc:
            code = _code(exc)
            raise ConnectionClosed(f"connection closed ({code})", close_code=code) from None

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        with contextlib.suppress(WebSocketException):  # already gone
            await self._ws.close(code, reason[:120])


def _code(exc: WsConnectionClosed) -> int | None:
    close = exc.rcvd or exc.sent
    return int(close.code) if close is not None else None


class WsServer:
    """A running ws/1.0 listener."""

    def __init__(self, server: Server) -> None:
        self._server = server

    @property
    def port(self) -> int:
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        self._server.close()
        await self._server.wait_closed()


_SERVER = dict(_COMMON, ping_interval=None, ping_timeout=None)


def _tcp_keepalive(ws: ServerConnection) -> None:
    sock = ws.transport.get_extra_info("socket") if ws.transport else None
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


async def serve_ws(
    handler: Callable[[FrameConnection], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None,
    path: str = "/dsip",
    process_request: Callable[[ServerConnection, Any], Any] | None = None,
) -> WsServer:
    """Listen for ws/1.0 connections; ``handler`` runs once per connection.

    ``ssl_context=None`` serves plain ``ws://`` — only for a TLS-terminating proxy in front.
    ``process_request`` (websockets' hook) may answer plain HTTP requests itself, e.g. the
    browser client's static files (``dsip.services.webroot``).
    """

    async def _handle(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path.split("?")[0] != path:
            await ws.close(1008, "unknown path")
            return
        _tcp_keepalive(ws)
        await handler(WsConnection(ws))

    server = await serve(
        _handle, host, port, ssl=ssl_context, process_request=process_request, **_SERVER
    )
    return WsServer(server)


async def connect_ws(
    uri: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    allow_insecure: bool = False,
) -> WsConnection:
    """Dial a ws/1.0 endpoint. ``wss://`` verifies the server with ``ssl_context`` (or the
    system trust store); ``ws://`` is refused unless ``allow_insecure``."""
    if uri.startswith("ws://") and not allow_insecure:
        raise TransportError(
            "plaintext ws:// is not allowed by ws/1.0 (§13.2)", code="insecure-uri"
        )
    kwargs: dict[str, Any] = dict(_COMMON, open_timeout=timeout)
    if uri.startswith("wss://"):
        kwargs["ssl"] = ssl_context or ssl.create_default_context()
    try:
        ws = await connect(uri, **kwargs)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ssl.SSLError) as exc:
        raise TransportError(f"cannot connect to {uri}: {exc}", code="connect-failed") from None
    return WsConnection(ws)
