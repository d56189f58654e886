"""The MLS delivery service a relay runs (RFC 9420 §14, RFC 9750 §5): sans-I/O.

The relay verifies the DSIP envelope (so it knows the sender's DID), hands the ``mls``
payload to :meth:`DeliveryService.submit` with an opaque ``item`` (typically the signed
envelope, forwarded unchanged), and gets an :class:`Outcome`: refused with an
:class:`~dsip.messaging.mls.MlsError` (its ``reason`` goes back to the sender), or
accepted with one :class:`Delivery` per recipient DID, ``hold=True`` for recipients not in
``online``. The relay sends the held ones to its store (``EnvelopeStore.put``) and the
others on the recipient's connection; nothing here touches storage, sockets or clocks.

Rules, per group:

* **One commit per epoch, first wins.** A commit must be for the group's current epoch
  and carry the ``group_info`` of the epoch it creates. The first accepted commit moves
  the group on; any other commit for that epoch is refused with ``mls-commit-conflict``
  (reason ``session.glare``) so its sender discards it and rebases; the same commit again
  is a harmless duplicate (accepted, delivered to no one).
* **Only members commit.** A member commit's sender leaf must be occupied by the
  envelope signer's DID in the current roster, and its signature must verify with that
  leaf's key; otherwise ``mls-not-member`` (``policy.blocked``). A removed member is not
  in the roster after the commit that removed it, so its later commits are refused. An
  external commit (``new_member_commit``) is accepted if the joiner's DID occupies a leaf
  of the new roster.
* **Order.** Accepted messages get a per-group sequence number; application messages must
  be for the current epoch (``mls-wrong-epoch`` otherwise, so a sender that missed a
  commit re-encrypts after catching up).
* **Fan-out** is to member DIDs (every device of a DID is the relay's business): a commit
  goes to the old and new roster, so removed members learn of it and added members get
  the Welcome riding on it; application data to the current roster. A Welcome too big to
  ride on its commit comes right after it, from the same committer, and goes only to the
  DIDs that commit added.

The roster and leaf keys come from the ratchet tree in each accepted commit's GroupInfo,
whose signature is checked against the leaf it names. The first commit of an unknown
group is trusted on first use (its id is random, 16 bytes, chosen by the creator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rfc9420 import DefaultCryptoProvider
from rfc9420.extensions.extensions import ExtensionType, deserialize_extensions
from rfc9420.messages.data_structures import GroupInfo, SenderType
from rfc9420.messages.messages import (
    AuthenticatedContent,
    MLSMessage,
    MLSPlaintext,
    verify_plaintext,
)
from rfc9420.protocol.tree.ratchet_tree import RatchetTree

from dsip.messaging.mls import CIPHER_SUITE, ContentType, MlsError, MlsMessage

__all__ = ["Delivery", "DeliveryService", "Outcome"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    recipient: str  # a member DID
    item: T
    hold: bool  # recipient offline: store for later (EnvelopeStore.put)
    seq: int  # per-group order of acceptance


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    accepted: bool
    epoch: int  # the group's epoch after this message (-1 for an unknown group)
    deliveries: tuple[Delivery[T], ...] = ()
    error: MlsError | None = None


@dataclass(slots=True)
class _Group:
    epoch: int
    context: bytes  # serialized GroupContext of the current epoch
    leaves: dict[int, tuple[str, bytes]]  # leaf -> (member DID, signature key)
    group_info: bytes  # the current epoch's GroupInfo (MLSMessage), for external joins
    commits: dict[int, bytes] = field(default_factory=dict)  # epoch -> accepted commit hash
    seq: int = 0
    committer: str = ""  # DID whose commit created the current epoch
    added: frozenset[str] = frozenset()  # DIDs that commit brought in (its Welcome's readers)

    def dids(self) -> set[str]:
        return {did for did, _ in self.leaves.values()}


def _wrong_epoch_error(got: int, want: int) -> MlsError:
    return MlsError(
        f"message for epoch {got}, group is at {want}",
        code="mls-wrong-epoch",
        reason="session.invalid-state",
    )


def _refuse(error: MlsError, epoch: int) -> Outcome[T]:
    return Outcome(False, epoch, (), error)


class DeliveryService(Generic[T]):
    """Per-group ordering, admission and fan-out of MLS messages (module docstring)."""

    def __init__(self) -> None:
        self._groups: dict[bytes, _Group] = {}
        self._crypto = DefaultCryptoProvider(CIPHER_SUITE)

    def epoch(self, group: bytes) -> int | None:
        state = self._groups.get(group)
        return state.epoch if state else None

    def members(self, group: bytes) -> set[str]:
        state = self._groups.get(group)
        return state.dids() if state else set()

    def group_info(self, group: bytes) -> MlsMessage | None:
        """The latest GroupInfo, for a new device's external join."""
        state = self._groups.get(group)
        if state is None:
            return None
        return MlsMessage(ContentType.GROUP_INFO, state.group_info, group, state.epoch)

    def submit(
        self, sender: str, message: MlsMessage, item: T, online: Container[str] = ()
    ) -> Outcome[T]:
        """Admit one message from ``sender`` (the verified envelope signer's DID)."""
        state = self._groups.get(message.group)
        epoch = state.epoch if state else -1
        try:
            message.check_framing()
            if message.content_type is ContentType.COMMIT:
                return self._commit(sender, message, item, online)
            if message.content_type is ContentType.APPLICATION:
                return self._application(sender, message, item, online)
            if message.content_type is ContentType.WELCOME:
                return self._welcome(sender, message, item, online)
            raise MlsError(f"the delivery service does not route {message.content_type.value}")
        except MlsError as exc:
            return _refuse(exc, epoch)

    # -- application -----------------------------------------------------------------------

    def _application(
        self, sender: str, message: MlsMessage, item: T, online: Container[str]
    ) -> Outcome[T]:
        state = self._groups.get(message.group)
        if state is None:
            raise MlsError("unknown group", code="mls-wrong-group", reason="session.invalid-state")
        if message.epoch != state.epoch:
            raise MlsError(
                f"message for epoch {message.epoch}, group is at {state.epoch}",
                code="mls-wrong-epoch",
                reason="session.invalid-state",
            )
        if sender not in state.dids():
            raise MlsError("sender is not a member", code="mls-not-member", reason="policy.blocked")
        return self._deliver(state, state.dids(), item, online)

    def _welcome(
        self, sender: str, message: MlsMessage, item: T, online: Container[str]
    ) -> Outcome[T]:
        """A Welcome sent apart from its commit (a commit and Welcome too big for one
        frame): only by the committer of the current epoch, only to the DIDs it added."""
        state = self._groups.get(message.group)
        if state is None:
            raise MlsError("unknown group", code="mls-wrong-group", reason="session.invalid-state")
        if message.epoch != state.epoch:
            raise _wrong_epoch_error(message.epoch, state.epoch)
        if sender != state.committer or not state.added:
            raise MlsError(
                "only the committer of this epoch sends the Welcome of the members it added",
                code="mls-not-member",
                reason="policy.blocked",
            )
        return self._deliver(state, set(state.added) | {sender}, item, online)  # sender: echo

    # -- commits ---------------------------------------------------------------------------

    def _commit(
        self, sender: str, message: MlsMessage, item: T, online: Container[str]
    ) -> Outcome[T]:
        digest = hashlib.sha256(message.data).digest()
        state = self._groups.get(message.group)
        if state is not None and message.epoch != state.epoch:
            if state.commits.get(message.epoch) == digest:
                return Outcome(True, state.epoch)  # a duplicate of the accepted commit
            if message.epoch < state.epoch:
                raise MlsError(
                    f"epoch {message.epoch} already has a commit; rebase on epoch {state.epoch}",
                    code="mls-commit-conflict",
                    reason="session.glare",
                )
            raise MlsError(
                f"commit for epoch {message.epoch}, group is at {state.epoch}",
                code="mls-wrong-epoch",
                reason="session.invalid-state",
            )
        if message.group_info is None:
            raise MlsError("a commit must carry its new GroupInfo", code="mls-invalid-commit")
        new_context, new_leaves = self._read_group_info(message)
        plaintext, sender_type, leaf = self._read_commit(message)
        if sender_type == SenderType.MEMBER:
            if state is None:
                # First commit of a group we have not seen: trust on first use.
                signer = next((v for k, v in new_leaves.items() if k == leaf), None)
                if signer is None or signer[0] != sender:
                    raise MlsError(
                        "first commit not from its creator",
                        code="mls-not-member",
                        reason="policy.blocked",
                    )
            else:
                entry = state.leaves.get(leaf)
                if entry is None or entry[0] != sender:
                    raise MlsError(
                        f"leaf {leaf} is not {sender}'s in epoch {state.epoch}",
                        code="mls-not-member",
                        reason="policy.blocked",
                    )
                try:
                    verify_plaintext(plaintext, entry[1], None, self._crypto, state.context)
                except Exception:
                    raise MlsError(
                        "commit signature does not verify",
                        code="mls-not-member",
                        reason="policy.blocked",
                    ) from None
        elif sender_type == SenderType.NEW_MEMBER_COMMIT:
            if state is None or sender not in {did for did, _ in new_leaves.values()}:
                raise MlsError(
                    "external joiner is not in the new roster",
                    code="mls-not-member",
                    reason="policy.blocked",
                )
        else:
            raise MlsError("only members commit", code="mls-not-member", reason="policy.blocked")
        old = state.dids() if state else set()
        recipients = old | {did for did, _ in new_leaves.values()}
        if state is None:
            state = _Group(message.epoch, b"", {}, b"")
            self._groups[message.group] = state
        state.committer = sender
        state.added = frozenset({did for did, _ in new_leaves.values()} - old)
        state.commits[message.epoch] = digest
        state.epoch = message.epoch + 1
        state.context, state.leaves, state.group_info = new_context, new_leaves, message.group_info
        return self._deliver(state, recipients, item, online)

    def _read_commit(self, message: MlsMessage) -> tuple[MLSPlaintext, int, int]:
        content = MLSMessage.deserialize(message.data).get_parsed_content()
        assert isinstance(content, AuthenticatedContent)  # check_framing saw a PublicMessage
        sender = content.tbs.framed_content.sender
        return MLSPlaintext(content), int(sender.sender_type), int(sender.sender)

    def _read_group_info(self, message: MlsMessage) -> tuple[bytes, dict[int, tuple[str, bytes]]]:
        assert message.group_info is not None
        try:
            info = MLSMessage.deserialize(message.group_info).get_parsed_content()
            assert isinstance(info, GroupInfo)
            context = info.group_context
            if context.group_id != message.group or int(context.epoch) != message.epoch + 1:
                raise MlsError(
                    "GroupInfo is not for the epoch this commit creates", code="mls-invalid-commit"
                )
            tree = RatchetTree(self._crypto)
            exts = deserialize_extensions(info.extensions)
            data = next(e.data for e in exts if int(e.ext_type) == ExtensionType.RATCHET_TREE)
            tree.load_full_tree_from_welcome_bytes(data)
            if tree.calculate_tree_hash() != context.tree_hash:
                raise MlsError(
                    "GroupInfo tree does not match its tree hash", code="mls-invalid-commit"
                )
            leaves: dict[int, tuple[str, bytes]] = {}
            for index in range(tree.n_leaves):
                node = tree.get_node(2 * index).leaf_node
                if node is not None and node.credential is not None:
                    identity = bytes(node.credential.identity).decode("utf-8")
                    leaves[index] = (identity.split("#", 1)[0], bytes(node.signature_key))
            signer = leaves.get(int(info.signer_leaf_index))
            if signer is None:
                raise MlsError("GroupInfo signer leaf is blank", code="mls-invalid-commit")
            self._crypto.verify_with_label(
                signer[1], b"GroupInfoTBS", info.tbs_serialize(), info.signature.value
            )
        except MlsError:
            raise
        except Exception as exc:
            raise MlsError(
                f"unusable GroupInfo: {type(exc).__name__}", code="mls-invalid-commit"
            ) from None
        return context.serialize(), leaves

    def _deliver(
        self, state: _Group, recipients: set[str], item: T, online: Container[str]
    ) -> Outcome[T]:
        state.seq += 1
        out = tuple(Delivery(did, item, did not in online, state.seq) for did in sorted(recipients))
        return Outcome(True, state.epoch, out)
