"""Device certification levels as verifiable credentials (seed §20.4; profile emergency/1.0).

A certifier DID issues a ``DeviceCertificationCredential`` to a *device key* (its did:key):
``bronze`` (software location verification), ``silver`` (GNSS + secure-element signing),
``gold`` (GNSS + continuous attestation + tamper detection). The credential is a W3C VC 2.0
secured with Data Integrity ``eddsa-jcs-2022`` through :mod:`dsip.core.trust.vc`
(``sign_data_integrity`` / ``verify_data_integrity``), the same suite and code as every
other dsip credential; only the type and its subject schema
(``vc-device-certification.schema.json``) are this profile's.

A PSAP reads the level of the device that signed a location through
:func:`certification_level`, given the certifiers it trusts.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from dsip.core.emergency.errors import DEVICE_UNCERTIFIED, EmergencyError
from dsip.core.identity import DocumentSource, KeyPair, split_did_url
from dsip.core.payloads.schema import validate_named
from dsip.core.trust.vc import (
    VC_CONTEXT,
    from_timestamp,
    sign_data_integrity,
    to_timestamp,
    verify_data_integrity,
)
from dsip.errors import DsipError

__all__ = [
    "CERTIFICATION_TYPE",
    "Certification",
    "Level",
    "certification_level",
    "issue_certification",
    "verify_certification",
]

CERTIFICATION_TYPE: Final = "DeviceCertificationCredential"


class Level(IntEnum):
    """§20.4 certification levels, ordered: a higher value is a stronger device."""

    BRONZE = 1
    SILVER = 2
    GOLD = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Level:
        try:
            return cls[value.upper()]
        except KeyError:
            raise EmergencyError(
                f"unknown certification level {value[:20]!r}", DEVICE_UNCERTIFIED
            ) from None


@dataclass(frozen=True)
class Certification:
    """A verified device certification."""

    device: str
    level: Level
    certifier: str
    keystore: str | None
    valid_until: int | None


def issue_certification(
    certifier: KeyPair,
    device: str,
    level: Level,
    *,
    now: int,
    valid_until: int | None = None,
    keystore: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A ``DeviceCertificationCredential`` about ``device`` signed by ``certifier``."""
    subject: dict[str, Any] = {"id": device, "level": level.label}
    if keystore is not None:
        subject["keystore"] = keystore
    if model is not None:
        subject["model"] = model
    validate_named("vc-device-certification", subject)
    credential: dict[str, Any] = {
        "@context": [VC_CONTEXT],
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": ["VerifiableCredential", CERTIFICATION_TYPE],
        "issuer": certifier.did,
        "validFrom": from_timestamp(now),
        "credentialSubject": subject,
    }
    if valid_until is not None:
        credential["validUntil"] = from_timestamp(valid_until)
    return sign_data_integrity(credential, certifier, created=now)


def _uncertified(message: str) -> EmergencyError:
    return EmergencyError(message, DEVICE_UNCERTIFIED)


def verify_certification(
    credential: object,
    *,
    documents: DocumentSource | None,
    now: int,
    trusted_certifiers: Collection[str],
    device: str | None = None,
) -> Certification:
    """Verify one certification credential; ``x-emergency.device-uncertified`` if it is not
    one, is not from a trusted certifier, is tampered, expired, or about another device."""
    if not isinstance(credential, Mapping):
        raise _uncertified("certification is not a JSON object")
    types = credential.get("type")
    if not isinstance(types, list) or CERTIFICATION_TYPE not in types:
        raise _uncertified("not a DeviceCertificationCredential")
    issuer = credential.get("issuer")
    if not isinstance(issuer, str) or issuer not in trusted_certifiers:
        raise _uncertified(f"{str(issuer)[:80]} is not a trusted certifier")
    try:
        kid = verify_data_integrity(credential, documents=documents, now=now)
        signer, _ = split_did_url(kid)
    except DsipError as exc:
        raise _uncertified(f"certification does not verify: {exc.message}") from None
    if signer != issuer:
        raise _uncertified("certification signed by a key of another DID")
    subject = credential.get("credentialSubject")
    try:
        validate_named("vc-device-certification", subject)
    except DsipError as exc:
        raise _uncertified(f"certification subject: {exc.message}") from None
    assert isinstance(subject, Mapping)
    if device is not None and subject["id"] != device:
        raise _uncertified("certification is about another device key")
    try:
        valid_from = to_timestamp(credential.get("validFrom"), what="validFrom")
        until = credential.get("validUntil")
        valid_until = None if until is None else to_timestamp(until, what="validUntil")
    except DsipError as exc:
        raise _uncertified(exc.message) from None
    if valid_from > now + 300 or (valid_until is not None and valid_until <= now):
        raise _uncertified("certification is not valid now")
    keystore = subject.get("keystore")
    return Certification(
        device=str(subject["id"]),
        level=Level.parse(str(subject["level"])),
        certifier=issuer,
        keystore=keystore if isinstance(keystore, str) else None,
        valid_until=valid_until,
    )


def certification_level(
    credentials: Iterable[object],
    *,
    device: str,
    documents: DocumentSource | None,
    now: int,
    trusted_certifiers: Collection[str],
) -> Certification | None:
    """The strongest valid certification of ``device`` among ``credentials`` (``None``:
    the device is uncertified). Credentials that fail are skipped, not fatal."""
    best: Certification | None = None
    for credential in credentials:
        try:
            cert = verify_certification(
                credential,
                documents=documents,
                now=now,
                trusted_certifiers=trusted_certifiers,
                device=device,
            )
        except EmergencyError:
            continue
        if best is None or cert.level > best.level:
            best = cert
    return best
