"""The gateway's media bridge: WebRTC (ICE/DTLS-SRTP, Opus) on the DSIP leg ⇄ plain RTP
(G.711 µ-law, RFC 3551) on the SIP leg — one :class:`RtpBridge` per call.

Libraries: **aiortc** does everything on both sides that is protocol: the peer connection on
the DSIP leg (:class:`~dsip.media.webrtc.WebRtcMedia`), and for the trunk the RTP packet
format (``aiortc.rtp.RtpPacket``) and the PCMU codec (``aiortc.codecs``, which resamples to
and from 8 kHz mono). This module only moves frames: RTP from the trunk becomes the audio
track the DSIP peer receives; the track the DSIP peer sends becomes RTP toward the address in
the trunk's SDP. SDES-SRTP toward the trunk is not offered (the SDP says ``RTP/AVP``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import random
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av import AudioFrame

__all__ = ["RtpBridge"]

logger = logging.getLogger("dsip.gateway.media")

_PCMU_PT = 0  # RFC 3551 static payload type
_PCMU = RTCRtpCodecParameters(
    mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=_PCMU_PT
)
_MAX_QUEUE = 50  # 1 s of 20 ms packets; older audio is dropped, not delayed


class _TrunkAudio(MediaStreamTrack):
    """The trunk's audio as a track: decoded PCMU frames, in arrival order."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[AudioFrame] = asyncio.Queue(maxsize=_MAX_QUEUE)
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.frames.get()
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, frame.sample_rate)
        self._pts += frame.samples
        return frame


class RtpBridge(asyncio.DatagramProtocol):
    """The SIP leg's RTP socket and the two directions of the bridge."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.track = _TrunkAudio()
        self.received = 0
        self.sent = 0
        self._decoder: Any = get_decoder(_PCMU)
        self._encoder: Any = get_encoder(_PCMU)
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._task: asyncio.Task[None] | None = None

    # --- trunk → DSIP ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            return  # not RTP: dropped
        if packet.payload_type != _PCMU_PT:
            return
        self.received += 1
        for frame in self._decoder.decode(JitterFrame(packet.payload, packet.timestamp)):
            if self.track.frames.full():
                self.track.frames.get_nowait()
            self.track.frames.put_nowait(frame)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    # --- DSIP → trunk ---------------------------------------------------------------------

    def start(self, dsip_audio: MediaStreamTrack, remote: tuple[str, int]) -> None:
        """Send ``dsip_audio`` (what the DSIP peer says) to ``remote`` as PCMU RTP."""
        self.remote = remote
        self._task = asyncio.create_task(self._send_loop(dsip_audio))

    async def _send_loop(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            payloads, timestamp = self._encoder.encode(frame)
            for payload in payloads:
                packet = RtpPacket(
                    payload_type=_PCMU_PT,
                    sequence_number=self._seq,
                    timestamp=timestamp,
                    ssrc=self._ssrc,
                    payload=payload,
                )
                self._seq = (self._seq + 1) & 0xFFFF
                if self.transport is not None and self.remote is not None:
                    self.transport.sendto(packet.serialize(), self.remote)
                    self.sent += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.track.stop()
        if self.transport is not None:
            self.transport.close()


async def open_rtp_bridge(host: str) -> RtpBridge:
    loop = asyncio.get_running_loop()
    transport, bridge = await loop.create_datagram_endpoint(RtpBridge, local_addr=(host, 0))
    bridge.transport = transport
    return bridge
