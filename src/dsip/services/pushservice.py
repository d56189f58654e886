"""A local Web Push service (RFC 8030) — the stand-in for a platform push service.

Phones are woken by their platform's push service (APNs, FCM, Mozilla autopush); none can be
reached from here, so tests and the local demo run this one. It is labelled as what it is:
a *stand-in* for the platform, not part of a dsip deployment. It speaks the parts of the
protocols the relay and the agent use, for real:

* the application server side (the relay) POSTs to ``/push/<token>`` exactly as to any push
  service: an RFC 8291 ``aes128gcm`` encrypted body, a ``TTL`` header and an RFC 8292
  VAPID ``Authorization: vapid t=<JWT>, k=<public key>`` header — the JWT is verified
  (ES256 with ``k``, ``aud`` = this service's origin, ``exp`` within 24 h) and a bad one
  gets 401/403, as a real push service answers;
* the user agent side subscribes with ``POST /subscribe`` (a fresh endpoint URL) and
  receives messages on ``GET /receive/<token>`` as a WebSocket — where a real push service
  uses its own platform channel (HTTP/2 server push in RFC 8030 §6). Messages are queued
  while the agent is not listening, up to their TTL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

__all__ = ["PushService"]

logger = logging.getLogger("dsip.pushservice")
MAX_BODY = 4096  # RFC 8030 §7.2: a push service MUST support 4096 bytes


@dataclass
class _Queued:
    body: bytes
    headers: dict[str, str]
    expires: float


@dataclass
class _Subscription:
    queue: list[_Queued] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class PushService:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.subscriptions: dict[str, _Subscription] = {}
        self.delivered = 0
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> PushService:
        app = web.Application(client_max_size=MAX_BODY + 1024)
        app.router.add_post("/subscribe", self._subscribe)
        app.router.add_post("/push/{token}", self._push)
        app.router.add_get("/receive/{token}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        if self.port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((self.host, 0))
                self.port = int(probe.getsockname()[1])
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _subscribe(self, request: web.Request) -> web.Response:
        token = base64.urlsafe_b64encode(os.urandom(18)).decode().rstrip("=")
        self.subscriptions[token] = _Subscription()
        return web.json_response(
            {
                "endpoint": f"{self.origin}/push/{token}",
                "receive": f"ws://{self.host}:{self.port}/receive/{token}",
            },
            status=201,
        )

    def _check_vapid(self, header: str) -> str | None:
        """RFC 8292 §3: ``vapid t=<jwt>, k=<p256 public key>``. Returns why it fails, or None."""
        if not header.lower().startswith("vapid "):
            return "missing vapid authorization"
        params = dict(p.strip().split("=", 1) for p in header[6:].split(",") if "=" in p)
        token, k = params.get("t"), params.get("k")
        if not token or not k:
            return "vapid t= and k= are required"
        try:
            raw = base64.urlsafe_b64decode(k + "=" * (-len(k) % 4))
            if len(raw) != 65 or raw[0] != 4:
                return "k is not an uncompressed P-256 point"
            key = ECKey.import_key(
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": base64.urlsafe_b64encode(raw[1:33]).decode().rstrip("="),
                    "y": base64.urlsafe_b64encode(raw[33:]).decode().rstrip("="),
                }
            )
            claims = jwt.decode(token, key, algorithms=["ES256"]).claims
        except (JoseError, ValueError):
            return "vapid JWT does not verify with k"
        now = time.time()
        if claims.get("aud") != self.origin:
            return "vapid aud is not this push service"
        if not isinstance(claims.get("exp"), int) or not now < claims["exp"] <= now + 86_400:
            return "vapid exp missing or more than 24 h ahead"
        return None

    async def _push(self, request: web.Request) -> web.Response:
        sub = self.subscriptions.get(request.match_info["token"])
        if sub is None:
            return web.Response(status=404, text="no such subscription")
        why = self._check_vapid(request.headers.get("Authorization", ""))
        if why is not None:
            return web.Response(status=401 if "missing" in why else 403, text=why)
        if request.headers.get("Content-Encoding", "").lower() != "aes128gcm":
            return web.Response(status=415, text="Content-Encoding must be aes128gcm (RFC 8291)")
        body = await request.read()
        if len(body) > MAX_BODY:
            return web.Response(status=413, text="payload too large")
        try:
            ttl = max(0, int(request.headers.get("TTL", "0")))
        except ValueError:
            return web.Response(status=400, text="TTL must be an integer")
        sub.queue.append(_Queued(body, {"Content-Encoding": "aes128gcm"}, time.monotonic() + ttl))
        sub.wakeup.set()
        return web.Response(status=201, headers={"Location": str(request.url)})

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        sub = self.subscriptions.get(request.match_info["token"])
        if sub is None:
            return web.Response(status=404)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        try:
            while not ws.closed:
                now = time.monotonic()
                while sub.queue:
                    item = sub.queue.pop(0)
                    if item.expires >= now:
                        await ws.send_bytes(item.body)
                        self.delivered += 1
                sub.wakeup.clear()
                waiter = asyncio.create_task(sub.wakeup.wait())
                reader = asyncio.create_task(ws.receive())
                done, pending = await asyncio.wait(
                    {waiter, reader}, return_when=asyncio.FIRST_COMPLETED
                )
                for t in pending:
                    t.cancel()
                if reader in done and reader.result().type in (
                    WSMsgType.CLOSE,
                    WSMsgType.CLOSED,
                    WSMsgType.ERROR,
                ):
                    break
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        return ws
