"""A relay on loopback enforcing its policy hook (§19.4): unproven introductions and
community-blocked callers are refused with the rule that fired; others get through."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dsip.agent.calls import DEFAULT_AUDIO_OFFER, DEFAULT_TRANSPORTS
from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.core.trust.first_contact import CommunityLists, pow_claim, publish_list
from dsip.core.trust.policy import TrustPolicy, relay_first_contact_hook
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store
from tests.relayfix import relay_uri
from tests.trust.trustfix import LISTS, NOW, World

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
        # the error says which rule fired and why, not just the token
        assert str(err["detail"]).startswith("reject by rule 'introduction-proof'")
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


BLOCKLIST_POLICY = f"""
version = 1
scope = "relay"
[defaults]
action = "allow"
[[lists]]
publisher = "{LISTS}"
id = "robocallers"
[[rules]]
id = "community-block"
when = {{ listed = "block" }}
action = "reject"
reason = "policy:blocked"
"""


async def test_community_block_list_enforced_by_the_relay(
    tmp_path: Path, local_ca: LocalCA, client_ssl: ssl.SSLContext
) -> None:
    world = World()
    spammer, caller, bob = (KeyPair.generate() for _ in range(3))
    lists = CommunityLists(world.documents)
    entry = {"did": spammer.did, "reason": "412 robocall reports"}
    lists.add(
        publish_list(world.lists, "robocallers", "block", [entry], version=3, now=NOW), now=NOW
    )
    hook = relay_first_contact_hook(
        TrustPolicy.from_toml(BLOCKLIST_POLICY), lists=lists, clock=lambda: NOW
    )
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp_path}/relay.db")
    relay = Relay(
        cfg,
        KeyPair.generate(),
        await open_store(cfg.store),
        server_ssl=local_ca.server_context(),
        first_contact=hook,
    )
    await relay.start()
    clients = [SignalingClient(k, verifier=Verifier()) for k in (spammer, caller, bob)]
    try:
        for c in clients:
            await c.connect(relay_uri(relay), ssl_context=client_ssl, timeout=5)
        s_client, c_client, b_client = clients
        invite = s_client.build(
            "invite", to=bob.did, media=DEFAULT_AUDIO_OFFER, transports=DEFAULT_TRANSPORTS
        )
        await s_client.send(invite)
        err = await _next(s_client, "error")
        assert (err["reason"], err["in_reply_to"]) == ("policy.blocked", invite["id"])
        detail = str(err["detail"])
        assert detail.startswith(
            "reject by rule 'community-block' (policy.blocked, policy:blocked)"
        )
        assert "list 'robocallers' v3" in detail
        assert "412 robocall reports" in detail
        ok = c_client.build(
            "invite", to=bob.did, media=DEFAULT_AUDIO_OFFER, transports=DEFAULT_TRANSPORTS
        )
        await c_client.send(ok)
        got = await _next(b_client, "invite")
        assert got["id"] == ok["id"]
    finally:
        for c in clients:
            await c.close()
        await relay.stop()
