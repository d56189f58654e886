"""Emergency services, profile emergency/1.0 (seed §19–§20), sans-I/O.

* :mod:`.geo` — dual-signed geo-attestation, tiers, limited mode, device key stores;
* :mod:`.certification` — bronze/silver/gold device certification credentials;
* :mod:`.namespaces` — emergency namespace DIDs and geofence region selection;
* :mod:`.privacy` — privacy modes, the precise-location gate, sealing, region proofs;
* :mod:`.psap_policy` — PSAP assessment (accept-and-flag by default), queue, callbacks;
* :mod:`.pidf` — PIDF-LO (RFC 4119/5491) and NG911 SIP headers for the gateway;
* :mod:`.errors` — ``EmergencyError`` and the ``x-emergency.*`` reason tokens.
"""

from __future__ import annotations

from dsip.core.emergency.certification import Level, issue_certification, verify_certification
from dsip.core.emergency.errors import EmergencyError
from dsip.core.emergency.geo import (
    FileKeyStore,
    Fix,
    Tier,
    VerifiedLocation,
    attest,
    verify_attestation,
)
from dsip.core.emergency.namespaces import GeofenceSet, is_emergency_did
from dsip.core.emergency.privacy import PrivacyMode, check_precise_recipient

__all__ = [
    "EmergencyError",
    "FileKeyStore",
    "Fix",
    "GeofenceSet",
    "Level",
    "PrivacyMode",
    "Tier",
    "VerifiedLocation",
    "attest",
    "check_precise_recipient",
    "is_emergency_did",
    "issue_certification",
    "verify_attestation",
    "verify_certification",
]
