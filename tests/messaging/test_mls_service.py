"""The relay side of mls/1.0 (dsip.messaging.mls_service), sans-I/O: key packages, GroupInfo,
admission of group traffic, and hostile envelopes (each refused, changing nothing)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

pytest.importorskip("rfc9420", reason="the MLS library (PyPI rfc9420) is not installed")

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import Verified, Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.messaging.mls import ContentType, MlsError, MlsMember, MlsMessage
from dsip.messaging.mls_service import MAX_KEY_PACKAGES, MlsService

RELAY = KeyPair.generate().did


def envelope(key: KeyPair, msg_type: str, **fields: Any) -> Verified:
    """A really signed and verified envelope from ``key`` to the relay."""
    now = int(time.time())
    payload = make_payload(msg_type, sender=key.did, now=now, profiles=[], to=RELAY, **fields)
    return Verifier().verify(sign_envelope(payload, key), now=now)


def mls(key: KeyPair, message: MlsMessage) -> Verified:
    return envelope(key, "mls", **message.payload_fields())


def refused(action: Any, code: str, reason: str) -> None:
    assert action.error is not None, action
    assert (action.error.code, action.error.reason) == (code, reason)
    assert action.recipients == ()
    assert action.reply is None


def test_key_packages_are_handed_out_once_each() -> None:
    svc = MlsService()
    bob = KeyPair.generate()
    member = MlsMember(bob)
    now = int(time.time())
    for _ in range(MAX_KEY_PACKAGES + 3):
        action = svc.handle(mls(bob, member.key_package(now)), now=now)
        assert action.reply == {"key_packages": []}
    assert svc.available(bob.did) == MAX_KEY_PACKAGES  # the oldest were dropped
    alice = KeyPair.generate()
    got = svc.handle(envelope(alice, "mls-fetch", target=bob.did), now=now).reply
    assert got is not None
    assert [kp["device"] for kp in got["key_packages"]] == [bob.did]
    assert svc.available(bob.did) == MAX_KEY_PACKAGES - 1
    # bob cannot claim his own; a DID with none gets an empty answer
    own = svc.handle(envelope(bob, "mls-fetch", target=bob.did), now=now).reply
    assert own == {"key_packages": []}
    nobody = svc.handle(envelope(alice, "mls-fetch", target=KeyPair.generate().did), now=now)
    assert nobody.reply == {"key_packages": []}


def test_hostile_envelopes_are_refused_and_change_nothing() -> None:
    svc = MlsService()
    alice, bob, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    now = int(time.time())
    creator = MlsMember(alice)
    creator.create_group(now)
    joiner = MlsMember(bob)
    staged = creator.add([joiner.key_package(now)], now)
    accepted = svc.handle(mls(alice, staged.message), now=now)
    assert set(accepted.recipients) == {alice.did, bob.did}
    creator.merge()
    gid = creator.group_id
    before = (svc.delivery.epoch(gid), svc.delivery.members(gid), svc.available(mallory.did))

    bobs_package = MlsMember(bob).key_package(now)
    refused(
        svc.handle(mls(mallory, bobs_package), now=now),
        "mls-binding-invalid",
        "policy.trust-insufficient",
    )
    info = creator.group_info()
    refused(svc.handle(mls(alice, info), now=now), "mls-invalid-message", "session.failed")
    fields = creator.encrypt(b"x").payload_fields()
    for bad in (
        {**fields, "data": b64url_encode(b"\x00\x01garbage")},
        {**fields, "epoch": 7},
        {**fields, "group": b64url_encode(b"another group")},
    ):
        refused(
            svc.handle(envelope(alice, "mls", **bad), now=now),
            "mls-invalid-message",
            "session.failed",
        )
    refused(
        svc.handle(mls(mallory, creator.encrypt(b"from a stranger?")), now=now),
        "mls-not-member",
        "policy.blocked",
    )
    # GroupInfo: not for strangers, not for unknown groups
    refused(
        svc.handle(envelope(mallory, "mls-fetch", group=b64url_encode(gid)), now=now),
        "mls-not-member",
        "policy.blocked",
    )
    refused(
        svc.handle(envelope(alice, "mls-fetch", group=b64url_encode(b"x" * 16)), now=now),
        "mls-wrong-group",
        "session.invalid-state",
    )
    # an external commit by a stranger who got hold of the GroupInfo
    intruder = MlsMember(mallory).external_join(creator.group_info(), now)
    refused(svc.handle(mls(mallory, intruder.message), now=now), "mls-not-member", "policy.blocked")
    assert (
        svc.delivery.epoch(gid),
        svc.delivery.members(gid),
        svc.available(mallory.did),
    ) == before
    # members still get the GroupInfo
    ok = svc.handle(envelope(bob, "mls-fetch", group=b64url_encode(gid)), now=now).reply
    assert ok is not None
    assert ok["epoch"] == 1
    assert b64url_decode(ok["group_info"])


def test_welcomed_sibling_uses_one_key_package_and_keeps_the_rest() -> None:
    now = int(time.time())
    alice, bob = MlsMember(KeyPair.generate()), MlsMember(KeyPair.generate())
    packages = [bob.key_package(now) for _ in range(3)]
    alice.create_group(now)
    staged = alice.add([packages[1]], now)
    alice.merge()
    before = bob.to_bytes()
    stranger = MlsMember(KeyPair.generate())
    with pytest.raises(MlsError) as err:
        stranger.welcomed(staged.message)
    assert err.value.code == "mls-not-member"
    joined = bob.welcomed(staged.message)
    assert joined.signature_key == bob.signature_key
    assert joined.epoch == alice.epoch
    assert bob.key_packages_held == 2
    assert not bob.in_group
    assert before != bob.to_bytes()
    with pytest.raises(MlsError) as err:
        bob.welcomed(staged.message)  # its package is spent
    assert err.value.code == "mls-not-member"
    message = alice.encrypt(b"hi")
    assert joined.decrypt(message).plaintext == b"hi"


def test_a_welcome_sent_apart_goes_only_to_whom_its_commit_added() -> None:
    svc = MlsService()
    alice, bob, carol = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    now = int(time.time())
    creator = MlsMember(alice)
    creator.create_group(now)
    staged = creator.add([MlsMember(bob).key_package(now)], now)
    assert staged.message.welcome is not None
    welcome = MlsMessage(
        ContentType.WELCOME, staged.message.welcome, staged.message.group, staged.epoch
    )
    bare = dataclasses.replace(staged.message, welcome=None)
    refused(svc.handle(mls(alice, welcome), now=now), "mls-wrong-group", "session.invalid-state")
    assert set(svc.handle(mls(alice, bare), now=now).recipients) == {alice.did, bob.did}
    refused(svc.handle(mls(carol, welcome), now=now), "mls-not-member", "policy.blocked")
    stale = dataclasses.replace(welcome, epoch=0)
    refused(svc.handle(mls(alice, stale), now=now), "mls-wrong-epoch", "session.invalid-state")
    assert set(svc.handle(mls(alice, welcome), now=now).recipients) == {alice.did, bob.did}
