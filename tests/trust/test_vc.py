"""W3C Verifiable Credentials: eddsa-jcs-2022 and vc+jwt, Bitstring Status List, every
bad-credential case with its own code."""

from __future__ import annotations

import copy
import gzip
import json
from typing import Any

import base58
import nacl.bindings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import KeyPair, StaticDocuments
from dsip.core.trust.vc import (
    DATA_INTEGRITY,
    STATUS_LIST_MIN_BITS,
    VC_JWT,
    BitstringStatusList,
    CredentialError,
    StatusListSource,
    data_integrity_hash,
    from_timestamp,
    issue_credential,
    issue_status_list_credential,
    sign_data_integrity,
    status_entry,
    to_timestamp,
    verify_credential,
    verify_data_integrity,
)
from tests.trust.trustfix import ACME, DAY, NOW, STATUS_URL, TRUSTGRAPH, VOICE, World

PROOFS = (DATA_INTEGRITY, VC_JWT)

# --- the published eddsa-jcs-2022 test vector (w3c/vc-di-eddsa, TestVectors/) -------------
# keyPair.json, eddsa-jcs-2022/signedJCS.json and eddsa-jcs-2022/docHashJCS.txt.
W3C_PRIVATE = "z3u2en7t5LR2WtQH5PfFqMqwVHBeXouLzo6haApm8XHqvjxq"
W3C_PUBLIC = "z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"
W3C_CONTEXT = [
    "https://www.w3.org/ns/credentials/v2",
    "https://www.w3.org/ns/credentials/examples/v2",
]
W3C_SIGNED: dict[str, Any] = {
    "@context": W3C_CONTEXT,
    "id": "urn:uuid:58172aac-d8ba-11ed-83dd-0b3aef56cc33",
    "type": ["VerifiableCredential", "AlumniCredential"],
    "name": "Alumni Credential",
    "description": "A minimum viable example of an Alumni Credential.",
    "issuer": "https://vc.example/issuers/5678",
    "validFrom": "2023-01-01T00:00:00Z",
    "credentialSubject": {"id": "did:example:abcdefgh", "alumniOf": "The School of Examples"},
    "proof": {
        "type": "DataIntegrityProof",
        "cryptosuite": "eddsa-jcs-2022",
        "created": "2023-02-24T23:36:38Z",
        "verificationMethod": "https://vc.example/issuers/5678#" + W3C_PUBLIC,
        "proofPurpose": "assertionMethod",
        "@context": W3C_CONTEXT,
        "proofValue": "z63t83Y53KfzJ5ZosfKTnqfMcKB2dmTrfjSaQjeNNjAD5srBowQfmWqeRb8rRjmeEuCBEsddF9LsVogtuTsijJKh4",
    },
}
W3C_DOC_HASH = "59b7cb6251b8991add1ce0bc83107e3db9dbbab5bd2c28f687db1a03abc92f19"


def w3c_key() -> KeyPair:
    raw = base58.b58decode(W3C_PRIVATE[1:])
    assert raw[:2] == b"\x80\x26"  # multicodec ed25519-priv
    return KeyPair.from_seed(raw[2:], kid=W3C_SIGNED["proof"]["verificationMethod"])


def test_w3c_eddsa_jcs_2022_vector_reproduced_byte_for_byte() -> None:
    key = w3c_key()
    assert key.public_key_multibase == W3C_PUBLIC
    hash_data = data_integrity_hash(W3C_SIGNED)
    assert hash_data[32:].hex() == W3C_DOC_HASH
    signature = key.sign(hash_data)
    assert "z" + base58.b58encode(signature).decode() == W3C_SIGNED["proof"]["proofValue"]
    pub = base58.b58decode(W3C_PUBLIC[1:])[2:]
    nacl.bindings.crypto_sign_open(signature + hash_data, pub)  # raises if it does not verify


def test_w3c_vector_document_verifies_under_a_did_key() -> None:
    # The vector's issuer is an https URL, which dsip cannot resolve; the same key as a
    # did:key signs the same document and our verifier accepts it.
    key = KeyPair.for_did_key(w3c_key().private_key)
    unsigned = {k: v for k, v in W3C_SIGNED.items() if k != "proof"}
    signed = sign_data_integrity(unsigned, key, created=to_timestamp("2023-02-24T23:36:38Z"))
    assert verify_data_integrity(signed, documents=None, now=NOW) == key.kid
    assert signed["proof"]["@context"] == W3C_CONTEXT


# --- round trips ---------------------------------------------------------------------------

SUBJECTS: dict[str, dict[str, Any]] = {
    "DisplayNameCredential": {"displayName": "James Ferris", "avatar": "ipfs://bafy/avatar.png"},
    "OrganizationCredential": {"organization": "ACME Corp", "domain": "acme.example"},
    "ReputationScore": {"score": 812},
    "RoleCredential": {"role": "Support", "organization": "ACME Corp"},
}
ISSUER_OF = {
    "DisplayNameCredential": "voice",
    "OrganizationCredential": "registry",
    "ReputationScore": "trustgraph",
    "RoleCredential": "acme",
}


@pytest.fixture
def world() -> World:
    return World()


def issue(
    w: World, ctype: str = "DisplayNameCredential", proof: str = DATA_INTEGRITY, **kw: Any
) -> dict[str, Any] | str:
    issuer: KeyPair = kw.pop("issuer", getattr(w, ISSUER_OF[ctype]))
    subject = {"id": kw.pop("subject", w.caller.did), **SUBJECTS[ctype]}
    kw.setdefault("now", NOW)
    kw.setdefault("valid_until", NOW + DAY)
    return issue_credential(issuer, ctype, subject, proof=proof, **kw)


def verify(w: World, cred: Any, **kw: Any) -> Any:
    kw.setdefault("documents", w.documents)
    kw.setdefault("now", NOW)
    kw.setdefault("trusted_issuers", w.issuers)
    kw.setdefault("subject", w.caller.did)
    return verify_credential(cred, **kw)


@pytest.mark.parametrize("proof", PROOFS)
@pytest.mark.parametrize("ctype", sorted(SUBJECTS))
def test_issue_and_verify_every_type(world: World, ctype: str, proof: str) -> None:
    cred = issue(world, ctype, proof)
    assert isinstance(cred, str) == (proof == VC_JWT)
    v = verify(world, cred)
    assert (v.type, v.proof, v.status, v.subject_id) == (ctype, proof, "none", world.caller.did)
    assert v.issuer == getattr(world, ISSUER_OF[ctype]).did
    assert v.valid_until == NOW + DAY
    assert v.verification_method.endswith("#key-1")


def test_jwt_header_and_payload_are_vc_jose(world: World) -> None:
    token = issue(world, proof=VC_JWT)
    assert isinstance(token, str)
    head, body, _ = token.split(".")
    assert json.loads(b64url_decode(head)) == {
        "alg": "EdDSA",
        "kid": f"{VOICE}#key-1",
        "typ": "vc+jwt",
        "cty": "vc",
    }
    payload = json.loads(b64url_decode(body))
    assert payload["credentialSubject"]["displayName"] == "James Ferris"
    assert "proof" not in payload


def test_did_key_issuer_needs_no_document(world: World) -> None:
    issuer = KeyPair.generate()
    cred = issue(world, "RoleCredential", issuer=issuer)
    v = verify(world, cred, documents=None, trusted_issuers={"RoleCredential": [issuer.did]})
    assert v.issuer == issuer.did


# --- bad credentials: one distinct code each ----------------------------------------------


def tamper_di(cred: Any) -> Any:
    bad = copy.deepcopy(cred)
    bad["credentialSubject"]["displayName"] = "Your Bank"
    return bad


def tamper_jwt(token: Any) -> Any:
    head, body, sig = token.split(".")
    payload = json.loads(b64url_decode(body))
    payload["credentialSubject"]["displayName"] = "Your Bank"
    return ".".join([head, b64url_encode(json.dumps(payload).encode()), sig])


@pytest.mark.parametrize("proof", PROOFS)
def test_tampered(world: World, proof: str) -> None:
    cred = issue(world, proof=proof)
    bad = tamper_jwt(cred) if proof == VC_JWT else tamper_di(cred)
    with pytest.raises(CredentialError) as err:
        verify(world, bad)
    assert err.value.code == "credential-signature"
    assert err.value.reason == "policy.trust-insufficient"


def test_unsigned(world: World) -> None:
    cred = issue(world)
    assert isinstance(cred, dict)
    del cred["proof"]
    with pytest.raises(CredentialError) as err:
        verify(world, cred)
    assert err.value.code == "credential-unsigned"


@pytest.mark.parametrize("header", [{"alg": "none", "typ": "vc+jwt"}, None])
def test_unsigned_jwt(world: World, header: dict[str, str] | None) -> None:
    token = issue(world, proof=VC_JWT)
    assert isinstance(token, str)
    head, body, _ = token.split(".")
    if header is not None:
        head = b64url_encode(json.dumps(header).encode())
    with pytest.raises(CredentialError) as err:
        verify(world, f"{head}.{body}.")
    assert err.value.code == "credential-unsigned"


def test_ed25519signature2020_is_refused_with_its_reason(world: World) -> None:
    cred = issue(world)
    assert isinstance(cred, dict)
    cred["proof"] = {
        "type": "Ed25519Signature2020",
        "created": "2025-01-01T00:00:00Z",
        "verificationMethod": f"{VOICE}#key-1",
        "proofPurpose": "assertionMethod",
        "proofValue": "z" + "1" * 80,
    }
    with pytest.raises(CredentialError) as err:
        verify(world, cred)
    assert err.value.code == "credential-proof-unsupported"
    assert "drops undefined terms" in err.value.message


@pytest.mark.parametrize(
    "proof",
    [
        [{"type": "DataIntegrityProof"}],  # a proof set
        {"type": "DataIntegrityProof", "cryptosuite": "eddsa-rdfc-2022"},
        {"type": "JsonWebSignature2020"},
    ],
)
def test_other_proofs_are_unsupported(world: World, proof: object) -> None:
    cred = issue(world)
    assert isinstance(cred, dict)
    cred["proof"] = proof
    with pytest.raises(CredentialError) as err:
        verify(world, cred)
    assert err.value.code == "credential-proof-unsupported"


@pytest.mark.parametrize("proof", PROOFS)
def test_wrong_issuer(world: World, proof: str) -> None:
    # A well-signed display name from an issuer not trusted for display names.
    cred = issue(world, proof=proof, issuer=world.acme)
    with pytest.raises(CredentialError) as err:
        verify(world, cred)
    assert err.value.code == "credential-issuer"
    # Trust is per claim type (§18.2): acme is trusted, but for roles only.
    assert verify(world, issue(world, "RoleCredential", proof=proof)).issuer == ACME


@pytest.mark.parametrize("proof", PROOFS)
def test_issuer_field_naming_a_trusted_issuer_but_signed_by_another_key(
    world: World, proof: str
) -> None:
    forged = issue_credential(
        world.mallory,
        "DisplayNameCredential",
        {"id": world.caller.did, "displayName": "Your Bank"},
        now=NOW,
        proof=proof,
    )
    if isinstance(forged, str):
        head, body, sig = forged.split(".")
        payload = json.loads(b64url_decode(body))
        payload["issuer"] = VOICE
        forged = ".".join([head, b64url_encode(json.dumps(payload).encode()), sig])
    else:
        forged["issuer"] = VOICE
    with pytest.raises(CredentialError) as err:
        verify(world, forged)
    assert err.value.code == "credential-signature"


def test_key_not_listed_as_assertion_method(world: World) -> None:
    cred = issue(world)
    docs = StaticDocuments()
    doc = {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": VOICE,
        "verificationMethod": [
            {
                "id": f"{VOICE}#key-1",
                "type": "Multikey",
                "controller": VOICE,
                "publicKeyMultibase": world.voice.public_key_multibase,
            }
        ],
        "authentication": [f"{VOICE}#key-1"],  # may log in, may not issue credentials
    }
    docs.add(VOICE, doc)
    with pytest.raises(CredentialError) as err:
        verify(world, cred, documents=docs)
    assert err.value.code == "credential-signature"


@pytest.mark.parametrize("proof", PROOFS)
def test_wrong_subject(world: World, proof: str) -> None:
    cred = issue(world, proof=proof, subject=world.mallory.did)
    with pytest.raises(CredentialError) as err:
        verify(world, cred)
    assert err.value.code == "credential-subject"


@pytest.mark.parametrize("proof", PROOFS)
def test_expired_and_not_yet_valid(world: World, proof: str) -> None:
    cred = issue(world, proof=proof, now=NOW - 2 * DAY, valid_until=NOW - DAY)
    with pytest.raises(CredentialError) as err:
        verify(world, cred)
    assert err.value.code == "credential-expired"
    future = issue(world, proof=proof, valid_from=NOW + DAY, valid_until=NOW + 2 * DAY)
    with pytest.raises(CredentialError) as err:
        verify(world, future)
    assert err.value.code == "credential-not-yet-valid"
    # validFrom inside the clock skew is accepted
    assert verify(world, issue(world, proof=proof, valid_from=NOW + 60)).proof == proof


def test_expiry_instant_is_exclusive(world: World) -> None:
    cred = issue(world, valid_until=NOW + 10)
    assert verify(world, cred, now=NOW + 9).valid_until == NOW + 10
    with pytest.raises(CredentialError, match="expired"):
        verify(world, cred, now=NOW + 10)


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda c: c["credentialSubject"].update(score="812"), "score not an integer"),
        (lambda c: c["credentialSubject"].update(extra=1), "unknown subject field"),
        (lambda c: c.update({"@context": ["https://www.w3.org/2018/credentials/v1"]}), "v1"),
        (lambda c: c["type"].append("RoleCredential"), "two DSIP types"),
        (lambda c: c.update(validUntil="2026-01-01T00:00:00"), "no time zone"),
        (lambda c: c.update(issuer="https://trustgraph.org"), "issuer not a DID"),
    ],
)
def test_malformed_credentials(world: World, mutate: Any, why: str) -> None:
    cred = issue(world, "ReputationScore")
    assert isinstance(cred, dict)
    body = {k: v for k, v in cred.items() if k != "proof"}
    mutate(body)
    resigned = sign_data_integrity(body, world.trustgraph, created=NOW)
    with pytest.raises(CredentialError) as err:
        verify(world, resigned)
    assert err.value.code == "credential-malformed", why


def test_jwt_payload_with_a_float_is_malformed(world: World) -> None:
    token = issue(world, "ReputationScore", proof=VC_JWT)
    assert isinstance(token, str)
    head, body, sig = token.split(".")
    text = b64url_decode(body).decode().replace('"score":812', '"score":812.5')
    with pytest.raises(CredentialError) as err:
        verify(world, f"{head}.{b64url_encode(text.encode())}.{sig}")
    assert err.value.code == "credential-malformed"


def test_jwt_with_wrong_typ_is_unsupported(world: World) -> None:
    token = issue(world, proof=VC_JWT)
    assert isinstance(token, str)
    _head, body, sig = token.split(".")
    head = b64url_encode(json.dumps({"alg": "EdDSA", "kid": f"{VOICE}#key-1"}).encode())
    with pytest.raises(CredentialError) as err:
        verify(world, f"{head}.{body}.{sig}")
    assert err.value.code == "credential-proof-unsupported"


# --- Bitstring Status List ---------------------------------------------------------------


def test_status_list_bit_order_and_encoding() -> None:
    sl = BitstringStatusList()
    assert len(sl) == STATUS_LIST_MIN_BITS
    sl.set(0)
    sl.set(9)
    encoded = sl.encode()
    assert encoded.startswith("u")
    assert "=" not in encoded
    raw = gzip.decompress(b64url_decode(encoded[1:]))
    assert raw[:2] == bytes([0x80, 0x40])  # bit 0 = MSB of byte 0; bit 9 = second MSB of byte 1
    back = BitstringStatusList.decode(encoded)
    assert back.get(0)
    assert back.get(9)
    assert not back.get(1)
    sl.set(0, False)
    assert not BitstringStatusList.decode(sl.encode()).get(0)


@pytest.mark.parametrize(
    "encoded",
    [
        "zABC",  # not base64url multibase
        "u" + b64url_encode(b"not gzip"),
        "u" + b64url_encode(gzip.compress(bytes(100))),  # below the 131,072-bit minimum
        "u" + b64url_encode(gzip.compress(bytes(17 * 1024 * 1024))),  # above our cap
        12,
    ],
)
def test_status_list_decode_refuses(encoded: object) -> None:
    with pytest.raises(CredentialError):
        BitstringStatusList.decode(encoded)


def test_status_list_refuses_short_construction() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        BitstringStatusList(1000)


@pytest.mark.parametrize("proof", PROOFS)
def test_revoked_and_valid_status(world: World, proof: str) -> None:
    revoked = issue(world, proof=proof, status=status_entry(STATUS_URL, 41))
    live = issue(world, proof=proof, status=status_entry(STATUS_URL, 42))
    world.status.set(41)
    source = world.status_source()
    assert verify(world, live, status_lists=source).status == "valid"
    with pytest.raises(CredentialError) as err:
        verify(world, revoked, status_lists=source)
    assert err.value.code == "credential-revoked"


def test_suspended(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, 7, "suspension"))
    world.status.set(7)
    published = issue_status_list_credential(
        world.voice, STATUS_URL, world.status, now=NOW, purpose="suspension"
    )
    with pytest.raises(CredentialError) as err:
        verify(world, cred, status_lists={STATUS_URL: published}.get)
    assert err.value.code == "credential-suspended"


def test_status_list_published_as_jwt(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, 3))
    world.status.set(3)
    published = issue_status_list_credential(
        world.voice, STATUS_URL, world.status, now=NOW, proof=VC_JWT
    )
    with pytest.raises(CredentialError, match="revoked"):
        verify(world, cred, status_lists={STATUS_URL: published}.get)


def test_status_unavailable_fails_closed(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, 1))
    empty: dict[str, Any] = {}
    sources: tuple[StatusListSource | None, ...] = (None, empty.get)
    for source in sources:
        with pytest.raises(CredentialError) as err:
            verify(world, cred, status_lists=source)
        assert err.value.code == "credential-status-unavailable"


def test_status_list_of_another_issuer_or_tampered_is_unavailable(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, 1))
    foreign = issue_status_list_credential(world.acme, STATUS_URL, BitstringStatusList(), now=NOW)
    world.status.set(1)  # revoked; an attacker swaps in an all-clear bitstring
    tampered = world.status_list_credential()
    assert isinstance(tampered, dict)
    tampered["credentialSubject"]["encodedList"] = BitstringStatusList().encode()
    for listed in (foreign, tampered):
        with pytest.raises(CredentialError) as err:
            verify(world, cred, status_lists={STATUS_URL: listed}.get)
        assert err.value.code == "credential-status-unavailable"


def test_stale_status_list(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, 1))
    old = {STATUS_URL: world.status_list_credential(now=NOW - 2 * DAY)}.get
    with pytest.raises(CredentialError) as err:
        verify(world, cred, status_lists=old, max_status_age=DAY)
    assert err.value.code == "credential-status-stale"
    assert verify(world, cred, status_lists=old).status == "valid"  # no age limit given


def test_status_index_beyond_list(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, STATUS_LIST_MIN_BITS))
    with pytest.raises(CredentialError, match="beyond"):
        verify(world, cred, status_lists=world.status_source())


# --- time ---------------------------------------------------------------------------------


def test_datetime_round_trip_and_refusals() -> None:
    assert from_timestamp(0) == "1970-01-01T00:00:00Z"
    assert to_timestamp(from_timestamp(NOW)) == NOW
    assert to_timestamp("2023-01-01T01:00:00+01:00") == to_timestamp("2023-01-01T00:00:00Z")
    for bad in ("2023-01-01", "2023-01-01T00:00:00", "2023-13-01T00:00:00Z", 5, None):
        with pytest.raises(CredentialError):
            to_timestamp(bad)


# --- hostile input -------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {
                "@context": st.just(["https://www.w3.org/ns/credentials/v2"]),
                "type": st.just(["VerifiableCredential", "DisplayNameCredential"]),
                "issuer": st.sampled_from([VOICE, TRUSTGRAPH, "x"]),
                "credentialSubject": JSON,
                "proof": JSON,
            }
        ),
        st.text(max_size=200).map(lambda t: t + ".x.y"),
    )
)
def test_hostile_input_raises_only_credential_error(junk: Any) -> None:
    world = World()
    with pytest.raises(CredentialError):
        verify(world, junk)


def test_status_list_with_a_malformed_subject_is_unavailable(world: World) -> None:
    cred = issue(world, status=status_entry(STATUS_URL, 1))
    body = world.status_list_credential()
    assert isinstance(body, dict)
    unsigned = {k: v for k, v in body.items() if k != "proof"}
    unsigned["credentialSubject"] = {**unsigned["credentialSubject"], "statusSize": 2}
    resigned = sign_data_integrity(unsigned, world.voice, created=NOW)
    with pytest.raises(CredentialError) as err:
        verify(world, cred, status_lists={STATUS_URL: resigned}.get)
    assert err.value.code == "credential-status-unavailable"


@pytest.mark.parametrize(
    "number",
    ["15551234567", "+0555123456", "+1555", "+1555123456789012", "+1 555 1234567", "", 15551234567],
)
def test_phone_number_credential_takes_only_e164(number: object) -> None:
    from dsip.errors import DsipError

    issuer = KeyPair.generate()
    with pytest.raises(DsipError):
        issue_credential(
            issuer, "PhoneNumberCredential", {"id": issuer.did, "telephoneNumber": number}, now=NOW
        )
    good = issue_credential(
        issuer,
        "PhoneNumberCredential",
        {"id": issuer.did, "telephoneNumber": "+15551234567"},
        now=NOW,
    )
    assert (
        verify_credential(good, documents=None, now=NOW).subject["telephoneNumber"]
        == "+15551234567"
    )
