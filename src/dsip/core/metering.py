"""Prepaid media access tokens, the meter that spends them, and signed usage records
(seed §7 "SFU/TURN accepts a JWT with DID + prepaid balance/reputation claims. Meter per-MB/
second; throttle on low balance", §17).

*Access token* (dsip profile metering/1.0, ``access-token.schema.json``): a JWT signed EdDSA
with ``joserfc`` by an issuer DID (a relay or a payment issuer); ``kid`` is the issuer's DID
URL and resolves through its DID document like any DSIP signature. Claims: ``sub`` (the
DID that may spend it), ``aud`` (``turn``/``sfu``), ``balance_msat``, ``rate`` (msat per
second *or* per MB), ``exp``, ``jti``, optional ``reputation``. A token is a bearer of
value only together with its subject's key: admission also requires a signature by ``sub``.

*Meter* (sans-I/O): fed cumulative usage (seconds or bytes) with explicit ``now``; debits
the balance and moves ``active → throttled → cut``: *throttled* when less than
``throttle_window`` seconds of spending remain (the service warns and, where it can, caps
bandwidth), *cut* at zero (the service ends the session).

*Usage record* (``usage-record.schema.json``): the meter's state as a DSIP envelope signed
by the metering service, addressed to the subject — what was charged, from which token,
and why a session ended.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import make_payload, sign_envelope
from dsip.core.identity import DocumentSource, KeyPair, resolve_kid, split_did_url
from dsip.core.payloads.schema import validate_named
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError

__all__ = [
    "AccessToken",
    "Meter",
    "MeterState",
    "TokenError",
    "issue_access_token",
    "usage_record",
    "verify_access_token",
]

_ALGS = ["EdDSA"]


class TokenError(DsipError):
    """An access token that does not admit: forged, expired, wrong audience or subject."""

    default_code = "token-invalid"
    default_reason = "policy.blocked"


@dataclass(frozen=True)
class AccessToken:
    issuer: str
    subject: str
    audience: frozenset[str]
    issued_at: int
    expires_at: int
    jti: str
    balance_msat: int
    msat_per_second: int | None
    msat_per_mb: int | None
    reputation: Mapping[str, Any] | None = None
    room: str | None = None
    raw: str = field(default="", repr=False)


@contextmanager
def _eddsa() -> Iterator[None]:
    # joserfc flags the JOSE name "EdDSA" as deprecated by RFC 9864 in favour of "Ed25519";
    # DSIP v0.7 (§10.2) names "EdDSA", so that is what we sign and accept.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        yield


def _jwk(key: KeyPair, *, private: bool) -> OKPKey:
    jwk: dict[str, str | list[str]] = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(key.public_key.public_bytes_raw()),
    }
    if private:
        jwk["d"] = b64url_encode(key.seed())
    return OKPKey.import_key(jwk)


def issue_access_token(
    issuer: KeyPair,
    *,
    subject: str,
    balance_msat: int,
    now: int,
    ttl: int = 3600,
    audience: tuple[str, ...] = ("turn", "sfu"),
    msat_per_second: int | None = None,
    msat_per_mb: int | None = None,
    reputation: Mapping[str, Any] | None = None,
    room: str | None = None,
) -> str:
    """A signed prepaid token for ``subject`` (exactly one of the two rates); ``room``
    restricts an ``sfu`` token to one room."""
    if (msat_per_second is None) == (msat_per_mb is None):
        raise ValueError("give exactly one of msat_per_second, msat_per_mb")
    rate = (
        {"msat_per_second": msat_per_second}
        if msat_per_second is not None
        else {"msat_per_mb": msat_per_mb}
    )
    claims: dict[str, Any] = {
        "iss": issuer.did,
        "sub": subject,
        "aud": list(audience),
        "iat": now,
        "exp": now + ttl,
        "jti": new_ulid(now * 1000),
        "balance_msat": balance_msat,
        "rate": rate,
    }
    if reputation is not None:
        claims["reputation"] = dict(reputation)
    if room is not None:
        claims["room"] = room
    validate_named("access-token", claims)
    header = {"alg": "EdDSA", "kid": issuer.kid, "typ": "dsip-access+jwt"}
    with _eddsa():
        return jwt.encode(header, claims, _jwk(issuer, private=True), algorithms=_ALGS)


def verify_access_token(
    token: str,
    *,
    audience: str,
    now: int,
    documents: DocumentSource | None = None,
    trusted_issuers: frozenset[str] | None = None,
    subject: str | None = None,
) -> AccessToken:
    """Verify signature (issuer key through its DID document), schema, time, audience,
    issuer allow-list and, when given, that ``subject`` is the token's ``sub``."""
    if not isinstance(token, str) or len(token) > 8192 or token.count(".") != 2:
        raise TokenError("access token is not a compact JWT", code="token-invalid")
    try:
        header = json.loads(b64url_decode(token.split(".", 1)[0], code="token-invalid"))
    except (DsipError, ValueError):
        raise TokenError("access token header is unreadable", code="token-invalid") from None
    kid = header.get("kid") if isinstance(header, dict) else None
    if header.get("alg") != "EdDSA" or not isinstance(kid, str):
        raise TokenError("access token must be EdDSA with a DID URL kid", code="token-invalid")
    issuer_did, _ = split_did_url(kid)
    if trusted_issuers is not None and issuer_did not in trusted_issuers:
        raise TokenError(
            f"{issuer_did} is not a trusted token issuer",
            code="token-issuer",
            reason="policy.trust-insufficient",
        )
    try:
        method = resolve_kid(kid, documents)
    except DsipError:
        raise TokenError(f"token kid {kid[:80]} does not resolve", code="token-invalid") from None
    pub = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(method.raw_key)})
    try:
        with _eddsa():
            decoded = jwt.decode(token, pub, algorithms=_ALGS)
    except (JoseError, ValueError):
        raise TokenError("access token signature does not verify", code="token-signature") from None
    claims = decoded.claims
    validate_named("access-token", claims)
    if claims["iss"] != issuer_did:
        raise TokenError("token iss is not the signer", code="token-invalid")
    not_before = int(claims["nbf"] if "nbf" in claims else claims["iat"])
    if not not_before - 300 <= now < int(claims["exp"]):
        raise TokenError("access token is expired or not yet valid", code="token-expired")
    if audience not in claims["aud"]:
        raise TokenError(f"token is not valid for {audience}", code="token-audience")
    if subject is not None and claims["sub"] != subject:
        raise TokenError("token belongs to another DID", code="token-subject")
    rate = claims["rate"]
    return AccessToken(
        issuer=issuer_did,
        subject=claims["sub"],
        audience=frozenset(claims["aud"]),
        issued_at=claims["iat"],
        expires_at=claims["exp"],
        jti=claims["jti"],
        balance_msat=claims["balance_msat"],
        msat_per_second=rate.get("msat_per_second"),
        msat_per_mb=rate.get("msat_per_mb"),
        reputation=claims.get("reputation"),
        room=claims.get("room"),
        raw=token,
    )


class MeterState(StrEnum):
    ACTIVE = "active"
    THROTTLED = "throttled"
    CUT = "cut"
    CLOSED = "closed"


# state → states it may move to (the meter never un-cuts, §17 "throttle on low balance")
TRANSITIONS: dict[MeterState, frozenset[MeterState]] = {
    MeterState.ACTIVE: frozenset({MeterState.THROTTLED, MeterState.CUT, MeterState.CLOSED}),
    MeterState.THROTTLED: frozenset({MeterState.CUT, MeterState.CLOSED}),
    MeterState.CUT: frozenset({MeterState.CLOSED}),
    MeterState.CLOSED: frozenset(),
}


class Meter:
    """Spends one token for one service session. Usage is cumulative; ``now`` is explicit."""

    def __init__(
        self, token: AccessToken, service: str, *, started_at: int, throttle_window: int = 5
    ) -> None:
        self.token = token
        self.service = service
        self.started_at = started_at
        self.throttle_window = throttle_window
        self.state = MeterState.ACTIVE
        self.seconds = 0
        self.bytes = 0
        self.debited_msat = 0

    @property
    def balance_msat(self) -> int:
        return self.token.balance_msat - self.debited_msat

    def cost(self, seconds: int, nbytes: int) -> int:
        if self.token.msat_per_second is not None:
            return seconds * self.token.msat_per_second
        assert self.token.msat_per_mb is not None
        return (nbytes * self.token.msat_per_mb) // 1_000_000

    def seconds_left(self) -> int:
        """At the token's rate, whole seconds until the balance is spent (per-MB: unknown → large)."""
        if self.token.msat_per_second is None:
            return 1 << 30
        return max(0, self.balance_msat // self.token.msat_per_second)

    def update(self, *, now: int, total_bytes: int | None = None) -> MeterState:
        """Account usage up to ``now`` (and cumulative bytes); returns the new state."""
        if self.state in (MeterState.CUT, MeterState.CLOSED):
            return self.state
        self.seconds = max(self.seconds, now - self.started_at)
        if total_bytes is not None:
            self.bytes = max(self.bytes, total_bytes)
        self.debited_msat = min(self.token.balance_msat, self.cost(self.seconds, self.bytes))
        if self.balance_msat <= 0 or now >= self.token.expires_at:
            self._move(MeterState.CUT)
        elif self.seconds_left() <= self.throttle_window:
            self._move(MeterState.THROTTLED)
        return self.state

    def close(self) -> None:
        self._move(MeterState.CLOSED)

    def _move(self, new: MeterState) -> None:
        if new != self.state and new in TRANSITIONS[self.state]:
            self.state = new


def usage_record(
    meter: Meter, signer: KeyPair, *, now: int, signer_did: str | None = None
) -> dict[str, str]:
    """The meter's state as a signed DSIP envelope addressed to the token's subject."""
    payload = make_payload(
        "usage-record",
        sender=signer_did or signer.did,
        now=now,
        ttl=86_400,
        profiles=[],
        to=meter.token.subject,
        token=meter.token.jti,
        service=meter.service,
        started_at=meter.started_at,
        seconds=meter.seconds,
        bytes=meter.bytes,
        debited_msat=meter.debited_msat,
        balance_msat=meter.balance_msat,
        state=str(meter.state),
    )
    return sign_envelope(payload, signer)
