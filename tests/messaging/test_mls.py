"""MLS groups for dsip devices (dsip.messaging.mls) and the relay's delivery service."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pytest

pytest.importorskip("rfc9420", reason="the MLS library (PyPI rfc9420) is not installed")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import make_payload
from dsip.core.identity import KeyPair, StaticDocuments, did_web_document
from dsip.core.payloads import validate_payload
from dsip.messaging.mls import ContentType, MlsError, MlsMember, MlsMessage, StagedCommit
from dsip.messaging.mls_delivery import DeliveryService, Outcome

NOW = 1_760_000_000
RELAY = "did:web:relay.example.com"


def member(key: KeyPair | None = None, **kw: object) -> MlsMember:
    return MlsMember(key or KeyPair.generate(), **kw)  # type: ignore[arg-type]


def deliver(staged: StagedCommit, committer: MlsMember, others: Iterable[MlsMember]) -> None:
    """The DS accepted ``staged``: the committer merges, everyone else processes it."""
    committer.merge()
    for other in others:
        other.process(staged.message)


def group_of(n: int) -> list[MlsMember]:
    """``n`` members, the first created the group and added the rest in one commit."""
    members = [member() for _ in range(n)]
    members[0].create_group(NOW)
    if n > 1:
        staged = members[0].add([m.key_package(NOW) for m in members[1:]], NOW)
        deliver(staged, members[0], members[1:])
    return members


def roundtrip(sender: MlsMember, receivers: Iterable[MlsMember], text: bytes) -> None:
    message = sender.encrypt(text)
    for receiver in receivers:
        got = receiver.decrypt(message)
        assert (got.plaintext, got.sender) == (text, sender.did)


def refused(code: str, fn: object, *args: object) -> MlsError:
    with pytest.raises(MlsError) as info:
        fn(*args)  # type: ignore[operator]
    assert info.value.code == code, info.value
    return info.value


# --- round trips ----------------------------------------------------------------------


def test_two_party_round_trip() -> None:
    alice, bob = group_of(2)
    assert alice.epoch == bob.epoch == 1
    assert alice.group_id == bob.group_id
    roundtrip(alice, [bob], b"hello bob")
    roundtrip(bob, [alice], b"hello alice")
    assert alice.members() == bob.members() == [(0, alice.did), (1, bob.did)]


def test_three_party_round_trip_add_update_remove() -> None:
    alice, bob = group_of(2)
    carol = member()
    staged = bob.add([carol.key_package(NOW)], NOW)  # any member may add
    deliver(staged, bob, [alice, carol])
    everyone = [alice, bob, carol]
    assert {m.epoch for m in everyone} == {2}
    for m in everyone:
        roundtrip(m, [x for x in everyone if x is not m], b"from " + m.did.encode())

    key_before = carol.members()
    staged = carol.update()
    deliver(staged, carol, [alice, bob])
    assert {m.epoch for m in everyone} == {3}
    assert carol.members() == key_before
    roundtrip(carol, [alice, bob], b"after update")

    staged = alice.remove(bob.did)
    deliver(staged, alice, [carol])
    assert bob.process(staged.message).kind == "removed"
    assert not bob.in_group
    assert alice.member_dids() == carol.member_dids() == {alice.did, carol.did}
    roundtrip(alice, [carol], b"bob is gone")
    late = alice.encrypt(b"bob cannot read this")
    with pytest.raises(MlsError):
        bob.decrypt(late)


def test_external_commit_for_a_new_device_of_an_existing_member() -> None:
    did = "did:web:example.com:users:alice"
    phone = KeyPair(Ed25519PrivateKey.generate(), f"{did}#phone")
    laptop = KeyPair(Ed25519PrivateKey.generate(), f"{did}#laptop")
    doc = did_web_document(
        did, [("phone", phone.public_key_multibase), ("laptop", laptop.public_key_multibase)]
    )
    docs = StaticDocuments({did: doc})
    alice_phone, bob = member(phone, documents=docs), member(documents=docs)
    alice_phone.create_group(NOW)
    deliver(alice_phone.add([bob.key_package(NOW)], NOW), alice_phone, [bob])

    alice_laptop = member(laptop, documents=docs)
    staged = alice_laptop.external_join(bob.group_info(), NOW)
    deliver(staged, alice_laptop, [alice_phone, bob])
    assert alice_laptop.epoch == bob.epoch == alice_phone.epoch == 2
    assert [did for _, did in bob.members()] == [did, bob.did, did]
    roundtrip(alice_laptop, [alice_phone, bob], b"new laptop here")
    roundtrip(bob, [alice_phone, alice_laptop], b"welcome, laptop")
    # The new device commits like any member.
    deliver(alice_laptop.update(), alice_laptop, [alice_phone, bob])
    roundtrip(alice_phone, [alice_laptop, bob], b"epoch 3")


def test_leaf_without_a_valid_did_binding_is_refused() -> None:
    alice = group_of(1)[0]
    mallory = member()
    # Claim to be mallory's device while holding another key: the binding cannot verify.
    impostor = member(dataclasses.replace(KeyPair.generate(), kid=mallory.kid))
    forged = impostor.key_package(NOW)
    err = refused("mls-binding-invalid", alice.add, [forged], NOW)
    assert err.reason == "policy.trust-insufficient"


# --- a big group ----------------------------------------------------------------------


def test_fifty_member_group_every_member_decrypts() -> None:
    members = group_of(50)
    assert {m.epoch for m in members} == {1}
    assert len(members[0].members()) == 50
    for sender in (members[0], members[17], members[49]):
        message = sender.encrypt(b"to all fifty from " + sender.did.encode())
        for receiver in members:
            if receiver is not sender:
                assert receiver.decrypt(message).sender == sender.did


# --- refusals -------------------------------------------------------------------------


@pytest.fixture
def removed_member_commit() -> tuple[list[MlsMember], MlsMessage, DeliveryService[str]]:
    alice, bob, carol = group_of(3)
    ds: DeliveryService[str] = DeliveryService()
    staged = alice.update()
    assert ds.submit(alice.did, staged.message, "u").accepted
    deliver(staged, alice, [bob, carol])
    # Bob commits (an update) but loses the race to alice's removal of him.
    bobs = bob.update()
    removal = alice.remove(bob.did)
    assert ds.submit(alice.did, removal.message, "r").accepted
    deliver(removal, alice, [carol])
    return [alice, bob, carol], bobs.message, ds


def test_removed_members_commit_is_refused_by_the_delivery_service(
    removed_member_commit: tuple[list[MlsMember], MlsMessage, DeliveryService[str]],
) -> None:
    (alice, bob, _), commit, ds = removed_member_commit
    outcome = ds.submit(bob.did, commit, "b")
    assert not outcome.accepted
    assert outcome.deliveries == ()
    assert outcome.error is not None
    assert outcome.error.code == "mls-commit-conflict"
    # Rebased on the new epoch it is still refused: bob is no member there.
    rebased = dataclasses.replace(commit, epoch=ds.epoch(alice.group_id) or 0)
    outcome = ds.submit(bob.did, rebased, "b")
    assert outcome.error is not None
    assert outcome.error.code in {
        "mls-not-member",
        "mls-invalid-message",
    }


def test_removed_members_commit_is_refused_by_members_and_state_unchanged(
    removed_member_commit: tuple[list[MlsMember], MlsMessage, DeliveryService[str]],
) -> None:
    (alice, _, carol), commit, _ = removed_member_commit
    for m in (alice, carol):
        before = m.to_bytes()
        err = refused("mls-wrong-epoch", m.process, commit)
        assert err.reason == "session.invalid-state"
        assert m.to_bytes() == before
    # The same commit re-labelled for the current epoch: bob's leaf is gone.
    forged = MlsMessage(ContentType.COMMIT, commit.data, commit.group, alice.epoch)
    for m in (alice, carol):
        before = m.to_bytes()
        with pytest.raises(MlsError) as info:
            m.process(forged)
        assert info.value.code in {"mls-invalid-message", "mls-not-member"}
        assert m.to_bytes() == before


def test_invalid_commit_leaves_state_unchanged() -> None:
    alice, bob, carol = group_of(3)
    staged = alice.update()
    data = bytearray(staged.message.data)
    data[-5] ^= 0x01  # break the membership tag
    bad = dataclasses.replace(staged.message, data=bytes(data))
    before = bob.to_bytes()
    err = refused("mls-invalid-commit", bob.process, bad)
    assert err.reason == "session.failed"
    assert bob.to_bytes() == before
    alice.merge()
    bob.process(staged.message)  # the genuine one still applies
    carol.process(staged.message)
    roundtrip(alice, [bob, carol], b"fine")


def test_wrong_epoch_message_is_refused() -> None:
    alice, bob, carol = group_of(3)
    old = alice.encrypt(b"epoch 1")
    deliver(carol.update(), carol, [alice, bob])
    err = refused("mls-wrong-epoch", bob.decrypt, old)
    assert err.reason == "session.invalid-state"
    future = dataclasses.replace(alice.encrypt(b"x"), epoch=alice.epoch + 1)
    refused("mls-invalid-message", bob.decrypt, future)  # header no longer matches data


def test_tampered_ciphertext_is_refused() -> None:
    alice, bob = group_of(2)
    message = alice.encrypt(b"do not touch")
    data = bytearray(message.data)
    data[-1] ^= 0x80
    refused("mls-invalid-message", bob.decrypt, dataclasses.replace(message, data=bytes(data)))
    assert bob.decrypt(message).plaintext == b"do not touch"  # the original still works


def test_replayed_application_message_is_refused() -> None:
    alice, bob = group_of(2)
    message = alice.encrypt(b"once")
    bob.decrypt(message)
    refused("mls-replay", bob.decrypt, message)


def test_own_application_echo_is_recognised() -> None:
    alice, _ = group_of(2)
    assert alice.process(alice.encrypt(b"mine")).kind == "own-echo"


# --- persistence ----------------------------------------------------------------------


def test_state_persisted_and_restored_mid_conversation() -> None:
    alice, bob, carol = group_of(3)
    roundtrip(alice, [bob, carol], b"before restart")
    seen = bob.encrypt(b"alice reads this before the restart")
    alice.decrypt(seen)
    saved, key = alice.to_bytes(), alice._key
    alice = MlsMember.from_bytes(saved, key)
    assert alice.epoch == 1
    assert alice.members() == bob.members()
    refused("mls-replay", alice.decrypt, seen)  # consumed before the restart
    roundtrip(alice, [bob, carol], b"after restart")  # no key/nonce reuse: bob accepts
    roundtrip(carol, [alice], b"to the restarted one")
    deliver(alice.update(), alice, [bob, carol])
    roundtrip(bob, [alice, carol], b"next epoch")
    with pytest.raises(MlsError) as info:
        MlsMember.from_bytes(saved, KeyPair.generate())
    assert info.value.code == "mls-state-invalid"
    assert not info.value.remote


def test_staged_commit_survives_a_restart_and_merges_on_echo() -> None:
    alice, bob = group_of(2)
    staged = alice.update()
    alice = MlsMember.from_bytes(alice.to_bytes(), alice._key)
    assert alice.pending == staged
    assert alice.process(staged.message).kind == "own-commit"  # the DS echoed it
    bob.process(staged.message)
    roundtrip(bob, [alice], b"same epoch")


def test_refused_commit_is_discarded() -> None:
    alice, bob = group_of(2)
    epoch = alice.epoch
    alice.update()
    refused("mls-commit-pending", alice.update)
    alice.discard()
    assert alice.epoch == epoch
    roundtrip(alice, [bob], b"still in epoch 1")


# --- delivery service -----------------------------------------------------------------


def test_delivery_service_first_commit_wins_and_fans_out() -> None:
    alice, bob, carol = group_of(3)
    ds: DeliveryService[str] = DeliveryService()
    first = alice.update()
    out: Outcome[str] = ds.submit(alice.did, first.message, "env-a", online={alice.did, bob.did})
    assert out.accepted
    assert out.epoch == 2
    assert {(d.recipient, d.hold) for d in out.deliveries} == {
        (alice.did, False),
        (bob.did, False),
        (carol.did, True),  # offline: the relay stores it
    }
    second = bob.update()
    out = ds.submit(bob.did, second.message, "env-b")
    assert not out.accepted
    assert out.error is not None
    assert (out.error.code, out.error.reason) == ("mls-commit-conflict", "session.glare")
    assert ds.submit(alice.did, first.message, "env-a").deliveries == ()  # duplicate
    # Bob learns he lost: processing the winner discards his staged commit.
    alice.merge()
    assert bob.process(first.message).kind == "commit"
    assert bob.pending is None
    carol.process(first.message)
    app = bob.encrypt(b"rebased")
    out = ds.submit(bob.did, app, "env-app")
    assert out.accepted
    assert out.deliveries[0].seq > 1
    assert alice.decrypt(app).plaintext == b"rebased"


def test_delivery_service_refuses_non_members_and_stale_application_data() -> None:
    alice, bob = group_of(2)
    ds: DeliveryService[str] = DeliveryService()
    staged = alice.update()
    ds.submit(alice.did, staged.message, "u")
    stale = bob.encrypt(b"old epoch")
    deliver(staged, alice, [bob])
    out = ds.submit(bob.did, stale, "s")
    assert out.error is not None
    assert out.error.code == "mls-wrong-epoch"
    out = ds.submit("did:web:stranger.example", alice.encrypt(b"x"), "x")
    assert out.error is not None
    assert out.error.code == "mls-not-member"
    # A commit signed for a leaf that is not the envelope signer's.
    forged = ds.submit(bob.did, alice.update().message, "f")
    assert forged.error is not None
    assert forged.error.code == "mls-not-member"


def test_external_join_through_the_delivery_services_group_info() -> None:
    alice, bob = group_of(2)
    ds: DeliveryService[str] = DeliveryService()
    staged = alice.update()
    ds.submit(alice.did, staged.message, "u")
    deliver(staged, alice, [bob])
    info = ds.group_info(alice.group_id)
    assert info is not None
    dave = member()
    join = dave.external_join(info, NOW)
    out = ds.submit(dave.did, join.message, "j")
    assert out.accepted
    assert dave.did in ds.members(alice.group_id)
    deliver(join, dave, [alice, bob])
    roundtrip(dave, [alice, bob], b"joined externally")


# --- wire format ----------------------------------------------------------------------


def test_mls_payload_round_trip_and_schema() -> None:
    alice, bob = group_of(2)
    message = alice.encrypt(b"over the wire")
    payload = make_payload(
        "mls",
        sender=alice.did,
        now=NOW,
        to=RELAY,
        profiles=["mls/1.0"],
        **message.payload_fields(),
    )
    validate_payload(payload)
    assert bob.decrypt(MlsMessage.from_payload(payload)).plaintext == b"over the wire"
    kp = bob.key_package(NOW).payload_fields()
    assert "group" not in kp
    validate_payload(make_payload("mls", sender=bob.did, now=NOW, to=alice.did, **kp))


def test_mls_payload_whose_fields_disagree_with_its_data_is_refused() -> None:
    alice, _ = group_of(2)
    fields = alice.encrypt(b"x").payload_fields()
    for changes in ({"epoch": 7}, {"group": b64url_encode(b"other")}, {"content_type": "commit"}):
        with pytest.raises(MlsError):
            MlsMessage.from_payload({**fields, **changes})
    with pytest.raises(MlsError):
        MlsMessage.from_payload({**fields, "data": b64url_encode(b"\x00\x01\x00")})
    assert b64url_decode(fields["data"])
