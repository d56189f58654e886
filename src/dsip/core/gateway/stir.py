"""STIR/SHAKEN for the gateway: PASSporTs in the SIP ``Identity`` header (sans-I/O).

* RFC 8225 PASSporT: a compact JWS, ``alg: ES256``, header ``typ: passport``, ``ppt: shaken``
  and ``x5u`` (where the signing certificate is published); claims ``attest``, ``dest.tn``,
  ``iat``, ``orig.tn``, ``origid`` (RFC 8588 SHAKEN).
* RFC 9795 Rich Call Data: the ``rcd`` claim (``nam``: the display name) rides in the same
  PASSporT.
* RFC 8224 ``Identity`` header: ``<jws>;info=<x5u>;alg=ES256;ppt=shaken``.

Verification (RFC 8224 §6.2, RFC 8588 §4): the ES256 signature with the certificate the
``x5u`` names, that certificate chained to a trusted STI-CA root and valid at ``now``, ``iat``
within ``max_age`` of ``now`` (60 s, the RFC 8224 §6.2.1 recommendation), ``orig.tn`` equal to
the caller's number and the called number among ``dest.tn``. Fetching the certificate is the
caller's I/O; everything here takes ``now`` and bytes.

Libraries: **joserfc** (JWS compact serialization and ES256), **cryptography** (X.509 chain
checks). Hostile input raises :class:`StirError` (a :class:`~dsip.errors.DsipError`) only.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter

from dsip.core.gateway.claims import PassportFacts, canonical_tn
from dsip.errors import DsipError

__all__ = [
    "MAX_AGE",
    "IdentityHeader",
    "PassportClaims",
    "StirError",
    "identity_header",
    "parse_identity_header",
    "passport_facts",
    "sign_passport",
    "verify_passport",
]

MAX_AGE: Final = 60
MAX_HEADER_CHARS: Final = 8192
_ATTEST: Final = frozenset({"A", "B", "C"})
# RFC 8225 §5: ``ppt`` names the PASSporT extension; joserfc accepts registered headers only
_REGISTRY: Final = JWSRegistry(
    header_registry={"ppt": HeaderParameter("PASSporT extension", "str")},
    algorithms=["ES256"],
)


class StirError(DsipError):
    """A PASSporT or Identity header that does not verify. The call goes on with the caller
    as an unverified claim, so the reason is the trust loss: ``gateway.downgraded`` (G§7)."""

    default_code = "stir"
    default_reason = "gateway.downgraded"


@dataclass(frozen=True)
class PassportClaims:
    """The claims of a SHAKEN PASSporT (RFC 8588) with optional RCD (RFC 9795)."""

    attest: str
    orig_tn: str
    dest_tns: tuple[str, ...]
    iat: int
    origid: str
    rcd_name: str | None = None


@dataclass(frozen=True)
class IdentityHeader:
    """One parsed ``Identity`` header value (RFC 8224 §4.1)."""

    passport: str
    info: str
    alg: str
    ppt: str


def sign_passport(claims: PassportClaims, *, key: ec.EllipticCurvePrivateKey, x5u: str) -> str:
    """The compact PASSporT for ``claims``, ES256 with ``key`` (the STI certificate's key)."""
    if claims.attest not in _ATTEST:
        raise StirError(f"attest must be A, B or C, not {claims.attest!r}", remote=False)
    header = {"alg": "ES256", "typ": "passport", "ppt": "shaken", "x5u": x5u}
    payload: dict[str, Any] = {
        "attest": claims.attest,
        "dest": {"tn": list(claims.dest_tns)},
        "iat": claims.iat,
        "orig": {"tn": claims.orig_tn},
        "origid": claims.origid,
    }
    if claims.rcd_name is not None:
        payload["rcd"] = {"nam": claims.rcd_name}
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return jws.serialize_compact(
        header, body, ECKey.import_key(key), algorithms=["ES256"], registry=_REGISTRY
    )


def identity_header(passport: str, x5u: str) -> str:
    return f"{passport};info=<{x5u}>;alg=ES256;ppt=shaken"


def parse_identity_header(value: object) -> IdentityHeader:
    """Split an ``Identity`` value into the PASSporT and its parameters (RFC 8224 §4.1)."""
    if not isinstance(value, str) or not value or len(value) > MAX_HEADER_CHARS:
        raise StirError("Identity header missing or too long")
    token, _, rest = value.strip().partition(";")
    if token.count(".") != 2 or any(c.isspace() for c in token):
        raise StirError("Identity header carries no compact PASSporT")
    params: dict[str, str] = {}
    for part in rest.split(";") if rest else []:
        name, sep, val = part.strip().partition("=")
        if not sep:
            raise StirError(f"malformed Identity parameter {part.strip()!r}")
        params[name.strip().lower()] = val.strip()
    info = params.get("info", "")
    if not (info.startswith("<") and info.endswith(">")) or len(info) < 3:
        raise StirError("Identity header needs info=<URI>")
    return IdentityHeader(token, info[1:-1], params.get("alg", "ES256"), params.get("ppt", ""))


def _claims_of(payload: Mapping[str, Any]) -> PassportClaims:
    try:
        attest = payload["attest"]
        orig = payload["orig"]["tn"]
        dest = payload["dest"]["tn"]
        iat = payload["iat"]
        origid = payload.get("origid", "")
    except (KeyError, TypeError):
        raise StirError("PASSporT lacks attest, orig.tn, dest.tn or iat") from None
    if not isinstance(dest, list) or not all(isinstance(d, str) for d in dest):
        raise StirError("dest.tn must be a list of numbers")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise StirError("iat must be an integer")
    if not isinstance(attest, str) or not isinstance(orig, str) or not isinstance(origid, str):
        raise StirError("attest, orig.tn and origid must be strings")
    rcd = payload.get("rcd")
    name = rcd.get("nam") if isinstance(rcd, Mapping) else None
    return PassportClaims(
        attest, orig, tuple(dest), iat, origid, name if isinstance(name, str) else None
    )


def _check_chain(
    chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate], now: int
) -> x509.Certificate:
    """The leaf, once every link is issued by the next and the last by a trust anchor."""
    if not chain:
        raise StirError("no certificate at x5u")
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    for cert in chain:
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise StirError(f"certificate {cert.subject.rfc4514_string()} not valid now")
    try:
        for child, parent in itertools.pairwise(chain):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        raise StirError("x5u chain is broken") from None
    last = chain[-1]
    for anchor in anchors:
        if last == anchor:
            return chain[0]
        try:
            last.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return chain[0]
    raise StirError("certificate does not chain to a trusted STI-CA")


def verify_passport(
    passport: str,
    *,
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: int,
    from_tn: str,
    to_tn: str,
    max_age: int = MAX_AGE,
) -> PassportClaims:
    """Verify one PASSporT against the certificate ``chain`` fetched from its ``x5u``."""
    leaf = _check_chain(chain, anchors, now)
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise StirError("STI certificate key is not P-256")
    try:
        obj = jws.deserialize_compact(
            passport, ECKey.import_key(public), algorithms=["ES256"], registry=_REGISTRY
        )
    except (JoseError, ValueError, TypeError):
        raise StirError("PASSporT signature does not verify") from None
    header = obj.protected
    if header.get("ppt") != "shaken" or header.get("typ") not in (None, "passport"):
        raise StirError("not a SHAKEN PASSporT")
    try:
        payload = json.loads(obj.payload)
    except ValueError:
        raise StirError("PASSporT payload is not JSON") from None
    if not isinstance(payload, dict):
        raise StirError("PASSporT payload is not an object")
    claims = _claims_of(payload)
    if abs(now - claims.iat) > max_age:
        raise StirError(f"iat is {now - claims.iat} s old (at most {max_age})")
    if canonical_tn(claims.orig_tn) is None or canonical_tn(claims.orig_tn) != canonical_tn(
        from_tn
    ):
        raise StirError("orig.tn is not the calling number")
    if canonical_tn(to_tn) not in {canonical_tn(d) for d in claims.dest_tns}:
        raise StirError("dest.tn does not name the called number")
    if claims.attest not in _ATTEST:
        raise StirError(f"attest {claims.attest!r} is not a SHAKEN level")
    return claims


def passport_facts(claims: PassportClaims | None, presented: str | None) -> PassportFacts | None:
    """What the controller needs: verified facts, or unverified ones for a failed header."""
    if claims is not None:
        return PassportFacts(attest=claims.attest, verified=True, orig_tn=claims.orig_tn)
    if presented is not None:
        return PassportFacts(attest="none", verified=False, orig_tn=presented)
    return None
