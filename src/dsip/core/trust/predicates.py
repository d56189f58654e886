"""Predicate proofs: "my reputation score is at least X" without revealing the score
(seed §9, §20.3).

Library: **anoncreds** (Hyperledger AnonCreds, the Rust ``anoncreds-rs`` behind its Python
wrapper, a prebuilt wheel on PyPI). CL signatures support zero-knowledge range predicates
over integer attributes (``>=``, ``>``, ``<=``, ``<``); dsip hand-rolls none of that
cryptography. What dsip adds is the DID side around it:

* the reputation issuer holds one schema ``dsip-reputation-score/1.0`` with the attributes
  ``score`` (integer, out of 1000) and ``subject`` (the holder's DID), and one CL credential
  definition; it publishes both as a **definition JWS** signed by an ``assertionMethod`` of
  its DID (``typ`` :data:`DEFINITION_TYP`), so a verifier authenticates the public key
  material through the issuer's DID document, not through a ledger;
* a proof request asks for ``score >= X`` and for ``subject`` revealed; the verifier checks
  that the revealed subject is the caller's verified DID and that nothing else is revealed;
* two checks anoncreds 0.2.3's ``Presentation.verify`` leaves out, both tested: that the
  predicate the CL proof is *about* is the one asked for (it accepts a valid proof of
  ``score ≥ 600`` for a request of ``score ≥ 900`` with the same nonce), and that a
  revealed raw value encodes to the encoded value the proof signs (it accepts a proof whose
  revealed ``subject`` was swapped for another DID);
* the nonce is derived from the signed invite (:func:`nonce_for`: its id and recipient),
  so a one-shot invite carries the proof as an ``identity.claims`` entry
  (:func:`reputation_claim`, ``{"type": "reputation-proof", "definition", "minimum",
  "proof"}``) that is useless for any other invite or callee; the trust policy's
  ``reputation_at_least`` / ``reputation_below`` conditions and the first-contact gate's
  ``min_reputation`` accept it (:func:`dsip.core.trust.policy.gather_facts`). Such a
  claim is large (about 25 KB with its definition; the frame limit is 64 KiB) and costs
  the verifier about 50 ms.

What the holder proves is possession of a credential from that issuer, under its link
secret, whose ``score`` satisfies the predicate; the score itself stays hidden (the test
checks the presentation bytes). AnonCreds revocation (tails files, accumulators) is not
used: a score credential is short-lived and simply reissued.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from anoncreds import (
    AnoncredsError,
    Credential,
    CredentialDefinition,
    CredentialOffer,
    CredentialRequest,
    CredentialRequestMetadata,
    Presentation,
    PresentationRequest,
    PresentCredentials,
    Schema,
    create_link_secret,
    encode_credential_attributes,
)

from dsip.core.identity import DocumentSource, KeyPair
from dsip.core.jsonwire import loads_strict
from dsip.core.trust.issuance import IssuanceError, sign_did_jws, verify_did_jws
from dsip.core.trust.vc import CredentialError
from dsip.errors import DsipError

__all__ = [
    "CLAIM_TYPE",
    "DEFINITION_TYP",
    "ProvenReputation",
    "ScoreDefinition",
    "ScoreHolder",
    "ScoreIssuer",
    "nonce_for",
    "reputation_claim",
    "score_request",
    "verify_definition",
    "verify_reputation_claim",
    "verify_score_proof",
]

DEFINITION_TYP: Final = "dsip-anoncreds-def+jwt"
SCHEMA_NAME: Final = "dsip-reputation-score"
SCHEMA_VERSION: Final = "1.0"
ATTRIBUTES: Final = ("score", "subject")
MAX_PRESENTATION: Final = 64 * 1024
MAX_DEFINITION: Final = 64 * 1024


def _ids(did: str) -> tuple[str, str]:
    return (
        f"{did}/anoncreds/v0/SCHEMA/{SCHEMA_NAME}/{SCHEMA_VERSION}",
        f"{did}/anoncreds/v0/CLAIM_DEF/{SCHEMA_NAME}/default",
    )


@dataclass(frozen=True)
class ScoreDefinition:
    """An issuer's authenticated schema and credential definition."""

    issuer: str
    schema_id: str
    schema: Schema
    cred_def_id: str
    cred_def: CredentialDefinition


class ScoreIssuer:
    """The reputation issuer's AnonCreds side. Creating the CL key pair takes a second or
    two; do it once per issuer key."""

    def __init__(self, key: KeyPair) -> None:
        self.key = key
        self.schema_id, self.cred_def_id = _ids(key.did)
        self.schema = Schema.create(SCHEMA_NAME, SCHEMA_VERSION, key.did, list(ATTRIBUTES))
        self.cred_def, self._private, self._kcp = CredentialDefinition.create(
            self.schema_id, self.schema, key.did, "default", "CL"
        )

    @property
    def definition(self) -> ScoreDefinition:
        return ScoreDefinition(
            self.key.did, self.schema_id, self.schema, self.cred_def_id, self.cred_def
        )

    def publish(self, *, now: int) -> str:
        """The definition JWS a verifier checks with :func:`verify_definition`."""
        return sign_did_jws(
            self.key,
            DEFINITION_TYP,
            {
                "iss": self.key.did,
                "iat": now,
                "schemaId": self.schema_id,
                "schema": self.schema.to_dict(),
                "credDefId": self.cred_def_id,
                "credDef": self.cred_def.to_dict(),
            },
        )

    def offer(self) -> str:
        return str(CredentialOffer.create(self.schema_id, self.cred_def_id, self._kcp).to_json())

    def issue(self, offer: str, request: str, *, subject: str, score: int) -> str:
        """A credential for ``subject`` with ``score``; ``request`` is the holder's."""
        if not 0 <= score <= 1000:
            raise CredentialError("score is out of 0–1000", remote=False)
        try:
            cred = Credential.create(
                self.cred_def,
                self._private,
                offer,
                request,
                {"score": str(score), "subject": subject},
            )
        except AnoncredsError as exc:
            raise CredentialError(f"credential request refused: {exc}") from None
        return str(cred.to_json())


class ScoreHolder:
    """The subject's side: a link secret, its score credentials, and proofs from them."""

    def __init__(self, did: str) -> None:
        self.did = did
        self._link_secret = create_link_secret()
        self._pending: dict[str, CredentialRequestMetadata] = {}
        self._credential: Credential | None = None

    def request(self, offer: str, definition: ScoreDefinition) -> str:
        # "entropy" is the request's public holder identifier (the legacy prover DID
        # slot only takes Indy DIDs); the secret is the link secret.
        req, meta = CredentialRequest.create(
            self.did, None, definition.cred_def, self._link_secret, "default", offer
        )
        self._pending[definition.cred_def_id] = meta
        return str(req.to_json())

    def store(self, credential: str, definition: ScoreDefinition) -> None:
        meta = self._pending.pop(definition.cred_def_id)
        try:
            self._credential = Credential.load(credential).process(
                meta, self._link_secret, definition.cred_def
            )
        except AnoncredsError as exc:
            raise CredentialError(f"score credential does not verify: {exc}") from None

    def prove(self, request: Mapping[str, Any], definition: ScoreDefinition) -> str:
        """A presentation answering ``request`` (made by :func:`score_request`); raises
        ``credential-predicate`` if the held score does not satisfy it."""
        if self._credential is None:
            raise CredentialError("no score credential held", code="credential-predicate")
        present = PresentCredentials()
        present.add_attributes(self._credential, "subject", reveal=True)
        present.add_predicates(self._credential, "score")
        try:
            pres = Presentation.create(
                PresentationRequest.load(dict(request)),
                present,
                {},
                self._link_secret,
                {definition.schema_id: definition.schema},
                {definition.cred_def_id: definition.cred_def},
            )
        except AnoncredsError as exc:
            raise CredentialError(
                f"cannot prove the predicate: {exc}", code="credential-predicate", remote=False
            ) from None
        return str(pres.to_json())


def nonce_for(message_id: str, recipient: str) -> str:
    """An AnonCreds nonce (80 bits, decimal) bound to one signed message and recipient."""
    digest = hashlib.sha256(f"dsip-predicate:{message_id}:{recipient}".encode()).digest()
    return str(int.from_bytes(digest[:10], "big"))


def score_request(minimum: int, *, nonce: str, issuer_cred_def: str) -> dict[str, Any]:
    """A proof request for ``score >= minimum`` from one credential definition, with the
    subject DID revealed."""
    restriction = [{"cred_def_id": issuer_cred_def}]
    return {
        "name": "dsip-reputation",
        "version": "1.0",
        "nonce": nonce,
        "requested_attributes": {"subject": {"name": "subject", "restrictions": restriction}},
        "requested_predicates": {
            "score": {
                "name": "score",
                "p_type": ">=",
                "p_value": minimum,
                "restrictions": restriction,
            }
        },
    }


def verify_definition(
    token: object, *, documents: DocumentSource | None, trusted: Collection[str]
) -> ScoreDefinition:
    """Authenticate a published definition: signed by an ``assertionMethod`` of an issuer
    in ``trusted``, with the identifiers that issuer's DID implies."""
    if isinstance(token, str) and len(token) > MAX_DEFINITION:
        raise CredentialError("definition is too large")
    try:
        did, claims = verify_did_jws(
            token, DEFINITION_TYP, documents, purpose="assertionMethod", max_size=MAX_DEFINITION
        )
    except IssuanceError as exc:
        code = (
            "credential-malformed" if exc.code == "issuance-malformed" else "credential-signature"
        )
        raise CredentialError(f"definition: {exc.message}", code=code) from None
    if did not in trusted or claims.get("iss") != did:
        raise CredentialError(f"{did[:80]} is not a trusted score issuer", code="credential-issuer")
    schema_id, cred_def_id = _ids(did)
    if claims.get("schemaId") != schema_id or claims.get("credDefId") != cred_def_id:
        raise CredentialError("definition identifiers do not belong to the issuer DID")
    try:
        schema = Schema.load(claims["schema"])
        cred_def = CredentialDefinition.load(claims["credDef"])
    except (AnoncredsError, KeyError, TypeError):
        raise CredentialError("definition is not an AnonCreds schema and definition") from None
    if (
        schema.to_dict().get("attrNames") is None
        or sorted(schema.to_dict()["attrNames"]) != sorted(ATTRIBUTES)
        or cred_def.schema_id != schema_id
        or cred_def.issuer_id != did
    ):
        raise CredentialError("definition is not the dsip reputation schema of this issuer")
    return ScoreDefinition(did, schema_id, schema, cred_def_id, cred_def)


def verify_score_proof(
    presentation: object,
    request: Mapping[str, Any],
    definition: ScoreDefinition,
    *,
    subject: str,
) -> int:
    """Verify a presentation answering ``request``; return the proven minimum.

    The presentation must reveal exactly the ``subject`` DID (the caller's verified
    identity), prove the ``score`` predicate and nothing else, and verify under
    ``definition``. Failures are :class:`CredentialError`: ``credential-malformed``,
    ``credential-subject``, ``credential-signature`` (the proof does not verify)."""
    if not isinstance(presentation, str) or len(presentation) > MAX_PRESENTATION:
        raise CredentialError("a presentation is a JSON string of at most 64 KiB")
    try:
        parsed, _ = loads_strict(presentation, what="presentation")
    except DsipError:
        raise CredentialError("presentation is not strict JSON") from None
    if not isinstance(parsed, dict):
        raise CredentialError("presentation is not a JSON object")
    proof = parsed.get("requested_proof")
    ids = parsed.get("identifiers")
    if not isinstance(proof, dict) or not isinstance(ids, list):
        raise CredentialError("presentation lacks requested_proof or identifiers")
    revealed = proof.get("revealed_attrs")
    if (
        not isinstance(revealed, dict)
        or set(revealed) != {"subject"}
        or proof.get("self_attested_attrs")
        or proof.get("unrevealed_attrs")
        or set(proof.get("predicates") or {}) != {"score"}
    ):
        raise CredentialError("presentation must reveal the subject and prove the score only")
    attr = revealed["subject"] if isinstance(revealed["subject"], dict) else {}
    shown, encoded = attr.get("raw"), attr.get("encoded")
    if shown != subject:
        raise CredentialError(
            f"the proof is about {str(shown)[:80]}, not {subject[:80]}", code="credential-subject"
        )
    # anoncreds checks the *encoded* value against the CL proof but not that the raw value
    # encodes to it (0.2.3): without this, any holder could show any DID as its subject.
    if encoded != encode_credential_attributes({"subject": subject})["subject"]:
        raise CredentialError(
            "the revealed subject is not the one the proof is about", code="credential-subject"
        )
    for ident in ids:
        if not isinstance(ident, dict) or (
            ident.get("schema_id"),
            ident.get("cred_def_id"),
        ) != (definition.schema_id, definition.cred_def_id):
            raise CredentialError("the proof uses another credential definition")
    minimum = _requested_minimum(request)
    if _proven_predicates(parsed) != [{"attr_name": "score", "p_type": "GE", "value": minimum}]:
        # anoncreds 0.2.3 verifies a proof of a *weaker* predicate against a stronger
        # request (score ≥ 600 passes a request for ≥ 900): compare what was proven.
        raise CredentialError(
            "the proof is not of the requested predicate", code="credential-signature"
        )
    try:
        ok = Presentation.load(presentation).verify(
            PresentationRequest.load(dict(request)),
            {definition.schema_id: definition.schema},
            {definition.cred_def_id: definition.cred_def},
        )
    except AnoncredsError:
        ok = False
    if not ok:
        raise CredentialError("the predicate proof does not verify", code="credential-signature")
    return minimum


def _requested_minimum(request: Mapping[str, Any]) -> int:
    try:
        pred = request["requested_predicates"]["score"]
        value = pred["p_value"]
    except (KeyError, TypeError):
        raise CredentialError("not a score proof request", remote=False) from None
    if pred.get("p_type") != ">=" or not isinstance(value, int):
        raise CredentialError("not a score ≥ X proof request", remote=False)
    return value


def _proven_predicates(parsed: Mapping[str, Any]) -> list[Any]:
    """The predicates the CL proof itself is about (``primary_proof.ge_proofs``)."""
    try:
        return [
            ge.get("predicate")
            for sub in parsed["proof"]["proofs"]
            for ge in sub["primary_proof"]["ge_proofs"]
        ]
    except (KeyError, TypeError, AttributeError):
        raise CredentialError("presentation has no CL proof") from None


# --- the proof as an invite/introduction claim -----------------------------------------------

CLAIM_TYPE: Final = "reputation-proof"
_MAX_CLAIM_PROOF: Final = MAX_PRESENTATION


@dataclass(frozen=True)
class ProvenReputation:
    """A verified claim: the caller holds a score ≥ ``minimum`` from ``issuer``."""

    minimum: int
    issuer: str


def reputation_claim(
    holder: ScoreHolder,
    published: str,
    definition: ScoreDefinition,
    *,
    minimum: int,
    message_id: str,
    recipient: str,
) -> dict[str, Any]:
    """An ``identity.claims`` entry proving ``score >= minimum`` for one message to one
    recipient: ``{"type": "reputation-proof", "definition": <JWS>, "minimum", "proof"}``."""
    request = score_request(
        minimum, nonce=nonce_for(message_id, recipient), issuer_cred_def=definition.cred_def_id
    )
    return {
        "type": CLAIM_TYPE,
        "definition": published,
        "minimum": minimum,
        "proof": holder.prove(request, definition),
    }


def verify_reputation_claim(
    claim: object,
    *,
    message_id: str,
    recipient: str,
    subject: str,
    documents: DocumentSource | None,
    trusted: Collection[str],
) -> ProvenReputation:
    """Verify a ``reputation-proof`` claim of a verified message from ``subject`` to
    ``recipient``; :class:`CredentialError` with the reason otherwise."""
    if not isinstance(claim, Mapping) or set(claim) != {"type", "definition", "minimum", "proof"}:
        raise CredentialError("a reputation-proof claim is {type, definition, minimum, proof}")
    minimum = claim["minimum"]
    if (
        claim["type"] != CLAIM_TYPE
        or not isinstance(minimum, int)
        or isinstance(minimum, bool)
        or not 0 <= minimum <= 1000
    ):
        raise CredentialError("reputation-proof minimum is not an integer of 0–1000")
    definition = verify_definition(claim["definition"], documents=documents, trusted=trusted)
    request = score_request(
        minimum, nonce=nonce_for(message_id, recipient), issuer_cred_def=definition.cred_def_id
    )
    verify_score_proof(claim["proof"], request, definition, subject=subject)
    return ProvenReputation(minimum, definition.issuer)
