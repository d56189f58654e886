"""One contract for every EnvelopeStore backend: SQLite (tmp_path) and a real PostgreSQL.

Each test gets an empty store. PostgreSQL tests share one server (``postgres_url``) and
isolate themselves in a fresh schema, selected through the URL's ``search_path``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dsip.storage import EnvelopeStore, StoreError, StoreLimits, open_store

pytestmark = pytest.mark.timeout(120)

NOW = 1_760_000_000
LATER = NOW + 3_600
ALICE = "did:key:z6MkAlice"
BOB = "did:key:z6MkBob"
ENVELOPE_COLUMNS = {"seq", "recipient", "envelope_id", "wire", "size", "expires_at"}


class Backend:
    """Opens stores on one location (file or schema) and closes them after the test."""

    def __init__(self, name: str, url: str, inspect_url: str) -> None:
        self.name = name
        self.url = url
        self._inspect_url = inspect_url
        self._opened: list[EnvelopeStore] = []

    async def open(self, limits: StoreLimits | None = None) -> EnvelopeStore:
        store = await open_store(self.url, limits=limits)
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()

    def columns(self, table: str) -> set[str]:
        if self.name == "sqlite":
            with sqlite3.connect(self._inspect_url) as conn:
                return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s",
                (table,),
            ).fetchall()
            return {str(row[0]) for row in rows}

    def tables(self) -> set[str]:
        if self.name == "sqlite":
            with sqlite3.connect(self._inspect_url) as conn:
                rows = conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%'"
                ).fetchall()
                return {row[0] for row in rows}
        import psycopg

        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            ).fetchall()
            return {str(row[0]) for row in rows}


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "relay.db"
        b = Backend("sqlite", f"sqlite://{path}", str(path))
        yield b
        await b.close_all()
        return
    import psycopg

    server: str = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    b = Backend("postgresql", f"{server}?options=-csearch_path%3D{schema}", server)
    yield b
    await b.close_all()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def store(backend: Backend) -> EnvelopeStore:
    return await backend.open()


def wire(n: int, size: int = 100) -> bytes:
    return (f"envelope-{n}:".encode() + bytes(range(256)) * (size // 256 + 1))[:size]


# -- put / pending / ack ---------------------------------------------------------------


async def test_pending_returns_envelopes_in_enqueue_order_with_metadata(
    store: EnvelopeStore,
) -> None:
    for n in (3, 1, 2):
        assert await store.put(ALICE, f"id-{n}", wire(n), expires_at=LATER, now=NOW)
    held = await store.pending(ALICE, now=NOW)
    assert [e.envelope_id for e in held] == ["id-3", "id-1", "id-2"]
    assert [e.wire for e in held] == [wire(3), wire(1), wire(2)]
    assert all(e.recipient == ALICE and e.size == 100 and e.expires_at == LATER for e in held)
    assert [e.seq for e in held] == sorted(e.seq for e in held)
    assert await store.pending(BOB, now=NOW) == []


async def test_ack_deletes_only_that_envelope_and_unknown_ack_is_false(
    store: EnvelopeStore,
) -> None:
    for n in range(3):
        await store.put(ALICE, f"id-{n}", wire(n), expires_at=LATER, now=NOW)
    await store.put(BOB, "id-1", wire(9), expires_at=LATER, now=NOW)
    assert await store.ack(ALICE, "id-1")
    assert not await store.ack(ALICE, "id-1")  # already gone
    assert not await store.ack(ALICE, "never-stored")
    assert [e.envelope_id for e in await store.pending(ALICE, now=NOW)] == ["id-0", "id-2"]
    assert [e.envelope_id for e in await store.pending(BOB, now=NOW)] == ["id-1"]


async def test_pending_pages_with_limit_and_after_seq(store: EnvelopeStore) -> None:
    for n in range(7):
        await store.put(ALICE, f"id-{n}", wire(n), expires_at=LATER, now=NOW)
    seen: list[str] = []
    after = 0
    while page := await store.pending(ALICE, now=NOW, limit=3, after_seq=after):
        assert len(page) <= 3
        seen += [e.envelope_id for e in page]
        after = page[-1].seq
    assert seen == [f"id-{n}" for n in range(7)]


async def test_wire_bytes_round_trip_exactly(store: EnvelopeStore) -> None:
    blobs = [bytes(range(256)), b"\x00" * 10, bytearray(b"\xff\x00\xfe"), memoryview(b"mv")]
    for n, blob in enumerate(blobs):
        await store.put(ALICE, f"id-{n}", blob, expires_at=LATER, now=NOW)  # type: ignore[arg-type]
    held = await store.pending(ALICE, now=NOW)
    assert [e.wire for e in held] == [bytes(b) for b in blobs]
    assert all(type(e.wire) is bytes for e in held)


async def test_seq_is_never_reused_after_the_newest_envelope_is_acked(
    backend: Backend,
) -> None:
    store = await backend.open()
    await store.put(ALICE, "a", wire(1), expires_at=LATER, now=NOW)
    await store.put(ALICE, "b", wire(2), expires_at=LATER, now=NOW)
    (_, b) = await store.pending(ALICE, now=NOW)
    await store.ack(ALICE, "b")
    await store.close()
    store = await backend.open()  # a restart must not hand out b's seq again either
    await store.put(ALICE, "c", wire(3), expires_at=LATER, now=NOW)
    assert [e.envelope_id for e in await store.pending(ALICE, now=NOW, after_seq=b.seq)] == ["c"]


# -- idempotency -----------------------------------------------------------------------


async def test_re_put_of_a_held_envelope_is_a_no_op(store: EnvelopeStore) -> None:
    assert await store.put(ALICE, "id-1", wire(1), expires_at=LATER, now=NOW)
    assert not await store.put(ALICE, "id-1", wire(1), expires_at=LATER, now=NOW + 5)
    assert not await store.put(ALICE, "id-1", b"different bytes", expires_at=LATER, now=NOW)
    (held,) = await store.pending(ALICE, now=NOW)
    assert held.wire == wire(1)  # first write wins
    assert (await store.stats()).envelopes == 1
    assert await store.put(BOB, "id-1", wire(1), expires_at=LATER, now=NOW)  # per recipient


# -- quota -----------------------------------------------------------------------------


async def test_quota_by_count_refuses_with_rate_limited_and_frees_on_ack(
    backend: Backend,
) -> None:
    store = await backend.open(StoreLimits(max_envelopes_per_recipient=3))
    for n in range(3):
        assert await store.put(ALICE, f"id-{n}", wire(n), expires_at=LATER, now=NOW)
    with pytest.raises(StoreError) as info:
        await store.put(ALICE, "id-3", wire(3), expires_at=LATER, now=NOW)
    assert (info.value.code, info.value.reason, info.value.remote) == (
        "store-quota",
        "transport.rate-limited",
        True,
    )
    # a retry of an envelope already held is not a quota violation
    assert not await store.put(ALICE, "id-0", wire(0), expires_at=LATER, now=NOW)
    assert await store.put(BOB, "id-3", wire(3), expires_at=LATER, now=NOW)  # per recipient
    assert await store.ack(ALICE, "id-0")
    assert await store.put(ALICE, "id-3", wire(3), expires_at=LATER, now=NOW)
    assert (await store.stats(ALICE)).envelopes == 3


async def test_quota_by_bytes(backend: Backend) -> None:
    store = await backend.open(StoreLimits(max_bytes_per_recipient=1000))
    assert await store.put(ALICE, "a", wire(1, 600), expires_at=LATER, now=NOW)
    assert await store.put(ALICE, "b", wire(2, 400), expires_at=LATER, now=NOW)  # exactly full
    with pytest.raises(StoreError, match="bytes") as info:
        await store.put(ALICE, "c", wire(3, 1), expires_at=LATER, now=NOW)
    assert info.value.code == "store-quota"
    assert (await store.stats(ALICE)).bytes == 1000


async def test_expired_envelopes_do_not_count_against_the_quota(backend: Backend) -> None:
    store = await backend.open(StoreLimits(max_envelopes_per_recipient=2))
    await store.put(ALICE, "short-1", wire(1), expires_at=NOW + 10, now=NOW)
    await store.put(ALICE, "short-2", wire(2), expires_at=NOW + 10, now=NOW)
    assert await store.put(ALICE, "fresh", wire(3), expires_at=LATER, now=NOW + 10)
    assert [e.envelope_id for e in await store.pending(ALICE, now=NOW + 10)] == ["fresh"]


async def test_an_envelope_above_the_frame_limit_is_refused(store: EnvelopeStore) -> None:
    with pytest.raises(StoreError) as info:
        await store.put(ALICE, "big", b"x" * 65_537, expires_at=LATER, now=NOW)
    assert (info.value.code, info.value.reason) == (
        "store-too-large",
        "transport.envelope-too-large",
    )
    assert await store.put(ALICE, "max", b"x" * 65_536, expires_at=LATER, now=NOW)


# -- expiry ----------------------------------------------------------------------------


async def test_pending_skips_expired_and_purge_deletes_them(store: EnvelopeStore) -> None:
    await store.put(ALICE, "soon", wire(1), expires_at=NOW + 10, now=NOW)
    await store.put(ALICE, "late", wire(2), expires_at=NOW + 100, now=NOW)
    await store.put(BOB, "soon", wire(3), expires_at=NOW + 10, now=NOW)
    assert len(await store.pending(ALICE, now=NOW + 9)) == 2
    assert [e.envelope_id for e in await store.pending(ALICE, now=NOW + 10)] == ["late"]
    assert (await store.stats()).envelopes == 3  # expiry is lazy until purged
    assert await store.purge_expired(NOW + 10) == 2
    assert await store.purge_expired(NOW + 10) == 0
    assert (await store.stats()).envelopes == 1
    assert not await store.ack(ALICE, "soon")


async def test_put_refuses_an_envelope_already_expired(store: EnvelopeStore) -> None:
    for expires_at in (NOW, NOW - 1, 0):
        with pytest.raises(StoreError) as info:
            await store.put(ALICE, "old", wire(1), expires_at=expires_at, now=NOW)
        assert info.value.code == "store-expired"
    assert (await store.stats()).envelopes == 0


async def test_hold_deadline_is_capped_by_the_relay_retention(backend: Backend) -> None:
    store = await backend.open(StoreLimits(retention_s=60))
    await store.put(ALICE, "far", wire(1), expires_at=NOW + 10**6, now=NOW)
    (held,) = await store.pending(ALICE, now=NOW)
    assert held.expires_at == NOW + 60  # §13.3: the earlier of expires_at and retention
    assert await store.pending(ALICE, now=NOW + 60) == []


# -- known identities ------------------------------------------------------------------


async def test_known_identities_with_retention(store: EnvelopeStore) -> None:
    assert not await store.is_known(ALICE, now=NOW, retention_s=100)
    await store.remember_identity(ALICE, now=NOW)
    assert await store.is_known(ALICE, now=NOW, retention_s=100)
    assert await store.is_known(ALICE, now=NOW + 100, retention_s=100)
    assert not await store.is_known(ALICE, now=NOW + 101, retention_s=100)
    assert not await store.is_known(BOB, now=NOW, retention_s=100)
    await store.remember_identity(ALICE, now=NOW - 50)  # a late, older record never rewinds
    assert await store.is_known(ALICE, now=NOW + 100, retention_s=100)
    await store.remember_identity(ALICE, now=NOW + 200)
    assert await store.is_known(ALICE, now=NOW + 250, retention_s=100)


async def test_forget_identities_drops_only_stale_ones(store: EnvelopeStore) -> None:
    await store.remember_identity(ALICE, now=NOW)
    await store.remember_identity(BOB, now=NOW + 500)
    assert await store.forget_identities(now=NOW + 600, retention_s=300) == 1
    assert not await store.is_known(ALICE, now=NOW, retention_s=10**6)
    assert await store.is_known(BOB, now=NOW + 600, retention_s=300)


# -- stats -----------------------------------------------------------------------------


async def test_stats_count_envelopes_bytes_and_recipients(store: EnvelopeStore) -> None:
    empty = await store.stats()
    assert (empty.envelopes, empty.bytes, empty.recipients) == (0, 0, 0)
    await store.put(ALICE, "a", wire(1, 10), expires_at=LATER, now=NOW)
    await store.put(ALICE, "b", wire(2, 20), expires_at=LATER, now=NOW)
    await store.put(BOB, "c", wire(3, 40), expires_at=LATER, now=NOW)
    total = await store.stats()
    assert (total.envelopes, total.bytes, total.recipients) == (3, 70, 2)
    alice = await store.stats(ALICE)
    assert (alice.envelopes, alice.bytes, alice.recipients) == (2, 30, 1)
    nobody = await store.stats("did:key:z6MkNobody")
    assert (nobody.envelopes, nobody.bytes, nobody.recipients) == (0, 0, 0)


# -- hostile input ---------------------------------------------------------------------

PUT_OK: dict[str, Any] = {
    "recipient": ALICE,
    "envelope_id": "id-1",
    "wire": b"sealed",
    "expires_at": LATER,
    "now": NOW,
}

HOSTILE_PUTS = [
    ("huge recipient", {"recipient": "did:key:z" + "A" * 10_000_000}),
    ("empty recipient", {"recipient": ""}),
    ("recipient not str", {"recipient": 42}),
    ("recipient bytes", {"recipient": b"did:key:z6MkAlice"}),
    ("recipient NUL", {"recipient": "did:key:z6Mk\x00Alice"}),
    ("recipient lone surrogate", {"recipient": "did:key:z6Mk\ud800"}),
    ("recipient space", {"recipient": "did:key:z6Mk Alice"}),
    ("recipient newline", {"recipient": "did:key:z6Mk\nAlice"}),
    ("recipient non-ASCII", {"recipient": "did:key:z6Mkалиса"}),
    ("huge envelope id", {"envelope_id": "i" * 257}),
    ("empty envelope id", {"envelope_id": ""}),
    ("envelope id None", {"envelope_id": None}),
    ("wire str", {"wire": "sealed"}),
    ("wire int", {"wire": 123}),
    ("wire None", {"wire": None}),
    ("wire list", {"wire": [1, 2, 3]}),
    ("wire empty", {"wire": b""}),
    ("negative now", {"now": -1}),
    ("negative expires_at", {"expires_at": -5}),
    ("absurd now", {"now": 2**63}),
    ("absurd expires_at", {"expires_at": 10**30}),
    ("float now", {"now": float(NOW)}),
    ("bool now", {"now": True}),
    ("str expires_at", {"expires_at": str(LATER)}),
]


@pytest.mark.parametrize(
    "override", [case for _, case in HOSTILE_PUTS], ids=[name for name, _ in HOSTILE_PUTS]
)
async def test_hostile_put_raises_store_error_and_stores_nothing(
    store: EnvelopeStore, override: dict[str, Any]
) -> None:
    args = {**PUT_OK, **override}
    with pytest.raises(StoreError) as info:
        await store.put(
            args["recipient"],
            args["envelope_id"],
            args["wire"],
            expires_at=args["expires_at"],
            now=args["now"],
        )
    assert info.value.remote
    assert (await store.stats()).envelopes == 0


HOSTILE_READS = [
    ("pending limit 0", lambda s: s.pending(ALICE, now=NOW, limit=0)),
    ("pending limit negative", lambda s: s.pending(ALICE, now=NOW, limit=-1)),
    ("pending limit absurd", lambda s: s.pending(ALICE, now=NOW, limit=10**9)),
    ("pending after_seq negative", lambda s: s.pending(ALICE, now=NOW, after_seq=-1)),
    ("pending huge recipient", lambda s: s.pending("d" * 100_000, now=NOW)),
    ("pending now float", lambda s: s.pending(ALICE, now=1.5)),
    ("ack envelope id int", lambda s: s.ack(ALICE, 7)),
    ("ack huge recipient", lambda s: s.ack("d" * 100_000, "id")),
    ("purge negative", lambda s: s.purge_expired(-1)),
    ("purge absurd", lambda s: s.purge_expired(2**64)),
    ("stats recipient bytes", lambda s: s.stats(b"did:key:z")),
    ("remember NUL", lambda s: s.remember_identity("did:\x00", now=NOW)),
    ("remember negative now", lambda s: s.remember_identity(ALICE, now=-1)),
    ("is_known retention negative", lambda s: s.is_known(ALICE, now=NOW, retention_s=-1)),
    ("is_known retention absurd", lambda s: s.is_known(ALICE, now=NOW, retention_s=2**80)),
    ("forget retention negative", lambda s: s.forget_identities(now=NOW, retention_s=-1)),
]


@pytest.mark.parametrize(
    "call", [call for _, call in HOSTILE_READS], ids=[name for name, _ in HOSTILE_READS]
)
async def test_hostile_arguments_to_other_methods_raise_store_error(
    store: EnvelopeStore, call: Any
) -> None:
    with pytest.raises(StoreError) as info:
        await call(store)
    assert info.value.code == "store-invalid"


# -- concurrency -----------------------------------------------------------------------


async def _race(stores: list[EnvelopeStore], n: int) -> tuple[int, list[StoreError]]:
    results = await asyncio.gather(
        *(
            stores[i % len(stores)].put(ALICE, f"id-{i}", wire(i), expires_at=LATER, now=NOW)
            for i in range(n)
        ),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, StoreError) and e.code == "store-quota" for e in errors), errors
    return sum(r is True for r in results), errors  # type: ignore[misc]


async def test_concurrent_puts_never_overshoot_the_quota(backend: Backend) -> None:
    store = await backend.open(StoreLimits(max_envelopes_per_recipient=50))
    stored, errors = await _race([store], 100)
    assert (stored, len(errors)) == (50, 50)
    assert (await store.stats(ALICE)).envelopes == 50


async def test_two_stores_on_one_database_never_overshoot_the_quota(backend: Backend) -> None:
    # Two relay processes sharing one database: the quota check must hold across connections.
    limits = StoreLimits(max_envelopes_per_recipient=50)
    stores = [await backend.open(limits), await backend.open(limits)]
    stored, errors = await _race(stores, 100)
    assert (stored, len(errors)) == (50, 50)
    assert (await stores[0].stats(ALICE)).envelopes == 50
    held = await stores[1].pending(ALICE, now=NOW, limit=100)
    assert len({e.envelope_id for e in held}) == 50


# -- what the operator can see ---------------------------------------------------------


async def test_rows_hold_only_the_blob_and_minimal_metadata(
    backend: Backend, store: EnvelopeStore
) -> None:
    await store.put(ALICE, "id-1", b"opaque sealed bytes", expires_at=LATER, now=NOW)
    assert backend.columns("envelopes") == ENVELOPE_COLUMNS
    assert backend.columns("known_identities") == {"identity", "last_seen"}
    assert backend.tables() <= {"envelopes", "known_identities", "schema_version"}


# -- lifecycle -------------------------------------------------------------------------


async def test_reopen_finds_the_queue_intact(backend: Backend) -> None:
    store = await backend.open()
    for n in range(5):
        await store.put(ALICE, f"id-{n}", wire(n), expires_at=LATER, now=NOW)
    await store.remember_identity(ALICE, now=NOW)
    await store.close()
    store = await backend.open()
    held = await store.pending(ALICE, now=NOW)
    assert [(e.envelope_id, e.wire) for e in held] == [(f"id-{n}", wire(n)) for n in range(5)]
    assert await store.is_known(ALICE, now=NOW, retention_s=1)


async def test_a_closed_store_refuses_calls_and_close_is_idempotent(
    store: EnvelopeStore,
) -> None:
    await store.close()
    await store.close()
    with pytest.raises(StoreError) as info:
        await store.put(ALICE, "id", b"x", expires_at=LATER, now=NOW)
    assert info.value.code == "store-closed"
    with pytest.raises(StoreError):
        await store.pending(ALICE, now=NOW)


async def test_close_waits_for_calls_already_made(store: EnvelopeStore) -> None:
    puts = [
        asyncio.ensure_future(store.put(ALICE, f"id-{n}", wire(n), expires_at=LATER, now=NOW))
        for n in range(20)
    ]
    await asyncio.sleep(0)  # let every put reach the store before closing
    await store.close()
    assert all(await asyncio.gather(*puts))
