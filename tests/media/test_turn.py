"""TURN: the relay hands short-lived REST credentials to authenticated DIDs; media flows through
a real coturn with relay-only ICE; coturn refuses expired credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dsip.agent.calls import CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.core.identity import KeyPair
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import WebRtcMedia, ice_servers_from, loopback_only
from dsip.services.coturn import Coturn
from tests.relayfix import RelayFactory, relay_uri

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    loopback_only(True)
    yield
    loopback_only(False)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    server = Coturn(tmp_path_factory.mktemp("coturn")).start()
    yield server
    server.stop()


async def _relay_call_through_turn(
    make_relay: RelayFactory, client_ssl: object, coturn: Coturn
) -> tuple[float, float]:
    relay = await make_relay()
    relay.turn = lambda did, token: coturn.credentials(did, ttl=300).as_capability()
    a_client, b_client = SignalingClient(KeyPair.generate()), SignalingClient(KeyPair.generate())
    for c in (a_client, b_client):
        await c.connect(relay_uri(relay), ssl_context=client_ssl)  # type: ignore[arg-type]
        assert c.capabilities["turn"]["username"].endswith(":" + c.identity)
    alice, bob = CallAgent(a_client), CallAgent(b_client)
    await alice.start()
    await bob.start()
    a_media = WebRtcMedia(
        audio=ToneTrack(1000.0),
        ice_servers=ice_servers_from(a_client.capabilities),
        relay_only=True,
    )
    b_media = WebRtcMedia(
        audio=ToneTrack(700.0), ice_servers=ice_servers_from(b_client.capabilities), relay_only=True
    )
    try:
        media, transports = await a_media.offer()
        assert "typ relay" in transports[0]["sdp"]
        assert "typ host" not in transports[0]["sdp"]  # relay-only: no host candidates offered
        call = await alice.call(b_client.identity, media=media, transports=transports)
        incoming = await bob.incoming(timeout=5)
        sel, ans = await b_media.answer(incoming.offer)
        await incoming.answer(media=sel, transports=ans)
        answered = await call.wait_for("answered", 10)
        assert answered.message is not None
        await a_media.accept(answered.message.payload)
        await a_media.wait_connected(20)
        at_bob = ToneDetector(await b_media.next_track("audio"))
        at_alice = ToneDetector(await a_media.next_track("audio"))
        got = (
            await at_bob.wait_for_tone(1000.0, timeout=20),
            await at_alice.wait_for_tone(700.0, timeout=20),
        )
        at_bob.stop()
        at_alice.stop()
        await call.hangup()
        return got
    finally:
        await a_media.close()
        await b_media.close()
        await alice.close()
        await bob.close()


async def test_relay_only_media_flows_through_coturn(
    make_relay: RelayFactory, client_ssl: object, coturn: Coturn
) -> None:
    f_bob, f_alice = await _relay_call_through_turn(make_relay, client_ssl, coturn)
    assert abs(f_bob - 1000) <= 30
    assert abs(f_alice - 700) <= 30


async def test_expired_credentials_are_refused_by_coturn(coturn: Coturn) -> None:
    import time

    expired = coturn.credentials("did:key:z6Mkexpired", ttl=-60, now=int(time.time()))
    from aiortc import RTCIceServer

    server = RTCIceServer(
        urls=[coturn.uri], username=expired.username, credential=expired.credential
    )
    media = WebRtcMedia(audio=ToneTrack(), ice_servers=[server], relay_only=True)
    try:
        _, transports = await media.offer()
        assert "typ relay" not in transports[0]["sdp"]  # no allocation: coturn said 401
    finally:
        await media.close()
    log = (coturn.workdir / "turnserver.log").read_text(errors="replace")
    # coturn's own account of the refusal: an expired REST username has no credentials.
    assert f"Cannot find credentials of user <{expired.username}>" in log
