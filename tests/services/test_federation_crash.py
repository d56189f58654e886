"""Three federated relays as real processes (``python -m dsip relay``); one is ``kill -9``ed
and restarted mid-run while messages cross every pair: every message reaches its
recipient's application exactly once, none is lost.

Who keeps what, so that nothing is lost:

* an envelope for a foreign DID is in the origin relay's outbox (SQLite, fsynced) before
  anything else happens, and leaves it only on the far relay's custody ``ack``;
* the far relay acknowledges only after delivering to a bound device or storing it;
* a device whose own relay died re-sends what it had sent (the same signed bytes) once it
  is bound again — it cannot know what the relay had taken before dying;
* every duplicate this produces — relay-to-relay resends, device resends — is dropped by a
  duplicate-id store: the far relay's (answered with ``ack`` again) or, at the end, the
  recipient device's verifier. The application sees each id once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsip.agent.resolver import DidResolver
from dsip.errors import DsipError
from dsip.services.didweb_host import DidWebHost
from dsip.services.federation import OUTBOX_PREFIX, outbox_key, relay_document
from dsip.services.localca import LocalCA
from dsip.services.ports import free_port
from dsip.transport.base import ConnectionClosed
from tests.services.fedfix import Identity, User, introduction, publish_user

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.timeout(240)]


class FederatedRelay:
    """One relay process with a did:web identity, a fixed port and a store on disk."""

    def __init__(self, name: str, workdir: Path, host: DidWebHost, tls: dict[str, Path]) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        seed = os.urandom(32)
        self.seed_file = workdir / "relay.seed"
        self.seed_file.write_bytes(seed)
        self.seed_file.chmod(0o600)
        self.me = Identity.on(host, "relays", name, seed=seed)
        self.db = workdir / "relay.db"
        self.proc: subprocess.Popen[bytes] | None = None
        host.publish(self.me.did, relay_document(self.me.did, self.me.key, self.uri))
        (workdir / "relay.toml").write_text(
            # the test is about crashes, not about the per-DID limits
            "[relay]\nenvelopes_per_minute = 60000\ninvites_per_minute = 6000\n"
        )

    @property
    def uri(self) -> str:
        return f"wss://localhost:{self.port}/dsip"

    def start(self) -> None:
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / "relay.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsip",
                "relay",
                "--config",
                str(self.workdir / "relay.toml"),
                "--ws-port",
                str(self.port),
                "--tls-cert",
                str(self.tls["cert"]),
                "--tls-key",
                str(self.tls["key"]),
                "--trust-ca",
                str(self.tls["ca"]),
                "--store",
                f"sqlite:///{self.db}",
                "--identity-seed-file",
                str(self.seed_file),
                "--did",
                self.me.did,
                "--public-uri",
                self.uri,
                "--federation-backoff-max",
                "0.5",
                "--ready-file",
                str(ready),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"relay {self.name} exited: {(self.workdir / 'relay.log').read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"relay {self.name} did not become ready")
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def held(self, recipient_prefix: str) -> int:
        """Stored rows whose recipient key starts with ``recipient_prefix`` (read-only)."""
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute(
                "SELECT count(*) FROM envelopes WHERE substr(recipient, 1, ?) = ?",
                (len(recipient_prefix), recipient_prefix),
            ).fetchone()
            return int(row[0])
        finally:
            db.close()


class Agent:
    """A user's device that stays bound: reconnects when its relay goes away and then
    re-sends everything it has sent; counts what reaches the application."""

    def __init__(self, user: User) -> None:
        self.user = user
        self.sent: list[dict[str, Any]] = []
        self.seen: Counter[str] = Counter()
        self.errors: list[str] = []
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.user.connect()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.user.close()

    async def send(self, to: str, text: str) -> None:
        payload = introduction(self.user.did, to, text)
        self.sent.append(payload)
        client = self.user.client
        if client is not None:  # not bound right now: sent once bound again
            with contextlib.suppress(DsipError):
                await client.send(payload)

    async def _run(self) -> None:
        while True:
            client = self.user.client
            assert client is not None
            try:
                v = await client.recv()
            except ConnectionClosed:
                await self._rebind()
                continue
            if v.type == "introduction":
                self.seen[v.id] += 1
            elif v.type == "error":
                self.errors.append(f"{v.payload['reason']}: {v.payload.get('detail')}")

    async def _rebind(self) -> None:
        await self.user.close()
        while True:
            try:
                client = await self.user.connect(timeout=2)
                break
            except (DsipError, OSError, TimeoutError):
                await asyncio.sleep(0.1)
        self.reconnects += 1
        # Our relay may have died with some of our envelopes unrouted: send them all again
        # (deterministic Ed25519: the very same bytes, so duplicates are recognised).
        for payload in list(self.sent):
            with contextlib.suppress(DsipError):
                await client.send(payload)


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[tuple[LocalCA, DidWebHost, dict[str, Path]]]:
    ca = LocalCA.create()
    tls = {
        "ca": ca.write_ca_pem(tmp_path / "ca.pem"),
        "cert": tmp_path / "relay.crt",
        "key": tmp_path / "relay.key",
    }
    with open(tls["cert"], "wb") as fh:
        for pem in ca.server.cert_chain_pems:
            fh.write(pem.bytes())
    ca.server.private_key_pem.write_to_path(str(tls["key"]))
    tls["key"].chmod(0o600)
    with DidWebHost(ca) as host:
        yield ca, host, tls


@pytest.fixture
async def relays(
    tmp_path: Path, pki: tuple[LocalCA, DidWebHost, dict[str, Path]]
) -> AsyncIterator[dict[str, FederatedRelay]]:
    _, host, tls = pki
    procs = {name: FederatedRelay(name, tmp_path / name, host, tls) for name in ("a", "b", "c")}
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs.values()))
        yield procs
    finally:
        for p in procs.values():
            p.stop()


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_kill9_of_a_federated_relay_mid_run_loses_nothing_and_shows_nothing_twice(
    relays: dict[str, FederatedRelay], pki: tuple[LocalCA, DidWebHost, dict[str, Path]]
) -> None:
    ca, host, _ = pki
    resolver = DidResolver(verify=ca.client_context())
    agents: dict[str, Agent] = {}
    for name, user_name in (("a", "alice"), ("b", "bob"), ("c", "carol")):
        relay = relays[name]
        me = Identity.on(host, "users", user_name)
        publish_user(host, me, relay.uri)
        agents[name] = Agent(User(me, relay.me.did, relay.uri, resolver, ca.client_context()))
    try:
        for agent in agents.values():
            await agent.start()
        pairs = [(x, y) for x in agents for y in agents if x != y]

        async def round_(i: int) -> None:
            for x, y in pairs:
                await agents[x].send(agents[y].user.did, f"{x}->{y} #{i}")

        await round_(0)  # warm-up: every link up, every identity known everywhere
        await _until(lambda: all(len(a.seen) == 2 for a in agents.values()), 20, "warm-up")

        victim = relays["b"]
        for i in range(1, 13):
            await round_(i)
            await asyncio.sleep(0.05)
        await asyncio.to_thread(victim.kill9)  # mid-run, with traffic in every direction
        for i in range(13, 25):
            await round_(i)
            await asyncio.sleep(0.05)
        # While B is down, what A and C hold for it waits in their outboxes, on disk.
        outbox_b = outbox_key(victim.uri)
        await _until(
            lambda: relays["a"].held(outbox_b) > 0 and relays["c"].held(outbox_b) > 0,
            10,
            "envelopes for B held in A's and C's outboxes",
        )
        await asyncio.to_thread(victim.start)  # same port, same store, same identity
        for i in range(25, 37):
            await round_(i)
            await asyncio.sleep(0.05)

        expected: dict[str, set[str]] = {name: set() for name in agents}
        for agent in agents.values():
            for payload in agent.sent:
                for name, other in agents.items():
                    if payload["to"] == other.user.did:
                        expected[name].add(payload["id"])
        assert all(len(ids) == 2 * 37 for ids in expected.values())

        def all_delivered() -> bool:
            return all(set(a.seen) >= expected[n] for n, a in agents.items())

        try:
            await _until(all_delivered, 90, "every message delivered")
        finally:
            for name, agent in agents.items():
                missing = expected[name] - set(agent.seen)
                print(f"{name}: missing {len(missing)}, errors {agent.errors[:5]}")
        await asyncio.sleep(0.5)  # late duplicates, if any, would arrive now
        for name, agent in agents.items():
            assert set(agent.seen) == expected[name]
            assert set(agent.seen.values()) == {1}, f"{name} saw something twice"
            assert not agent.errors
        assert agents["b"].reconnects >= 1
        # ...and every relay let go of what it forwarded once custody passed.
        await _until(
            lambda: all(r.held(OUTBOX_PREFIX) == 0 for r in relays.values()),
            10,
            "outboxes drained",
        )
    finally:
        for agent in agents.values():
            await agent.stop()
        await resolver.aclose()


def test_relay_help_lists_the_federation_flags() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dsip", "relay", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--public-uri", "--federation-rate", "--federation-backoff-max", "--did"):
        assert flag in out
