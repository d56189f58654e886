"""Sealed envelopes: HPKE to the recipient's key-agreement key, inner envelope verified."""

from __future__ import annotations

import pytest

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair, did_key_document
from dsip.core.sealed import open_sealed, seal, x25519_key_of
from dsip.errors import DsipError
from tests.conftest import NOW

IDENTITY = {"display_name": "Alice", "claims": []}


def _inner(alice: KeyPair, bob: KeyPair, now: int = NOW) -> dict[str, str]:
    return sign_envelope(
        make_payload(
            "introduction",
            sender=alice.did,
            now=now,
            to=bob.did,
            purpose="secret purpose",
            identity=IDENTITY,
            ttl=86_400,
        ),
        alice,
    )


def test_seal_and_open_round_trip() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    inner = _inner(alice, bob)
    outer = seal(inner, sender=alice, recipient=did_key_document(bob.did), now=NOW)
    v_outer = Verifier().verify(outer, now=NOW)
    assert v_outer.type == "sealed"
    assert "secret purpose" not in str(v_outer.payload)
    inner_v = open_sealed(v_outer, bob, Verifier(), now=NOW)
    assert (inner_v.type, inner_v.identity, inner_v.payload["purpose"]) == (
        "introduction",
        alice.did,
        "secret purpose",
    )


def test_only_the_recipient_can_open_and_tampering_is_detected() -> None:
    alice, bob, eve = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    outer = seal(_inner(alice, bob), sender=alice, recipient=did_key_document(bob.did), now=NOW)
    v_outer = Verifier().verify(outer, now=NOW)
    with pytest.raises(DsipError) as err:
        open_sealed(v_outer, eve, Verifier(), now=NOW)
    assert err.value.code == "sealed-undecryptable"
    # the sealed payload moved into another (validly signed) envelope: the HPKE info binds it
    moved = make_payload(
        "sealed",
        sender=alice.did,
        now=NOW,
        profiles=[],
        to=bob.did,
        suite="x25519-hkdf-sha256-aes128gcm",
        payload_enc=v_outer.payload["payload_enc"],
    )
    with pytest.raises(DsipError):
        open_sealed(
            Verifier().verify(sign_envelope(moved, alice), now=NOW), bob, Verifier(), now=NOW
        )
    # a flipped ciphertext bit, re-signed by the sender, still fails to open
    ct = bytearray(b64url_decode(v_outer.payload["payload_enc"]))
    ct[-1] ^= 1
    flipped = dict(v_outer.payload, payload_enc=b64url_encode(bytes(ct)), id=moved["id"])
    with pytest.raises(DsipError):
        open_sealed(
            Verifier().verify(sign_envelope(flipped, alice), now=NOW), bob, Verifier(), now=NOW
        )


def test_held_for_days_then_delivered_once() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    outer = seal(
        _inner(alice, bob), sender=alice, recipient=did_key_document(bob.did), now=NOW, ttl=86_400
    )
    later = NOW + 3 * 3600  # far beyond the 300 s replay window, before expiry
    verifier, inner_verifier = Verifier(), Verifier()
    v = verifier.verify(outer, now=later)
    assert open_sealed(v, bob, inner_verifier, now=later).type == "introduction"
    with pytest.raises(DsipError) as err:
        verifier.verify(outer, now=later + 10)
    assert err.value.code == "duplicate-id"  # remembered until it expires, not for 300 s
    with pytest.raises(DsipError) as err:
        Verifier().verify(outer, now=NOW + 86_401)
    assert err.value.code == "expired"


def test_interoperates_with_pyhpke() -> None:
    """cryptography's HPKE output opens with an independent RFC 9180 implementation."""
    pyhpke = pytest.importorskip("pyhpke")
    bob = KeyPair.generate()
    kid, pub = x25519_key_of(did_key_document(bob.did))
    assert kid.split("#")[1].startswith("z6LS")
    from cryptography.hazmat.primitives import hpke

    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    ct = suite.encrypt(b"hello rfc 9180", pub, info=b"x")
    enc, body = ct[:32], ct[32:]
    cs = pyhpke.CipherSuite.new(
        pyhpke.KEMId.DHKEM_X25519_HKDF_SHA256, pyhpke.KDFId.HKDF_SHA256, pyhpke.AEADId.AES128_GCM
    )
    from cryptography.hazmat.primitives import serialization

    raw = bob.x25519_private().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    skr = cs.kem.deserialize_private_key(raw)
    recipient = cs.create_recipient_context(enc, skr, info=b"x")
    assert recipient.open(body) == b"hello rfc 9180"
