"""Storing nodes refuse bad values put with RAW libp2p calls; readers re-verify.

The attacker is :class:`RawPeer`: a plain py-libp2p host that writes PUT_VALUE messages
straight onto a ``/ipfs/kad/1.0.0`` stream — dsip's publisher and ``DhtNode.put`` (which
would refuse to send these) are not involved.
"""

from __future__ import annotations

import base64
import json

import pytest

from dsip.core.delegation import issue_delegation
from dsip.core.identity import KeyPair
from dsip.core.presence import RecordValidator
from dsip.dht import DhtClient, DhtNodeConfig, RecordKey
from tests.dht.dhtfix import frame, now, raw_peer, swarm

pytestmark = [pytest.mark.network, pytest.mark.timeout(90)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_storing_node_refuses_every_kind_of_bad_value() -> None:
    alice, mallory, phone = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    t = now()
    key = RecordKey.presence(alice.did)
    wire = key.wire
    good = frame(alice, seq=t, at=t)
    deleg = issue_delegation(alice, phone.did, issued_at=t - 10, expires_at=t + 3600)
    cases: dict[str, tuple[bytes, bytes]] = {
        "forged (mallory signs for alice)": (wire, frame(mallory, subject=alice.did)),
        "expired": (wire, frame(alice, seq=t - 100, at=t - 100, ttl=60)),
        "outside the replay window": (wire, frame(alice, seq=t - 400, at=t - 400, ttl=300)),
        "seq regressed": (wire, frame(alice, seq=t - 5, at=t - 5)),
        "same seq as held, other content": (
            wire,
            frame(alice, seq=t + 1, at=t, endpoints={"ws": ["wss://evil.example/dsip"]}),
        ),
        "non-delegated device": (wire, frame(phone, subject=alice.did)),
        "oversize": (wire, good + b" " * 70_000),
        "under another DID's key": (RecordKey.presence(mallory.did).wire, good),
        "wrong key length (31 bytes)": (b"/dsip/" + _b64(key.digest[:31]).encode(), good),
        "wrong key length (33 bytes)": (b"/dsip/" + _b64(key.digest + b"\0").encode(), good),
        "not JSON": (wire, b"\xff\xfe not a record"),
        "region document under a presence key": (wire, b'{"type":"dsip-region/1","entries":[]}'),
        "unknown namespace": (b"/other/" + _b64(key.digest).encode(), good),
        "raw 32-byte key": (key.digest, good),
    }
    async with swarm(2) as nodes, raw_peer() as (attacker, runtime):
        storing = nodes[1]
        assert await nodes[0].put(key, good) == 1  # the genuine record, seq t
        assert storing.node.raw_local(key) == good

        async def attempt(k: bytes, v: bytes) -> bool:
            return await attacker.raw_put(storing.addrs[0], k, v)

        # control: the raw path itself works — a valid delegated record is accepted
        delegated = frame(phone, subject=alice.did, seq=t + 1, at=t, delegations=[deleg])
        assert await runtime.call(attempt, wire, delegated, timeout=10)
        assert storing.node.raw_local(key) == delegated

        refused = {}
        for name, (k, v) in cases.items():
            refused[name] = not await runtime.call(attempt, k, v, timeout=10)
        assert refused == dict.fromkeys(cases, True)
        assert storing.node.raw_local(key) == delegated  # nothing replaced it
        # nothing was stored under the other keys either
        assert storing.node.raw_local(RecordKey.presence(mallory.did)) is None
        assert len(storing.node.store.store) == 1


async def test_storing_node_refuses_a_region_bucket_with_one_forged_entry() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    region = RecordKey.region("u4pr")
    v = RecordValidator()
    genuine = frame(alice, geohash="u4pruy")
    bucket = v.merge_region(region.validator_key, [genuine], now=now())
    forged_entry = frame(mallory, subject=KeyPair.generate().did, geohash="u4pruy").decode()
    doc = json.loads(bucket)
    doc["entries"].append(forged_entry)
    poisoned = json.dumps(doc, separators=(",", ":")).encode()
    empty = b'{"type":"dsip-region/1","entries":[]}'
    async with swarm(2) as nodes, raw_peer() as (attacker, runtime):
        target = nodes[1].addrs[0]

        async def attempt(value: bytes) -> bool:
            return await attacker.raw_put(target, region.wire, value)

        assert not await runtime.call(attempt, poisoned, timeout=10)
        assert not await runtime.call(attempt, empty, timeout=10)
        assert not await runtime.call(attempt, genuine, timeout=10)  # bare record: not a bucket
        assert nodes[1].node.raw_local(region) is None
        assert await runtime.call(attempt, bucket, timeout=10)  # control
        assert nodes[1].node.raw_local(region) == bucket


async def test_reader_ignores_a_bad_value_served_from_a_nodes_own_store() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    t = now()
    key = RecordKey.presence(alice.did)
    genuine = frame(alice, seq=t, at=t)
    forged = frame(mallory, subject=alice.did, seq=t + 100, at=t)
    async with swarm(2) as nodes, raw_peer() as (bad, _runtime):
        assert await nodes[0].put(key, genuine) == 1
        bad.hold(key.wire, forged)  # a storing node that validates nothing
        reader = await DhtClient.start(DhtNodeConfig(server=False, bootstrap=(bad.addr,)))
        try:
            await reader.bootstrap([nodes[0].addrs[0]])
            values = await reader.get(key)
            assert forged in values
            assert genuine in values
            record = await reader.resolve(alice.did)
            assert record is not None
            assert record.seq == t
            assert record.frame.encode() == genuine

            # only the forged value on offer: nothing is resolved
            other = KeyPair.generate()
            bad.hold(RecordKey.presence(other.did).wire, frame(mallory, subject=other.did))
            assert await reader.get(RecordKey.presence(other.did))
            assert await reader.resolve(other.did) is None
        finally:
            await reader.close()


async def test_a_tampered_local_store_is_not_trusted() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    t = now()
    key = RecordKey.presence(alice.did)
    genuine = frame(alice, seq=t, at=t)
    async with swarm(3) as nodes:
        assert await nodes[0].put(key, genuine) == 2
        reader = nodes[2]
        # bypass every check: write straight into py-libp2p's store dict
        forged = frame(mallory, subject=alice.did, seq=t + 100, at=t)
        held_record, validity = reader.node.store.store[key.wire]
        tampered = type(held_record)()
        tampered.CopyFrom(held_record)
        tampered.value = forged
        reader.node.store.store[key.wire] = (tampered, validity)
        record = await reader.resolve(alice.did)
        assert record is not None
        assert record.frame.encode() == genuine
        # and the node stopped holding (or serving) the tampered value
        assert reader.node.raw_local(key) is None


async def test_only_valid_values_count_toward_a_read_quorum() -> None:
    """Forged answers (Sybil peers answering first) must not end a quorum read early."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from libp2p.peer.id import ID

    from dsip.dht.node import _Lookup

    async with swarm(1) as (client,):
        node = client.node
        alice, mallory = KeyPair.generate(), KeyPair.generate()
        t = now()
        key = RecordKey.presence(alice.did)
        genuine = frame(alice, seq=t, at=t)
        forged = frame(mallory, subject=alice.did, seq=t + 100, at=t)
        state = _Lookup(target=key.wire, known=set())
        peer = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(32))

        async def answers() -> None:  # on the node's trio thread, as a lookup runs
            for value in (forged, forged, genuine):
                resp = Message()
                resp.type = Message.MessageType.GET_VALUE
                resp.record.key = key.wire
                resp.record.value = value
                node._learn(peer, resp, state, node.host.get_id())

        await client.runtime.call(answers)
        assert state.answered == 1  # the two forged answers did not count
        assert set(state.values) == {forged, genuine}  # the reader still sees and refuses it
