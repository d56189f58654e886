"""The 1:1 message profile (seed §8, §13): ``msg`` envelopes and what travels inside them.

Outer: a ``msg`` payload (``msg.schema.json``) per recipient *device*, signed by the
sending device, ``from`` = the sender's identity, ``to`` = the recipient device::

    content: {enc: "dr-v1", ciphertext, aad}      the seed's dsip.msg content
    header:  {ratchet_key, previous_chain_length, message_number}
    x3dh:    {identity_key, ephemeral_key, signed_prekey_id, one_time_prekey_id?}
             (until the sender has heard back on the session)

``aad`` is authenticated, not encrypted: ``{"enc","from","to","id"}`` naming the sending
device, the recipient device and the envelope id, so a ciphertext cannot be moved to
another envelope or device; the receiver checks it against the verified envelope before
decrypting, and the AEAD checks it again.

Inner (``msg-inner.schema.json``, validated after decryption): ``text``, ``receipt``
(``delivered``/``read`` for an id), ``typing`` (``on``/``off`` in a thread) and
``msgUpdate`` (``edit``/``delete`` of an id, with a ``patch``). Receipts, typing and edits
are *inside* the encryption: on the wire every kind is the same ``msg`` type. The
plaintext is padded (ISO/IEC 7816-4, to :data:`PAD_BLOCK` bytes) so sizes say little.
``author`` must be the envelope's verified identity; an update is applied only if the
store records that same author for the id it names (``msg-not-author`` otherwise).

Multi-device fan-out: a message to a DID is encrypted once per (sending device, recipient
device) pair — one ratchet each — and the sender's own other devices get a copy through
their own ratchets (their copy says ``author`` = us, ``to`` = the peer).
:class:`Messenger` is one device; :class:`Conversation` addresses one peer identity and
produces one signed envelope per device.

What the relay still sees
-------------------------
Only metadata: the sender identity and device (``from``, the signing ``kid``, any
delegation in the header), the recipient device (``to``), envelope ids, ``issued_at`` /
``expires_at``, padded ciphertext sizes, timing, and how many envelopes a send fans out
to (i.e. how many devices each side has). Of the ratchet: the ratchet public key and
counters (so it can tell when a conversation turns around and count messages in a
chain); on a session's first messages the X3DH identity key (which is the device DID's
key anyway), ephemeral key and prekey ids, which link those messages to the bundle it
handed out. It does not see the kind of message (text, receipt, typing, edit), message
ids, thread names, bodies or patches. Push wake-ups carry none of this (seed §10).

Errors: :class:`~dsip.messaging.ratchet.MessagingError` with the codes of
:mod:`dsip.messaging.ratchet`, plus ``msg-inner-invalid`` (``session.failed``: the
plaintext is not a valid inner message), ``msg-misaddressed``
(``session.unknown-session``: not for this device or identity), ``msg-not-author``
(``policy.blocked``: an edit or delete by someone other than the author),
``msg-update-unknown`` (``session.invalid-state``: an update for an id we do not hold).
Every rejection happens before the store transaction commits, so stored state is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import REPLAY_WINDOW, Verified, make_payload, sign_envelope
from dsip.core.identity import DocumentSource, KeyPair, resolve_kid
from dsip.core.jsonwire import compact_dumps, loads_strict
from dsip.core.jws import encode_frame
from dsip.core.payloads.schema import validate_named
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError
from dsip.messaging.prekeys import (
    ClaimedBundle,
    PrekeyBundle,
    refresh_prekeys,
    verify_record,
)
from dsip.messaging.ratchet import (
    ENC,
    Encrypted,
    InitialHeader,
    MessagingError,
    Peer,
    RatchetHeader,
    SessionRecord,
    accept,
    initiate,
)
from dsip.messaging.session_store import SessionStore, StoredMessage, StoreTransaction

__all__ = [
    "MSG_TTL",
    "PAD_BLOCK",
    "Conversation",
    "Messenger",
    "Outbound",
    "Received",
    "Sent",
    "decode_inner",
    "encode_inner",
    "message_aad",
]

logger = logging.getLogger("dsip.messaging")

MSG_TTL: Final = 86_400  # the relay's default offline retention (§13.3)
PAD_BLOCK: Final = 128
MAX_PLAINTEXT: Final = 40_000  # padded; keeps the envelope below the 64 KiB frame

_REASONS: Final = {
    "msg-inner-invalid": "session.failed",
    "msg-misaddressed": "session.unknown-session",
    "msg-not-author": "policy.blocked",
    "msg-update-unknown": "session.invalid-state",
    "msg-replay": "session.invalid-state",
    "msg-decrypt-failed": "session.failed",
    "msg-unknown-session": "session.unknown-session",
    "msg-sender-mismatch": "policy.trust-insufficient",
}


def _fail(code: str, message: str, *, remote: bool = True) -> MessagingError:
    return MessagingError(message, code=code, reason=_REASONS[code], remote=remote)


# --- the inner message ---------------------------------------------------------------------


def encode_inner(inner: Mapping[str, Any]) -> bytes:
    """Validate an inner message and pad it for encryption (local misuse raises, remote=False)."""
    try:
        validate_named("msg-inner", dict(inner))
    except DsipError as exc:
        raise _fail("msg-inner-invalid", exc.message, remote=False) from None
    raw = compact_dumps(dict(inner)) + b"\x80"
    padded = raw + b"\x00" * (-len(raw) % PAD_BLOCK)
    if len(padded) > MAX_PLAINTEXT:
        raise _fail("msg-inner-invalid", f"message is {len(padded)} bytes padded", remote=False)
    return padded


def decode_inner(plaintext: bytes) -> dict[str, Any]:
    """Unpad, parse strictly and validate a decrypted inner message."""
    body = plaintext.rstrip(b"\x00")
    if not body.endswith(b"\x80"):
        raise _fail("msg-inner-invalid", "plaintext padding is malformed")
    try:
        value, saw_float = loads_strict(body[:-1], what="inner message")
        if saw_float or not isinstance(value, dict):
            raise _fail("msg-inner-invalid", "inner message is not a JSON object of integers")
        validate_named("msg-inner", value)
    except MessagingError:
        raise
    except DsipError as exc:
        raise _fail("msg-inner-invalid", exc.message) from None
    return value


def message_aad(sender_device: str, recipient_device: str, envelope_id: str) -> bytes:
    """The ``content.aad`` bytes: what the ciphertext is bound to, in clear."""
    return compact_dumps(
        {"enc": ENC, "from": sender_device, "to": recipient_device, "id": envelope_id}
    )


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outbound:
    """One signed ``msg`` envelope for one device."""

    device: str
    identity: str
    envelope: dict[str, str] = field(repr=False)
    payload: dict[str, Any] = field(repr=False)

    @property
    def frame(self) -> str:
        return encode_frame(self.envelope)


@dataclass(frozen=True)
class Sent:
    """A logical message and its per-device envelopes."""

    message: dict[str, Any]
    outbound: tuple[Outbound, ...]

    @property
    def id(self) -> str:
        return str(self.message["id"])


@dataclass(frozen=True)
class Received:
    """An accepted inbound message (already committed to the store)."""

    envelope_id: str
    sender_identity: str
    sender_device: str
    message: dict[str, Any]
    conversation: str  # the peer identity this belongs to
    copy: bool  # our own message, sent by another of our devices
    new_session: bool

    @property
    def kind(self) -> str:
        return str(self.message["type"])


# --- the device --------------------------------------------------------------------------


class Messenger:
    """One device's 1:1 messaging: sessions, prekeys, fan-out, receive. Time is ``now``."""

    def __init__(
        self,
        device: KeyPair,
        store: SessionStore,
        *,
        identity: str | None = None,
        delegations: Sequence[Mapping[str, str]] = (),
        documents: DocumentSource | None = None,
        ttl: int = MSG_TTL,
    ) -> None:
        self.device = device
        self.store = store
        self.identity = identity or device.did
        self.delegations = list(delegations)
        self.documents = documents
        self.ttl = ttl

    # --- prekeys and peers ---------------------------------------------------------------

    def prekey_bundle(self, *, now: int, target: int = 100) -> dict[str, str]:
        """Our signed bundle to publish, after topping up and rotating prekeys."""
        return refresh_prekeys(
            self.store,
            self.device,
            now=now,
            identity=self.identity,
            target=target,
            delegations=self.delegations,
        )

    def learn(self, bundle: PrekeyBundle, one_time_prekey_id: int | None = None) -> None:
        """Remember a verified bundle to start a session with its device on the next send."""
        if bundle.device == self.device.did:
            return
        remote = bundle.remote(one_time_prekey_id)
        with self.store.transaction() as tx:
            tx.put_bundle(self.device.did, bundle.identity, remote)

    def learn_claimed(self, claimed: ClaimedBundle, *, now: int) -> None:
        """Verify a bundle a relay handed out (with its claimed one-time prekey) and learn it."""
        from dsip.messaging.prekeys import verify_prekey_bundle

        bundle = verify_prekey_bundle(
            claimed.frame, now=now, documents=self.documents, delegations=self.delegations
        )
        if bundle.device != claimed.device:
            raise MessagingError(
                f"relay handed out {bundle.device}'s bundle for {claimed.device}",
                code="prekey-invalid",
                reason="policy.trust-insufficient",
            )
        self.learn(bundle, claimed.one_time_prekey_id)

    def devices(self, identity: str) -> list[str]:
        """Devices of ``identity`` we can reach: sessions plus learned bundles (not ours)."""
        with self.store.transaction(write=False) as tx:
            return self._devices(tx, identity)

    def _devices(self, tx: StoreTransaction, identity: str) -> list[str]:
        known = set(tx.peer_devices(self.device.did, identity))
        known |= set(tx.pending_devices(self.device.did, identity))
        known.discard(self.device.did)
        return sorted(known)

    def conversation(self, peer: str) -> Conversation:
        return Conversation(self, peer)

    def history(self, peer: str | None = None, *, kind: str | None = "text") -> list[StoredMessage]:
        """Stored messages (edits and deletes applied), in the order this device took them."""
        with self.store.transaction(write=False) as tx:
            return tx.messages(self.device.did, peer_identity=peer, kind=kind)

    # --- sending ---------------------------------------------------------------------------

    def send(self, inner: Mapping[str, Any], peer: str, *, now: int) -> Sent:
        """Encrypt ``inner`` for every device of ``peer`` and our own other devices.

        One transaction: every ratchet advances and the message enters our own history
        together, or nothing changes (e.g. a device with neither session nor bundle).
        """
        plaintext = encode_inner(inner)
        local = self.device.did
        out: list[Outbound] = []
        with self.store.transaction() as tx:
            targets = [(d, peer) for d in self._devices(tx, peer)]
            if peer != self.identity:
                targets += [(d, self.identity) for d in self._devices(tx, self.identity)]
            if not any(ident == peer for _, ident in targets):
                raise _fail("msg-unknown-session", f"no device of {peer} is known", remote=False)
            self._record_own(tx, inner, peer, now)
            for device, ident in targets:
                env_id = new_ulid(now * 1000)
                aad = message_aad(local, device, env_id)
                record = tx.load_record(local, device)
                if record is not None:
                    record, enc = record.encrypt(plaintext, aad)
                else:
                    pending = tx.pending_bundle(local, device)
                    if pending is None:
                        raise _fail(
                            "msg-unknown-session",
                            f"no session and no prekey bundle for {device}",
                            remote=False,
                        )
                    remote = pending[1]
                    peer_info = Peer(local, device, ident, remote.identity_key)
                    session, enc = initiate(self.device, peer_info, remote, plaintext, aad, now=now)
                    record = SessionRecord((session,))
                    tx.drop_bundle(local, device)  # a one-time prekey is used once
                tx.save_record(record, now=now)
                out.append(self._envelope(device, ident, env_id, aad, enc, now))
        return Sent(dict(inner), tuple(out))

    def _record_own(
        self, tx: StoreTransaction, inner: Mapping[str, Any], peer: str, now: int
    ) -> None:
        local, kind = self.device.did, inner["type"]
        if inner["author"] != self.identity:
            raise _fail("msg-sender-mismatch", "author is not this identity", remote=False)
        if kind == "msgUpdate":
            if self.identity not in tx.authors_of(local, inner["for"]):
                raise _fail("msg-not-author", f"we did not write {inner['for']}", remote=False)
            tx.apply_update(
                local,
                author=self.identity,
                message_id=inner["for"],
                action=inner["action"],
                patch=inner.get("patch"),
                now=now,
            )
        if kind in ("text", "msgUpdate", "receipt"):
            tx.add_message(
                local,
                author=self.identity,
                message_id=inner["id"],
                peer_identity=peer,
                kind=kind,
                sent_at=inner["sent_at"],
                received_at=now,
                body=dict(inner),
            )

    def _envelope(
        self, device: str, ident: str, env_id: str, aad: bytes, enc: Encrypted, now: int
    ) -> Outbound:
        fields: dict[str, Any] = {
            "to": device,
            "content": {
                "enc": ENC,
                "ciphertext": b64url_encode(enc.ciphertext),
                "aad": b64url_encode(aad),
            },
            "header": enc.header.to_json(),
        }
        if enc.initial is not None:
            fields["x3dh"] = enc.initial.to_json()
        payload = make_payload(
            "msg",
            sender=self.identity,
            now=now,
            ttl=self.ttl,
            profiles=[],
            msg_id=env_id,
            **fields,
        )
        delegations = self.delegations if self.identity != self.device.did else ()
        envelope = sign_envelope(payload, self.device, delegations=delegations)
        return Outbound(device, ident, envelope, payload)

    # --- receiving -------------------------------------------------------------------------

    def receive_frame(self, frame: str | bytes | Mapping[str, Any], *, now: int) -> Received:
        """Verify a ``msg`` frame (also one a relay held past the replay window: verified at
        its issue time, expiry against ``now``, replay by the store's seen ids) and receive it."""
        v, _ = verify_record(
            frame,
            now=now,
            documents=self.documents,
            delegations=self.delegations,
            types=("msg",),
        )
        return self.receive(v, now=now)

    def receive(self, v: Verified, *, now: int) -> Received:
        """Decrypt and accept one verified ``msg``; atomic (module docstring)."""
        local = self.device.did
        p = v.payload
        if v.type != "msg":
            raise _fail("msg-misaddressed", f"a {v.type} is not a msg")
        if p.get("to") != local:
            raise _fail("msg-misaddressed", f"msg for {str(p.get('to'))[:80]}, not this device")
        message, aad = _parse_outer(v, local)
        try:
            signing_key = resolve_kid(v.kid, self.documents).raw_key
        except DsipError as exc:
            raise _fail("msg-sender-mismatch", exc.message) from None
        peer = Peer(local, v.signer, v.identity, signing_key)
        with self.store.transaction() as tx:
            if tx.seen(local, v.id):
                raise _fail("msg-replay", f"envelope {v.id} was already accepted")
            accepted = accept(
                tx.load_record(local, v.signer),
                message,
                aad,
                local=self.device,
                peer=peer,
                prekeys=tx.prekeys(local),
                now=now,
            )
            inner = decode_inner(accepted.plaintext)
            conversation = self._check_inner(inner, v)
            self._apply(tx, inner, v, conversation, now)
            tx.save_record(accepted.record, now=now)
            if accepted.consumed_one_time_prekey is not None:
                tx.consume_one_time_prekey(local, accepted.consumed_one_time_prekey, now=now)
            tx.mark_seen(local, v.id, expires_at=int(p["expires_at"]))
            tx.purge_seen(before=now - REPLAY_WINDOW)
        logger.debug("accepted msg %s from %s (%s)", v.id, v.signer, inner["type"])
        return Received(
            envelope_id=v.id,
            sender_identity=v.identity,
            sender_device=v.signer,
            message=inner,
            conversation=conversation,
            copy=v.identity == self.identity,
            new_session=accepted.new_session,
        )

    def _check_inner(self, inner: dict[str, Any], v: Verified) -> str:
        if inner["author"] != v.identity:
            raise _fail(
                "msg-sender-mismatch",
                f"inner author {str(inner['author'])[:80]} is not the sender {v.identity}",
            )
        if v.identity == self.identity:  # a copy from another of our devices
            return str(inner["to"])
        if inner["to"] != self.identity:
            raise _fail("msg-misaddressed", f"inner message is for {str(inner['to'])[:80]}")
        return v.identity

    def _apply(
        self, tx: StoreTransaction, inner: dict[str, Any], v: Verified, conversation: str, now: int
    ) -> None:
        local, kind = self.device.did, inner["type"]
        if kind == "msgUpdate":
            authors = tx.authors_of(local, inner["for"])
            if v.identity not in authors:
                if authors:
                    raise _fail(
                        "msg-not-author",
                        f"{v.identity} may not {inner['action']} {inner['for']}: not its author",
                    )
                raise _fail("msg-update-unknown", f"no message {inner['for']} to update")
            tx.apply_update(
                local,
                author=v.identity,
                message_id=inner["for"],
                action=inner["action"],
                patch=inner.get("patch"),
                now=now,
            )
        added = tx.add_message(
            local,
            author=v.identity,
            message_id=inner["id"],
            peer_identity=conversation,
            kind=kind,
            sent_at=inner["sent_at"],
            received_at=now,
            body=inner,
        )
        if not added:
            raise _fail(
                "msg-replay", f"message {inner['id']} from {v.identity} was already accepted"
            )


def _parse_outer(v: Verified, local: str) -> tuple[Encrypted, bytes]:
    """The ratchet message and the AAD of a schema-valid ``msg``, checked against ``v``."""
    p = v.payload
    content = p["content"]
    try:
        aad = b64url_decode(content["aad"], what="content.aad")
        ciphertext = b64url_decode(content["ciphertext"], what="content.ciphertext")
        bound, _ = loads_strict(aad, what="content.aad")
    except DsipError:
        raise _fail("msg-decrypt-failed", "content is not base64url / JSON") from None
    expected = {"enc": ENC, "from": v.signer, "to": local, "id": v.id}
    if bound != expected:
        raise _fail("msg-decrypt-failed", "aad does not describe this envelope (tampered?)")
    header = RatchetHeader.from_json(p["header"])
    initial = InitialHeader.from_json(p["x3dh"]) if "x3dh" in p else None
    return Encrypted(header, ciphertext, initial), aad


# --- one conversation ------------------------------------------------------------------------


class Conversation:
    """Messages with one peer identity, fanned out to its devices and our other devices."""

    def __init__(self, messenger: Messenger, peer: str) -> None:
        self.messenger = messenger
        self.peer = peer

    def _inner(self, msg_type: str, now: int, **fields: Any) -> dict[str, Any]:
        return {
            "type": msg_type,
            "id": new_ulid(now * 1000),
            "author": self.messenger.identity,
            "to": self.peer,
            "sent_at": now,
            **fields,
        }

    def send_text(
        self, body: str, *, now: int, thread: str | None = None, reply_to: str | None = None
    ) -> Sent:
        extra: dict[str, Any] = {}
        if thread is not None:
            extra["thread"] = thread
        if reply_to is not None:
            extra["reply_to"] = reply_to
        return self.messenger.send(self._inner("text", now, body=body, **extra), self.peer, now=now)

    def send_receipt(self, for_id: str, kind: Literal["delivered", "read"], *, now: int) -> Sent:
        inner = self._inner("receipt", now, kind=kind, **{"for": for_id})
        return self.messenger.send(inner, self.peer, now=now)

    def set_typing(self, state: Literal["on", "off"], *, thread: str, now: int) -> Sent:
        return self.messenger.send(
            self._inner("typing", now, state=state, thread=thread), self.peer, now=now
        )

    def edit(self, for_id: str, body: str, *, now: int) -> Sent:
        inner = self._inner(
            "msgUpdate", now, action="edit", patch={"body": body}, **{"for": for_id}
        )
        return self.messenger.send(inner, self.peer, now=now)

    def delete(self, for_id: str, *, now: int) -> Sent:
        inner = self._inner("msgUpdate", now, action="delete", **{"for": for_id})
        return self.messenger.send(inner, self.peer, now=now)

    def history(self) -> list[StoredMessage]:
        return self.messenger.history(self.peer)
