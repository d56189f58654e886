"""Relay faults and options: COSE negotiation, slow consumers, PostgreSQL store."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.identity import KeyPair
from dsip.services.relay import Relay
from dsip.transport.base import COSE_EXTENSION
from dsip.transport.hello import ACK_EXTENSION, client_hello
from dsip.transport.ws import connect_ws
from tests.relayfix import ClientFactory, RelayFactory, relay_uri

pytestmark = pytest.mark.timeout(60)
IDENTITY = {"display_name": "Test", "claims": []}


async def _next(client: SignalingClient, msg_type: str, timeout: float = 5.0) -> dict[str, object]:
    while True:
        v = await client.recv(timeout)
        if v.type == msg_type:
            return v.payload


async def test_cose_is_negotiated_in_hello_and_routed_as_bytes(connect: ClientFactory) -> None:
    alice = await connect(extensions=(ACK_EXTENSION, COSE_EXTENSION))
    bob = await connect(extensions=(ACK_EXTENSION, COSE_EXTENSION))
    carol = await connect()  # JOSE only
    assert COSE_EXTENSION in alice.negotiated
    assert COSE_EXTENSION not in carol.negotiated
    intro = alice.build("introduction", to=bob.identity, purpose="cbor!", identity=IDENTITY)
    assert isinstance(alice.seal(intro), bytes)
    await alice.send(intro)
    assert (await _next(bob, "introduction"))["purpose"] == "cbor!"
    # carol cannot read COSE: the relay refuses rather than re-encode a signed envelope
    await alice.send(alice.build("introduction", to=carol.identity, purpose="x", identity=IDENTITY))
    err = await _next(alice, "error")
    assert err["reason"] == "session.unsupported-wire-format"


async def test_binary_frames_without_negotiation_are_refused(
    relay: Relay, client_ssl: ssl.SSLContext
) -> None:
    from dsip.core.cose import sign_cose

    key = KeyPair.generate()
    client = SignalingClient(key)  # no COSE offered
    await client.connect(relay_uri(relay), ssl_context=client_ssl)
    assert client._conn is not None
    payload = client.build("introduction", to=key.did, purpose="x", identity=IDENTITY)
    await client._conn.send(sign_cose(payload, key))
    err = await _next(client, "error")
    assert err["reason"] == "session.unsupported-wire-format"
    await client.close()


async def test_a_slow_reader_never_blocks_others(
    make_relay: RelayFactory, client_ssl: ssl.SSLContext
) -> None:
    relay = await make_relay(
        send_queue=8, envelopes_per_minute=10**6, ip_envelopes_per_minute=10**7
    )
    uri = relay_uri(relay)
    # The slow device: binds with hello, then never reads again.
    slow_key = KeyPair.generate()
    slow = await connect_ws(uri, ssl_context=client_ssl)
    _, hello = client_hello(slow_key, now=int(time.time()))
    await slow.send(hello)
    await asyncio.wait_for(slow.recv(), 5)
    flooder = SignalingClient(KeyPair.generate())
    alice, bob = SignalingClient(KeyPair.generate()), SignalingClient(KeyPair.generate())
    for c in (flooder, alice, bob):
        await c.connect(uri, ssl_context=client_ssl)
    big = "x" * 250  # purpose max is 280 characters; many frames fill the socket buffers
    flood_frames = [
        flooder.seal(flooder.build("introduction", to=slow_key.did, purpose=big, identity=IDENTITY))
        for _ in range(3000)
    ]

    async def flood() -> None:
        assert flooder._conn is not None
        for f in flood_frames:
            await flooder._conn.send(f)

    flood_task = asyncio.create_task(flood())
    # Meanwhile alice and bob keep talking, with bounded latency.
    for i in range(20):
        t0 = time.monotonic()
        await alice.send(
            alice.build("introduction", to=bob.identity, purpose=f"ping {i}", identity=IDENTITY)
        )
        assert (await _next(bob, "introduction", timeout=2))["purpose"] == f"ping {i}"
        assert time.monotonic() - t0 < 2
    await asyncio.wait_for(flood_task, 30)
    for _ in range(100):  # the relay cut the slow reader loose...
        if slow_key.did not in relay.devices:
            break
        await asyncio.sleep(0.1)
    assert slow_key.did not in relay.devices
    assert (
        await relay.store.stats(slow_key.did)
    ).envelopes > 0  # ...and kept what it could not send
    for c in (flooder, alice, bob):
        await c.close()


async def test_relay_on_postgresql(
    postgres_url: str, local_ca: object, client_ssl: ssl.SSLContext
) -> None:
    from dsip.config import RelayConfig
    from dsip.services.localca import LocalCA
    from dsip.storage import open_store

    assert isinstance(local_ca, LocalCA)
    store = await open_store(postgres_url)
    relay = Relay(
        RelayConfig(ws_port=0, store=postgres_url),
        KeyPair.generate(),
        store,
        server_ssl=local_ca.server_context(),
    )
    await relay.start()
    try:
        bob_key = KeyPair.generate()
        bob = SignalingClient(bob_key)
        await bob.connect(relay_uri(relay), ssl_context=client_ssl)
        await bob.close()
        alice = SignalingClient(KeyPair.generate())
        await alice.connect(relay_uri(relay), ssl_context=client_ssl)
        intro = alice.build(
            "introduction", to=bob_key.did, purpose="via postgres", identity=IDENTITY, ttl=600
        )
        await alice.send(intro)
        for _ in range(100):
            if (await store.stats(bob_key.did)).envelopes:
                break
            await asyncio.sleep(0.05)
        bob = SignalingClient(bob_key)
        await bob.connect(relay_uri(relay), ssl_context=client_ssl)
        assert (await _next(bob, "introduction"))["id"] == intro["id"]
        await alice.close()
        await bob.close()
    finally:
        await relay.stop()
