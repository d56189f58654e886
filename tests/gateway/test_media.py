"""The media bridge: a 1 kHz tone from a DSIP agent (WebRTC) through the gateway to a SIP
phone (plain RTP/PCMU; SIPp echoing every RTP packet back) and back again, detected at the
DSIP end by FFT — both directions of the bridge carry it."""

from __future__ import annotations

import asyncio

import pytest

from dsip.agent.calls import CallAgent
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import WebRtcMedia, loopback_only
from dsip.services.ports import free_port
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import SippServer, run_sipp

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _loopback() -> None:
    loopback_only()


async def test_tone_inbound_sip_phone_echoes(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    gw = await gateway_factory(media_bridge=True)
    media = WebRtcMedia(audio=ToneTrack(1000.0))

    async def callee() -> float:
        call = await agent.incoming(timeout=10)
        selection, transports = await media.answer(call.offer)
        await call.answer(media=selection, transports=transports)
        track = await media.next_track("audio", timeout=10)
        detector = ToneDetector(track)
        try:
            heard = await detector.wait_for_tone(1000.0, timeout=10)
        finally:
            detector.stop()
        # the tone went out as RTP to the phone and came back as RTP
        (bridge,) = gw._bridges
        assert bridge.rtp is not None
        assert bridge.rtp.sent > 25
        assert bridge.rtp.received > 25
        return heard

    task = asyncio.create_task(callee())
    local = str(free_port(udp=True, tcp=False))
    res = await run_sipp(
        "-sn", "uac", f"127.0.0.1:{gw.config.sip.port}", "-p", local, "-m", "1",
        "-d", "4500", "-rtp_echo", "-mp", str(free_port(udp=True, tcp=False)),
    )  # fmt: skip
    assert res.returncode == 0, res.output[-2000:]
    heard = await asyncio.wait_for(task, 5)
    assert abs(heard - 1000.0) < 30
    await media.pc.close()


async def test_tone_outbound_sip_phone_echoes(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    media = WebRtcMedia(audio=ToneTrack(1000.0))
    async with SippServer("uas", extra=("-rtp_echo", "-d", "6000")) as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port), media_bridge=True)
        offer_media, transports = await media.offer()
        call = await agent.call(gw.did, media=offer_media, transports=transports)
        await call.wait_for("answered", 10)
        assert call.answer_payload is not None
        await media.accept(call.answer_payload)
        track = await media.next_track("audio", timeout=10)
        detector = ToneDetector(track)
        try:
            heard = await detector.wait_for_tone(1000.0, timeout=10)
        finally:
            detector.stop()
        assert abs(heard - 1000.0) < 30
        (bridge,) = gw._bridges
        assert bridge.rtp is not None
        assert bridge.rtp.sent > 25
        assert bridge.rtp.received > 25
        await call.hangup()
        await media.pc.close()
