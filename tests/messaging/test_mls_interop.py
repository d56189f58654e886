"""Two-party interop of commits: dsip's MLS layer (rfc9420) against AWS mls-rs.

mls-rs (Rust, through ``agentvault-mls-rs-uniffi``) is an independent RFC 9420
implementation; each side creates a group, adds the other, commits with and without an
UpdatePath, and application data flows both ways. mls-rs leaves carry no dsip DID
binding, so the dsip member here skips that check (and only that).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dsip.core.identity import KeyPair
from dsip.messaging.mls import ContentType, MlsMember, MlsMessage

mls_rs: Any = pytest.importorskip("mls_rs_uniffi")


def now() -> int:
    """mls-rs stamps and checks key package lifetimes with the real clock; a minute
    ahead keeps a package made in the same second valid for us."""
    return int(time.time()) + 60


class UnboundMember(MlsMember):
    """A dsip member that accepts leaves without a dsip binding (foreign clients)."""

    def _check_binding(self, leaf: Any) -> str:
        return ""


class MemoryStorage(mls_rs.GroupStateStorage):  # type: ignore[misc]
    def __init__(self) -> None:
        self.states: dict[bytes, bytes] = {}
        self.epochs: dict[tuple[bytes, int], bytes] = {}

    def state(self, group_id: bytes) -> bytes | None:
        return self.states.get(group_id)

    def epoch(self, group_id: bytes, epoch_id: int) -> bytes | None:
        return self.epochs.get((group_id, epoch_id))

    def write(self, group_id: bytes, group_state: bytes, inserts: Any, updates: Any) -> None:
        self.states[group_id] = group_state
        for record in [*inserts, *updates]:
            self.epochs[(group_id, record.id)] = record.data

    def max_epoch_id(self, group_id: bytes) -> int | None:
        ids = [e for g, e in self.epochs if g == group_id]
        return max(ids) if ids else None


def rust_client(name: bytes) -> Any:
    config = mls_rs.ClientConfig(
        group_state_storage=MemoryStorage(), use_ratchet_tree_extension=True
    )
    keys = mls_rs.generate_signature_keypair(mls_rs.CipherSuite.CURVE25519_AES128)
    return mls_rs.Client(name, keys, config)


def as_dsip(message: Any, group: bytes, epoch: int, kind: ContentType) -> MlsMessage:
    return MlsMessage(kind, message.to_bytes(), group, epoch)


def rust_reads(group: Any, message: MlsMessage) -> Any:
    return group.process_incoming_message(mls_rs.Message.from_bytes(message.data))


def test_dsip_creates_and_mls_rs_joins_and_commits() -> None:
    alice = UnboundMember(KeyPair.generate())
    gid = alice.create_group(now())
    rust = rust_client(b"did:web:rust.example#dev")
    kp = MlsMessage(ContentType.KEY_PACKAGE, rust.generate_key_package_message().to_bytes())
    staged = alice.add([kp], now())
    alice.merge()
    assert staged.message.welcome is not None
    group = rust.join_group(None, mls_rs.Message.from_bytes(staged.message.welcome)).group

    # Application data, both ways.
    got = rust_reads(group, alice.encrypt(b"hello from python"))
    assert got.data == b"hello from python"
    reply = group.encrypt_application_message(b"hello from rust")
    assert alice.decrypt(as_dsip(reply, gid, alice.epoch, ContentType.APPLICATION)).plaintext == (
        b"hello from rust"
    )

    # A dsip commit with an UpdatePath, processed by mls-rs.
    update = alice.update()
    alice.merge()
    assert isinstance(rust_reads(group, update.message), mls_rs.ReceivedMessage.COMMIT)
    # An mls-rs commit with an UpdatePath, processed by dsip.
    out = group.commit()
    group.process_incoming_message(out.commit_message)  # mls-rs applies its own commit
    epoch = alice.epoch
    assert alice.process(as_dsip(out.commit_message, gid, epoch, ContentType.COMMIT)).epoch == 3
    reply = group.encrypt_application_message(b"epoch 3")
    assert alice.decrypt(as_dsip(reply, gid, 3, ContentType.APPLICATION)).plaintext == b"epoch 3"


def test_mls_rs_creates_and_dsip_joins_adds_and_removes() -> None:
    rust = rust_client(b"did:web:rust.example#dev")
    group = rust.create_group(None)
    bob = UnboundMember(KeyPair.generate())
    kp = mls_rs.Message.from_bytes(bob.key_package(now()).data)
    out = group.add_members([kp])
    group.process_incoming_message(out.commit_message)
    assert out.welcome_message is not None
    bob.join(out.welcome_message.to_bytes())
    gid = bob.group_id
    assert bob.epoch == 1

    carol = UnboundMember(KeyPair.generate())
    staged = bob.add([carol.key_package(now())], now())  # dsip adds a third member
    bob.merge()
    assert isinstance(rust_reads(group, staged.message), mls_rs.ReceivedMessage.COMMIT)
    carol.process(staged.message)

    message = group.encrypt_application_message(b"three of us")
    for member in (bob, carol):
        got = member.decrypt(as_dsip(message, gid, 2, ContentType.APPLICATION))
        assert got.plaintext == b"three of us"

    removal = bob.remove(carol.did)  # dsip removes with an UpdatePath
    bob.merge()
    assert isinstance(rust_reads(group, removal.message), mls_rs.ReceivedMessage.COMMIT)
    assert carol.process(removal.message).kind == "removed"
    out = group.commit()  # and mls-rs commits on top
    group.process_incoming_message(out.commit_message)
    assert bob.process(as_dsip(out.commit_message, gid, 3, ContentType.COMMIT)).epoch == 4
    got = rust_reads(group, bob.encrypt(b"still in sync"))
    assert got.data == b"still in sync"
