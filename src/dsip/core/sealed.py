"""Sealed store-and-forward envelopes (seed §21.B ``dsip.envelope.v1``; profile sealed-envelope/1.0).

A sender puts a complete signed DSIP envelope (an ``introduction``, an encrypted ``msg``,
anything) inside HPKE (RFC 9180, base mode) sealed to the recipient's X25519 key-agreement
key — the ``keyAgreement`` key of its DID document, for a did:key the X25519 key derived
from the Ed25519 key — and sends the result as the ``payload_enc`` of an outer ``sealed``
envelope addressed to the recipient. Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-128-GCM, via ``cryptography``'s HPKE (checked against the independent ``pyhpke`` in
the tests). The HPKE ``info`` binds the ciphertext to the profile, the recipient and the
outer envelope's id, so a sealed payload cannot be replayed inside another envelope.

What the relay sees: the connected sender (it authenticated the connection anyway), the
recipient DID, the size, the expiry. Not the inner type, id, sender identity, timestamps or
content — the operator's database rows and logs hold nothing else.

The recipient opens the payload and verifies the inner envelope with its ordinary
pipeline; the inner signer is the real sender. ``sealed`` (like ``introduction``) is a
*held* type: delivered after the relay kept it, its ``issued_at`` may be older than the
300 s replay window, so the verifier accepts it until ``expires_at`` and remembers its id
until then (see ``dsip.core.envelope.HELD_TYPES``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import Verified, Verifier, make_payload, sign_envelope
from dsip.core.identity import DidDocument, KeyPair, _decode_multibase_key
from dsip.core.jws import encode_frame
from dsip.errors import DsipError

__all__ = ["SUITE_ID", "SealError", "open_sealed", "seal", "x25519_key_of"]

SUITE_ID = "x25519-hkdf-sha256-aes128gcm"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_X25519_PUB = b"\xec\x01"
MAX_HOLD = 7 * 86_400


class SealError(DsipError):
    """A sealed envelope that cannot be opened by us, or whose content is not a valid envelope."""

    default_code = "sealed-invalid"
    default_reason = "session.failed"


def x25519_key_of(document: DidDocument) -> tuple[str, X25519PublicKey]:
    """The recipient's first X25519 ``keyAgreement`` key: (DID URL, key)."""
    for ref in document.key_agreement:
        for vm in document.raw.get("verificationMethod", []) + [
            v for v in document.raw.get("keyAgreement", []) if isinstance(v, Mapping)
        ]:
            vm_id = vm.get("id", "")
            vm_id = (
                document.id + vm_id if isinstance(vm_id, str) and vm_id.startswith("#") else vm_id
            )
            if vm_id == ref and isinstance(vm.get("publicKeyMultibase"), str):
                raw = _decode_multibase_key(
                    vm["publicKeyMultibase"], _X25519_PUB, what="keyAgreement key"
                )
                return ref, X25519PublicKey.from_public_bytes(raw)
    raise SealError(f"{document.id} publishes no X25519 keyAgreement key", code="sealed-no-key")


def _info(to: str, outer_id: str) -> bytes:
    return b"dsip sealed-envelope/1.0\x00" + to.encode() + b"\x00" + outer_id.encode()


def seal(
    inner: Mapping[str, str],
    *,
    sender: KeyPair,
    recipient: DidDocument,
    to: str | None = None,
    now: int,
    ttl: int = 86_400,
) -> dict[str, str]:
    """Seal the signed ``inner`` envelope to ``recipient``; returns the outer signed envelope."""
    if not 0 < ttl <= MAX_HOLD:
        raise ValueError(f"ttl must be 1..{MAX_HOLD} s")
    kid, key = x25519_key_of(recipient)
    payload = make_payload(
        "sealed",
        sender=sender.did,
        now=now,
        ttl=ttl,
        profiles=[],
        to=to or recipient.id,
        suite=SUITE_ID,
        kid=kid,
        payload_enc="",
    )
    ct = _SUITE.encrypt(
        encode_frame(dict(inner)).encode(), key, info=_info(payload["to"], payload["id"])
    )
    payload["payload_enc"] = b64url_encode(ct)
    return sign_envelope(payload, sender)


def open_sealed(outer: Verified, recipient: KeyPair, verifier: Verifier, *, now: int) -> Verified:
    """Open a verified ``sealed`` envelope with our key and verify the inner envelope."""
    if outer.type != "sealed":
        raise SealError(f"a {outer.type} is not a sealed envelope", code="sealed-invalid")
    private: X25519PrivateKey = recipient.x25519_private()
    try:
        ct = b64url_decode(str(outer.payload["payload_enc"]), code="sealed-invalid")
        inner_frame = _SUITE.decrypt(ct, private, info=_info(str(outer.payload["to"]), outer.id))
    except (DsipError, ValueError, InvalidTag) as exc:
        raise SealError(
            f"cannot open sealed envelope: {type(exc).__name__}", code="sealed-undecryptable"
        ) from None
    try:
        return verifier.verify(inner_frame.decode("utf-8"), now=now)
    except UnicodeDecodeError:
        raise SealError("sealed content is not UTF-8", code="sealed-invalid") from None
