"""The relay side of profile mls/1.0: key packages, GroupInfo and the delivery service.

Sans-I/O. A relay hands every verified ``mls`` / ``mls-fetch`` envelope addressed to it to
:meth:`MlsService.handle` and gets an :class:`MlsAction`: a refusal (an
:class:`~dsip.messaging.mls.MlsError` whose reason token goes back in a signed ``error``),
the fields of an ``mls-fetched`` reply, and the member DIDs the envelope goes to,
unchanged (bound devices at once, the others through the relay's store-and-forward).

What each envelope does (``docs/profiles.md``, mls/1.0):

* ``mls`` ``key-package``: the publishing device stores one key package, after its
  signature, lifetime and DID binding are checked (:func:`~dsip.messaging.mls.key_package_owner`);
  the binding must name the signer. At most :data:`MAX_KEY_PACKAGES` are kept per device
  (the oldest go first). Reply: an empty ``mls-fetched``.
* ``mls-fetch`` with ``target``: one key package of each device of ``target`` (a device
  DID or an identity), each handed out once. Reply: ``mls-fetched`` with them.
* ``mls-fetch`` with ``group``: the group's latest GroupInfo, for an external commit. Only
  for a device whose identity is that of a current member (a new device of a member).
* ``mls`` ``commit`` / ``application``: :class:`~dsip.messaging.mls_delivery.DeliveryService`
  orders them (first commit per epoch wins) and names the recipients: the old and new
  roster for a commit, the roster for application data. The sender is a recipient too:
  the echo of its own envelope is how it learns the commit was accepted. An external
  commit is accepted only from a device of an identity already in the group.
* ``mls`` ``welcome`` (with ``group`` and the ``epoch`` it welcomes into): the Welcome of
  the current epoch's commit when both would not fit in one frame; only from that commit's
  sender, delivered only to the DIDs it added.

State: groups, key packages and the hashes of handed-out key packages. Without a store it
lives in memory and a relay restart forgets it. With an :class:`~dsip.messaging.mls_store.MlsStore`
(:meth:`MlsService.open`, ``dsip relay --mls-state FILE``) whatever an envelope changed is
written in one SQLite transaction before :meth:`MlsService.handle` returns, so before the
relay answers or fans out: an accepted commit is on disk before any member sees it (a
crash cannot roll the epoch back under them), and a key package is marked handed out
before it leaves. If that write fails the envelope is refused (``mls-state-unsaved``,
``x-dsip.store-error``) and the in-memory state is read back from the file: nothing changed.
Application data and a Welcome sent apart change nothing durable and cost no write. A key
package whose hash was handed out in the last hour is not taken again (a replayed publish
after a restart, when the relay's replay memory is empty, hands nothing out twice). Why the
state has a file of its own, and how a damaged one is refused: :mod:`dsip.messaging.mls_store`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import Verified
from dsip.core.identity import DocumentSource
from dsip.errors import DsipError
from dsip.messaging.mls import ContentType, MlsError, MlsMessage, key_package_owner
from dsip.messaging.mls_delivery import DeliveryService, _Group
from dsip.messaging.mls_store import (
    USED_RETENTION,
    GroupRecord,
    MlsChanges,
    MlsSnapshot,
    MlsStore,
)

__all__ = ["MAX_KEY_PACKAGES", "MlsAction", "MlsService"]

logger = logging.getLogger("dsip.messaging.mls_service")

MAX_KEY_PACKAGES: Final = 32  # per device
MAX_FETCHED: Final = 16  # key packages in one mls-fetched (one per device)


@dataclass(frozen=True, slots=True)
class MlsAction:
    """What the relay does with one envelope (module docstring)."""

    error: DsipError | None = None
    reply: dict[str, Any] | None = None  # fields of an mls-fetched to the sender
    recipients: tuple[str, ...] = ()  # member DIDs that get the envelope unchanged


@dataclass(slots=True)
class _Packages:
    identity: str
    items: deque[bytes] = field(default_factory=deque)


@dataclass(slots=True)
class _Pending:
    """What the envelope being handled changed, to write as one transaction."""

    groups: set[bytes] = field(default_factory=set)
    commits: list[tuple[bytes, int, bytes]] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)  # whose key-package list changed
    used: list[tuple[bytes, int]] = field(default_factory=list)
    forget_used_before: int | None = None
    identities: set[str] = field(default_factory=set)


def _unsaved(exc: BaseException) -> MlsError:
    return MlsError(
        f"MLS state not saved: {type(exc).__name__}",
        code="mls-state-unsaved",
        reason="x-dsip.store-error",
    )


class MlsService:
    """One relay's mls/1.0 state; :meth:`handle` is safe to call from worker threads."""

    def __init__(
        self, *, documents: DocumentSource | None = None, store: MlsStore | None = None
    ) -> None:
        self.documents = documents
        self.store = store
        self.delivery: DeliveryService[None] = DeliveryService()
        self._packages: dict[str, _Packages] = {}  # device DID -> its key packages
        self._identities: dict[str, str] = {}  # device DID -> identity, as verified
        self._used: dict[bytes, int] = {}  # handed-out key package hash -> when, oldest first
        self._lock = threading.Lock()
        self._broken: BaseException | None = None  # the file could not be read back
        if store is not None:
            self._load(store.load())

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, documents: DocumentSource | None = None
    ) -> MlsService:
        """A service whose state lives in the SQLite file ``path`` (created if missing);
        :class:`~dsip.errors.ConfigError` if the file is damaged or not an MLS state file."""
        store = MlsStore.open(path)
        try:
            return cls(documents=documents, store=store)
        except BaseException:
            store.close()
            raise

    @property
    def durable(self) -> bool:
        return self.store is not None

    def close(self) -> None:
        with self._lock:
            if self.store is not None:
                self.store.close()

    def available(self, device: str) -> int:
        entry = self._packages.get(device)
        return len(entry.items) if entry else 0

    def handle(self, v: Verified, *, now: int) -> MlsAction:
        """Act on one verified envelope from a bound device (``v.signer``)."""
        with self._lock:
            if self._broken is not None:
                return MlsAction(error=_unsaved(self._broken))
            pending = _Pending()
            try:
                action = self._handle(v, now, pending)
            except DsipError as exc:
                return MlsAction(error=exc)
            if self.store is not None and (
                pending.groups or pending.devices or pending.used or pending.identities
            ):
                try:
                    self.store.apply(self._changes(pending))
                except (sqlite3.Error, OSError) as exc:
                    logger.error("MLS state not saved, envelope %s refused: %s", v.id, exc)
                    try:
                        self._load(self.store.load())  # back to what the file holds
                    except DsipError as reload_exc:
                        logger.error("MLS state not readable any more: %s", reload_exc)
                        self._broken = reload_exc
                    return MlsAction(error=_unsaved(exc))
            return action

    def _handle(self, v: Verified, now: int, pending: _Pending) -> MlsAction:
        if v.type == "mls-fetch":
            return self._fetch(v, now, pending)
        message = MlsMessage.from_payload(v.payload)
        if message.content_type is ContentType.KEY_PACKAGE:
            return self._publish(v, message, now, pending)
        if message.content_type in (
            ContentType.COMMIT,
            ContentType.APPLICATION,
            ContentType.WELCOME,
        ):
            return self._submit(v, message, pending)
        raise MlsError(f"the delivery service does not take {message.content_type.value} messages")

    # -- key packages ----------------------------------------------------------------------

    def _publish(self, v: Verified, message: MlsMessage, now: int, pending: _Pending) -> MlsAction:
        did, kid = key_package_owner(message, now, self.documents)
        if did not in (v.signer, v.identity) or (did == v.identity and kid != v.kid):
            raise MlsError(
                "key package is bound to another device",
                code="mls-binding-invalid",
                reason="policy.trust-insufficient",
            )
        self._set_identity(v.signer, v.identity, pending)
        entry = self._packages.get(v.signer)
        if entry is None or entry.identity != v.identity:
            entry = self._packages[v.signer] = _Packages(v.identity)
            pending.devices.add(v.signer)
        used_at = self._used.get(_digest(message.data))
        if (used_at is not None and used_at >= now - USED_RETENTION) or message.data in entry.items:
            return MlsAction(reply={"key_packages": []})  # handed out already, or held: once
        entry.items.append(message.data)
        while len(entry.items) > MAX_KEY_PACKAGES:
            entry.items.popleft()
        pending.devices.add(v.signer)
        return MlsAction(reply={"key_packages": []})

    def _fetch(self, v: Verified, now: int, pending: _Pending) -> MlsAction:
        target, group = v.payload.get("target"), v.payload.get("group")
        if isinstance(group, str):
            gid = b64url_decode(group, what="group")
            info = self.delivery.group_info(gid)
            if info is None:
                raise MlsError(
                    "unknown group", code="mls-wrong-group", reason="session.invalid-state"
                )
            if v.identity not in self._member_identities(gid):
                raise MlsError(
                    "GroupInfo is only for devices of current members",
                    code="mls-not-member",
                    reason="policy.blocked",
                )
            return MlsAction(
                reply={
                    "key_packages": [],
                    "group_info": b64url_encode(info.data),
                    "epoch": info.epoch,
                }
            )
        assert isinstance(target, str)  # the schema requires one of target and group
        devices = [target] if target in self._packages else []
        devices += [
            d for d, e in sorted(self._packages.items()) if e.identity == target and d != target
        ]
        out: list[dict[str, str]] = []
        for device in devices:
            entry = self._packages[device]
            if device == v.signer or not entry.items:
                continue
            data = entry.items.popleft()
            pending.devices.add(device)
            self._mark_used(data, now, pending)
            out.append({"device": device, "data": b64url_encode(data)})
            if len(out) == MAX_FETCHED:
                break
        return MlsAction(reply={"key_packages": out})

    def _mark_used(self, data: bytes, now: int, pending: _Pending) -> None:
        digest = _digest(data)
        self._used.pop(digest, None)  # keep the dict in order of use
        self._used[digest] = now
        pending.used.append((digest, now))
        horizon = now - USED_RETENTION
        if next(iter(self._used.values())) < horizon:
            while self._used and next(iter(self._used.values())) < horizon:
                del self._used[next(iter(self._used))]
            pending.forget_used_before = horizon

    def _set_identity(self, device: str, identity: str, pending: _Pending) -> None:
        if self._identities.get(device) != identity:
            self._identities[device] = identity
            pending.identities.add(device)

    # -- group traffic ---------------------------------------------------------------------

    def _member_identities(self, group: bytes) -> set[str]:
        return {self._identities.get(d, d) for d in self.delivery.members(group)}

    def _submit(self, v: Verified, message: MlsMessage, pending: _Pending) -> MlsAction:
        members = self.delivery.members(message.group)
        if (
            message.content_type is ContentType.COMMIT
            and members
            and v.signer not in members
            and v.identity not in self._member_identities(message.group)
        ):
            # An external commit: only a new device of an identity already in the group.
            raise MlsError(
                "external commit from a device of no member",
                code="mls-not-member",
                reason="policy.blocked",
            )
        before = self.delivery.epoch(message.group)
        outcome = self.delivery.submit(v.signer, message, None)
        if not outcome.accepted:
            assert outcome.error is not None
            return MlsAction(error=outcome.error)
        if outcome.epoch != before:  # a commit moved the group on (not a duplicate)
            state = self._group_state(message.group)
            pending.groups.add(message.group)
            pending.commits.append((message.group, message.epoch, state.commits[message.epoch]))
        self._set_identity(v.signer, v.identity, pending)
        return MlsAction(recipients=_unique(d.recipient for d in outcome.deliveries))

    # -- persistence -----------------------------------------------------------------------
    # The delivery service's per-group record is its own business; these two helpers are
    # the only places that reach into it, to copy it to and from the store.

    def _group_state(self, group: bytes) -> _Group:
        return self.delivery._groups[group]

    def _changes(self, pending: _Pending) -> MlsChanges:
        groups = []
        for gid in sorted(pending.groups):
            state = self._group_state(gid)
            groups.append(
                GroupRecord(
                    group=gid,
                    epoch=state.epoch,
                    context=state.context,
                    leaves=tuple((i, did, key) for i, (did, key) in sorted(state.leaves.items())),
                    group_info=state.group_info,
                    seq=state.seq,
                    committer=state.committer,
                    added=state.added,
                )
            )
        packages = []
        for device in sorted(pending.devices):
            entry = self._packages[device]
            packages.append((device, entry.identity, tuple(entry.items)))
        return MlsChanges(
            groups=tuple(groups),
            commits=tuple(pending.commits),
            packages=tuple(packages),
            used=tuple(pending.used),
            forget_used_before=pending.forget_used_before,
            identities=tuple((d, self._identities[d]) for d in sorted(pending.identities)),
        )

    def _load(self, snapshot: MlsSnapshot) -> None:
        delivery: DeliveryService[None] = DeliveryService()
        for g in snapshot.groups:
            delivery._groups[g.group] = _Group(
                epoch=g.epoch,
                context=g.context,
                leaves={i: (did, key) for i, did, key in g.leaves},
                group_info=g.group_info,
                commits=dict(snapshot.commits.get(g.group, {})),
                seq=g.seq,
                committer=g.committer,
                added=g.added,
            )
        self.delivery = delivery
        self._packages = {
            device: _Packages(identity, deque(items[-MAX_KEY_PACKAGES:]))
            for device, (identity, items) in snapshot.packages.items()
        }
        self._identities = dict(snapshot.identities)
        self._used = dict(snapshot.used)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
