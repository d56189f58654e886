"""The SQLite store survives ``kill -9``: a real child process, killed mid-stream.

The child (``sqlite_child.py``) prints an id only after ``put``/``ack`` returned, i.e.
after the relay could have acknowledged it. Whatever it printed must be in the database
after the kill (or gone, for acks), and the file must pass ``PRAGMA integrity_check``.
Also here: the SQLite-specific promises (file mode, pragmas, schema versioning, URLs).
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsip.storage import SqliteStore, StoreError, StoreLimits, open_store, sqlite_path
from dsip.storage.sqlite import APPLICATION_ID, SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)

CHILD = Path(__file__).with_name("sqlite_child.py")
NOW = 1_760_000_000
RECIPIENTS = [f"did:key:z6MkRecipient{n}" for n in range(8)]
LIMITS = StoreLimits(max_envelopes_per_recipient=100_000, max_bytes_per_recipient=2**30)


def start_child(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def read_lines(child: subprocess.Popen[bytes], want: int, timeout: float = 20.0) -> list[str]:
    """Complete lines from the child's stdout until ``want`` of them, or it exits."""
    assert child.stdout is not None
    fd = child.stdout.fileno()
    buffer, lines = b"", []
    deadline = time.monotonic() + timeout
    while len(lines) < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in complete]
    return lines


def kill_after(child: subprocess.Popen[bytes], want: int) -> list[str]:
    """Let the child report ``want`` lines, ``kill -9`` it, return everything it reported."""
    lines = read_lines(child, want)
    assert len(lines) >= want, child.stderr.read().decode() if child.stderr else lines
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    assert child.stdout is not None
    rest = child.stdout.read()  # what it printed before dying is still in the pipe
    complete = rest.rsplit(b"\n", 1)[0] if b"\n" in rest else b""
    return lines + [line.decode() for line in complete.split(b"\n") if line]


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def held_ids(db: Path) -> list[str]:
    store = await SqliteStore.open(db, limits=LIMITS)
    try:
        ids: list[str] = []
        for recipient in RECIPIENTS:
            after = 0
            while page := await store.pending(recipient, now=NOW, limit=1000, after_seq=after):
                ids += [e.envelope_id for e in page]
                after = page[-1].seq
        return ids
    finally:
        await store.close()


async def test_kill_9_while_putting_loses_no_acknowledged_envelope(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    reported: list[str] = []
    for round_ in range(3):  # each restart must recover the previous crash's WAL first
        child = start_child("put", str(db), f"r{round_}")
        lines = kill_after(child, want=300)
        reported += [line.removeprefix("stored ") for line in lines]
    assert integrity(db) == "ok"
    held = await held_ids(db)
    assert len(held) == len(set(held)), "an envelope is held twice"
    missing = set(reported) - set(held)
    assert not missing, f"{len(missing)} acknowledged envelopes lost, e.g. {sorted(missing)[:5]}"
    assert len(held) - len(reported) <= 3  # at most the one commit per round not yet printed


async def test_kill_9_while_acking_never_resurrects_an_acked_envelope(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    async with await SqliteStore.open(db, limits=LIMITS) as store:
        for n in range(2000):
            await store.put(
                RECIPIENTS[n % len(RECIPIENTS)],
                f"e-{n}",
                b"x" * 200,
                expires_at=NOW + 3600,
                now=NOW,
            )
    child = start_child("ack", str(db))
    acked = {line.removeprefix("acked ") for line in kill_after(child, want=300)}
    assert integrity(db) == "ok"
    held = await held_ids(db)
    assert not acked & set(held), "an acknowledged envelope came back after the crash"
    assert 2000 - len(acked) - 1 <= len(held) <= 2000 - len(acked)
    numbers = [int(envelope_id.removeprefix("e-")) for envelope_id in held]
    for r in range(len(RECIPIENTS)):  # what is left is still in enqueue order per recipient
        mine = [n for n in numbers if n % len(RECIPIENTS) == r]
        assert mine == sorted(mine)


async def test_sigterm_closes_gracefully_and_checkpoints_the_wal(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    child = start_child("serve", str(db), "s")
    lines = read_lines(child, want=100)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err.decode()
    lines += out.decode().splitlines()
    assert lines[-1] == "closed"
    stored = {line.removeprefix("stored ") for line in lines[:-1]}
    assert len(stored) >= 100
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # everything is in the main file
    assert set(await held_ids(db)) == stored


# -- SQLite-specific promises ------------------------------------------------------------


async def test_database_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    async with await SqliteStore.open(db) as store:
        await store.put(RECIPIENTS[0], "id", b"sealed", expires_at=NOW + 60, now=NOW)
        for path in (db, db.with_name("relay.db-wal"), db.with_name("relay.db-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_pragmas_wal_full_and_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    async with await SqliteStore.open(db) as store:
        synchronous = await store._run(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert synchronous == 2  # FULL
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(envelopes)")}
        assert {"envelopes_by_recipient", "envelopes_by_expiry"} <= indexes


async def test_refuses_a_newer_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    await (await SqliteStore.open(db)).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as info:
        await SqliteStore.open(db)
    assert info.value.code == "store-config"


async def test_refuses_a_database_that_is_not_a_relay_store(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE accounts (name TEXT)")
    with pytest.raises(StoreError, match="not a dsip relay store"):
        await SqliteStore.open(db)
    with sqlite3.connect(db) as conn:  # untouched
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0


async def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError) as info:
        await SqliteStore.open(db)
    assert info.value.code == "store-error"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/dsip/relay.db", "/var/lib/dsip/relay.db"),
        ("sqlite:////var/lib/dsip/relay.db", "/var/lib/dsip/relay.db"),
        ("sqlite:relay.db", "relay.db"),
        ("sqlite:///tmp/with%20space.db", "/tmp/with space.db"),
        ("/srv/relay.db", "/srv/relay.db"),
        ("relay.db", "relay.db"),
    ],
)
def test_sqlite_url_forms(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://host/relay.db", "sqlite:", "sqlite:///a.db?mode=ro"])
def test_bad_sqlite_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError) as info:
        sqlite_path(url)
    assert info.value.code == "store-config"


async def test_open_store_dispatches_on_the_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with await open_store("sqlite:relative.db") as store:
        assert isinstance(store, SqliteStore)
    assert (tmp_path / "relative.db").exists()
    with pytest.raises(StoreError) as info:
        await open_store("mysql://localhost/relay")
    assert info.value.code == "store-config"
