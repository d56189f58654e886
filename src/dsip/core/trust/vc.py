"""W3C Verifiable Credentials 2.0 for DSIP (seed §6.2, §9; v0.7 §18): issue, secure, verify.

Credential types (seed §9), each with a JSON Schema for its ``credentialSubject``
(``schemas/vc-*.schema.json``): ``DisplayNameCredential``, ``OrganizationCredential``,
``ReputationScore``, ``RoleCredential``. The envelope shape is
``verifiable-credential.schema.json``; issuers are DIDs, so every key that signs is found
through a DID document (§8.1) and must be listed under the issuer's ``assertionMethod``.

Securing mechanisms:

* **Data Integrity ``eddsa-jcs-2022``** (W3C vc-di-eddsa §3.3): the proof configuration
  (carrying the document's ``@context``) and the document without ``proof`` are each
  canonicalized with JCS (RFC 8785, the ``rfc8785`` package) and hashed with SHA-256;
  Ed25519 signs ``hash(proofConfig) || hash(document)``; ``proofValue`` is multibase
  base58btc (``z…``). Checked against the published test vector of the vc-di-eddsa
  repository (``w3c/vc-di-eddsa``, ``TestVectors/eddsa-jcs-2022/signedJCS.json`` with
  ``TestVectors/keyPair.json``; document hash ``docHashJCS.txt`` = ``59b7cb62…2f19``): our
  signer reproduces its ``proofValue`` byte for byte (Ed25519 is deterministic) and our
  verifier accepts it — ``tests/trust/test_vc.py``.
* **VC-JOSE** (W3C "Securing VCs using JOSE and COSE", ``application/vc+jwt``): the
  credential itself is the JWS payload, header ``{"alg": "EdDSA", "kid": <issuer DID URL>,
  "typ": "vc+jwt", "cty": "vc"}``; signed with ``joserfc``. The payload is re-parsed with
  our strict JSON reader (duplicate keys, floats and non-I-JSON numbers refused) after the
  signature verifies.
* **``Ed25519Signature2020`` is refused** (``credential-proof-unsupported``). It signs the
  URDNA2015 canonical form of the JSON-LD *expansion*, so it is only as sound as the JSON-LD
  processor and the contexts it holds. Checked with ``pyld`` 3.3.0 and its bundled, offline
  contexts (credentials v1/v2, ed25519-2020): a term a context does not define is silently
  dropped from the canonical form — changing ``credentialSubject.displayName`` from
  "James Ferris" to "Your Bank", or a ``score`` from 812 to 999, leaves the signed
  N-Quads identical, under the v1 context and under pyld's bundled v2 snapshot alike
  (which lacks the published ``@vocab``). pyld has no "safe mode" to make dropped terms an
  error, and our four credential types have no published context to cache. A signature
  that does not cover the display name is worse than none, so dsip does not accept it;
  ``eddsa-jcs-2022`` signs the exact JSON instead and needs no context at all.

Revocation: **Bitstring Status List** (W3C v1.0): ``credentialStatus`` entries of type
``BitstringStatusListEntry`` point at a status list credential (itself a VC, signed by the
same issuer) whose ``encodedList`` is multibase ``u`` + unpadded base64url of the GZIP of the
bitstring; bit 0 is the most significant bit of the first byte; at least 131,072 bits. The
core never fetches: a :data:`StatusListSource` hands in what the edge has fetched, and a
credential whose status cannot be checked fails closed (``credential-status-unavailable``),
as does a list older than ``max_status_age`` (§18.3 "cached status with short maximum age").

Verification order, so that each bad credential gets one distinct reason:
shape → unsigned → unsupported proof → issuer allowlist → signature (tampered) →
subject schema → subject binding → validity period → status.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import uuid
import warnings
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import base58
import rfc8785
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import (
    DocumentSource,
    KeyPair,
    VerificationMethod,
    document_for,
    resolve_kid,
    split_did_url,
)
from dsip.core.jsonwire import loads_strict
from dsip.core.payloads.schema import validate_named
from dsip.errors import DsipError

__all__ = [
    "CREDENTIAL_TYPES",
    "DATA_INTEGRITY",
    "STATUS_LIST_MIN_BITS",
    "VC_CONTEXT",
    "VC_JWT",
    "BitstringStatusList",
    "CredentialError",
    "StatusListSource",
    "VerifiedCredential",
    "assertion_method",
    "data_integrity_hash",
    "eddsa_jose",
    "from_timestamp",
    "issue_credential",
    "issue_status_list_credential",
    "okp_jwk",
    "secure_jwt",
    "sign_data_integrity",
    "status_entry",
    "to_timestamp",
    "verify_credential",
    "verify_data_integrity",
]

VC_CONTEXT: Final = "https://www.w3.org/ns/credentials/v2"
DATA_INTEGRITY: Final = "eddsa-jcs-2022"
VC_JWT: Final = "vc+jwt"
ED25519_2020: Final = "Ed25519Signature2020"

#: DSIP credential type → schema of its ``credentialSubject``.
CREDENTIAL_TYPES: Final[Mapping[str, str]] = {
    "DisplayNameCredential": "vc-display-name",
    "OrganizationCredential": "vc-organization",
    "ReputationScore": "vc-reputation-score",
    "RoleCredential": "vc-role",
    "PhoneNumberCredential": "vc-phone-number",  # seed §15: what a gateway maps to a DID
}
STATUS_LIST_TYPE: Final = "BitstringStatusListCredential"
STATUS_ENTRY_TYPE: Final = "BitstringStatusListEntry"
STATUS_LIST_MIN_BITS: Final = 131_072  # 16 KiB, the spec's herd-privacy minimum
_MAX_STATUS_LIST_BYTES = 16 * 1024 * 1024  # decompression bomb guard
CLOCK_SKEW: Final = 300  # §12.9's window, applied to validFrom and proof creation
_MAX_JWT = 8192
_ALGS = ["EdDSA"]
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


class CredentialError(DsipError):
    """A credential that does not verify. ``code`` names the one thing wrong with it:

    ``credential-malformed``, ``credential-unsigned``, ``credential-proof-unsupported``,
    ``credential-issuer`` (issuer not trusted for this type), ``credential-signature``
    (tampered, or signed by a key the issuer does not hold), ``credential-subject``
    (about another DID), ``credential-not-yet-valid``, ``credential-expired``,
    ``credential-revoked``, ``credential-suspended``, ``credential-status-unavailable``,
    ``credential-status-stale``.
    """

    default_code = "credential-malformed"
    default_reason = "policy.trust-insufficient"


@dataclass(frozen=True)
class VerifiedCredential:
    """A credential that passed every check, with the facts a display or policy needs."""

    type: str  # the DSIP type among CREDENTIAL_TYPES (or the status list type)
    types: frozenset[str]
    issuer: str
    subject: Mapping[str, Any]
    valid_from: int | None
    valid_until: int | None
    proof: str  # DATA_INTEGRITY | VC_JWT
    verification_method: str
    status: str  # "none" (no status entry) | "valid"
    id: str | None = None
    raw: Mapping[str, Any] | str = field(default="", repr=False, compare=False)

    @property
    def subject_id(self) -> str | None:
        sid = self.subject.get("id")
        return sid if isinstance(sid, str) else None


StatusListSource = Callable[[str], "Mapping[str, Any] | str | None"]
"""Sans-I/O lookup of an already-fetched status list credential by its URL (``None``: not
available). The edge fetches and caches; the core verifies what it is given."""


# --- time ------------------------------------------------------------------------------


def from_timestamp(ts: int) -> str:
    """Integer seconds → XML Schema ``dateTimeStamp`` in UTC (``2023-01-01T00:00:00Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_timestamp(value: object, *, what: str = "dateTime") -> int:
    """A ``dateTimeStamp`` (time zone required) → integer seconds (fraction truncated)."""
    if not isinstance(value, str) or _DATETIME.fullmatch(value) is None:
        raise CredentialError(f"{what} is not an XML Schema dateTimeStamp")
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except (ValueError, OverflowError):
        raise CredentialError(f"{what} is not a valid date and time") from None


# --- canonical hashing and keys ----------------------------------------------------------


def _jcs_hash(value: Mapping[str, Any]) -> bytes:
    try:
        return hashlib.sha256(rfc8785.dumps(value)).digest()
    except (rfc8785.CanonicalizationError, RecursionError, TypeError):
        raise CredentialError("document is not canonicalizable JSON (RFC 8785)") from None


def _issuer_did(credential: Mapping[str, Any]) -> str:
    issuer = credential.get("issuer")
    if isinstance(issuer, Mapping):
        issuer = issuer.get("id")
    if not isinstance(issuer, str):
        raise CredentialError("credential issuer is not a DID")
    return issuer


def assertion_method(kid: str, documents: DocumentSource | None) -> VerificationMethod:
    """The key behind ``kid``, which must be an ``assertionMethod`` of its DID (VC DI §4.5)."""
    try:
        did, _ = split_did_url(kid)
        method = resolve_kid(kid, documents)
    except DsipError:
        raise CredentialError(
            f"verification method {kid[:100]} does not resolve", code="credential-signature"
        ) from None
    doc = document_for(did, documents)
    if doc is None or kid not in doc.assertion:
        raise CredentialError(
            f"{kid[:100]} is not an assertionMethod of {did[:80]}", code="credential-signature"
        )
    return method


@contextmanager
def eddsa_jose() -> Iterator[None]:
    # joserfc flags the JOSE name "EdDSA" as deprecated by RFC 9864 in favour of "Ed25519";
    # DSIP v0.7 (§10.2) and VC-JOSE deployments name "EdDSA", so that is what we use.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        yield


def okp_jwk(key: KeyPair | VerificationMethod) -> OKPKey:
    if isinstance(key, KeyPair):
        return OKPKey.import_key(
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url_encode(key.public_key.public_bytes_raw()),
                "d": b64url_encode(key.seed()),
            }
        )
    return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(key.raw_key)})


# --- Data Integrity: eddsa-jcs-2022 --------------------------------------------------------


def _proof_config(document: Mapping[str, Any], proof: Mapping[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in proof.items() if k != "proofValue"}
    if "@context" in document and "@context" not in config:
        config["@context"] = document["@context"]
    return config


def data_integrity_hash(document: Mapping[str, Any]) -> bytes:
    """``hashData`` of eddsa-jcs-2022 for a secured document: SHA-256 of the JCS proof
    configuration (its ``proof`` without ``proofValue``) then of the JCS unsecured document."""
    proof = document.get("proof")
    if not isinstance(proof, Mapping):
        raise CredentialError("document has no single proof", code="credential-unsigned")
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    return _jcs_hash(_proof_config(unsecured, proof)) + _jcs_hash(unsecured)


def sign_data_integrity(
    document: Mapping[str, Any],
    key: KeyPair,
    *,
    created: int,
    purpose: str = "assertionMethod",
    expires: int | None = None,
) -> dict[str, Any]:
    """``document`` with an ``eddsa-jcs-2022`` ``DataIntegrityProof`` by ``key.kid``."""
    unsecured = {k: v for k, v in document.items() if k != "proof"}
    proof: dict[str, Any] = {
        "type": "DataIntegrityProof",
        "cryptosuite": DATA_INTEGRITY,
        "created": from_timestamp(created),
        "verificationMethod": key.kid,
        "proofPurpose": purpose,
    }
    if expires is not None:
        proof["expires"] = from_timestamp(expires)
    config = _proof_config(unsecured, proof)
    signature = key.sign(_jcs_hash(config) + _jcs_hash(unsecured))
    secured = dict(unsecured)
    secured["proof"] = {**config, "proofValue": "z" + base58.b58encode(signature).decode("ascii")}
    return secured


def verify_data_integrity(
    document: Mapping[str, Any],
    *,
    documents: DocumentSource | None,
    now: int,
    purpose: str = "assertionMethod",
) -> str:
    """Verify the document's single ``eddsa-jcs-2022`` proof; return the signing DID URL.

    Raises ``credential-unsigned`` without a proof, ``credential-proof-unsupported`` for any
    other proof type (including ``Ed25519Signature2020``, see the module docstring) or a
    proof set, and ``credential-signature`` when the signature does not verify.
    """
    proof = document.get("proof")
    _check_proof_type(proof)
    assert isinstance(proof, Mapping)
    if proof.get("proofPurpose") != purpose:
        raise CredentialError(f"proof purpose is not {purpose}", code="credential-signature")
    if "@context" in proof and proof["@context"] != document.get("@context"):
        raise CredentialError(
            "proof @context differs from the document's", code="credential-signature"
        )
    kid, value = proof.get("verificationMethod"), proof.get("proofValue")
    if not isinstance(kid, str) or not isinstance(value, str) or not value.startswith("z"):
        raise CredentialError("proof lacks a verificationMethod or base58btc proofValue")
    try:
        signature = base58.b58decode(value[1:])
    except ValueError:
        raise CredentialError("proofValue is not base58btc", code="credential-signature") from None
    created = to_timestamp(proof.get("created"), what="proof.created")
    if created > now + CLOCK_SKEW:
        raise CredentialError("proof was created in the future", code="credential-not-yet-valid")
    if "expires" in proof and to_timestamp(proof["expires"], what="proof.expires") <= now:
        raise CredentialError("proof has expired", code="credential-expired")
    method = assertion_method(kid, documents)
    if not method.verify(signature, data_integrity_hash(document)):
        raise CredentialError(
            "Data Integrity signature does not verify: the credential was altered",
            code="credential-signature",
        )
    return kid


# --- VC-JOSE -----------------------------------------------------------------------------


def secure_jwt(credential: Mapping[str, Any], key: KeyPair) -> str:
    """The credential as a compact ``vc+jwt`` signed EdDSA by ``key.kid`` (VC-JOSE §3.1)."""
    unsecured = {k: v for k, v in credential.items() if k != "proof"}
    payload = json.dumps(unsecured, separators=(",", ":"), ensure_ascii=False).encode()
    header = {"alg": "EdDSA", "kid": key.kid, "typ": VC_JWT, "cty": "vc"}
    with eddsa_jose():
        return jws.serialize_compact(header, payload, okp_jwk(key), algorithms=_ALGS)


def _parse_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact ``vc+jwt``, parsed strictly but *not yet verified*."""
    if len(token) > _MAX_JWT or token.count(".") != 2:
        raise CredentialError("credential JWT is not a compact JWS")
    head, body, sig = token.split(".")
    try:
        header, _ = loads_strict(b64url_decode(head, code="credential-malformed"))
        payload, saw_float = loads_strict(b64url_decode(body, code="credential-malformed"))
    except DsipError:
        raise CredentialError("credential JWT is not base64url strict JSON") from None
    if not isinstance(header, dict) or not isinstance(payload, dict) or saw_float:
        raise CredentialError("credential JWT header or payload is not a float-free object")
    if header.get("alg") == "none" or not sig:
        raise CredentialError("credential JWT carries no signature", code="credential-unsigned")
    if header.get("alg") != "EdDSA" or header.get("typ") != VC_JWT:
        raise CredentialError(
            "credential JWT must be EdDSA with typ vc+jwt", code="credential-proof-unsupported"
        )
    if not isinstance(header.get("kid"), str):
        raise CredentialError("credential JWT has no DID URL kid", code="credential-signature")
    if "proof" in payload:
        raise CredentialError("a vc+jwt payload must not embed a proof")
    return header, payload


def _verify_jwt(token: str, kid: str, documents: DocumentSource | None) -> None:
    method = assertion_method(kid, documents)
    try:
        with eddsa_jose():
            jws.deserialize_compact(token, okp_jwk(method), algorithms=_ALGS)
    except (JoseError, ValueError):
        raise CredentialError(
            "credential JWT signature does not verify: the credential was altered",
            code="credential-signature",
        ) from None


# --- issuing -----------------------------------------------------------------------------


def status_entry(list_url: str, index: int, purpose: str = "revocation") -> dict[str, str]:
    """A ``BitstringStatusListEntry`` pointing at bit ``index`` of the list at ``list_url``."""
    return {
        "id": f"{list_url}#{index}",
        "type": STATUS_ENTRY_TYPE,
        "statusPurpose": purpose,
        "statusListIndex": str(index),
        "statusListCredential": list_url,
    }


def issue_credential(
    issuer: KeyPair,
    credential_type: str,
    subject: Mapping[str, Any],
    *,
    now: int,
    valid_until: int | None = None,
    valid_from: int | None = None,
    status: Sequence[Mapping[str, str]] | Mapping[str, str] | None = None,
    credential_id: str | None = None,
    proof: str = DATA_INTEGRITY,
    name: str | None = None,
) -> dict[str, Any] | str:
    """Issue a DSIP credential of ``credential_type`` about ``subject`` (which names the
    subject DID as ``id``), secured with ``proof``: an embedded ``eddsa-jcs-2022`` proof
    (a JSON object) or a ``vc+jwt`` (a compact string). The subject is schema-checked
    before anything is signed."""
    schema = CREDENTIAL_TYPES.get(credential_type)
    if schema is None:
        raise CredentialError(f"{credential_type!r} is not a DSIP credential type", remote=False)
    validate_named(schema, dict(subject))
    credential: dict[str, Any] = {
        "@context": [VC_CONTEXT],
        "id": credential_id or f"urn:uuid:{uuid.uuid4()}",
        "type": ["VerifiableCredential", credential_type],
        "issuer": issuer.did,
        "validFrom": from_timestamp(now if valid_from is None else valid_from),
        "credentialSubject": dict(subject),
    }
    if name:
        credential["name"] = name
    if valid_until is not None:
        credential["validUntil"] = from_timestamp(valid_until)
    if status:
        credential["credentialStatus"] = (
            dict(status) if isinstance(status, Mapping) else [dict(s) for s in status]
        )
    return _secure(credential, issuer, now=now, proof=proof)


def _secure(
    credential: dict[str, Any], issuer: KeyPair, *, now: int, proof: str
) -> dict[str, Any] | str:
    if proof == DATA_INTEGRITY:
        return sign_data_integrity(credential, issuer, created=now)
    if proof == VC_JWT:
        return secure_jwt(credential, issuer)
    raise CredentialError(f"cannot issue with proof {proof!r}", remote=False)


# --- Bitstring Status List --------------------------------------------------------------


class BitstringStatusList:
    """The issuer's mutable status bitstring (one bit per credential, ``statusSize`` 1)."""

    def __init__(self, length: int = STATUS_LIST_MIN_BITS, *, bits: bytes | None = None) -> None:
        if bits is None:
            if length < STATUS_LIST_MIN_BITS or length % 8:
                raise ValueError(
                    f"a status list holds a multiple of 8 ≥ {STATUS_LIST_MIN_BITS} bits"
                )
            bits = bytes(length // 8)
        self._bits = bytearray(bits)

    def __len__(self) -> int:
        return len(self._bits) * 8

    def get(self, index: int) -> bool:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return bool(self._bits[index // 8] & (0x80 >> (index % 8)))

    def set(self, index: int, value: bool = True) -> None:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if value:
            self._bits[index // 8] |= 0x80 >> (index % 8)
        else:
            self._bits[index // 8] &= ~(0x80 >> (index % 8)) & 0xFF

    def encode(self) -> str:
        """Multibase ``u`` + unpadded base64url of the GZIP of the bitstring."""
        return "u" + b64url_encode(gzip.compress(bytes(self._bits), mtime=0))

    @classmethod
    def decode(cls, encoded: object) -> BitstringStatusList:
        if not isinstance(encoded, str) or not encoded.startswith("u"):
            raise CredentialError("encodedList is not multibase base64url")
        try:
            compressed = b64url_decode(encoded[1:], code="credential-malformed")
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
            bits = inflater.decompress(compressed, _MAX_STATUS_LIST_BYTES + 1)
        except (DsipError, zlib.error):
            raise CredentialError("encodedList is not a GZIP-compressed bitstring") from None
        if len(bits) > _MAX_STATUS_LIST_BYTES or not inflater.eof:
            raise CredentialError("encodedList is larger than dsip accepts")
        if len(bits) * 8 < STATUS_LIST_MIN_BITS:
            raise CredentialError("status list is shorter than the 131,072-bit minimum")
        return cls(bits=bits)


def issue_status_list_credential(
    issuer: KeyPair,
    list_url: str,
    status_list: BitstringStatusList,
    *,
    now: int,
    purpose: str = "revocation",
    valid_until: int | None = None,
    proof: str = DATA_INTEGRITY,
) -> dict[str, Any] | str:
    """A signed ``BitstringStatusListCredential`` publishing ``status_list`` at ``list_url``."""
    credential: dict[str, Any] = {
        "@context": [VC_CONTEXT],
        "id": list_url,
        "type": ["VerifiableCredential", STATUS_LIST_TYPE],
        "issuer": issuer.did,
        "validFrom": from_timestamp(now),
        "credentialSubject": {
            "id": f"{list_url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": purpose,
            "encodedList": status_list.encode(),
        },
    }
    if valid_until is not None:
        credential["validUntil"] = from_timestamp(valid_until)
    return _secure(credential, issuer, now=now, proof=proof)


def _check_status(
    credential: Mapping[str, Any],
    issuer: str,
    *,
    documents: DocumentSource | None,
    now: int,
    source: StatusListSource | None,
    max_status_age: int | None,
) -> str:
    raw = credential.get("credentialStatus")
    if raw is None:
        return "none"
    entries = raw if isinstance(raw, list) else [raw]
    for entry in entries:
        _check_one_status(
            entry,
            issuer,
            documents=documents,
            now=now,
            source=source,
            max_status_age=max_status_age,
        )
    return "valid"


def _check_one_status(
    entry: object,
    issuer: str,
    *,
    documents: DocumentSource | None,
    now: int,
    source: StatusListSource | None,
    max_status_age: int | None,
) -> None:
    if not isinstance(entry, Mapping) or entry.get("type") != STATUS_ENTRY_TYPE:
        raise CredentialError("credentialStatus is not a BitstringStatusListEntry")
    purpose, url, index_text = (
        entry.get("statusPurpose"),
        entry.get("statusListCredential"),
        entry.get("statusListIndex"),
    )
    if purpose not in ("revocation", "suspension") or not isinstance(url, str):
        raise CredentialError("status entry has an unknown purpose or no list URL")
    if not isinstance(index_text, str) or not index_text.isdigit() or len(index_text) > 10:
        raise CredentialError("statusListIndex is not a decimal string")
    listed = source(url) if source is not None else None
    if listed is None:
        raise CredentialError(
            f"status list {url[:100]} is not available: status unknown",
            code="credential-status-unavailable",
        )
    try:
        status_vc = _verify_secured(listed, documents=documents, now=now)
    except CredentialError as exc:
        raise CredentialError(
            f"status list does not verify ({exc.code}): status unknown",
            code="credential-status-unavailable",
        ) from None
    body = status_vc.body
    subject = body.get("credentialSubject")
    if (
        STATUS_LIST_TYPE not in status_vc.types
        or status_vc.issuer != issuer
        or not isinstance(subject, Mapping)
    ):
        raise CredentialError(
            "status list is not a BitstringStatusListCredential of the credential's issuer",
            code="credential-status-unavailable",
        )
    try:
        validate_named("vc-status-list", dict(subject))
    except DsipError:
        raise CredentialError(
            "status list subject is malformed: status unknown",
            code="credential-status-unavailable",
        ) from None
    if subject["statusPurpose"] != purpose:
        raise CredentialError("status list purpose differs from the entry's")
    _check_validity(body, now, code_prefix="status list ")
    if max_status_age is not None and "validFrom" in body:
        age = now - to_timestamp(body["validFrom"])
        if age > max_status_age:
            raise CredentialError(
                f"status list is {age} s old (limit {max_status_age} s)",
                code="credential-status-stale",
            )
    bits = BitstringStatusList.decode(subject["encodedList"])
    index = int(index_text)
    if index >= len(bits):
        raise CredentialError("statusListIndex is beyond the status list")
    if bits.get(index):
        code = "credential-revoked" if purpose == "revocation" else "credential-suspended"
        raise CredentialError(f"the issuer has {code.split('-')[1]} this credential", code=code)


# --- verification ------------------------------------------------------------------------


def _check_validity(body: Mapping[str, Any], now: int, *, code_prefix: str = "") -> None:
    if "validFrom" in body and to_timestamp(body["validFrom"], what="validFrom") > now + CLOCK_SKEW:
        raise CredentialError(f"{code_prefix}not valid yet", code="credential-not-yet-valid")
    if "validUntil" in body and to_timestamp(body["validUntil"], what="validUntil") <= now:
        raise CredentialError(f"{code_prefix}expired", code="credential-expired")


def _shape(body: Mapping[str, Any]) -> frozenset[str]:
    try:
        validate_named("verifiable-credential", dict(body))
    except DsipError as exc:
        raise CredentialError(f"not a verifiable credential: {exc.message}") from None
    if body["@context"][0] != VC_CONTEXT:
        raise CredentialError(f"the first @context must be {VC_CONTEXT}")
    return frozenset(body["type"])


def _check_proof_type(proof: object) -> None:
    if proof is None:
        raise CredentialError("no proof: the credential is unsigned", code="credential-unsigned")
    if not isinstance(proof, Mapping):
        raise CredentialError(
            "proof sets and chains are not accepted", code="credential-proof-unsupported"
        )
    ptype, suite = proof.get("type"), proof.get("cryptosuite")
    if ptype == ED25519_2020:
        raise CredentialError(
            "Ed25519Signature2020 is refused: its JSON-LD canonical form drops undefined terms, "
            "so the signature may not cover the claims (use eddsa-jcs-2022)",
            code="credential-proof-unsupported",
        )
    if ptype != "DataIntegrityProof" or suite != DATA_INTEGRITY:
        raise CredentialError(
            f"proof {str(ptype)[:40]}/{str(suite)[:40]} is not supported (eddsa-jcs-2022 only)",
            code="credential-proof-unsupported",
        )


@dataclass(frozen=True)
class _Secured:
    types: frozenset[str]
    body: Mapping[str, Any]
    issuer: str
    kid: str
    proof: str


def _verify_secured(
    presented: object,
    *,
    documents: DocumentSource | None,
    now: int,
    trusted_issuers: Mapping[str, Collection[str]] | None = None,
) -> _Secured:
    """Shape → unsigned → unsupported proof → issuer allowlist → signature → issuer binding,
    for either securing mechanism (status list credentials included)."""
    body: Mapping[str, Any]
    if isinstance(presented, str):
        header, body = _parse_jwt(presented)
        kid, proof = str(header["kid"]), VC_JWT
        types = _shape(body)
    elif isinstance(presented, Mapping):
        body = presented
        types = _shape(body)
        _check_proof_type(body.get("proof"))
        kid, proof = str(body["proof"].get("verificationMethod", "")), DATA_INTEGRITY
    else:
        raise CredentialError("a credential is a JSON object or a compact vc+jwt")
    issuer = _issuer_did(body)
    _check_issuer(types, issuer, trusted_issuers)
    if proof == VC_JWT:
        _verify_jwt(str(presented), kid, documents)
    else:
        verify_data_integrity(body, documents=documents, now=now)
    try:
        signer, _ = split_did_url(kid)
    except DsipError:
        raise CredentialError("proof verification method is not a DID URL") from None
    if signer != issuer:
        raise CredentialError(
            "the proof was made by a key of another DID than the issuer",
            code="credential-signature",
        )
    return _Secured(types, body, issuer, kid, proof)


def verify_credential(
    presented: Mapping[str, Any] | str,
    *,
    documents: DocumentSource | None,
    now: int,
    trusted_issuers: Mapping[str, Collection[str]] | None = None,
    subject: str | None = None,
    status_lists: StatusListSource | None = None,
    max_status_age: int | None = None,
) -> VerifiedCredential:
    """Verify a DSIP credential completely, or raise :class:`CredentialError` with the one
    reason it fails (see the module docstring for the order).

    ``trusted_issuers`` maps a credential type to the issuer DIDs trusted for it (§18.2);
    ``None`` skips that check (the caller applies its own allowlist). ``subject``, when
    given, must be the ``credentialSubject.id``.
    """
    sec = _verify_secured(presented, documents=documents, now=now, trusted_issuers=trusted_issuers)
    body = sec.body
    ctype = _dsip_type(sec.types)
    cred_subject = body["credentialSubject"]
    try:
        validate_named(CREDENTIAL_TYPES[ctype], cred_subject)
    except DsipError as exc:
        raise CredentialError(f"{ctype} subject: {exc.message}") from None
    if subject is not None and cred_subject["id"] != subject:
        raise CredentialError(
            f"credential is about {cred_subject['id'][:80]}, not {subject[:80]}",
            code="credential-subject",
        )
    _check_validity(body, now)
    status = _check_status(
        body,
        sec.issuer,
        documents=documents,
        now=now,
        source=status_lists,
        max_status_age=max_status_age,
    )
    cid = body.get("id")
    return VerifiedCredential(
        type=ctype,
        types=sec.types,
        issuer=sec.issuer,
        subject=dict(cred_subject),
        valid_from=to_timestamp(body["validFrom"]) if "validFrom" in body else None,
        valid_until=to_timestamp(body["validUntil"]) if "validUntil" in body else None,
        proof=sec.proof,
        verification_method=sec.kid,
        status=status,
        id=cid if isinstance(cid, str) else None,
        raw=presented,
    )


def _dsip_type(types: frozenset[str]) -> str:
    found = sorted(types & CREDENTIAL_TYPES.keys())
    if len(found) != 1:
        raise CredentialError("credential is not exactly one DSIP credential type")
    return found[0]


def _check_issuer(
    types: frozenset[str], issuer: str, trusted: Mapping[str, Collection[str]] | None
) -> None:
    if trusted is None:
        return
    ctype = _dsip_type(types)
    if issuer not in trusted.get(ctype, ()):
        raise CredentialError(
            f"{issuer[:80]} is not trusted to issue {ctype}", code="credential-issuer"
        )
