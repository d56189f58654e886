"""DSIP-COSE: the same signed envelopes as COSE_Sign1 (RFC 9052 §4.2, CBOR tag 18).

v0.7 §10 leaves room for "a compact binary profile"; this is ours. A DSIP-COSE frame is one
CBOR data item::

    18([ protected: bstr .cbor {1: -8, 3: "application/dsip+cbor", 4: kid-bytes,
                                ? "delegations": [ {tstr => tstr} ... ]},
         unprotected: {},            ; always empty: everything DSIP says is signed
         payload: bstr .cbor DSIP-payload,
         signature: bstr ])          ; Ed25519 over Sig_structure (RFC 9052 §4.4)

``Sig_structure = ["Signature1", protected, h'', payload]`` (no external AAD). The payload is
the *same* JSON data model as DSIP-JOSE (objects with text keys, arrays, text, integers
within ±(2**53−1), booleans, null), so a gateway can convert between the two encodings
without loss; the layers above only ever see a ``Signed`` record and ``Verifier`` gives the
same verdict codes for both (see the table in ``dsip.core.envelope``).

Choices worth knowing:

* **Deterministic CBOR everywhere** (RFC 8949 §4.2.1). The outer item, the protected header
  and the payload must each be exactly the deterministic encoding of what they decode to.
  Re-encoding and comparing rejects, in one check, trailing bytes, over-long integer, length
  and float encodings (indefinite lengths and duplicate keys are already refused by the
  decoder); and it makes every envelope's bytes unique: there is no second encoding for a
  relay to see or a signature to be confused by. ``cbor2``'s ``canonical`` mode sorts map
  keys length-first (RFC 7049 §3.9); for the keys DSIP-COSE allows (text keys; the header's
  ints 1/3/4 before text) that is byte-for-byte the RFC 8949 bytewise order, so any RFC 8949
  deterministic encoder produces the same frames (a hypothesis test holds the equivalence).
* **Strict payload model.** After decoding (tags refused, depth ≤ 64 as in
  ``dsip.core.jsonwire``), an iterative walk rejects byte strings, tags, ``undefined`` and
  other simple values, non-text map keys, integers beyond ±(2**53−1), NaN and infinities —
  all reported as ``payload-not-json`` ("not a well-formed object", as for JOSE). Finite
  floats are *reported* (``saw_float``) so the pipeline answers ``payload-float`` at the
  right stage. The walk also checks key order, which lets the payload be re-encoded with
  ``cbor2``'s plain mode instead of ``canonical=True``: measured by ``bench/cose.py`` on the
  example invite, that saves ~10 µs of a ~32 µs parse. The strict CBOR parse still costs
  about twice the strict JSON one (the walk runs in Python), so the COSE pipeline verifies
  at ~0.93x the JOSE pipeline; Ed25519 dominates both. COSE buys size (frames ~0.64x), not
  CPU.
* **Every ``cbor2`` call is fenced.** Semantic tags are disabled (``cbor2`` decodes ~20 tags
  natively, including value sharing, which can build cyclic objects); anything the C decoder
  raises on hostile input becomes an ``EnvelopeError``/``PayloadError``.
* **Header view.** ``Signed.header`` uses the JOSE names (``alg="EdDSA"``, ``kid``, ``cty``,
  ``delegations``) so the verifier and the layers above stay encoding-neutral. ``kid`` is a
  byte string in COSE (label 4); it must be UTF-8 (else ``kid-invalid``, after the ``alg``
  check, in pipeline order). ``alg`` is -8 (EdDSA), as DSIP-JOSE's ``"EdDSA"``; RFC 9864's
  fully-specified ``-19`` (Ed25519) is not accepted yet.
* Delegations stay DSIP-JOSE envelopes (maps of text) inside the protected header: they are
  issued once and verified by ``DelegationVerifier`` whatever the carrying encoding.

Negotiation (§11): a peer lists ``cose-envelope/1.0`` in its ``hello``'s ``dsip.extensions``;
once both did, binary frames carry DSIP-COSE and text frames DSIP-JOSE
(``negotiated_cose``, ``decode_frame``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

import cbor2

from dsip.core.envelope import Signed, decode_jose
from dsip.core.identity import KeyPair
from dsip.core.jsonwire import MAX_DEPTH, MAX_SAFE_INT
from dsip.core.jws import MAX_FRAME_BYTES
from dsip.core.version import COSE_EXTENSION, Supported
from dsip.errors import EnvelopeError, FrameTooLargeError, PayloadError

__all__ = [
    "ALG_EDDSA",
    "CONTENT_TYPE",
    "COSE_EXTENSION",
    "COSE_SIGN1_TAG",
    "decode_cose",
    "decode_frame",
    "loads_cbor_strict",
    "negotiated_cose",
    "sig_structure",
    "sign_cose",
    "sign_cose_bytes",
]

COSE_SIGN1_TAG: Final = 18
ALG_EDDSA: Final = -8  # COSE algorithms registry: EdDSA (RFC 9053 §2.2)
CONTENT_TYPE: Final = "application/dsip+cbor"
_H_ALG: Final = 1
_H_CRIT: Final = 2
_H_CTY: Final = 3
_H_KID: Final = 4
_H_DELEGATIONS: Final = "delegations"
_DELEGATION_MEMBERS: Final = frozenset({"protected", "payload", "signature"})
_HEADER_MAX_DEPTH: Final = 4  # header map → delegations list → envelope map → text
_FRAME_MAX_DEPTH: Final = 4  # array → unprotected map (must be empty anyway)
_HEADER_CACHE_SIZE: Final = 4096


def _reject_semantic(_value: object, _immutable: bool) -> Any:
    raise ValueError("CBOR tags are not allowed here")


def _reject_tag(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    raise ValueError(f"CBOR tag {tag.tag} is not allowed here")


def _keep_sign1_tag(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    if tag.tag != COSE_SIGN1_TAG:
        raise ValueError(f"CBOR tag {tag.tag} is not allowed here")
    return tag


# Tags cbor2 6.x decodes natively (datetimes, bignums, decimals, value sharing (28/29, which
# can build cycles), string references, sets, ...): every one is refused, the rest of the tag
# space goes through ``tag_hook``. Bignums decoding to a plain int would also fail the
# deterministic re-encode check; refusing them here is earlier and cheaper.
_NATIVE_TAGS: Final = (
    *(0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100),
    *(256, 258, 260, 261, 1004, 43000, 55799),
)
_NO_SEMANTICS: Final = MappingProxyType(dict.fromkeys(_NATIVE_TAGS, _reject_semantic))


class _NotJsonModel(ValueError):
    """A decoded value outside the JSON data model (raised by ``_walk``)."""


def _loads(raw: bytes, *, max_depth: int, tag_hook: Any) -> Any:
    """One definite-length, duplicate-free CBOR item; no native semantic tags.

    Raises whatever the C decoder raises (callers fence it): on hostile input that is
    ``CBORDecodeError`` in practice, but the set is not documented as closed.
    """
    return cbor2.loads(
        raw,
        semantic_decoders=_NO_SEMANTICS,
        tag_hook=tag_hook,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )


def _walk(value: Any, *, ordered: bool = True) -> bool:
    """Check that ``value`` is JSON-model data; return whether it holds a (finite) float.

    ``ordered``: also require map keys in deterministic order, as decoded (= as on the wire).
    Iterative, containers only on the stack: this walk is most of the payload parse's cost.
    """
    saw_float = False
    stack: list[tuple[Any, int]] = [([value], 0)]  # a virtual list around the root
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _NotJsonModel(f"nests deeper than {MAX_DEPTH}")
        if type(node) is dict:
            prev, prev_len = b"", -1
            for k in node:
                if type(k) is not str:
                    raise _NotJsonModel(f"map key of type {type(k).__name__} (text keys only)")
                if ordered:
                    # Deterministic order for text keys: shorter UTF-8 first, then bytewise
                    # (the RFC 8949 §4.2.1 order of their encodings); strict, so no repeats.
                    kb = k.encode("utf-8", "surrogatepass")
                    n = len(kb)
                    if n < prev_len or (n == prev_len and kb <= prev):
                        raise _NotJsonModel("map keys are not in deterministic order")
                    prev, prev_len = kb, n
            children: Any = node.values()
        else:
            children = node
        for v in children:
            t = type(v)
            if t is str or t is bool or v is None:
                continue
            if t is int:
                if not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
                    raise _NotJsonModel(f"integer {str(v)[:40]} is outside ±(2**53-1)")
            elif t is dict or t is list:
                stack.append((v, depth + 1))
            elif t is float:
                if not math.isfinite(v):
                    raise _NotJsonModel(f"{v} is not a JSON number")
                saw_float = True
            else:
                raise _NotJsonModel(f"{t.__name__} is not in the JSON data model")
    return saw_float


def loads_cbor_strict(raw: bytes) -> tuple[Any, bool]:
    """The DSIP-COSE payload parser: ``(value, saw_float)`` or ``PayloadError``.

    The COSE counterpart of ``dsip.core.jsonwire.loads_strict`` (same contract, same
    ``payload-not-json`` code for every malformation).
    """
    try:
        value = _loads(raw, max_depth=MAX_DEPTH, tag_hook=_reject_tag)
    except Exception as exc:  # C decoder on hostile bytes: fence everything
        raise PayloadError(
            f"payload is not well-formed CBOR: {str(exc)[:120]}", code="payload-not-json"
        ) from None
    try:
        saw_float = _walk(value)
    except _NotJsonModel as exc:
        raise PayloadError(f"payload {exc}", code="payload-not-json") from None
    # Keys are in order (checked by the walk), so the plain encoder reproduces a
    # deterministic input byte for byte, three times faster than ``canonical=True``
    # (bench/cose.py). Plain mode writes every float as 64 bits; payloads with floats are
    # rejected anyway, and take the canonical path so that a shortest-form float is
    # reported as ``payload-float`` rather than as a non-deterministic encoding.
    if cbor2.dumps(value, canonical=saw_float) != raw:
        raise PayloadError(
            "payload is not deterministically encoded CBOR (RFC 8949 §4.2.1)",
            code="payload-not-json",
        )
    return value, saw_float


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The COSE_Sign1 signing input (RFC 9052 §4.4), with an empty external AAD."""
    return cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)


# --- signing ----------------------------------------------------------------------------


def sign_cose_bytes(
    payload: bytes, key: KeyPair, *, delegations: Sequence[Mapping[str, str]] = ()
) -> bytes:
    """Sign already-encoded payload bytes; returns the tagged COSE_Sign1 frame.

    The bytes are signed as given (tests use this to build hostile payloads); senders use
    ``sign_cose``, which encodes deterministically.
    """
    header: dict[int | str, Any] = {
        _H_ALG: ALG_EDDSA,
        _H_CTY: CONTENT_TYPE,
        _H_KID: key.kid.encode("utf-8"),
    }
    if delegations:
        header[_H_DELEGATIONS] = [{str(k): str(v) for k, v in d.items()} for d in delegations]
    protected = cbor2.dumps(header, canonical=True)
    signature = key.sign(sig_structure(protected, payload))
    return cbor2.dumps(
        cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]), canonical=True
    )


def sign_cose(
    payload: Mapping[str, Any], key: KeyPair, *, delegations: Sequence[Mapping[str, str]] = ()
) -> bytes:
    """Encode ``payload`` as deterministic CBOR and sign it; returns the wire frame.

    The payload must be JSON-model data (what a DSIP-JOSE payload can hold), so that the
    frame is convertible to DSIP-JOSE; anything else is refused here, locally, rather than
    by the receiver. Floats are encoded (as ``sign_envelope`` does) and rejected by
    receivers with ``payload-float``.
    """
    value = dict(payload)
    try:
        _walk(value, ordered=False)
    except _NotJsonModel as exc:
        raise PayloadError(
            f"payload to sign {exc}", code="payload-not-json", remote=False
        ) from None
    return sign_cose_bytes(cbor2.dumps(value, canonical=True), key, delegations=delegations)


# --- stages 1–3 -------------------------------------------------------------------------

_HEADERS: dict[bytes, Mapping[str, Any]] = {}  # protected bstr → header view (bounded)


def decode_cose(frame: bytes) -> Signed:
    """Stages 1–3 for DSIP-COSE: frame cap, COSE_Sign1 shape, protected header.

    Mirrors ``decode_jose``: ``frame-too-large`` before any decoding, ``envelope-shape``
    for anything that is not one deterministic ``18([bstr, {}, bstr, bstr])`` item, then
    ``header-invalid`` → ``alg-unsupported`` → (kid not UTF-8) ``kid-invalid``.
    """
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise EnvelopeError("a DSIP-COSE frame is binary", code="envelope-shape")
    frame = bytes(frame)
    size = len(frame)
    if size > MAX_FRAME_BYTES:  # stage 1
        raise FrameTooLargeError(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte cap")
    try:  # stage 2
        item = _loads(frame, max_depth=_FRAME_MAX_DEPTH, tag_hook=_keep_sign1_tag)
    except Exception as exc:  # C decoder on hostile bytes: fence everything
        raise EnvelopeError(
            f"frame is not well-formed CBOR: {str(exc)[:120]}", code="envelope-shape"
        ) from None
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise EnvelopeError("frame is not a tagged COSE_Sign1 (tag 18)", code="envelope-shape")
    parts = item.value
    if not isinstance(parts, (list, tuple)) or len(parts) != 4:
        raise EnvelopeError("COSE_Sign1 is not a four-element array", code="envelope-shape")
    protected, unprotected, payload, signature = parts
    if not (
        type(protected) is bytes
        and isinstance(unprotected, Mapping)
        and type(payload) is bytes
        and type(signature) is bytes
    ):
        raise EnvelopeError(
            "COSE_Sign1 members must be (bstr, map, bstr, bstr)", code="envelope-shape"
        )
    if not protected or not payload or not signature:
        raise EnvelopeError("COSE_Sign1 members must not be empty", code="envelope-shape")
    try:
        # No map keys to order here (the unprotected map must be empty): the plain encoder
        # is deterministic for this shape and cheaper than ``canonical=True``.
        again = cbor2.dumps(item)
    except Exception:  # an unprotected map holding something cbor2 cannot re-encode
        again = b""
    if again != frame:
        raise EnvelopeError(
            "frame is not deterministically encoded CBOR (RFC 8949 §4.2.1)",
            code="envelope-shape",
        )
    if unprotected:  # stage 3
        raise EnvelopeError(
            "unprotected header must be empty (DSIP signs every parameter)",
            code="header-invalid",
        )
    header = _decode_header(protected)
    return Signed(
        encoding="cose",
        kid=header["kid"],
        header=header,
        signing_input=sig_structure(protected, payload),
        signature=signature,
        payload_bytes=payload,
        decode_payload=loads_cbor_strict,
        wire=frame,
        encoded_size=size,
    )


def _decode_header(protected: bytes) -> Mapping[str, Any]:
    """Stage 3, remembered (bounded) by the exact protected bytes, as ``jws.decode_header``."""
    cached = _HEADERS.get(protected)
    if cached is not None:
        return cached
    header = _decode_header_uncached(protected)
    if len(_HEADERS) >= _HEADER_CACHE_SIZE:
        _HEADERS.pop(next(iter(_HEADERS)))
    _HEADERS[protected] = header
    return header


def _header_error(message: str) -> EnvelopeError:
    return EnvelopeError(message, code="header-invalid")


def _decode_header_uncached(protected: bytes) -> Mapping[str, Any]:
    try:
        raw = _loads(protected, max_depth=_HEADER_MAX_DEPTH, tag_hook=_reject_tag)
    except Exception as exc:  # C decoder on hostile bytes: fence everything
        raise _header_error(f"protected header is not well-formed CBOR: {str(exc)[:120]}") from None
    if type(raw) is not dict:
        raise _header_error("protected header is not a CBOR map")
    # Only int (not bool: True == 1 in Python) and text labels (RFC 9052 §3).
    if not all(type(k) is int or type(k) is str for k in raw):
        raise _header_error("protected header labels must be integers or text")
    try:
        canonical = cbor2.dumps(raw, canonical=True)
    except Exception:
        canonical = b""
    if canonical != protected:
        raise _header_error("protected header is not deterministically encoded")
    alg, kid = raw.get(_H_ALG), raw.get(_H_KID)
    if alg is None or type(kid) is not bytes:
        raise _header_error("protected header needs alg (1) and a byte-string kid (4)")
    if not (type(alg) is int or type(alg) is str):
        raise _header_error("alg must be an integer or text")
    if _H_CRIT in raw:
        # RFC 9052 §3.1: a recipient must reject labels in crit it does not understand;
        # DSIP-COSE defines none.
        raise _header_error("protected header has unsupported crit parameters")
    if raw.get(_H_CTY) != CONTENT_TYPE:
        raise _header_error(f"content type (3) must be {CONTENT_TYPE!r}")
    view: dict[str, Any] = {"alg": "EdDSA", "cty": CONTENT_TYPE}
    if _H_DELEGATIONS in raw:
        view["delegations"] = _delegations(raw[_H_DELEGATIONS])
    if alg != ALG_EDDSA:
        # §10.2: EdDSA MUST; everything else MUST be rejected (ES256 MAY, not implemented).
        raise EnvelopeError(
            f"alg {str(alg)[:20]!r} is not supported (EdDSA, -8, only)", code="alg-unsupported"
        )
    try:
        view["kid"] = kid.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("kid is not UTF-8 text", code="kid-invalid") from None
    return MappingProxyType(view)


def _delegations(value: object) -> list[dict[str, str]]:
    """The header's delegation envelopes: a list of {protected, payload, signature} texts."""
    if type(value) is not list:
        raise _header_error("delegations must be a list of envelopes")
    out: list[dict[str, str]] = []
    for d in value:
        if (
            type(d) is not dict
            or set(d) != _DELEGATION_MEMBERS
            or not all(type(v) is str for v in d.values())
        ):
            raise _header_error("a delegation must be a map of protected/payload/signature text")
        out.append(dict(d))
    return out


# --- negotiation and dispatch -----------------------------------------------------------

_COSE_MAJOR: Final = next(iter(Supported(extensions=frozenset({COSE_EXTENSION})).extension_majors))


def _offers_cose(hello: Mapping[str, Any]) -> bool:
    block = hello.get("dsip") if isinstance(hello, Mapping) else None
    exts = block.get("extensions") if isinstance(block, Mapping) else None
    if not isinstance(exts, (list, tuple)):
        return False
    names = frozenset(e for e in exts if isinstance(e, str))
    return _COSE_MAJOR in Supported(extensions=names).extension_majors


def negotiated_cose(our_hello: Mapping[str, Any], their_hello: Mapping[str, Any]) -> bool:
    """Whether both ``hello`` payloads list ``cose-envelope/1.x`` in ``dsip.extensions``.

    Same name and major, any minor (§11: a newer minor is backward-compatible). Until this
    is true a binding carries DSIP-JOSE text frames only.
    """
    return _offers_cose(our_hello) and _offers_cose(their_hello)


def decode_frame(frame: str | bytes) -> Signed:
    """Stages 1–3 for a binding frame: text is DSIP-JOSE, binary is DSIP-COSE (§13)."""
    if isinstance(frame, str):
        return decode_jose(frame)
    return decode_cose(frame)
