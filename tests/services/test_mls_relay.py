"""MLS groups (profile mls/1.0) over real loopback relay connections: the relay is the
delivery service. Each device keeps its group state in its own encrypted SQLite store.

Covered: a four-member group where one member is offline while it is added and catches
up from the relay's store; commits from a removed member refused; an external commit by
a new device of an existing member, and by a stranger (refused); hostile envelopes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from pathlib import Path

import pytest

pytest.importorskip("rfc9420", reason="the MLS library (PyPI rfc9420) is not installed")

from dsip.agent.messaging import CustodyClient, GroupAgent, GroupEvent
from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.core.ulid import new_ulid
from dsip.errors import TransportError
from dsip.messaging.mls import MlsError, MlsMember, MlsMessage
from dsip.messaging.session_store import SessionStore
from dsip.services.relay import Relay
from tests.relayfix import relay_uri

pytestmark = pytest.mark.timeout(120)
STORE_KEY = b"s" * 32  # TEST FIXTURE ONLY: session-store key


class Devices:
    """Agents of one test: each device's store outlives its connections."""

    def __init__(self, relay: Relay, ctx: ssl.SSLContext, tmp: Path) -> None:
        self.relay, self.ctx, self.tmp = relay, ctx, tmp
        self.agents: list[GroupAgent] = []
        self.stores: dict[str, SessionStore] = {}

    async def connect(
        self, name: str, key: KeyPair, *, identity: KeyPair | None = None
    ) -> GroupAgent:
        kw: dict[str, object] = {}
        if identity is not None:
            now = int(time.time())
            kw["identity"] = identity.did
            kw["delegations"] = [
                issue_delegation(identity, key.did, issued_at=now - 5, expires_at=now + 3600)
            ]
        client = CustodyClient(key, verifier=Verifier(), **kw)
        await client.connect(relay_uri(self.relay), ssl_context=self.ctx, timeout=5)
        store = self.stores.get(name)
        if store is None:
            store = self.stores[name] = SessionStore.open(self.tmp / f"{name}.db", key=STORE_KEY)
        agent = GroupAgent(client, store, timeout=10)
        self.agents.append(agent)
        return agent

    async def close(self) -> None:
        for agent in self.agents:
            await agent.client.close()
        for store in self.stores.values():
            store.close()


@pytest.fixture
async def devices(relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path) -> Devices:
    d = Devices(relay, client_ssl, tmp_path)
    yield d  # type: ignore[misc]
    await d.close()


async def events_until(agent: GroupAgent, pred: object, limit: int = 20) -> list[GroupEvent]:
    """Events of ``agent`` up to and including the first one ``pred`` accepts."""
    out = []
    for _ in range(limit):
        event = await agent.receive(timeout=10)
        out.append(event)
        if pred(event):  # type: ignore[operator]
            return out
    raise AssertionError(f"no matching event in {out}")


def texts(events: list[GroupEvent]) -> list[tuple[str | None, str | None]]:
    return [(e.sender, e.text) for e in events if e.kind == "application"]


async def test_group_of_four_with_an_offline_member_catching_up(
    devices: Devices, relay: Relay
) -> None:
    keys = {n: KeyPair.generate() for n in ("alice", "bob", "carol", "dave")}
    agents = {n: await devices.connect(n, k) for n, k in keys.items()}
    for agent in agents.values():
        assert await agent.publish_key_packages(2) == 2
    assert relay.mls is not None
    assert relay.mls.available(keys["bob"].did) == 2
    await agents["dave"].client.close()  # dave goes offline; his key packages stay

    alice = agents["alice"]
    group = await alice.create_group()
    for n in ("bob", "carol", "dave"):
        event = await alice.add(group, keys[n].did)
        assert event.kind == "own-commit"
    assert alice.member(group).epoch == 3
    assert relay.mls.delivery.epoch(alice.member(group).group_id) == 3
    assert relay.mls.available(keys["dave"].did) == 1  # one package handed out, once

    for n in ("bob", "carol"):  # online members joined from the Welcome, then followed
        got = await events_until(agents[n], lambda e: e.epoch == 3)
        assert got[0].kind == "joined"
    await alice.send(group, "hello group")
    upd = await agents["carol"].update(group)  # another epoch while dave is away
    assert upd.epoch == 4
    await agents["bob"].send(group, "bob in epoch 4")
    for n in ("alice", "bob"):
        got = await events_until(agents[n], lambda e: e.epoch == 4 and e.kind == "commit")
    got = await events_until(agents["alice"], lambda e: e.kind == "application")
    assert texts(got) == [(keys["bob"].did, "bob in epoch 4")]

    # dave comes back: the relay hands over what it held, in order of acceptance
    dave = await devices.connect("dave", keys["dave"])
    got = await events_until(dave, lambda e: e.text == "bob in epoch 4")
    assert [e.kind for e in got] == ["joined", "application", "commit", "application"]
    assert texts(got) == [
        (keys["alice"].did, "hello group"),
        (keys["bob"].did, "bob in epoch 4"),
    ]
    assert dave.member(group).member_dids() == {k.did for k in keys.values()}
    await dave.send(group, "dave caught up")
    for n in ("alice", "bob", "carol"):
        got = await events_until(agents[n], lambda e: e.text == "dave caught up")
        assert texts(got)[-1] == (keys["dave"].did, "dave caught up")
    # the relay's store kept only ciphertext, and gave everything away once acknowledged
    for _ in range(100):
        if not await relay.store.pending(keys["dave"].did, now=0, limit=10):
            break
        await asyncio.sleep(0.05)
    assert await relay.store.pending(keys["dave"].did, now=0, limit=10) == []
    with dave.store.transaction(write=False) as tx:
        history = [m.body["body"] for m in tx.messages(keys["dave"].did)]
    assert history == ["hello group", "bob in epoch 4"]


async def test_commits_from_a_removed_member_are_refused(devices: Devices, relay: Relay) -> None:
    keys = {n: KeyPair.generate() for n in ("alice", "bob", "carol")}
    agents = {n: await devices.connect(n, k) for n, k in keys.items()}
    for n in ("bob", "carol"):
        await agents[n].publish_key_packages(1)
    alice, bob = agents["alice"], agents["bob"]
    group = await alice.create_group()
    await alice.add(group, keys["bob"].did)
    await alice.add(group, keys["carol"].did)
    for n in ("bob", "carol"):
        await events_until(agents[n], lambda e: e.epoch == 2)
    # bob's view before the removal reaches him
    stale = MlsMember.from_bytes(bob.member(group).to_bytes(), keys["bob"])
    removal = await alice.remove(group, keys["bob"].did)
    assert removal.epoch == 3
    got = await events_until(bob, lambda e: e.kind == "removed")
    assert group not in bob.groups
    await events_until(agents["carol"], lambda e: e.epoch == 3)

    assert relay.mls is not None
    gid = alice.member(group).group_id
    before = {n: devices.stores[n].snapshot() for n in ("alice", "carol")}
    for message, reason in (
        (stale.update().message, "policy.blocked"),  # bob is in no leaf any more
        (stale.encrypt(b"still here?"), "session.invalid-state"),  # an old epoch
    ):
        with pytest.raises(TransportError) as err:
            await bob.submit(message)
        assert err.value.reason == reason
    assert relay.mls.delivery.epoch(gid) == 3
    assert relay.mls.delivery.members(gid) == {keys["alice"].did, keys["carol"].did}
    await asyncio.sleep(0.2)  # nothing reaches the members: their stores are unchanged
    assert {n: devices.stores[n].snapshot() for n in ("alice", "carol")} == before
    await alice.send(group, "just us")
    got = await events_until(agents["carol"], lambda e: e.kind == "application")
    assert texts(got) == [(keys["alice"].did, "just us")]


async def test_external_commit_for_a_new_device(devices: Devices, relay: Relay) -> None:
    alice_id, bob_key = KeyPair.generate(), KeyPair.generate()
    phone_key, laptop_key = KeyPair.generate(), KeyPair.generate()
    phone = await devices.connect("phone", phone_key, identity=alice_id)
    bob = await devices.connect("bob", bob_key)
    await bob.publish_key_packages(1)
    group = await phone.create_group()
    await phone.add(group, bob_key.did)
    await events_until(bob, lambda e: e.kind == "joined")

    # a stranger can neither read the GroupInfo nor commit itself in
    stranger = await devices.connect("stranger", KeyPair.generate())
    with pytest.raises(TransportError) as err:
        await stranger.join_external(group)
    assert err.value.reason == "policy.blocked"
    assert group not in stranger.groups

    laptop = await devices.connect("laptop", laptop_key, identity=alice_id)
    joined = await laptop.join_external(group)
    assert joined.kind == "joined"
    assert joined.epoch == 2
    for agent in (phone, bob):
        got = await events_until(agent, lambda e: e.epoch == 2)
        assert got[-1].kind == "commit"
    assert laptop.member(group).member_dids() == {phone_key.did, laptop_key.did, bob_key.did}
    await laptop.send(group, "laptop here")
    for agent in (phone, bob):
        got = await events_until(agent, lambda e: e.kind == "application")
        assert texts(got) == [(laptop_key.did, "laptop here")]


async def test_hostile_group_envelopes_are_refused(devices: Devices, relay: Relay) -> None:
    alice_key, bob_key, mallory_key = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    alice = await devices.connect("alice", alice_key)
    bob = await devices.connect("bob", bob_key)
    mallory = await devices.connect("mallory", mallory_key)
    await bob.publish_key_packages(1)
    group = await alice.create_group()
    await alice.add(group, bob_key.did)
    await events_until(bob, lambda e: e.kind == "joined")
    assert relay.mls is not None

    # a key package of bob's, published by mallory
    bobs = MlsMember(bob_key).key_package(int(time.time()))
    with pytest.raises(TransportError) as err:
        await mallory.submit(bobs)
    assert err.value.reason == "policy.trust-insufficient"
    assert relay.mls.available(mallory_key.did) == 0
    # application data for a group the relay never saw a commit of
    other = await mallory.create_group()
    app = mallory.member(other).encrypt(b"spam")
    with pytest.raises(TransportError) as err:
        await mallory.submit(app)
    assert err.value.reason == "session.invalid-state"  # a group the relay does not know
    # fields that disagree with the MLS data
    real = alice.member(group).encrypt(b"x")
    with pytest.raises(TransportError) as err:
        await alice.submit(MlsMessage(real.content_type, real.data, real.group, 9))
    assert err.value.reason == "session.failed"
    # a key-package fetch for nobody is an empty answer, not an error
    assert await mallory.fetch_key_packages(KeyPair.generate().did) == []
    # the members' state survived all of it
    await alice.send(group, "still fine")
    got = await events_until(bob, lambda e: e.kind == "application")
    assert texts(got) == [(alice_key.did, "still fine")]


async def test_replayed_and_tampered_group_messages_change_nothing(
    devices: Devices, relay: Relay
) -> None:
    alice_key, bob_key = KeyPair.generate(), KeyPair.generate()
    alice = await devices.connect("alice", alice_key)
    bob = await devices.connect("bob", bob_key)
    await bob.publish_key_packages(1)
    group = await alice.create_group()
    await alice.add(group, bob_key.did)
    await events_until(bob, lambda e: e.kind == "joined")
    await alice.send(group, "once")
    v = await bob.client.recv(10)
    assert v.type == "mls"
    first = await bob.handle(v)
    assert first is not None
    assert first.text == "once"
    before = devices.stores["bob"].snapshot()
    assert await bob.handle(v) is None  # replayed: already accepted, shown once
    # the same envelope with its ciphertext changed (verified envelope, tampered MLS data)
    data = bytearray(b64url_decode(v.payload["data"]))
    data[-3] ^= 0x01
    forged = dataclasses.replace(
        v, payload={**v.payload, "id": new_ulid(0), "data": b64url_encode(bytes(data))}
    )
    with pytest.raises(MlsError) as err:
        await bob.handle(forged)
    assert err.value.reason == "session.failed"
    # a message for a group bob is not in is ignored
    other = await alice.create_group()
    stray = alice.member(other).encrypt(b"elsewhere")
    stray_v = dataclasses.replace(
        v, payload={**v.payload, "id": new_ulid(1), **stray.payload_fields()}
    )
    assert await bob.handle(stray_v) is None
    after = devices.stores["bob"].snapshot()
    after["seen"] = [row for row in after["seen"] if row[1] != stray_v.id]
    assert after == before


async def test_fifty_member_group_over_the_relay(devices: Devices, relay: Relay) -> None:
    keys = [KeyPair.generate() for _ in range(50)]
    agents = [await devices.connect(f"m{i}", k) for i, k in enumerate(keys)]
    for agent in agents[1:]:
        await agent.publish_key_packages(1)
    alice = agents[0]
    group = await alice.create_group()
    commits = await alice.add_members(group, [k.did for k in keys[1:]])
    # a frame holds at most 64 KiB: the adds were split, and their Welcomes sent apart
    assert len(commits) > 1
    final = alice.member(group).epoch
    assert final == len(commits)
    assert relay.mls is not None
    assert relay.mls.delivery.members(alice.member(group).group_id) == {k.did for k in keys}

    async def follow(agent: GroupAgent) -> list[GroupEvent]:
        return await events_until(agent, lambda e: e.epoch == final, limit=len(commits) + 1)

    joined = await asyncio.gather(*(follow(a) for a in agents[1:]))
    assert all(events[0].kind == "joined" for events in joined)
    await alice.send(group, "hello, fifty")
    last = agents[-1]
    got = await asyncio.gather(
        *(events_until(a, lambda e: e.kind == "application") for a in agents[1:])
    )
    assert {texts(g)[-1] for g in got} == {(keys[0].did, "hello, fifty")}
    await last.send(group, "the fiftieth answers")
    got = await asyncio.gather(
        *(events_until(a, lambda e: e.kind == "application") for a in agents[:-1])
    )
    assert {texts(g)[-1] for g in got} == {(keys[-1].did, "the fiftieth answers")}
