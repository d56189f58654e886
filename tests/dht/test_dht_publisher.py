"""The publisher: republish at TTL/2 with a higher seq, retry after a miss, refuse bad records.

Nodes and publisher share a manual clock, so "30 s later" takes no real time.
"""

from __future__ import annotations

import asyncio

import pytest

from dsip.core.identity import KeyPair
from dsip.dht import PresencePublisher, RecordKey
from dsip.errors import DsipError
from tests.dht.dhtfix import ManualClock, frame, now, swarm, wait_for

pytestmark = [pytest.mark.network, pytest.mark.timeout(90)]


async def test_republishes_at_half_the_ttl_so_the_record_never_lapses() -> None:
    clock = ManualClock(now())
    t0 = clock()
    alice = KeyPair.generate()
    async with swarm(3, clock=clock) as nodes:
        pub = PresencePublisher(
            nodes[0],
            lambda seq, t: frame(alice, seq=seq, at=t, ttl=60),
            clock=clock,
            sleep=clock.sleep,
        )
        pub.start()
        try:
            await wait_for(lambda: pub.rounds == 1)
            assert pub.last is not None
            assert pub.last.stored == 2
            assert pub.last.republish_at == t0 + 30
            first = await nodes[2].resolve(alice.did)
            assert first is not None
            assert first.seq == t0

            await clock.advance(29)  # before TTL/2: nothing new
            await asyncio.sleep(0.3)
            assert pub.rounds == 1

            await clock.advance(2)  # t0 + 31: past TTL/2
            await wait_for(lambda: pub.rounds == 2)
            second = await nodes[2].resolve(alice.did)
            assert second is not None
            assert second.seq == t0 + 31 > first.seq
            for node in nodes[1:]:  # storing nodes replaced the old record
                held = node.node.raw_local(RecordKey.presence(alice.did))
                assert held == second.frame.encode()

            await clock.advance(40)  # t0 + 71: the first record's expiry (t0 + 60) is past
            await wait_for(lambda: pub.rounds == 3)
            third = await nodes[1].resolve(alice.did)
            assert third is not None
            assert third.seq == t0 + 71
        finally:
            await pub.stop()
        await clock.advance(100)  # stopped: the last record expires everywhere
        assert await nodes[2].resolve(alice.did) is None
        assert await nodes[1].get(RecordKey.presence(alice.did)) == []


async def test_retries_with_backoff_while_no_peer_stores_the_record() -> None:
    clock = ManualClock(now())
    alice = KeyPair.generate()
    async with swarm(1, clock=clock) as nodes:  # a lone node: nobody to store at
        pub = PresencePublisher(
            nodes[0],
            lambda seq, t: frame(alice, seq=seq, at=t, ttl=60),
            clock=clock,
            sleep=clock.sleep,
            retry_s=2,
        )
        pub.start()
        try:
            await wait_for(lambda: pub.rounds == 1)
            assert pub.last is not None
            assert pub.last.stored == 0
            await clock.advance(2)
            await wait_for(lambda: pub.rounds == 2)
            await clock.advance(3)  # backoff doubled to 4 s: not yet
            await asyncio.sleep(0.3)
            assert pub.rounds == 2
            await clock.advance(1)
            await wait_for(lambda: pub.rounds == 3)
        finally:
            await pub.stop()


async def test_an_invalid_own_record_is_refused_before_sending() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    async with swarm(2) as nodes:
        pub = PresencePublisher(
            nodes[0], lambda seq, t: frame(mallory, subject=alice.did, seq=seq, at=t)
        )
        with pytest.raises(DsipError) as info:
            await pub.publish()
        assert info.value.code == "signer-mismatch"
        assert await nodes[1].get(RecordKey.presence(alice.did)) == []
        task = pub.start()
        with pytest.raises(DsipError):
            await asyncio.wait_for(task, 5)  # run() gives up: retrying cannot help
