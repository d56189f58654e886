"""X3DH + Double Ratchet sessions (dsip.messaging.ratchet): pure, no storage."""

from __future__ import annotations

import json
import random
from collections.abc import Coroutine
from typing import Any

import base58
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsip.core.identity import KeyPair, did_key_document, x25519_multibase
from dsip.messaging import ratchet
from dsip.messaging.ratchet import (
    MAX_SKIP,
    Encrypted,
    InitialHeader,
    MessagingError,
    OneTimePrekey,
    Peer,
    RatchetHeader,
    RemotePrekeys,
    SessionRecord,
    SignedPrekey,
    accept,
    generate_one_time_prekeys,
    generate_signed_prekey,
    initiate,
)

NOW = 1_760_000_000
AAD = b'{"enc":"dr-v1"}'


class Prekeys:
    """An in-memory PrekeySource that, like the store, remembers consumed one-time prekeys."""

    def __init__(self, device: KeyPair, count: int = 5) -> None:
        self.signed = generate_signed_prekey(device, 1, now=NOW)
        self.one_time = {k.id: k for k in generate_one_time_prekeys(1, count)}
        self.consumed: set[int] = set()

    def signed_prekey(self, prekey_id: int) -> SignedPrekey | None:
        return self.signed if prekey_id == self.signed.id else None

    def one_time_prekey(self, prekey_id: int) -> OneTimePrekey:
        if prekey_id in self.consumed:
            raise MessagingError("used", code="prekey-reused", reason="session.invalid-state")
        if prekey_id not in self.one_time:
            raise MessagingError("unknown", code="prekey-invalid")
        return self.one_time[prekey_id]

    def remote(self, device: KeyPair, one_time_id: int | None = 1) -> RemotePrekeys:
        otk = self.one_time[one_time_id].public if one_time_id is not None else None
        return RemotePrekeys(
            device.did,
            device.public_key.public_bytes_raw(),
            self.signed.id,
            self.signed.public,
            self.signed.signature,
            one_time_id,
            otk,
        )


def peer(local: KeyPair, other: KeyPair) -> Peer:
    return Peer(local.did, other.did, other.did, other.public_key.public_bytes_raw())


class Pair:
    """Alice initiated to Bob; both records live here."""

    def __init__(self, one_time_id: int | None = 1) -> None:
        self.alice, self.bob = KeyPair.generate(), KeyPair.generate()
        self.bob_prekeys = Prekeys(self.bob)
        remote = self.bob_prekeys.remote(self.bob, one_time_id)
        session, self.first = initiate(
            self.alice, peer(self.alice, self.bob), remote, b"first", AAD, now=NOW
        )
        self.a: SessionRecord | None = SessionRecord((session,))
        self.b: SessionRecord | None = None

    def to_bob(self, message: Encrypted, aad: bytes = AAD) -> bytes:
        got = accept(
            self.b,
            message,
            aad,
            local=self.bob,
            peer=peer(self.bob, self.alice),
            prekeys=self.bob_prekeys,
            now=NOW,
        )
        if got.consumed_one_time_prekey is not None:
            self.bob_prekeys.consumed.add(got.consumed_one_time_prekey)
        self.b = got.record
        return got.plaintext

    def to_alice(self, message: Encrypted, aad: bytes = AAD) -> bytes:
        got = accept(
            self.a,
            message,
            aad,
            local=self.alice,
            peer=peer(self.alice, self.bob),
            prekeys=Prekeys(self.alice),
            now=NOW,
        )
        self.a = got.record
        return got.plaintext

    def alice_sends(self, text: bytes, aad: bytes = AAD) -> Encrypted:
        assert self.a is not None
        self.a, enc = self.a.encrypt(text, aad)
        return enc

    def bob_sends(self, text: bytes, aad: bytes = AAD) -> Encrypted:
        assert self.b is not None
        self.b, enc = self.b.encrypt(text, aad)
        return enc


def state(record: SessionRecord | None) -> Any:
    return None if record is None else json.dumps(record.to_json(), sort_keys=True)


# -- identity binding ------------------------------------------------------------------------


def test_identity_key_is_the_did_key_and_its_key_agreement() -> None:
    pair = Pair()
    assert pair.first.initial is not None
    assert pair.first.initial.identity_key == pair.alice.public_key.public_bytes_raw()
    # The X25519 key X3DH uses is exactly the did:key document's keyAgreement key.
    doc = did_key_document(pair.alice.did)
    assert doc.key_agreement[0].endswith(x25519_multibase(pair.alice.public_key))
    x_pub = pair.alice.x25519_private().public_key().public_bytes_raw()
    assert base58.b58decode(x25519_multibase(pair.alice.public_key)[1:])[2:] == x_pub
    assert pair.to_bob(pair.first) == b"first"


def test_signed_prekey_is_signed_by_the_did_key() -> None:
    bob = KeyPair.generate()
    spk = generate_signed_prekey(bob, 7, now=NOW)
    raw = bob.public_key.public_bytes_raw()
    assert ratchet.verify_signed_prekey(raw, spk.public, spk.signature)
    other = KeyPair.generate().public_key.public_bytes_raw()
    assert not ratchet.verify_signed_prekey(other, spk.public, spk.signature)
    flipped = spk.signature[:-1] + bytes([spk.signature[-1] ^ 1])  # always a change
    assert not ratchet.verify_signed_prekey(raw, spk.public, flipped)


def test_bundle_of_another_key_is_refused() -> None:
    alice, bob, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    prekeys = Prekeys(bob)
    remote = prekeys.remote(bob)
    swapped = RemotePrekeys(
        bob.did,
        mallory.public_key.public_bytes_raw(),
        remote.signed_prekey_id,
        remote.signed_prekey,
        remote.signed_prekey_signature,
    )
    with pytest.raises(MessagingError) as info:
        initiate(alice, peer(alice, bob), swapped, b"x", AAD, now=NOW)
    assert info.value.code == "prekey-invalid"
    assert info.value.reason == "policy.trust-insufficient"
    bad_sig = RemotePrekeys(
        bob.did, remote.identity_key, 1, remote.signed_prekey, bytes(64), None, None
    )
    with pytest.raises(MessagingError) as info:
        initiate(alice, peer(alice, bob), bad_sig, b"x", AAD, now=NOW)
    assert info.value.code == "prekey-invalid"


# -- round trips, ordering -------------------------------------------------------------------


def test_round_trip_both_ways_many_turns() -> None:
    pair = Pair()
    assert pair.to_bob(pair.first) == b"first"
    for turn in range(5):
        assert pair.to_alice(pair.bob_sends(b"b%d" % turn)) == b"b%d" % turn
        assert pair.to_bob(pair.alice_sends(b"a%d" % turn)) == b"a%d" % turn


def test_x3dh_fields_repeat_until_the_responder_answers() -> None:
    pair = Pair()
    second = pair.alice_sends(b"second")
    assert second.initial == pair.first.initial
    pair.to_bob(pair.first)
    pair.to_bob(second)
    pair.to_alice(pair.bob_sends(b"reply"))
    assert pair.alice_sends(b"third").initial is None


def test_out_of_order_and_skipped_messages() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    pair.to_alice(pair.bob_sends(b"turn"))
    sent = [(i, pair.alice_sends(b"m%d" % i)) for i in range(20)]
    lost = sent.pop(7)
    random.Random(4).shuffle(sent)
    for i, enc in sent:
        assert pair.to_bob(enc) == b"m%d" % i
    # The conversation goes on past the lost one, in both directions.
    assert pair.to_alice(pair.bob_sends(b"after")) == b"after"
    assert pair.to_bob(pair.alice_sends(b"later")) == b"later"
    # ...and the lost message still opens when it finally arrives (its key was kept).
    assert pair.to_bob(lost[1]) == b"m7"


def test_second_initial_message_can_bootstrap_when_the_first_is_late() -> None:
    pair = Pair()
    second = pair.alice_sends(b"second")
    assert pair.to_bob(second) == b"second"
    assert pair.bob_prekeys.consumed == {1}
    assert pair.to_bob(pair.first) == b"first"  # same X3DH: no second prekey needed
    assert pair.b is not None
    assert len(pair.b.sessions) == 1


def test_exhausted_one_time_prekeys_fall_back_to_the_signed_prekey() -> None:
    pair = Pair(one_time_id=None)
    assert pair.first.initial is not None
    assert pair.first.initial.one_time_prekey_id is None
    assert pair.to_bob(pair.first) == b"first"
    assert pair.bob_prekeys.consumed == set()


def test_session_state_serializes_mid_conversation() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    held = pair.alice_sends(b"held back")
    for _ in range(3):
        pair.to_alice(pair.bob_sends(b"x"))
    assert pair.a is not None
    assert pair.b is not None
    pair.a = SessionRecord.from_json(json.loads(json.dumps(pair.a.to_json())))
    pair.b = SessionRecord.from_json(json.loads(json.dumps(pair.b.to_json())))
    assert pair.to_bob(held) == b"held back"
    assert pair.to_bob(pair.alice_sends(b"resumed")) == b"resumed"
    assert "private" not in repr(pair.a)
    assert pair.a.current.state not in repr(pair.a)


def test_simultaneous_initiation_converges() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    a_pk, b_pk = Prekeys(alice), Prekeys(bob)
    sa, to_bob = initiate(alice, peer(alice, bob), b_pk.remote(bob), b"hi bob", AAD, now=NOW)
    sb, to_alice = initiate(bob, peer(bob, alice), a_pk.remote(alice), b"hi alice", AAD, now=NOW)
    a_rec = accept(
        SessionRecord((sa,)),
        to_alice,
        AAD,
        local=alice,
        peer=peer(alice, bob),
        prekeys=a_pk,
        now=NOW,
    ).record
    b_rec = accept(
        SessionRecord((sb,)), to_bob, AAD, local=bob, peer=peer(bob, alice), prekeys=b_pk, now=NOW
    ).record
    for i in range(3):
        a_rec, enc = a_rec.encrypt(b"a%d" % i, AAD)
        got = accept(b_rec, enc, AAD, local=bob, peer=peer(bob, alice), prekeys=b_pk, now=NOW)
        b_rec = got.record
        assert got.plaintext == b"a%d" % i
        b_rec, enc = b_rec.encrypt(b"b%d" % i, AAD)
        got = accept(a_rec, enc, AAD, local=alice, peer=peer(alice, bob), prekeys=a_pk, now=NOW)
        a_rec = got.record
        assert got.plaintext == b"b%d" % i
    assert a_rec.current.bootstrap == b_rec.current.bootstrap


# -- bad input: a reason token, and the record unchanged ---------------------------------------


def rejected(pair: Pair, enc: Encrypted, aad: bytes = AAD) -> MessagingError:
    before = state(pair.b), set(pair.bob_prekeys.consumed)
    with pytest.raises(MessagingError) as info:
        pair.to_bob(enc, aad)
    assert (state(pair.b), pair.bob_prekeys.consumed) == before
    return info.value


def test_replayed_message_is_rejected() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    pair.to_alice(pair.bob_sends(b"turn"))
    enc = pair.alice_sends(b"once")
    pair.to_bob(enc)
    err = rejected(pair, enc)
    assert (err.code, err.reason) == ("msg-replay", "session.invalid-state")


def test_tampered_aad_and_ciphertext_are_rejected() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    enc = pair.alice_sends(b"payload")
    err = rejected(pair, enc, AAD + b" ")
    assert (err.code, err.reason) == ("msg-decrypt-failed", "session.failed")
    flipped = Encrypted(
        enc.header, enc.ciphertext[:-1] + bytes([enc.ciphertext[-1] ^ 1]), enc.initial
    )
    assert rejected(pair, flipped).code == "msg-decrypt-failed"
    moved = Encrypted(
        RatchetHeader(enc.header.ratchet_key, 0, enc.header.message_number + 1), enc.ciphertext
    )
    assert rejected(pair, moved).code == "msg-decrypt-failed"
    assert pair.to_bob(enc) == b"payload"  # the genuine one still opens afterwards


def test_message_without_session_is_unknown_session() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    pair.to_alice(pair.bob_sends(b"turn"))
    enc = pair.alice_sends(b"no x3dh any more")
    assert enc.initial is None
    pair.b = None  # bob lost his state
    err = rejected(pair, enc)
    assert (err.code, err.reason) == ("msg-unknown-session", "session.unknown-session")


def test_forged_identity_key_is_a_sender_mismatch() -> None:
    pair = Pair()
    assert pair.first.initial is not None
    mallory = KeyPair.generate()
    forged = Encrypted(
        pair.first.header,
        pair.first.ciphertext,
        InitialHeader(
            mallory.public_key.public_bytes_raw(),
            pair.first.initial.ephemeral_key,
            pair.first.initial.signed_prekey_id,
            pair.first.initial.one_time_prekey_id,
        ),
    )
    err = rejected(pair, forged)
    assert (err.code, err.reason) == ("msg-sender-mismatch", "policy.trust-insufficient")


def test_reused_one_time_prekey_is_rejected() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    carol = KeyPair.generate()
    _, again = initiate(
        carol, peer(carol, pair.bob), pair.bob_prekeys.remote(pair.bob, 1), b"me too", AAD, now=NOW
    )
    with pytest.raises(MessagingError) as info:
        accept(
            None,
            again,
            AAD,
            local=pair.bob,
            peer=peer(pair.bob, carol),
            prekeys=pair.bob_prekeys,
            now=NOW,
        )
    assert (info.value.code, info.value.reason) == ("prekey-reused", "session.invalid-state")


def test_unknown_signed_prekey_is_invalid() -> None:
    pair = Pair()
    assert pair.first.initial is not None
    initial = pair.first.initial
    other = Encrypted(
        pair.first.header,
        pair.first.ciphertext,
        InitialHeader(initial.identity_key, initial.ephemeral_key, 99, initial.one_time_prekey_id),
    )
    assert rejected(pair, other).code == "prekey-invalid"


def test_skip_bound_is_enforced() -> None:
    pair = Pair()
    pair.to_bob(pair.first)
    enc = pair.alice_sends(b"x")
    far = Encrypted(
        RatchetHeader(enc.header.ratchet_key, 0, enc.header.message_number + MAX_SKIP + 5),
        enc.ciphertext,
    )
    err = rejected(pair, far)
    assert err.code == "msg-decrypt-failed"
    assert "skipped" in err.message


b64key = st.binary(min_size=32, max_size=32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ciphertext=st.binary(max_size=300),
    ratchet_key=b64key,
    pn=st.integers(0, 2**32 - 1),
    n=st.integers(0, 2**32 - 1),
    same_key=st.booleans(),
)
def test_arbitrary_ciphertext_raises_only_dsip_errors(
    ciphertext: bytes, ratchet_key: bytes, pn: int, n: int, same_key: bool
) -> None:
    pair = HOSTILE
    assert pair.b is not None
    key = pair.first.header.ratchet_key if same_key else ratchet_key
    before = state(pair.b)
    with pytest.raises(MessagingError):
        pair.to_bob(Encrypted(RatchetHeader(key, pn % 50, n % 3000), ciphertext))
    assert state(pair.b) == before


HOSTILE = Pair()
HOSTILE.to_bob(HOSTILE.first)


def test_reason_tokens_are_v07_shaped() -> None:
    import re

    for code, reason in ratchet.REASONS.items():
        assert re.fullmatch(r"(policy|session)\.[a-z-]+", reason), (code, reason)


def test_a_suspending_library_coroutine_is_refused() -> None:
    class Suspends:
        def __await__(self) -> Any:
            yield None

    async def suspends() -> int:
        await Suspends()
        return 1

    coro: Coroutine[Any, Any, int] = suspends()
    with pytest.raises(MessagingError) as info:
        ratchet._complete(coro)
    assert info.value.code == "msg-library-async"
