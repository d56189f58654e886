"""Selective disclosure of credential claims: SD-JWT VC (seed §9, §20.3).

An issuer signs a DSIP credential as an SD-JWT (``typ`` ``dc+sd-jwt``, EdDSA, ``kid`` an
``assertionMethod`` of the issuer DID) whose subject claims are each a separate
disclosure; ``vct`` names the DSIP credential type, ``sub`` the subject DID and
``cnf.jwk`` the subject's Ed25519 key, so only the subject can present it. The holder
chooses which claims to reveal and binds the presentation to one verifier and one nonce
with a key-binding JWT (``kb+jwt``); the verifier learns the chosen claims and nothing
about the others but their number.

Library: ``sd-jwt`` 0.10.4, the OpenWallet Foundation's reference implementation (on
``jwcrypto``), pinned exactly. It does the disclosure encoding, digests, issuer signature
and key-binding checks. Checked against the SD-JWT specification, it is not sound *alone*,
so :func:`verify_sd_jwt_vc` closes each gap before or after calling it:

* it ignores a presented disclosure whose digest the issuer never signed (the spec
  requires rejection) — we require every disclosure to be referenced;
* it parses the JWT and disclosures with plain ``json.loads`` (duplicate keys, floats) —
  we re-read every part with our strict reader first;
* it checks neither ``iat``/``nbf``/``exp`` of the credential nor the key-binding JWT's
  ``iat`` (its own TODO) — we check both against ``now`` (and, since its holder stamps
  the key-binding JWT with the wall clock, :func:`present_sd_jwt_vc` signs that JWT
  itself with joserfc at ``now``);
* it verifies the key-binding JWT only with ES256 unless told otherwise — we call its
  key-binding check with EdDSA (a private method of this exact release, hence the pin);
* it does not pin the issuer's ``alg`` or ``typ`` — we require EdDSA and ``dc+sd-jwt``
  and resolve the key through the issuer's DID document;
* nothing ties ``cnf`` to the subject — we require the key to be an ``authentication``
  key of ``sub``.

Alternatives looked at: ``openvc-core`` and ``proofbundle`` on PyPI also emit SD-JWTs but are
young single-maintainer packages without the reference implementation's test vectors;
``sd-jwt`` is the one the specification's authors maintain.

Errors are :class:`~dsip.core.trust.vc.CredentialError` with the codes of
:mod:`dsip.core.trust.vc`, plus ``credential-holder`` (missing or bad key binding).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jws
from jwcrypto.common import JWException
from jwcrypto.jwk import JWK
from sd_jwt.common import SDObj
from sd_jwt.holder import SDJWTHolder
from sd_jwt.issuer import SDJWTIssuer
from sd_jwt.verifier import SDJWTVerifier

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import DocumentSource, KeyPair, document_for, resolve_kid, split_did_url
from dsip.core.jsonwire import loads_strict
from dsip.core.payloads.schema import schema_document, validate_named
from dsip.core.trust.vc import (
    CLOCK_SKEW,
    CREDENTIAL_TYPES,
    CredentialError,
    assertion_method,
    eddsa_jose,
    okp_jwk,
)
from dsip.errors import DsipError

__all__ = [
    "SD_JWT_TYP",
    "DisclosedCredential",
    "issue_sd_jwt_vc",
    "present_sd_jwt_vc",
    "verify_sd_jwt_vc",
]

SD_JWT_TYP: Final = "dc+sd-jwt"
KB_TYP: Final = "kb+jwt"
MAX_PRESENTATION: Final = 16 * 1024
_RESERVED: Final = frozenset({"iss", "iat", "nbf", "exp", "vct", "sub", "cnf", "status", "_sd"})


@dataclass(frozen=True)
class DisclosedCredential:
    """What a verified presentation shows: the disclosed claims only."""

    type: str
    issuer: str
    subject: str
    claims: Mapping[str, Any]
    withheld: int  # signed claims the holder chose not to disclose


def _jwk(key: KeyPair, *, private: bool) -> JWK:
    fields = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key.public_key.public_bytes_raw())}
    if private:
        fields["d"] = b64url_encode(key.seed())
    return JWK(**fields)


def issue_sd_jwt_vc(
    issuer: KeyPair,
    credential_type: str,
    subject: Mapping[str, Any],
    *,
    holder: KeyPair,
    now: int,
    valid_until: int | None = None,
) -> str:
    """An SD-JWT VC (issuance form: JWT ``~`` disclosures ``~``) with every subject claim
    but ``id`` selectively disclosable; ``holder`` is the subject's key (``cnf``)."""
    schema = CREDENTIAL_TYPES.get(credential_type)
    if schema is None:
        raise CredentialError(f"{credential_type!r} is not a DSIP credential type", remote=False)
    validate_named(schema, dict(subject))
    if subject["id"] != holder.did:
        raise CredentialError("the holder key must be the subject's", remote=False)
    claims: dict[Any, Any] = {
        "iss": issuer.did,
        "iat": now,
        "vct": credential_type,
        "sub": subject["id"],
    }
    if valid_until is not None:
        claims["exp"] = valid_until
    for name, value in subject.items():
        if name != "id":
            claims[SDObj(name)] = value
    sd = SDJWTIssuer(
        claims,
        _jwk(issuer, private=True),
        holder_key=_jwk(holder, private=False),
        sign_alg="EdDSA",
        extra_header_parameters={"typ": SD_JWT_TYP, "kid": issuer.kid},
    )
    return str(sd.sd_jwt_issuance)


def present_sd_jwt_vc(
    issued: str,
    disclose: Collection[str],
    *,
    holder: KeyPair,
    audience: str,
    nonce: str,
    now: int,
) -> str:
    """A presentation revealing only the claims named in ``disclose``, bound to
    ``audience`` and ``nonce`` by a key-binding JWT signed with ``holder`` at ``now``.

    ``sd-jwt`` selects the disclosures; the key-binding JWT is signed here with joserfc,
    because the library stamps it with the wall clock and dsip's core takes time as
    ``now``."""
    sd = SDJWTHolder(issued)
    sd.create_presentation(dict.fromkeys(disclose, True))
    unbound = str(sd.sd_jwt_presentation)  # "<jwt>~<disclosure>~…~"
    claims = {
        "nonce": nonce,
        "aud": audience,
        "iat": now,
        "sd_hash": b64url_encode(hashlib.sha256(unbound.encode("ascii")).digest()),
    }
    header = {"alg": "EdDSA", "typ": KB_TYP}
    with eddsa_jose():
        kb = jws.serialize_compact(
            header, json.dumps(claims).encode(), okp_jwk(holder), algorithms=["EdDSA"]
        )
    return unbound + kb


def _strict_json(part: str, what: str) -> Any:
    try:
        value, saw_float = loads_strict(b64url_decode(part, code="credential-malformed"), what=what)
    except DsipError:
        raise CredentialError(f"{what} is not base64url strict JSON") from None
    if saw_float:
        raise CredentialError(f"{what} contains a float")
    return value


def _int_claim(payload: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise CredentialError(f"{name} is not an integer time")
    return value


class _EdDSAKeyBinding(SDJWTVerifier):  # type: ignore[misc]  # sd-jwt is untyped
    """The reference verifier with its key-binding check run for EdDSA (module docstring)."""

    def check_key_binding(self, audience: str, nonce: str) -> None:
        self._verify_key_binding_jwt(audience, nonce, "EdDSA")


def verify_sd_jwt_vc(
    presentation: object,
    *,
    documents: DocumentSource | None,
    now: int,
    audience: str,
    nonce: str,
    trusted_issuers: Mapping[str, Collection[str]] | None = None,
    subject: str | None = None,
) -> DisclosedCredential:
    """Verify a key-bound SD-JWT VC presentation (module docstring) and return what it
    discloses, or raise :class:`CredentialError` with the one reason it fails."""
    if not isinstance(presentation, str) or len(presentation) > MAX_PRESENTATION:
        raise CredentialError("an SD-JWT presentation is a string of at most 16 KiB")
    parts = presentation.split("~")
    if len(parts) < 2:
        raise CredentialError("not an SD-JWT (no ~ separators)")
    jwt, disclosures, kb = parts[0], parts[1:-1], parts[-1]
    if jwt.count(".") != 2:
        raise CredentialError("the issuer-signed part is not a compact JWS")
    head, body, sig = jwt.split(".")
    header, payload = _strict_json(head, "SD-JWT header"), _strict_json(body, "SD-JWT payload")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise CredentialError("SD-JWT header and payload must be objects")
    if not sig or header.get("alg") in (None, "none"):
        raise CredentialError("the SD-JWT is unsigned", code="credential-unsigned")
    if header.get("alg") != "EdDSA" or header.get("typ") != SD_JWT_TYP:
        raise CredentialError(
            f"SD-JWT must be EdDSA with typ {SD_JWT_TYP}", code="credential-proof-unsupported"
        )
    ctype, issuer, sub = payload.get("vct"), payload.get("iss"), payload.get("sub")
    if (
        not isinstance(ctype, str)
        or ctype not in CREDENTIAL_TYPES
        or not isinstance(issuer, str)
        or not isinstance(sub, str)
    ):
        raise CredentialError("vct is not a DSIP credential type, or iss/sub is missing")
    if payload.get("_sd_alg", "sha-256") != "sha-256":
        raise CredentialError("only sha-256 disclosure digests are accepted")
    if trusted_issuers is not None and issuer not in trusted_issuers.get(ctype, ()):
        raise CredentialError(
            f"{issuer[:80]} is not trusted to issue {ctype}", code="credential-issuer"
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid.startswith(issuer + "#"):
        raise CredentialError("kid is not a key of the issuer", code="credential-signature")
    method = assertion_method(kid, documents)
    # Every disclosure must be one the issuer signed: an unreferenced one is refused.
    signed = payload.get("_sd", [])
    if not isinstance(signed, list) or not all(isinstance(d, str) for d in signed):
        raise CredentialError("_sd is not a list of digests")
    seen: set[str] = set()
    for disclosure in disclosures:
        decoded = _strict_json(disclosure, "disclosure")
        if (
            not isinstance(decoded, list)
            or len(decoded) != 3
            or not isinstance(decoded[1], str)
            or decoded[1] in _RESERVED
            or decoded[1] == "..."
        ):
            raise CredentialError("a disclosure is not [salt, claim name, value]")
        digest = b64url_encode(hashlib.sha256(disclosure.encode("ascii")).digest())
        if digest not in signed or digest in seen:
            raise CredentialError(
                "a disclosure was not signed by the issuer (or repeats)",
                code="credential-signature",
            )
        seen.add(digest)
    issuer_key = JWK(kty="OKP", crv="Ed25519", x=b64url_encode(method.raw_key))
    try:
        verifier = _EdDSAKeyBinding(presentation, lambda _iss, _hdr: issuer_key)
    except (JWException, ValueError, KeyError, TypeError, IndexError):
        raise CredentialError(
            "SD-JWT signature does not verify: the credential was altered",
            code="credential-signature",
        ) from None
    _check_times(payload, now)
    _check_holder(payload, sub, documents)
    if not kb:
        raise CredentialError("the presentation has no key binding", code="credential-holder")
    try:
        verifier.check_key_binding(audience, nonce)
    except (JWException, ValueError, KeyError, TypeError):
        raise CredentialError(
            "key binding does not verify (holder key, audience, nonce or digest)",
            code="credential-holder",
        ) from None
    kb_payload = _strict_json(kb.split(".")[1] if kb.count(".") == 2 else "", "key binding")
    kb_iat = _int_claim(kb_payload, "iat", required=True)
    assert kb_iat is not None
    if abs(kb_iat - now) > CLOCK_SKEW:
        raise CredentialError("key binding is not fresh", code="credential-holder")
    if subject is not None and sub != subject:
        raise CredentialError(
            f"credential is about {sub[:80]}, not {subject[:80]}", code="credential-subject"
        )
    claims = {k: v for k, v in verifier.get_verified_payload().items() if k not in _RESERVED}
    allowed = set(schema_document(CREDENTIAL_TYPES[ctype])["properties"]) - {"id"}
    if not set(claims) <= allowed or not all(isinstance(v, (str, int)) for v in claims.values()):
        raise CredentialError(f"disclosed claims are not {ctype} claims")
    return DisclosedCredential(ctype, issuer, sub, claims, len(signed) - len(seen))


def _check_times(payload: Mapping[str, Any], now: int) -> None:
    iat = _int_claim(payload, "iat", required=True)
    nbf = _int_claim(payload, "nbf", required=False)
    exp = _int_claim(payload, "exp", required=False)
    assert iat is not None
    if iat > now + CLOCK_SKEW or (nbf is not None and nbf > now + CLOCK_SKEW):
        raise CredentialError("not valid yet", code="credential-not-yet-valid")
    if exp is not None and exp <= now:
        raise CredentialError("expired", code="credential-expired")


def _check_holder(payload: Mapping[str, Any], sub: str, documents: DocumentSource | None) -> None:
    """``cnf.jwk`` must be an authentication key of ``sub``: only the subject presents."""
    cnf = payload.get("cnf")
    jwk = cnf.get("jwk") if isinstance(cnf, Mapping) else None
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise CredentialError("cnf is not an Ed25519 JWK", code="credential-holder")
    doc = document_for(sub, documents)
    keys = set()
    for kid in doc.authentication if doc is not None else ():
        try:
            split_did_url(kid)
            keys.add(b64url_encode(resolve_kid(kid, documents).raw_key))
        except DsipError:
            continue
    if jwk.get("x") not in keys:
        raise CredentialError(
            "the holder key is not an authentication key of the subject", code="credential-holder"
        )
