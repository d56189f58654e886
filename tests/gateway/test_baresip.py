"""baresip as a real softphone on the gateway's SIP side, with audio both ways.

The phone sends 700 Hz (``ausine``), the DSIP agent sends 1 kHz over WebRTC; each end
detects the other's tone (the agent by FFT on its WebRTC track, the phone by FFT on its
dump of the decoded PCMU it received)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dsip.agent.calls import CallAgent
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import WebRtcMedia, loopback_only
from tests.gateway.baresip import Baresip
from tests.gateway.conftest import GatewayFactory

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _loopback() -> None:
    loopback_only()


async def test_baresip_calls_a_dsip_agent(
    gateway_factory: GatewayFactory, agent: CallAgent, tmp_path: Path
) -> None:
    gw = await gateway_factory(media_bridge=True)
    phone = Baresip(tmp_path, tone=700)
    media = WebRtcMedia(audio=ToneTrack(1000.0))
    await phone.start(f"/dial sip:15550100@127.0.0.1:{gw.config.sip.port}", seconds=30)
    try:
        call = await agent.incoming(timeout=10)
        selection, transports = await media.answer(call.offer)
        await call.answer(media=selection, transports=transports)
        detector = ToneDetector(await media.next_track("audio", timeout=10))
        try:
            heard = await detector.wait_for_tone(700.0, timeout=10)
        finally:
            detector.stop()
        assert abs(heard - 700.0) < 30
        await asyncio.sleep(2)  # let the phone record a while of the agent's tone
        await call.hangup()
        out = await phone.wait_for_text("terminated (", "session closed", timeout=10)
        await phone.stop()
        assert abs(phone.heard() - 1000.0) < 30, out[-2000:]
    finally:
        await phone.stop()
        await media.pc.close()


async def test_dsip_agent_calls_baresip(
    gateway_factory: GatewayFactory, agent: CallAgent, tmp_path: Path
) -> None:
    phone = Baresip(tmp_path, tone=700)
    await phone.start(seconds=30)  # auto-answers (answermode=auto)
    media = WebRtcMedia(audio=ToneTrack(1000.0))
    try:
        await asyncio.sleep(0.5)
        gw = await gateway_factory(
            trunk=("127.0.0.1", phone.port), outbound_user="phone", media_bridge=True
        )
        offer, transports = await media.offer()
        call = await agent.call(gw.did, media=offer, transports=transports)
        await call.wait_for("answered", 10)
        assert call.answer_payload is not None
        await media.accept(call.answer_payload)
        detector = ToneDetector(await media.next_track("audio", timeout=10))
        try:
            heard = await detector.wait_for_tone(700.0, timeout=10)
        finally:
            detector.stop()
        assert abs(heard - 700.0) < 30
        await asyncio.sleep(2)
        await call.hangup()
        await phone.wait_for_text("terminated (", "session closed", timeout=10)
        await phone.stop()  # the BYE reached the phone, which closed its dump
        assert abs(phone.heard() - 1000.0) < 30
    finally:
        await phone.stop()
        await media.pc.close()
