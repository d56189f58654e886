"""Metering end to end: a prepaid token buys TURN time; at zero balance coturn's allocations
are cancelled and the device receives a signed usage record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.identity import KeyPair
from dsip.core.metering import issue_access_token
from dsip.media.tone import ToneTrack
from dsip.media.webrtc import WebRtcMedia, ice_servers_from, loopback_only
from dsip.services.coturn import Coturn
from dsip.services.relay import Relay
from dsip.services.turn_service import TurnService
from tests.relayfix import RelayFactory, relay_uri

pytestmark = pytest.mark.timeout(120)
INTERVAL = 0.5


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    loopback_only(True)
    yield
    loopback_only(False)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    server = Coturn(tmp_path_factory.mktemp("coturn-meter")).start()
    yield server
    server.stop()


async def _metered_relay(make_relay: RelayFactory, coturn: Coturn) -> tuple[Relay, TurnService]:
    relay = await make_relay()
    service = TurnService(
        coturn,
        relay.key,
        signer_did=relay.did,
        require_token=True,
        interval=INTERVAL,
        throttle_window=1,
    )
    relay.turn = service.credentials
    service.notify = relay._notify
    return relay, service


async def test_token_gates_turn(
    make_relay: RelayFactory, client_ssl: object, coturn: Coturn
) -> None:
    relay, service = await _metered_relay(make_relay, coturn)
    now = int(time.time())
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    good = issue_access_token(
        relay.key,
        subject=alice.did,
        balance_msat=60_000,
        msat_per_second=1000,
        now=now,
        audience=("turn",),
    )
    stolen = issue_access_token(
        relay.key,
        subject=mallory.did,
        balance_msat=60_000,
        msat_per_second=1000,
        now=now,
        audience=("turn",),
    )
    self_made = issue_access_token(
        mallory,
        subject=mallory.did,
        balance_msat=10**9,
        msat_per_second=1,
        now=now,
        audience=("turn",),
    )
    cases = [
        (alice, None, False),
        (alice, good, True),
        (alice, stolen, False),
        (mallory, self_made, False),
    ]
    for key, token, gets_turn in cases:
        client = SignalingClient(key, access_token=token)
        await client.connect(relay_uri(relay), ssl_context=client_ssl)  # type: ignore[arg-type]
        assert ("turn" in client.capabilities) is gets_turn
        await client.close()
    await service.close()


async def test_zero_balance_cuts_turn_at_the_expected_time(
    make_relay: RelayFactory, client_ssl: object, coturn: Coturn
) -> None:
    relay, service = await _metered_relay(make_relay, coturn)
    now = int(time.time())
    alice, bob = KeyPair.generate(), KeyPair.generate()
    tokens = {
        alice: issue_access_token(
            relay.key,
            subject=alice.did,
            balance_msat=3000,
            msat_per_second=1000,
            now=now,
            audience=("turn",),
        ),
        bob: issue_access_token(
            relay.key,
            subject=bob.did,
            balance_msat=600_000,
            msat_per_second=1000,
            now=now,
            audience=("turn",),
        ),
    }
    clients = {}
    for key, token in tokens.items():
        clients[key] = SignalingClient(key, access_token=token)
        await clients[key].connect(relay_uri(relay), ssl_context=client_ssl)  # type: ignore[arg-type]
    am = WebRtcMedia(
        audio=ToneTrack(1000.0),
        ice_servers=ice_servers_from(clients[alice].capabilities),
        relay_only=True,
    )
    bm = WebRtcMedia(
        audio=ToneTrack(600.0),
        ice_servers=ice_servers_from(clients[bob].capabilities),
        relay_only=True,
    )
    try:
        offer_media, offer = await am.offer()
        answer_media, answer = await bm.answer({"media": offer_media, "transports": offer})
        await am.accept({"media": answer_media, "transports": answer})
        await am.wait_connected(20)
        # the meter starts at alice's first allocation, seen on the next metering tick
        for _ in range(50):
            grant = service.grants.get(alice.did)
            if grant is not None and grant.meter is not None:
                break
            await asyncio.sleep(0.1)
        assert grant is not None
        assert grant.meter is not None
        started = grant.meter.started_at
        record = None
        while record is None:
            v = await clients[alice].recv(15)
            if v.type == "usage-record" and v.payload["state"] == "cut":
                record = v
        cut_at = time.time()
        assert (
            record.signer == relay.key.did
        )  # signed by the relay's key, verified by alice's client
        assert record.payload["debited_msat"] == 3000
        assert record.payload["balance_msat"] == 0
        # 3,000 msat at 1,000 msat/s: cut 3 s after the first allocation, ± one metering interval
        assert abs((cut_at - started) - 3.0) <= INTERVAL + 1.0
        assert await coturn.cli().sessions(alice.did) == []
        assert bob.did in service.grants  # bob's own balance is untouched
    finally:
        await am.close()
        await bm.close()
        for c in clients.values():
            await c.close()
        await service.close()
