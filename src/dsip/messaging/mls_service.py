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

State (groups, key packages) lives in memory: a relay restart forgets it.
"""

from __future__ import annotations

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
from dsip.messaging.mls_delivery import DeliveryService

__all__ = ["MAX_KEY_PACKAGES", "MlsAction", "MlsService"]

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


class MlsService:
    """One relay's mls/1.0 state; :meth:`handle` is safe to call from worker threads."""

    def __init__(self, *, documents: DocumentSource | None = None) -> None:
        self.documents = documents
        self.delivery: DeliveryService[None] = DeliveryService()
        self._packages: dict[str, _Packages] = {}  # device DID -> its key packages
        self._identities: dict[str, str] = {}  # device DID -> identity, as verified
        self._lock = threading.Lock()

    def available(self, device: str) -> int:
        entry = self._packages.get(device)
        return len(entry.items) if entry else 0

    def handle(self, v: Verified, *, now: int) -> MlsAction:
        """Act on one verified envelope from a bound device (``v.signer``)."""
        with self._lock:
            try:
                if v.type == "mls-fetch":
                    return self._fetch(v)
                message = MlsMessage.from_payload(v.payload)
                if message.content_type is ContentType.KEY_PACKAGE:
                    return self._publish(v, message, now)
                if message.content_type in (
                    ContentType.COMMIT,
                    ContentType.APPLICATION,
                    ContentType.WELCOME,
                ):
                    return self._submit(v, message)
                raise MlsError(
                    f"the delivery service does not take {message.content_type.value} messages"
                )
            except DsipError as exc:
                return MlsAction(error=exc)

    # -- key packages ----------------------------------------------------------------------

    def _publish(self, v: Verified, message: MlsMessage, now: int) -> MlsAction:
        did, kid = key_package_owner(message, now, self.documents)
        if did not in (v.signer, v.identity) or (did == v.identity and kid != v.kid):
            raise MlsError(
                "key package is bound to another device",
                code="mls-binding-invalid",
                reason="policy.trust-insufficient",
            )
        entry = self._packages.get(v.signer)
        if entry is None or entry.identity != v.identity:
            entry = self._packages[v.signer] = _Packages(v.identity)
        entry.items.append(message.data)
        while len(entry.items) > MAX_KEY_PACKAGES:
            entry.items.popleft()
        self._identities[v.signer] = v.identity
        return MlsAction(reply={"key_packages": []})

    def _fetch(self, v: Verified) -> MlsAction:
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
            out.append({"device": device, "data": b64url_encode(entry.items.popleft())})
            if len(out) == MAX_FETCHED:
                break
        return MlsAction(reply={"key_packages": out})

    # -- group traffic ---------------------------------------------------------------------

    def _member_identities(self, group: bytes) -> set[str]:
        return {self._identities.get(d, d) for d in self.delivery.members(group)}

    def _submit(self, v: Verified, message: MlsMessage) -> MlsAction:
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
        outcome = self.delivery.submit(v.signer, message, None)
        if not outcome.accepted:
            assert outcome.error is not None
            return MlsAction(error=outcome.error)
        self._identities[v.signer] = v.identity
        return MlsAction(recipients=_unique(d.recipient for d in outcome.deliveries))


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
