"""The relay over real wss on loopback: binding, routing, refusals, store-and-forward."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.services.relay import Relay
from dsip.transport.ws import connect_ws
from tests.relayfix import ClientFactory, RelayFactory, relay_uri

pytestmark = pytest.mark.timeout(60)


async def _next(client: SignalingClient, msg_type: str, timeout: float = 5.0) -> dict[str, object]:
    while True:
        v = await client.recv(timeout)
        if v.type == msg_type:
            return v.payload


async def test_hello_binds_and_relay_answers_with_capabilities(
    relay: Relay, connect: ClientFactory
) -> None:
    c = await connect()
    assert c.relay_did == relay.did
    assert c.capabilities["max_envelope_bytes"] == 65536
    assert relay.devices[c.device.did].identity == c.device.did


async def test_call_setup_and_teardown_through_the_relay(connect: ClientFactory) -> None:
    alice, bob = await connect(), await connect()
    invite = example_invite(alice.identity, bob.identity, now=int(time.time()))
    await alice.send(invite)
    got = await _next(bob, "invite")
    assert got["id"] == invite["id"]
    await bob.send(bob.build("progress", to=alice.identity, session=invite["id"], status="ringing"))
    assert (await _next(alice, "progress"))["status"] == "ringing"
    answer = bob.build(
        "answer",
        to=alice.identity,
        session=invite["id"],
        answered_by="user",
        media=[{"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]}],
        transports=[{"id": "transport:webrtc"}],
    )
    await bob.send(answer)
    assert (await _next(alice, "answer"))["answered_by"] == "user"
    await alice.send(
        alice.build("bye", to=bob.identity, session=invite["id"], reason="user.hangup")
    )
    assert (await _next(bob, "bye"))["reason"] == "user.hangup"


async def test_multi_device_fan_out(connect: ClientFactory) -> None:
    bob = KeyPair.generate()
    now = int(time.time())
    phones = []
    for _ in range(2):
        device = KeyPair.generate()
        deleg = issue_delegation(bob, device.did, issued_at=now - 5, expires_at=now + 3600)
        phones.append(await connect(device, identity=bob.did, delegations=[deleg]))
    alice = await connect()
    invite = example_invite(alice.identity, bob.did, now=now)
    await alice.send(invite)
    for phone in phones:
        assert (await _next(phone, "invite"))["id"] == invite["id"]
    # One device speaking for the identity reaches the caller, signed by the device.
    await phones[1].send(
        phones[1].build("progress", to=alice.identity, session=invite["id"], status="ringing")
    )
    v = await alice.recv(5)
    assert (v.type, v.identity, v.signer) == ("progress", bob.did, phones[1].device.did)


async def test_traffic_before_hello_gets_hello_required_and_connection_stays_usable(
    relay: Relay, client_ssl: ssl.SSLContext
) -> None:
    key = KeyPair.generate()
    conn = await connect_ws(relay_uri(relay), ssl_context=client_ssl)
    invite = example_invite(
        key.did, "did:key:z6MkrgXgMcSfqUQ6bhMEL1dhqvPYU4YaueY56Mw8aee9YN4R", now=int(time.time())
    )
    await conn.send(encode_frame(sign_envelope(invite, key)))
    v = Verifier().verify(await asyncio.wait_for(conn.recv(), 5), now=int(time.time()))
    assert (v.type, v.payload["reason"]) == ("error", "transport.hello-required")
    assert v.payload["in_reply_to"] == invite["id"]
    # Same connection: a hello now binds.
    client = SignalingClient(key)
    await client.connect("", connection=conn, timeout=5)
    assert client.relay_did == relay.did
    await client.close()


async def test_forged_and_replayed_envelopes_are_refused_and_not_routed(
    relay: Relay, connect: ClientFactory
) -> None:
    alice, bob = await connect(), await connect()
    invite = example_invite(alice.identity, bob.identity, now=int(time.time()))
    env = sign_envelope(invite, alice.device)
    forged = dict(
        env, payload=b64url_encode(b64url_decode(env["payload"]).replace(b"Alice", b"Eve!!"))
    )
    assert alice._conn is not None
    await alice._conn.send(encode_frame(forged))
    err = await _next(alice, "error")
    assert (err["reason"], err["detail"]) == ("transport.routing-refused", "signature-invalid")
    await alice._conn.send(encode_frame(env))
    assert (await _next(bob, "invite"))["id"] == invite["id"]
    await alice._conn.send(encode_frame(env))  # replay
    err = await _next(alice, "error")
    assert err["detail"] == "duplicate-id"
    with pytest.raises(TimeoutError):
        await bob.recv(0.5)  # neither the forgery nor the replay reached bob
    assert relay.stats["stored"] == 0


async def test_oversize_frame_closes_with_1009(relay: Relay, client_ssl: ssl.SSLContext) -> None:
    conn = await connect_ws(relay_uri(relay), ssl_context=client_ssl)
    await conn.send("x" * 65_537)
    with pytest.raises(Exception):  # noqa: B017,PT011 - ConnectionClosed, checked below
        await asyncio.wait_for(conn.recv(), 5)
    assert conn.close_code == 1009


async def test_unknown_recipient(connect: ClientFactory) -> None:
    alice = await connect()
    stranger = KeyPair.generate().did
    await alice.send(example_invite(alice.identity, stranger, now=int(time.time())))
    err = await _next(alice, "error")
    assert err["reason"] == "transport.unknown-recipient"


async def test_offline_known_identity_gets_stored_and_delivered_on_reconnect(
    relay: Relay, connect: ClientFactory
) -> None:
    bob_key = KeyPair.generate()
    bob = await connect(bob_key)
    await bob.close()
    await asyncio.sleep(0.1)
    alice = await connect()
    intro = alice.build(
        "introduction",
        to=bob_key.did,
        purpose="Hello from the conference",
        ttl=3600,
        identity={"display_name": "Alice", "claims": []},
    )
    await alice.send(intro)
    for _ in range(50):
        if relay.stats["stored"]:
            break
        await asyncio.sleep(0.05)
    assert (await relay.store.stats(bob_key.did)).envelopes == 1
    bob2 = await connect(bob_key)
    got = await _next(bob2, "introduction")
    assert got["id"] == intro["id"]
    for _ in range(50):  # the ack removes the stored copy
        if (await relay.store.stats(bob_key.did)).envelopes == 0:
            break
        await asyncio.sleep(0.05)
    assert (await relay.store.stats(bob_key.did)).envelopes == 0


async def test_invite_rate_limit(make_relay: RelayFactory, client_ssl: ssl.SSLContext) -> None:
    relay = await make_relay(invites_per_minute=6)  # burst of 1 invite
    alice = SignalingClient(KeyPair.generate())
    bob = SignalingClient(KeyPair.generate())
    for c in (alice, bob):
        await c.connect(relay_uri(relay), ssl_context=client_ssl, timeout=5)
    now = int(time.time())
    await alice.send(example_invite(alice.identity, bob.identity, now=now))
    await alice.send(example_invite(alice.identity, bob.identity, now=now))
    err = await _next(alice, "error")
    assert err["reason"] == "policy.rate-limited"
    assert int(err["retry_after"]) >= 1  # type: ignore[call-overload]
    await alice.close()
    await bob.close()


async def test_new_hello_from_same_device_replaces_old_connection(
    relay: Relay, connect: ClientFactory
) -> None:
    key = KeyPair.generate()
    first = await connect(key)
    second = await connect(key)
    assert relay.devices[key.did] is not None
    with pytest.raises(Exception):  # noqa: B017,PT011 - the old connection is closed by the relay
        await first.recv(5)
    assert second.connected


async def test_relay_survives_garbage(
    relay: Relay, client_ssl: ssl.SSLContext, connect: ClientFactory
) -> None:
    conn = await connect_ws(relay_uri(relay), ssl_context=client_ssl)
    for junk in ["", "{", "[]", '{"protected":1}', "\u0000" * 10, '{"a":1,"a":2}', b"\x00\x01"]:
        await conn.send(junk)
    # every junk frame got an error (or, for binary, a refusal); the relay still serves others
    errors = []
    for _ in range(6):
        errors.append(
            Verifier().verify(await asyncio.wait_for(conn.recv(), 5), now=int(time.time()))
        )
    assert all(e.type == "error" for e in errors)
    alice, bob = await connect(), await connect()
    payload = make_payload(
        "introduction",
        sender=alice.identity,
        now=int(time.time()),
        to=bob.identity,
        purpose="still alive?",
        identity={"display_name": "Alice", "claims": []},
    )
    await alice.send(payload)
    assert (await _next(bob, "introduction"))["purpose"] == "still alive?"
