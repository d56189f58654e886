"""Relay-to-relay federation on loopback: three in-process relays for three did:web domains.

Each relay has its own SQLite store, its own did:web identity (``…:relays:<name>``, with a
``DSIPRelay`` service) and a fixed port; users' documents name their home relay. One
``DidWebHost`` serves every document and one local CA is trusted by everyone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.errors import TransportError
from dsip.services.didweb_host import DidWebHost
from dsip.services.federation import (
    FEDERATION_EXTENSION,
    OUTBOX_INDEX,
    FederationSettings,
    backoff_delay,
    outbox_key,
)
from dsip.services.localca import LocalCA
from dsip.services.ports import free_port
from dsip.services.relay import Relay
from dsip.storage import open_store
from dsip.transport.ws import connect_ws
from tests.services.fedfix import (
    Identity,
    User,
    introduction,
    publish_relay,
    publish_user,
)

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

NAMES = ("a", "b", "c")
USERS = {"a": "alice", "b": "bob", "c": "carol"}


@dataclass
class Domain:
    name: str
    me: Identity
    port: int
    db: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    relay: Relay | None = None
    quic_port: int | None = None

    @property
    def uri(self) -> str:
        return f"wss://localhost:{self.port}/dsip"

    @property
    def quic_uri(self) -> str:
        return f"quic://localhost:{self.quic_port}"

    @property
    def r(self) -> Relay:
        assert self.relay is not None
        return self.relay


class World:
    """Relays A, B, C and a user on each."""

    def __init__(self, tmp_path: Path, ca: LocalCA) -> None:
        self.ca = ca
        self.cafile = str(ca.write_ca_pem(tmp_path / "ca.pem"))
        self.cert, self.key = tmp_path / "relay.crt", tmp_path / "relay.key"
        with open(self.cert, "wb") as fh:
            for pem in ca.server.cert_chain_pems:
                fh.write(pem.bytes())
        ca.server.private_key_pem.write_to_path(str(self.key))
        self.host = DidWebHost(ca).start()
        self.domains: dict[str, Domain] = {}
        for name in NAMES:
            me = Identity.on(self.host, "relays", name)
            dom = Domain(name, me, free_port(), tmp_path / f"relay-{name}.db")
            publish_relay(self.host, me, dom.uri)
            self.domains[name] = dom
        self.resolver = DidResolver(verify=ca.client_context())
        self.users: dict[str, User] = {}
        for name, user in USERS.items():
            self.users[user] = self.new_user(user, self.domains[name])

    def new_user(self, name: str, dom: Domain) -> User:
        me = Identity.on(self.host, "users", name)
        publish_user(self.host, me, dom.uri)
        return User(me, dom.me.did, dom.uri, self.resolver, self.ca.client_context())

    def __getitem__(self, name: str) -> Domain:
        return self.domains[name]

    async def start(self, dom: Domain) -> Relay:
        cfg = RelayConfig(ws_port=dom.port, store=f"sqlite:///{dom.db}")
        settings: dict[str, Any] = {
            "public_uri": dom.uri,
            "ssl_context": self.ca.client_context(),
            "cafile": self.cafile,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.4,
        }
        settings.update(dom.overrides)
        if dom.quic_port is not None:
            cfg = cfg.with_overrides(
                quic_port=dom.quic_port, tls_cert=str(self.cert), tls_key=str(self.key)
            )
            settings["other_uris"] = (dom.quic_uri,)
        dom.relay = Relay(
            cfg,
            dom.me.key,
            await open_store(cfg.store),
            did=dom.me.did,
            resolver=DidResolver(verify=self.ca.client_context()),
            server_ssl=self.ca.server_context(),
            federation=FederationSettings(**settings),
        )
        await dom.relay.start()
        return dom.relay

    async def stop(self, dom: Domain) -> None:
        if dom.relay is not None:
            await dom.relay.stop()
            dom.relay = None

    async def up(self, **overrides: dict[str, Any]) -> None:
        for name, dom in self.domains.items():
            dom.overrides = overrides.get(name, {})
            await self.start(dom)
        for user in self.users.values():
            await user.connect()

    async def close(self) -> None:
        for user in self.users.values():
            await user.close()
        for dom in self.domains.values():
            await self.stop(dom)
        await self.resolver.aclose()
        self.host.close()


@pytest.fixture
async def world(tmp_path: Path, local_ca: LocalCA) -> AsyncIterator[World]:
    w = World(tmp_path, local_ca)
    yield w
    await w.close()


async def _eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def _outboxes_empty(world: World) -> bool:
    for dom in world.domains.values():
        for other in world.domains.values():
            if (await dom.r.store.stats(outbox_key(other.uri))).envelopes:
                return False
    return True


# --- sans-I/O -----------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_full_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (3, 8.0), (6, 60.0), (40, 60.0)]:
        draws = [backoff_delay(attempt, initial=1.0, maximum=60.0, rng=rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # full jitter spans the whole range
        assert min(draws) < ceiling * 0.2


# --- every ordered pair -------------------------------------------------------------------


async def test_calls_and_messages_cross_every_ordered_pair(world: World) -> None:
    await world.up()
    users = list(world.users.values())
    pairs = [(x, y) for x in users for y in users if x is not y]
    assert len(pairs) == 6
    for caller, callee in pairs:
        assert caller.client is not None
        assert callee.client is not None
        invite = example_invite(caller.did, callee.did, now=int(time.time()))
        await caller.client.send(invite)
        got = await callee.next("invite")
        assert (got.id, got.identity, got.signer) == (invite["id"], caller.did, caller.did)
        await callee.client.send(
            callee.client.build("progress", to=caller.did, session=invite["id"], status="ringing")
        )
        assert (await caller.next("progress")).payload["status"] == "ringing"
        await callee.client.send(
            callee.client.build(
                "answer",
                to=caller.did,
                session=invite["id"],
                answered_by="user",
                media=[
                    {
                        "type": "audio",
                        "direction": "sendrecv",
                        "codecs": [{"id": "codec:audio/opus"}],
                    }
                ],
                transports=[{"id": "transport:webrtc"}],
            )
        )
        answer = await caller.next("answer")
        assert (answer.identity, answer.payload["session"]) == (callee.did, invite["id"])
        await caller.client.send(
            caller.client.build("bye", to=callee.did, session=invite["id"], reason="user.hangup")
        )
        assert (await callee.next("bye")).payload["reason"] == "user.hangup"
        # a message and its reply
        hello = introduction(caller.did, callee.did, f"hi {callee.did[-5:]}")
        await caller.client.send(hello)
        assert (await callee.next("introduction")).id == hello["id"]
        reply = introduction(callee.did, caller.did, "hi back")
        await callee.client.send(reply)
        assert (await caller.next("introduction")).id == reply["id"]
    # Everything crossed exactly one relay-to-relay hop and was acknowledged.
    await _eventually(lambda: _outboxes_empty(world))
    for dom in world.domains.values():
        stats = dom.r.federation.stats
        # 6 envelopes per pair (invite, bye, introduction one way; progress, answer,
        # introduction back), 6 pairs: 12 leave each relay and 12 arrive at each.
        assert stats["forwarded"] == stats["acked"] == 12
        assert stats["peer_custody"] == 12
        assert stats["refused"] == stats["peer_refused"] == 0
        assert set(dom.r.federation.links) == {
            o.uri for o in world.domains.values() if o is not dom
        }


async def test_far_refusal_reaches_the_sender_and_introductions_are_held(world: World) -> None:
    await world.up()
    alice = world.users["alice"]
    assert alice.client is not None
    # dave's document names relay B, but dave never connected there
    dave = world.new_user("dave", world["b"])
    invite = example_invite(alice.did, dave.did, now=int(time.time()))
    await alice.client.send(invite)
    err = await alice.next("error")
    assert err.signer == world["a"].me.did  # re-signed by alice's own relay
    assert err.payload["reason"] == "transport.unknown-recipient"
    assert err.payload["in_reply_to"] == invite["id"]
    assert err.payload["session"] == invite["id"]
    assert world["b"].me.did in err.payload["detail"]
    # An introduction is held for him silently (§19.4) and reaches him when he connects.
    intro = introduction(alice.did, dave.did, "we met at the conference")
    await alice.client.send(intro)
    await _eventually(lambda: _outboxes_empty(world))
    with pytest.raises(TimeoutError):
        await alice.next("error", timeout=0.3)
    await dave.connect()
    try:
        assert (await dave.next("introduction")).id == intro["id"]
    finally:
        await dave.close()


# --- far relay down -----------------------------------------------------------------------


async def test_envelopes_wait_in_the_outbox_while_the_far_relay_is_down(world: World) -> None:
    await world.up()
    a, b = world["a"], world["b"]
    alice, bob = world.users["alice"], world.users["bob"]
    assert alice.client is not None
    await bob.close()
    await world.stop(b)  # bob's relay goes away (bob stays a known identity in its store)
    sent = []
    for i in range(5):
        p = introduction(alice.did, bob.did, f"while you were out #{i}")
        sent.append(p["id"])
        await alice.client.send(p)

    async def held() -> bool:
        return await a.r.federation.outbox_size(b.uri) == 5

    await _eventually(held)
    # The origin relay restarts too: its outbox (and the index naming it) is on disk.
    await alice.close()
    await world.stop(a)
    await world.start(a)
    assert await a.r.federation.outbox_size(b.uri) == 5
    assert b.uri in a.r.federation.links  # resumed from the outbox index, retrying
    await asyncio.sleep(0.5)
    assert await a.r.federation.outbox_size(b.uri) == 5  # nobody there: nothing lost
    await world.start(b)  # same port, same store

    async def drained() -> bool:
        return await a.r.federation.outbox_size(b.uri) == 0

    await _eventually(drained)
    await bob.connect()
    got = [(await bob.next("introduction")).id for _ in sent]
    assert got == sent  # all of them, in order
    with pytest.raises(TimeoutError):
        await bob.next("introduction", timeout=0.5)  # and nothing twice


# --- loop prevention, rate limit, forged hellos ---------------------------------------------


async def _raw_peer(world: World, relay: Identity, to: Domain) -> tuple[SignalingClient, Any]:
    """A federation/1.0 connection to ``to`` signed with ``relay``'s key, for raw frames."""
    await world.resolver.resolve(to.me.did)
    conn = await connect_ws(to.uri, ssl_context=world.ca.client_context())
    client = SignalingClient(
        relay.key, verifier=Verifier(world.resolver.cached), extensions=[FEDERATION_EXTENSION]
    )
    await client.connect(to.uri, connection=conn, timeout=5)
    return client, conn


async def test_a_peer_relay_cannot_make_another_relay_forward(world: World) -> None:
    await world.up()
    a, b, c = world["a"], world["b"], world["c"]
    alice, bob, carol = world.users["alice"], world.users["bob"], world.users["carol"]
    assert alice.client is not None
    peer, conn = await _raw_peer(world, a.me, b)
    try:
        assert FEDERATION_EXTENSION in peer.negotiated
        # alice's genuine envelope for carol (served by C), handed to B by "relay A"
        misrouted = introduction(alice.did, carol.did, "bounce me")
        await conn.send(encode_frame(sign_envelope(misrouted, alice.me.key)))
        err = await peer.recv(5)
        assert (err.type, err.payload["reason"]) == ("error", "transport.unknown-recipient")
        assert err.payload["in_reply_to"] == misrouted["id"]
        assert b.r.federation.stats["forwarded"] == 0
        assert not b.r.federation.links
        assert (await b.r.store.stats(outbox_key(c.uri))).envelopes == 0
        with pytest.raises(TimeoutError):
            await carol.next("introduction", timeout=0.5)
        # the same link delivers what B does serve, and passes custody back
        fine = introduction(alice.did, bob.did, "for bob")
        await conn.send(encode_frame(sign_envelope(fine, alice.me.key)))
        ack = await peer.recv(5)
        assert (ack.type, ack.payload["acks"], ack.signer) == ("ack", [fine["id"]], b.me.did)
        assert (await bob.next("introduction")).id == fine["id"]
        # a resend (lost ack) is acknowledged again, not delivered again
        await conn.send(encode_frame(sign_envelope(fine, alice.me.key)))
        assert (await peer.recv(5)).payload["acks"] == [fine["id"]]
        with pytest.raises(TimeoutError):
            await bob.next("introduction", timeout=0.3)
    finally:
        await peer.close()


async def test_per_origin_rate_limit_slows_the_link_and_loses_nothing(world: World) -> None:
    # B admits 120 envelopes a minute per origin relay: a burst of 20, then 2 per second.
    await world.up(b={"peer_envelopes_per_minute": 120})
    a, b = world["a"], world["b"]
    alice, bob = world.users["alice"], world.users["bob"]
    assert alice.client is not None
    sent = []
    for i in range(26):
        p = introduction(alice.did, bob.did, f"burst {i}")
        sent.append(p["id"])
        await alice.client.send(p)
    got = [(await bob.next("introduction", timeout=15)).id for _ in sent]
    assert sorted(got) == sorted(sent)
    assert b.r.federation.stats["peer_rate_limited"] > 0
    assert a.r.federation.stats["rate_limited"] > 0
    assert a.r.federation.stats["refused"] == 0  # a rate limit is a pause, not a refusal
    with pytest.raises(TimeoutError):
        await bob.next("introduction", timeout=0.3)
    # A peer relay's envelopes do not count against the per-IP bucket devices share.
    assert await a.r.federation.outbox_size(b.uri) == 0


async def test_forged_and_non_relay_federation_hellos_are_refused(world: World) -> None:
    await world.up()
    a, b = world["a"], world["b"]
    alice = world.users["alice"]
    impostors = {
        # relay B's DID, someone else's key: the signature stage fails
        "forged": KeyPair(KeyPair.generate().private_key, f"{b.me.did}#key-1"),
        # a real user identity: verifies, but its document is not a relay's
        "user": alice.me.key,
        # a did:key cannot be a relay identity
        "did:key": KeyPair.generate(),
    }
    for name, key in impostors.items():
        client = SignalingClient(
            key, verifier=Verifier(world.resolver.cached), extensions=[FEDERATION_EXTENSION]
        )
        await world.resolver.resolve(a.me.did)
        with pytest.raises(TransportError) as info:
            await client.connect(a.uri, ssl_context=world.ca.client_context(), timeout=5)
        assert info.value.reason == "transport.hello-rejected", name
    assert not [p for p in a.r._peers if p.relay is not None]
    # and relay B's real key is welcome
    peer, _ = await _raw_peer(world, b.me, a)
    assert peer.relay_did == a.me.did
    await peer.close()


async def test_unsigned_relay_traffic_without_hello_gets_hello_required(world: World) -> None:
    await world.up()
    a = world["a"]
    alice = world.users["alice"]
    assert alice.client is not None
    conn = await connect_ws(a.uri, ssl_context=world.ca.client_context())
    try:
        payload = make_payload(
            "introduction",
            sender=alice.did,
            now=int(time.time()),
            to=world.users["bob"].did,
            identity={"display_name": "x", "claims": []},
        )
        await conn.send(encode_frame(sign_envelope(payload, alice.me.key)))
        v = Verifier(world.resolver.cached).verify(
            await asyncio.wait_for(conn.recv(), 5), now=int(time.time())
        )
        assert v.payload["reason"] == "transport.hello-required"
        assert a.r.federation.stats["forwarded"] == 0
    finally:
        await conn.close()


async def test_federation_over_quic(world: World) -> None:
    """B also listens on quic/1.0 and bob's document names that endpoint first: A's link to
    B is a QUIC connection; the way back to alice is wss."""
    b = world["b"]
    b.quic_port = free_port(udp=True)
    bob = world.users["bob"]
    await world.up()
    publish_user(world.host, bob.me, b.quic_uri)
    world.resolver.invalidate(bob.did)
    a = world["a"]
    a.r.resolver.invalidate(bob.did)
    alice = world.users["alice"]
    assert alice.client is not None
    assert bob.client is not None
    invite = example_invite(alice.did, bob.did, now=int(time.time()))
    await alice.client.send(invite)
    assert (await bob.next("invite")).id == invite["id"]
    assert set(a.r.federation.links) == {b.quic_uri}
    await bob.client.send(
        bob.client.build("reject", to=alice.did, session=invite["id"], reason="user.busy")
    )
    assert (await alice.next("reject")).payload["reason"] == "user.busy"
    # a document naming B's QUIC endpoint counts as "served here" for B
    b.r.resolver.invalidate(bob.did)
    assert await b.r.federation.serves(bob.did)


async def test_idle_links_retire_and_come_back_on_demand(world: World) -> None:
    await world.up(a={"idle_s": 0.3})
    a, b = world["a"], world["b"]
    alice, bob = world.users["alice"], world.users["bob"]
    for i in range(2):
        first = introduction(alice.did, bob.did, f"round {i}")
        assert alice.client is not None
        await alice.client.send(first)
        assert (await bob.next("introduction")).id == first["id"]
        assert b.uri in a.r.federation.links
        assert (await a.r.store.stats(OUTBOX_INDEX)).envelopes == 1

        async def retired() -> bool:
            index = await a.r.store.stats(OUTBOX_INDEX)
            return b.uri not in a.r.federation.links and index.envelopes == 0

        await _eventually(retired, timeout=5)
