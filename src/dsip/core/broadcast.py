"""Verified broadcast on the receiving side: publication records and provenance (§22).

A receiver gets a ``publish`` envelope (the publication record, §22.1) and, alongside it,
zero or more ``provenance`` envelopes — relays' and transcoders' signed statements (§22.3).
:func:`verify_broadcast` runs every envelope through the one :class:`~dsip.core.envelope.
Verifier` pipeline (same stages, same verdict codes) and then applies the profile's rules:

* **Publisher binding (§22.1, spec-gap 18).** ``publisher`` must be the verified identity
  (``publisher-mismatch``) and ``stream_id`` the publisher DID or a colon-suffixed
  extension of it (``stream-id-namespace``). Either failure rejects the record.
* **Statements (§22.3).** Each statement gets its own verdict; a bad statement never
  sinks the publication. After the envelope pipeline: ``processor`` must be the verified
  identity (``provenance-processor-mismatch``), ``original_publication`` must be this record
  (``provenance-unknown-publication``), ``original_stream`` its stream
  (``provenance-stream-mismatch``), and ``input_variant`` one it advertises
  (``provenance-variant-unknown``). A statement the record's ``policy`` forbids still
  verifies and carries a ``policy_violation``.
* **Variant selection (§22.1).** The first variant, in the publisher's order, whose codec
  and transport the receiver supports.
* **Integrity display (§22.2, spec-gap 20).** The selected variant's ``integrity`` overrides
  the record's; absent or unknown tokens mean ``metadata-only`` (the weaker claim). A
  verified ``transcode`` statement for the stream makes the display ``derivative-bound``.

The same binding rules serve the subscription authority (:mod:`dsip.core.subscription`)
through :func:`publication_problem` and :func:`provenance_problem`, which name the failing
rule instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from dsip.core.envelope import Signed, Verified, Verifier
from dsip.errors import DsipError

__all__ = [
    "DERIVATIVE_BOUND",
    "FORBIDDING",
    "INTEGRITY_MODES",
    "METADATA_ONLY",
    "PROVENANCE_OPERATIONS",
    "BroadcastError",
    "BroadcastView",
    "Capabilities",
    "Display",
    "ProvenanceStatement",
    "Publication",
    "StatementVerdict",
    "Variant",
    "display_for",
    "effective_integrity",
    "in_namespace",
    "policy_violation",
    "provenance_problem",
    "publication_problem",
    "verify_broadcast",
    "verify_publication",
    "verify_statement",
]

METADATA_ONLY: Final = "metadata-only"
DERIVATIVE_BOUND: Final = "derivative-bound"
#: Registry ``dsip-integrity-mode`` modes Core v1.0 specifies (§22.2). The reserved
#: ``manifest-bound``/``segment-bound``/``frame-bound`` are not: they display as metadata-only.
INTEGRITY_MODES: Final = frozenset({METADATA_ONLY, DERIVATIVE_BOUND})
#: Registry ``dsip-provenance-operation`` (§22.3). Only ``transcode`` is "transcoded by";
#: every other operation, unknown ones included, is "delivered by".
PROVENANCE_OPERATIONS: Final = frozenset({"transcode", "relay", "repackage"})
TRANSCODE: Final = "transcode"
#: §16.4 policy values that forbid the activity they are declared for.
FORBIDDING: Final = frozenset({"forbidden", "denied"})


class BroadcastError(DsipError):
    """A verified envelope breaks a §22 rule (publisher binding, wrong message type)."""

    default_code = "broadcast-invalid"
    default_reason = "transport.routing-refused"


# --- records ------------------------------------------------------------------------------


def _text(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    return value if isinstance(value, str) else ""


def effective_integrity(token: object) -> str:
    """§22.2: an absent or unrecognised mode is ``metadata-only``, the weaker claim."""
    return token if isinstance(token, str) and token in INTEGRITY_MODES else METADATA_ONLY


@dataclass(frozen=True)
class Variant:
    """One delivery variant of a publication (§22.1)."""

    id: str
    media: tuple[str, ...]
    codec: str
    transport: str
    uri: str
    integrity: str | None = None  # the declared per-variant override, as sent

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Variant:
        media = m.get("media")
        integrity = m.get("integrity")
        return cls(
            id=_text(m, "id"),
            media=tuple(x for x in media if isinstance(x, str)) if isinstance(media, list) else (),
            codec=_text(m, "codec"),
            transport=_text(m, "transport"),
            uri=_text(m, "uri"),
            integrity=integrity if isinstance(integrity, str) else None,
        )


@dataclass(frozen=True)
class Capabilities:
    """What the receiver can consume: registry codec and transport ids (§16.2)."""

    codecs: frozenset[str] = frozenset()
    transports: frozenset[str] = frozenset()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Capabilities:
        return cls(
            codecs=frozenset(str(c) for c in m.get("codecs", ())),
            transports=frozenset(str(t) for t in m.get("transports", ())),
        )

    def supports(self, variant: Variant) -> bool:
        return variant.codec in self.codecs and variant.transport in self.transports


@dataclass(frozen=True)
class Publication:
    """A publication record (§22.1) as decoded from a ``publish`` payload."""

    id: str
    publisher: str
    stream_id: str
    state: str
    variants: tuple[Variant, ...]
    integrity: str | None = None  # the declared record-level mode, as sent
    title: str | None = None
    policy: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Publication:
        variants = payload.get("variants")
        policy = payload.get("policy")
        integrity = payload.get("integrity")
        title = payload.get("title")
        return cls(
            id=_text(payload, "id"),
            publisher=_text(payload, "publisher"),
            stream_id=_text(payload, "stream_id"),
            state=_text(payload, "state"),
            variants=tuple(Variant.from_mapping(v) for v in variants if isinstance(v, Mapping))
            if isinstance(variants, list)
            else (),
            integrity=integrity if isinstance(integrity, str) else None,
            title=title if isinstance(title, str) else None,
            policy=MappingProxyType(
                {k: v for k, v in policy.items() if isinstance(k, str) and isinstance(v, str)}
            )
            if isinstance(policy, Mapping)
            else MappingProxyType({}),
        )

    def variant(self, variant_id: str) -> Variant | None:
        return next((v for v in self.variants if v.id == variant_id), None)

    def select_variant(self, capabilities: Capabilities) -> Variant | None:
        """§22.1: variant order is the publisher's preference; the first one we can use."""
        return next((v for v in self.variants if capabilities.supports(v)), None)

    def integrity_of(self, variant: Variant | None) -> str:
        """§22.2: the variant's own ``integrity`` overrides the record's."""
        if variant is not None and variant.integrity is not None:
            return effective_integrity(variant.integrity)
        return effective_integrity(self.integrity)


@dataclass(frozen=True)
class ProvenanceStatement:
    """A verified relay/transcoder statement (§22.3)."""

    id: str
    processor: str
    operation: str
    original_stream: str
    original_publication: str
    input_variant: str
    output_variant: str
    output_uri: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ProvenanceStatement:
        return cls(
            id=_text(payload, "id"),
            processor=_text(payload, "processor"),
            operation=_text(payload, "operation"),
            original_stream=_text(payload, "original_stream"),
            original_publication=_text(payload, "original_publication"),
            input_variant=_text(payload, "input_variant"),
            output_variant=_text(payload, "output_variant"),
            output_uri=_text(payload, "output_uri") or None,
        )

    @property
    def transcoded(self) -> bool:
        return self.operation == TRANSCODE


@dataclass(frozen=True)
class StatementVerdict:
    """The verdict on one provenance envelope: a statement, or why it was rejected."""

    statement: ProvenanceStatement | None = None
    code: str | None = None  # set exactly when rejected
    reason: str | None = None
    policy_violation: str | None = None
    verified: Verified | None = None

    @property
    def accepted(self) -> bool:
        return self.statement is not None

    @property
    def integrity_mode(self) -> str | None:
        """An accepted statement binds a derivative to the original record (§22.2)."""
        return DERIVATIVE_BOUND if self.accepted else None


@dataclass(frozen=True)
class Display:
    """What a receiver shows about a stream (§22.3 "Receivers can then display")."""

    original_publisher: str
    delivered_by: tuple[str, ...]
    transcoded_by: tuple[str, ...]
    integrity_mode: str


@dataclass(frozen=True)
class BroadcastView:
    """A verified publication with its selected variant, statement verdicts and display."""

    verified: Verified
    publication: Publication
    selected_variant: Variant | None
    provenance: tuple[StatementVerdict, ...]
    display: Display


# --- rules shared with the authority -------------------------------------------------------


def in_namespace(stream_id: str, publisher: str) -> bool:
    """§22.1: a stream lives in its publisher's namespace — the DID itself or ``DID:…``."""
    return bool(publisher) and (stream_id == publisher or stream_id.startswith(publisher + ":"))


def publication_problem(payload: Mapping[str, Any], identity: str) -> str | None:
    """The §22.1 rule a ``publish``/``unpublish`` from verified ``identity`` breaks, if any."""
    publisher = _text(payload, "publisher")
    if publisher != identity:
        return "publisher-mismatch"
    if not in_namespace(_text(payload, "stream_id"), publisher):
        return "stream-id-namespace"
    return None


def provenance_problem(
    statement: ProvenanceStatement, identity: str, publication: Publication | None
) -> str | None:
    """The §22.3 rule a statement from verified ``identity`` breaks against the record the
    receiver verified (``None``: it holds no record by that id), in the spec's order."""
    if statement.processor != identity:
        return "provenance-processor-mismatch"
    if publication is None or publication.id != statement.original_publication:
        return "provenance-unknown-publication"
    if publication.stream_id != statement.original_stream:
        return "provenance-stream-mismatch"
    if publication.variant(statement.input_variant) is None:
        return "provenance-variant-unknown"
    return None


def policy_violation(statement: ProvenanceStatement, policy: Mapping[str, str]) -> str | None:
    """§22.3: surfaced, never rejected — a forbidden transcode, or any forbidden
    redistribution. The transcoding ban is named first when both apply."""
    if statement.transcoded and policy.get("transcoding") in FORBIDDING:
        return "transcoding-forbidden"
    if policy.get("redistribution") in FORBIDDING:
        return "redistribution-forbidden"
    return None


# --- verification -------------------------------------------------------------------------

Envelope = Mapping[str, Any] | bytes | str | Signed


def verify_publication(verifier: Verifier, envelope: Envelope, *, now: int) -> Verified:
    """The envelope pipeline, then the §22.1 publisher binding. Raises ``DsipError``."""
    v = verifier.verify(envelope, now=now)
    if v.type != "publish":
        raise BroadcastError(f"expected a publish record, got {v.type}", code="unexpected-type")
    problem = publication_problem(v.payload, v.identity)
    if problem == "publisher-mismatch":
        raise BroadcastError(
            f"publisher {_text(v.payload, 'publisher')} is not the verified identity {v.identity}",
            code=problem,
        )
    if problem is not None:
        raise BroadcastError(
            f"stream_id {_text(v.payload, 'stream_id')} is not under its publisher's DID",
            code=problem,
        )
    return v


def verify_statement(
    verifier: Verifier, envelope: Envelope, publication: Publication, *, now: int
) -> StatementVerdict:
    """One provenance envelope against a verified publication; never raises ``DsipError``."""
    try:
        v = verifier.verify(envelope, now=now)
    except DsipError as exc:
        return StatementVerdict(code=exc.code, reason=exc.reason)
    if v.type != "provenance":
        return StatementVerdict(code="unexpected-type", reason=BroadcastError.default_reason)
    statement = ProvenanceStatement.from_payload(v.payload)
    problem = provenance_problem(statement, v.identity, publication)
    if problem is not None:
        return StatementVerdict(code=problem, reason=BroadcastError.default_reason, verified=v)
    return StatementVerdict(
        statement=statement,
        policy_violation=policy_violation(statement, publication.policy),
        verified=v,
    )


def display_for(
    publication: Publication, selected: Variant | None, verdicts: Iterable[StatementVerdict]
) -> Display:
    """§22.3 display: processors by role (each once, in statement order) and the mode."""
    delivered: list[str] = []
    transcoded: list[str] = []
    for verdict in verdicts:
        s = verdict.statement
        if s is None:
            continue
        bucket = transcoded if s.transcoded else delivered
        if s.processor not in bucket:
            bucket.append(s.processor)
    mode = DERIVATIVE_BOUND if transcoded else publication.integrity_of(selected)
    return Display(publication.publisher, tuple(delivered), tuple(transcoded), mode)


def verify_broadcast(
    verifier: Verifier,
    publication: Envelope,
    statements: Sequence[Envelope] = (),
    *,
    capabilities: Capabilities,
    now: int,
) -> BroadcastView:
    """Verify a publication record and its statements; raise only for the record."""
    v = verify_publication(verifier, publication, now=now)
    record = Publication.from_payload(v.payload)
    selected = record.select_variant(capabilities)
    verdicts = tuple(verify_statement(verifier, s, record, now=now) for s in statements)
    return BroadcastView(v, record, selected, verdicts, display_for(record, selected, verdicts))
