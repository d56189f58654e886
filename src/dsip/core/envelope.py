"""The DSIP-JOSE verification pipeline (v0.7 §10–§12.9) and envelope construction.

``Verifier.verify`` runs the normative stage order of the conformance suite, so that when
several things are wrong the verdict is the *first* failing stage:

====  ==========================================================================
 1    ``frame-too-large`` — only for a wire frame; checked before any parsing
 2    ``envelope-shape`` — exactly protected/payload/signature, canonical base64url
 3    ``header-invalid`` → ``alg-unsupported`` → ``kid-invalid``
 4    ``kid-unresolvable`` — through the DID document (§8.1)
 5    ``signature-invalid`` — Ed25519 over the exact ASCII ``protected.payload``
 6    ``payload-not-utf8`` → ``payload-not-json`` → ``payload-float`` → ``payload-shape``
 7    ``signer-mismatch`` / ``delegation-*`` — bind ``kid`` to ``from`` (and ``from`` to
      ``on_behalf_of`` on ``hello``)
 8    ``expiry-order``
 9    ``replay-window`` (±300 s, symmetric) → ``expired``
10    ``duplicate-id``
11    ``ulid-issued-at-mismatch`` (> 300 s between the ULID time and ``issued_at``)
11b   ``hello-required`` — the binding has no verified ``hello`` yet
12    ``version-unsupported`` (§11)
13    ``unknown-type`` → ``schema-invalid``
14    stateless semantic checks
====  ==========================================================================

A rejected envelope changes nothing: the message id enters the duplicate store only after
every stage passed. Time is always the ``now`` argument (integer seconds).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dsip.core import semantic
from dsip.core.delegation import DelegationVerifier
from dsip.core.identity import (
    DocumentSource,
    KeyPair,
    document_for,
    is_did,
    resolve_kid,
    split_did_url,
)
from dsip.core.jsonwire import compact_dumps, loads_strict
from dsip.core.jws import decode_header, encode_frame, parse_envelope, parse_frame, sign_bytes
from dsip.core.payloads.schema import validate_payload
from dsip.core.ulid import is_ulid, new_ulid, ulid_time_ms
from dsip.core.version import Supported, check_version
from dsip.errors import DsipError, EnvelopeError, PayloadError, TransportError

__all__ = [
    "DEFAULT_TTL",
    "HELD_TYPES",
    "REPLAY_WINDOW",
    "ReplayStore",
    "Signed",
    "Verified",
    "Verifier",
    "check_decoded",
    "decode_jose",
    "make_payload",
    "sign_envelope",
]

REPLAY_WINDOW = 300  # §12.9, both directions
ULID_TOLERANCE_MS = 300_000  # §20.6
DEFAULT_TTL = 30  # §12.9 invite validity; our default for every message we send
# Types a relay legitimately holds for an offline recipient (§13.3, §19.4, sealed-envelope/1.0):
# delivered after the hold, their issued_at may be older than the replay window. They are
# accepted until expires_at (lifetime at most MAX_HOLD_S) and their ids remembered as long.
HELD_TYPES = frozenset({"introduction", "sealed", "msg"})
MAX_HOLD_S = 7 * 86_400
_CORE_STR = ("type", "id", "from")
_CORE_INT = ("issued_at", "expires_at")
# Stages 7–11 failures on a hello are answered with transport.hello-rejected (§15.4).
_HELLO_REJECTED = frozenset(
    {
        "signer-mismatch",
        "delegation-invalid",
        "delegation-expired",
        "delegation-capability",
        "expiry-order",
        "replay-window",
        "expired",
        "duplicate-id",
        "ulid-issued-at-mismatch",
    }
)


class ReplayStore:
    """Message ids seen within the replay window (§12.9).

    Memory is bounded: an id is kept only until its ``issued_at`` leaves the window (after
    that the window check rejects a replay on its own), and at most ``capacity`` ids are
    held. When full of live ids the store refuses new envelopes (``transport.rate-limited``)
    rather than forget an id early, which would re-open a replay.
    """

    def __init__(self, capacity: int = 262_144, window: int = REPLAY_WINDOW) -> None:
        self.capacity = capacity
        self.window = window
        self._ids: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def purge(self, now: int) -> None:
        heap, ids = self._heap, self._ids
        while heap and heap[0][0] < now:
            forget_at, msg_id = heapq.heappop(heap)
            if ids.get(msg_id) == forget_at:
                del ids[msg_id]

    def check(self, msg_id: str, now: int) -> None:
        self.purge(now)
        if msg_id in self._ids:
            raise EnvelopeError(f"message id {msg_id} was already seen", code="duplicate-id")
        if len(self._ids) >= self.capacity:
            raise EnvelopeError(
                "replay store is full of live ids; retry later",
                code="replay-store-full",
                reason="transport.rate-limited",
            )

    def add(self, msg_id: str, issued_at: int, *, keep_until: int | None = None) -> None:
        """Remember ``msg_id`` until its ``issued_at`` leaves the window, or ``keep_until``
        for held types (which stay acceptable until they expire)."""
        forget_at = max(issued_at + self.window, keep_until or 0)
        self._ids[msg_id] = forget_at
        heapq.heappush(self._heap, (forget_at, msg_id))


@dataclass(frozen=True)
class Signed:
    """A signed object after stages 1–3, independent of its encoding (JOSE or COSE).

    ``wire`` is the exact form to forward unchanged (a relay never re-encodes);
    ``decode_payload`` is the encoding's strict payload parser, returning
    ``(value, saw_float)`` and raising ``payload-not-utf8``/``payload-not-json``.
    """

    encoding: str  # "jose" | "cose"
    kid: str
    header: Mapping[str, Any]
    signing_input: bytes
    signature: bytes
    payload_bytes: bytes
    decode_payload: Callable[[bytes], tuple[Any, bool]]
    wire: str | bytes
    encoded_size: int


def decode_jose(envelope: Mapping[str, Any] | bytes | str) -> Signed:
    """Stages 1–3 for DSIP-JOSE: frame cap, envelope shape, protected header."""
    if isinstance(envelope, (bytes, str)):
        obj = parse_frame(envelope)  # stages 1–2 (size cap, strict JSON)
        wire: str | bytes = envelope
        size = len(envelope) if isinstance(envelope, bytes) else len(envelope.encode())
    else:
        obj, wire, size = envelope, "", 0
    raw = parse_envelope(obj)  # stage 2
    header = decode_header(raw)  # stage 3
    if not wire:
        wire = encode_frame(raw.as_dict())
        size = len(wire)
    return Signed(
        encoding="jose",
        kid=header["kid"],
        header=header,
        signing_input=raw.signing_input,
        signature=raw.signature_bytes,
        payload_bytes=raw.payload_bytes,
        decode_payload=loads_strict,
        wire=wire,
        encoded_size=size,
    )


@dataclass(frozen=True)
class Verified:
    """An envelope that passed every stage."""

    type: str
    payload: dict[str, Any]
    kid: str
    signer: str  # the DID of the kid
    identity: str  # the DID the signer acts for: ``from``, or ``on_behalf_of`` on hello
    signed: Signed
    effective: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return str(self.payload["id"])

    @property
    def header(self) -> Mapping[str, Any]:
        return self.signed.header

    @property
    def wire(self) -> str | bytes:
        """The exact bytes/text received, for forwarding unchanged."""
        return self.signed.wire


class Verifier:
    """Stateful only in its duplicate-id store and caches; everything else is per call."""

    def __init__(
        self,
        documents: DocumentSource | None = None,
        *,
        delegations: Iterable[Mapping[str, Any]] = (),
        replay: ReplayStore | None = None,
        supported: Supported | None = None,
    ) -> None:
        self.documents = documents
        self.delegations: list[Mapping[str, Any]] = list(delegations)
        self.replay = replay if replay is not None else ReplayStore()
        self.supported = supported or Supported()
        self._delegation_verifier = DelegationVerifier(documents)

    def add_delegation(self, envelope: Mapping[str, Any]) -> None:
        self.delegations.append(envelope)

    def verify(
        self,
        envelope: Mapping[str, Any] | bytes | str | Signed,
        *,
        now: int,
        hello_verified: bool | None = None,
        context: semantic.SemanticContext | None = None,
        record: bool = True,
    ) -> Verified:
        """Run stages 1–14; raise the first failing stage's ``DsipError``.

        ``hello_verified=False`` means the transport binding has no verified hello yet
        (stage 11b); ``None`` skips that check (not a transport). ``record=False``
        verifies without remembering the id (a dry run).
        """
        signed = envelope if isinstance(envelope, Signed) else decode_jose(envelope)
        return self.verify_signed(
            signed, now=now, hello_verified=hello_verified, context=context, record=record
        )

    def verify_signed(
        self,
        signed: Signed,
        *,
        now: int,
        hello_verified: bool | None = None,
        context: semantic.SemanticContext | None = None,
        record: bool = True,
    ) -> Verified:
        """Stages 3 (kid syntax) to 14 on an already-decoded signed object."""
        kid = signed.kid
        signer, _ = split_did_url(kid)  # stage 3: kid-invalid
        try:
            method = resolve_kid(kid, self.documents)  # stage 4
        except DsipError as exc:
            raise EnvelopeError(exc.message, code="kid-unresolvable") from None
        if not method.verify(signed.signature, signed.signing_input):  # stage 5
            raise EnvelopeError(
                "Ed25519 signature does not verify over the signing input", code="signature-invalid"
            )
        header = signed.header
        payload = _decode_payload(signed)  # stage 6
        msg_type: str = payload["type"]
        try:
            identity = self._bind_identity(signer, payload, header, now)  # stage 7
            iat, exp = payload["issued_at"], payload["expires_at"]
            if exp <= iat:  # stage 8
                raise EnvelopeError(
                    f"expires_at {exp} is not after issued_at {iat}", code="expiry-order"
                )
            held = msg_type in HELD_TYPES and exp - iat <= MAX_HOLD_S
            if not (iat if held else now - REPLAY_WINDOW) <= iat <= now + REPLAY_WINDOW:  # stage 9
                raise EnvelopeError(
                    f"issued_at {iat} is outside now {now} ± {REPLAY_WINDOW} s",
                    code="replay-window",
                )
            if exp < now:
                raise EnvelopeError(
                    f"expired at {exp}, now {now}",
                    code="expired",
                    reason="session.expired" if msg_type == "invite" else None,
                )
            self.replay.check(payload["id"], now)  # stage 10
            if abs(ulid_time_ms(payload["id"]) - iat * 1000) > ULID_TOLERANCE_MS:  # stage 11
                raise EnvelopeError(
                    "ULID time and issued_at differ by more than 300 s",
                    code="ulid-issued-at-mismatch",
                )
        except EnvelopeError as exc:
            if msg_type == "hello" and exc.code in _HELLO_REJECTED:
                exc.reason = "transport.hello-rejected"
            raise
        if hello_verified is False and msg_type != "hello":  # stage 11b
            raise TransportError(
                "session traffic before a verified hello",
                code="hello-required",
                reason="transport.hello-required",
            )
        ctx = context or semantic.SemanticContext()
        if msg_type == "introduction" and ctx.encoded_size is None:
            ctx = replace(ctx, encoded_size=signed.encoded_size)
        if msg_type == "key-rotation":
            doc = document_for(signer, self.documents)
            ctx = replace(ctx, signer_kid=kid, recovery_kids=doc.recovery if doc else None)
        interp = check_decoded(payload, self.supported, ctx)  # stages 12–14
        if record:
            keep = payload["expires_at"] if msg_type in HELD_TYPES else None
            self.replay.add(payload["id"], payload["issued_at"], keep_until=keep)
        return Verified(
            type=msg_type,
            payload=payload,
            kid=kid,
            signer=signer,
            identity=identity,
            signed=signed,
            effective=interp.effective,
            warnings=interp.warnings,
        )

    def _bind_identity(
        self, signer: str, payload: dict[str, Any], header: Mapping[str, Any], now: int
    ) -> str:
        sender: str = payload["from"]
        candidates: Sequence[Mapping[str, Any]] = [
            *header.get("delegations", ()),
            *self.delegations,
        ]
        if signer != sender:
            self._delegation_verifier.bind(signer, sender, candidates, now=now)
        if payload["type"] == "hello" and "on_behalf_of" in payload:
            principal = payload["on_behalf_of"]
            if not is_did(principal):
                raise PayloadError("hello on_behalf_of is not a DID", code="payload-shape")
            if principal != sender:
                self._delegation_verifier.bind(sender, principal, candidates, now=now)
            return str(principal)
        return sender


def check_decoded(
    payload: Mapping[str, Any], supported: Supported, context: semantic.SemanticContext
) -> semantic.Interpretation:
    """Stages 12–14 on a decoded payload: version, schema, semantics; then interpret."""
    check_version(payload.get("dsip"), supported)  # stage 12
    validate_payload(payload)  # stage 13
    semantic.check_semantics(payload, context)  # stage 14
    return semantic.interpret(payload)


def _decode_payload(signed: Signed) -> dict[str, Any]:
    """Stage 6: UTF-8 → JSON object → no floats → core fields with the right primitive types."""
    body, saw_float = signed.decode_payload(signed.payload_bytes)
    if not isinstance(body, dict):
        raise PayloadError("payload is not a JSON object", code="payload-not-json")
    if saw_float:
        raise PayloadError("payload contains a non-integer number (§10.3)", code="payload-float")
    if not isinstance(body.get("dsip"), dict):
        raise PayloadError("payload lacks the dsip version block", code="payload-shape")
    for k in _CORE_STR:
        if not isinstance(body.get(k), str):
            raise PayloadError(
                f"payload field {k!r} is missing or not a string", code="payload-shape"
            )
    for k in _CORE_INT:
        if type(body.get(k)) is not int:
            raise PayloadError(
                f"payload field {k!r} is missing or not an integer", code="payload-shape"
            )
    if not is_ulid(body["id"]):
        raise PayloadError(f"id {body['id'][:40]!r} is not a ULID", code="payload-shape")
    if not is_did(body["from"]):
        raise PayloadError(f"from {body['from'][:60]!r} is not a DID", code="payload-shape")
    return body


# --- construction -----------------------------------------------------------------------


def make_payload(
    msg_type: str,
    *,
    sender: str,
    now: int,
    ttl: int = DEFAULT_TTL,
    supported: Supported | None = None,
    profiles: Sequence[str] | None = None,
    msg_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A payload with the core fields filled: version block, ULID id from ``now``, times."""
    sup = supported or Supported()
    if profiles is None:
        profiles = [] if msg_type == "hello" else ["interactive-media/1.0"]
    payload: dict[str, Any] = {
        "dsip": sup.as_block(profiles=profiles),
        "type": msg_type,
        "id": msg_id or new_ulid(now * 1000),
        "from": sender,
    }
    payload.update(fields)
    payload["issued_at"] = now
    payload["expires_at"] = now + ttl
    return payload


def sign_envelope(
    payload: Mapping[str, Any],
    key: KeyPair,
    *,
    delegations: Sequence[Mapping[str, str]] = (),
    extra_header: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Serialize ``payload`` compactly and sign it with ``key`` (kid = ``key.kid``)."""
    return sign_bytes(
        compact_dumps(payload), key, delegations=delegations, extra_header=extra_header
    )
