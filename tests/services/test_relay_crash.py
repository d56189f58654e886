"""``kill -9`` of a real relay process with queued envelopes: nothing lost, nothing shown twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from tests.services.procs import RelayProcess

pytestmark = pytest.mark.timeout(120)


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


async def test_graceful_shutdown_keeps_the_queue(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path)
    relay.start()
    try:
        bob_key = KeyPair.generate()
        bob = await _connect(relay, bob_key, Verifier())
        await bob.close()
        alice = await _connect(relay, KeyPair.generate(), Verifier())
        for i in range(5):
            await alice.send(
                alice.build(
                    "introduction",
                    to=bob_key.did,
                    purpose=f"m{i}",
                    ttl=3600,
                    identity={"display_name": "Alice", "claims": []},
                )
            )
        await _wait_stored(relay, bob_key.did, 5)
        await alice.close()
        relay.stop()  # SIGTERM: closes connections with 1001, checkpoints the store
        assert relay.proc is not None
        assert relay.proc.returncode == 0
        relay.start()
        assert relay.stored(bob_key.did) == 5
        seen: list[str] = []
        bob = await _connect(relay, bob_key, Verifier())
        await _drain(bob, 5, seen)
        await bob.close()
        assert len(seen) == 5
    finally:
        relay.stop()
