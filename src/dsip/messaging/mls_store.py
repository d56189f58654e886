"""Durable state of a relay's MLS delivery service (profile mls/1.0): one SQLite file.

:class:`~dsip.messaging.mls_service.MlsService` keeps its working state in memory and,
when it has an :class:`MlsStore`, writes what one accepted envelope changed as one SQLite
transaction before it returns (so before the relay answers or fans anything out):

* ``groups`` — per group its current epoch, GroupContext, roster (leaf → member DID and
  signature key), the GroupInfo for external joins, the committer of the current epoch
  and the DIDs it added (the readers of a Welcome sent apart), and the acceptance counter
  as of that commit; ``commits`` — the hash of the accepted commit of every past epoch
  (first commit wins, a resent one is a duplicate, one for an old epoch a conflict);
* ``key_packages`` — each device's key packages not yet handed out, oldest first;
  ``used_key_packages`` — the hash of every key package handed out during the last
  :data:`USED_RETENTION` seconds, so the same package published again (even by replaying
  its envelope after a restart, when the relay's replay memory is empty) is not handed out
  a second time;
* ``identities`` — device DID → the identity it acts for, as verified.

Application data and a Welcome sent apart change only the in-memory acceptance counter
(``Delivery.seq``, which nothing on the wire carries): they cost no write.

Why a file of its own (``dsip relay --mls-state FILE``) rather than the prekeys file: the
two stores have different owners and lifetimes, each file says what it is (its SQLite
``application_id``) and refuses to open as the other, and a relay may offer one service
without the other.

While open, the store holds an exclusive ``flock`` on the file: a second relay (or a second
store in one process) on the same file is refused. Opening is strict: a file that is not SQLite, is damaged (``PRAGMA quick_check``), belongs
to something else (another ``application_id``, other tables) or holds a row that does not
decode is refused with :class:`~dsip.errors.ConfigError`, never reset; an empty or missing
file becomes a fresh store. Library: the standard library's ``sqlite3`` (WAL,
``synchronous=FULL``), as the relay's prekey store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from dsip.errors import ConfigError

__all__ = ["USED_RETENTION", "GroupRecord", "MlsChanges", "MlsSnapshot", "MlsStore"]

USED_RETENTION: Final = 3600  # s; well past the §12.9 window in which an envelope replays
_APP_ID: Final = 0x44534D4C  # "DSML"
_PREKEYS_APP_ID: Final = 0x4453504B  # "DSPK", dsip.messaging.prekeys: named when refused
_VERSION: Final = 1
_SCHEMA: Final = (
    """CREATE TABLE groups (
        group_id   BLOB    PRIMARY KEY,
        epoch      INTEGER NOT NULL,
        context    BLOB    NOT NULL,
        leaves     TEXT    NOT NULL,
        group_info BLOB    NOT NULL,
        seq        INTEGER NOT NULL,
        committer  TEXT    NOT NULL,
        added      TEXT    NOT NULL
    ) STRICT""",
    """CREATE TABLE commits (
        group_id BLOB    NOT NULL,
        epoch    INTEGER NOT NULL,
        digest   BLOB    NOT NULL,
        PRIMARY KEY (group_id, epoch)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE key_packages (
        device   TEXT    NOT NULL,
        position INTEGER NOT NULL,
        identity TEXT    NOT NULL,
        data     BLOB    NOT NULL,
        PRIMARY KEY (device, position)
    ) STRICT""",
    """CREATE TABLE used_key_packages (
        digest  BLOB    PRIMARY KEY,
        used_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX used_key_packages_by_time ON used_key_packages (used_at)",
    """CREATE TABLE identities (
        device   TEXT PRIMARY KEY,
        identity TEXT NOT NULL
    ) STRICT, WITHOUT ROWID""",
)
_DIGEST_LEN: Final = 32  # SHA-256


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """One group as the delivery service knows it after its latest accepted commit."""

    group: bytes
    epoch: int
    context: bytes
    leaves: tuple[tuple[int, str, bytes], ...]  # (leaf index, member DID, signature key)
    group_info: bytes
    seq: int
    committer: str
    added: frozenset[str]


@dataclass(frozen=True, slots=True)
class MlsSnapshot:
    """Everything the store holds, as read (and checked) at startup."""

    groups: tuple[GroupRecord, ...]
    commits: dict[bytes, dict[int, bytes]]  # group -> epoch -> accepted commit hash
    packages: dict[str, tuple[str, tuple[bytes, ...]]]  # device -> (identity, oldest first)
    used: dict[bytes, int]  # hash of a handed-out key package -> when, oldest first
    identities: dict[str, str]  # device -> identity


@dataclass(frozen=True, slots=True)
class MlsChanges:
    """What one envelope changed; written by :meth:`MlsStore.apply` in one transaction."""

    groups: tuple[GroupRecord, ...] = ()
    commits: tuple[tuple[bytes, int, bytes], ...] = ()  # (group, epoch, commit hash)
    packages: tuple[tuple[str, str, tuple[bytes, ...]], ...] = ()  # a device's whole list
    used: tuple[tuple[bytes, int], ...] = ()  # (key package hash, handed out at)
    forget_used_before: int | None = None
    identities: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.groups or self.commits or self.packages or self.used or self.identities
        ) or (self.forget_used_before is not None)


class _Damage(Exception):
    """A row that does not decode (``what`` names it); becomes a ConfigError."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _refuse(path: Path, why: str, *, hint: bool = True) -> ConfigError:
    advice = (
        "; it is left untouched (move it away to start with no groups and no key packages)"
        if hint
        else ""
    )
    return ConfigError(f"MLS state file {path} refused: {why}{advice}", code="mls-state-invalid")


class MlsStore:
    """The delivery service's state on one SQLite file (module docstring); thread-safe."""

    def __init__(self, path: Path, conn: sqlite3.Connection, owner_fd: int | None = None) -> None:
        self.path = path
        self._conn = conn
        self._owner_fd = owner_fd  # flock held while open: one relay per state file
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 10_000,
    ) -> MlsStore:
        """Open (or create) the store; :class:`ConfigError` for anything not ours or damaged."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        db_path = Path(path)
        if db_path.exists() and not db_path.is_file():
            raise _refuse(db_path, "not a regular file")
        owner_fd = _own(db_path)
        try:
            conn = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            os.close(owner_fd)
            raise _refuse(db_path, f"cannot open it ({exc})") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # Read who owns the file before anything may write to it (WAL switch, schema).
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
            if app_id == 0 and version == 0 and not tables:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute("BEGIN IMMEDIATE")
                for sql in _SCHEMA:
                    conn.execute(sql)
                conn.execute(f"PRAGMA application_id={_APP_ID}")
                conn.execute(f"PRAGMA user_version={_VERSION}")
                conn.execute("COMMIT")
            else:
                if app_id != _APP_ID:
                    raise _refuse(
                        db_path,
                        f"not a dsip MLS state file (application_id {app_id:#x}"
                        f"{', a dsip prekey store' if app_id == _PREKEYS_APP_ID else ''})",
                    )
                if version != _VERSION:
                    raise _refuse(db_path, f"unknown MLS state version {version}")
                ours = {_name(sql) for sql in _SCHEMA}
                found = {name for kind, name, sql in tables if sql is not None}
                if found != ours or {_norm(s) for *_, s in tables if s} != {
                    _norm(s) for s in _SCHEMA
                }:
                    raise _refuse(db_path, "its tables are not those of an MLS state file")
                check = conn.execute("PRAGMA quick_check").fetchall()
                if check != [("ok",)]:
                    raise _refuse(db_path, f"damaged ({check[0][0]})")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={synchronous}")
        except ConfigError:
            _close_quietly(conn)
            os.close(owner_fd)
            raise
        except sqlite3.Error as exc:
            _close_quietly(conn)
            os.close(owner_fd)
            raise _refuse(db_path, f"not a readable SQLite database ({exc})") from None
        return cls(db_path, conn, owner_fd)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._owner_fd is not None:
                os.close(self._owner_fd)  # releases the flock
                self._owner_fd = None

    # -- reading ---------------------------------------------------------------------------

    def load(self) -> MlsSnapshot:
        """Read and check every row; :class:`ConfigError` if any does not decode."""
        try:
            with self._lock:
                conn = self._conn
                conn.execute("BEGIN")
                try:
                    rows = {
                        "groups": conn.execute(
                            "SELECT rowid, group_id, epoch, context, leaves, group_info, seq,"
                            " committer, added FROM groups ORDER BY group_id"
                        ).fetchall(),
                        "commits": conn.execute(
                            "SELECT group_id, epoch, digest FROM commits ORDER BY group_id, epoch"
                        ).fetchall(),
                        "key_packages": conn.execute(
                            "SELECT device, position, identity, data FROM key_packages"
                            " ORDER BY device, position"
                        ).fetchall(),
                        "used": conn.execute(
                            "SELECT digest, used_at FROM used_key_packages ORDER BY used_at"
                        ).fetchall(),
                        "identities": conn.execute(
                            "SELECT device, identity FROM identities ORDER BY device"
                        ).fetchall(),
                    }
                finally:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _refuse(self.path, f"unreadable ({exc})") from None
        try:
            return _decode(rows)
        except _Damage as exc:
            raise _refuse(self.path, f"damaged ({exc.what})") from None

    # -- writing ---------------------------------------------------------------------------

    def apply(self, changes: MlsChanges) -> None:
        """Write ``changes`` in one transaction (all or nothing); ``sqlite3.Error`` on failure."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for g in changes.groups:
                    conn.execute(
                        "INSERT INTO groups (group_id, epoch, context, leaves, group_info, seq,"
                        " committer, added) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch,"
                        " context = excluded.context, leaves = excluded.leaves,"
                        " group_info = excluded.group_info, seq = excluded.seq,"
                        " committer = excluded.committer, added = excluded.added",
                        (
                            g.group,
                            g.epoch,
                            g.context,
                            _leaves_json(g.leaves),
                            g.group_info,
                            g.seq,
                            g.committer,
                            json.dumps(sorted(g.added)),
                        ),
                    )
                conn.executemany(
                    "INSERT INTO commits (group_id, epoch, digest) VALUES (?, ?, ?)",
                    changes.commits,
                )
                for device, identity, items in changes.packages:
                    conn.execute("DELETE FROM key_packages WHERE device = ?", (device,))
                    conn.executemany(
                        "INSERT INTO key_packages (device, position, identity, data)"
                        " VALUES (?, ?, ?, ?)",
                        [(device, i, identity, data) for i, data in enumerate(items)],
                    )
                if changes.forget_used_before is not None:
                    conn.execute(
                        "DELETE FROM used_key_packages WHERE used_at < ?",
                        (changes.forget_used_before,),
                    )
                conn.executemany(
                    "INSERT INTO used_key_packages (digest, used_at) VALUES (?, ?)"
                    " ON CONFLICT (digest) DO UPDATE SET used_at = excluded.used_at",
                    changes.used,
                )
                conn.executemany(
                    "INSERT INTO identities (device, identity) VALUES (?, ?)"
                    " ON CONFLICT (device) DO UPDATE SET identity = excluded.identity",
                    changes.identities,
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


# --- encoding ------------------------------------------------------------------------------


def _name(sql: str) -> str:
    return sql.split()[2]  # CREATE TABLE|INDEX <name>


def _norm(sql: str) -> str:
    return " ".join(sql.split())


def _own(path: Path) -> int:
    """An exclusive ``flock`` on the state file (created 0600 if missing), held while the
    store is open: a second relay on the same file would overwrite the first one's state
    with its own memory. (SQLite's own locks are per transaction, not per owner.)"""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _refuse(path, f"cannot open it ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise _refuse(path, "it is in use by another relay", hint=False) from None
    return fd


def _close_quietly(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.close()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _leaves_json(leaves: tuple[tuple[int, str, bytes], ...]) -> str:
    return json.dumps([[i, did, _b64(key)] for i, did, key in leaves])


def _is_did(value: object) -> bool:
    return isinstance(value, str) and value.startswith("did:") and 4 < len(value) <= 2048


def _bytes(value: object, what: str, *, size: int | None = None) -> bytes:
    if not isinstance(value, bytes) or not value or (size is not None and len(value) != size):
        raise _Damage(what)
    return value


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Damage(what)
    return value


def _decode_leaves(text: str, what: str) -> tuple[tuple[int, str, bytes], ...]:
    try:
        raw = json.loads(text)
    except ValueError:
        raise _Damage(what) from None
    if not isinstance(raw, list):
        raise _Damage(what)
    out: list[tuple[int, str, bytes]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and _is_did(item[1])):
            raise _Damage(what)
        index, did, key = item
        if not isinstance(key, str):
            raise _Damage(what)
        try:
            key_bytes = _unb64(key)
        except (binascii.Error, ValueError):
            raise _Damage(what) from None
        out.append((_int(index, what), did, _bytes(key_bytes, what)))
    if len({i for i, _, _ in out}) != len(out):
        raise _Damage(what)
    return tuple(out)


def _decode_dids(text: str, what: str) -> frozenset[str]:
    try:
        raw = json.loads(text)
    except ValueError:
        raise _Damage(what) from None
    if not isinstance(raw, list) or not all(_is_did(d) for d in raw):
        raise _Damage(what)
    return frozenset(raw)


def _decode(rows: dict[str, list[tuple[object, ...]]]) -> MlsSnapshot:
    groups: list[GroupRecord] = []
    for rowid, gid, epoch, context, leaves, info, seq, committer, added in rows["groups"]:
        what = f"groups row {rowid}"
        if not isinstance(leaves, str) or not isinstance(added, str) or not _is_did(committer):
            raise _Damage(what)
        assert isinstance(committer, str)
        groups.append(
            GroupRecord(
                group=_bytes(gid, what),
                epoch=_int(epoch, what),
                context=_bytes(context, what),
                leaves=_decode_leaves(leaves, what),
                group_info=_bytes(info, what),
                seq=_int(seq, what),
                committer=committer,
                added=_decode_dids(added, what),
            )
        )
    epochs = {g.group: g.epoch for g in groups}
    commits: dict[bytes, dict[int, bytes]] = {}
    for gid, epoch, digest in rows["commits"]:
        what = "commits of an unknown group"
        if not isinstance(gid, bytes) or gid not in epochs:
            raise _Damage(what)
        commits.setdefault(gid, {})[_int(epoch, what)] = _bytes(
            digest, "commit hash", size=_DIGEST_LEN
        )
    for gid, epoch in epochs.items():
        # Every epoch from the first commit seen up to the current one has its commit.
        seen = sorted(commits.get(gid, {}))
        if not seen or seen != list(range(seen[0], epoch)):
            raise _Damage(f"commit history of group {_b64(gid)[:22]}")
    packages: dict[str, tuple[str, tuple[bytes, ...]]] = {}
    for device, position, identity, data in rows["key_packages"]:
        what = f"key package {position} of {str(device)[:60]}"
        if not _is_did(device) or not _is_did(identity):
            raise _Damage(what)
        assert isinstance(device, str)
        assert isinstance(identity, str)
        _int(position, what)
        held = packages.get(device)
        if held is not None and held[0] != identity:
            raise _Damage(what)
        packages[device] = (identity, (*(held[1] if held else ()), _bytes(data, what)))
    used = {
        _bytes(d, "used key package hash", size=_DIGEST_LEN): _int(t, "used key package time")
        for d, t in rows["used"]
    }
    identities: dict[str, str] = {}
    for device, identity in rows["identities"]:
        if not _is_did(device) or not _is_did(identity):
            raise _Damage(f"identity of {str(device)[:60]}")
        assert isinstance(device, str)
        assert isinstance(identity, str)
        identities[device] = identity
    return MlsSnapshot(tuple(groups), commits, packages, used, identities)
