"""Prekey bundles (seed §8, §13): publish, hand out once, fetch and verify.

A bundle is a signed DSIP envelope of the dsip profile type ``prekey-bundle``
(``prekey-bundle.schema.json``): the device's identity key (its DID key, see
:mod:`dsip.messaging.ratchet`), one signed prekey with its signature, and a list of
one-time prekeys with ids. ``from`` is the identity the device acts for; the signer is the
device itself (directly, or delegated by the identity — the normal envelope rules, §7.4).

Where bundles live
------------------
* At the relay: :class:`PrekeyStore` (SQLite) keeps each device's latest bundle and one row
  per one-time prekey. :meth:`PrekeyStore.claim` hands out the stored bundle together with
  the id of *one* unclaimed one-time prekey, marked claimed in the same statement
  (``UPDATE … WHERE claimed_at IS NULL … RETURNING``), so each is handed out at most once
  even under concurrent claims from several connections or processes. When none is left
  the bundle is handed out alone and X3DH runs on the signed prekey only. The relay
  cannot re-sign anything: the client verifies the device's own signature on the bundle
  and checks that the claimed id is one the bundle lists.
* In the DID document: :func:`prekey_service` builds a ``DSIPPrekeyBundle`` service entry
  carrying bundles *without* one-time prekeys (a document is public and cached, so a
  one-time prekey there would be handed to everyone) and, optionally, the relay to claim
  one-time prekeys from (seed §13 step 1).

Verification (:func:`verify_prekey_bundle`): a bundle is a long-lived record, not a
message, so the envelope pipeline runs at the bundle's own ``issued_at`` (signature,
schema, ULID, delegation at issue) and freshness is judged against ``now`` separately:
not expired, not issued in the future, delegation still valid now. Then the binding:
the signer is the ``device`` the bundle names, its ``identity_key`` is the key that
signed the envelope, and the signed prekey's signature verifies under it. Any failure is
``prekey-invalid`` (reason ``policy.trust-insufficient``).

Replenishment: :func:`refresh_prekeys` (device side) tops the one-time prekeys up to a
target, rotates the signed prekey after a period (keeping the previous one for messages
in flight) and returns the signed bundle to publish; :meth:`PrekeyStore.publish` adds
new ids and never un-claims an id it already handed out.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import DelegationVerifier
from dsip.core.envelope import (
    REPLAY_WINDOW,
    ReplayStore,
    Verified,
    Verifier,
    decode_jose,
    make_payload,
    sign_envelope,
)
from dsip.core.identity import DidDocument, DocumentSource, KeyPair, resolve_kid
from dsip.core.jsonwire import loads_strict
from dsip.core.jws import encode_frame
from dsip.errors import DsipError
from dsip.messaging.ratchet import (
    MessagingError,
    OneTimePrekey,
    RemotePrekeys,
    SignedPrekey,
    generate_one_time_prekeys,
    generate_signed_prekey,
    verify_signed_prekey,
)
from dsip.messaging.session_store import SessionStore

__all__ = [
    "BUNDLE_TTL",
    "MAX_ONE_TIME_PREKEYS",
    "PREKEY_SERVICE_TYPE",
    "ClaimedBundle",
    "PrekeyBundle",
    "PrekeyStore",
    "bundles_from_document",
    "make_prekey_bundle",
    "prekey_service",
    "refresh_prekeys",
    "verify_prekey_bundle",
    "verify_record",
]

logger = logging.getLogger("dsip.messaging.prekeys")

BUNDLE_TTL: Final = 30 * 86_400
MAX_ONE_TIME_PREKEYS: Final = 200  # schema maxItems: keeps a bundle far below the 64 KiB frame
PREKEY_SERVICE_TYPE: Final = "DSIPPrekeyBundle"
SIGNED_PREKEY_PERIOD: Final = 7 * 86_400


def _invalid(message: str) -> MessagingError:
    return MessagingError(message, code="prekey-invalid", reason="policy.trust-insufficient")


# --- the bundle record -------------------------------------------------------------------


@dataclass(frozen=True)
class PrekeyBundle:
    """A verified bundle: who published it, its keys, and the exact signed frame."""

    identity: str
    device: str
    identity_key: bytes
    signed_prekey_id: int
    signed_prekey: bytes
    signed_prekey_signature: bytes
    one_time_prekeys: tuple[tuple[int, bytes], ...]
    envelope_id: str
    issued_at: int
    expires_at: int
    frame: str = field(repr=False)

    def remote(self, one_time_prekey_id: int | None = None) -> RemotePrekeys:
        """The public keys X3DH needs, with the one-time prekey ``one_time_prekey_id``
        (which must be one this bundle lists) or none."""
        otk: bytes | None = None
        if one_time_prekey_id is not None:
            otk = dict(self.one_time_prekeys).get(one_time_prekey_id)
            if otk is None:
                raise _invalid(f"one-time prekey {one_time_prekey_id} is not in the bundle")
        return RemotePrekeys(
            device=self.device,
            identity_key=self.identity_key,
            signed_prekey_id=self.signed_prekey_id,
            signed_prekey=self.signed_prekey,
            signed_prekey_signature=self.signed_prekey_signature,
            one_time_prekey_id=one_time_prekey_id,
            one_time_prekey=otk,
        )


def make_prekey_bundle(
    device: KeyPair,
    *,
    signed_prekey: SignedPrekey,
    one_time_prekeys: Sequence[OneTimePrekey | tuple[int, bytes]],
    now: int,
    identity: str | None = None,
    ttl: int = BUNDLE_TTL,
    delegations: Sequence[Mapping[str, str]] = (),
) -> dict[str, str]:
    """The signed ``prekey-bundle`` envelope of ``device`` (public halves only)."""
    if len(one_time_prekeys) > MAX_ONE_TIME_PREKEYS:
        raise ValueError(f"at most {MAX_ONE_TIME_PREKEYS} one-time prekeys per bundle")
    otks = [(k.id, k.public) if isinstance(k, OneTimePrekey) else k for k in one_time_prekeys]
    payload = make_payload(
        "prekey-bundle",
        sender=identity or device.did,
        now=now,
        ttl=ttl,
        profiles=[],
        device=device.did,
        identity_key=b64url_encode(device.public_key.public_bytes_raw()),
        signed_prekey={
            "id": signed_prekey.id,
            "key": b64url_encode(signed_prekey.public),
            "signature": b64url_encode(signed_prekey.signature),
        },
        one_time_prekeys=[{"id": i, "key": b64url_encode(k)} for i, k in otks],
    )
    own = identity is None or identity == device.did
    return sign_envelope(payload, device, delegations=() if own else delegations)


class _NoReplay(ReplayStore):
    """Records are re-read by design: no duplicate-id refusals, no memory."""

    def check(self, msg_id: str, now: int) -> None:
        return None

    def add(self, msg_id: str, issued_at: int, *, keep_until: int | None = None) -> None:
        return None


def verify_record(
    frame: str | bytes | Mapping[str, Any],
    *,
    now: int,
    documents: DocumentSource | None = None,
    delegations: Sequence[Mapping[str, Any]] = (),
    types: Iterable[str] = (),
) -> tuple[Verified, str]:
    """Verify a stored signed record at its own ``issued_at``, freshness against ``now``.

    Returns ``(Verified, frame text)``. Used for bundles and for messages a relay held
    past the §12.9 replay window; replay of those is the caller's job (seen-id table).
    Raises ``DsipError`` (the pipeline's codes, or ``record-expired``/``record-future``).
    """
    signed = decode_jose(frame if not isinstance(frame, Mapping) else dict(frame))
    body, _ = loads_strict(signed.payload_bytes)
    iat = body.get("issued_at") if isinstance(body, dict) else None
    if type(iat) is not int:
        iat = now  # the pipeline will name what is wrong with the payload
    verifier = Verifier(documents, delegations=delegations, replay=_NoReplay())
    v = verifier.verify(signed, now=iat, record=False)
    allowed = set(types)
    if allowed and v.type not in allowed:
        raise DsipError(f"a {v.type} is not a {'/'.join(sorted(allowed))}", code="unknown-type")
    if v.payload["expires_at"] < now:
        raise DsipError(f"{v.type} expired at {v.payload['expires_at']}", code="record-expired")
    if v.payload["issued_at"] > now + REPLAY_WINDOW:
        raise DsipError(f"{v.type} is issued in the future", code="record-future")
    if v.signer != v.identity:  # the delegation must still hold now, not only at issue
        candidates = [*signed.header.get("delegations", ()), *delegations]
        DelegationVerifier(documents).bind(v.signer, v.identity, candidates, now=now)
    text = signed.wire if isinstance(signed.wire, str) else signed.wire.decode()
    return v, text


def verify_prekey_bundle(
    frame: str | bytes | Mapping[str, Any],
    *,
    now: int,
    documents: DocumentSource | None = None,
    delegations: Sequence[Mapping[str, Any]] = (),
) -> PrekeyBundle:
    """Verify a bundle and its binding to the DID (module docstring); ``prekey-invalid``."""
    try:
        v, text = verify_record(
            frame, now=now, documents=documents, delegations=delegations, types=("prekey-bundle",)
        )
        p = v.payload
        if p["device"] != v.signer:
            raise _invalid(f"bundle of {p['device']} is signed by {v.signer}")
        signer_key = resolve_kid(v.kid, documents).raw_key
        identity_key = b64url_decode(p["identity_key"], what="identity_key")
        if identity_key != signer_key:
            raise _invalid("bundle identity key is not the key that signed the bundle")
        spk = p["signed_prekey"]
        spk_pub = b64url_decode(spk["key"], what="signed_prekey.key")
        spk_sig = b64url_decode(spk["signature"], what="signed_prekey.signature")
        if not verify_signed_prekey(identity_key, spk_pub, spk_sig):
            raise _invalid("signed prekey signature does not verify under the DID key")
        otks = tuple(
            (int(k["id"]), b64url_decode(k["key"], what="one_time_prekeys.key"))
            for k in p["one_time_prekeys"]
        )
        if len({i for i, _ in otks}) != len(otks):
            raise _invalid("one-time prekey ids repeat")
    except MessagingError:
        raise
    except DsipError as exc:
        raise _invalid(f"bundle does not verify: {exc.code}: {exc.message[:160]}") from None
    return PrekeyBundle(
        identity=v.identity,
        device=v.signer,
        identity_key=identity_key,
        signed_prekey_id=int(spk["id"]),
        signed_prekey=spk_pub,
        signed_prekey_signature=spk_sig,
        one_time_prekeys=otks,
        envelope_id=v.id,
        issued_at=p["issued_at"],
        expires_at=p["expires_at"],
        frame=text,
    )


# --- DID document publication --------------------------------------------------------------


def prekey_service(
    did: str, bundles: Sequence[Mapping[str, str]], *, relay: str | None = None
) -> dict[str, Any]:
    """A DID document ``service`` entry with signed-prekey-only bundles (one per device)."""
    endpoint: dict[str, Any] = {"bundles": [encode_frame(dict(b)) for b in bundles]}
    if relay is not None:
        endpoint["relay"] = relay
    return {"id": f"{did}#prekeys", "type": PREKEY_SERVICE_TYPE, "serviceEndpoint": endpoint}


def bundles_from_document(doc: DidDocument) -> list[str]:
    """The bundle frames a document's ``DSIPPrekeyBundle`` service carries (unverified)."""
    out: list[str] = []
    for s in doc.services:
        ep = s.endpoint
        if s.type == PREKEY_SERVICE_TYPE and isinstance(ep, Mapping):
            frames = ep.get("bundles")
            if isinstance(frames, list):
                out.extend(f for f in frames if isinstance(f, str))
    return out


# --- device side: keep the bundle stocked --------------------------------------------------


def refresh_prekeys(
    store: SessionStore,
    device: KeyPair,
    *,
    now: int,
    identity: str | None = None,
    target: int = 100,
    rotate_after: int = SIGNED_PREKEY_PERIOD,
    delegations: Sequence[Mapping[str, str]] = (),
    ttl: int = BUNDLE_TTL,
) -> dict[str, str]:
    """Top up one-time prekeys to ``target``, rotate the signed prekey when due, and
    return the signed bundle listing every unconsumed one-time prekey."""
    if not 0 <= target <= MAX_ONE_TIME_PREKEYS:
        raise ValueError(f"target must be in 0..{MAX_ONE_TIME_PREKEYS}")
    local = device.did
    with store.transaction() as tx:
        spks = tx.signed_prekeys(local)
        if not spks or now - spks[0].created_at >= rotate_after:
            spk = generate_signed_prekey(device, tx.next_prekey_id(local, "signed"), now=now)
            tx.add_signed_prekey(local, spk)
            spks = [spk, *spks]
        for old in spks[2:]:  # keep the previous one for initial messages still in flight
            tx.retire_signed_prekey(local, old.id)
        unconsumed = tx.unconsumed_one_time_prekeys(local)
        if len(unconsumed) < target:
            fresh = generate_one_time_prekeys(
                tx.next_prekey_id(local, "one_time"), target - len(unconsumed)
            )
            tx.add_one_time_prekeys(local, fresh)
            unconsumed += [(k.id, k.public) for k in fresh]
    return make_prekey_bundle(
        device,
        signed_prekey=spks[0],
        one_time_prekeys=unconsumed[:MAX_ONE_TIME_PREKEYS],
        now=now,
        identity=identity,
        ttl=ttl,
        delegations=delegations,
    )


# --- relay side: the one-time prekey store --------------------------------------------------


@dataclass(frozen=True)
class ClaimedBundle:
    """What a relay hands out: the device's signed frame and the one-time prekey claimed."""

    device: str
    frame: str = field(repr=False)
    one_time_prekey_id: int | None

    def verify(
        self,
        *,
        now: int,
        documents: DocumentSource | None = None,
        delegations: Sequence[Mapping[str, Any]] = (),
    ) -> RemotePrekeys:
        """Client side: verify the frame and pick the claimed one-time prekey from it."""
        bundle = verify_prekey_bundle(
            self.frame, now=now, documents=documents, delegations=delegations
        )
        if bundle.device != self.device:
            raise _invalid(f"relay handed out {bundle.device}'s bundle for {self.device}")
        return bundle.remote(self.one_time_prekey_id)


_PREKEY_STORE_APP_ID: Final = 0x4453504B  # "DSPK"
_PREKEY_SCHEMA: Final = (
    """CREATE TABLE bundles (
        device      TEXT    PRIMARY KEY,
        identity    TEXT    NOT NULL,
        envelope_id TEXT    NOT NULL,
        issued_at   INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        frame       TEXT    NOT NULL
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX bundles_by_identity ON bundles (identity, device)",
    """CREATE TABLE one_time_prekeys (
        device     TEXT    NOT NULL,
        prekey_id  INTEGER NOT NULL,
        claimed_at INTEGER,
        PRIMARY KEY (device, prekey_id)
    ) STRICT, WITHOUT ROWID""",
)


class PrekeyStore:
    """Relay-side bundle store on one SQLite file (WAL, ``synchronous=FULL``).

    Thread-safe; several instances (threads, processes) may share one file: the claim is a
    single conditional ``UPDATE … RETURNING`` inside ``BEGIN IMMEDIATE``.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> PrekeyStore:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        db_path = Path(path)
        conn = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("BEGIN IMMEDIATE")
            app_id, version = (
                conn.execute("PRAGMA application_id").fetchone()[0],
                conn.execute("PRAGMA user_version").fetchone()[0],
            )
            if app_id not in (0, _PREKEY_STORE_APP_ID) or (app_id == 0 and version != 0):
                raise MessagingError(
                    "not a dsip prekey store",
                    code="store-foreign",
                    reason="x-dsip.store-error",
                    remote=False,
                )
            if version == 0:
                for sql in _PREKEY_SCHEMA:
                    conn.execute(sql)
                conn.execute(f"PRAGMA application_id={_PREKEY_STORE_APP_ID}")
                conn.execute("PRAGMA user_version=1")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        return cls(db_path, conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, fn: Any) -> Any:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return out

    def publish(self, bundle: PrekeyBundle, *, now: int) -> int:
        """Store a *verified* bundle; returns how many one-time prekeys are new.

        An older bundle than the one held is ignored (0). Ids already claimed stay claimed
        even if listed again; unclaimed ids the new bundle no longer lists are dropped.
        """
        del now  # kept for symmetry with claim; expiry is the bundle's own

        def publish(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT issued_at, envelope_id FROM bundles WHERE device = ?", (bundle.device,)
            ).fetchone()
            if row is not None and (row[0] > bundle.issued_at or row[1] == bundle.envelope_id):
                return 0
            conn.execute(
                "INSERT INTO bundles (device, identity, envelope_id, issued_at, expires_at, frame)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET"
                " identity = excluded.identity, envelope_id = excluded.envelope_id,"
                " issued_at = excluded.issued_at, expires_at = excluded.expires_at,"
                " frame = excluded.frame",
                (
                    bundle.device,
                    bundle.identity,
                    bundle.envelope_id,
                    bundle.issued_at,
                    bundle.expires_at,
                    bundle.frame,
                ),
            )
            ids = [i for i, _ in bundle.one_time_prekeys]
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO one_time_prekeys (device, prekey_id) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                [(bundle.device, i) for i in ids],
            )
            added = conn.total_changes - before
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS listed (id INTEGER PRIMARY KEY)")
            conn.execute("DELETE FROM listed")
            conn.executemany("INSERT INTO listed VALUES (?)", [(i,) for i in ids])
            conn.execute(
                "DELETE FROM one_time_prekeys WHERE device = ? AND claimed_at IS NULL"
                " AND prekey_id NOT IN (SELECT id FROM listed)",
                (bundle.device,),
            )
            return added

        result: int = self._write(publish)
        return result

    def claim(self, device: str, *, now: int) -> ClaimedBundle | None:
        """The device's bundle and one one-time prekey id, claimed for good; ``None`` if no
        live bundle. Each id is returned by at most one call, across all connections."""

        def claim(conn: sqlite3.Connection) -> ClaimedBundle | None:
            row = conn.execute(
                "SELECT frame FROM bundles WHERE device = ? AND expires_at >= ?", (device, now)
            ).fetchone()
            if row is None:
                return None
            got = conn.execute(
                "UPDATE one_time_prekeys SET claimed_at = ? WHERE device = ? AND claimed_at IS NULL"
                " AND prekey_id = (SELECT prekey_id FROM one_time_prekeys"
                " WHERE device = ? AND claimed_at IS NULL ORDER BY prekey_id LIMIT 1)"
                " RETURNING prekey_id",
                (now, device, device),
            ).fetchone()
            return ClaimedBundle(device, row[0], None if got is None else int(got[0]))

        result: ClaimedBundle | None = self._write(claim)
        return result

    def devices(self, identity: str, *, now: int) -> list[str]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT device FROM bundles WHERE identity = ? AND expires_at >= ? ORDER BY device",
                (identity, now),
            ).fetchall()
        return [r[0] for r in rows]

    def claim_identity(self, identity: str, *, now: int) -> list[ClaimedBundle]:
        """One claimed bundle per live device of ``identity`` (multi-device fan-out)."""
        out = []
        for device in self.devices(identity, now=now):
            claimed = self.claim(device, now=now)
            if claimed is not None:
                out.append(claimed)
        return out

    def available(self, device: str) -> int:
        """Unclaimed one-time prekeys left: the device should republish when this is low."""
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM one_time_prekeys WHERE device = ? AND claimed_at IS NULL",
                (device,),
            ).fetchone()
        return int(row[0])
