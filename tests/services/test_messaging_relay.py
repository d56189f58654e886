"""1:1 messaging through a real relay: prekeys/1.0 publish and claim, X3DH first message,
ratchet replies, a message stored while the recipient is offline, and hostile frames.

Each side keeps its sessions in its own encrypted SQLite file; the relay's prekey store is
another SQLite file. What the relay stores for an offline device is only ciphertext.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dsip.agent.messaging import MessagingAgent
from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verifier, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError
from dsip.messaging.messages import Messenger, message_aad
from dsip.messaging.prekeys import PrekeyStore
from dsip.messaging.session_store import SessionStore
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store
from tests.relayfix import relay_uri

pytestmark = pytest.mark.timeout(60)
KEY_A, KEY_B = b"a" * 32, b"b" * 32  # TEST FIXTURE ONLY: session-store keys


@pytest.fixture
async def prekey_relay(tmp_path: Path, local_ca: LocalCA) -> AsyncIterator[Relay]:
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp_path}/relay.db")
    relay = Relay(
        cfg,
        KeyPair.generate(),
        await open_store(cfg.store),
        server_ssl=local_ca.server_context(),
        prekeys=PrekeyStore.open(tmp_path / "prekeys.db"),
    )
    await relay.start()
    yield relay
    await relay.stop()


async def _agent(
    relay: Relay, ctx: ssl.SSLContext, key: KeyPair, store: SessionStore
) -> MessagingAgent:
    client = SignalingClient(key, verifier=Verifier())
    await client.connect(relay_uri(relay), ssl_context=ctx, timeout=5)
    return MessagingAgent(client, Messenger(key, store), timeout=5)


async def test_first_message_reply_and_offline_delivery(
    prekey_relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    a_key, b_key = KeyPair.generate(), KeyPair.generate()
    a_store = SessionStore.open(tmp_path / "alice.db", key=KEY_A)
    b_store = SessionStore.open(tmp_path / "bob.db", key=KEY_B)
    alice = await _agent(prekey_relay, client_ssl, a_key, a_store)
    bob = await _agent(prekey_relay, client_ssl, b_key, b_store)
    try:
        await bob.publish_prekeys(target=5)
        assert prekey_relay.prekeys is not None
        assert prekey_relay.prekeys.available(b_key.did) == 5

        sent = await alice.send_text(b_key.did, "hello bob")
        assert [o.device for o in sent.outbound] == [b_key.did]
        assert prekey_relay.prekeys.available(b_key.did) == 4  # one one-time prekey claimed
        got = await bob.receive()
        assert got.message["body"] == "hello bob"
        assert got.sender_identity == a_key.did
        assert got.new_session

        await bob.send_text(a_key.did, "hi alice")  # bob answers on the ratchet: no claim
        assert prekey_relay.prekeys.available(a_key.did) == 0
        back = await alice.receive()
        assert back.message["body"] == "hi alice"
        assert not back.new_session

        # bob goes offline; the relay keeps alice's next message (ciphertext only)
        await bob.client.close()
        await alice.send_text(b_key.did, "while you were away")
        stored = []
        for _ in range(100):  # the relay stores it once the frame arrived
            stored = await prekey_relay.store.pending(b_key.did, limit=10, now=0)
            if stored:
                break
            await asyncio.sleep(0.05)
        held = [json.loads(b64url_decode(json.loads(s.wire)["payload"])) for s in stored]
        assert [h["type"] for h in held] == ["msg"]
        assert "while you were away" not in json.dumps(held)
        bob = await _agent(prekey_relay, client_ssl, b_key, b_store)
        late = await bob.receive()
        assert late.message["body"] == "while you were away"
        assert [m.body["body"] for m in bob.messenger.history(None)] == [
            "hello bob",
            "hi alice",
            "while you were away",
        ]
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_tampered_msg_is_refused_and_changes_nothing(
    prekey_relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    a_key, b_key = KeyPair.generate(), KeyPair.generate()
    b_store = SessionStore.open(tmp_path / "bob.db", key=KEY_B)
    alice = await _agent(
        prekey_relay, client_ssl, a_key, SessionStore.open(tmp_path / "a.db", key=KEY_A)
    )
    bob = await _agent(prekey_relay, client_ssl, b_key, b_store)
    try:
        await bob.publish_prekeys(target=2)
        # a msg whose ciphertext has one bit flipped (re-signed by alice, so the envelope
        # verifies): bob's ratchet refuses it and his store is unchanged
        await alice.claim(b_key.did)
        good = alice.messenger.conversation(b_key.did).send_text(
            "real", now=int(alice.client.clock())
        )
        payload = dict(good.outbound[0].payload)
        ct = b64url_decode(payload["content"]["ciphertext"])
        forged_id = new_ulid(int(alice.client.clock() * 1000))
        payload["id"] = forged_id
        payload["content"] = dict(
            payload["content"],
            ciphertext=b64url_encode(ct[:-1] + bytes([ct[-1] ^ 1])),
            aad=b64url_encode(message_aad(a_key.did, b_key.did, forged_id)),
        )
        await alice.client.send_frame(encode_frame(sign_envelope(payload, a_key)))
        with pytest.raises(DsipError):
            await bob.receive()
        assert bob.messenger.history(None) == []
        # the genuine message still decrypts afterwards: the refused one changed nothing
        await alice.client.send_frame(good.outbound[0].frame)
        got = await bob.receive()
        assert got.message["body"] == "real"
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_relay_without_prekey_service_refuses_publish(
    relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    key = KeyPair.generate()
    agent = await _agent(relay, client_ssl, key, SessionStore.open(tmp_path / "x.db", key=KEY_A))
    try:
        with pytest.raises(DsipError) as err:
            await agent.publish_prekeys(target=1)
        assert err.value.reason == "transport.routing-refused"
    finally:
        await agent.client.close()


async def test_push_wake_for_an_unknown_envelope_is_refused_and_changes_nothing(
    prekey_relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    a_key, b_key = KeyPair.generate(), KeyPair.generate()
    b_store = SessionStore.open(tmp_path / "bob.db", key=KEY_B)
    alice = await _agent(
        prekey_relay, client_ssl, a_key, SessionStore.open(tmp_path / "a.db", key=KEY_A)
    )
    bob = await _agent(prekey_relay, client_ssl, b_key, b_store)
    try:
        await bob.publish_prekeys(target=2)
        await alice.send_text(b_key.did, "first")
        assert (await bob.receive()).message["body"] == "first"
        before = b_store.snapshot()
        hostile: list[tuple[dict[str, object], str, str]] = [
            (
                {"relay": prekey_relay.did, "envelope_id": new_ulid(0)},
                "push-unknown-envelope",
                "session.unknown-session",
            ),
            (
                {"relay": "did:web:elsewhere.example", "envelope_id": new_ulid(0)},
                "push-unknown-relay",
                "transport.routing-refused",
            ),
            ({"relay": prekey_relay.did, "envelope_id": "../x"}, "push-invalid", "session.failed"),
            ({"relay": prekey_relay.did}, "push-invalid", "session.failed"),
        ]
        for push, code, reason in hostile:
            with pytest.raises(DsipError) as err:
                await bob.wake(push, settle=0.3)
            assert (err.value.code, err.value.reason) == (code, reason)
            assert b_store.snapshot() == before
        # a genuine push: bob was offline, the relay held the message and named it
        await bob.client.close()
        sent = await alice.send_text(b_key.did, "wake up")
        held_id = sent.outbound[0].payload["id"]
        bob = await _agent(prekey_relay, client_ssl, b_key, b_store)
        got = await bob.wake({"relay": prekey_relay.did, "envelope_id": held_id})
        assert [r.message["body"] for r in got] == ["wake up"]
        assert await bob.wake({"relay": prekey_relay.did, "envelope_id": held_id}) == []
    finally:
        await alice.client.close()
        await bob.client.close()


async def test_multi_device_over_the_relay_every_device_and_a_copy(
    prekey_relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path
) -> None:
    """bob has a phone and a laptop (delegated device keys), alice a phone and a tablet:
    alice's phone reaches both of bob's devices and copies itself to alice's tablet."""
    now = int(time.time())
    ids = {"alice": KeyPair.generate(), "bob": KeyPair.generate()}
    agents: dict[str, MessagingAgent] = {}
    for label, owner in (
        ("alice-phone", "alice"),
        ("alice-tablet", "alice"),
        ("bob-phone", "bob"),
        ("bob-laptop", "bob"),
    ):
        device = KeyPair.generate()
        deleg = [issue_delegation(ids[owner], device.did, issued_at=now - 5, expires_at=now + 3600)]
        client = SignalingClient(
            device, identity=ids[owner].did, delegations=deleg, verifier=Verifier()
        )
        await client.connect(relay_uri(prekey_relay), ssl_context=client_ssl, timeout=5)
        store = SessionStore.open(tmp_path / f"{label}.db", key=KEY_A)
        messenger = Messenger(device, store, identity=ids[owner].did, delegations=deleg)
        agents[label] = MessagingAgent(client, messenger, timeout=5)
    try:
        for agent in agents.values():
            await agent.publish_prekeys(target=3)
        sent = await agents["alice-phone"].send_text(ids["bob"].did, "to all of bob")
        assert {o.device for o in sent.outbound} == {
            agents[x].messenger.device.did for x in ("bob-phone", "bob-laptop", "alice-tablet")
        }
        for label in ("bob-phone", "bob-laptop", "alice-tablet"):
            got = await agents[label].receive()
            assert got.message["body"] == "to all of bob"
            assert got.sender_identity == ids["alice"].did
            assert got.copy == (label == "alice-tablet")
        reply = await agents["bob-laptop"].send_text(ids["alice"].did, "from bob's laptop")
        assert len(reply.outbound) == 3  # alice's two devices and bob's phone
        for label in ("alice-phone", "alice-tablet", "bob-phone"):
            got = await agents[label].receive()
            assert got.message["body"] == "from bob's laptop"
    finally:
        for agent in agents.values():
            await agent.client.close()
            agent.messenger.store.close()
