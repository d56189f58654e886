"""SQLite persistence for 1:1 messaging: ratchet sessions, prekey secrets, seen ids, inbox.

One file per device (or per user with several local devices), standard library
``sqlite3``, the durability policy of :mod:`dsip.storage.sqlite`: ``journal_mode=WAL``,
``synchronous=FULL`` (an accepted message survives power loss once ``receive`` returns),
``BEGIN IMMEDIATE`` for every write, ``STRICT`` tables, ``PRAGMA user_version``
migrations, file created ``0600``.

Atomicity (the point of this module): :meth:`SessionStore.transaction` is one SQLite
transaction. The messenger decrypts, validates and then — in that same transaction —
stores the advanced ratchet, marks the one-time prekey consumed, records the envelope id
as seen and appends the message to the inbox. A crash before ``COMMIT`` leaves none of it
(the relay's redelivery decrypts again with the old ratchet state); a crash after leaves
all of it (the redelivery is refused as ``msg-replay`` by the seen-id table). So a message
is never lost and never shown twice, and a rejected message changes nothing.

Encryption at rest: every secret column (ratchet state, prekey private halves, message
bodies) is AES-256-GCM under a 32-byte store key, with the row's identity (table and key
columns) as associated data so a blob moved to another row fails to open. The key is
either given directly or derived from a passphrase with the wallet's recipe (scrypt
n=2**15, r=8, p=1, random 16-byte salt, 64 bytes → key + check value); salt, parameters
and the check value live in the ``meta`` table. A wrong key or passphrase is
``wallet-locked`` (:class:`~dsip.errors.WalletError`). Public data (device DIDs, prekey
public halves, ids, times) stays in clear so that lookups need no decryption.

A consumed one-time prekey keeps its row (public half and id, secret erased) so that a
second use is recognised as ``prekey-reused`` rather than "unknown".
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sqlite3
import stat
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dsip.errors import WalletError
from dsip.messaging.ratchet import (
    MessagingError,
    OneTimePrekey,
    RemotePrekeys,
    SessionRecord,
    SignedPrekey,
)

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "SessionStore",
    "StoreTransaction",
    "StoredMessage",
]

logger = logging.getLogger("dsip.messaging.store")

APPLICATION_ID: Final = 0x44534D53  # "DSMS": a dsip messaging store
_KDF_N: Final = 2**15
_MAX_N: Final = 2**20
_CHECK_INFO = b"dsip session store key check v1"

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE meta (
            name  TEXT PRIMARY KEY,
            value BLOB NOT NULL
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE sessions (
            local_device  TEXT    NOT NULL,
            peer_device   TEXT    NOT NULL,
            peer_identity TEXT    NOT NULL,
            updated_at    INTEGER NOT NULL,
            state         BLOB    NOT NULL,
            PRIMARY KEY (local_device, peer_device)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX sessions_by_identity ON sessions (local_device, peer_identity)",
        """CREATE TABLE signed_prekeys (
            local_device TEXT    NOT NULL,
            prekey_id    INTEGER NOT NULL,
            public       BLOB    NOT NULL,
            signature    BLOB    NOT NULL,
            created_at   INTEGER NOT NULL,
            secret       BLOB,
            PRIMARY KEY (local_device, prekey_id)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE one_time_prekeys (
            local_device TEXT    NOT NULL,
            prekey_id    INTEGER NOT NULL,
            public       BLOB    NOT NULL,
            consumed_at  INTEGER,
            secret       BLOB,
            PRIMARY KEY (local_device, prekey_id)
        ) STRICT, WITHOUT ROWID""",
        """CREATE TABLE seen (
            local_device TEXT    NOT NULL,
            envelope_id  TEXT    NOT NULL,
            expires_at   INTEGER NOT NULL,
            PRIMARY KEY (local_device, envelope_id)
        ) STRICT, WITHOUT ROWID""",
        "CREATE INDEX seen_by_expiry ON seen (expires_at)",
        """CREATE TABLE inbox (
            seq           INTEGER PRIMARY KEY AUTOINCREMENT,
            local_device  TEXT    NOT NULL,
            author        TEXT    NOT NULL,
            message_id    TEXT    NOT NULL,
            peer_identity TEXT    NOT NULL,
            kind          TEXT    NOT NULL,
            sent_at       INTEGER NOT NULL,
            received_at   INTEGER NOT NULL,
            edited_at     INTEGER,
            deleted       INTEGER NOT NULL DEFAULT 0,
            body          BLOB    NOT NULL,
            UNIQUE (local_device, author, message_id)
        ) STRICT""",
        "CREATE INDEX inbox_by_id ON inbox (local_device, message_id)",
        """CREATE TABLE pending_bundles (
            local_device TEXT NOT NULL,
            device       TEXT NOT NULL,
            identity     TEXT NOT NULL,
            remote       TEXT NOT NULL,
            PRIMARY KEY (local_device, device)
        ) STRICT, WITHOUT ROWID""",
    ),
    (
        # MLS (dsip.agent.messaging.GroupAgent): the device's MLS identity and key package
        # secrets under name "device", each group's state under "group:<id>".
        """CREATE TABLE mls_state (
            local_device TEXT NOT NULL,
            name         TEXT NOT NULL,
            state        BLOB NOT NULL,
            PRIMARY KEY (local_device, name)
        ) STRICT, WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)


@dataclass(frozen=True)
class StoredMessage:
    """One inner message as the inbox holds it (bodies decrypted)."""

    seq: int
    author: str
    message_id: str
    peer_identity: str
    kind: str
    sent_at: int
    received_at: int
    edited_at: int | None
    deleted: bool
    body: dict[str, Any]


def _store_error(message: str, code: str = "store-error") -> MessagingError:
    return MessagingError(message, code=code, reason="x-dsip.store-error", remote=False)


def _normalise(passphrase: str) -> bytes:
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _create_private_file(path: Path) -> None:
    if str(path) == ":memory:":
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            logger.warning("session store %s is group/world accessible; 0600 recommended", path)
        return
    os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _Cipher:
    """AES-256-GCM with row-bound associated data; blob = 12-byte nonce || ciphertext."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(table: str, *key: object) -> bytes:
        return json.dumps([table, *key], separators=(",", ":")).encode()

    def seal(self, data: bytes, table: str, *key: object) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, self._aad(table, *key))

    def open(self, blob: bytes, table: str, *key: object) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], self._aad(table, *key))
        except (InvalidTag, ValueError):
            raise _store_error(
                f"{table} row {key!r} does not authenticate", "store-corrupt"
            ) from None


class StoreTransaction:
    """Reads and writes inside one open transaction (see :meth:`SessionStore.transaction`)."""

    def __init__(self, conn: sqlite3.Connection, cipher: _Cipher, *, write: bool) -> None:
        self._conn = conn
        self._cipher = cipher
        self.write = write

    # --- sessions ---------------------------------------------------------------------

    def load_record(self, local_device: str, peer_device: str) -> SessionRecord | None:
        row = self._conn.execute(
            "SELECT state FROM sessions WHERE local_device = ? AND peer_device = ?",
            (local_device, peer_device),
        ).fetchone()
        if row is None:
            return None
        plain = self._cipher.open(row[0], "sessions", local_device, peer_device)
        return SessionRecord.from_json(json.loads(plain))

    def save_record(self, record: SessionRecord, *, now: int) -> None:
        current = record.current
        blob = self._cipher.seal(
            json.dumps(record.to_json(), separators=(",", ":")).encode(),
            "sessions",
            current.local_device,
            current.peer_device,
        )
        self._conn.execute(
            "INSERT INTO sessions (local_device, peer_device, peer_identity, updated_at, state)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (local_device, peer_device) DO UPDATE SET"
            " peer_identity = excluded.peer_identity, updated_at = excluded.updated_at,"
            " state = excluded.state",
            (current.local_device, current.peer_device, current.peer_identity, now, blob),
        )

    def peer_devices(self, local_device: str, peer_identity: str) -> list[str]:
        """Devices of ``peer_identity`` this device has a session with, in DID order."""
        rows = self._conn.execute(
            "SELECT peer_device FROM sessions WHERE local_device = ? AND peer_identity = ?"
            " ORDER BY peer_device",
            (local_device, peer_identity),
        )
        return [r[0] for r in rows]

    # --- peers' bundles waiting for our first message -------------------------------------

    def put_bundle(self, local_device: str, identity: str, remote: RemotePrekeys) -> None:
        """Remember a verified peer bundle (public data) until a session starts from it."""
        self._conn.execute(
            "INSERT INTO pending_bundles (local_device, device, identity, remote)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (local_device, device) DO UPDATE SET"
            " identity = excluded.identity, remote = excluded.remote",
            (local_device, remote.device, identity, json.dumps(remote.to_json())),
        )

    def pending_bundle(self, local_device: str, device: str) -> tuple[str, RemotePrekeys] | None:
        row = self._conn.execute(
            "SELECT identity, remote FROM pending_bundles WHERE local_device = ? AND device = ?",
            (local_device, device),
        ).fetchone()
        return None if row is None else (row[0], RemotePrekeys.from_json(json.loads(row[1])))

    def drop_bundle(self, local_device: str, device: str) -> None:
        self._conn.execute(
            "DELETE FROM pending_bundles WHERE local_device = ? AND device = ?",
            (local_device, device),
        )

    def pending_devices(self, local_device: str, identity: str) -> list[str]:
        rows = self._conn.execute(
            "SELECT device FROM pending_bundles WHERE local_device = ? AND identity = ?"
            " ORDER BY device",
            (local_device, identity),
        )
        return [r[0] for r in rows]

    # --- prekeys ----------------------------------------------------------------------

    def add_signed_prekey(self, local_device: str, spk: SignedPrekey) -> None:
        self._conn.execute(
            "INSERT INTO signed_prekeys (local_device, prekey_id, public, signature, created_at,"
            " secret) VALUES (?, ?, ?, ?, ?, ?)",
            (
                local_device,
                spk.id,
                spk.public,
                spk.signature,
                spk.created_at,
                self._cipher.seal(spk.private, "signed_prekeys", local_device, spk.id),
            ),
        )

    def add_one_time_prekeys(self, local_device: str, keys: Sequence[OneTimePrekey]) -> None:
        self._conn.executemany(
            "INSERT INTO one_time_prekeys (local_device, prekey_id, public, secret)"
            " VALUES (?, ?, ?, ?)",
            [
                (
                    local_device,
                    k.id,
                    k.public,
                    self._cipher.seal(k.private, "one_time_prekeys", local_device, k.id),
                )
                for k in keys
            ],
        )

    def signed_prekey(self, local_device: str, prekey_id: int) -> SignedPrekey | None:
        row = self._conn.execute(
            "SELECT public, signature, created_at, secret FROM signed_prekeys"
            " WHERE local_device = ? AND prekey_id = ? AND secret IS NOT NULL",
            (local_device, prekey_id),
        ).fetchone()
        if row is None:
            return None
        private = self._cipher.open(row[3], "signed_prekeys", local_device, prekey_id)
        return SignedPrekey(prekey_id, row[0], row[1], row[2], private)

    def signed_prekeys(self, local_device: str) -> list[SignedPrekey]:
        """Live signed prekeys, newest first (the first one is published)."""
        ids = self._conn.execute(
            "SELECT prekey_id FROM signed_prekeys WHERE local_device = ? AND secret IS NOT NULL"
            " ORDER BY prekey_id DESC",
            (local_device,),
        ).fetchall()
        out = [self.signed_prekey(local_device, i) for (i,) in ids]
        return [s for s in out if s is not None]

    def retire_signed_prekey(self, local_device: str, prekey_id: int) -> None:
        self._conn.execute(
            "UPDATE signed_prekeys SET secret = NULL WHERE local_device = ? AND prekey_id = ?",
            (local_device, prekey_id),
        )

    def one_time_prekey(self, local_device: str, prekey_id: int) -> OneTimePrekey:
        row = self._conn.execute(
            "SELECT public, consumed_at, secret FROM one_time_prekeys"
            " WHERE local_device = ? AND prekey_id = ?",
            (local_device, prekey_id),
        ).fetchone()
        if row is None or (row[1] is None and row[2] is None):
            raise MessagingError(
                f"one-time prekey {prekey_id} was never issued by {local_device}",
                code="prekey-invalid",
                reason="policy.trust-insufficient",
            )
        if row[1] is not None:
            raise MessagingError(
                f"one-time prekey {prekey_id} was already used",
                code="prekey-reused",
                reason="session.invalid-state",
            )
        private = self._cipher.open(row[2], "one_time_prekeys", local_device, prekey_id)
        return OneTimePrekey(prekey_id, row[0], private)

    def consume_one_time_prekey(self, local_device: str, prekey_id: int, *, now: int) -> None:
        """Erase the secret, keep the row: a second use is then ``prekey-reused``."""
        cur = self._conn.execute(
            "UPDATE one_time_prekeys SET consumed_at = ?, secret = NULL"
            " WHERE local_device = ? AND prekey_id = ? AND consumed_at IS NULL",
            (now, local_device, prekey_id),
        )
        if cur.rowcount != 1:
            raise MessagingError(
                f"one-time prekey {prekey_id} was already used",
                code="prekey-reused",
                reason="session.invalid-state",
            )

    def unconsumed_one_time_prekeys(self, local_device: str) -> list[tuple[int, bytes]]:
        rows = self._conn.execute(
            "SELECT prekey_id, public FROM one_time_prekeys"
            " WHERE local_device = ? AND consumed_at IS NULL ORDER BY prekey_id",
            (local_device,),
        )
        return [(r[0], r[1]) for r in rows]

    def next_prekey_id(self, local_device: str, table: Literal["signed", "one_time"]) -> int:
        name = "signed_prekeys" if table == "signed" else "one_time_prekeys"
        row = self._conn.execute(
            f"SELECT coalesce(max(prekey_id), 0) FROM {name} WHERE local_device = ?",  # noqa: S608 - fixed table names
            (local_device,),
        ).fetchone()
        return int(row[0]) + 1

    def prekeys(self, local_device: str) -> _LocalPrekeys:
        """This device's prekey secrets as a :class:`~dsip.messaging.ratchet.PrekeySource`."""
        return _LocalPrekeys(self, local_device)

    # --- seen envelope ids --------------------------------------------------------------

    def seen(self, local_device: str, envelope_id: str) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM seen WHERE local_device = ? AND envelope_id = ?",
                (local_device, envelope_id),
            ).fetchone()
            is not None
        )

    def mark_seen(self, local_device: str, envelope_id: str, *, expires_at: int) -> None:
        self._conn.execute(
            "INSERT INTO seen (local_device, envelope_id, expires_at) VALUES (?, ?, ?)",
            (local_device, envelope_id, expires_at),
        )

    def purge_seen(self, *, before: int) -> int:
        """Forget ids of envelopes that expired before ``before`` (expiry refuses them)."""
        return self._conn.execute("DELETE FROM seen WHERE expires_at < ?", (before,)).rowcount

    # --- MLS state --------------------------------------------------------------------------

    def load_mls(self, local_device: str, name: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT state FROM mls_state WHERE local_device = ? AND name = ?", (local_device, name)
        ).fetchone()
        return None if row is None else self._cipher.open(row[0], "mls_state", local_device, name)

    def save_mls(self, local_device: str, name: str, state: bytes) -> None:
        sealed = self._cipher.seal(state, "mls_state", local_device, name)
        self._conn.execute(
            "INSERT INTO mls_state (local_device, name, state) VALUES (?, ?, ?)"
            " ON CONFLICT (local_device, name) DO UPDATE SET state = excluded.state",
            (local_device, name, sealed),
        )

    def drop_mls(self, local_device: str, name: str) -> None:
        self._conn.execute(
            "DELETE FROM mls_state WHERE local_device = ? AND name = ?", (local_device, name)
        )

    def mls_names(self, local_device: str) -> list[str]:
        rows = self._conn.execute(
            "SELECT name FROM mls_state WHERE local_device = ? ORDER BY name", (local_device,)
        )
        return [r[0] for r in rows]

    # --- inbox and authorship -----------------------------------------------------------

    def add_message(
        self,
        local_device: str,
        *,
        author: str,
        message_id: str,
        peer_identity: str,
        kind: str,
        sent_at: int,
        received_at: int,
        body: dict[str, Any],
    ) -> bool:
        """Append to the inbox; ``False`` if (author, id) is already there."""
        sealed = self._cipher.seal(
            json.dumps(body, separators=(",", ":")).encode(),
            "inbox",
            local_device,
            author,
            message_id,
        )
        cur = self._conn.execute(
            "INSERT INTO inbox (local_device, author, message_id, peer_identity, kind, sent_at,"
            " received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (local_device, author, message_id) DO NOTHING",
            (local_device, author, message_id, peer_identity, kind, sent_at, received_at, sealed),
        )
        return cur.rowcount == 1

    def authors_of(self, local_device: str, message_id: str) -> list[str]:
        """Who sent a message with this id (normally one author; ids are random ULIDs)."""
        rows = self._conn.execute(
            "SELECT author FROM inbox WHERE local_device = ? AND message_id = ? AND kind = 'text'",
            (local_device, message_id),
        )
        return [r[0] for r in rows]

    def apply_update(
        self,
        local_device: str,
        *,
        author: str,
        message_id: str,
        action: Literal["edit", "delete"],
        patch: dict[str, Any] | None,
        now: int,
    ) -> None:
        """Apply an author-verified edit (merge ``patch`` into the body) or delete."""
        row = self._conn.execute(
            "SELECT body FROM inbox WHERE local_device = ? AND author = ? AND message_id = ?",
            (local_device, author, message_id),
        ).fetchone()
        if row is None:
            return
        if action == "delete":
            body: dict[str, Any] = {}
            deleted = 1
        else:
            body = json.loads(self._cipher.open(row[0], "inbox", local_device, author, message_id))
            body.update(patch or {})
            deleted = 0
        sealed = self._cipher.seal(
            json.dumps(body, separators=(",", ":")).encode(),
            "inbox",
            local_device,
            author,
            message_id,
        )
        self._conn.execute(
            "UPDATE inbox SET body = ?, edited_at = ?, deleted = ?"
            " WHERE local_device = ? AND author = ? AND message_id = ?",
            (sealed, now, deleted, local_device, author, message_id),
        )

    def messages(
        self, local_device: str, *, peer_identity: str | None = None, kind: str | None = None
    ) -> list[StoredMessage]:
        sql = (
            "SELECT seq, author, message_id, peer_identity, kind, sent_at, received_at,"
            " edited_at, deleted, body FROM inbox WHERE local_device = ?"
        )
        args: list[Any] = [local_device]
        if peer_identity is not None:
            sql += " AND peer_identity = ?"
            args.append(peer_identity)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        out = []
        for r in self._conn.execute(sql + " ORDER BY seq", args):
            body = json.loads(self._cipher.open(r[9], "inbox", local_device, r[1], r[2]))
            out.append(
                StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), body)
            )
        return out


class _LocalPrekeys:
    def __init__(self, tx: StoreTransaction, local_device: str) -> None:
        self._tx = tx
        self._local = local_device

    def signed_prekey(self, prekey_id: int) -> SignedPrekey | None:
        return self._tx.signed_prekey(self._local, prekey_id)

    def one_time_prekey(self, prekey_id: int) -> OneTimePrekey:
        return self._tx.one_time_prekey(self._local, prekey_id)


class SessionStore:
    """The device's messaging database; open with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, cipher: _Cipher) -> None:
        self.path = path
        self._conn = conn
        self._cipher = cipher
        self._lock = threading.RLock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        passphrase: str | None = None,
        kdf_n: int = _KDF_N,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5_000,
    ) -> SessionStore:
        """Open (creating and migrating if needed) the store at ``path``.

        Exactly one of ``key`` (32 bytes) and ``passphrase`` unlocks it; a store created
        with one must be opened with the same.
        """
        if (key is None) == (passphrase is None):
            raise _store_error("give exactly one of key and passphrase", "store-config")
        if key is not None and len(key) != 32:
            raise _store_error("the store key must be 32 bytes", "store-config")
        if kdf_n < 2 or kdf_n & (kdf_n - 1) or kdf_n > _MAX_N:
            raise _store_error(f"kdf_n must be a power of two in [2, {_MAX_N}]", "store-config")
        if synchronous not in ("FULL", "NORMAL"):
            raise _store_error("synchronous must be FULL or NORMAL", "store-config")
        db_path = Path(path)
        _create_private_file(db_path)
        try:
            conn = sqlite3.connect(
                str(db_path), isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as exc:
            raise _store_error(f"SQLite: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            _migrate(conn)
            enc_key = _unlock(conn, key, passphrase, kdf_n)
        except BaseException:
            conn.close()
            raise
        return cls(db_path, conn, _Cipher(enc_key))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[StoreTransaction]:
        """One SQLite transaction: everything done through the yielded object commits
        together, or — on any exception — rolls back together."""
        with self._lock:
            if self._closed:
                raise _store_error("the session store is closed", "store-closed")
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            except sqlite3.Error as exc:
                raise _store_error(f"SQLite: {exc}") from None
            try:
                yield StoreTransaction(conn, self._cipher, write=write)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(f"SQLite: {exc}") from None
                raise

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table (ciphertexts as stored): equal snapshots mean nothing
        changed. For tests and diagnostics."""
        with self._lock:
            out: dict[str, list[tuple[Any, ...]]] = {}
            for (name,) in self._conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                " ORDER BY name"
            ).fetchall():
                out[name] = self._conn.execute(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608 - names from sqlite_schema
            return out


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and version != 0):
            raise _store_error("not a dsip messaging store", "store-foreign")
        if version > SCHEMA_VERSION:
            raise _store_error(
                f"store schema {version} is newer than {SCHEMA_VERSION}", "store-too-new"
            )
        for step in _MIGRATIONS[version:]:
            for sql in step:
                conn.execute(sql)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _meta(conn: sqlite3.Connection, name: str) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else bytes(row[0])


def _unlock(
    conn: sqlite3.Connection, key: bytes | None, passphrase: str | None, kdf_n: int
) -> bytes:
    conn.execute("BEGIN IMMEDIATE")
    try:
        mode = _meta(conn, "key_mode")
        if mode is None:  # a new store: record how it is unlocked
            mode = b"key" if key is not None else b"scrypt"
            conn.execute("INSERT INTO meta VALUES ('key_mode', ?)", (mode,))
            if passphrase is not None:
                params = json.dumps({"n": kdf_n, "r": 8, "p": 1}).encode()
                conn.execute("INSERT INTO meta VALUES ('kdf', ?)", (params,))
                conn.execute("INSERT INTO meta VALUES ('salt', ?)", (os.urandom(16),))
        if (mode == b"key") != (key is not None):
            raise WalletError(
                f"this store is unlocked by {'a key' if mode == b'key' else 'a passphrase'}",
                code="wallet-locked",
            )
        if key is None:
            assert passphrase is not None
            kdf = json.loads(_meta(conn, "kdf") or b"{}")
            salt = _meta(conn, "salt") or b""
            n, r, p = kdf.get("n"), kdf.get("r"), kdf.get("p")
            if not (
                isinstance(n, int) and 2 <= n <= _MAX_N and r == 8 and p == 1 and len(salt) == 16
            ):
                raise _store_error("store key parameters are out of range", "store-corrupt")
            key = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(_normalise(passphrase))
        check = hmac.new(key, _CHECK_INFO, "sha256").digest()
        stored = _meta(conn, "check")
        if stored is None:
            conn.execute("INSERT INTO meta VALUES ('check', ?)", (check,))
        elif not hmac.compare_digest(stored, check):
            raise WalletError("wrong key or passphrase for the session store", code="wallet-locked")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return key
