"""The DSIP ⇄ SIP gateway core (Gateway Profile 1.0, RTP/SRTP Media Binding 1.0), sans-I/O.

One concept per module:

* :mod:`~dsip.core.gateway.reasons` — reason mapping both ways (G§4) and the Reason header;
* :mod:`~dsip.core.gateway.sdp` — trunk SDP ⇄ DSIP media descriptors (G§6, R§2–R§5);
* :mod:`~dsip.core.gateway.claims` — a PSTN caller as a ``tel`` claim and its basis (G§5);
* :mod:`~dsip.core.gateway.downgrade` — the named trust-downgrade losses (G§7);
* :mod:`~dsip.core.gateway.b2bua` — the controller of one bridged call (G§3, G§8).

The SIP stack, the media anchor and the DSIP transport drive these from the outside.
"""

from __future__ import annotations

from dsip.core.gateway.b2bua import BridgedCall, EarlyMediaPolicy, TrunkProfile
from dsip.core.gateway.claims import PassportFacts, TelClaim, caller_claim
from dsip.core.gateway.downgrade import CallDirection, CrossingFacts, Loss, assess
from dsip.core.gateway.reasons import GatewayError, Phase, map_inbound, map_outbound
from dsip.core.gateway.sdp import SrtpMode, TrunkSdpError, parse_trunk_sdp, render_trunk_sdp

__all__ = [
    "BridgedCall",
    "CallDirection",
    "CrossingFacts",
    "EarlyMediaPolicy",
    "GatewayError",
    "Loss",
    "PassportFacts",
    "Phase",
    "SrtpMode",
    "TelClaim",
    "TrunkProfile",
    "TrunkSdpError",
    "assess",
    "caller_claim",
    "map_inbound",
    "map_outbound",
    "parse_trunk_sdp",
    "render_trunk_sdp",
]
