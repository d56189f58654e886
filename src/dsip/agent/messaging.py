"""1:1 messaging over a relay connection: prekeys/1.0 publish and claim, ``msg`` send/receive.

The cryptography and storage live in :mod:`dsip.messaging` (X3DH + Double Ratchet sessions,
the encrypted session store); this module only moves their envelopes over a
:class:`~dsip.agent.signaling.SignalingClient`:

* :meth:`MessagingAgent.publish_prekeys` sends this device's signed ``prekey-bundle`` and
  waits for the relay's receipt (an empty ``prekey-claimed`` in reply);
* :meth:`MessagingAgent.send_text` claims bundles for devices it has no session with
  (``prekey-claim`` → ``prekey-claimed``, every bundle verified by the device itself), then
  sends one ``msg`` per device of the peer and per other device of our own identity;
* :meth:`MessagingAgent.receive` takes the next ``msg`` from the connection (a relay hands
  over the ones it stored while we were away first) and decrypts it atomically.

A ``msg`` that fails to decrypt or verify is answered with nothing and changes nothing
(the store is transactional); the failure is logged and raised to the caller.

MLS groups (profile mls/1.0, the relay as delivery service) are :class:`GroupAgent`'s: it
publishes key packages, creates groups, adds and removes members with the key packages the
relay hands out, joins a group from a Welcome or by an external commit (a new device of a
member), and sends and receives application messages. Every group's state is kept in the
same encrypted session store, saved before the envelope that changed it is acknowledged.

Custody (:class:`CustodyClient`): a relay deletes a held envelope once the device
acknowledges it. A client that acknowledged on arrival would lose what it had not yet
processed if it were killed; this client acknowledges an envelope only after the agent
stored its effect, and an envelope seen before (a redelivery after a crash) is
acknowledged and skipped, so nothing is lost and nothing shows twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from dsip.agent.signaling import ACK_DELAY, ACK_MAX, SignalingClient
from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import Verified, make_payload, sign_envelope
from dsip.core.identity import DocumentSource, KeyPair
from dsip.core.jws import encode_frame
from dsip.core.ulid import is_ulid
from dsip.errors import DsipError, TransportError
from dsip.messaging.messages import Messenger, Received, Sent
from dsip.messaging.prekeys import ClaimedBundle
from dsip.messaging.ratchet import MessagingError
from dsip.messaging.session_store import SessionStore
from dsip.transport.base import MAX_FRAME_BYTES, ConnectionClosed

if TYPE_CHECKING:
    from dsip.messaging.mls import MlsMember, MlsMessage

__all__ = ["CustodyClient", "GroupAgent", "GroupEvent", "MessagingAgent"]

logger = logging.getLogger("dsip.messaging.agent")


class CustodyClient(SignalingClient):
    """A :class:`SignalingClient` that acknowledges a held envelope only once
    :meth:`release` says its effect is stored (module docstring, "Custody")."""

    def __init__(self, device: KeyPair, **kw: Any) -> None:
        super().__init__(device, **kw)
        self._released: set[str] = set()

    def release(self, envelope_id: str) -> None:
        """The envelope's effect is stored: the relay may drop its copy."""
        if envelope_id in self._pending_acks:
            self._released.add(envelope_id)
            self._ack_wakeup.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wakeup.wait()
            await asyncio.sleep(ACK_DELAY)
            self._ack_wakeup.clear()
            ready = [i for i in self._pending_acks if i in self._released]
            if not ready or self._conn is None:
                continue
            self._pending_acks = [i for i in self._pending_acks if i not in self._released]
            self._released.difference_update(ready)
            for start in range(0, len(ready), ACK_MAX):
                payload = make_payload(
                    "ack",
                    sender=self.device.did,
                    now=int(self.clock()),
                    profiles=[],
                    to=self.relay_did,
                    acks=ready[start : start + ACK_MAX],
                )
                try:
                    await self._conn.send(encode_frame(sign_envelope(payload, self.device)))
                except ConnectionClosed:
                    return


def _release(client: SignalingClient, envelope_id: str) -> None:
    if isinstance(client, CustodyClient):
        client.release(envelope_id)


def _refusal(v: Verified) -> TransportError:
    return TransportError(
        f"relay refused: {v.payload.get('reason')} ({v.payload.get('detail', '')})",
        code="relay-refused",
        reason=str(v.payload.get("reason")),
    )


@dataclass
class MessagingAgent:
    """One device's messaging over its bound relay connection."""

    client: SignalingClient
    messenger: Messenger
    timeout: float = 10.0
    others: list[Verified] = field(default_factory=list)  # non-msg envelopes seen meanwhile
    _claimed: set[str] = field(default_factory=set)
    _reachable: set[str] = field(default_factory=set)  # peers we already sent to
    _ready: deque[Received | DsipError] = field(default_factory=deque)  # decrypted, not taken

    def _now(self) -> int:
        return int(self.client.clock())

    async def _reply_to(self, request_id: str) -> Verified:
        """Wait for the relay's answer to ``request_id``; a signed error becomes an exception."""
        async with asyncio.timeout(self.timeout):
            while True:
                v = await self.client.recv()
                if v.payload.get("in_reply_to") == request_id:
                    if v.type == "error":
                        raise _refusal(v)
                    return v
                self.others.append(v)

    async def publish_prekeys(self, *, target: int = 100) -> None:
        """Top up and publish this device's bundle; returns once the relay stored it."""
        envelope = self.messenger.prekey_bundle(now=self._now(), target=target)
        bundle_id = str(json.loads(b64url_decode(envelope["payload"]))["id"])
        await self.client.send_frame(encode_frame(envelope))
        v = await self._reply_to(bundle_id)
        if v.type != "prekey-claimed":
            raise TransportError(f"unexpected {v.type} after prekey-bundle", code="protocol")

    async def claim(self, target: str) -> int:
        """Claim and learn the bundles of ``target``'s devices; returns how many were learned."""
        request = self.client.build("prekey-claim", to=self.client.relay_did, target=target)
        await self.client.send(request)
        v = await self._reply_to(request["id"])
        learned = 0
        for item in v.payload.get("bundles", []):
            claimed = ClaimedBundle(
                str(item["device"]), str(item["frame"]), item.get("one_time_prekey_id")
            )
            try:
                self.messenger.learn_claimed(claimed, now=self._now())
            except DsipError as exc:  # a bad bundle is skipped, the good ones still count
                logger.warning("bundle of %s refused: %s", claimed.device, exc)
                continue
            learned += 1
        return learned

    async def send_text(self, peer: str, body: str, **fields: Any) -> Sent:
        """Send ``body`` to every device of ``peer`` (claiming bundles first when needed).

        Bundles are claimed when no device of ``peer`` is known, and once per agent for an
        identity with devices of its own (delegated keys), whose other devices we may not
        know yet: we may have heard from one of them only."""
        if peer not in self._reachable:
            known = self.messenger.devices(peer)
            if not known or (known != [peer] and peer not in self._claimed):
                self._claimed.add(peer)
                await self.claim(peer)
        own = self.messenger.identity
        single = own == self.messenger.device.did  # a did:key identity is its only device
        if (
            not single
            and own != peer
            and own not in self._claimed
            and not self.messenger.devices(own)
        ):
            self._claimed.add(own)
            await self.claim(own)  # our other devices get a copy
        sent = self.messenger.conversation(peer).send_text(body, now=self._now(), **fields)
        # A peer with a session stays reachable (sessions are never dropped): later sends
        # skip the look-up; a send that finds no device raises before changing anything.
        self._reachable.add(peer)
        for out in sent.outbound:
            await self.client.send_frame(out.frame)
        return sent

    async def accept(self, v: Verified) -> Received | None:
        """Decrypt and store one ``msg``, then release it for acknowledgement. ``None``: an
        envelope already accepted before (a relay's redelivery), acknowledged again."""
        outcome = (await asyncio.to_thread(self._accept_batch, [v]))[0]
        if isinstance(outcome, DsipError):
            raise outcome
        return outcome

    def _accept_batch(self, batch: list[Verified]) -> list[Received | DsipError | None]:
        """Worker-thread body: each ``msg`` of ``batch`` in order, each atomically."""
        out: list[Received | DsipError | None] = []
        for v in batch:
            try:
                out.append(self.messenger.receive(v, now=self._now()))
            except DsipError as exc:
                if exc.code != "msg-replay":
                    out.append(exc)
                    continue  # refused: not released, the relay may try again
                out.append(None)
            _release(self.client, v.id)
        return out

    async def _queued(self, limit: int = 64) -> list[Verified]:
        """Envelopes already waiting on the connection: a zero timeout returns a queued
        one without suspending and gives up as soon as it would have to wait."""
        out: list[Verified] = []
        while len(out) < limit:
            try:
                out.append(await self.client.recv(timeout=0))
            except (TimeoutError, ConnectionClosed):
                break
        return out

    async def wake(self, push: Mapping[str, Any], *, settle: float = 1.0) -> list[Received]:
        """Handle a push wake ``{relay, envelope_id}`` (``dsip.agent.push``) on this bound
        connection: take the held messages until the named envelope has been accepted.

        Refused, changing nothing it would not have changed anyway, when the push names
        another relay than ours (``push-unknown-relay``, ``transport.routing-refused``),
        is malformed (``push-invalid``), or names an envelope the relay does not deliver
        within ``settle`` quiet seconds (``push-unknown-envelope``,
        ``session.unknown-session``). A push for an envelope accepted before returns ``[]``.
        """
        relay, envelope_id = push.get("relay"), push.get("envelope_id")
        if set(push) != {"relay", "envelope_id"} or not is_ulid(envelope_id):
            raise MessagingError("push is not {relay, envelope_id}", code="push-invalid")
        if relay != self.client.relay_did:
            raise MessagingError(
                f"push names relay {str(relay)[:80]}, not ours",
                code="push-unknown-relay",
                reason="transport.routing-refused",
            )
        local = self.messenger.device.did
        with self.messenger.store.transaction(write=False) as tx:
            if tx.seen(local, str(envelope_id)):
                return []
        got: list[Received] = []
        while True:
            try:
                v = await self.client.recv(timeout=settle)
            except TimeoutError:
                raise MessagingError(
                    f"the relay holds no envelope {envelope_id}",
                    code="push-unknown-envelope",
                    reason="session.unknown-session",
                ) from None
            if v.type != "msg":
                self.others.append(v)
                continue
            received = await self.accept(v)
            if received is not None:
                got.append(received)
            if v.id == envelope_id:
                return got

    async def receive(self, timeout: float | None = None) -> Received:
        """The next ``msg`` for this device, decrypted (other envelopes go to ``others``).

        Messages already queued behind it are decrypted in the same worker-thread call
        (one thread hand-off per burst, not per message) and returned by the next calls;
        a refused one raises when its turn comes."""
        async with asyncio.timeout(timeout if timeout is not None else self.timeout):
            while True:
                if self._ready:
                    item = self._ready.popleft()
                    if isinstance(item, DsipError):
                        raise item
                    return item
                first = await self.client.recv()
                batch = []
                for v in [first, *await self._queued()]:
                    if v.type == "msg":
                        batch.append(v)
                    else:
                        self.others.append(v)
                if batch:
                    done = await asyncio.to_thread(self._accept_batch, batch)
                    self._ready.extend(x for x in done if x is not None)


# --- MLS groups ---------------------------------------------------------------------------


_Kind = Literal["joined", "commit", "own-commit", "removed", "application", "own-echo"]


@dataclass(frozen=True, slots=True)
class GroupEvent:
    """What one group envelope did, as this device saw it."""

    group: str  # base64url group id
    kind: _Kind
    epoch: int
    envelope_id: str
    sender: str | None = None  # member DID (None for an external joiner's commit)
    text: str | None = None  # application messages


_DEVICE = "device"  # mls_state row with the device's MLS identity and key package secrets
_GROUP = "group:"
_COMMIT_RETRIES = 3  # rebase attempts when another commit took the epoch (session.glare)


def group_name(group: bytes) -> str:
    return b64url_encode(group)


class GroupAgent:
    """One device's MLS groups over its relay connection (module docstring)."""

    def __init__(
        self,
        client: SignalingClient,
        store: SessionStore,
        *,
        documents: DocumentSource | None = None,
        timeout: float = 10.0,
    ) -> None:
        from dsip.messaging.mls import MlsMember

        self.client = client
        self.store = store
        self.timeout = timeout
        self.others: list[Verified] = []  # envelopes of other kinds seen meanwhile
        self.events: list[GroupEvent] = []  # group events that arrived during our requests
        self._key = client.device
        self._local = client.device.did
        with store.transaction() as tx:
            raw = tx.load_mls(self._local, _DEVICE)
            if raw is None:
                self._lobby = MlsMember(self._key, documents=documents)
                tx.save_mls(self._local, _DEVICE, self._lobby.to_bytes())
            else:
                self._lobby = MlsMember.from_bytes(raw, self._key, documents=documents)
            self.groups: dict[str, MlsMember] = {}
            for name in tx.mls_names(self._local):
                if name.startswith(_GROUP):
                    state = tx.load_mls(self._local, name)
                    assert state is not None
                    self.groups[name[len(_GROUP) :]] = MlsMember.from_bytes(
                        state, self._key, documents=documents
                    )

    def _now(self) -> int:
        return int(self.client.clock())

    def _save(self, *groups: str, lobby: bool = False) -> None:
        with self.store.transaction() as tx:
            self._save_in(tx, groups, lobby=lobby)

    def _save_in(self, tx: Any, groups: tuple[str, ...] | list[str], *, lobby: bool) -> None:
        if lobby:
            tx.save_mls(self._local, _DEVICE, self._lobby.to_bytes())
        for g in groups:
            member = self.groups.get(g)
            if member is None or not member.in_group:
                tx.drop_mls(self._local, _GROUP + g)
            else:
                tx.save_mls(self._local, _GROUP + g, member.to_bytes())

    def member(self, group: str) -> MlsMember:
        member = self.groups.get(group)
        if member is None:
            from dsip.messaging.mls import MlsError

            raise MlsError(
                f"not in group {group[:40]}", code="mls-no-group", reason="x-dsip.mls-state"
            )
        return member

    # -- requests to the relay -------------------------------------------------------------

    def _envelope(self, message: MlsMessage) -> dict[str, Any]:
        return self.client.build(
            "mls", to=self.client.relay_did, profiles=[], **message.payload_fields()
        )

    async def _request(self, payload: dict[str, Any]) -> Verified:
        """Send ``payload``; the answer is the relay's reply or the echo of our envelope.
        Group envelopes arriving meanwhile are handled in order; a signed error raises."""
        await self.client.send(payload)
        async with asyncio.timeout(self.timeout):
            while True:
                v = await self.client.recv()
                if v.type == "error" and v.payload.get("in_reply_to") == payload["id"]:
                    raise _refusal(v)
                if v.payload.get("in_reply_to") == payload["id"] or v.id == payload["id"]:
                    if v.type == "mls":
                        await self.handle(v)  # our own echo: merges a staged commit
                    return v
                if v.type == "mls":
                    try:
                        event = await self.handle(v)
                    except DsipError as exc:
                        logger.warning("group envelope %s refused: %s", v.id, exc)
                        continue
                    if event is not None:
                        self.events.append(event)
                else:
                    self.others.append(v)

    async def submit(self, message: MlsMessage) -> Verified:
        """Send one MLS message as it is to the delivery service: its echo, or the relay's
        refusal raised. The high-level calls below stage, submit and merge for you."""
        return await self._request(self._envelope(message))

    async def publish_key_packages(self, count: int = 5) -> int:
        """Publish ``count`` fresh key packages; returns how many the relay took."""
        for _ in range(count):
            kp = self._lobby.key_package(self._now())
            self._save(lobby=True)  # the secrets are kept before anyone can use the package
            await self._request(self._envelope(kp))
        return count

    async def fetch_key_packages(self, target: str) -> list[MlsMessage]:
        from dsip.messaging.mls import ContentType, MlsMessage

        payload = self.client.build(
            "mls-fetch", to=self.client.relay_did, profiles=[], target=target
        )
        v = await self._request(payload)
        return [
            MlsMessage(ContentType.KEY_PACKAGE, b64url_decode(str(item["data"]), what="data"))
            for item in v.payload.get("key_packages", [])
        ]

    async def create_group(self) -> str:
        """A new group with this device as its only member; the relay learns of it with
        the first commit (the first add)."""
        member = self._lobby.sibling()
        name = group_name(member.create_group(self._now()))
        self.groups[name] = member
        self._save(name)
        return name

    def _fits(self, message: MlsMessage) -> bool:
        return len(self.client.seal(self._envelope(message))) <= MAX_FRAME_BYTES

    async def _commit(self, group: str, make: Any) -> GroupEvent:
        """Stage a commit with ``make(member)``, submit it, merge on the echo; rebase and
        retry when another commit took the epoch first. A Welcome that does not fit in the
        commit's frame follows it in its own envelope; a commit that cannot fit at all is
        refused here (``mls-too-large``) before anything is sent."""
        from dataclasses import replace

        from dsip.messaging.mls import ContentType, MlsError, MlsMessage

        for attempt in range(_COMMIT_RETRIES):
            member = self.member(group)
            staged = make(member)
            message, welcome = staged.message, None
            if message.welcome is not None and not self._fits(message):
                welcome = MlsMessage(
                    ContentType.WELCOME, message.welcome, message.group, staged.epoch
                )
                message = replace(message, welcome=None)
            if not self._fits(message) or (welcome is not None and not self._fits(welcome)):
                member.discard()
                raise MlsError(
                    "this commit does not fit in one frame: add fewer members at once",
                    code="mls-too-large",
                    reason="transport.envelope-too-large",
                    remote=False,
                )
            self._save(group)  # the staged commit survives a crash (merged on its echo)
            try:
                echo = await self._request(self._envelope(message))
            except TransportError as exc:
                member.discard()
                self._save(group)
                if exc.reason != "session.glare" or attempt == _COMMIT_RETRIES - 1:
                    raise
                await self._catch_up(group, staged.epoch - 1)
                continue
            if member.pending is not None:
                member.discard()
                raise MlsError("the relay echoed a commit we did not stage")
            if welcome is not None:
                await self._request(self._envelope(welcome))
            return GroupEvent(group, "own-commit", member.epoch, echo.id, member.did)
        raise AssertionError("unreachable")

    async def _catch_up(self, group: str, epoch: int) -> None:
        """Handle group envelopes until ``group`` has left ``epoch`` (the commit that won)."""
        async with asyncio.timeout(self.timeout):
            while group in self.groups and self.groups[group].epoch <= epoch:
                v = await self.client.recv()
                if v.type != "mls":
                    self.others.append(v)
                    continue
                event = await self.handle(v)
                if event is not None:
                    self.events.append(event)

    async def add(self, group: str, target: str) -> GroupEvent:
        """Add every device of ``target`` that has a key package at the relay."""
        from dsip.messaging.mls import MlsError

        packages = await self.fetch_key_packages(target)
        if not packages:
            raise MlsError(
                f"{target} has no key package at the relay",
                code="mls-no-key-package",
                reason="session.failed",
                remote=False,
            )
        return await self._commit(group, lambda m: m.add(packages, self._now()))

    async def add_members(self, group: str, targets: list[str]) -> list[GroupEvent]:
        """Add every device of each target, in as few commits as fit in a frame each."""
        from dsip.messaging.mls import MlsError

        packages = [kp for target in targets for kp in await self.fetch_key_packages(target)]
        if not packages:
            raise MlsError(
                f"none of {len(targets)} DIDs has a key package at the relay",
                code="mls-no-key-package",
                reason="session.failed",
                remote=False,
            )
        events: list[GroupEvent] = []
        size = len(packages)
        while packages:
            chunk = packages[:size]
            try:
                events.append(
                    await self._commit(group, partial(_add, chunk=chunk, now=self._now()))
                )
            except MlsError as exc:
                if exc.code != "mls-too-large" or size == 1:
                    raise
                size = max(1, size // 2)
                continue
            del packages[: len(chunk)]
        return events

    async def remove(self, group: str, target: str) -> GroupEvent:
        return await self._commit(group, lambda m: m.remove(target))

    async def update(self, group: str) -> GroupEvent:
        return await self._commit(group, lambda m: m.update())

    async def join_external(self, group: str) -> GroupEvent:
        """Join ``group`` by an external commit (a new device of an existing member)."""
        from dsip.messaging.mls import ContentType, MlsError, MlsMessage

        if group in self.groups:
            raise MlsError("already in this group", code="mls-no-group", remote=False)
        payload = self.client.build("mls-fetch", to=self.client.relay_did, profiles=[], group=group)
        v = await self._request(payload)
        info = MlsMessage(
            ContentType.GROUP_INFO,
            b64url_decode(str(v.payload["group_info"]), what="group_info"),
            b64url_decode(group, what="group"),
            int(v.payload["epoch"]),
        )
        member = self._lobby.sibling()
        staged = member.external_join(info, self._now())
        self.groups[group] = member
        self._save(group)
        try:
            echo = await self._request(self._envelope(staged.message))
        except DsipError:
            del self.groups[group]
            self._save(group)
            raise
        return GroupEvent(group, "joined", member.epoch, echo.id, member.did)

    async def send(self, group: str, text: str) -> str:
        """Encrypt ``text`` for the group; returns once the relay accepted it (its id)."""
        for attempt in range(_COMMIT_RETRIES):
            member = self.member(group)
            epoch = member.epoch
            message = member.encrypt(json.dumps({"body": text}).encode())
            self._save(group)  # the send count first: no nonce is ever used twice
            payload = self._envelope(message)
            try:
                await self._request(payload)
            except TransportError as exc:
                # A commit we had not seen took the group on; it arrived before this refusal
                # (the relay keeps order), so we are in the new epoch now: encrypt again.
                moved = group in self.groups and self.groups[group].epoch != epoch
                if exc.reason != "session.invalid-state" or not moved:
                    raise
                if attempt == _COMMIT_RETRIES - 1:
                    raise
                continue
            return str(payload["id"])
        raise AssertionError("unreachable")

    # -- incoming --------------------------------------------------------------------------

    async def handle(self, v: Verified) -> GroupEvent | None:
        """Process one ``mls`` envelope; ``None`` when it changes nothing here (seen before,
        or for a group this device is not in). Refused ones raise, changing nothing."""
        return await asyncio.to_thread(self._handle, v)

    def _handle(self, v: Verified) -> GroupEvent | None:
        from dsip.messaging.mls import ContentType, MlsError, MlsMessage

        with self.store.transaction(write=False) as tx:
            if tx.seen(self._local, v.id):
                _release(self.client, v.id)
                return None
        try:
            message = MlsMessage.from_payload(v.payload)
        except MlsError:
            _release(self.client, v.id)  # malformed for good: nothing stored
            raise
        name = group_name(message.group)
        member = self.groups.get(name)
        lobby = False
        processed: tuple[_Kind, int, str | None, str | None] | None
        try:
            carries_welcome = message.content_type is ContentType.WELCOME or (
                message.content_type is ContentType.COMMIT and message.welcome is not None
            )
            if member is None:
                if not carries_welcome:
                    processed = None  # a group we are not in (yet: its Welcome may follow)
                else:
                    try:
                        member = self._lobby.welcomed(message)
                    except MlsError as exc:
                        if exc.code != "mls-not-member":
                            raise
                        processed = None  # a Welcome for other devices
                    else:
                        lobby = True
                        self.groups[name] = member
                        processed = "joined", member.epoch, v.identity, None
            elif message.content_type is ContentType.WELCOME:
                processed = None  # a Welcome into a group we are in (our own echo)
            else:
                p = member.process(message)
                text = None
                if p.decrypted is not None:
                    text = _text_of(p.decrypted.plaintext)
                processed = p.kind, p.epoch, p.sender, text
                if p.kind == "removed":
                    del self.groups[name]
        except MlsError:
            _release(self.client, v.id)  # refused for good: the relay may drop it; nothing stored
            raise
        with self.store.transaction() as tx:
            if processed is not None:
                self._save_in(tx, [name], lobby=lobby)
            kind = processed[0] if processed else None
            if kind == "application" and processed is not None:
                tx.add_message(
                    self._local,
                    author=str(processed[2]),
                    message_id=v.id,
                    peer_identity=_GROUP + name,
                    kind="text",
                    sent_at=int(v.payload["issued_at"]),
                    received_at=self._now(),
                    body={"body": processed[3] or "", "group": name},
                )
            tx.mark_seen(self._local, v.id, expires_at=int(v.payload["expires_at"]))
        _release(self.client, v.id)
        if processed is None:
            return None
        kind, epoch, sender, text = processed
        return GroupEvent(name, kind, epoch, v.id, sender, text)

    async def receive(self, timeout: float | None = None) -> GroupEvent:
        """The next group event (queued ones first); other envelopes go to ``others``."""
        if self.events:
            return self.events.pop(0)
        async with asyncio.timeout(timeout if timeout is not None else self.timeout):
            while True:
                v = await self.client.recv()
                if v.type != "mls":
                    self.others.append(v)
                    continue
                event = await self.handle(v)
                if event is not None and event.kind != "own-echo":
                    return event


def _add(member: MlsMember, *, chunk: list[MlsMessage], now: int) -> Any:
    return member.add(chunk, now)


def _text_of(plaintext: bytes) -> str:
    try:
        body = json.loads(plaintext)
        return str(body["body"]) if isinstance(body, dict) else str(body)
    except (ValueError, KeyError):
        return plaintext.decode("utf-8", "replace")
