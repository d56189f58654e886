"""WebRTC media for a DSIP call, on aiortc (seed §7; WebRTC Media Binding 1.0).

A ``WebRtcMedia`` is one side's ``RTCPeerConnection``: it turns local tracks into the
invite's media offer (structured descriptors + the SDP in ``transports[0].sdp``, B§2), turns
a received offer into an answer selection, and applies the peer's answer. Everything it
exchanges rides in the signed DSIP envelopes of the call; nothing goes on an unsigned side
channel.

aiortc gathers ICE candidates during ``setLocalDescription`` and puts them in the SDP (it
has no trickle); we still declare ``ice: trickle`` as the binding requires and send the
end-of-candidates marker in an ``info`` — a peer that trickles stays interoperable.

``loopback_only()`` restricts candidate gathering to 127.0.0.1: tests and the local demo
must not send connectivity checks to this machine's other interfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import aioice.ice
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from dsip.core import media_binding as binding
from dsip.errors import DsipError

__all__ = [
    "WebRtcMedia",
    "consent_timing",
    "descriptors_from_sdp",
    "hang_up_on_media_failure",
    "ice_servers_from",
    "loopback_only",
]

_CODEC_IDS = {
    ("audio", "opus"): "codec:audio/opus",
    ("audio", "pcmu"): "codec:audio/pcmu",
    ("audio", "pcma"): "codec:audio/pcma",
    ("audio", "g722"): "codec:audio/g722",
    ("video", "vp8"): "codec:video/vp8",
    ("video", "vp9"): "codec:video/vp9",
    ("video", "h264"): "codec:video/h264",
    ("video", "av1"): "codec:video/av1",
}
_original_host_addresses = aioice.ice.get_host_addresses


def loopback_only(enabled: bool = True) -> None:
    """Gather host candidates on 127.0.0.1 only (tests, local demo); ``False`` restores."""
    if enabled:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    else:
        aioice.ice.get_host_addresses = _original_host_addresses


def consent_timing(interval: float = 5.0, failures: int = 6) -> None:
    """ICE consent freshness (RFC 7675) as aioice runs it: a check every ``interval`` s, the
    path declared dead after ``failures`` misses (defaults: 5 s × 6 = 30 s, the RFC's bound).
    Tests shorten it to see a vanished peer within seconds."""
    aioice.ice.CONSENT_INTERVAL = interval  # type: ignore[assignment]
    aioice.ice.CONSENT_FAILURES = failures


async def hang_up_on_media_failure(media: WebRtcMedia, call: Any) -> str | None:
    """Watch the media path; when ICE consent fails (the peer vanished) end the call with
    ``bye media.failed`` (B§8). Returns the reason used, or ``None`` if the call ended first."""
    await media.failed.wait()
    if call.state is not None and str(call.state) == "ACTIVE":
        await call.hangup("media.failed")
        return "media.failed"
    return None


def ice_servers_from(capabilities: Mapping[str, Any]) -> list[RTCIceServer]:
    """TURN servers from a relay hello's ``turn`` capability (short-lived REST credentials)."""
    turn = capabilities.get("turn")
    if not isinstance(turn, Mapping) or not turn.get("uris"):
        return []
    return [
        RTCIceServer(
            urls=list(turn["uris"]),
            username=str(turn["username"]),
            credential=str(turn["credential"]),
        )
    ]


def descriptors_from_sdp(sdp: str) -> list[dict[str, Any]]:
    """Structured media descriptors (§16.2) for our own SDP, one per live ``m=`` section (B§2.1)."""
    return [d.to_mapping() for d in binding.descriptors_from_sdp(sdp)]


class WebRtcMedia:
    """One side of a call's media: aiortc peer connection + local tracks + received tracks."""

    def __init__(
        self,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        relay_only: bool = False,
    ) -> None:
        config = RTCConfiguration(
            iceServers=list(ice_servers),
            iceTransportPolicy=RTCIceTransportPolicy.RELAY
            if relay_only
            else RTCIceTransportPolicy.ALL,
        )
        self.pc = RTCPeerConnection(configuration=config)
        self.audio = audio
        self.video = video
        self.received: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
        self._offer: binding.WebRtcDescription | None = None
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self.received.put_nowait(track)

        @self.pc.on("connectionstatechange")
        async def _on_state() -> None:
            if self.pc.connectionState == "connected":
                self._connected.set()
            elif self.pc.connectionState in ("failed", "closed"):
                self._failed.set()

    @property
    def failed(self) -> asyncio.Event:
        """Set when the peer connection fails (ICE consent lost, DTLS failure) or closes."""
        return self._failed

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def _add_tracks(self) -> None:
        for track in (self.audio, self.video):
            if track is not None:
                self.pc.addTrack(track)

    async def offer(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(media descriptors, transports) for an ``invite`` or ``update`` (B§2)."""
        self._add_tracks()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        media, transports = descriptors_from_sdp(sdp), [binding.webrtc_transport(sdp, offer=True)]
        # Our own offer passes the binding's checks before it is signed (B§2–B§3.3).
        self._offer = binding.check_offer({"media": media, "transports": transports})
        return media, transports

    async def answer(
        self, offer: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Check and apply a received offer; (selection, [transport]) for the ``answer`` (B§3).

        An offer that breaks the binding raises ``MediaBindingError`` carrying the reason
        token the callee rejects with (``media.unsupported``, ``media.encryption-required``,
        ``media.offer-required``)."""
        if binding.check_offer(offer) is None:
            raise binding.MediaBindingError(
                "no transport:webrtc offered",
                code="binding-sdp-missing",
                reason="media.offer-required",
            )
        sdp = _sdp_of(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():
            track = self.audio if transceiver.kind == "audio" else self.video
            if track is not None:
                transceiver.sender.replaceTrack(track)
                transceiver.direction = "sendrecv"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer_sdp = self.pc.localDescription.sdp
        return descriptors_from_sdp(answer_sdp), [binding.webrtc_transport(answer_sdp, offer=False)]

    async def accept(self, answer: Mapping[str, Any]) -> None:
        """Check and apply the peer's ``answer`` (the one answer the session accepted, B§6).

        An answer that does not answer our offer raises ``MediaBindingError``
        (``media.failed``): the caller ends the session with ``bye`` (B§8)."""
        if self._offer is not None:
            binding.check_answer(self._offer, answer)
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=_sdp_of(answer), type="answer")
        )

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.wait(
                [
                    asyncio.create_task(self._connected.wait()),
                    asyncio.create_task(self._failed.wait()),
                ],
                return_when=asyncio.FIRST_COMPLETED,
            )
        if not self._connected.is_set():
            raise DsipError("ICE/DTLS failed", code="media-failed", reason="media.failed")

    async def next_track(self, kind: str, timeout: float = 10.0) -> MediaStreamTrack:
        async with asyncio.timeout(timeout):
            while True:
                track = await self.received.get()
                if track.kind == kind:
                    return track

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()


def _sdp_of(payload: Mapping[str, Any]) -> str:
    for t in payload.get("transports", []) or []:
        if (
            isinstance(t, Mapping)
            and t.get("id") == "transport:webrtc"
            and isinstance(t.get("sdp"), str)
        ):
            return str(t["sdp"])
    raise DsipError(
        "no transport:webrtc descriptor with an sdp",
        code="binding-sdp-missing",
        reason="media.offer-required",
    )
