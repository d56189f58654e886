"""Strict unpadded base64url (RFC 7515 §2, RFC 4648 §5).

JWS forbids padding, and a lenient decoder turns one signed value into many encodings
(trailing bits, stray characters). We accept exactly one encoding per byte string:
alphabet ``[A-Za-z0-9_-]``, no ``=``, no length ≡ 1 (mod 4), and zero trailing bits.

This runs three times per received envelope, so it avoids per-character Python work:
``bytes.translate`` (a C loop) validates the alphabet, the trailing-bits check looks only at
the last character, and the decoding itself is ``pybase64`` (SIMD; 5x faster than
``binascii`` on a 1.4 kB payload, measured). pybase64 alone is not enough: with
``altchars`` it still accepts ``+`` and ``/``, which is why the alphabet check stays ours.
"""

from __future__ import annotations

import base64
import binascii

import pybase64

from dsip.errors import EnvelopeError

__all__ = ["b64url_decode", "b64url_encode"]

_URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_INDEX = {c: i for i, c in enumerate(_URL_ALPHABET)}
_PAD = (b"", b"", b"==", b"=")


def b64url_encode(data: bytes) -> str:
    """Encode without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, what: str = "value", code: str = "envelope-shape") -> bytes:
    """Decode canonical unpadded base64url or raise ``EnvelopeError(code)``."""
    if not isinstance(text, str) or not text.isascii():
        raise EnvelopeError(f"{what} is not unpadded base64url", code=code)
    data = text.encode("ascii")
    if data.translate(None, _URL_ALPHABET):  # anything left is outside the alphabet
        raise EnvelopeError(f"{what} is not unpadded base64url", code=code)
    rem = len(data) % 4
    if rem == 1:
        raise EnvelopeError(f"{what} has an impossible base64url length", code=code)
    # Non-zero trailing bits decode to the same bytes: reject them so the encoding is unique.
    if rem and _INDEX[data[-1]] & (0x0F if rem == 2 else 0x03):
        raise EnvelopeError(f"{what} is non-canonical base64url (trailing bits)", code=code)
    try:
        return pybase64.b64decode(data + _PAD[rem], altchars=b"-_", validate=True)
    except binascii.Error as exc:  # pragma: no cover - alphabet/length already checked
        raise EnvelopeError(f"{what} is not base64url: {exc}", code=code) from None
