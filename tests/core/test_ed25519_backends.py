"""libsodium (signing/verifying hot path) and OpenSSL (``cryptography``) agree on Ed25519."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.core.identity import KeyPair, did_key_document


def _openssl_ok(key: KeyPair, sig: bytes, msg: bytes) -> bool:
    try:
        key.public_key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=2048))
def test_signatures_are_byte_identical(seed: bytes, msg: bytes) -> None:
    key = KeyPair.from_seed(seed)
    assert key.sign(msg) == key.private_key.sign(msg)


@settings(max_examples=150, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    msg=st.binary(min_size=1, max_size=300),
    where=st.sampled_from(["sig", "msg"]),
    data=st.data(),
)
def test_verifiers_agree_on_flipped_bits(
    seed: bytes, msg: bytes, where: str, data: st.DataObject
) -> None:
    key = KeyPair.from_seed(seed)
    method = next(iter(did_key_document(key.did).methods.values()))
    sig = bytearray(key.sign(msg))
    body = bytearray(msg)
    target = sig if where == "sig" else body
    i = data.draw(st.integers(0, len(target) - 1))
    target[i] ^= 1 << data.draw(st.integers(0, 7))
    assert method.verify(bytes(sig), bytes(body)) == _openssl_ok(key, bytes(sig), bytes(body))
    assert method.verify(key.sign(msg), msg) is True


def test_wrong_lengths_are_invalid_not_errors() -> None:
    key = KeyPair.generate()
    method = next(iter(did_key_document(key.did).methods.values()))
    assert method.verify(b"", b"x") is False
    assert method.verify(b"\x00" * 63, b"x") is False
    assert method.verify(b"\x00" * 65, b"x") is False
