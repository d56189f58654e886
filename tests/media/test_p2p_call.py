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


async def test_video_frames_are_decoded_at_the_far_end(connect: ClientFactory) -> None:
    from aiortc import VideoStreamTrack

    alice = CallAgent(await connect())
    bob = CallAgent(await connect())
    await alice.start()
    await bob.start()
    a_media = WebRtcMedia(audio=ToneTrack(1000.0), video=VideoStreamTrack())
    b_media = WebRtcMedia(audio=ToneTrack(500.0), video=VideoStreamTrack())
    try:
        media, transports = await a_media.offer()
        assert [m["type"] for m in media] == ["audio", "video"]
        assert {"id": "codec:video/vp8"} in media[1]["codecs"]
        call = await alice.call(bob.client.identity, media=media, transports=transports)
        incoming = await bob.incoming(timeout=5)
        sel, ans = await b_media.answer(incoming.offer)
        await incoming.answer(media=sel, transports=ans)
        answered = await call.wait_for("answered", 10)
        assert answered.message is not None
        await a_media.accept(answered.message.payload)
        await a_media.wait_connected(15)
        track = await b_media.next_track("video")
        decoded = [await track.recv() for _ in range(10)]
        assert all(f.width == 640 and f.height == 480 for f in decoded)  # type: ignore[union-attr]
        await call.hangup()
    finally:
        await a_media.close()
        await b_media.close()
        await alice.close()
        await bob.close()


async def test_vanished_peer_ends_the_call_with_media_failed(connect: ClientFactory) -> None:
    import asyncio

    from dsip.media.webrtc import consent_timing, hang_up_on_media_failure

    consent_timing(interval=0.2, failures=3)
    alice = CallAgent(await connect())
    bob = CallAgent(await connect())
    await alice.start()
    await bob.start()
    a_media = WebRtcMedia(audio=ToneTrack(1000.0))
    b_media = WebRtcMedia(audio=ToneTrack(500.0))
    try:
        media, transports = await a_media.offer()
        call = await alice.call(bob.client.identity, media=media, transports=transports)
        incoming = await bob.incoming(timeout=5)
        sel, ans = await b_media.answer(incoming.offer)
        await incoming.answer(media=sel, transports=ans)
        answered = await call.wait_for("answered", 10)
        assert answered.message is not None
        await a_media.accept(answered.message.payload)
        await a_media.wait_connected(15)
        watcher = asyncio.create_task(hang_up_on_media_failure(a_media, call))
        # bob's device vanishes: its ICE agent stops answering consent checks
        for transceiver in b_media.pc.getTransceivers():
            await transceiver.sender.transport.transport.stop()
        assert await asyncio.wait_for(watcher, 20) == "media.failed"
        ended = await incoming.wait_for("ended", 5)
        assert ended.fields["reason"] == "media.failed"
    finally:
        consent_timing()
        await a_media.close()
        await b_media.close()
        await alice.close()
        await bob.close()


async def test_a_plain_rtp_offer_is_refused_before_any_media() -> None:
    from dsip.core.media_binding import MediaBindingError

    a_media, b_media = WebRtcMedia(audio=ToneTrack()), WebRtcMedia(audio=ToneTrack())
    try:
        media, transports = await a_media.offer()
        plain = dict(
            transports[0], sdp=transports[0]["sdp"].replace("UDP/TLS/RTP/SAVPF", "RTP/AVP")
        )
        with pytest.raises(MediaBindingError) as err:
            await b_media.answer({"media": media, "transports": [plain]})
        assert err.value.reason == "media.encryption-required"
        no_fp = dict(
            transports[0],
            sdp="".join(
                line
                for line in transports[0]["sdp"].splitlines(keepends=True)
                if not line.startswith("a=fingerprint")
            ),
        )
        with pytest.raises(MediaBindingError):
            await b_media.answer({"media": media, "transports": [no_fp]})
        assert b_media.pc.remoteDescription is None  # nothing was applied
    finally:
        await a_media.close()
        await b_media.close()
