"""The credential issuer's protocol (seed §9; v0.7 §18): challenge, proof of control, issue,
revoke, publish the status list. Sans-I/O: requests and ``now`` in, results out; the HTTP
edge is :mod:`dsip.services.issuer`.

Issuing (one round trip each):

1. The subject asks for a challenge for its DID; the issuer remembers
   ``challenge → (DID, expiry)`` (single use, :data:`CHALLENGE_TTL` seconds, at most
   :data:`MAX_PENDING` pending).
2. The subject proves control of the DID by signing a compact JWS
   (``typ`` :data:`CONTROL_TYP`, ``alg`` EdDSA, ``kid`` one of the DID's
   ``authentication`` methods) over ``{"aud": <issuer DID>, "sub": <DID>,
   "challenge": …, "credentialType": …, "format": "eddsa-jcs-2022" | "vc+jwt", "iat": …}``.
   Binding type and format into the signed request means a captured proof cannot be turned
   into a request for something else.
3. The issuer checks, in order: shape → signature by an authentication key of ``sub``
   → audience → challenge (known, unexpired, issued to ``sub``) → grant (the issuer attests
   only what its configuration, or the reputation aggregator, says about this DID) — and
   only then consumes the challenge, assigns a random free status-list index (herd privacy,
   Bitstring Status List §5) and issues. A request that fails any check changes nothing.
   A *computed* type (``ReputationScore`` from the aggregator) supersedes: issuing a fresh
   score revokes the subject's earlier ones, so an old, better score cannot be replayed.

Revoking: an administrator (a DID listed in ``admins``) signs a JWS (``typ``
:data:`ADMIN_TYP`) over ``{"aud", "action": "revoke", "credentialId", "iat", "jti"}``;
``iat`` must be within :data:`~dsip.core.trust.vc.CLOCK_SKEW` of ``now`` and each ``jti``
is accepted once. Revocation flips the credential's bit; the next status list credential
published carries it.

JWS: ``joserfc`` (the project's JOSE library, see :mod:`dsip.core.trust.vc`); headers and
payloads are re-read with our strict JSON reader before anything is trusted.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from joserfc import jws
from joserfc.errors import JoseError

from dsip.core.b64 import b64url_decode
from dsip.core.identity import (
    DocumentSource,
    KeyPair,
    did_web_document,
    document_for,
    is_did,
    resolve_kid,
    split_did_url,
)
from dsip.core.jsonwire import loads_strict
from dsip.core.trust.vc import (
    CLOCK_SKEW,
    CREDENTIAL_TYPES,
    DATA_INTEGRITY,
    VC_JWT,
    BitstringStatusList,
    CredentialError,
    eddsa_jose,
    issue_credential,
    issue_status_list_credential,
    okp_jwk,
    status_entry,
)
from dsip.errors import DsipError

__all__ = [
    "ADMIN_TYP",
    "CHALLENGE_TTL",
    "CONTROL_TYP",
    "MAX_PENDING",
    "Grant",
    "IssuanceError",
    "IssuedCredential",
    "IssuerCore",
    "sign_admin_request",
    "sign_control_proof",
    "sign_did_jws",
    "verify_did_jws",
]

CONTROL_TYP: Final = "dsip-control+jwt"
ADMIN_TYP: Final = "dsip-admin+jwt"
CHALLENGE_TTL: Final = 300
MAX_PENDING: Final = 10_000
MAX_JWS: Final = 4096
FORMATS: Final = (DATA_INTEGRITY, VC_JWT)
_ALGS = ["EdDSA"]


class IssuanceError(DsipError):
    """A refused issuer request; ``code`` names what was wrong, ``status`` the HTTP status.

    ``issuance-malformed`` (400), ``issuance-proof-invalid`` (401: not signed by an
    authentication key of the DID it names, wrong ``typ``/audience, stale ``iat``),
    ``issuance-wrong-did`` (403: the proof is by another DID than the challenge was for),
    ``issuance-challenge-unknown`` (409: never issued, already used, or expired — a replay),
    ``issuance-not-granted`` (403: the issuer does not attest this about that DID),
    ``issuance-unauthorized`` (403: not an administrator), ``issuance-unknown-credential``
    (404), ``issuance-busy`` (503: too many pending challenges).
    """

    default_code = "issuance-malformed"
    default_reason = "x-dsip.issuance-refused"

    _STATUS: Final[Mapping[str, int]] = {
        "issuance-malformed": 400,
        "issuance-proof-invalid": 401,
        "issuance-wrong-did": 403,
        "issuance-not-granted": 403,
        "issuance-unauthorized": 403,
        "issuance-unknown-credential": 404,
        "issuance-challenge-unknown": 409,
        "issuance-busy": 503,
    }

    @property
    def status(self) -> int:
        return self._STATUS.get(self.code, 400)


@dataclass(frozen=True)
class Grant:
    """What the issuer will attest: ``claims`` of ``credential_type`` about ``subject``."""

    subject: str
    credential_type: str
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class IssuedCredential:
    id: str
    subject: str
    credential_type: str
    index: int
    issued_at: int
    format: str


@dataclass
class _Pending:
    did: str
    expires: int


# --- signed requests -----------------------------------------------------------------------


def sign_did_jws(key: KeyPair, typ: str, payload: Mapping[str, Any]) -> str:
    header = {"alg": "EdDSA", "kid": key.kid, "typ": typ}
    body = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False).encode()
    with eddsa_jose():
        return jws.serialize_compact(header, body, okp_jwk(key), algorithms=_ALGS)


def sign_control_proof(
    key: KeyPair,
    *,
    audience: str,
    challenge: str,
    credential_type: str,
    now: int,
    fmt: str = DATA_INTEGRITY,
) -> str:
    """The subject's proof of control for one issuance request (step 2 above)."""
    return sign_did_jws(
        key,
        CONTROL_TYP,
        {
            "aud": audience,
            "sub": key.did,
            "challenge": challenge,
            "credentialType": credential_type,
            "format": fmt,
            "iat": now,
        },
    )


def sign_admin_request(
    key: KeyPair, *, audience: str, credential_id: str, now: int, action: str = "revoke"
) -> str:
    """An administrator's signed ``revoke`` request."""
    return sign_did_jws(
        key,
        ADMIN_TYP,
        {
            "aud": audience,
            "action": action,
            "credentialId": credential_id,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
        },
    )


def verify_did_jws(
    token: object,
    typ: str,
    documents: DocumentSource | None,
    *,
    purpose: str = "authentication",
    max_size: int = MAX_JWS,
) -> tuple[str, dict[str, Any]]:
    """Verify a compact JWS signed by an ``authentication`` (or, with ``purpose``
    ``"assertionMethod"``, an ``assertionMethod``) key of the DID in its ``kid``;
    return ``(did, payload)``. Every failure is an :class:`IssuanceError`."""
    if not isinstance(token, str) or len(token) > max_size or token.count(".") != 2:
        raise IssuanceError("proof is not a compact JWS")
    head, body, sig = token.split(".")
    try:
        header, _ = loads_strict(b64url_decode(head, code="issuance-malformed"))
        payload, saw_float = loads_strict(b64url_decode(body, code="issuance-malformed"))
    except DsipError:
        raise IssuanceError("proof is not base64url strict JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict) or saw_float:
        raise IssuanceError("proof header or payload is not a float-free JSON object")
    if header.get("alg") != "EdDSA" or not sig:
        raise IssuanceError("proof must be signed EdDSA", code="issuance-proof-invalid")
    if header.get("typ") != typ:
        raise IssuanceError(f"proof typ must be {typ}", code="issuance-proof-invalid")
    if set(header) - {"alg", "kid", "typ"}:
        raise IssuanceError("proof header carries unexpected parameters")
    kid = header.get("kid")
    try:
        did, _ = split_did_url(kid)
        method = resolve_kid(str(kid), documents)
    except DsipError:
        raise IssuanceError(
            "proof kid does not resolve to a key", code="issuance-proof-invalid"
        ) from None
    doc = document_for(did, documents)
    allowed: tuple[str, ...] = ()
    if doc is not None:
        allowed = doc.assertion if purpose == "assertionMethod" else doc.authentication
    if kid not in allowed:
        raise IssuanceError(
            f"proof kid is not an {purpose} method of its DID", code="issuance-proof-invalid"
        )
    try:
        with eddsa_jose():
            jws.deserialize_compact(token, okp_jwk(method), algorithms=_ALGS)
    except (JoseError, ValueError):
        raise IssuanceError(
            "proof signature does not verify", code="issuance-proof-invalid"
        ) from None
    return did, payload


def _int_field(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise IssuanceError(f"{name} is not an integer")
    return value


def _str_field(payload: Mapping[str, Any], name: str, limit: int = 256) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise IssuanceError(f"{name} is not a string of 1–{limit} characters")
    return value


# --- the issuer ---------------------------------------------------------------------------

ClaimSource = Callable[[str, int], "Mapping[str, Any] | None"]
"""``(subject DID, now)`` → claims the issuer attests for a computed type (a reputation
score), or ``None`` when it has nothing to say about that DID."""


@dataclass
class IssuerState:
    """What an issuer must keep across restarts (the edge persists it as JSON)."""

    bits: BitstringStatusList = field(default_factory=BitstringStatusList)
    issued: dict[str, IssuedCredential] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "encodedList": self.bits.encode(),
            "issued": [
                {
                    "id": c.id,
                    "subject": c.subject,
                    "type": c.credential_type,
                    "index": c.index,
                    "issuedAt": c.issued_at,
                    "format": c.format,
                }
                for c in self.issued.values()
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IssuerState:
        try:
            bits = BitstringStatusList.decode(data["encodedList"])
            issued = {
                str(c["id"]): IssuedCredential(
                    str(c["id"]),
                    str(c["subject"]),
                    str(c["type"]),
                    int(c["index"]),
                    int(c["issuedAt"]),
                    str(c["format"]),
                )
                for c in data["issued"]
            }
        except (KeyError, TypeError, ValueError, CredentialError) as exc:
            raise IssuanceError(f"issuer state is corrupt: {exc}", remote=False) from None
        return cls(bits, issued)


class IssuerCore:
    """One issuer DID, its grants, its status list and its pending challenges."""

    def __init__(
        self,
        key: KeyPair,
        *,
        status_list_url: str,
        grants: Collection[Grant] = (),
        admins: Collection[str] = (),
        computed: Mapping[str, ClaimSource] | None = None,
        credential_ttl: int = 365 * 86_400,
        computed_ttl: int = 86_400,
        status_list_ttl: int = 3600,
        state: IssuerState | None = None,
    ) -> None:
        self.key = key
        self.did = key.did
        self.status_list_url = status_list_url
        self.admins = frozenset(admins)
        self.credential_ttl = credential_ttl
        self.computed_ttl = computed_ttl  # a recomputed score is only as good as its period
        self.status_list_ttl = status_list_ttl
        self.state = state or IssuerState()
        self._grants: dict[tuple[str, str], Mapping[str, Any]] = {}
        for g in grants:
            self.grant(g)
        self._computed = dict(computed or {})
        self._pending: dict[str, _Pending] = {}
        self._seen_jti: dict[str, int] = {}
        self._published: tuple[int, dict[str, Any] | str] | None = None

    # --- configuration ------------------------------------------------------------------

    def grant(self, g: Grant) -> None:
        """Allow issuing ``g`` (claims are schema-checked now, not at issuance)."""
        from dsip.core.payloads.schema import validate_named

        schema = CREDENTIAL_TYPES.get(g.credential_type)
        if schema is None or not is_did(g.subject):
            raise IssuanceError(
                f"grant for {g.subject[:80]!r}: {g.credential_type!r} is not a DSIP type",
                remote=False,
            )
        try:
            validate_named(schema, {"id": g.subject, **g.claims})
        except DsipError as exc:
            raise IssuanceError(
                f"grant for {g.subject[:80]}: {exc.message}", remote=False
            ) from None
        self._grants[(g.subject, g.credential_type)] = dict(g.claims)

    def did_document(self) -> dict[str, Any]:
        return did_web_document(
            self.did, [(self.key.kid.split("#", 1)[1], self.key.public_key_multibase)]
        )

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- step 1 -------------------------------------------------------------------------

    def challenge(self, request: object, *, now: int) -> dict[str, Any]:
        """``{"did": …}`` → ``{"challenge", "audience", "expires"}``."""
        if not isinstance(request, Mapping) or set(request) != {"did"}:
            raise IssuanceError('a challenge request is {"did": <DID>}')
        did = request["did"]
        if not is_did(did):
            raise IssuanceError("did is not a DID")
        self._purge(now)
        if len(self._pending) >= MAX_PENDING:
            raise IssuanceError("too many pending challenges", code="issuance-busy")
        nonce = secrets.token_urlsafe(32)
        self._pending[nonce] = _Pending(did, now + CHALLENGE_TTL)
        return {"challenge": nonce, "audience": self.did, "expires": now + CHALLENGE_TTL}

    def _purge(self, now: int) -> None:
        for nonce in [n for n, p in self._pending.items() if p.expires <= now]:
            del self._pending[nonce]
        for jti in [j for j, t in self._seen_jti.items() if t <= now]:
            del self._seen_jti[jti]

    # --- steps 2–3 ----------------------------------------------------------------------

    def issue(
        self, request: object, *, now: int, documents: DocumentSource | None = None
    ) -> tuple[IssuedCredential, dict[str, Any] | str]:
        """``{"proof": <control JWS>}`` → the issued credential (object or ``vc+jwt``)."""
        if not isinstance(request, Mapping) or set(request) != {"proof"}:
            raise IssuanceError('an issuance request is {"proof": <compact JWS>}')
        did, claims = verify_did_jws(request["proof"], CONTROL_TYP, documents)
        if claims.get("aud") != self.did:
            raise IssuanceError("proof is for another issuer", code="issuance-proof-invalid")
        if claims.get("sub") != did:
            raise IssuanceError("proof sub is not the signing DID", code="issuance-wrong-did")
        iat = _int_field(claims, "iat")
        if abs(iat - now) > CLOCK_SKEW:
            raise IssuanceError(
                "proof iat is outside the clock window", code="issuance-proof-invalid"
            )
        nonce = _str_field(claims, "challenge")
        ctype = _str_field(claims, "credentialType", 64)
        fmt = _str_field(claims, "format", 32)
        if fmt not in FORMATS:
            raise IssuanceError(f"format must be one of {', '.join(FORMATS)}")
        pending = self._pending.get(nonce)
        if pending is None or pending.expires <= now:
            raise IssuanceError(
                "challenge unknown, already used or expired", code="issuance-challenge-unknown"
            )
        if pending.did != did:
            raise IssuanceError(
                "the challenge was issued to another DID", code="issuance-wrong-did"
            )
        subject = self._claims_for(did, ctype, now)
        index = self._free_index()
        ttl = self.computed_ttl if ctype in self._computed else self.credential_ttl
        credential = issue_credential(
            self.key,
            ctype,
            {"id": did, **subject},
            now=now,
            valid_until=now + ttl,
            status=status_entry(self.status_list_url, index),
            proof=fmt,
        )
        cid = _credential_id(credential)
        # Everything checked and signed: only now does state change.
        del self._pending[nonce]
        if ctype in self._computed:
            # A recomputed claim (a reputation score) supersedes the earlier ones: revoke
            # them, so a subject cannot keep presenting a better, older score.
            for old in self.state.issued.values():
                if old.subject == did and old.credential_type == ctype:
                    self.state.bits.set(old.index)
                    self._published = None
        record = IssuedCredential(cid, did, ctype, index, now, fmt)
        self.state.issued[cid] = record
        return record, credential

    def _claims_for(self, did: str, ctype: str, now: int) -> Mapping[str, Any]:
        if ctype not in CREDENTIAL_TYPES:
            raise IssuanceError(f"{ctype[:64]!r} is not a DSIP credential type")
        computed = self._computed.get(ctype)
        claims = computed(did, now) if computed is not None else self._grants.get((did, ctype))
        if claims is None:
            raise IssuanceError(
                f"this issuer does not attest {ctype} for {did[:80]}", code="issuance-not-granted"
            )
        return claims

    def _free_index(self) -> int:
        used = {c.index for c in self.state.issued.values()}
        size = len(self.state.bits)
        if len(used) >= size // 2:
            raise IssuanceError("status list is half full", code="issuance-busy", remote=False)
        while True:
            index = secrets.randbelow(size)
            if index not in used:
                return index

    # --- revocation ---------------------------------------------------------------------

    def revoke(
        self, request: object, *, now: int, documents: DocumentSource | None = None
    ) -> IssuedCredential:
        """``{"proof": <admin JWS>}`` → the revoked credential's record."""
        if not isinstance(request, Mapping) or set(request) != {"proof"}:
            raise IssuanceError('a revocation request is {"proof": <compact JWS>}')
        did, claims = verify_did_jws(request["proof"], ADMIN_TYP, documents)
        if did not in self.admins:
            raise IssuanceError(f"{did[:80]} is not an administrator", code="issuance-unauthorized")
        if claims.get("aud") != self.did or claims.get("action") != "revoke":
            raise IssuanceError(
                "not a revoke request for this issuer", code="issuance-proof-invalid"
            )
        iat = _int_field(claims, "iat")
        if abs(iat - now) > CLOCK_SKEW:
            raise IssuanceError(
                "request iat is outside the clock window", code="issuance-proof-invalid"
            )
        jti = _str_field(claims, "jti", 128)
        cid = _str_field(claims, "credentialId", 512)
        self._purge(now)
        if jti in self._seen_jti:
            raise IssuanceError("request already seen (jti)", code="issuance-challenge-unknown")
        record = self.state.issued.get(cid)
        if record is None:
            raise IssuanceError("no credential with that id", code="issuance-unknown-credential")
        self._seen_jti[jti] = iat + 2 * CLOCK_SKEW
        self.state.bits.set(record.index)
        self._published = None
        return record

    def is_revoked(self, credential_id: str) -> bool:
        record = self.state.issued.get(credential_id)
        return record is not None and self.state.bits.get(record.index)

    # --- publication --------------------------------------------------------------------

    def status_list_credential(self, *, now: int) -> dict[str, Any] | str:
        """The signed status list, re-signed when it changed or half its lifetime passed."""
        if self._published is not None and now - self._published[0] < self.status_list_ttl // 2:
            return self._published[1]
        signed = issue_status_list_credential(
            self.key,
            self.status_list_url,
            self.state.bits,
            now=now,
            valid_until=now + self.status_list_ttl,
        )
        self._published = (now, signed)
        return signed


def _credential_id(credential: Mapping[str, Any] | str) -> str:
    if isinstance(credential, str):
        _, body, _ = credential.split(".")
        value, _ = loads_strict(b64url_decode(body))
        return str(value["id"])
    return str(credential["id"])
