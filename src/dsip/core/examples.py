"""Realistic example payloads, shared by the demo, the docs and the benchmarks.

The SDP is a trimmed browser audio offer (BUNDLE, ICE, DTLS-SRTP fingerprint) so that envelope
sizes and parse costs are those of a real call setup, not of a toy message.
"""

from __future__ import annotations

from typing import Any

from dsip.core.envelope import make_payload

__all__ = ["EXAMPLE_SDP_OFFER", "example_invite"]

EXAMPLE_SDP_OFFER = (
    "v=0\r\n"
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:8hhY\r\n"
    "a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n"
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:"
    "3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n"
    "a=setup:actpass\r\n"
    "a=mid:0\r\n"
    "a=sendrecv\r\n"
    "a=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)


def example_invite(
    sender: str, to: str, *, now: int, display_name: str = "Alice"
) -> dict[str, Any]:
    """An ``invite`` offering Opus audio over WebRTC with its SDP (~800 bytes of payload)."""
    return make_payload(
        "invite",
        sender=sender,
        now=now,
        to=to,
        intent="interactive",
        identity={"display_name": display_name, "claims": []},
        media=[
            {
                "type": "audio",
                "direction": "sendrecv",
                "codecs": [{"id": "codec:audio/opus", "sample_rates": [48000], "channels": [1, 2]}],
            },
        ],
        transports=[{"id": "transport:webrtc", "ice": "trickle", "sdp": EXAMPLE_SDP_OFFER}],
        policy={"recording": "consent-required", "ai_processing": "denied"},
    )
