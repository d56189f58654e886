"""Push wake on the device side (seed §13 step 3): subscribe, receive, decrypt, wake.

The device creates a Web Push subscription (RFC 8030) at its platform's push service — here
``dsip.services.pushservice``, the stand-in — with an RFC 8291 key pair (ECDH P-256) and a
16-byte auth secret, hands the subscription to its relay (``push-subscription``), and
listens. A push carries only ``{"relay", "envelope_id"}`` encrypted to the device
(``aes128gcm``, decrypted here with ``http_ece``); the device then connects to that relay,
where the stored envelope waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dsip.errors import DsipError

__all__ = ["PushReceiver", "Wake"]

logger = logging.getLogger("dsip.push")

Wake = Callable[[dict[str, Any]], Awaitable[None]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class PushReceiver:
    def __init__(self, service_origin: str) -> None:
        self.service_origin = service_origin.rstrip("/")
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._auth = os.urandom(16)
        self.endpoint: str | None = None
        self._receive_url: str | None = None
        self._task: asyncio.Task[None] | None = None
        self.wakes: list[dict[str, Any]] = []

    async def subscribe(self) -> dict[str, Any]:
        """Create the subscription; returns what the relay needs (endpoint + keys)."""
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.post(f"{self.service_origin}/subscribe")
        if r.status_code != 201:
            raise DsipError(
                f"push service refused the subscription: {r.status_code}",
                code="push-subscribe",
                remote=True,
            )
        data = r.json()
        self.endpoint, self._receive_url = str(data["endpoint"]), str(data["receive"])
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": _b64(public), "auth": _b64(self._auth)},
        }

    def decrypt(self, body: bytes) -> dict[str, Any]:
        try:
            plain = http_ece.decrypt(
                body, private_key=self._key, auth_secret=self._auth, version="aes128gcm"
            )
            message = json.loads(plain)
        except Exception as exc:  # http_ece raises assorted errors on bad input
            raise DsipError(
                f"push message does not decrypt: {type(exc).__name__}", code="push-undecryptable"
            ) from None
        if not isinstance(message, dict) or set(message) != {"relay", "envelope_id"}:
            raise DsipError("push payload is not {relay, envelope_id}", code="push-invalid")
        return message

    async def listen(self, wake: Wake) -> None:
        """Receive pushes until closed; each decrypted one calls ``wake``."""
        import websockets

        assert self._receive_url is not None, "subscribe() first"
        async with websockets.connect(self._receive_url, max_size=8192) as ws:
            async for frame in ws:
                if not isinstance(frame, bytes):
                    continue
                try:
                    message = self.decrypt(frame)
                except DsipError as exc:
                    logger.info("ignored push: %s", exc)
                    continue
                self.wakes.append(message)
                await wake(message)

    def start(self, wake: Wake) -> None:
        self._task = asyncio.create_task(self.listen(wake))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
