"""1:1 messaging over a relay connection: prekeys/1.0 publish and claim, ``msg`` send/receive.

The cryptography and storage live in :mod:`dsip.messaging` (X3DH + Double Ratchet sessions,
the encrypted session store); this module only moves their envelopes over a
:class:`~dsip.agent.signaling.SignalingClient`:

* :meth:`MessagingAgent.publish_prekeys` sends this device's signed ``prekey-bundle`` and
  waits for the relay's receipt (an empty ``prekey-claimed`` in reply);
* :meth:`MessagingAgent.send_text` claims bundles for devices it has no session with
  (``prekey-claim`` → ``prekey-claimed``, every bundle verified by the device itself), then
  sends one ``msg`` per device of the peer and per other device of our own identity;
* :meth:`MessagingAgent.receive` takes the next ``msg`` from the connection (a relay hands
  over the ones it stored while we were away first) and decrypts it atomically.

A ``msg`` that fails to decrypt or verify is answered with nothing and changes nothing
(the store is transactional); the failure is logged and raised to the caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from dsip.agent.signaling import SignalingClient
from dsip.core.b64 import b64url_decode
from dsip.core.envelope import Verified
from dsip.core.jws import encode_frame
from dsip.errors import DsipError, TransportError
from dsip.messaging.messages import Messenger, Received, Sent
from dsip.messaging.prekeys import ClaimedBundle

__all__ = ["MessagingAgent"]

logger = logging.getLogger("dsip.messaging.agent")


@dataclass
class MessagingAgent:
    """One device's messaging over its bound relay connection."""

    client: SignalingClient
    messenger: Messenger
    timeout: float = 10.0
    others: list[Verified] = field(default_factory=list)  # non-msg envelopes seen meanwhile
    _claimed: set[str] = field(default_factory=set)

    def _now(self) -> int:
        return int(self.client.clock())

    async def _reply_to(self, request_id: str) -> Verified:
        """Wait for the relay's answer to ``request_id``; a signed error becomes an exception."""
        async with asyncio.timeout(self.timeout):
            while True:
                v = await self.client.recv()
                if v.payload.get("in_reply_to") == request_id:
                    if v.type == "error":
                        raise TransportError(
                            f"relay refused: {v.payload.get('reason')} ({v.payload.get('detail', '')})",
                            code="relay-refused",
                            reason=str(v.payload.get("reason")),
                        )
                    return v
                self.others.append(v)

    async def publish_prekeys(self, *, target: int = 100) -> None:
        """Top up and publish this device's bundle; returns once the relay stored it."""
        envelope = self.messenger.prekey_bundle(now=self._now(), target=target)
        bundle_id = str(json.loads(b64url_decode(envelope["payload"]))["id"])
        await self.client.send_frame(encode_frame(envelope))
        v = await self._reply_to(bundle_id)
        if v.type != "prekey-claimed":
            raise TransportError(f"unexpected {v.type} after prekey-bundle", code="protocol")

    async def claim(self, target: str) -> int:
        """Claim and learn the bundles of ``target``'s devices; returns how many were learned."""
        request = self.client.build("prekey-claim", to=self.client.relay_did, target=target)
        await self.client.send(request)
        v = await self._reply_to(request["id"])
        learned = 0
        for item in v.payload.get("bundles", []):
            claimed = ClaimedBundle(
                str(item["device"]), str(item["frame"]), item.get("one_time_prekey_id")
            )
            try:
                self.messenger.learn_claimed(claimed, now=self._now())
            except DsipError as exc:  # a bad bundle is skipped, the good ones still count
                logger.warning("bundle of %s refused: %s", claimed.device, exc)
                continue
            learned += 1
        return learned

    async def send_text(self, peer: str, body: str, **fields: Any) -> Sent:
        """Send ``body`` to every device of ``peer`` (claiming bundles first when needed)."""
        if not self.messenger.devices(peer):
            await self.claim(peer)
        own = self.messenger.identity
        single = own == self.messenger.device.did  # a did:key identity is its only device
        if (
            not single
            and own != peer
            and own not in self._claimed
            and not self.messenger.devices(own)
        ):
            self._claimed.add(own)
            await self.claim(own)  # our other devices get a copy
        sent = self.messenger.conversation(peer).send_text(body, now=self._now(), **fields)
        for out in sent.outbound:
            await self.client.send_frame(out.frame)
        return sent

    async def receive(self, timeout: float | None = None) -> Received:
        """The next ``msg`` for this device, decrypted (other envelopes go to ``others``)."""
        async with asyncio.timeout(timeout if timeout is not None else self.timeout):
            while True:
                v = await self.client.recv()
                if v.type != "msg":
                    self.others.append(v)
                    continue
                return await asyncio.to_thread(self.messenger.receive, v, now=self._now())
