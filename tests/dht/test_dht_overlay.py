"""Presence records and region buckets stored and found across in-process loopback swarms.

All nodes run on the process's single trio thread (several libp2p hosts per process).
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from dsip.agent.aliases import AliasResolver
from dsip.agent.lookup import Lookup
from dsip.agent.resolver import DidResolver
from dsip.core.envelope import make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.dht import DhtClient, LookupSource, PresencePublisher, RecordKey
from dsip.services.localca import LocalCA
from dsip.services.webfinger import WebFingerResponder, WebFingerServer
from tests.dht.dhtfix import frame, now, swarm

pytestmark = [pytest.mark.network]


async def _gather_limited(n: int, coros: list) -> list:  # type: ignore[type-arg]
    sem = asyncio.Semaphore(n)

    async def one(c):  # type: ignore[no-untyped-def]
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


@pytest.mark.timeout(60)
async def test_put_get_round_trip_across_three_nodes() -> None:
    async with swarm(3) as nodes:
        alice = KeyPair.generate()
        value = frame(alice)
        key = RecordKey.presence(alice.did)
        acks = await nodes[0].put(key, value)
        assert acks == 2  # k = 20 > 3: every other node stores it
        for reader in nodes[1:]:
            assert value in await reader.get(key)
            record = await reader.resolve(alice.did)
            assert record is not None
            assert record.subject == alice.did
            assert record.endpoints == {"ws": ["wss://relay.example/dsip"]}
            assert reader.node.raw_local(key) == value  # held by every node
        assert await nodes[2].resolve(KeyPair.generate().did) is None


@pytest.mark.timeout(300)
@pytest.mark.slow
async def test_twenty_nodes_hundred_dids_found_by_did_and_by_alias() -> None:
    rng = random.Random(7)
    async with swarm(20) as nodes:
        keys = [KeyPair.generate() for _ in range(100)]
        publishers = [rng.randrange(20) for _ in keys]
        acks = await _gather_limited(
            8,
            [
                nodes[p].put(RecordKey.presence(k.did), frame(k))
                for k, p in zip(keys, publishers, strict=True)
            ],
        )
        assert min(acks) >= 10  # replicated to (close to) k = 20 → all 19 others
        readers = [(p + 1 + rng.randrange(19)) % 20 for p in publishers]
        found = await _gather_limited(
            8, [nodes[r].resolve(k.did) for k, r in zip(keys, readers, strict=True)]
        )
        missing = [k.did for k, rec in zip(keys, found, strict=True) if rec is None]
        assert missing == []
        assert [rec.subject for rec in found if rec] == [k.did for k in keys]
        # and by acct: alias, through the §5.2 lookup: WebFinger over HTTPS → DID → DHT
        ca = LocalCA.create()
        responder = WebFingerResponder(
            {f"acct:user{i}@voice.test": k.did for i, k in enumerate(keys)}
        )
        async with (
            WebFingerServer(responder, ssl_context=ca.server_context()) as wf,
            AliasResolver(
                verify=ca.client_context(),
                webfinger_endpoints={"voice.test": f"https://localhost:{wf.port}"},
                methods=("webfinger",),
            ) as aliases,
        ):

            async def by_alias(alias: str) -> str:
                return (await aliases.resolve(alias)).did

            routes = await _gather_limited(
                8,
                [
                    Lookup(DidResolver(), dht=LookupSource(nodes[r]), aliases=by_alias).locate(
                        f"acct:user{i}@voice.test"
                    )
                    for i, r in enumerate(readers)
                ],
            )
        assert [r.did for r in routes] == [k.did for k in keys]
        assert all(r.path == "presence" for r in routes), [
            r.explain() for r in routes if r.path != "presence"
        ]
        assert all(r.endpoints for r in routes)
        # the same 100 DIDs move into two cells (50 each), published concurrently from all
        # 20 nodes: every member of a cell's region bucket is found from any node
        cells = ["u4pruy", "sp3e9b"]
        later = now() + 1

        async def move(i: int, k: KeyPair) -> None:
            cell = cells[i % 2]
            pub = PresencePublisher(
                nodes[publishers[i]],
                lambda seq, t, k=k, cell=cell: frame(
                    k,
                    seq=seq,
                    at=t,
                    geohash=cell,
                    ttl=300,  # storing nodes check the wall clock
                ).decode(),
                region_precisions=(4,),
                clock=lambda: later,
            )
            await pub.publish()

        await _gather_limited(8, [move(i, k) for i, k in enumerate(keys)])
        for c, cell in enumerate(cells):
            members = await nodes[rng.randrange(20)].resolve_region(cell[:4], now=later)
            assert sorted(m.subject for m in members) == sorted(k.did for k in keys[c::2])
            assert {m.geohash for m in members} == {cell}


@pytest.mark.timeout(120)
async def test_region_bucket_holds_many_dids_and_each_is_found() -> None:
    async with swarm(6) as nodes:
        keys = [KeyPair.generate() for _ in range(40)]
        cells = ["u4pruy", "u4prv1", "u4pr00", "u4przz"]

        async def publish(i: int, k: KeyPair) -> None:
            client = nodes[i % len(nodes)]
            pub = PresencePublisher(
                client,
                lambda seq, t, k=k, i=i: frame(k, seq=seq, at=t, geohash=cells[i % 4]).decode(),
                region_precisions=(4, 6),
            )
            report = await pub.publish()
            assert report.stored >= 1
            assert report.regions["u4pr"] >= 1

        await _gather_limited(6, [publish(i, k) for i, k in enumerate(keys)])
        reader = nodes[-1]
        members = await reader.resolve_region("u4pr")
        assert sorted(m.subject for m in members) == sorted(k.did for k in keys)
        # every storing node merged all 40 (no publisher sent more than its own entry)
        for node in nodes:
            held = node.node.raw_local(RecordKey.region("u4pr"))
            assert held is not None
            assert len(json.loads(held)["entries"]) == 40
        # a finer bucket only holds its own cell
        fine = await reader.resolve_region("u4pruy")
        assert sorted(m.subject for m in fine) == sorted(k.did for k in keys[0::4])
        for k in keys:
            record = await reader.resolve(k.did)
            assert record is not None
            assert record.geohash
            assert record.geohash.startswith("u4pr")


@pytest.mark.timeout(120)
async def test_region_read_takes_the_union_of_partial_buckets_and_repairs_them() -> None:
    # PUTs that failed at some of the closest leave each node with a different subset
    async with swarm(6) as nodes:
        keys = [KeyPair.generate() for _ in range(12)]
        key = RecordKey.region("u4pr")
        records = nodes[0].validator
        t = now()
        frames = [frame(k, at=t, geohash="u4pruy") for k in keys]
        for i, node in enumerate(nodes):
            subset = frames[2 * i : 2 * i + 2]  # node i alone holds entries 2i and 2i+1
            bucket = records.merge_region(key.validator_key, subset, now=t)
            assert node.node.store_local(key, bucket)
        # a quorum read (what a presence lookup does) stops early and sees only a subset
        partial = await nodes[0].resolve_region("u4pr", now=t, quorum=3, repair=False)
        assert len(partial) < len(keys)
        members = await nodes[0].resolve_region("u4pr", now=t)
        assert sorted(m.subject for m in members) == sorted(k.did for k in keys)
        for node in nodes:  # read-repair wrote the union back to every storing node
            held = node.node.raw_local(key)
            assert held is not None
            assert len(json.loads(held)["entries"]) == len(keys)


@pytest.mark.timeout(60)
async def test_reachability_hint_round_trip() -> None:
    async with swarm(3) as nodes:
        bob = KeyPair.generate()
        t = now()
        payload = make_payload(
            "reachability-hint",
            sender=bob.did,
            now=t,
            ttl=600,
            profiles=[],
            subject=bob.did,
            endpoints=[{"uri": "wss://relay.example/dsip", "bindings": ["ws/1.0"]}],
            seq=t,
        )
        value = encode_frame(sign_envelope(payload, bob)).encode()
        key = RecordKey.hint(bob.did)
        assert await nodes[0].put(key, value) == 2
        values = await nodes[2].get(key)
        best = nodes[2].validator.best(key.validator_key, values, now=now())
        assert best is not None
        assert best.subject == bob.did


@pytest.mark.timeout(60)
async def test_provider_records_name_peers() -> None:
    async with swarm(4) as nodes:
        key = RecordKey.region("u4pr")
        assert await nodes[1].provide(key)
        providers = await nodes[3].get_providers(key)
        assert nodes[1].peer_id in {p.peer_id for p in providers}
        assert all(p.addrs for p in providers)


@pytest.mark.timeout(60)
async def test_client_mode_node_reads_and_writes_but_stores_nothing() -> None:
    async with swarm(3) as nodes:
        from dsip.dht import DhtNodeConfig

        client = await DhtClient.start(DhtNodeConfig(server=False, bootstrap=(nodes[0].addrs[0],)))
        try:
            alice = KeyPair.generate()
            key = RecordKey.presence(alice.did)
            assert await client.put(key, frame(alice)) == 3
            assert client.node.raw_local(key) is None
            assert (await nodes[2].resolve(alice.did)) is not None
            assert (await client.resolve(alice.did)) is not None
        finally:
            await client.close()
