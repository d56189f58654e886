"""The seed §5.2 lookup algorithm: alias → document → presence → route, each step reported.

The DHT here is a dict (an in-memory stand-in, labelled as such): these tests pin the
algorithm's choices. ``tests/dht`` runs lookups over real libp2p nodes.
"""

from __future__ import annotations

import time

import pytest

from dsip.agent.lookup import Lookup
from dsip.agent.resolver import DidResolver
from dsip.core.identity import KeyPair, did_web_document
from dsip.core.presence import make_presence, presence_key
from dsip.errors import DsipError


class DictDht:
    """In-memory stand-in for the DHT's get (values as a node would return them)."""

    def __init__(self) -> None:
        self.values: dict[bytes, list[bytes]] = {}

    async def get(self, key: bytes) -> list[bytes]:
        return list(self.values.get(key, []))


BOB_WEB = "did:web:voice.example:users:bob"


async def test_online_callee_is_reached_at_its_presence_endpoint() -> None:
    alice = KeyPair.generate()
    dht = DictDht()
    now = int(time.time())
    dht.values[presence_key(alice.did)] = [
        make_presence(
            alice, endpoints={"ws": ["wss://relay-a.example/dsip"]}, seq=1, now=now - 20
        ).encode(),
        make_presence(
            alice,
            endpoints={
                "ws": ["wss://relay-b.example/dsip"],
                "quic": ["quic://relay-b.example:8444"],
            },
            seq=2,
            now=now,
        ).encode(),
    ]
    route = await Lookup(DidResolver(), dht=dht).locate(alice.did)
    assert route.path == "presence"
    assert route.endpoints == ["quic://relay-b.example:8444", "wss://relay-b.example/dsip"]
    assert [s.step for s in route.steps] == ["document", "presence", "route"]
    assert "seq 2" in route.explain()


async def test_offline_callee_goes_to_the_relay_in_its_document() -> None:
    bob = KeyPair.generate()
    doc = did_web_document(
        BOB_WEB,
        [("key-1", bob.public_key_multibase)],
        services={"ws": ["wss://relay.voice.example/dsip"]},
    )
    resolver = DidResolver(documents={BOB_WEB: doc})
    mallory = KeyPair.generate()
    dht = DictDht()  # only a forged record for bob: ignored
    dht.values[presence_key(BOB_WEB)] = [
        make_presence(
            mallory,
            subject=BOB_WEB,
            endpoints={"ws": ["wss://evil.example/dsip"]},
            seq=9,
            now=int(time.time()),
        ).encode()
    ]

    async def aliases(alias: str) -> str:
        assert alias == "acct:bob@voice.example"
        return BOB_WEB

    route = await Lookup(resolver, dht=dht, aliases=aliases).locate("acct:bob@voice.example")
    assert route.did == BOB_WEB
    assert route.path == "document-relay"
    assert route.endpoints == ["wss://relay.voice.example/dsip"]
    assert route.steps[0].step == "alias"
    assert "none valid" in route.explain()
    assert "stores and forwards" in route.explain()


async def test_alias_without_resolver_is_refused() -> None:
    with pytest.raises(DsipError) as err:
        await Lookup(DidResolver()).locate("bob@example.com")
    assert err.value.code == "alias-unsupported"
