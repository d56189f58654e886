"""A PSTN caller as DSIP claims (Gateway Profile G§5, core §18.1, spec-gap 25).

An inbound PSTN caller has no DID. The gateway's ``invite`` carries a ``tel`` claim in
``identity.claims[]``::

    {"type": "tel", "number": "+15551234567", "attestation": "A", "verified": true,
     "verifier": "did:web:gw.example", "cnam": "ACME Corp"}

* ``attestation`` is the STIR/SHAKEN level from the RFC 8224 ``Identity`` header the SIP
  stack verified (:class:`PassportFacts`), ``none`` when absent;
* ``verified`` is true only when signature and chain verified **and** the PASSporT ``orig``
  is the ``From`` number; a PASSporT about another number is discarded whole
  (attestation ``none``) — it attests some other call;
* ``verifier`` is the gateway's DID, and the client renders the *basis*, never a badge:
  ``Gateway attested by gw.example · STIR attestation A (verified)`` (:func:`trust_basis`).

CNAM is unverified display data (findings §4): carried when given, sanitised, never part of
the basis. Numbers are compared in the RFC 8224 §8.3 canonical form (digits only).
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from dsip.core.gateway.reasons import GatewayMisuseError

__all__ = [
    "Attestation",
    "CallerPresentation",
    "PassportFacts",
    "TelClaim",
    "caller_claim",
    "canonical_tn",
    "trust_basis",
    "verifier_label",
]


class Attestation(StrEnum):
    """SHAKEN attestation levels (ATIS-1000074), plus ``none``."""

    A = "A"
    B = "B"
    C = "C"
    NONE = "none"


@dataclass(frozen=True)
class PassportFacts:
    """What the SIP stack established from the ``Identity`` header: the PASSporT's ``attest``
    and ``orig.tn``, and whether its signature, X.509 chain and ``iat`` checked out."""

    attest: str
    verified: bool
    orig_tn: str


@dataclass(frozen=True)
class TelClaim:
    """The ``tel`` claim of G§5."""

    number: str
    attestation: Attestation
    verified: bool
    verifier: str
    cnam: str | None = None

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "tel",
            "number": self.number,
            "attestation": str(self.attestation),
            "verified": self.verified,
            "verifier": self.verifier,
        }
        if self.cnam is not None:
            out["cnam"] = self.cnam
        return out


@dataclass(frozen=True)
class CallerPresentation:
    """The claims for the invite's ``identity.claims`` and the basis line a client shows.
    ``claim`` is ``None`` when the caller presented no usable number (withheld, anonymous)."""

    claim: TelClaim | None
    trust_basis: str

    @property
    def claims(self) -> tuple[dict[str, Any], ...]:
        return () if self.claim is None else (self.claim.to_mapping(),)


_VISUAL_SEPARATORS: Final = re.compile(r"[-.() ]")
_DIGITS: Final = re.compile(r"[0-9]{1,15}")  # E.164: at most 15 digits
_MAX_CNAM: Final = 64


def _number_part(value: str) -> str:
    """The telephone-subscriber part of a ``tel:``/``sip:`` URI, or ``value`` itself."""
    text = value.strip()
    lowered = text.lower()
    for scheme in ("tel:", "sips:", "sip:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :].split("@", 1)[0]
            break
    return urllib.parse.unquote(text.split(";", 1)[0])


def canonical_tn(value: object) -> str | None:
    """RFC 8224 §8.3 canonical form: the digits, without ``+`` or visual separators; ``None``
    when ``value`` is not a telephone number."""
    if not isinstance(value, str) or len(value) > 256:
        return None
    digits = _VISUAL_SEPARATORS.sub("", _number_part(value)).removeprefix("+")
    return digits if _DIGITS.fullmatch(digits) else None


def _display_number(value: str, digits: str) -> str:
    return f"+{digits}" if _number_part(value).lstrip().startswith("+") else digits


def verifier_label(did: str) -> str:
    """How a client names the verifier: the host of a ``did:web`` (``gw.example``), else the
    DID itself."""
    if did.startswith("did:web:"):
        host = did[len("did:web:") :].split(":", 1)[0]
        return urllib.parse.unquote(host)
    return did


def trust_basis(claim: TelClaim | None, verifier: str) -> str:
    """The §18.1 basis line for a PSTN caller (G§5)."""
    prefix = f"Gateway attested by {verifier_label(verifier)}"
    if claim is None:
        return f"{prefix} · no caller number"
    if claim.attestation is Attestation.NONE:
        return f"{prefix} · no attestation"
    state = "verified" if claim.verified else "unverified"
    return f"{prefix} · STIR attestation {claim.attestation} ({state})"


def _clean_cnam(cnam: str | None) -> str | None:
    """Control and format characters removed, length capped: it is display data."""
    if cnam is None:
        return None
    kept = "".join(ch for ch in cnam if not unicodedata.category(ch).startswith("C"))
    kept = kept.strip()[:_MAX_CNAM]
    return kept or None


def caller_claim(
    from_tn: str,
    passport: PassportFacts | None,
    *,
    verifier: str,
    cnam: str | None = None,
) -> CallerPresentation:
    """The ``tel`` claim and basis for a caller presenting ``from_tn`` (G§5)."""
    if not verifier.startswith("did:"):
        raise GatewayMisuseError(f"the verifier must be the gateway's DID, not {verifier!r}")
    digits = canonical_tn(from_tn)
    if digits is None:
        return CallerPresentation(None, trust_basis(None, verifier))
    attestation, verified = Attestation.NONE, False
    if passport is not None and canonical_tn(passport.orig_tn) == digits:
        try:
            attestation = Attestation(passport.attest)
        except ValueError:
            attestation = Attestation.NONE  # not a SHAKEN level: no attestation at all
        verified = passport.verified and attestation is not Attestation.NONE
    claim = TelClaim(
        number=_display_number(from_tn, digits),
        attestation=attestation,
        verified=verified,
        verifier=verifier,
        cnam=_clean_cnam(cnam),
    )
    return CallerPresentation(claim, trust_basis(claim, verifier))
