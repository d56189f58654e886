"""Privacy modes for location (seed §20.3) and the gate that enforces them.

=================  ==============================================================
mode               what leaves the device
=================  ==============================================================
``normal``         a coarse geohash (≤ 6 characters, ~1.2 km) in presence, nothing else
``trusted-call``   the precise location, end to end to a peer the user trusts
``emergency``      the precise location, only to an emergency namespace DID
                   (``did:web:911.*``, ``did:web:112.*``, ...); any other DID is refused
``region-proof``   a proof that the device attested a geohash prefix, no coordinates
=================  ==============================================================

:func:`check_precise_recipient` is the single gate every path that would send coordinates
goes through (``x-emergency.precise-location-refused`` otherwise). Precise content is
HPKE-sealed (RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM via
``cryptography``'s HPKE, the suite of sealed-envelope/1.0) to the recipient's X25519
keyAgreement key, with the HPKE ``info`` binding the ciphertext to the recipient DID and the
envelope id: a relay on the path sees ciphertext, and a PSAP cannot replay it in another call.

Region proofs are salted hash commitments (the selective-disclosure idea of SD-JWT, RFC 9901,
reduced to one list): the *device key* signs ``sha256(salt_k || geohash[:k])`` for k = 1..6
alongside the fix; revealing one prefix and its salt proves "the device attested a position
in this cell" while the other commitments stay opaque. Geohashes come from ``pygeohash``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import pygeohash
import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.emergency.errors import (
    LOCATION_FORGED,
    LOCATION_INVALID,
    LOCATION_STALE,
    PRECISE_LOCATION_REFUSED,
    EmergencyError,
)
from dsip.core.emergency.geo import DeviceKeyStore, device_verifier
from dsip.core.emergency.namespaces import is_emergency_did
from dsip.core.identity import DidDocument, KeyPair
from dsip.core.jsonwire import loads_strict
from dsip.core.payloads.schema import validate_named
from dsip.core.sealed import SUITE_ID, x25519_key_of
from dsip.errors import DsipError

__all__ = [
    "MAX_PUBLIC_GEOHASH",
    "PrivacyMode",
    "RegionCommitment",
    "RegionSecrets",
    "check_precise_recipient",
    "coarse_geohash",
    "commit_regions",
    "open_precise",
    "prove_region",
    "seal_precise",
    "verify_region_proof",
]

MAX_PUBLIC_GEOHASH: Final = 6  # ~1.2 km x 0.6 km: what normal mode may publish
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_REGION_DOMAIN: Final = b"dsip emergency/1.0 region-commitment\x00"
_MAX_SEALED: Final = 12_000


class PrivacyMode(StrEnum):
    NORMAL = "normal"
    TRUSTED_CALL = "trusted-call"
    EMERGENCY = "emergency"
    REGION_PROOF = "region-proof"


def check_precise_recipient(mode: PrivacyMode, peer: str, *, trusted: Collection[str] = ()) -> None:
    """Allow precise coordinates to ``peer`` under ``mode`` or raise
    ``x-emergency.precise-location-refused`` (a local refusal: nothing was sent)."""
    if mode is PrivacyMode.EMERGENCY and is_emergency_did(peer):
        return
    if mode is PrivacyMode.TRUSTED_CALL and peer in trusted:
        return
    raise EmergencyError(
        f"precise location is not shared with {peer[:80]} in {mode.value} mode",
        PRECISE_LOCATION_REFUSED,
        remote=False,
    )


def coarse_geohash(lat: float, lon: float, precision: int = 5) -> str:
    """The only location normal mode publishes (presence ``geo.geohash``)."""
    return str(pygeohash.encode(lat, lon, precision=min(max(precision, 1), MAX_PUBLIC_GEOHASH)))


def _info(to: str, envelope_id: str) -> bytes:
    return b"dsip emergency/1.0\x00" + to.encode() + b"\x00" + envelope_id.encode()


def seal_precise(
    content: Mapping[str, Any],
    *,
    recipient: DidDocument,
    envelope_id: str,
    mode: PrivacyMode,
    trusted: Collection[str] = (),
) -> dict[str, str]:
    """Seal precise-location ``content`` to ``recipient`` after the privacy gate; returns the
    ``invite.emergency`` object (``suite``, ``kid``, ``enc``)."""
    check_precise_recipient(mode, recipient.id, trusted=trusted)
    validate_named("emergency-content", dict(content))
    kid, key = x25519_key_of(recipient)
    ct = _SUITE.encrypt(rfc8785.dumps(dict(content)), key, info=_info(recipient.id, envelope_id))
    return {"suite": SUITE_ID, "kid": kid, "enc": b64url_encode(ct)}


def open_precise(
    sealed: Mapping[str, Any], *, key: KeyPair, recipient: str, envelope_id: str
) -> dict[str, Any]:
    """Open an ``invite.emergency`` object with our key (``x-emergency.location-invalid`` if
    it is not ours, was moved to another envelope, or is not emergency content)."""
    try:
        ct = b64url_decode(str(sealed.get("enc", "")), what="enc")
        if len(ct) > _MAX_SEALED:
            raise EmergencyError("sealed location too large", LOCATION_INVALID)
        plain = _SUITE.decrypt(ct, key.x25519_private(), info=_info(recipient, envelope_id))
        content, _ = loads_strict(plain)
        validate_named("emergency-content", content)
    except (DsipError, InvalidTag, ValueError) as exc:
        if isinstance(exc, EmergencyError):
            raise
        raise EmergencyError(
            f"sealed location does not open: {type(exc).__name__}", LOCATION_INVALID
        ) from None
    assert isinstance(content, dict)
    return content


# --- region proofs ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegionSecrets:
    """Kept on the device: the geohash and the salt of every committed prefix."""

    geohash: str
    salts: tuple[bytes, ...]


@dataclass(frozen=True)
class RegionCommitment:
    """Device-signed commitments to the prefixes of one fix (public)."""

    body: Mapping[str, Any]


def _digest(salt: bytes, prefix: str) -> str:
    return b64url_encode(hashlib.sha256(salt + prefix.encode("ascii")).digest())


def commit_regions(
    lat: float, lon: float, *, device: DeviceKeyStore, now: int, ttl: int = 3600
) -> tuple[RegionCommitment, RegionSecrets]:
    """Commit to the 1..6-character geohash prefixes of a position, signed by the device key."""
    geohash = coarse_geohash(lat, lon, MAX_PUBLIC_GEOHASH)
    salts = tuple(secrets.token_bytes(16) for _ in geohash)
    body: dict[str, Any] = {
        "device": device.did,
        "keystore": device.keystore,
        "commitments": [_digest(s, geohash[: i + 1]) for i, s in enumerate(salts)],
        "issued": now,
        "exp": now + ttl,
    }
    body["signature"] = b64url_encode(device.sign(_REGION_DOMAIN + rfc8785.dumps(body)))
    return RegionCommitment(body), RegionSecrets(geohash, salts)


def prove_region(
    commitment: RegionCommitment, secrets_: RegionSecrets, precision: int
) -> dict[str, Any]:
    """Disclose one prefix (``precision`` characters) and nothing finer."""
    if not 1 <= precision <= len(secrets_.geohash):
        raise EmergencyError("no commitment at that precision", LOCATION_INVALID, remote=False)
    return {
        "commitment": dict(commitment.body),
        "region": secrets_.geohash[:precision],
        "salt": b64url_encode(secrets_.salts[precision - 1]),
    }


def verify_region_proof(proof: object, *, now: int) -> tuple[str, str]:
    """Check a region proof; returns (geohash prefix, device DID)."""
    try:
        if not isinstance(proof, Mapping):
            raise TypeError
        body = proof["commitment"]
        region, salt = str(proof["region"]), b64url_decode(str(proof["salt"]), what="salt")
        commitments = list(body["commitments"])
        device = str(body["device"])
        signature = b64url_decode(str(body["signature"]), what="signature")
        unsigned = {k: v for k, v in body.items() if k != "signature"}
        signed_bytes = _REGION_DOMAIN + rfc8785.dumps(unsigned)
        exp = int(body["exp"])
    except (DsipError, KeyError, TypeError, ValueError, rfc8785.CanonicalizationError):
        raise EmergencyError("region proof is malformed", LOCATION_INVALID) from None
    if not 1 <= len(region) <= min(len(commitments), MAX_PUBLIC_GEOHASH):
        raise EmergencyError("region prefix length is not committed", LOCATION_INVALID)
    if not device_verifier(device, "region proof device")(signature, signed_bytes):
        raise EmergencyError("region commitment signature does not verify", LOCATION_FORGED)
    if commitments[len(region) - 1] != _digest(salt, region):
        raise EmergencyError("disclosed region does not match its commitment", LOCATION_FORGED)
    if exp <= now:
        raise EmergencyError("region commitment expired", LOCATION_STALE)
    return region, device
