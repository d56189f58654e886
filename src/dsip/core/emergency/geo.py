"""Dual-signed geo-attestation and geolocation tiers (seed §20.1, §20.2; profile emergency/1.0).

A location fix is signed twice:

* the **location object** by a *device key* that is kept apart from the DID key — the
  seed's "secure element". :class:`DeviceKeyStore` is the seam: :class:`FileKeyStore` keeps
  an Ed25519 device key in its own file (mode 0600, never in the wallet);
  ``dsip.agent.emergency.TpmKeyStore`` keeps a P-256 key inside a TPM 2.0 (a TPM signs
  ECDSA, not Ed25519, so device keys may be either: :func:`device_verifier`). The object
  names which store signed (``keystore``: ``file`` or ``tpm``) so a verifier and a
  certifier can tell;
* the **outer record** (``did``, ``location``, ``seq``, ``exp``) by the DID key, so the
  identity vouches that this device speaks for it, now, and ``seq`` orders its fixes.

Both signatures are Ed25519 over a domain-separated RFC 8785 (JCS) canonical form of the
object without its signature member (``rfc8785``, the canonicalizer the credential code
uses too). A plain Ed25519 signature over the seed's JSON shape keeps the record readable as
the seed draws it; JWS would wrap each level in base64 for no gain in what is checked.

DSIP payloads carry no floating point (v0.7 §10.3), so coordinates travel as integers in
units of 1e-7 degree (``lat_e7``/``lon_e7``, ~1 cm), altitude and accuracy in whole metres.

Tiers (§20.1): 1 = GNSS (±5 m), 2 = Wi-Fi/cell (±50 m), 3 = IP geolookup (±10 km). A device
with neither tier 1 nor tier 2 runs in *limited mode*: no emergency call over DSIP
(:func:`require_emergency_capable`), the native dialer is the way (§19.3).

Everything here is sans-I/O: ``now`` is a parameter; DID documents come from a
:data:`~dsip.core.identity.DocumentSource`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, Protocol

import base58
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.emergency.errors import (
    LIMITED_MODE,
    LOCATION_FORGED,
    LOCATION_INVALID,
    LOCATION_STALE,
    LOCATION_UNATTESTED,
    EmergencyError,
)
from dsip.core.identity import (
    DocumentSource,
    KeyPair,
    document_for,
    resolve_kid,
    split_did_url,
)
from dsip.core.payloads.schema import validate_named
from dsip.errors import DsipError

__all__ = [
    "MAX_FIX_AGE",
    "MAX_LIFETIME",
    "DeviceKeyStore",
    "FileKeyStore",
    "Fix",
    "Tier",
    "VerifiedLocation",
    "attest",
    "device_verifier",
    "emergency_capable",
    "p256_did_key",
    "require_emergency_capable",
    "tier_of",
    "verify_attestation",
]

MAX_FIX_AGE: Final = 300  # s: a fix older than this is stale for an emergency call
MAX_LIFETIME: Final = 600  # s: exp may lie at most this far after the fix
CLOCK_SKEW: Final = 30  # s: a fix from the near future is tolerated, no more
_LOCATION_DOMAIN: Final = b"dsip emergency/1.0 location\x00"
_RECORD_DOMAIN: Final = b"dsip emergency/1.0 geo-attestation\x00"
_E7: Final = 10_000_000
_P256_PUB: Final = b"\x80\x24"  # multicodec p256-pub, varint


class Tier(IntEnum):
    """§20.1 geolocation tiers; the value is the tier number."""

    GNSS = 1
    RADIO = 2
    IP = 3

    @property
    def nominal_accuracy(self) -> int:
        """The tier's nominal horizontal accuracy in metres (5, 50, 10 000)."""
        return {1: 5, 2: 50, 3: 10_000}[int(self)]


_TIER_OF_METHOD: Final[Mapping[str, Tier]] = {
    "gps": Tier.GNSS,
    "gnss": Tier.GNSS,
    "wifi": Tier.RADIO,
    "cell": Tier.RADIO,
    "ip": Tier.IP,
}


def tier_of(method: str) -> Tier:
    """The tier a positioning method belongs to; an unknown method is refused."""
    tier = _TIER_OF_METHOD.get(method)
    if tier is None:
        raise EmergencyError(f"unknown positioning method {method[:20]!r}", LOCATION_INVALID)
    return tier


def emergency_capable(methods: Iterable[str]) -> bool:
    """Whether a device with these positioning methods may place DSIP emergency calls
    (§20.1: at least one tier-1 or tier-2 source; otherwise limited mode)."""
    return any(_TIER_OF_METHOD.get(m, Tier.IP) <= Tier.RADIO for m in methods)


@dataclass(frozen=True)
class Fix:
    """One position measurement, in degrees and metres, as a positioning API reports it."""

    lat: float
    lon: float
    accuracy: int
    method: str
    timestamp: int
    alt: int | None = None

    @property
    def tier(self) -> Tier:
        return tier_of(self.method)


def require_emergency_capable(fix: Fix) -> None:
    """Refuse (``x-emergency.limited-mode``) a fix that only IP geolookup produced."""
    if fix.tier is Tier.IP:
        raise EmergencyError(
            "only an IP-geolookup fix is available: limited mode, use the native dialer",
            LIMITED_MODE,
            remote=False,
        )


class DeviceKeyStore(Protocol):
    """Where the device key lives; it signs location objects and nothing else."""

    @property
    def did(self) -> str:
        """did:key of the device key."""
        ...

    @property
    def keystore(self) -> str:
        """``file`` or ``tpm``: named in every object this store signs."""
        ...

    def sign(self, data: bytes) -> bytes: ...


class FileKeyStore:
    """A device key in its own file (32-byte Ed25519 seed, mode 0600), apart from the wallet.

    The software stand-in for a secure element: it keeps the two keys apart, which is what
    the dual signature needs, but it is *not* tamper resistant — certifiers should grant it
    bronze at most, and verifiers see ``keystore: "file"``.
    """

    keystore = "file"

    def __init__(self, key: KeyPair) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> FileKeyStore:
        return cls(KeyPair.generate())

    @classmethod
    def open(cls, path: Path) -> FileKeyStore:
        """Load the key at ``path``, creating it (0600) when the file does not exist."""
        if not path.exists():
            seed = Ed25519PrivateKey.generate().private_bytes_raw()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(seed)
        seed = path.read_bytes()
        if len(seed) != 32:
            raise EmergencyError(
                f"{path} is not a device key (32-byte seed)", LOCATION_INVALID, remote=False
            )
        return cls(KeyPair.from_seed(seed))

    @property
    def did(self) -> str:
        return self._key.did

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


@dataclass(frozen=True)
class VerifiedLocation:
    """A geo-attestation whose two signatures, freshness and shape all checked out."""

    did: str
    lat_e7: int
    lon_e7: int
    accuracy: int
    method: str
    tier: Tier
    timestamp: int
    device: str
    keystore: str
    seq: int
    exp: int
    alt: int | None = None

    @property
    def lat(self) -> float:
        return self.lat_e7 / _E7

    @property
    def lon(self) -> float:
        return self.lon_e7 / _E7


def _canonical(domain: bytes, obj: Mapping[str, Any], without: str) -> bytes:
    try:
        return domain + rfc8785.dumps({k: v for k, v in obj.items() if k != without})
    except (rfc8785.CanonicalizationError, RecursionError, TypeError, ValueError):
        raise EmergencyError("location is not canonicalizable JSON", LOCATION_INVALID) from None


def attest(
    fix: Fix,
    *,
    identity_key: KeyPair,
    device: DeviceKeyStore,
    seq: int,
    now: int,
    ttl: int = 120,
    identity: str | None = None,
) -> dict[str, Any]:
    """The dual-signed geo-attestation of ``fix``: location signed by ``device``, the outer
    record by ``identity_key`` (whose DID is ``identity``, by default the key's own)."""
    if not 0 < ttl <= MAX_LIFETIME:
        raise EmergencyError(f"ttl must be 1..{MAX_LIFETIME} s", LOCATION_INVALID, remote=False)
    if not (-90 <= fix.lat <= 90 and -180 <= fix.lon <= 180) or fix.accuracy < 0:
        raise EmergencyError("coordinates out of range", LOCATION_INVALID, remote=False)
    location: dict[str, Any] = {
        "lat_e7": round(fix.lat * _E7),
        "lon_e7": round(fix.lon * _E7),
        "accuracy": int(fix.accuracy),
        "timestamp": int(fix.timestamp),
        "method": fix.method,
        "tier": int(fix.tier),
        "device": device.did,
        "keystore": device.keystore,
    }
    if fix.alt is not None:
        location["alt"] = int(fix.alt)
    location["signature"] = b64url_encode(
        device.sign(_canonical(_LOCATION_DOMAIN, location, "signature"))
    )
    record: dict[str, Any] = {
        "did": identity or identity_key.did,
        "location": location,
        "seq": seq,
        "exp": now + ttl,
        "kid": identity_key.kid,
    }
    record["sig"] = b64url_encode(identity_key.sign(_canonical(_RECORD_DOMAIN, record, "sig")))
    validate_named("geo-attestation", record)
    return record


def _signature(value: str, what: str) -> bytes:
    try:
        return b64url_decode(value, what=what)
    except DsipError:
        raise EmergencyError(f"{what} is not base64url", LOCATION_FORGED) from None


def p256_did_key(x: bytes, y: bytes) -> str:
    """did:key of a NIST P-256 public key (multicodec ``p256-pub``, compressed point) — the
    key type TPM 2.0 devices sign with."""
    if len(x) != 32 or len(y) != 32:
        raise EmergencyError("P-256 coordinates must be 32 bytes", LOCATION_INVALID, remote=False)
    point = bytes([2 | (y[-1] & 1)]) + x
    return "did:key:z" + base58.b58encode(_P256_PUB + point).decode("ascii")


def device_verifier(did: str, what: str = "device") -> Callable[[bytes, bytes], bool]:
    """``(signature, data) -> bool`` for a device did:key: Ed25519 (64-byte signature) or
    P-256 (ECDSA-SHA256, 64-byte r||s), else ``x-emergency.location-forged``."""
    if did.startswith("did:key:zDn"):
        try:
            raw = base58.b58decode(did[len("did:key:z") :])
            if raw[:2] != _P256_PUB or len(raw) != 35:
                raise ValueError
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw[2:])
        except ValueError:
            raise EmergencyError(f"{what} is not a P-256 did:key", LOCATION_FORGED) from None

        def verify_p256(signature: bytes, data: bytes) -> bool:
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            try:
                key.verify(der, data, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return False
            return True

        return verify_p256
    try:
        method = resolve_kid(f"{did}#{did.removeprefix('did:key:')}", None)
    except DsipError:
        raise EmergencyError(
            f"{what} is not an Ed25519 or P-256 did:key", LOCATION_FORGED
        ) from None
    return method.verify


def _ed25519_raw(did: str) -> bytes | None:
    try:
        return resolve_kid(f"{did}#{did.removeprefix('did:key:')}", None).raw_key
    except DsipError:
        return None


def verify_attestation(
    record: object,
    *,
    documents: DocumentSource | None,
    now: int,
    expected_did: str | None = None,
    last_seq: int = 0,
) -> VerifiedLocation:
    """Check a geo-attestation completely or raise :class:`EmergencyError`.

    Order, so each fault has one reason: shape (``location-invalid``) → outer DID-key
    signature (``location-forged``) → device signature (``location-forged``) → device key
    distinct from every key of the DID (``location-unattested``: a location signed only by
    the DID key) → freshness: ``exp``, fix age and ``seq`` above ``last_seq``
    (``location-stale``).
    """
    try:
        validate_named("geo-attestation", record)
    except DsipError as exc:
        raise EmergencyError(f"geo-attestation: {exc.message}", LOCATION_INVALID) from None
    assert isinstance(record, Mapping)
    did, kid, loc = str(record["did"]), str(record["kid"]), record["location"]
    if expected_did is not None and did != expected_did:
        raise EmergencyError("geo-attestation is about another DID", LOCATION_FORGED)
    if tier_of(str(loc["method"])) != loc["tier"]:
        raise EmergencyError("tier does not match the positioning method", LOCATION_INVALID)
    # outer record: a key the DID lists for authentication or assertion
    try:
        signer, _ = split_did_url(kid)
        method = resolve_kid(kid, documents)
    except DsipError:
        raise EmergencyError("the outer key does not resolve", LOCATION_FORGED) from None
    doc = document_for(did, documents)
    if signer != did or doc is None or kid not in (*doc.authentication, *doc.assertion):
        raise EmergencyError("the outer record is not signed by a key of its DID", LOCATION_FORGED)
    if not method.verify(
        _signature(str(record["sig"]), "sig"), _canonical(_RECORD_DOMAIN, record, "sig")
    ):
        raise EmergencyError("the DID-key signature does not verify", LOCATION_FORGED)
    # inner location: the device key
    device = str(loc["device"])
    if not device_verifier(device, "location.device")(
        _signature(str(loc["signature"]), "location.signature"),
        _canonical(_LOCATION_DOMAIN, loc, "signature"),
    ):
        raise EmergencyError("the device signature does not verify", LOCATION_FORGED)
    device_keys = {m.raw_key for m in doc.methods.values()}
    if device == did or _ed25519_raw(device) in device_keys:
        raise EmergencyError(
            "the location is signed by the DID key itself, not a separate device key",
            LOCATION_UNATTESTED,
        )
    # freshness
    exp, ts, seq = int(record["exp"]), int(loc["timestamp"]), int(record["seq"])
    if exp <= now:
        raise EmergencyError("geo-attestation expired", LOCATION_STALE)
    if ts > now + CLOCK_SKEW:
        raise EmergencyError("location fix is from the future", LOCATION_STALE)
    if now - ts > MAX_FIX_AGE or exp - ts > MAX_LIFETIME:
        raise EmergencyError("location fix is too old", LOCATION_STALE)
    if seq <= last_seq:
        raise EmergencyError(f"seq {seq} is not above {last_seq}: a replayed fix", LOCATION_STALE)
    return VerifiedLocation(
        did=did,
        lat_e7=int(loc["lat_e7"]),
        lon_e7=int(loc["lon_e7"]),
        accuracy=int(loc["accuracy"]),
        method=str(loc["method"]),
        tier=Tier(int(loc["tier"])),
        timestamp=ts,
        device=device,
        keystore=str(loc["keystore"]),
        seq=seq,
        exp=exp,
        alt=int(loc["alt"]) if "alt" in loc else None,
    )
