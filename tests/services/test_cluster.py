"""A relay cluster: two real ``dsip relay`` processes, one real nats-server, one PostgreSQL.

Both nodes run with the same relay key and the same PostgreSQL store; NATS carries the
bindings and the cross-node deliveries (dsip.services.cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.errors import ConfigError
from dsip.services.cluster import ClusterConfig
from dsip.services.ports import free_port
from tests.services.procs import RelayProcess

pytestmark = [pytest.mark.network, pytest.mark.timeout(150)]


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server on a free 127.0.0.1 port, started and stopped by this fixture."""
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(exe):
        pytest.fail("nats-server is not installed (scripts/system-packages.txt installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-a", "127.0.0.1", "-p", str(port), "-l", str(tmp_path / "nats.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("nats-server did not start")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def pg_store(postgres_url: str) -> str:
    """The shared store, emptied for this test (the server is shared by the session)."""
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for table in ("envelopes", "known_identities"):
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                db.execute(f"DELETE FROM {table}")
    return postgres_url


def _stored(url: str, recipient: str) -> int:
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "SELECT count(*) FROM envelopes WHERE recipient = %s", (recipient,)
        ).fetchone()
        return int(row[0]) if row else 0


def _nodes(tmp_path: Path, store: str, nats: str, n: int = 2) -> list[RelayProcess]:
    seed = tmp_path / "relay.seed"  # one relay identity for every node
    seed.write_bytes(os.urandom(32))
    seed.chmod(0o600)
    nodes = []
    for i in range(n):
        node = RelayProcess(tmp_path / f"node{i}")
        node.start("--store", store, "--identity-seed-file", str(seed), "--cluster", nats)
        nodes.append(node)
    return nodes


async def _connect(node: RelayProcess, key: KeyPair, verifier: Verifier) -> SignalingClient:
    client = SignalingClient(key, verifier=verifier)
    await client.connect(node.uri, ssl_context=node.ssl(), timeout=10)  # type: ignore[arg-type]
    return client


def _intro(client: SignalingClient, to: str, text: str) -> dict[str, object]:
    return client.build(
        "introduction",
        to=to,
        purpose=text,
        ttl=3600,
        identity={"display_name": "Alice", "claims": []},
    )


async def _drain(client: SignalingClient, want: int, seen: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        try:
            v = await client.recv(max(0.1, deadline - time.monotonic()))
        except Exception:
            break
        if v.type == "introduction":
            seen.append(v.id)


async def _wait(predicate: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_clients_on_different_nodes_reach_each_other_live(
    tmp_path: Path, nats_url: str, pg_store: str
) -> None:
    a, b = _nodes(tmp_path, pg_store, nats_url)
    try:
        assert a.info["did"] == b.info["did"]  # one relay, two processes
        alice_key, bob_key = KeyPair.generate(), KeyPair.generate()
        alice = await _connect(a, alice_key, Verifier())
        bob = await _connect(b, bob_key, Verifier())
        sent = _intro(alice, bob_key.did, "hello across nodes")
        await alice.send(sent)
        got = await bob.recv(10)
        assert (got.type, got.id, got.payload["purpose"]) == (
            "introduction",
            sent["id"],
            "hello across nodes",
        )
        back = _intro(bob, alice_key.did, "hello back")
        await bob.send(back)
        assert (await alice.recv(10)).id == back["id"]
        # live traffic went over NATS, not through the queue
        assert _stored(pg_store, bob_key.did) == 0
        assert _stored(pg_store, alice_key.did) == 0
        await alice.close()
        await bob.close()
    finally:
        for node in (a, b):
            node.stop()


async def test_killing_a_node_mid_flush_loses_nothing_and_shows_nothing_twice(
    tmp_path: Path, nats_url: str, pg_store: str
) -> None:
    a, b = _nodes(tmp_path, pg_store, nats_url)
    try:
        bob_key, alice_key = KeyPair.generate(), KeyPair.generate()
        bob_verifier = Verifier()  # bob's own duplicate-id store outlives his connections
        bob = await _connect(a, bob_key, bob_verifier)
        await bob.close()  # bob is now known to the domain, and offline
        alice = await _connect(b, alice_key, Verifier())
        sent = []
        for i in range(40):
            p = _intro(alice, bob_key.did, f"message {i}")
            sent.append(p["id"])
            await alice.send(p)
        await _wait(lambda: _stored(pg_store, bob_key.did) == 40, "40 queued in PostgreSQL")

        seen: list[str] = []
        bob = await _connect(a, bob_key, bob_verifier)
        await _drain(bob, 10, seen, timeout=10)
        assert seen  # the flush from node A had begun
        a.kill9()  # node A dies mid-flush, acknowledgements in flight
        left_at_kill = _stored(pg_store, bob_key.did)
        assert left_at_kill >= 40 - len(seen)  # nothing acknowledged that bob had not read
        assert left_at_kill > 0  # A's flush was unfinished: B must deliver (and bob ack) these
        # what bob's client already took custody of (and acknowledged) is his to read
        await _drain(bob, 40, seen, timeout=1)
        with contextlib.suppress(Exception):
            await bob.close()
        bob = await _connect(b, bob_key, bob_verifier)  # bob's app reconnects elsewhere
        # a message sent while bob is on node B arrives live as well
        late = _intro(alice, bob_key.did, "after the failover")
        sent.append(late["id"])
        await alice.send(late)
        await _drain(bob, 41, seen, timeout=15)
        await _wait(lambda: _stored(pg_store, bob_key.did) == 0, "queue drained and acknowledged")
        await bob.close()
        await alice.close()
        assert sorted(seen) == sorted(sent)  # every envelope, exactly once
    finally:
        for node in (a, b):
            node.stop()


async def test_cluster_flag_needs_a_shared_postgres_store(tmp_path: Path) -> None:
    node = RelayProcess(tmp_path)
    with pytest.raises(AssertionError, match="shared --store postgresql"):
        node.start("--cluster", "nats://127.0.0.1:4222")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:4222", "nats://", "127.0.0.1:4222", "nats://h:1,ftp://x"]
)
def test_cluster_config_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        ClusterConfig(url)


def test_cluster_name_must_be_a_subject_token() -> None:
    with pytest.raises(ConfigError):
        ClusterConfig("nats://127.0.0.1:4222", name="a.b")
    with pytest.raises(ConfigError):
        ClusterConfig("nats://127.0.0.1:4222", name="")
