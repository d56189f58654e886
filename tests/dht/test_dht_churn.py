"""Churn: 20 ``dsip dht-node`` processes, 30 % killed with SIGKILL mid-run.

Publishers (client mode, so records live only on the storing processes) republish at
TTL/2 = 30 s. After one republish interval, lookups for every live publisher must still
succeed (≥ 99 % of 200 lookups: 4 for each of 50 DIDs, from a fresh reader).

All 50 publishers share this process's one trio thread; a put costs ~40 Kademlia RPCs, so
50 per 30 s is what the 2-core test machine sustains next to 20 node processes.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from dsip.core.identity import KeyPair
from dsip.dht import DhtClient, DhtNodeConfig, PresencePublisher
from tests.dht.dhtfix import frame, spawn_network, stop_network, wait_for

pytestmark = [pytest.mark.network, pytest.mark.slow]

NODES = 20
DIDS = 50
LOOKUPS_PER_DID = 4
TTL = 60  # the shortest presence lifetime (seed §5.1): republish every 30 s


@pytest.mark.timeout(300)
async def test_lookups_survive_kill_9_of_30_percent_of_nodes(tmp_path: Path) -> None:
    procs = await spawn_network(tmp_path, NODES)
    publisher_node = reader = None
    publishers: list[PresencePublisher] = []
    try:
        boot = (procs[0].addr, procs[1].addr)
        publisher_node = await DhtClient.start(DhtNodeConfig(server=False, bootstrap=boot))
        keys = [KeyPair.generate() for _ in range(DIDS)]
        for key in keys:
            pub = PresencePublisher(
                publisher_node, lambda seq, t, key=key: frame(key, seq=seq, at=t, ttl=TTL)
            )
            publishers.append(pub)
            # devices come online one after another, not in the same instant
            report = await pub.publish()
            assert report.stored >= 10
            pub.start()  # republishes at TTL/2 from now on

        victims = random.Random(42).sample(procs, k=int(NODES * 0.3))
        killed_at = time.monotonic()
        for victim in victims:
            victim.kill9()
        assert all(v.proc.returncode == -9 for v in victims)
        rounds_at_kill = [p.rounds for p in publishers]

        # one republish interval after the kill: every publisher has re-put since
        await wait_for(
            lambda: all(p.rounds > r for p, r in zip(publishers, rounds_at_kill, strict=True)),
            timeout=TTL / 2 + 60,
        )
        assert time.monotonic() - killed_at <= TTL / 2 + 60

        live = [p for p in procs if p not in victims]
        reader = await DhtClient.start(
            DhtNodeConfig(server=False, bootstrap=(live[-1].addr, live[-2].addr))
        )
        sem = asyncio.Semaphore(4)

        async def lookup(key: KeyPair, quorum: int) -> bool:
            async with sem:
                record = await reader.resolve(key.did, quorum=quorum)
                return record is not None and record.subject == key.did

        # default quorum (3) and exhaustive reads (all k closest), twice each
        found = await asyncio.gather(
            *(lookup(k, q) for k in keys for q in (3, 0, 3, 0)[:LOOKUPS_PER_DID])
        )
        rate = sum(found) / len(found)
        assert len(found) == DIDS * LOOKUPS_PER_DID
        assert rate >= 0.99, f"only {rate:.1%} of lookups succeeded"
    finally:
        for pub in publishers:
            await pub.stop()
        for client in (publisher_node, reader):
            if client is not None:
                await client.close()
        stop_network(procs)
