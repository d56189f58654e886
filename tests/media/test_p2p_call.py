"""A signed DSIP call carrying real media: Opus audio both ways, tones detected at the far end."""

from __future__ import annotations

import pytest

from dsip.agent.calls import CallAgent
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import WebRtcMedia, loopback_only
from tests.relayfix import ClientFactory

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _loopback() -> object:
    loopback_only(True)
    yield None
    loopback_only(False)


async def test_p2p_call_with_tones_both_ways(connect: ClientFactory) -> None:
    alice = CallAgent(await connect())
    bob = CallAgent(await connect())
    await alice.start()
    await bob.start()
    a_media = WebRtcMedia(audio=ToneTrack(1000.0))
    b_media = WebRtcMedia(audio=ToneTrack(1500.0))
    try:
        media, transports = await a_media.offer()
        call = await alice.call(bob.client.identity, media=media, transports=transports)
        incoming = await bob.incoming(timeout=5)
        sel, ans_transports = await b_media.answer(incoming.offer)
        await incoming.answer(media=sel, transports=ans_transports)
        answered = await call.wait_for("answered", 10)
        assert answered.message is not None
        await a_media.accept(answered.message.payload)
        await a_media.wait_connected(15)
        at_bob = ToneDetector(await b_media.next_track("audio"))
        at_alice = ToneDetector(await a_media.next_track("audio"))
        got_bob = await at_bob.wait_for_tone(1000.0, timeout=15)
        got_alice = await at_alice.wait_for_tone(1500.0, timeout=15)
        assert abs(got_bob - 1000) <= 30
        assert abs(got_alice - 1500) <= 30
        await call.hangup()
        assert (await incoming.wait_for("ended", 5)).fields["reason"] == "user.hangup"
        at_bob.stop()
        at_alice.stop()
    finally:
        await a_media.close()
        await b_media.close()
        await alice.close()
        await bob.close()
