"""``kill -9`` of a real relay process with queued envelopes: nothing lost, nothing shown twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair

pytestmark = pytest.mark.timeout(120)


class RelayProcess:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, object] = {}
        seed = workdir / "relay.seed"
        if not seed.exists():
            seed.write_bytes(os.urandom(32))
            seed.chmod(0o600)

    def start(self) -> None:
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsip",
                "relay",
                "--ws-port",
                "0",
                "--local-ca",
                str(self.workdir / "tls"),
                "--store",
                f"sqlite:///{self.workdir}/relay.db",
                "--identity-seed-file",
                str(self.workdir / "relay.seed"),
                "--ready-file",
                str(ready),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"relay exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("relay did not become ready")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def uri(self) -> str:
        return f"wss://localhost:{self.info['ws_port']}/dsip"

    def ssl(self) -> object:
        import ssl

        return ssl.create_default_context(cafile=str(self.workdir / "tls" / "ca.pem"))

    def stored(self, recipient: str) -> int:
        db = sqlite3.connect(f"file:{self.workdir}/relay.db?mode=ro", uri=True, timeout=5)
        try:
            return int(
                db.execute(
                    "SELECT count(*) FROM envelopes WHERE recipient = ?", (recipient,)
                ).fetchone()[0]
            )
        finally:
            db.close()


async def _connect(relay: RelayProcess, key: KeyPair, verifier: Verifier) -> SignalingClient:
    client = SignalingClient(key, verifier=verifier)
    await client.connect(relay.uri, ssl_context=relay.ssl(), timeout=10)  # type: ignore[arg-type]
    return client


async def _drain(client: SignalingClient, want: int, seen: list[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        try:
            v = await client.recv(max(0.1, deadline - time.monotonic()))
        except (TimeoutError, Exception):
            break
        if v.type == "introduction":
            seen.append(v.id)


async def _wait_stored(relay: RelayProcess, recipient: str, n: int) -> None:
    for _ in range(200):
        if relay.stored(recipient) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {n} stored, found {relay.stored(recipient)}")


async def test_kill9_with_queued_envelopes_loses_nothing_and_shows_nothing_twice(
    tmp_path: Path,
) -> None:
    relay = RelayProcess(tmp_path)
    relay.start()
    try:
        bob_key, alice_key = KeyPair.generate(), KeyPair.generate()
        bob_verifier = (
            Verifier()
        )  # bob's application-side duplicate-id store survives relay restarts
        bob = await _connect(relay, bob_key, bob_verifier)
        await bob.close()  # bob is now a known, offline identity

        alice = await _connect(relay, alice_key, Verifier())
        sent = []
        for i in range(40):
            p = alice.build(
                "introduction",
                to=bob_key.did,
                purpose=f"message {i}",
                ttl=3600,
                identity={"display_name": "Alice", "claims": []},
            )
            sent.append(p["id"])
            await alice.send(p)
        await _wait_stored(relay, bob_key.did, 40)
        await alice.close()

        relay.kill9()  # queued envelopes are on disk, nothing else is
        relay.start()
        assert relay.stored(bob_key.did) == 40

        seen: list[str] = []
        bob = await _connect(relay, bob_key, bob_verifier)
        await _drain(bob, 40, seen)
        # Kill again right away: some acks may not have been processed; those envelopes are
        # delivered again after the restart and must be refused as duplicates by bob.
        relay.kill9()
        await bob.close()
        relay.start()
        bob = await _connect(relay, bob_key, bob_verifier)
        await _drain(bob, 40, seen, timeout=3)
        await asyncio.sleep(0.5)  # let the acknowledgements land
        await bob.close()

        assert sorted(seen) == sorted(sent)  # every envelope, exactly once
        await _wait_stored(relay, bob_key.did, 0)  # and the relay let go of them after the ack
    finally:
        relay.stop()
