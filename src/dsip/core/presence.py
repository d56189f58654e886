"""Presence records, reachability hints and their DHT keys (seed §5, §21.C; v0.7 §8.3).

Two signed record types locate a DID without a registrar, both plain DSIP envelopes:

* ``presence`` (dsip profile presence/1.0, ``presence.schema.json``): the seed's presence
  record — endpoints by kind (libp2p, wss, quic), optional coarse geohash, ``seq``,
  60–300 s lifetime. Key: ``sha256("dsip-presence:" + DID)``.
* ``reachability-hint`` (the v0.7 DHT Hints Profile): wss endpoints only. Key: the
  multihash ``sha2-256`` of the normalized DID (profile §3).

Both are *hints*, never authority (§8.1): a reader verifies every value it gets — signature,
delegation (the signer must be the subject or a device it delegated), expiry, replay window,
schema — and picks the winner by §8.3: higher ``seq`` wins, expired records count for
nothing, identical records are a no-op, same ``seq`` with different content keeps the record
already held and raises a ``same-seq-live`` conflict warning.

Region buckets (``sha256("dsip-presence:geo:" + geohash_prefix)``) must hold many DIDs, and a
DHT key holds one value. The bucket value is therefore a *merged* document — a JSON object
``{"type": "dsip-region/1", "entries": [frame, …]}`` — that any node can rebuild from the
signed entries alone: ``merge_region`` keeps, per subject, the §8.3 winner among valid,
unexpired presence records whose geohash starts with the bucket's prefix, newest first,
within ``REGION_MAX_ENTRIES`` and the 64 KiB value cap. No entry can be forged or
altered (each stays individually signed); a storing node can only *drop* entries, which
republication repairs — the same power it has over any value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsip.core.envelope import ReplayStore, Verified, Verifier, make_payload, sign_envelope
from dsip.core.identity import DocumentSource, KeyPair
from dsip.core.jsonwire import loads_strict
from dsip.core.jws import MAX_FRAME_BYTES, encode_frame
from dsip.errors import DsipError, EnvelopeError, SemanticError

__all__ = [
    "PRESENCE_TTL_MAX",
    "PRESENCE_TTL_MIN",
    "REGION_MAX_ENTRIES",
    "Judgement",
    "PresenceRecord",
    "RecordValidator",
    "hint_key",
    "judge",
    "make_presence",
    "presence_key",
    "region_key",
    "region_keys_for",
]

PRESENCE_TTL_MIN = 60
PRESENCE_TTL_MAX = 300
REGION_MAX_ENTRIES = 64
REGION_TYPE = "dsip-region/1"
_GEOHASH_MAX = 6


def presence_key(did: str) -> bytes:
    """seed §21.C: ``sha256("dsip-presence:" + DID)``."""
    return hashlib.sha256(b"dsip-presence:" + did.encode("utf-8")).digest()


def region_key(geohash_prefix: str) -> bytes:
    """seed §21.C: ``sha256("dsip-presence:geo:" + geohash_prefix)``."""
    return hashlib.sha256(b"dsip-presence:geo:" + geohash_prefix.encode("ascii")).digest()


def region_keys_for(geohash: str) -> list[tuple[str, bytes]]:
    """Every (prefix, key) bucket a geohash belongs to, coarsest first."""
    return [
        (geohash[:n], region_key(geohash[:n]))
        for n in range(1, min(len(geohash), _GEOHASH_MAX) + 1)
    ]


def hint_key(did: str) -> bytes:
    """Hints profile §3: multihash sha2-256 (0x12 0x20 ‖ digest) of the normalized DID."""
    method, sep, rest = did.partition(":")
    meth2, sep2, ident = rest.partition(":")
    normalized = f"{method.lower()}{sep}{meth2.lower()}{sep2}{ident}"
    return b"\x12\x20" + hashlib.sha256(normalized.encode("utf-8")).digest()


@dataclass(frozen=True)
class PresenceRecord:
    """A verified presence record or hint."""

    verified: Verified
    frame: str

    @property
    def subject(self) -> str:
        return str(self.verified.payload["subject"])

    @property
    def seq(self) -> int:
        return int(self.verified.payload["seq"])

    @property
    def expires_at(self) -> int:
        return int(self.verified.payload["expires_at"])

    @property
    def endpoints(self) -> Any:
        return self.verified.payload["endpoints"]

    @property
    def geohash(self) -> str | None:
        geo = self.verified.payload.get("geo")
        return str(geo["geohash"]) if isinstance(geo, Mapping) else None

    def content(self) -> dict[str, Any]:
        return dict(self.verified.payload)


@dataclass(frozen=True)
class Judgement:
    """§8.3 outcome of an incoming record against the one already held."""

    winner: str  # "input" | "existing"
    conflict: str  # "none" | "newer-seq" | "older-seq" | "same-seq-live"


def make_presence(
    key: KeyPair,
    *,
    subject: str | None = None,
    endpoints: Mapping[str, Sequence[str]],
    seq: int,
    now: int,
    ttl: int = PRESENCE_TTL_MAX,
    geohash: str | None = None,
    geo_method: str = "gps",
    state: str | None = None,
    delegations: Sequence[Mapping[str, str]] = (),
) -> str:
    """A signed presence record frame (by the subject's key or a delegated device)."""
    if not PRESENCE_TTL_MIN <= ttl <= PRESENCE_TTL_MAX:
        raise ValueError(f"presence TTL must be {PRESENCE_TTL_MIN}..{PRESENCE_TTL_MAX} s")
    who = subject or key.did
    fields: dict[str, Any] = {
        "subject": who,
        "endpoints": {k: list(v) for k, v in endpoints.items()},
        "seq": seq,
    }
    if state is not None:
        fields["state"] = state
    if geohash is not None:
        fields["geo"] = {"geohash": geohash[:_GEOHASH_MAX], "method": geo_method, "ts": now}
    payload = make_payload("presence", sender=who, now=now, ttl=ttl, profiles=[], **fields)
    return encode_frame(sign_envelope(payload, key, delegations=delegations))


def judge(incoming: PresenceRecord, existing: PresenceRecord | None, now: int) -> Judgement:
    """§8.3 between a verified incoming record and the one held (``None`` or expired: input wins)."""
    if existing is None or existing.expires_at < now:
        return Judgement("input", "none")
    if incoming.seq > existing.seq:
        return Judgement("input", "newer-seq")
    if incoming.seq < existing.seq:
        return Judgement("existing", "older-seq")
    if incoming.content() == existing.content():
        return Judgement("existing", "none")
    return Judgement("existing", "same-seq-live")


class RecordValidator:
    """The validator every DHT node runs, and every reader re-runs (§8.3, hints profile §4).

    Verification uses the full envelope pipeline without remembering message ids: the same
    record is legitimately seen many times on an overlay.
    """

    def __init__(
        self,
        documents: DocumentSource | None = None,
        *,
        delegations: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.verifier = Verifier(documents, delegations=delegations, replay=_NoReplayStore())

    # --- single records -----------------------------------------------------------------

    def verify(self, frame: str | bytes | Mapping[str, Any], *, now: int) -> PresenceRecord:
        """Verify one presence record or hint; raises ``DsipError`` with the verdict code."""
        v = self.verifier.verify(frame, now=now, record=False)
        if v.type not in ("presence", "reachability-hint"):
            raise SemanticError(f"a {v.type} is not a presence record or hint", code="unknown-type")
        subject = v.payload.get("subject")
        if subject != v.identity:
            raise SemanticError(
                f"record for {str(subject)[:80]} is signed for {v.identity}",
                code="hint-subject-mismatch",
            )
        if v.type == "presence":
            ttl = int(v.payload["expires_at"]) - int(v.payload["issued_at"])
            if not PRESENCE_TTL_MIN <= ttl <= PRESENCE_TTL_MAX:
                raise SemanticError(
                    f"presence lifetime {ttl} s is outside {PRESENCE_TTL_MIN}..{PRESENCE_TTL_MAX}",
                    code="presence-lifetime",
                )
        text = (
            frame
            if isinstance(frame, str)
            else frame.decode()
            if isinstance(frame, bytes)
            else encode_frame(frame)
        )
        return PresenceRecord(v, text)

    def validate(self, key: bytes, value: bytes, *, now: int) -> None:
        """DHT validator: refuse any value that is not a valid record *for this key*."""
        if len(value) > MAX_FRAME_BYTES:
            raise EnvelopeError(
                f"value of {len(value)} bytes exceeds the cap",
                code="frame-too-large",
                reason="transport.envelope-too-large",
            )
        if len(key) not in (32, 34):
            raise EnvelopeError(
                f"key of {len(key)} bytes is not a dsip presence key", code="key-invalid"
            )
        if self._is_region(value):
            self._region_entries(key, value, now=now, strict=True)
            return
        record = self.verify(value, now=now)
        if key != self.key_for(record):
            raise SemanticError("record is stored under another DID's key", code="key-mismatch")

    def key_for(self, record: PresenceRecord) -> bytes:
        return (
            presence_key(record.subject)
            if record.verified.type == "presence"
            else hint_key(record.subject)
        )

    def select(self, key: bytes, values: Sequence[bytes], *, now: int) -> int:
        """DHT selector: index of the §8.3 winner among the valid values (``-1`` if none is)."""
        best: tuple[int, PresenceRecord] | None = None
        for i, value in enumerate(values):
            try:
                if self._is_region(value):
                    continue
                record = self.verify(value, now=now)
                if key != self.key_for(record):
                    continue
            except DsipError:
                continue
            if best is None or judge(record, best[1], now).winner == "input":
                best = (i, record)
        if best is None:
            regions = [i for i, v in enumerate(values) if self._is_region(v)]
            return regions[0] if regions else -1
        return best[0]

    def best(self, key: bytes, values: Sequence[bytes], *, now: int) -> PresenceRecord | None:
        """The reader's choice: re-verify everything returned, keep the §8.3 winner."""
        i = self.select(key, values, now=now)
        if i < 0 or self._is_region(values[i]):
            return None
        return self.verify(values[i], now=now)

    # --- region buckets -----------------------------------------------------------------

    @staticmethod
    def _is_region(value: bytes) -> bool:
        return value[:40].lstrip().startswith(b'{"type":"' + REGION_TYPE.encode())

    def _region_entries(
        self, key: bytes, value: bytes, *, now: int, strict: bool
    ) -> list[PresenceRecord]:
        try:
            doc, _ = loads_strict(value, what="region bucket")
        except DsipError as exc:
            raise EnvelopeError(exc.message, code="region-invalid") from None
        entries = (
            doc.get("entries") if isinstance(doc, dict) and doc.get("type") == REGION_TYPE else None
        )
        if not isinstance(entries, list) or len(entries) > REGION_MAX_ENTRIES:
            raise EnvelopeError("region bucket is malformed or too large", code="region-invalid")
        out = []
        for frame in entries:
            try:
                if not isinstance(frame, str):
                    raise EnvelopeError("region entry is not a frame", code="region-invalid")
                rec = self.verify(frame, now=now)
                gh = rec.geohash
                if (
                    rec.verified.type != "presence"
                    or gh is None
                    or key not in {k for _, k in region_keys_for(gh)}
                ):
                    raise SemanticError("entry does not belong to this region", code="key-mismatch")
            except DsipError:
                if strict:
                    raise
                continue
            out.append(rec)
        return out

    def region_members(
        self, key: bytes, values: Sequence[bytes], *, now: int
    ) -> list[PresenceRecord]:
        """Every valid entry found under a region key (readers merge all values found)."""
        merged = self.merge_region(key, values, now=now)
        return self._region_entries(key, merged, now=now, strict=False)

    def merge_region(self, key: bytes, values: Sequence[bytes], *, now: int) -> bytes:
        """Merge region values (bucket documents or single presence frames) into one bucket."""
        winners: dict[str, PresenceRecord] = {}
        for value in values:
            if self._is_region(value):
                records = self._region_entries(key, value, now=now, strict=False)
            else:
                try:
                    rec = self.verify(value, now=now)
                except DsipError:
                    continue
                gh = rec.geohash
                if gh is None or key not in {k for _, k in region_keys_for(gh)}:
                    continue
                records = [rec]
            for rec in records:
                held = winners.get(rec.subject)
                if held is None or judge(rec, held, now).winner == "input":
                    winners[rec.subject] = rec
        ordered = sorted(
            winners.values(), key=lambda r: (-int(r.verified.payload["issued_at"]), r.subject)
        )
        entries: list[str] = []
        size = 40
        for rec in ordered[:REGION_MAX_ENTRIES]:
            if size + len(rec.frame) + 3 > MAX_FRAME_BYTES:
                break
            entries.append(rec.frame)
            size += len(rec.frame) + 3
        return json.dumps({"type": REGION_TYPE, "entries": entries}, separators=(",", ":")).encode()


class _NoReplayStore(ReplayStore):
    """Overlay records are re-observed by design: no duplicate-id refusals, no memory."""

    def check(self, msg_id: str, now: int) -> None:
        return None

    def add(self, msg_id: str, issued_at: int, *, keep_until: int | None = None) -> None:
        return None
