"""A relay on loopback refusing unproven introductions through its policy hook (§19.4)."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.core.trust.first_contact import pow_claim
from dsip.core.trust.policy import TrustPolicy, relay_first_contact_hook
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store
from tests.relayfix import relay_uri

pytestmark = [pytest.mark.timeout(60), pytest.mark.network]

POLICY = """
version = 1
scope = "relay"
[defaults]
action = "allow"
[first_contact]
pow_difficulty = 10
[[rules]]
id = "introduction-proof"
when = { messages = ["introduction"], first_contact_proof = false }
action = "reject"
reason = "policy:proof-required"
"""


@pytest.fixture
async def guarded_relay(tmp_path: Path, local_ca: LocalCA) -> AsyncIterator[Relay]:
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp_path}/relay.db")
    store = await open_store(cfg.store)
    hook = relay_first_contact_hook(TrustPolicy.from_toml(POLICY))
    relay = Relay(
        cfg, KeyPair.generate(), store, server_ssl=local_ca.server_context(), first_contact=hook
    )
    await relay.start()
    yield relay
    await relay.stop()


async def _next(client: SignalingClient, msg_type: str) -> dict[str, object]:
    while True:
        v = await client.recv(5)
        if v.type == msg_type:
            return v.payload


async def test_unproven_introduction_refused_proven_one_delivered(
    guarded_relay: Relay, client_ssl: ssl.SSLContext
) -> None:
    alice = SignalingClient(KeyPair.generate(), verifier=Verifier())
    bob = SignalingClient(KeyPair.generate(), verifier=Verifier())
    for c in (alice, bob):
        await c.connect(relay_uri(guarded_relay), ssl_context=client_ssl, timeout=5)
    try:
        bare = alice.build("introduction", to=bob.identity, ttl=3600, identity={"claims": []})
        await alice.send(bare)
        err = await _next(alice, "error")
        assert err["reason"] == "policy.first-contact-required"
        assert err["in_reply_to"] == bare["id"]
        proven = alice.build("introduction", to=bob.identity, ttl=3600, identity={"claims": []})
        proven["identity"]["claims"].append(pow_claim(proven, 10))
        t0 = time.perf_counter()
        await alice.send(proven)
        got = await _next(bob, "introduction")
        assert got["id"] == proven["id"]
        assert time.perf_counter() - t0 < 5
    finally:
        await alice.close()
        await bob.close()
