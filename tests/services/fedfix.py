"""Shared pieces of the federation tests: did:web identities for relays and users on one
``DidWebHost``, and a client that knows its relay's document."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verified, Verifier, make_payload
from dsip.core.identity import KeyPair, did_web_document
from dsip.services.didweb_host import DidWebHost
from dsip.services.federation import relay_document


@dataclass(frozen=True)
class Identity:
    """A did:web identity whose signing key is ``#key-1``."""

    did: str
    key: KeyPair

    @classmethod
    def on(cls, host: DidWebHost, *path: str, seed: bytes | None = None) -> Identity:
        did = host.did(*path)
        base = KeyPair.from_seed(seed) if seed is not None else KeyPair.generate()
        return cls(did, KeyPair(base.private_key, f"{did}#key-1"))


def publish_relay(host: DidWebHost, relay: Identity, uri: str) -> None:
    host.publish(relay.did, relay_document(relay.did, relay.key, uri))


def publish_user(host: DidWebHost, user: Identity, home_uri: str) -> None:
    host.publish(
        user.did,
        did_web_document(
            user.did, [("key-1", user.key.public_key_multibase)], services={"ws": [home_uri]}
        ),
    )


def introduction(sender: str, to: str, text: str, ttl: int = 3600) -> dict[str, Any]:
    return make_payload(
        "introduction",
        sender=sender,
        now=int(time.time()),
        to=to,
        purpose=text,
        ttl=ttl,
        identity={"display_name": text[:40], "claims": []},
    )


@dataclass
class User:
    """A user's device: one identity, one home relay, a verifier that outlives connections
    (its duplicate-id store is what keeps the application from seeing anything twice)."""

    me: Identity
    relay_did: str
    uri: str
    resolver: DidResolver
    ssl_context: ssl.SSLContext
    verifier: Verifier = field(init=False)
    client: SignalingClient | None = None

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.resolver.cached)

    @property
    def did(self) -> str:
        return self.me.did

    async def connect(self, timeout: float = 5.0) -> SignalingClient:
        await self.resolver.resolve(self.relay_did)  # the relay's hello is verified offline
        client = SignalingClient(self.me.key, verifier=self.verifier, resolver=self.resolver)
        await client.connect(self.uri, ssl_context=self.ssl_context, timeout=timeout)
        self.client = client
        return client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def next(self, msg_type: str, timeout: float = 10.0) -> Verified:
        assert self.client is not None
        while True:
            v = await self.client.recv(timeout)
            if v.type == msg_type:
                return v
