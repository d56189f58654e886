from __future__ import annotations

import pytest

from dsip.core.identity import (
    KeyPair,
    StaticDocuments,
    did_key_document,
    did_key_from_public,
    did_web_document,
    did_web_to_url,
    ed25519_from_did_key,
    parse_did_document,
    resolve_kid,
    split_did_url,
)
from dsip.errors import DsipError, IdentityError, ResolutionError
from tests.conftest import vector_key

# did:key method specification test vector (Ed25519 key and its derived X25519 key).
SPEC_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
SPEC_X25519 = "z6LSj72tK8brWgZja8NLRwPigth2T9QRiG1uH9oKZuKjdh9p"


def test_fixture_keys_match_the_shared_fixture_dids() -> None:
    # Published in the vectors' fixtures.json, computed by another implementation.
    assert vector_key("alice").did == "did:key:z6MkhzX9qTeXBWkucyMVric1E9JrqUD5LPAkD2BNavakAptf"
    assert vector_key("bob-phone").did == "did:key:z6Mks11tjMeRnE1JceWhyT7zEToX4z3L6BuKaM13PbTEdApn"


def test_did_key_document_derives_the_spec_x25519_key() -> None:
    doc = did_key_document(SPEC_DID)
    assert doc.key_agreement == (f"{SPEC_DID}#{SPEC_X25519}",)
    assert doc.authentication == (f"{SPEC_DID}#{SPEC_DID[8:]}",)


def test_x25519_private_matches_the_published_agreement_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    k = KeyPair.generate()
    doc = did_key_document(k.did)
    mb = doc.key_agreement[0].split("#")[1]
    from dsip.core.identity import _decode_multibase_key

    pub = X25519PublicKey.from_public_bytes(_decode_multibase_key(mb, b"\xec\x01", what="x"))
    other = KeyPair.generate().x25519_private()
    # ECDH both ways agrees only if the derived private key matches the derived public key.
    assert other.exchange(pub) == k.x25519_private().exchange(other.public_key())


def test_did_key_round_trip() -> None:
    k = KeyPair.generate()
    assert did_key_from_public(k.public_key) == k.did
    assert ed25519_from_did_key(k.did).public_bytes_raw() == k.public_key.public_bytes_raw()


@pytest.mark.parametrize(
    ("did", "url"),
    [
        ("did:web:example.com", "https://example.com/.well-known/did.json"),
        ("did:web:example.com:users:bob", "https://example.com/users/bob/did.json"),
        ("did:web:localhost%3A8443:a", "https://localhost:8443/a/did.json"),
    ],
)
def test_did_web_url_mapping(did: str, url: str) -> None:
    assert did_web_to_url(did) == url


@pytest.mark.parametrize(
    "did",
    [
        "did:web:",
        "did:web:exa mple.com",
        "did:web:example.com:..",
        "did:web:example.com::x",
        "did:web:ex%2Fample.com",
        "did:web:host%3A99999",
        "did:key:z6Mk",
        "did:web:" + "a" * 3000,
    ],
)
def test_did_web_url_mapping_rejects_hostile(did: str) -> None:
    with pytest.raises(IdentityError):
        did_web_to_url(did)


@pytest.mark.parametrize(
    "kid", ["did:key:z6Mk", "nota#did", "did:key:abc#", 5, None, "did:key:x#" + "a" * 5000]
)
def test_split_did_url_rejects(kid: object) -> None:
    with pytest.raises(IdentityError) as err:
        split_did_url(kid)
    assert err.value.code == "kid-invalid"


def test_did_web_document_resolves_kid_and_services() -> None:
    k = KeyPair.generate()
    did = "did:web:voice.example:users:alice"
    doc = did_web_document(
        did,
        [("key-1", k.public_key_multibase)],
        services={"ws": ["wss://relay.voice.example/dsip"], "turn": ["turns:turn.voice.example"]},
    )
    parsed = parse_did_document(doc, did)
    assert (
        resolve_kid(f"{did}#key-1", StaticDocuments({did: doc})).public_key_multibase
        == k.public_key_multibase
    )
    assert parsed.dsip_endpoints()["turn"] == ["turns:turn.voice.example"]
    with pytest.raises(ResolutionError):
        resolve_kid(f"{did}#key-2", StaticDocuments({did: doc}))


def test_relative_method_ids_resolve() -> None:
    k = KeyPair.generate()
    did = "did:web:voice.example"
    doc = {
        "id": did,
        "verificationMethod": [
            {
                "id": "#key-1",
                "type": "Ed25519VerificationKey2020",
                "controller": did,
                "publicKeyMultibase": k.public_key_multibase,
            }
        ],
    }
    assert parse_did_document(doc, did).method(f"{did}#key-1") is not None


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"id": "did:web:other"},
        {"id": "did:web:x", "verificationMethod": {}},
        {"id": "did:web:x", "verificationMethod": [5]},
        {"id": "did:web:x", "service": "nope"},
        {"id": "did:web:x", "authentication": "nope"},
    ],
)
def test_parse_did_document_hostile(doc: object) -> None:
    with pytest.raises(DsipError):
        parse_did_document(doc, "did:web:x")


def test_methods_of_other_dids_and_bad_keys_are_ignored() -> None:
    k = KeyPair.generate()
    did = "did:web:x"
    doc = {
        "id": did,
        "verificationMethod": [
            {
                "id": "did:web:evil#key-1",
                "type": "Multikey",
                "publicKeyMultibase": k.public_key_multibase,
            },
            {"id": "#bad", "type": "Multikey", "publicKeyMultibase": "z111"},
        ],
    }
    assert dict(parse_did_document(doc, did).methods) == {}
