"""The msg profile end to end: fan-out, inner kinds, restart, offline flow, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verified, Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.core.payloads.schema import validate_named, validate_payload
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError, EnvelopeError, WalletError
from dsip.messaging.messages import (
    Conversation,
    Messenger,
    Outbound,
    Received,
    decode_inner,
    encode_inner,
    message_aad,
)
from dsip.messaging.prekeys import PrekeyStore, verify_prekey_bundle
from dsip.messaging.ratchet import MessagingError
from dsip.messaging.session_store import SessionStore

NOW = 1_760_000_000
KEY = bytes(range(32))


@dataclass
class Device:
    identity: KeyPair
    key: KeyPair
    path: Path
    delegation: dict[str, str]
    messenger: Messenger = field(init=False)

    def __post_init__(self) -> None:
        self.open()

    def open(self) -> None:
        store = SessionStore.open(self.path, key=KEY, synchronous="NORMAL")
        self.messenger = Messenger(
            self.key, store, identity=self.identity.did, delegations=[self.delegation]
        )

    def restart(self) -> None:
        self.messenger.store.close()
        self.open()

    @property
    def did(self) -> str:
        return self.key.did

    def snapshot(self) -> dict[str, Any]:
        return self.messenger.store.snapshot()


class World:
    """alice (2 devices), bob (2 devices), mallory and carol (1 each), one relay prekey store."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ids = {name: KeyPair.generate() for name in ("alice", "bob", "mallory", "carol")}
        self.devices: dict[str, Device] = {}
        for name, n in (("alice", 2), ("bob", 2), ("mallory", 1), ("carol", 1)):
            for i in range(1, n + 1):
                self.add(f"{name}{i}", name)
        self.relay = PrekeyStore.open(tmp / "relay.db", synchronous="NORMAL")
        for d in self.devices.values():
            self.publish(d)
        self.verifier = Verifier(delegations=[d.delegation for d in self.devices.values()])

    def add(self, label: str, name: str) -> Device:
        identity, key = self.ids[name], KeyPair.generate()
        deleg = issue_delegation(identity, key.did, issued_at=NOW - 60, expires_at=NOW + 10**7)
        self.devices[label] = Device(identity, key, self.tmp / f"{label}.db", deleg)
        return self.devices[label]

    def publish(self, d: Device, now: int = NOW) -> None:
        env = d.messenger.prekey_bundle(now=now, target=10)
        self.relay.publish(verify_prekey_bundle(env, now=now, delegations=[d.delegation]), now=now)

    def introduce(self, label: str, *names: str, now: int = NOW) -> None:
        """``label`` claims bundles for every device of ``names`` (and its own identity)."""
        d = self.devices[label]
        for name in {*names, self.name_of(label)}:
            for claimed in self.relay.claim_identity(self.ids[name].did, now=now):
                if claimed.device != d.did:
                    d.messenger.learn_claimed(claimed, now=now)

    def name_of(self, label: str) -> str:
        return label.rstrip("0123456789")

    def by_did(self, did: str) -> Device:
        return next(d for d in self.devices.values() if d.did == did)

    def verify(self, out: Outbound, now: int = NOW) -> Verified:
        return Verifier(delegations=self.verifier.delegations).verify(out.envelope, now=now)

    def deliver(self, out: Outbound, now: int = NOW) -> Received:
        return self.by_did(out.device).messenger.receive(self.verify(out, now), now=now)

    def deliver_all(self, outs: tuple[Outbound, ...], now: int = NOW) -> dict[str, Received]:
        return {o.device: self.deliver(o, now) for o in outs}

    def conv(self, label: str, peer: str) -> Conversation:
        return self.devices[label].messenger.conversation(self.ids[peer].did)

    def label(self, did: str) -> str:
        return next(k for k, d in self.devices.items() if d.did == did)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    for d in w.devices.values():
        d.messenger.store.close()
    w.relay.close()


def started(world: World) -> World:
    """alice1 → bob: every device knows every other device of alice and bob."""
    for label in ("alice1", "alice2", "bob1", "bob2"):
        world.introduce(label, "alice", "bob")
    return world


# -- fan-out and the profile -------------------------------------------------------------------


def test_message_reaches_every_device_of_bob_and_a_copy_reaches_alice2(world: World) -> None:
    started(world)
    sent = world.conv("alice1", "bob").send_text("hello bob", now=NOW)
    assert sorted(world.label(o.device) for o in sent.outbound) == ["alice2", "bob1", "bob2"]
    got = world.deliver_all(sent.outbound)
    for label in ("bob1", "bob2", "alice2"):
        r = got[world.devices[label].did]
        assert r.message["body"] == "hello bob"
        assert r.message["id"] == sent.id
        assert r.sender_identity == world.ids["alice"].did
        assert r.sender_device == world.devices["alice1"].did
        assert r.new_session
    assert got[world.devices["alice2"].did].copy
    assert got[world.devices["alice2"].did].conversation == world.ids["bob"].did
    assert not got[world.devices["bob1"].did].copy
    # Replies come back on the same ratchets, and fan out the same way.
    reply = world.conv("bob2", "alice").send_text("hi alice", now=NOW + 1)
    assert sorted(world.label(o.device) for o in reply.outbound) == ["alice1", "alice2", "bob1"]
    back = world.deliver_all(reply.outbound, NOW + 1)
    # alice1's ratchet with bob2 exists; bob2's first words to alice2 and bob1 start theirs.
    assert {world.label(d): r.new_session for d, r in back.items()} == {
        "alice1": False,
        "alice2": True,
        "bob1": True,
    }
    # One ratchet per device pair, and every device's history shows both messages.
    for label in ("alice1", "alice2", "bob1", "bob2"):
        peer = "bob" if label.startswith("alice") else "alice"
        bodies = [m.body["body"] for m in world.conv(label, peer).history()]
        assert bodies == ["hello bob", "hi alice"], label


def test_outer_envelope_is_schema_valid_and_hides_the_kind(world: World) -> None:
    started(world)
    conv = world.conv("alice1", "bob")
    sent = [
        conv.send_text("secret words", now=NOW),
        conv.set_typing("on", thread="th-123", now=NOW),
        conv.send_receipt(new_ulid(NOW * 1000), "read", now=NOW),
    ]
    first = sent[0]
    conv.edit(first.id, "other words", now=NOW)
    for s in sent:
        for o in s.outbound:
            validate_payload(o.payload)
            text = json.dumps(o.payload)
            assert o.payload["type"] == "msg"
            for leak in ("secret", "th-123", "typing", "receipt", "read", s.id):
                assert leak not in text
            assert len(b64url_decode(o.payload["content"]["ciphertext"])) % 16 == 0


def test_receipts_typing_and_edits_travel_inside(world: World) -> None:
    started(world)
    a, b = world.conv("alice1", "bob"), world.conv("bob1", "alice")
    msg = a.send_text("first draft", now=NOW)
    world.deliver_all(msg.outbound)
    kinds = []
    for sent in (
        b.send_receipt(msg.id, "delivered", now=NOW + 1),
        b.set_typing("on", thread="main", now=NOW + 2),
        b.send_receipt(msg.id, "read", now=NOW + 3),
    ):
        got = world.deliver_all(sent.outbound, NOW + 3)
        kinds.append(got[world.devices["alice1"].did].message)
    assert [(k["type"], k.get("kind") or k.get("state")) for k in kinds] == [
        ("receipt", "delivered"),
        ("typing", "on"),
        ("receipt", "read"),
    ]
    assert kinds[0]["for"] == msg.id
    world.deliver_all(a.edit(msg.id, "final text", now=NOW + 4).outbound, NOW + 4)
    for label in ("alice1", "alice2", "bob1", "bob2"):
        peer = "bob" if label.startswith("alice") else "alice"
        [m] = world.conv(label, peer).history()
        assert m.body["body"] == "final text", label
        assert m.edited_at == NOW + 4, label
    world.deliver_all(a.delete(msg.id, now=NOW + 5).outbound, NOW + 5)
    [m] = world.conv("bob2", "alice").history()
    assert m.deleted
    assert m.body == {}


def test_restart_mid_conversation(world: World) -> None:
    started(world)
    a = world.conv("alice1", "bob")
    first = a.send_text("one", now=NOW)
    world.deliver_all(first.outbound)
    late = a.send_text("two (delayed)", now=NOW + 1)
    third = a.send_text("three", now=NOW + 2)
    for d in world.devices.values():
        d.restart()
    world.deliver_all(third.outbound, NOW + 2)
    world.deliver_all(late.outbound, NOW + 2)  # out of order, across the restart
    reply = world.conv("bob1", "alice").send_text("got them", now=NOW + 3)
    world.deliver_all(reply.outbound, NOW + 3)
    # History is in the order each device took the messages in (alice1 sent them in order).
    assert [m.body["body"] for m in world.conv("alice1", "bob").history()] == [
        "one",
        "two (delayed)",
        "three",
        "got them",
    ]
    for label in ("alice2", "bob1", "bob2"):
        peer = "bob" if label.startswith("alice") else "alice"
        assert [m.body["body"] for m in world.conv(label, peer).history()] == [
            "one",
            "three",
            "two (delayed)",
            "got them",
        ], label


def test_offline_flow_seed_13(world: World) -> None:
    """Alice fetches bob's prekeys, sends while bob is offline; bob wakes hours later."""
    world.introduce("alice1", "bob")
    sent = world.conv("alice1", "bob").send_text("are you there?", now=NOW)
    held = {o.device: o.frame for o in sent.outbound}  # the relay's store-and-forward
    later = NOW + 4 * 3600  # far past the ±300 s replay window
    bob1 = world.devices["bob1"].messenger
    got = bob1.receive_frame(held[world.devices["bob1"].did], now=later)
    assert got.message["body"] == "are you there?"
    with pytest.raises(MessagingError) as info:  # the relay delivering it again
        bob1.receive_frame(held[world.devices["bob1"].did], now=later + 60)
    assert info.value.code == "msg-replay"
    with pytest.raises(DsipError) as expired:
        world.devices["bob2"].messenger.receive_frame(
            held[world.devices["bob2"].did], now=NOW + 2 * 86_400
        )
    assert expired.value.code == "record-expired"


def test_passphrase_store_keeps_secrets_encrypted_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    device = KeyPair.generate()
    store = SessionStore.open(path, passphrase="correct horse", kdf_n=2**10)
    m = Messenger(device, store)
    m.prekey_bundle(now=NOW, target=3)
    with store.transaction(write=False) as tx:
        secret = tx.one_time_prekey(device.did, 1).private
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret not in raw
    with pytest.raises(WalletError) as info:
        SessionStore.open(path, passphrase="wrong", kdf_n=2**10)
    assert info.value.code == "wallet-locked"
    with pytest.raises(WalletError):
        SessionStore.open(path, key=KEY)
    reopened = SessionStore.open(path, passphrase="correct horse")
    with reopened.transaction(write=False) as tx:
        assert tx.one_time_prekey(device.did, 1).private == secret
    reopened.close()


def test_inner_codec() -> None:
    inner = {
        "type": "text",
        "id": new_ulid(NOW * 1000),
        "author": "did:key:z6MkA",
        "to": "did:key:z6MkB",
        "sent_at": NOW,
        "body": "x",
    }
    padded = encode_inner(inner)
    assert len(padded) % 128 == 0
    assert decode_inner(padded) == inner
    validate_named("msg-inner", inner)
    for bad in (b"", b"{}\x80", padded.replace(b"\x80", b"\x81"), b"[1]\x80", b'{"a":1.5}\x80'):
        with pytest.raises(MessagingError) as info:
            decode_inner(bad)
        assert info.value.code == "msg-inner-invalid"
    with pytest.raises(MessagingError):
        encode_inner(
            dict(
                inner,
                type="msgUpdate",
                action="delete",
                patch={"body": "x"},
                **{"for": inner["id"]},
            )
        )


# -- bad input: rejected with a reason token, stored state unchanged ----------------------------


def rejected(world: World, label: str, action: Any) -> DsipError:
    before = world.devices[label].snapshot()
    with pytest.raises(DsipError) as info:
        action()
    assert world.devices[label].snapshot() == before, "a rejected message changed the store"
    assert info.value.reason.split(".")[0] in ("policy", "session", "transport")
    return info.value


def forge(
    world: World,
    sender: str,
    to_label: str,
    *,
    inner: dict[str, Any] | None = None,
    plaintext: bytes | None = None,
    mutate: Any = None,
    now: int = NOW,
) -> Outbound:
    """A genuinely signed msg from ``sender``'s device with arbitrary inner content."""
    d = world.devices[sender]
    m = d.messenger
    target = world.devices[to_label].did
    env_id = new_ulid(now * 1000)
    aad = message_aad(d.did, target, env_id)
    body = plaintext if plaintext is not None else encode_inner(inner or {})
    with m.store.transaction() as tx:
        record = tx.load_record(d.did, target)
        assert record is not None, "forge needs an existing session"
        record, enc = record.encrypt(body, aad)
        tx.save_record(record, now=now)
    out = m._envelope(target, world.devices[to_label].identity.did, env_id, aad, enc, now)
    if mutate is not None:
        payload = dict(out.payload)
        mutate(payload)
        out = Outbound(
            out.device,
            out.identity,
            sign_envelope(payload, d.key, delegations=[d.delegation]),
            payload,
        )
    return out


def text(world: World, author: str, to: str, body: str = "x", **kw: Any) -> dict[str, Any]:
    return {
        "type": "text",
        "id": new_ulid(NOW * 1000),
        "author": world.ids[author].did,
        "to": world.ids[to].did,
        "sent_at": NOW,
        "body": body,
        **kw,
    }


def test_forged_sender_is_rejected(world: World) -> None:
    started(world)
    world.introduce("mallory1", "bob")
    world.deliver_all(world.conv("mallory1", "bob").send_text("hi, I am mallory", now=NOW).outbound)
    # 1. mallory signs a msg claiming to be alice: the envelope pipeline refuses it.
    sent = world.conv("alice1", "bob").send_text("genuine", now=NOW)
    payload = next(o.payload for o in sent.outbound if world.label(o.device) == "bob1")
    forged = sign_envelope(dict(payload, id=new_ulid(NOW * 1000)), world.devices["mallory1"].key)
    bob1 = world.devices["bob1"].messenger
    err = rejected(world, "bob1", lambda: bob1.receive_frame(forged, now=NOW))
    assert err.code == "signer-mismatch"
    with pytest.raises(EnvelopeError):
        world.verifier.verify(forged, now=NOW)
    # 2. mallory, as herself, puts alice's name in the encrypted author field.
    out = forge(world, "mallory1", "bob1", inner=text(world, "alice", "bob"))
    err = rejected(world, "bob1", lambda: world.deliver(out))
    assert (err.code, err.reason) == ("msg-sender-mismatch", "policy.trust-insufficient")
    # 3. mallory's device claims to act for alice's identity in an existing session.
    out = forge(world, "mallory1", "bob1", inner=text(world, "mallory", "bob"))
    v = world.verify(out)
    spoofed = Verified(v.type, v.payload, v.kid, v.signer, world.ids["alice"].did, v.signed)
    err = rejected(world, "bob1", lambda: bob1.receive(spoofed, now=NOW))
    assert err.code == "msg-sender-mismatch"


def test_replayed_ciphertext_is_rejected(world: World) -> None:
    started(world)
    sent = world.conv("alice1", "bob").send_text("once", now=NOW)
    out = next(o for o in sent.outbound if world.label(o.device) == "bob1")
    world.deliver(out)
    # The same envelope again, after bob's verifier forgot it (a restart): the store knows.
    world.devices["bob1"].restart()
    err = rejected(world, "bob1", lambda: world.deliver(out))
    assert (err.code, err.reason) == ("msg-replay", "session.invalid-state")

    # The same ciphertext re-wrapped by its sender in a new envelope: bound to the old id.
    def rewrap(p: dict[str, Any]) -> None:
        # alice1 signs a new envelope around the old ciphertext and header, with an AAD
        # that names the new envelope id (so the outer checks pass).
        p.update(id=new_ulid(NOW * 1000), header=out.payload["header"])
        aad = message_aad(world.devices["alice1"].did, out.device, p["id"])
        p["content"] = dict(out.payload["content"], aad=b64url_encode(aad))
        p.pop("x3dh", None)

    again = forge(world, "alice1", "bob1", inner=text(world, "alice", "bob"), mutate=rewrap)
    err = rejected(world, "bob1", lambda: world.deliver(again))
    # The message key is spent, and the ciphertext was bound to the old envelope id anyway.
    assert (err.code, err.reason) == ("msg-replay", "session.invalid-state")


def test_tampered_aad_is_rejected(world: World) -> None:
    started(world)
    world.deliver_all(world.conv("alice1", "bob").send_text("setup", now=NOW).outbound)

    def other_device(p: dict[str, Any]) -> None:
        p["content"] = dict(
            p["content"],
            aad=b64url_encode(
                message_aad(world.devices["alice1"].did, world.devices["bob2"].did, p["id"])
            ),
        )

    out = forge(world, "alice1", "bob1", inner=text(world, "alice", "bob"), mutate=other_device)
    err = rejected(world, "bob1", lambda: world.deliver(out))
    assert (err.code, err.reason) == ("msg-decrypt-failed", "session.failed")

    def garbage(p: dict[str, Any]) -> None:
        p["content"] = dict(p["content"], aad=b64url_encode(b"not json"))

    out = forge(world, "alice1", "bob1", inner=text(world, "alice", "bob"), mutate=garbage)
    assert rejected(world, "bob1", lambda: world.deliver(out)).code == "msg-decrypt-failed"
    # Changed in transit (no re-signing possible): the signature no longer verifies.
    good = forge(world, "alice1", "bob1", inner=text(world, "alice", "bob"))
    frame = dict(good.envelope)
    frame["payload"] = frame["payload"].replace("A", "B", 1)
    assert rejected(
        world, "bob1", lambda: world.devices["bob1"].messenger.receive_frame(frame, now=NOW)
    ).code in (
        "signature-invalid",
        "payload-not-json",
    )


def test_message_for_an_unknown_session_is_rejected(world: World) -> None:
    started(world)
    world.deliver_all(world.conv("alice1", "bob").send_text("a", now=NOW).outbound)
    world.deliver_all(world.conv("bob1", "alice").send_text("b", now=NOW).outbound)
    sent = world.conv("alice1", "bob").send_text("no x3dh fields any more", now=NOW)
    out = next(o for o in sent.outbound if world.label(o.device) == "bob1")
    assert "x3dh" not in out.payload
    # bob1 loses its database (new phone, same device key): it has no session.
    d = world.devices["bob1"]
    d.messenger.store.close()
    d.path = world.tmp / "bob1-new.db"
    d.open()
    err = rejected(world, "bob1", lambda: world.deliver(out))
    assert (err.code, err.reason) == ("msg-unknown-session", "session.unknown-session")


def test_reused_one_time_prekey_is_rejected(world: World) -> None:
    bob1 = world.devices["bob1"]
    claimed = world.relay.claim(bob1.did, now=NOW)
    assert claimed is not None
    assert claimed.one_time_prekey_id is not None
    # A misbehaving relay hands the same one-time prekey to alice and to carol.
    for label in ("alice1", "carol1"):
        world.devices[label].messenger.learn_claimed(claimed, now=NOW)
    first = world.conv("alice1", "bob").send_text("me first", now=NOW)
    world.deliver_all(first.outbound)
    second = world.conv("carol1", "bob").send_text("me too", now=NOW)
    assert second.outbound[0].payload["x3dh"]["one_time_prekey_id"] == claimed.one_time_prekey_id
    err = rejected(world, "bob1", lambda: world.deliver(second.outbound[0]))
    assert (err.code, err.reason) == ("prekey-reused", "session.invalid-state")


def test_edit_by_someone_else_is_rejected(world: World) -> None:
    started(world)
    world.introduce("mallory1", "bob")
    msg = world.conv("alice1", "bob").send_text("alice wrote this", now=NOW)
    world.deliver_all(msg.outbound)
    world.deliver_all(world.conv("mallory1", "bob").send_text("hello", now=NOW).outbound)
    edit = {
        "type": "msgUpdate",
        "id": new_ulid(NOW * 1000),
        "author": world.ids["mallory"].did,
        "to": world.ids["bob"].did,
        "sent_at": NOW,
        "action": "edit",
        "for": msg.id,
        "patch": {"body": "mallory wrote this"},
    }
    out = forge(world, "mallory1", "bob1", inner=edit)
    err = rejected(world, "bob1", lambda: world.deliver(out))
    assert (err.code, err.reason) == ("msg-not-author", "policy.blocked")
    unknown = forge(
        world,
        "mallory1",
        "bob1",
        inner=dict(edit, id=new_ulid(NOW * 1000), **{"for": new_ulid(NOW * 1000)}),
    )
    assert rejected(world, "bob1", lambda: world.deliver(unknown)).code == "msg-update-unknown"
    # Locally too: bob cannot edit alice's message.
    with pytest.raises(MessagingError) as info:
        world.conv("bob1", "alice").edit(msg.id, "bob's version", now=NOW)
    assert info.value.code == "msg-not-author"
    [m] = world.conv("bob1", "alice").history()
    assert m.body["body"] == "alice wrote this"


def test_other_rejections_leave_state_unchanged(world: World) -> None:
    started(world)
    world.deliver_all(world.conv("alice1", "bob").send_text("setup", now=NOW).outbound)
    garbage = forge(world, "alice1", "bob1", plaintext=b"\x00" * 64)
    assert rejected(world, "bob1", lambda: world.deliver(garbage)).code == "msg-inner-invalid"
    for_carol = forge(world, "alice1", "bob1", inner=text(world, "alice", "carol"))
    assert rejected(world, "bob1", lambda: world.deliver(for_carol)).code == "msg-misaddressed"
    wrong_device = forge(world, "alice1", "bob1", inner=text(world, "alice", "bob"))
    v = world.verify(wrong_device)
    assert rejected(
        world, "bob2", lambda: world.devices["bob2"].messenger.receive(v, now=NOW)
    ).code == ("msg-misaddressed")


def test_crash_before_commit_loses_nothing_and_shows_nothing_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    started(world)
    sent = world.conv("alice1", "bob").send_text("survives a crash", now=NOW)
    out = next(o for o in sent.outbound if world.label(o.device) == "bob1")
    before = world.devices["bob1"].snapshot()
    from dsip.messaging.session_store import StoreTransaction

    def crash(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt("power cut")

    with monkeypatch.context() as m:
        m.setattr(StoreTransaction, "mark_seen", crash)  # the last write of the transaction
        with pytest.raises(KeyboardInterrupt):
            world.deliver(out)
    assert world.devices["bob1"].snapshot() == before
    world.devices["bob1"].restart()
    assert world.deliver(out).message["body"] == "survives a crash"
    with pytest.raises(MessagingError):
        world.deliver(out)
    assert [m.body["body"] for m in world.conv("bob1", "alice").history()] == ["survives a crash"]


def test_send_without_session_or_bundle_changes_nothing(world: World) -> None:
    before = world.devices["alice1"].snapshot()
    with pytest.raises(MessagingError) as info:
        world.conv("alice1", "bob").send_text("nobody to send to", now=NOW)
    assert info.value.code == "msg-unknown-session"
    assert world.devices["alice1"].snapshot() == before


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = started(World(tmp_path_factory.mktemp("hostile")))
    w.deliver_all(w.conv("alice1", "bob").send_text("setup", now=NOW).outbound)
    yield w
    for d in w.devices.values():
        d.messenger.store.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ciphertext=st.binary(max_size=400), with_x3dh=st.booleans())
def test_arbitrary_ciphertext_raises_only_dsip_errors(
    hostile: World, ciphertext: bytes, with_x3dh: bool
) -> None:
    alice1, bob1 = hostile.devices["alice1"], hostile.devices["bob1"]
    env_id = new_ulid(NOW * 1000)
    fields: dict[str, Any] = {
        "to": bob1.did,
        "content": {
            "enc": "dr-v1",
            "ciphertext": b64url_encode(ciphertext) or "AA",
            "aad": b64url_encode(message_aad(alice1.did, bob1.did, env_id)),
        },
        "header": {
            "ratchet_key": b64url_encode(bytes(31) + b"\x09"),
            "previous_chain_length": 0,
            "message_number": 1,
        },
    }
    if with_x3dh:
        fields["x3dh"] = {
            "identity_key": b64url_encode(alice1.key.public_key.public_bytes_raw()),
            "ephemeral_key": b64url_encode(bytes(32)),
            "signed_prekey_id": 1,
            "one_time_prekey_id": 3,
        }
    payload = make_payload(
        "msg", sender=alice1.identity.did, now=NOW, profiles=[], msg_id=env_id, **fields
    )
    frame = encode_frame(sign_envelope(payload, alice1.key, delegations=[alice1.delegation]))
    before = bob1.snapshot()
    with pytest.raises(DsipError):
        bob1.messenger.receive_frame(frame, now=NOW)
    assert bob1.snapshot() == before
