"""MLS groups (RFC 9420) for dsip devices: a thin, typed layer over the ``rfc9420`` library.

One :class:`MlsMember` is one device in one group. Its credential names its DID, its
messages travel as :class:`MlsMessage` inside signed ``mls`` envelopes, and a relay running
:mod:`dsip.messaging.mls_delivery` orders and fans them out. Sans-I/O: time is the ``now``
argument, state is bytes (:meth:`MlsMember.to_bytes` / :meth:`MlsMember.from_bytes`).

Library choice
--------------
No MLS is written here. Candidates on PyPI (surveyed 2026-11):

* ``rfc9420`` 1.3.0: pure Python (``cryptography``, ``rfc9180`` 0.3.0 for HPKE), typed.
* ``agentvault-mls-rs-uniffi`` 0.1.1: UniFFI bindings of AWS mls-rs (Rust).
* ``rine-mls`` 0.1.1: PyO3 bindings of mls-rs 0.55 with rine's own framing and storage.
* ``openmls-dave`` 0.1.0: source only, needs crates.io to build, so not installable here.
  ``mls-rs``, ``mls_rs``, ``openmls`` and ``vox-mls`` have no distribution.

Each installable candidate ran the official interop vectors
(``shared/reference/mls-rfc9420-vectors``, runner ``tests/messaging/test_mls_vectors.py``,
strict: any mismatch or exception fails a case). The table gives cases passed out of the
cases in the file. "n/r" means the library's API cannot run the file at all:

====================================  ===========  ===============  ========
file                                  rfc9420      mls-rs (uniffi)  rine-mls
====================================  ===========  ===============  ========
tree-math (10)                        10/10        n/r              n/r
deserialization (14)                  14/14        n/r              n/r
crypto-basics (7)                     7/7          n/r              n/r
secret-tree (21)                      21/21        n/r              n/r
key-schedule (7)                      0/7 [1]      n/r              n/r
psk_secret (77)                       77/77        n/r              n/r
transcript-hashes (7)                 7/7          n/r              n/r
welcome (7)                           7/7          n/r              n/r
tree-operations (5)                   5/5          n/r              n/r
tree-validation (98)                  98/98        n/r              n/r
treekem (77)                          77/77 [2]    n/r              n/r
message-protection (7)                7/7          n/r              n/r
messages (300)                        300/300      300/300 [3]      n/r
passive-client-welcome (56)           28/56 [4]    n/r              n/r
passive-client-handling-commit (91)   91/91        n/r              n/r
passive-client-random (1, 200 epochs) 1/1          n/r              n/r
====================================  ===========  ===============  ========

[1] Every output matches except ``MLS-Exporter``, where the library does not hash the
context as RFC 9420 §8.5 requires. dsip does not use the exporter.
[2] The public part: path merge, tree hashes, private keys consistent with the tree.
Path decryption is covered by the passive-client files.
[3] Only the 7 ``MLSMessage``-framed fields of each case; the bindings expose no codec
for the other 12.
[4] The other 28 deliver the ratchet tree out of band, and ``from_welcome`` has no
parameter for it: skipped, not failed.

``rfc9420`` is used. It is the only candidate that can run the vectors at all: 750 of
the 757 runnable cases pass, and all 7 failures are the exporter context [1]. It is also the
only one with external commits, GroupInfo export and state as bytes. mls-rs (uniffi) has
no external commit and no GroupInfo. rine-mls puts its own framing on application
messages, keeps state in a directory of its own, has no update, and its credential is
the bare signature key.

**Two-party interop of commits** (``tests/messaging/test_mls_interop.py``, against
mls-rs, an independent implementation). Each side creates a group and adds the other.
Add commits, commits with an UpdatePath (update, remove) and application data all
cross in both directions. Every case passes **with the fixes below**. Without them,
every rfc9420 commit that has a path is refused, by mls-rs and by rfc9420 itself.

What this layer adds, because the library does not do it
--------------------------------------------------------
rfc9420 1.3.0 receives correctly (the vectors), but as a sender and as a store it has
these bugs. Each fix calls the library's own code and re-implements none of TreeKEM:

* **Path LeafNode never signed.** A commit with a path copies the old leaf's signature
  and HPKE key. It also encrypts under a GroupContext that still has the old leaf.
  ``_signed_update_path`` runs the library's ``create_update_path`` twice with one path
  secret: once on a copy to learn the parent hash, then for real, with the new leaf
  signed (§7.3) and given a fresh key (§7.4) already in place.
* **Unmerged leaves lost.** ``serialize_full_state`` drops them. The library uses it to
  clone the tree for every commit and to persist state, so the group forks after an add
  into a tree that has parent keys. The fix keeps them alongside the library's bytes.
* **External commits broken on both sides.** The joiner's leaf index comes from
  ``n_leaves - 1``, which is wrong once the tree grows. Receivers read the leaf index of
  a ``new_member_commit`` sender, which is not on the wire, as 0, and never place the
  joiner's leaf. ``apply_own_commit`` also keeps the previous epoch's external key pair.
* **Application messages must be signed.** ``unprotect`` skips the signature check when
  the signature is empty. :meth:`MlsMember.decrypt` requires a valid signature by the
  sender leaf.
* **Replay and nonce reuse.** Any generation of the current epoch can be re-derived, and
  ``to_bytes`` drops the secret-tree positions. We persist the ``(leaf, generation)``
  pairs already consumed in the epoch and our own send count, refuse replays, and
  fast-forward the send ratchet after a restore, so no (key, nonce) pair is used twice.
* **GroupInfo signer.** The library accepts a signature by *any* leaf. We verify the leaf
  that the GroupInfo names.
* **Atomicity.** The library sets flags before it verifies. A refused handshake message
  leaves our state byte-for-byte unchanged: we snapshot the state and restore it.
* **Removal.** A removed member cannot process the commit that removes it. We check the
  commit's signature and membership tag, then report ``removed``.
* **Capabilities.** The library always lists default types, which §7.2 forbids and
  mls-rs refuses. We list only what is needed.

The fixes patch three ``RatchetTree`` methods when this module is imported. Outside a
dsip commit the path fix delegates to the original; the persistence fix also reads the
library's own format.

Identity binding (DID to MLS signature key)
-------------------------------------------
Each device generates its own Ed25519 MLS signature key, so the DID key never signs MLS
content. The BasicCredential identity is the device's DID URL (its ``kid``: the member
DID plus the fragment that names the device key). Two devices of one DID therefore have
distinct leaves and identities; the library requires distinct identities, and RFC 9420
§7.3 requires distinct keys. The binding is a statement signed with the DID key::

    statement = b"dsip-mls-binding/1\\x00" + kid + b"\\x00" + mls_signature_public_key

It travels in a private-use LeafNode extension, type ``0xF0D5`` (RFC 9420 §13.3),
listed in the leaf's capabilities, as compact JSON ``{"kid": kid, "sig": base64url}``.
A leaf is accepted only if ``kid`` equals the credential identity and resolves through
the DID document (§8.1; ``did:key`` locally) to a key that verifies the statement over
the leaf's ``signature_key``. The check survives path commits, which carry extensions
over. Every member checks every leaf: on join, on each key package it adds, and after
each commit it processes. Results are cached per (identity, key).

Errors
------
All are :class:`MlsError`, a :class:`~dsip.errors.DsipError`:

=========================  ==============================  ===================================
code                       reason                          when
=========================  ==============================  ===================================
``mls-wrong-epoch``        ``session.invalid-state``       message for another epoch
``mls-wrong-group``        ``session.invalid-state``       message for another group
``mls-not-member``         ``policy.blocked``              sender leaf blank or removed
``mls-invalid-commit``     ``session.failed``              commit fails RFC 9420 processing
``mls-invalid-message``    ``session.failed``              undecodable or unverifiable
``mls-replay``             ``session.failed``              (leaf, generation) seen before
``mls-binding-invalid``    ``policy.trust-insufficient``   leaf not bound to its DID
``mls-commit-pending``     ``x-dsip.mls-state`` (local)    our own commit awaits the DS
``mls-no-group``           ``x-dsip.mls-state`` (local)    no group yet, or removed
``mls-state-invalid``      ``x-dsip.mls-state`` (local)    saved state unusable
=========================  ==============================  ===================================

The delivery service adds ``mls-commit-conflict`` (``session.glare``): another commit
already took this epoch, so rebase and retry.

The ciphersuite is ``MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`` (0x0001), the
mandatory one. Commits travel as PublicMessage, so the relay can order them without
keys; application data travels as PrivateMessage. dsip does not use standalone
proposals: commits carry them inline. Messages from a previous epoch are refused (no old
epoch keys are kept). While our own commit awaits the DS, the old epoch stays in use:
the staged commit is built on a copy of the state.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rfc9420 import DefaultCryptoProvider
from rfc9420.codec.tls import write_opaque_varint
from rfc9420.extensions.extensions import Extension
from rfc9420.group.mls_group.processing import MLSGroup as _Group
from rfc9420.group.mls_group.processing import PendingCommit
from rfc9420.messages.data_structures import (
    AddProposal,
    Commit,
    Credential,
    ExternalInitProposal,
    GroupContext,
    GroupInfo,
    Proposal,
    RemoveProposal,
    Sender,
    SenderType,
    Signature,
    UpdatePath,
    Welcome,
)
from rfc9420.messages.key_packages import KeyPackage, LeafNode, LeafNodeSource
from rfc9420.messages.messages import (
    AuthenticatedContent,
    AuthenticatedContentTBS,
    FramedContent,
    MLSCiphertext,
    MLSMessage,
    MLSPlaintext,
    WireFormat,
    compute_sender_data_aad,
    decode_encrypted_sender_data,
    unprotect_content_application,
    verify_plaintext,
)
from rfc9420.messages.messages import ContentType as _WireContent
from rfc9420.messages.refs import make_key_package_ref
from rfc9420.protocol.schedule.key_schedule import KeySchedule
from rfc9420.protocol.tree.ratchet_tree import RatchetTree
from rfc9420.protocol.tree.ratchet_tree_backend import RatchetTreeBackend
from rfc9420.protocol.tree.secret_tree import SecretTree

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import DocumentSource, KeyPair, resolve_kid, split_did_url
from dsip.core.jsonwire import compact_dumps
from dsip.errors import DsipError

__all__ = [
    "CIPHER_SUITE",
    "ContentType",
    "Decrypted",
    "MlsError",
    "MlsMember",
    "MlsMessage",
    "Processed",
    "StagedCommit",
    "key_package_owner",
    "verify_leaf_binding",
]

CIPHER_SUITE: Final = 0x0001  # MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519
KEY_PACKAGE_LIFETIME: Final = 90 * 86_400  # seconds a key package stays valid
_BINDING_LABEL: Final = b"dsip-mls-binding/1\x00"
#: LeafNode extension carrying the DID binding (RFC 9420 §17.3 private-use range).
BINDING_EXTENSION: Final = 0xF0D5


def _uint16_vector(values: Sequence[int]) -> bytes:
    body = b"".join(v.to_bytes(2, "big") for v in values)
    return write_opaque_varint(body)


# Capabilities (RFC 9420 §7.2): mls10, our suite, our binding extension, basic
# credentials. Default extension and proposal types are not listed: §7.2 forbids it
# (mls-rs refuses "Default value listed"), which is why the binding is not in the
# default application_id extension, which rfc9420 would want listed.
_CAPABILITIES: Final = b"".join(
    _uint16_vector(v) for v in ([1], [CIPHER_SUITE], [BINDING_EXTENSION], [], [1])
)
_STATE_VERSION: Final = 1
_MAX_SEEN: Final = 1 << 20  # consumed (leaf, generation) pairs kept per epoch
_MAX_MESSAGE: Final = 1 << 20  # bytes of one MLS message we parse


class ContentType(StrEnum):
    """What an ``mls`` payload carries (its ``content_type``)."""

    COMMIT = "commit"
    PROPOSAL = "proposal"
    APPLICATION = "application"
    WELCOME = "welcome"
    KEY_PACKAGE = "key-package"
    GROUP_INFO = "group-info"


_WIRE_FORMAT: Final[Mapping[ContentType, WireFormat]] = {
    ContentType.COMMIT: WireFormat.PUBLIC_MESSAGE,
    ContentType.PROPOSAL: WireFormat.PUBLIC_MESSAGE,
    ContentType.APPLICATION: WireFormat.PRIVATE_MESSAGE,
    ContentType.WELCOME: WireFormat.WELCOME,
    ContentType.KEY_PACKAGE: WireFormat.KEY_PACKAGE,
    ContentType.GROUP_INFO: WireFormat.GROUP_INFO,
}


class MlsError(DsipError):
    """An MLS message or operation was refused; ``code`` says which rule (module docstring)."""

    default_code = "mls-invalid-message"
    default_reason = "session.failed"


def _wrong_epoch(got: int, want: int) -> MlsError:
    return MlsError(
        f"message for epoch {got}, group is at epoch {want}",
        code="mls-wrong-epoch",
        reason="session.invalid-state",
    )


def _local(message: str, code: str) -> MlsError:
    return MlsError(message, code=code, reason="x-dsip.mls-state", remote=False)


# --- the wire body ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MlsMessage:
    """One MLS message as dsip carries it (the fields of an ``mls`` payload).

    ``data`` is a complete TLS-serialized ``MLSMessage`` (RFC 9420 §6). A commit may
    travel with the ``welcome`` for the members it adds and the ``group_info`` of the
    epoch it creates, so that a relay accepts or refuses the three together.
    ``group`` is empty only for a key package, which belongs to no group yet.
    """

    content_type: ContentType
    data: bytes = field(repr=False)
    group: bytes = b""
    epoch: int = 0
    welcome: bytes | None = field(default=None, repr=False)
    group_info: bytes | None = field(default=None, repr=False)

    def payload_fields(self) -> dict[str, Any]:
        """The ``mls`` payload fields (pass to ``make_payload("mls", ..., **fields)``)."""
        out: dict[str, Any] = {"content_type": self.content_type.value}
        if self.content_type is not ContentType.KEY_PACKAGE:
            out["group"] = b64url_encode(self.group)
            out["epoch"] = self.epoch
        out["data"] = b64url_encode(self.data)
        if self.welcome is not None:
            out["welcome"] = b64url_encode(self.welcome)
        if self.group_info is not None:
            out["group_info"] = b64url_encode(self.group_info)
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> MlsMessage:
        """Read a schema-valid ``mls`` payload and check ``data`` agrees with its header.

        The MLS framing (wire format, and group/epoch of handshake and application
        messages) must match the signed ``content_type``/``group``/``epoch`` fields, so a
        relay can route on the JSON and a receiver trusts neither alone.
        """
        try:
            ctype = ContentType(payload["content_type"])
            data = _b64(payload["data"], "data")
            group = _b64(payload["group"], "group") if "group" in payload else b""
            epoch = payload.get("epoch", 0)
            welcome = _b64(payload["welcome"], "welcome") if "welcome" in payload else None
            info = _b64(payload["group_info"], "group_info") if "group_info" in payload else None
        except (KeyError, ValueError, TypeError) as exc:
            raise MlsError(f"mls payload is malformed: {exc!s:.120}") from None
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise MlsError("mls payload epoch is not a non-negative integer")
        if ctype is not ContentType.KEY_PACKAGE and not group:
            raise MlsError(f"{ctype.value} needs a group")
        message = cls(ctype, data, group, epoch, welcome, info)
        message.check_framing()
        return message

    def check_framing(self) -> None:
        """Raise ``mls-invalid-message`` unless ``data`` is the MLSMessage the fields say."""
        wire, header = _frame(self.data)
        if wire != _WIRE_FORMAT[self.content_type]:
            raise MlsError(f"data is wire format {int(wire)}, not a {self.content_type.value}")
        if header is not None:
            group, epoch, content = header
            want = {
                ContentType.COMMIT: _WireContent.COMMIT,
                ContentType.PROPOSAL: _WireContent.PROPOSAL,
                ContentType.APPLICATION: _WireContent.APPLICATION,
            }[self.content_type]
            if content != want or (
                self.content_type is not ContentType.APPLICATION and content != want
            ):
                raise MlsError(f"data carries content type {int(content)}, not {want.name}")
            if group != self.group or epoch != self.epoch:
                raise MlsError("data's group/epoch differ from the payload's")
        if self.welcome is not None:
            if self.content_type is not ContentType.COMMIT:
                raise MlsError("only a commit carries a welcome")
            if _frame(self.welcome)[0] != WireFormat.WELCOME:
                raise MlsError("welcome is not an MLS Welcome")
        if self.group_info is not None:
            if self.content_type is not ContentType.COMMIT:
                raise MlsError("only a commit carries a group_info")
            if _frame(self.group_info)[0] != WireFormat.GROUP_INFO:
                raise MlsError("group_info is not an MLS GroupInfo")


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    try:
        return b64url_decode(value, what=what)
    except DsipError as exc:
        raise ValueError(exc.message) from None


def _frame(data: bytes) -> tuple[WireFormat, tuple[bytes, int, int] | None]:
    """(wire format, (group, epoch, content type) for framed content) of an MLSMessage."""
    if len(data) > _MAX_MESSAGE:
        raise MlsError("MLS message too large")
    try:
        message = MLSMessage.deserialize(data)
        if message.version != 1:
            raise MlsError(f"MLS version {int(message.version)} is not mls10")
        wire = WireFormat(message.wire_format)
        if wire == WireFormat.PUBLIC_MESSAGE:
            content = message.get_parsed_content()
            assert isinstance(content, AuthenticatedContent)
            fc = content.tbs.framed_content
            return wire, (fc.group_id, int(fc.epoch), int(fc.content_type))
        if wire == WireFormat.PRIVATE_MESSAGE:
            ct = MLSCiphertext.deserialize(message.content)
            return wire, (ct.group_id, int(ct.epoch), int(ct.content_type))
        return wire, None
    except MlsError:
        raise
    except Exception as exc:  # the codec raises assorted errors on hostile bytes
        raise MlsError(f"undecodable MLS message: {type(exc).__name__}") from None


# --- two library fixes ------------------------------------------------------------------
#
# rfc9420 1.3.0 receives correctly (the vectors) but, as a sender, (1) never signs the
# ``commit``-source LeafNode of an UpdatePath: it copies the old leaf's signature and HPKE
# key, and encrypts the path under a GroupContext whose tree hash still has the old leaf,
# so every commit with a path is refused by conforming receivers, itself included; and
# (2) drops ``unmerged_leaves`` when it serializes a tree (``serialize_full_state``), which
# it does to clone the tree for every commit and to persist state, so after an add into
# a tree with parent keys, resolutions differ between members and the group forks.
# Both are fixed here without re-implementing any of TreeKEM: (1) runs the library's own
# ``create_update_path`` twice with the same path secret, first on a copy to learn the
# parent hash our new leaf must carry, then for real with that leaf, signed (RFC 9420
# §7.3), already in the tree; (2) carries the unmerged leaves next to the library's bytes.

# (signature private key, fresh leaf HPKE key pair) of the commit being built, if any.
_PATH_SIGNER: ContextVar[tuple[bytes, tuple[bytes, bytes]] | None] = ContextVar(
    "_PATH_SIGNER", default=None
)
_create_update_path = RatchetTree.create_update_path
_serialize_full_state = RatchetTree.serialize_full_state
_load_full_state = RatchetTree.load_full_state
_UNMERGED_MAGIC: Final = b"dsip-unmerged/1\x00"


class _FixedRandom:
    """Hands out one fixed value, so two runs of the path derivation agree."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def random_bytes(self, n: int) -> bytes:
        assert n == len(self._value)
        return self._value


def _signed_update_path(
    self: RatchetTree,
    committer_index: int,
    new_leaf_node: LeafNode,
    group_context_bytes: bytes,
    excluded_leaf_pubkeys: set[bytes] | None = None,
) -> tuple[UpdatePath, bytes, dict[int, bytes]]:
    signer = _PATH_SIGNER.get()
    if signer is None:
        return _create_update_path(
            self, committer_index, new_leaf_node, group_context_bytes, excluded_leaf_pubkeys
        )
    private, (enc_private, enc_public) = signer
    crypto = self._crypto_provider
    seed = os.urandom(crypto.kdf_hash_len())
    own_rand = self._rand_provider
    trial = copy.copy(self)
    trial._nodes = copy.deepcopy(self._nodes)
    trial._rand_provider = _FixedRandom(seed)
    first, _, _ = _create_update_path(
        trial, committer_index, new_leaf_node, group_context_bytes, excluded_leaf_pubkeys
    )
    parent_hash = LeafNode.deserialize(first.leaf_node).parent_hash
    leaf = replace(
        new_leaf_node,
        encryption_key=enc_public,
        leaf_node_source=LeafNodeSource.COMMIT,
        parent_hash=parent_hash,
        lifetime_not_before=0,
        lifetime_not_after=0,
        signature=b"",
    )
    group_id = GroupContext.deserialize(group_context_bytes).group_id
    tbs = leaf.tbs_serialize(group_id, committer_index)
    leaf = replace(leaf, signature=Signature(crypto.sign_with_label(private, b"LeafNodeTBS", tbs)))
    node = self.get_node(2 * committer_index)
    node.leaf_node, node.public_key, node.private_key = leaf, enc_public, enc_private
    self._recalculate_hashes_from(2 * committer_index)
    self._rand_provider = _FixedRandom(seed)
    try:
        path, commit_secret, secrets = _create_update_path(
            self, committer_index, leaf, group_context_bytes, excluded_leaf_pubkeys
        )
    finally:
        self._rand_provider = own_rand
    if path.leaf_node != leaf.serialize():
        raise RuntimeError("path leaf differs between the two derivations")
    return path, commit_secret, secrets


def _serialize_with_unmerged(self: RatchetTree) -> bytes:
    body = _serialize_full_state(self)
    entries = [
        (index, sorted(node.unmerged_leaves))
        for index, node in sorted(self._nodes.items())
        if not node.is_leaf and node.unmerged_leaves
    ]
    trailer = compact_dumps(entries)
    return _UNMERGED_MAGIC + len(body).to_bytes(4, "big") + body + trailer


def _load_with_unmerged(self: RatchetTree, data: bytes) -> None:
    if not data.startswith(_UNMERGED_MAGIC):
        _load_full_state(self, data)
        return
    at = len(_UNMERGED_MAGIC)
    size = int.from_bytes(data[at : at + 4], "big")
    _load_full_state(self, data[at + 4 : at + 4 + size])
    for index, leaves in json.loads(data[at + 4 + size :]):
        self.get_node(int(index)).unmerged_leaves = [int(x) for x in leaves]
    for node in self._nodes.values():
        node.hash = None
    if self.n_leaves:
        self.calculate_tree_hash()


RatchetTree.create_update_path = _signed_update_path  # type: ignore[method-assign]
RatchetTree.serialize_full_state = _serialize_with_unmerged  # type: ignore[method-assign]
RatchetTree.load_full_state = _load_with_unmerged  # type: ignore[method-assign]


def _external_commit(group: _Group, package: KeyPackage, signing_key: bytes) -> object:
    """``MLSGroup.external_commit`` with the joiner's leaf index taken from ``add_leaf``.

    The library sets it to ``n_leaves - 1``, which is wrong whenever the tree grows to the
    next power of two (3 members -> 4 leaves): the commit then has no leaf to sign.
    Otherwise the same steps: ExternalInit from the group's external_pub (RFC 9420 §8.3),
    our leaf added, a commit with a path.
    """
    external_pub = group._external_public_key
    if not external_pub:
        raise MlsError("GroupInfo has no external_pub")
    crypto = group._crypto_provider
    package.verify(crypto, group_context=group._group_context)
    kem_output, _, init_secret = crypto.hpke_seal_and_export(
        public_key=external_pub,
        info=b"",
        aad=b"",
        ptxt=b"",
        export_label=b"MLS 1.0 external init secret",
        export_length=crypto.kdf_hash_len(),
    )
    group._external_init_secret_for_commit = init_secret
    group._pending_proposals.append(ExternalInitProposal(kem_output))
    group._own_leaf_index = group._ratchet_tree.add_leaf(package)
    return group.create_commit(signing_key)


def _with_joiner_index(group: _Group, plaintext: MLSPlaintext) -> MLSPlaintext:
    """The external commit with its sender set to the leaf the joiner will occupy.

    A ``new_member_commit`` sender carries no leaf index on the wire (RFC 9420 §6), so
    the library reads 0 and would verify and merge the path at leaf 0. The joiner lands
    in the leftmost blank leaf, as an Add would place it (§7.7); we tell the library so.
    """
    tree = group._ratchet_tree
    content = plaintext.auth_content
    try:
        commit = Commit.deserialize(content.tbs.framed_content.content)
        assert commit.path is not None
        leaf = LeafNode.deserialize(commit.path.leaf_node)
    except Exception:
        raise MlsError("external commit without a path", code="mls-invalid-commit") from None
    # The library neither places the joiner's leaf nor knows its index: place it first,
    # as an Add would (leftmost blank leaf, §7.7), then let the path overwrite it.
    index = tree.add_leaf(KeyPackage(init_key=leaf.encryption_key, leaf_node=leaf))
    framed = replace(content.tbs.framed_content, sender=Sender(index, SenderType.NEW_MEMBER_COMMIT))
    tbs = replace(content.tbs, framed_content=framed)
    return MLSPlaintext(replace(content, tbs=tbs))


def _epoch_keys(group: _Group) -> tuple[KeySchedule, GroupContext, SecretTree]:
    """The current epoch's key schedule, context and secret tree (set once joined)."""
    schedule, context, secrets = group._key_schedule, group._group_context, group._secret_tree
    if schedule is None or context is None or secrets is None:
        raise _local("group state has no current epoch", "mls-no-group")
    return schedule, context, secrets


# --- identity binding -------------------------------------------------------------------


def _did_of(identity: bytes) -> str:
    """The member DID of a (binding-checked) credential identity, a device DID URL."""
    return bytes(identity).decode("utf-8").split("#", 1)[0]


def binding_statement(kid: str, signature_key: bytes) -> bytes:
    """The bytes a device's DID key signs to vouch for its MLS signature key."""
    return _BINDING_LABEL + kid.encode("utf-8") + b"\x00" + signature_key


def verify_leaf_binding(leaf: LeafNode, documents: DocumentSource | None = None) -> str:
    """The DID a leaf is bound to, or ``mls-binding-invalid`` (module docstring)."""

    def bad(why: str) -> MlsError:
        return MlsError(
            f"leaf not bound to its DID: {why}",
            code="mls-binding-invalid",
            reason="policy.trust-insufficient",
        )

    cred = leaf.credential
    if cred is None or int(cred.credential_type) != 1:
        raise bad("not a basic credential")
    try:
        identity = bytes(cred.identity).decode("utf-8")
        did, _ = split_did_url(identity)
    except (UnicodeDecodeError, DsipError):
        raise bad("identity is not a DID URL") from None
    app_ids = [e for e in leaf.extensions or [] if int(e.ext_type) == BINDING_EXTENSION]
    if len(app_ids) != 1:
        raise bad("no dsip binding extension")
    try:
        body = json.loads(app_ids[0].data)
        kid, sig = body["kid"], b64url_decode(body["sig"], what="sig")
        kid_did, _ = split_did_url(kid)
    except (ValueError, KeyError, TypeError, DsipError):
        raise bad("binding is malformed") from None
    if kid != identity or kid_did != did:
        raise bad("binding kid is not the credential's")
    try:
        method = resolve_kid(kid, documents)
    except DsipError as exc:
        raise bad(f"kid does not resolve ({exc.code})") from None
    if not method.verify(sig, binding_statement(kid, bytes(leaf.signature_key))):
        raise bad("binding signature does not verify")
    return did


def _parse_key_package(
    message: MlsMessage, crypto: DefaultCryptoProvider, now: int, context: object = None
) -> KeyPackage:
    if message.content_type is not ContentType.KEY_PACKAGE:
        raise MlsError(f"expected a key package, got {message.content_type.value}")
    try:
        package = MLSMessage.deserialize(message.data).get_parsed_content()
        assert isinstance(package, KeyPackage)
        package.verify(crypto, group_context=context, current_time=now)
        assert package.leaf_node is not None
        package.leaf_node.validate(crypto, current_time=now)
    except Exception as exc:
        raise MlsError(f"invalid key package: {exc!s:.160}") from None
    return package


def key_package_owner(
    message: MlsMessage, now: int, documents: DocumentSource | None = None
) -> tuple[str, str]:
    """(member DID, device kid) of a valid, DID-bound key package; else an :class:`MlsError`.

    What a delivery service checks before it hands a key package out: the package's own
    signature and lifetime, and the binding of its leaf to the DID that publishes it.
    """
    package = _parse_key_package(message, DefaultCryptoProvider(CIPHER_SUITE), now)
    assert package.leaf_node is not None
    did = verify_leaf_binding(package.leaf_node, documents)
    assert package.leaf_node.credential is not None
    return did, bytes(package.leaf_node.credential.identity).decode("utf-8")


# --- results ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StagedCommit:
    """A commit we made, not yet applied: send it, then :meth:`MlsMember.merge` once the
    delivery service accepted it or :meth:`MlsMember.discard` if it was refused."""

    message: MlsMessage
    epoch: int  # the epoch the commit creates


@dataclass(frozen=True, slots=True)
class Decrypted:
    sender: str  # DID of the sending leaf's credential
    leaf: int
    plaintext: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Processed:
    """What handling one incoming message did."""

    kind: Literal["joined", "commit", "own-commit", "removed", "application", "own-echo"]
    epoch: int
    sender: str | None = None
    decrypted: Decrypted | None = None


@dataclass(slots=True)
class _KeyPackageSecrets:
    key_package: KeyPackage
    init_private: bytes = field(repr=False)
    encryption_private: bytes = field(repr=False)


@dataclass(slots=True)
class _Pending:
    group: _Group | None  # state after our commit; None never (kept for clarity)
    staged: StagedCommit
    state_after: bytes = field(repr=False)


# --- the member -------------------------------------------------------------------------


class MlsMember:
    """One device's view of one MLS group.

    ``key`` is the device's DID key (a :class:`~dsip.core.identity.KeyPair`); it signs the
    identity binding and nothing else. ``documents`` resolves non-``did:key`` DIDs for
    binding checks.
    """

    def __init__(
        self,
        key: KeyPair,
        *,
        documents: DocumentSource | None = None,
        signature_seed: bytes | None = None,
    ) -> None:
        self._key = key
        self._documents = documents
        self._crypto = DefaultCryptoProvider(CIPHER_SUITE)
        self._sig_private = signature_seed if signature_seed is not None else os.urandom(32)
        self._sig_public = (
            Ed25519PrivateKey.from_private_bytes(self._sig_private).public_key().public_bytes_raw()
        )
        self._binding = key.sign(binding_statement(key.kid, self._sig_public))
        self._group: _Group | None = None
        self._key_packages: dict[bytes, _KeyPackageSecrets] = {}
        self._pending: _Pending | None = None
        self._epoch = -1  # the epoch _sent and _seen belong to
        self._sent = 0  # application messages we sent in the current epoch
        self._seen: set[tuple[int, int]] = set()  # consumed (leaf, generation), this epoch
        self._verified: set[tuple[bytes, bytes]] = set()  # (identity, signature key) checked

    # -- identity --------------------------------------------------------------------------

    @property
    def did(self) -> str:
        return self._key.did

    @property
    def kid(self) -> str:
        return self._key.kid

    @property
    def signature_key(self) -> bytes:
        """This device's MLS signature public key (bound to :attr:`kid`)."""
        return self._sig_public

    # -- group facts -----------------------------------------------------------------------

    @property
    def in_group(self) -> bool:
        return self._group is not None

    @property
    def group_id(self) -> bytes:
        return self._require().get_group_id()

    @property
    def epoch(self) -> int:
        return int(self._require().get_epoch())

    @property
    def leaf(self) -> int:
        return int(self._require().get_own_leaf_index())

    @property
    def pending(self) -> StagedCommit | None:
        return self._pending.staged if self._pending else None

    def members(self) -> list[tuple[int, str]]:
        """(leaf index, member DID) of every occupied leaf, in leaf order."""
        out = []
        for leaf, identity in self._require().get_member_identities():
            if identity:
                out.append((int(leaf), _did_of(identity)))
        return out

    def member_dids(self) -> set[str]:
        return {did for _, did in self.members()}

    # -- key packages ----------------------------------------------------------------------

    def key_package(self, now: int) -> MlsMessage:
        """A fresh key package for others to add this device with; its secrets stay here."""
        package, init_private, enc_private = self._new_key_package(now)
        ref = make_key_package_ref(self._crypto, package.serialize())
        self._key_packages[ref] = _KeyPackageSecrets(package, init_private, enc_private)
        data = MLSMessage.from_key_package(package).serialize()
        return MlsMessage(ContentType.KEY_PACKAGE, data)

    def sibling(self) -> MlsMember:
        """A member with this device's keys (DID key, MLS signature key) and no group: one
        device takes part in several groups with one MLS identity."""
        return MlsMember(self._key, documents=self._documents, signature_seed=self._sig_private)

    def welcomed(self, welcome: MlsMessage | bytes) -> MlsMember:
        """A :meth:`sibling` joined from ``welcome`` with the key package of ours it is for;
        this member then forgets that package (one-time use, RFC 9420 §16.8). Nothing
        changes here if the join fails."""
        data = welcome if isinstance(welcome, bytes) else welcome.welcome or welcome.data
        try:
            parsed = MLSMessage.deserialize(data).get_parsed_content()
            assert isinstance(parsed, Welcome)
            refs = [bytes(s.new_member) for s in parsed.secrets]
        except Exception:
            raise MlsError("not an MLS Welcome") from None
        ref = next((r for r in refs if r in self._key_packages), None)
        if ref is None:
            raise MlsError(
                "the Welcome is for none of our key packages",
                code="mls-not-member",
                reason="policy.blocked",
            )
        joined = self.sibling()
        joined._key_packages[ref] = self._key_packages[ref]
        joined.join(data)
        del self._key_packages[ref]
        return joined

    @property
    def key_packages_held(self) -> int:
        """Key packages made here whose secrets are kept for a Welcome."""
        return len(self._key_packages)

    def _new_key_package(self, now: int) -> tuple[KeyPackage, bytes, bytes]:
        c = self._crypto
        init_private, init_public = c.generate_key_pair()
        enc_private, enc_public = c.generate_key_pair()
        binding = compact_dumps({"kid": self.kid, "sig": b64url_encode(self._binding)})
        leaf = LeafNode(
            encryption_key=enc_public,
            signature_key=self._sig_public,
            capabilities=_CAPABILITIES,
            credential=Credential(self.kid.encode("utf-8"), self._sig_public),
            leaf_node_source=LeafNodeSource.KEY_PACKAGE,
            lifetime_not_before=max(0, now - 3600),  # an hour of clock skew
            lifetime_not_after=now + KEY_PACKAGE_LIFETIME,
            extensions=[Extension(BINDING_EXTENSION, binding)],
        )
        signature = c.sign_with_label(self._sig_private, b"LeafNodeTBS", leaf.tbs_serialize())
        leaf = replace(leaf, signature=Signature(signature))
        package = KeyPackage(init_key=init_public, leaf_node=leaf)
        signature = c.sign_with_label(self._sig_private, b"KeyPackageTBS", package.tbs_serialize())
        return replace(package, signature=Signature(signature)), init_private, enc_private

    def _read_key_package(self, message: MlsMessage, now: int) -> KeyPackage:
        group = self._group
        context = group._group_context if group is not None else None
        package = _parse_key_package(message, self._crypto, now, context)
        assert package.leaf_node is not None
        self._check_binding(package.leaf_node)
        return package

    # -- creating and joining --------------------------------------------------------------

    def create_group(self, now: int, group_id: bytes | None = None) -> bytes:
        """Start a group with this device as its only member (epoch 0); returns its id."""
        if self._group is not None:
            raise _local("already in a group", "mls-no-group")
        gid = group_id if group_id is not None else os.urandom(16)
        package, _, enc_private = self._new_key_package(now)
        group = _Group.create(gid, package, self._crypto)
        # The library does not learn the creator's leaf key; without it a commit by
        # another member before ours could not be decrypted (path secret to our leaf).
        group._ratchet_tree.get_node(0).private_key = enc_private
        self._install(group)
        return gid

    def join(self, welcome: MlsMessage | bytes) -> Processed:
        """Join from a Welcome (a ``welcome`` message, or a commit carrying one)."""
        if self._group is not None:
            raise _local("already in a group", "mls-no-group")
        data = welcome if isinstance(welcome, bytes) else welcome.welcome or welcome.data
        try:
            parsed = MLSMessage.deserialize(data)
            obj = parsed.get_parsed_content()
            assert isinstance(obj, Welcome)
        except Exception:
            raise MlsError("not an MLS Welcome") from None
        secrets = next(
            (
                self._key_packages[s.new_member]
                for s in obj.secrets
                if s.new_member in self._key_packages
            ),
            None,
        )
        if secrets is None:
            raise MlsError(
                "the Welcome is for none of our key packages",
                code="mls-not-member",
                reason="policy.blocked",
            )
        try:
            group = _Group.from_welcome(
                welcome=obj,
                hpke_private_key=secrets.init_private,
                crypto_provider=self._crypto,
                key_package=secrets.key_package,
                encryption_private_key=secrets.encryption_private,
            )
        except Exception as exc:
            raise MlsError(f"cannot join from this Welcome: {exc!s:.160}") from None
        self._check_tree(group)
        ref = make_key_package_ref(self._crypto, secrets.key_package.serialize())
        del self._key_packages[ref]  # one-time use (RFC 9420 §16.8)
        self._install(group)
        return Processed("joined", self.epoch)

    def group_info(self) -> MlsMessage:
        """A signed GroupInfo with the ratchet tree and external_pub, for external joins."""
        group = self._require()
        data = group.export_group_info(self._sig_private)
        message = MLSMessage(1, WireFormat.GROUP_INFO, data).serialize()  # type: ignore[arg-type]
        return MlsMessage(ContentType.GROUP_INFO, message, self.group_id, self.epoch)

    def external_join(self, group_info: MlsMessage, now: int) -> StagedCommit:
        """Join through an external commit (RFC 9420 §12.4.3.2), e.g. a new device of an
        existing member. The commit is staged: send it, then merge or discard."""
        if self._group is not None:
            raise _local("already in a group", "mls-no-group")
        if group_info.content_type is not ContentType.GROUP_INFO:
            raise MlsError("external join needs a group-info message")
        try:
            parsed = MLSMessage.deserialize(group_info.data).get_parsed_content()
            assert isinstance(parsed, GroupInfo)
            group = _Group.from_group_info(parsed, self._crypto)
        except Exception as exc:
            raise MlsError(f"unusable GroupInfo: {exc!s:.160}") from None
        self._verify_group_info(parsed, group._ratchet_tree)
        self._check_tree(group)
        package, _, _ = self._new_key_package(now)
        try:
            pending = self._signed(lambda: _external_commit(group, package, self._sig_private))
            assert isinstance(pending, PendingCommit)
            group.apply_own_commit(pending)
        except Exception as exc:
            raise MlsError(f"external commit failed: {exc!s:.160}") from None
        return self._stage(group, pending, welcome=False, epoch=int(parsed.group_context.epoch))

    # -- commits we make -------------------------------------------------------------------

    def add(self, key_packages: Sequence[MlsMessage], now: int) -> StagedCommit:
        """Commit adding one device per key package; the Welcome rides on the commit."""
        if not key_packages:
            raise _local("add needs at least one key package", "mls-invalid-commit")
        packages = [self._read_key_package(kp, now) for kp in key_packages]
        return self._commit([AddProposal(p.serialize()) for p in packages])

    def remove(self, member: str | int) -> StagedCommit:
        """Commit removing a leaf (by index) or every leaf of a DID (all its devices)."""
        group = self._require()
        own = int(group.get_own_leaf_index())
        if isinstance(member, int):
            leaves = [leaf for leaf, _ in self.members() if leaf == member]
        else:
            leaves = [leaf for leaf, did in self.members() if did == member and leaf != own]
        if not leaves or own in leaves:
            raise MlsError(
                f"{member!r} is no other member of this group",
                code="mls-not-member",
                reason="policy.blocked",
                remote=False,
            )
        return self._commit([RemoveProposal(i) for i in leaves])

    def update(self) -> StagedCommit:
        """Commit a fresh path for this leaf (post-compromise security; RFC 9420 §12.4)."""
        return self._commit([])

    def _commit(self, proposals: list[Proposal]) -> StagedCommit:
        group = self._require()
        if self._pending is not None:
            raise _local(
                "a commit of ours already awaits the delivery service", "mls-commit-pending"
            )
        epoch = int(group.get_epoch())
        # Work on a copy: the current epoch stays usable until the DS accepted the commit.
        work = self._copy(group)
        try:
            # Inline proposals (RFC 9420 §12.4): nothing to deliver or cache beforehand.
            work._pending_proposals.extend(proposals)
            pending = self._signed(lambda: work.create_commit(self._sig_private))
            assert isinstance(pending, PendingCommit)
            work.apply_own_commit(pending)
        except MlsError:
            raise
        except Exception as exc:
            raise MlsError(
                f"cannot commit: {exc!s:.160}", code="mls-invalid-commit", remote=False
            ) from None
        return self._stage(work, pending, welcome=True, epoch=epoch)

    def _stage(
        self, work: _Group, pending: PendingCommit, *, welcome: bool, epoch: int
    ) -> StagedCommit:
        commit, welcomes = pending[0], pending[1]
        assert isinstance(commit, MLSPlaintext)
        data = MLSMessage.from_public_message(commit.auth_content).serialize()
        welcome_bytes = (
            MLSMessage.from_welcome(welcomes[0]).serialize() if welcome and welcomes else None
        )
        work._update_external_key_pair()
        info = work.export_group_info(self._sig_private)
        info_bytes = MLSMessage(1, WireFormat.GROUP_INFO, info).serialize()  # type: ignore[arg-type]
        message = MlsMessage(
            ContentType.COMMIT, data, work.get_group_id(), epoch, welcome_bytes, info_bytes
        )
        staged = StagedCommit(message, epoch + 1)
        self._pending = _Pending(work, staged, work.to_bytes())
        return staged

    def _signed(self, build: Callable[[], object]) -> object:
        token = _PATH_SIGNER.set((self._sig_private, self._crypto.generate_key_pair()))
        try:
            return build()
        finally:
            _PATH_SIGNER.reset(token)

    def merge(self) -> None:
        """The delivery service accepted our staged commit: move to its epoch."""
        if self._pending is None:
            raise _local("no staged commit", "mls-commit-pending")
        pending, self._pending = self._pending, None
        assert pending.group is not None
        self._install(pending.group)

    def discard(self) -> None:
        """The delivery service refused our staged commit: stay in the current epoch."""
        self._pending = None

    # -- incoming --------------------------------------------------------------------------

    def process(self, message: MlsMessage) -> Processed:
        """Handle one incoming message: a commit (or its Welcome), or application data."""
        if message.content_type is ContentType.APPLICATION:
            try:
                decrypted = self.decrypt(message)
            except _OwnMessage:
                return Processed("own-echo", self.epoch, self.did)
            return Processed("application", self.epoch, decrypted.sender, decrypted)
        if message.content_type is ContentType.COMMIT:
            if self._pending is not None and message.data == self._pending.staged.message.data:
                self.merge()  # our own commit (an external one too), echoed: it was accepted
                return Processed("own-commit", self.epoch, self.did)
            if self._group is None:
                if message.welcome is None:
                    raise _local("not in a group", "mls-no-group")
                return self.join(message)
            return self._process_commit(message)
        if message.content_type is ContentType.WELCOME:
            return self.join(message)
        raise MlsError(f"dsip members do not process {message.content_type.value} messages")

    def _process_commit(self, message: MlsMessage) -> Processed:
        group = self._require()
        if self._pending is not None and message.data == self._pending.staged.message.data:
            self.merge()  # our own commit, echoed by the DS: it was accepted
            return Processed("own-commit", self.epoch, self.did)
        self._check_addressing(message, group)
        content = MLSMessage.deserialize(message.data).get_parsed_content()
        assert isinstance(content, AuthenticatedContent)
        sender = content.tbs.framed_content.sender
        plaintext = MLSPlaintext(content)
        sender_did = self._sender_did(group, sender)
        if self._pending is not None:
            self.discard()  # another commit took this epoch first: ours is void
        if self._removes_us(group, plaintext, sender):
            self._group = None
            return Processed("removed", int(message.epoch) + 1, sender_did)
        before = group.to_bytes()
        try:
            if int(sender.sender_type) == SenderType.NEW_MEMBER_COMMIT:
                group.process_external_commit(_with_joiner_index(group, plaintext))
            else:
                group.process_commit(plaintext, int(sender.sender))
            if self._removed(group):
                self._group = None
                self._pending = None
                return Processed("removed", int(message.epoch) + 1, sender_did)
            self._check_tree(group)
        except Exception as exc:
            self._group = self._restore(before)
            if isinstance(exc, MlsError):
                raise
            raise MlsError(
                f"commit refused: {type(exc).__name__}: {exc!s:.160}", code="mls-invalid-commit"
            ) from None
        self._install(group)
        return Processed("commit", self.epoch, sender_did)

    def _removes_us(self, group: _Group, plaintext: MLSPlaintext, sender: Sender) -> bool:
        """A removed member cannot process the commit that removes it (it gets no path
        secret); it checks the commit is authentic and that it names our leaf."""
        try:
            commit = Commit.deserialize(plaintext.auth_content.tbs.framed_content.content)
        except Exception:
            raise MlsError("undecodable commit", code="mls-invalid-commit") from None
        own = int(group.get_own_leaf_index())
        inline = [p.proposal for p in commit.proposals if p.proposal is not None]
        if not any(isinstance(p, RemoveProposal) and int(p.removed) == own for p in inline):
            return False
        if int(sender.sender_type) != SenderType.MEMBER:
            return False  # only members remove; let the library refuse it
        node = group._ratchet_tree.get_node(2 * int(sender.sender)).leaf_node
        try:
            assert node is not None
            verify_plaintext(
                plaintext,
                node.signature_key,
                _epoch_keys(group)[0].membership_key,
                self._crypto,
                group_context=_epoch_keys(group)[1].serialize(),
            )
        except Exception:
            raise MlsError(
                "commit signature or membership tag is invalid", code="mls-invalid-commit"
            ) from None
        return True

    def _sender_did(self, group: _Group, sender: Sender) -> str | None:
        kind = int(sender.sender_type)
        if kind == SenderType.NEW_MEMBER_COMMIT:
            return None  # the joiner's leaf is in the commit's path; checked after processing
        if kind != SenderType.MEMBER:
            raise MlsError(
                "only members and new members may commit",
                code="mls-not-member",
                reason="policy.blocked",
            )
        leaf = int(sender.sender)
        tree = group._ratchet_tree
        node = tree.get_node(2 * leaf) if leaf < tree.n_leaves else None
        if node is None or node.leaf_node is None or node.leaf_node.credential is None:
            raise MlsError(
                f"leaf {leaf} is not a member of this group",
                code="mls-not-member",
                reason="policy.blocked",
            )
        return _did_of(node.leaf_node.credential.identity)

    def _removed(self, group: _Group) -> bool:
        tree = group._ratchet_tree
        own = int(group.get_own_leaf_index())
        if own >= tree.n_leaves:
            return True
        node = tree.get_node(2 * own).leaf_node
        return node is None or bytes(node.signature_key) != self._sig_public

    def _check_addressing(self, message: MlsMessage, group: _Group) -> None:
        message.check_framing()
        if message.group != group.get_group_id():
            raise MlsError(
                "message for another group", code="mls-wrong-group", reason="session.invalid-state"
            )
        if message.epoch != int(group.get_epoch()):
            raise _wrong_epoch(message.epoch, int(group.get_epoch()))

    # -- application data ------------------------------------------------------------------

    def encrypt(self, plaintext: bytes) -> MlsMessage:
        """Encrypt application data for the group as a PrivateMessage."""
        group = self._require()
        try:
            ciphertext = group.protect(plaintext, signing_key=self._sig_private)
        except Exception as exc:
            raise _local(f"cannot encrypt now: {exc!s:.160}", "mls-no-group") from None
        self._sent += 1
        data = MLSMessage.from_private_message(ciphertext).serialize()
        return MlsMessage(ContentType.APPLICATION, data, group.get_group_id(), self.epoch)

    def decrypt(self, message: MlsMessage) -> Decrypted:
        """Decrypt and authenticate an application message of the current epoch."""
        group = self._require()
        if message.content_type is not ContentType.APPLICATION:
            raise MlsError(f"expected application data, got {message.content_type.value}")
        self._check_addressing(message, group)
        ct = MLSCiphertext.deserialize(MLSMessage.deserialize(message.data).content)
        c = self._crypto
        schedule, context, secrets = _epoch_keys(group)
        tree = group._ratchet_tree
        try:
            sender_data = decode_encrypted_sender_data(
                ct.encrypted_sender_data,
                schedule,
                c,
                ciphertext_sample=ct.ciphertext[: c.kdf_hash_len()],
                sender_data_aad=compute_sender_data_aad(ct.group_id, ct.epoch, ct.content_type),
            )
        except Exception:
            raise MlsError("sender data does not decrypt", code="mls-invalid-message") from None
        leaf, generation = int(sender_data.sender), int(sender_data.generation)
        if leaf == int(group.get_own_leaf_index()):
            raise _OwnMessage("our own application message")
        node = tree.get_node(2 * leaf).leaf_node if leaf < tree.n_leaves else None
        if node is None or node.credential is None:
            raise MlsError(
                f"leaf {leaf} is not a member", code="mls-not-member", reason="policy.blocked"
            )
        if (leaf, generation) in self._seen:
            raise MlsError(
                f"generation {generation} of leaf {leaf} was already used", code="mls-replay"
            )
        try:
            sender, body, auth = unprotect_content_application(ct, schedule, secrets, c)
            if not auth.signature:
                raise MlsError("application message is unsigned")
            framed = FramedContent(
                group_id=ct.group_id,
                epoch=ct.epoch,
                sender=Sender(sender, SenderType.MEMBER),
                authenticated_data=ct.authenticated_data or b"",
                content_type=_WireContent.APPLICATION,
                content=body,
            )
            tbs = AuthenticatedContentTBS(
                wire_format=WireFormat.PRIVATE_MESSAGE,
                framed_content=framed,
                group_context=context.serialize(),
            )
            c.verify_with_label(
                node.signature_key, b"FramedContentTBS", tbs.serialize(), auth.signature
            )
        except MlsError:
            raise
        except Exception as exc:
            raise MlsError(f"application message rejected: {type(exc).__name__}") from None
        if len(self._seen) >= _MAX_SEEN:
            raise MlsError("too many messages this epoch; commit an update", code="mls-replay")
        self._seen.add((leaf, generation))
        did = _did_of(node.credential.identity)
        return Decrypted(did, leaf, bytes(body))

    # -- checks ----------------------------------------------------------------------------

    def _check_binding(self, leaf: LeafNode) -> str:
        key = (
            bytes(leaf.credential.identity) if leaf.credential else b"",
            bytes(leaf.signature_key),
        )
        if key in self._verified:
            return _did_of(key[0])
        did = verify_leaf_binding(leaf, self._documents)
        self._verified.add(key)
        return did

    def _check_tree(self, group: _Group) -> None:
        tree = group._ratchet_tree
        for leaf in range(tree.n_leaves):
            node = tree.get_node(2 * leaf).leaf_node
            if node is not None:
                self._check_binding(node)

    def _verify_group_info(self, info: GroupInfo, tree: RatchetTreeBackend) -> None:
        signer = int(info.signer_leaf_index)
        node = tree.get_node(2 * signer).leaf_node if signer < tree.n_leaves else None
        if node is None:
            raise MlsError("GroupInfo names a blank signer leaf")
        try:
            self._crypto.verify_with_label(
                node.signature_key, b"GroupInfoTBS", info.tbs_serialize(), info.signature.value
            )
        except Exception:
            raise MlsError("GroupInfo is not signed by the leaf it names") from None

    # -- state -----------------------------------------------------------------------------

    def _require(self) -> _Group:
        if self._group is None:
            raise _local("not in a group", "mls-no-group")
        return self._group

    def _install(self, group: _Group) -> None:
        # apply_own_commit keeps the previous epoch's external key pair; receivers of an
        # external commit would decapsulate with it and derive the wrong init secret.
        group._update_external_key_pair()
        self._group = group
        epoch = int(group.get_epoch())
        if epoch != self._epoch:  # the library mutates in place: compare with our record
            self._epoch = epoch
            self._sent = 0
            self._seen = set()

    def _copy(self, group: _Group) -> _Group:
        return self._restore(group.to_bytes())

    def _restore(self, state: bytes) -> _Group:
        group = _Group.from_bytes(state, self._crypto)
        # from_bytes restarts the secret tree at generation 0: skip what we already sent
        # so no (key, nonce) is ever used twice.
        own = int(group.get_own_leaf_index())
        for _ in range(self._sent):
            _epoch_keys(group)[2].next_application(own)
        return group

    def to_bytes(self) -> bytes:
        """Everything needed to continue after a restart, except the DID key (the wallet
        keeps that). Holds private keys: store it like the wallet."""
        pending = None
        if self._pending is not None:
            m = self._pending.staged.message
            pending = {
                "state": b64url_encode(self._pending.state_after),
                "commit": m.payload_fields(),
                "epoch": self._pending.staged.epoch,
            }
        body = {
            "v": _STATE_VERSION,
            "kid": self.kid,
            "signature_seed": b64url_encode(self._sig_private),
            "group": b64url_encode(self._group.to_bytes()) if self._group is not None else None,
            "epoch": self._epoch,
            "sent": self._sent,
            "seen": sorted(self._seen),
            "key_packages": [
                [
                    b64url_encode(s.key_package.serialize()),
                    b64url_encode(s.init_private),
                    b64url_encode(s.encryption_private),
                ]
                for s in self._key_packages.values()
            ],
            "pending": pending,
        }
        return compact_dumps(body)

    @classmethod
    def from_bytes(
        cls, data: bytes, key: KeyPair, *, documents: DocumentSource | None = None
    ) -> MlsMember:
        """Restore a member saved by :meth:`to_bytes`; ``key`` must be the same device key."""
        try:
            body = json.loads(data)
            if body["v"] != _STATE_VERSION:
                raise ValueError(f"state version {body['v']}")
            if body["kid"] != key.kid:
                raise ValueError("state belongs to another key")
            member = cls(
                key, documents=documents, signature_seed=_b64(body["signature_seed"], "seed")
            )
            member._epoch = int(body["epoch"])
            member._sent = int(body["sent"])
            member._seen = {(int(a), int(b)) for a, b in body["seen"]}
            for kp, init, enc in body["key_packages"]:
                package = KeyPackage.deserialize(_b64(kp, "kp"))
                ref = make_key_package_ref(member._crypto, package.serialize())
                member._key_packages[ref] = _KeyPackageSecrets(
                    package, _b64(init, "init"), _b64(enc, "enc")
                )
            if body["group"] is not None:
                member._group = member._restore(_b64(body["group"], "group"))
            if body["pending"] is not None:
                p = body["pending"]
                state = _b64(p["state"], "pending")
                staged = StagedCommit(MlsMessage.from_payload(p["commit"]), int(p["epoch"]))
                member._pending = _Pending(_Group.from_bytes(state, member._crypto), staged, state)
        except MlsError:
            raise
        except Exception as exc:
            raise _local(f"unusable MLS state: {exc!s:.160}", "mls-state-invalid") from None
        return member


class _OwnMessage(MlsError):
    """Our own application message, echoed back (the library cannot decrypt it)."""
