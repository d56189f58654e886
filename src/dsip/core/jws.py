"""DSIP-JOSE at the byte level: JWS flattened JSON with ``EdDSA`` (§10.1–§10.2, RFC 7515/8037).

Pipeline stages 1–3 and the signing input live here, shared by the envelope verifier and
the delegation verifier. The signature is computed with Ed25519 directly rather than
through ``joserfc``: the verifier must order its checks exactly as the conformance pipeline
does (header → kid → signature → payload), which a JOSE library's one-shot ``deserialize``
does not expose, and ``bench/envelope.py`` shows joserfc's verify alone is slower than our
whole pipeline. The primitive is libsodium's (see ``dsip.core.identity``), byte-identical
to ``cryptography``'s; tests cross-verify JWS both ways with joserfc.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import KeyPair
from dsip.core.jsonwire import loads_strict
from dsip.errors import DsipError, EnvelopeError, FrameTooLargeError

__all__ = [
    "ENVELOPE_MEMBERS",
    "MAX_FRAME_BYTES",
    "TYP",
    "RawEnvelope",
    "decode_header",
    "encode_frame",
    "parse_envelope",
    "parse_frame",
    "sign_bytes",
]

MAX_FRAME_BYTES = 65_536  # ws/1.0 binding constant (§13.2), not negotiable
TYP = "dsip+json"
ENVELOPE_MEMBERS = frozenset({"protected", "payload", "signature"})
_KNOWN_CRIT: frozenset[str] = frozenset()
_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_HEADER_CACHE_SIZE = 4096
_HEADERS: dict[str, tuple[bytes, Mapping[str, Any]]] = {}  # protected text → (bytes, header)


@dataclass(frozen=True, slots=True)
class RawEnvelope:
    """An envelope that passed stage 2: three canonical base64url members, decoded."""

    protected: str
    payload: str
    signature: str
    protected_bytes: bytes
    payload_bytes: bytes
    signature_bytes: bytes

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected}.{self.payload}".encode("ascii")

    def as_dict(self) -> dict[str, str]:
        return {"protected": self.protected, "payload": self.payload, "signature": self.signature}

    def encoded_size(self) -> int:
        return len(encode_frame(self.as_dict()))


def parse_frame(frame: bytes | str) -> Any:
    """Stage 1–2 for a wire frame: size cap before any parsing, then strict JSON.

    Frames in our own compact member order (every sender using ``encode_frame``) are split
    at their fixed member names: when all three slices are pure base64url (no quotes, no
    escapes) the split *is* the JSON parse. Any other layout takes the strict-JSON path.
    """
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise FrameTooLargeError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte cap")
    text = frame.decode("ascii", "replace") if isinstance(frame, bytes) else frame
    fast = _split_compact(text)
    if fast is not None:
        return fast
    try:
        value, _ = loads_strict(frame, what="envelope frame")
    except DsipError as exc:
        raise EnvelopeError(exc.message, code="envelope-shape") from None
    return value


def _split_compact(text: str) -> dict[str, str] | None:
    """The three members of ``{"protected":"…","payload":"…","signature":"…"}``, or ``None``
    when the frame has any other layout (then the general parser decides)."""
    if not (text.startswith('{"protected":"') and text.endswith('"}')):
        return None
    i = text.find('","payload":"', 14)
    j = text.find('","signature":"', i + 1) if i > 0 else -1
    if j < 0:
        return None
    members = (text[14:i], text[i + 13 : j], text[j + 15 : -2])
    for m in members:
        if not m.isascii() or m.encode("ascii").translate(None, _B64URL):
            return None  # escapes, quotes or other characters: not ours to shortcut
    return {"protected": members[0], "payload": members[1], "signature": members[2]}


def parse_envelope(obj: object) -> RawEnvelope:
    """Stage 2: exactly ``protected``, ``payload``, ``signature``, canonical base64url strings."""
    if not isinstance(obj, Mapping):
        raise EnvelopeError("envelope is not a JSON object", code="envelope-shape")
    keys = set(obj.keys())
    if keys != ENVELOPE_MEMBERS:
        extra = sorted(str(k)[:40] for k in keys - ENVELOPE_MEMBERS)
        missing = sorted(ENVELOPE_MEMBERS - keys)
        raise EnvelopeError(
            f"envelope members must be exactly protected/payload/signature (missing {missing}, extra {extra})",
            code="envelope-shape",
        )
    p, pl, s = obj["protected"], obj["payload"], obj["signature"]
    if not (isinstance(p, str) and isinstance(pl, str) and isinstance(s, str)):
        raise EnvelopeError("envelope members must be strings", code="envelope-shape")
    if not p or not pl or not s:
        raise EnvelopeError("envelope members must not be empty", code="envelope-shape")
    cached = _HEADERS.get(p)
    return RawEnvelope(
        p,
        pl,
        s,
        cached[0] if cached is not None else b64url_decode(p, what="protected"),
        b64url_decode(pl, what="payload"),
        b64url_decode(s, what="signature"),
    )


def decode_header(raw: RawEnvelope) -> Mapping[str, Any]:
    """Stage 3: protected header is a JSON object with ``alg`` and ``kid``; ``alg`` is EdDSA.

    Returns the header (read-only); ``kid`` syntax is checked by the caller (``kid-invalid``).
    A device sends the same protected header on every envelope, so headers that passed are
    remembered (bounded) by their exact base64url text and not parsed again.
    """
    cached = _HEADERS.get(raw.protected)
    if cached is not None:
        return cached[1]
    header = _decode_header_uncached(raw)
    if len(_HEADERS) >= _HEADER_CACHE_SIZE:
        _HEADERS.pop(next(iter(_HEADERS)))
    _HEADERS[raw.protected] = (raw.protected_bytes, header)
    return header


def _decode_header_uncached(raw: RawEnvelope) -> Mapping[str, Any]:
    try:
        header, _ = loads_strict(raw.protected_bytes, what="protected header")
    except DsipError as exc:
        raise EnvelopeError(exc.message, code="header-invalid") from None
    if not isinstance(header, dict):
        raise EnvelopeError("protected header is not a JSON object", code="header-invalid")
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not isinstance(kid, str):
        raise EnvelopeError("protected header needs string alg and kid", code="header-invalid")
    crit = header.get("crit")
    if crit is not None and (not isinstance(crit, list) or any(c not in _KNOWN_CRIT for c in crit)):
        # RFC 7515 §4.1.11: unknown critical header parameters make the JWS invalid.
        raise EnvelopeError(
            "protected header has unsupported crit parameters", code="header-invalid"
        )
    if "b64" in header:  # RFC 7797 unencoded payloads are not part of DSIP-JOSE
        raise EnvelopeError("b64 header parameter is not allowed", code="header-invalid")
    delegations = header.get("delegations")
    if delegations is not None and (
        not isinstance(delegations, list) or not all(isinstance(d, dict) for d in delegations)
    ):
        raise EnvelopeError("delegations header must be a list of envelopes", code="header-invalid")
    if alg != "EdDSA":
        # §10.2: EdDSA MUST, ES256 MAY (not implemented), everything else MUST be rejected.
        raise EnvelopeError(
            f"alg {alg[:20]!r} is not supported (EdDSA only)", code="alg-unsupported"
        )
    return MappingProxyType(header)


def sign_bytes(
    payload: bytes,
    key: KeyPair,
    *,
    delegations: Sequence[Mapping[str, str]] = (),
    typ: str = TYP,
    extra_header: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Sign ``payload`` bytes; returns the flattened JWS object. ``extra_header`` adds
    protected-header members (covered by the signature), e.g. an ``access_token``."""
    header: dict[str, Any] = {**(extra_header or {}), "alg": "EdDSA", "kid": key.kid, "typ": typ}
    if delegations:
        header["delegations"] = [dict(d) for d in delegations]
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    body = b64url_encode(payload)
    sig = key.sign(f"{protected}.{body}".encode("ascii"))
    return {"protected": protected, "payload": body, "signature": b64url_encode(sig)}


def encode_frame(envelope: Mapping[str, str]) -> str:
    """The ws/1.0 text frame for an envelope (one envelope per frame, §13.2)."""
    return json.dumps(
        {
            "protected": envelope["protected"],
            "payload": envelope["payload"],
            "signature": envelope["signature"],
        },
        separators=(",", ":"),
    )
