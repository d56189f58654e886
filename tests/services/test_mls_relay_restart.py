"""The relay's MLS delivery-service state on disk (``Relay(mls_state=...)``,
``dsip relay --mls-state FILE``): a group of three over a real loopback relay goes on after
the relay is stopped and a new one is started on the same files; a key package handed out
before the restart is not handed out again; a failed write changes nothing; a damaged or
foreign state file is refused at startup and left as it was.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rfc9420", reason="the MLS library (PyPI rfc9420) is not installed")

from dsip.agent.messaging import CustodyClient, GroupAgent
from dsip.config import RelayConfig
from dsip.core.b64 import b64url_decode
from dsip.core.envelope import Verified, Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.errors import ConfigError, TransportError
from dsip.messaging.mls import ContentType, MlsMember, MlsMessage
from dsip.messaging.mls_service import MlsService
from dsip.messaging.mls_store import USED_RETENTION, GroupRecord, MlsChanges, MlsStore
from dsip.messaging.prekeys import PrekeyStore
from dsip.messaging.session_store import SessionStore
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store
from tests.services.procs import RelayProcess
from tests.services.test_mls_relay import STORE_KEY, Devices, events_until, texts

pytestmark = pytest.mark.timeout(120)


async def start_relay(tmp: Path, key: KeyPair, ca: LocalCA, mls_state: Path | None) -> Relay:
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp}/relay.db")
    store = await open_store(cfg.store)
    try:
        relay = Relay(cfg, key, store, server_ssl=ca.server_context(), mls_state=mls_state)
    except BaseException:
        await store.close()
        raise
    await relay.start()
    return relay


async def test_group_of_three_goes_on_after_a_relay_restart(
    tmp_path: Path, local_ca: LocalCA, client_ssl: ssl.SSLContext
) -> None:
    relay_key, state = KeyPair.generate(), tmp_path / "mls-state.db"
    keys = {n: KeyPair.generate() for n in ("alice", "bob", "carol", "dave")}
    relay = await start_relay(tmp_path, relay_key, local_ca, state)
    devices = Devices(relay, client_ssl, tmp_path)
    try:
        agents = {n: await devices.connect(n, k) for n, k in keys.items()}
        for n, count in (("bob", 1), ("carol", 1), ("dave", 2)):
            await agents[n].publish_key_packages(count)
        alice = agents["alice"]
        group = await alice.create_group()
        await alice.add(group, keys["bob"].did)
        at_epoch_1 = alice.member(group).to_bytes()  # alice's view before carol joined
        await alice.add(group, keys["carol"].did)
        for n in ("bob", "carol"):
            await events_until(agents[n], lambda e: e.epoch == 2)
        gid = alice.member(group).group_id
        handed = await alice.fetch_key_packages(keys["dave"].did)
        assert len(handed) == 1
        assert relay.mls.available(keys["dave"].did) == 1

        await relay.stop()
        relay = devices.relay = await start_relay(tmp_path, relay_key, local_ca, state)
        # the new relay knows the group and what is left of dave's key packages
        assert relay.mls.delivery.epoch(gid) == 2
        assert relay.mls.delivery.members(gid) == {keys[n].did for n in ("alice", "bob", "carol")}
        assert relay.mls.available(keys["dave"].did) == 1

        agents = {n: await devices.connect(n, k) for n, k in keys.items()}
        alice, bob, carol = agents["alice"], agents["bob"], agents["carol"]
        await alice.send(group, "after the restart")
        for agent in (bob, carol):
            got = await events_until(agent, lambda e: e.kind == "application")
            assert texts(got) == [(keys["alice"].did, "after the restart")]
        # a commit for the current epoch is accepted and followed by everyone
        event = await bob.update(group)
        assert (event.kind, event.epoch) == ("own-commit", 3)
        for agent in (alice, carol):
            got = await events_until(agent, lambda e: e.epoch == 3)
            assert got[-1].kind == "commit"
        assert relay.mls.delivery.epoch(gid) == 3
        # one for an epoch that already has its commit (from before the restart) is refused
        stale = MlsMember.from_bytes(at_epoch_1, keys["alice"])
        with pytest.raises(TransportError) as err:
            await alice.submit(stale.update().message)
        assert err.value.reason == "session.glare"
        assert relay.mls.delivery.epoch(gid) == 3

        # dave's package handed out before the restart is not handed out again, not even
        # when it is published once more
        await agents["dave"].submit(handed[0])
        assert relay.mls.available(keys["dave"].did) == 1
        left = await carol.fetch_key_packages(keys["dave"].did)
        assert len(left) == 1
        assert left[0].data != handed[0].data
        assert await carol.fetch_key_packages(keys["dave"].did) == []
        # the group still works after all of it
        await carol.send(group, "still here")
        got = await events_until(alice, lambda e: e.kind == "application")
        assert texts(got) == [(keys["carol"].did, "still here")]
    finally:
        await devices.close()
        await relay.stop()


async def test_in_memory_state_is_announced_once(
    relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dsip.relay")
    devices = Devices(relay, client_ssl, tmp_path)
    try:
        agent = await devices.connect("alice", KeyPair.generate())
        assert await agent.publish_key_packages(2) == 2
    finally:
        await devices.close()
    assert not relay.mls.durable
    warnings = [r for r in caplog.records if "MLS state is not durable" in r.getMessage()]
    assert len(warnings) == 1


# --- sans-I/O: the service on its store --------------------------------------------------


def _verified(sender: KeyPair, relay: KeyPair, kind: str, now: int, **fields: object) -> Verified:
    payload = make_payload(kind, sender=sender.did, now=now, profiles=[], to=relay.did, **fields)
    return Verifier().verify(sign_envelope(payload, sender), now=now)


def test_a_failed_write_changes_nothing_and_hand_outs_are_durable(tmp_path: Path) -> None:
    path, now = tmp_path / "mls.db", int(time.time())
    relay, dave, carol = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    package = MlsMember(dave).key_package(now)
    publish = _verified(dave, relay, "mls", now, **package.payload_fields())
    fetch = _verified(carol, relay, "mls-fetch", now, target=dave.did)
    service = MlsService(store=MlsStore.open(path, busy_timeout_ms=50))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        for v, before in ((publish, 0), (fetch, 1)):
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file
            action = service.handle(v, now=now)
            assert action.error is not None
            assert (action.error.code, action.error.reason) == (
                "mls-state-unsaved",
                "x-dsip.store-error",
            )
            assert action.reply is None
            assert service.available(dave.did) == before  # nothing taken, nothing handed out
            blocker.execute("ROLLBACK")
            action = service.handle(v, now=now)
            assert action.error is None
        assert action.reply is not None
        assert [k["device"] for k in action.reply["key_packages"]] == [dave.did]
    finally:
        blocker.close()
        service.close()
    # what was handed out is on disk as handed out: a new service neither holds it nor
    # takes it again
    service = MlsService.open(path)
    try:
        assert service.available(dave.did) == 0
        again = _verified(dave, relay, "mls", now + 1, **package.payload_fields())
        assert service.handle(again, now=now + 1).error is None
        assert service.available(dave.did) == 0
        fresh = MlsMember(dave).key_package(now)
        other = _verified(dave, relay, "mls", now + 2, **fresh.payload_fields())
        assert service.handle(other, now=now + 2).error is None
        assert service.available(dave.did) == 1  # a new package is taken as usual
    finally:
        service.close()


def _state(service: MlsService) -> object:
    """Everything the service decides with (the in-run acceptance counter aside)."""
    groups = {
        gid: (g.epoch, g.context, g.leaves, g.group_info, g.commits, g.committer, g.added)
        for gid, g in service.delivery._groups.items()
    }
    packages = {d: (e.identity, list(e.items)) for d, e in service._packages.items()}
    return groups, packages, service._identities, service._used


def _package(reply: dict[str, object]) -> MlsMessage:
    (item,) = reply["key_packages"]  # type: ignore[misc]
    return MlsMessage(ContentType.KEY_PACKAGE, b64url_decode(item["data"]))


def test_the_file_holds_what_the_service_decided_after_every_envelope(tmp_path: Path) -> None:
    now = int(time.time())
    relay = KeyPair.generate()
    keys = {n: KeyPair.generate() for n in ("alice", "bob", "carol")}
    members = {n: MlsMember(k) for n, k in keys.items()}
    service = MlsService.open(tmp_path / "mls.db")
    step = 0

    def handle(sender: str, kind: str, **fields: object) -> dict[str, object] | None:
        nonlocal step
        step += 1
        v = _verified(keys[sender], relay, kind, now + step, **fields)
        action = service.handle(v, now=now + step)
        assert action.error is None, action.error
        assert service.store is not None
        reread = MlsService()
        reread._load(service.store.load())  # what a restarted relay would start from
        assert _state(reread) == _state(service), f"after step {step} ({kind})"
        return action.reply

    def commit(sender: str, staged: object) -> None:
        message = staged.message  # type: ignore[attr-defined]
        handle(sender, "mls", **message.payload_fields())
        members[sender].merge()
        for n, m in members.items():
            if n != sender and (m.in_group or n in joining):
                m.process(message)
        joining.clear()

    try:
        joining: set[str] = set()
        alice = members["alice"]
        alice.create_group(now)
        for n in ("bob", "carol"):
            for _ in range(2):
                handle(n, "mls", **members[n].key_package(now).payload_fields())
        reply = handle("alice", "mls-fetch", target=keys["bob"].did)
        assert reply is not None
        bob_kp = _package(reply)
        joining.add("bob")
        commit("alice", alice.add([bob_kp], now))
        handle("alice", "mls", **alice.encrypt(b"one").payload_fields())
        commit("bob", members["bob"].update())
        reply = handle("bob", "mls-fetch", target=keys["carol"].did)
        assert reply is not None
        carol_kp = _package(reply)
        joining.add("carol")
        commit("bob", members["bob"].add([carol_kp], now))
        commit("alice", alice.remove(keys["bob"].did))
        assert service.delivery.members(alice.group_id) == {keys["alice"].did, keys["carol"].did}
        assert service.delivery.epoch(alice.group_id) == 4
        assert service.available(keys["bob"].did) == 1
    finally:
        service.close()


def test_hashes_of_handed_out_packages_are_forgotten_after_an_hour(tmp_path: Path) -> None:
    now, relay = int(time.time()), KeyPair.generate()
    dave, carol = KeyPair.generate(), KeyPair.generate()
    owner = MlsMember(dave)
    service = MlsService.open(tmp_path / "mls.db")
    try:
        for t in (now, now + USED_RETENTION + 1):
            package = owner.key_package(now)
            assert (
                service.handle(
                    _verified(dave, relay, "mls", t, **package.payload_fields()), now=t
                ).error
                is None
            )
            fetched = service.handle(
                _verified(carol, relay, "mls-fetch", t, target=dave.did), now=t
            )
            assert fetched.reply is not None
            assert len(fetched.reply["key_packages"]) == 1
        assert list(service._used.values()) == [now + USED_RETENTION + 1]
        assert service.store is not None
        assert list(service.store.load().used.values()) == [now + USED_RETENTION + 1]
    finally:
        service.close()


# --- hostile state files ------------------------------------------------------------------


def _valid_store(path: Path) -> None:
    """A store with one (made-up but well-formed) group and some key packages."""
    store = MlsStore.open(path)
    did = KeyPair.generate().did
    store.apply(
        MlsChanges(
            groups=(
                GroupRecord(
                    b"g" * 16, 2, b"ctx", ((0, did, b"k" * 32),), b"info" * 300, 3, did, frozenset()
                ),
            ),
            commits=((b"g" * 16, 0, b"a" * 32), (b"g" * 16, 1, b"b" * 32)),
            packages=((did, did, tuple(bytes([i]) * 1500 for i in range(12))),),
            identities=((did, did),),
        )
    )
    store.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not a database\xff" * 512)


def _prekeys(path: Path) -> None:
    PrekeyStore.open(path).close()


def _other_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()


def _damaged_page(path: Path) -> None:
    _valid_store(path)
    data = bytearray(path.read_bytes())
    data[4096 : 4096 + 16] = b"\xff" * 16  # the header of page 2
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    _valid_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def _edited(sql: str) -> object:
    def damage(path: Path) -> None:
        _valid_store(path)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(sql)
        conn.close()

    return damage


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_garbage, "not a readable SQLite database"),
        (_prekeys, "a dsip prekey store"),
        (_other_sqlite, "not a dsip MLS state file"),
        (_damaged_page, "refused"),
        (_truncated, "refused"),
        (_edited('UPDATE groups SET leaves = \'{"not": "a list"}\''), "damaged (groups row"),
        (_edited("UPDATE groups SET committer = 'nobody'"), "damaged (groups row"),
        (_edited("DELETE FROM commits WHERE epoch = 1"), "damaged (commit history"),
        (_edited("UPDATE commits SET digest = x'00'"), "damaged (commit hash"),
        (
            _edited("UPDATE key_packages SET identity = 'x' WHERE position = 3"),
            "damaged (key package",
        ),
        (_edited("CREATE TABLE extra (x INTEGER)"), "tables are not those"),
        (_edited("PRAGMA user_version = 7"), "unknown MLS state version 7"),
    ],
    ids=[
        "garbage",
        "prekeys-file",
        "other-sqlite",
        "damaged-page",
        "truncated",
        "leaves",
        "committer",
        "commit-gap",
        "commit-hash",
        "key-package-owner",
        "extra-table",
        "version",
    ],
)
def test_a_damaged_or_foreign_state_file_is_refused(tmp_path: Path, make: object, why: str) -> None:
    path = tmp_path / "mls.db"
    make(path)  # type: ignore[operator]
    before = hashlib.sha256(path.read_bytes()).digest()
    with pytest.raises(ConfigError) as err:
        MlsService.open(path)
    assert err.value.code == "mls-state-invalid"
    assert str(path) in err.value.message
    assert why in err.value.message
    assert hashlib.sha256(path.read_bytes()).digest() == before  # never reset or repaired
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_one_state_file_has_one_owner(tmp_path: Path) -> None:
    path = tmp_path / "mls.db"
    first = MlsService.open(path)
    try:
        with pytest.raises(ConfigError, match="in use by another relay"):
            MlsService.open(path)
    finally:
        first.close()
    MlsService.open(path).close()  # free again once the first is closed


def test_the_valid_store_used_above_opens(tmp_path: Path) -> None:
    _valid_store(tmp_path / "mls.db")
    service = MlsService.open(tmp_path / "mls.db")
    try:
        assert service.delivery.epoch(b"g" * 16) == 2
        assert sum(service.available(d) for d in service._packages) == 12
    finally:
        service.close()


async def test_the_relay_refuses_to_start_on_a_damaged_state_file(
    tmp_path: Path, local_ca: LocalCA
) -> None:
    bad = tmp_path / "mls.db"
    _garbage(bad)
    with pytest.raises(ConfigError, match="refused"):
        await start_relay(tmp_path, KeyPair.generate(), local_ca, bad)
    proc = subprocess.run(
        [sys.executable, "-m", "dsip", "relay", "--ws-port", "0", "--mls-state", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "mls-state-invalid" in proc.stderr
    assert str(bad) in proc.stderr


async def test_demo_mls_restart(tmp_path: Path, local_ca: LocalCA) -> None:
    from rich.console import Console

    from dsip.messaging.demo_mls_state import demo_mls_restart

    checks: list[tuple[bool, str]] = []
    console = Console(record=True, width=120)
    await demo_mls_restart(console, local_ca, tmp_path, lambda ok, what: checks.append((ok, what)))
    assert len(checks) == 5
    assert all(ok for ok, _ in checks), checks
    assert "session.glare" in console.export_text()


async def test_a_relay_process_killed_after_a_commit_keeps_the_group(tmp_path: Path) -> None:
    """``dsip relay --mls-state FILE`` killed with SIGKILL right after it accepted a commit:
    the restarted process has the epoch that commit created (written before the fan-out)."""
    state = tmp_path / "relay" / "mls-state.db"
    relay = RelayProcess(tmp_path / "relay")
    relay.start("--mls-state", str(state))
    keys = {n: KeyPair.generate() for n in ("alice", "bob", "carol")}
    stores = {n: SessionStore.open(tmp_path / f"{n}.db", key=STORE_KEY) for n in keys}
    agents: dict[str, GroupAgent] = {}

    async def online() -> dict[str, GroupAgent]:
        for n, key in keys.items():
            client = CustodyClient(key, verifier=Verifier())
            await client.connect(relay.uri, ssl_context=relay.ssl(), timeout=5)  # type: ignore[arg-type]
            agents[n] = GroupAgent(client, stores[n], timeout=10)
        return agents

    try:
        await online()
        for n in ("bob", "carol"):
            await agents[n].publish_key_packages(1)
        alice = agents["alice"]
        group = await alice.create_group()
        await alice.add(group, keys["bob"].did)
        at_epoch_1 = alice.member(group).to_bytes()
        await alice.add(group, keys["carol"].did)  # accepted: its echo came back
        for n in ("bob", "carol"):
            got = await events_until(agents[n], lambda e: e.epoch == 2)
            assert got[0].kind == "joined"
        relay.kill9()
        for agent in agents.values():
            await agent.client.close()
        relay.start("--mls-state", str(state))
        await online()
        alice, bob, carol = agents["alice"], agents["bob"], agents["carol"]
        # epoch 1 was taken before the crash: a fork of it is refused, not trusted anew
        stale = MlsMember.from_bytes(at_epoch_1, keys["alice"])
        with pytest.raises(TransportError) as err:
            await alice.submit(stale.update().message)
        assert err.value.reason == "session.glare"
        event = await carol.update(group)
        assert (event.kind, event.epoch) == ("own-commit", 3)
        await bob.send(group, "after the crash")
        got = await events_until(alice, lambda e: e.kind == "application")
        assert texts(got) == [(keys["bob"].did, "after the crash")]
        assert alice.member(group).epoch == 3
    finally:
        for agent in agents.values():
            await agent.client.close()
        for store in stores.values():
            store.close()
        relay.stop()
