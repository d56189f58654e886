"""Subscriptions (§9.3) and the publication authority (§22): two sans-I/O engines.

:class:`AuthorityEngine` is a target's authority — the relay or domain endpoint that
answers for it. It holds publication records (``publish``/``unpublish``, §22.1) with the
processors' statements attached to them (``provenance``, §22.3), derives presence from its
own device bindings (authority-asserted, spec-gap 19), and serves subscriptions:

* **Admission (§9.3)** is :data:`ADMISSION`, an ordered list of checks; the first that
  fails answers. Event classes and lifetime come first because they say nothing about the
  target. Then the **anti-enumeration rule**: an unauthorised subscriber and a target the
  authority has never seen get the *identical* ``reject policy.blocked`` (the I/O layer
  must also keep the timing uniform). Authorisation is the target's
  :class:`SubscriptionPolicy` — ``public`` or an allow-list of identities (default: nobody,
  §9.2 private by default) — or a capability token the authority issued for that target.
* **Lifetimes (§9.3).** Caps are per event class (presence 3,600 s, publication 86,400 s;
  the tightest applies); an over-cap request is refused with ``error
  policy.subscription-lifetime``, never clamped. A fresh ``subscribe`` from the same device
  for the same ``target``+``events`` replaces the prior subscription once admitted;
  ``expires_in: 0`` terminates it. A lapsed subscription gets a final ``terminated`` notify
  (``session.expired``); one whose authorisation is withdrawn gets ``policy.terminated``.
* **Notifies** carry a per-subscription ``seq`` from 1; the first one carries the current
  state (one per requested event class). Each subscription's life is
  :data:`AUTHORITY_TRANSITIONS`; each stream's record is :data:`PUBLICATION_TRANSITIONS`.

:class:`SubscriberEngine` is the other end: it sends ``subscribe``, surfaces notifies in
``seq`` order (a lower-or-equal ``seq`` is dropped as ``stale-seq``), treats ``terminated``
as final, and lapses a subscription whose lifetime ran out (:data:`SUBSCRIBER_TRANSITIONS`).

Both engines take verified messages (the envelope pipeline ran before them) and ``now`` in
integer seconds; nothing here touches a socket or a clock. Peer messages never raise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from dsip.core.broadcast import (
    ProvenanceStatement,
    Publication,
    provenance_problem,
    publication_problem,
)
from dsip.core.semantic import SUBSCRIPTION_CAPS
from dsip.core.session import Drop, EngineMisuseError, Refused, Send, Ui

__all__ = [
    "ADMISSION",
    "AUTHORITY_TRANSITIONS",
    "BLOCKED",
    "PRESENCE",
    "PUBLICATION",
    "PUBLICATION_TRANSITIONS",
    "SUBSCRIBER_TRANSITIONS",
    "AuthorityEmission",
    "AuthorityEngine",
    "AuthorityTrigger",
    "HeldSubscriptionView",
    "PolicyMode",
    "ProvenanceAttached",
    "PublicationChanged",
    "PublicationView",
    "RecordEvent",
    "RecordState",
    "SendNotify",
    "SendSubscribe",
    "SubscriberEmission",
    "SubscriberEngine",
    "SubscriberTrigger",
    "SubscriptionEnded",
    "SubscriptionPolicy",
    "SubscriptionState",
    "SubscriptionView",
    "lifetime_cap",
]

PRESENCE: Final = "presence"
PUBLICATION: Final = "publication"
BLOCKED: Final = "policy.blocked"  # §9.3 the one answer for "may not" and "does not exist"
LIFETIME_REFUSED: Final = "policy.subscription-lifetime"
EVENT_UNSUPPORTED: Final = "endpoint.capability"
EXPIRED_REASON: Final = "session.expired"
REVOKED_REASON: Final = "policy.terminated"
AVAILABLE, OFFLINE = "available", "offline"  # authority-asserted presence (spec-gap 19)
DEFAULT_ENDED_RETENTION_S: Final = 600  # how long a subscriber remembers an ended subscription


def lifetime_cap(events: Iterable[str]) -> int | None:
    """§9.3: the tightest cap of the named event classes; ``None`` if none is known."""
    caps = [SUBSCRIPTION_CAPS[e] for e in events if e in SUBSCRIPTION_CAPS]
    return min(caps, default=None)


def _text(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    return value if isinstance(value, str) else ""


def _integer(msg: Mapping[str, Any], key: str) -> int | None:
    value = msg.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _events(msg: Mapping[str, Any]) -> tuple[str, ...]:
    events = msg.get("events")
    if not isinstance(events, list):
        return ()
    return tuple(dict.fromkeys(e for e in events if isinstance(e, str)))


Body: TypeAlias = Mapping[str, Any]


def _body(**fields: Any) -> Body:
    return MappingProxyType(fields)


def _plain(value: Any) -> Any:
    """An emission's frozen body as plain JSON values (tuples → lists, proxies → dicts)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# --- emissions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SendNotify:
    """A ``notify`` to build, sign and send to the subscribing device (§9.3)."""

    to: str
    subscription: str
    seq: int
    state: str  # active | terminated
    body: Body
    reason: str | None = None

    def to_payload_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "notify",
            "to": self.to,
            "subscription": self.subscription,
            "seq": self.seq,
            "state": self.state,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        out["body"] = _plain(self.body)
        return out


@dataclass(frozen=True)
class SendSubscribe:
    """A ``subscribe`` to build, sign and send. ``id`` is ``None`` when the signing layer
    picks a fresh one (an ``expires_in: 0`` termination has no id of its own to keep)."""

    to: str
    target: str
    events: tuple[str, ...]
    expires_in: int
    id: str | None = None
    capability: str | None = None

    def to_payload_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "subscribe", "to": self.to}
        if self.id is not None:
            out["id"] = self.id
        out |= {"target": self.target, "events": list(self.events), "expires_in": self.expires_in}
        if self.capability is not None:
            out["capability"] = self.capability
        return out


@dataclass(frozen=True)
class PublicationChanged:
    """The record held for ``stream`` changed state (``live``…, or ``withdrawn``)."""

    stream: str
    state: str


@dataclass(frozen=True)
class ProvenanceAttached:
    """A verified statement by ``processor`` is now attached to the stream's record."""

    stream: str
    processor: str


@dataclass(frozen=True)
class SubscriptionEnded:
    """A held subscription ended without a notify: ``replaced`` or ``terminated``."""

    id: str
    state: str


AuthorityEmission: TypeAlias = (
    Send | SendNotify | PublicationChanged | ProvenanceAttached | SubscriptionEnded | Drop
)
SubscriberEmission: TypeAlias = SendSubscribe | Ui | Drop | Refused


# --- shared states --------------------------------------------------------------------------


class SubscriptionState(StrEnum):
    PENDING = "pending"  # subscriber: subscribe sent, no answer yet
    ACTIVE = "active"
    TERMINATED = "terminated"  # a terminated notify, or expires_in 0
    REJECTED = "rejected"  # subscriber: reject/error answered the subscribe
    LAPSED = "lapsed"  # subscriber: its lifetime ran out first
    REPLACED = "replaced"  # a renewal for the same target+events superseded it

    @property
    def live(self) -> bool:
        return self in (SubscriptionState.PENDING, SubscriptionState.ACTIVE)


# --- authority: policy ----------------------------------------------------------------------


class PolicyMode(StrEnum):
    PUBLIC = "public"
    ALLOW = "allow"  # an allow-list of identity (or device) DIDs


@dataclass(frozen=True)
class SubscriptionPolicy:
    """A target's authorisation policy at its authority (§9.3). The default admits nobody:
    presence is private unless the target's owner says otherwise (§9.2)."""

    mode: PolicyMode = PolicyMode.ALLOW
    allow: frozenset[str] = frozenset()

    def admits(self, identity: str, device: str) -> bool:
        return self.mode is PolicyMode.PUBLIC or identity in self.allow or device in self.allow


# --- authority: publication records ---------------------------------------------------------


class RecordState(StrEnum):
    """A held record's state: the ``publish`` state, or withdrawn by ``unpublish``."""

    LIVE = "live"
    SCHEDULED = "scheduled"
    ENDED = "ended"
    WITHDRAWN = "withdrawn"


class RecordEvent(StrEnum):
    PUBLISH = "publish"
    UNPUBLISH = "unpublish"
    ATTACH = "provenance"


@dataclass(frozen=True)
class _Record:
    publication: Publication
    state: RecordState
    statements: tuple[ProvenanceStatement, ...] = ()  # one per processor, attach order

    @property
    def processors(self) -> tuple[str, ...]:
        return tuple(s.processor for s in self.statements)

    def body(self) -> Body:
        """§9.3: publication state and id, plus the processors when any attached (§22.3)."""
        fields: dict[str, Any] = {
            "event": PUBLICATION,
            "state": str(self.state),
            "publication": self.publication.id,
        }
        if self.statements:
            fields["provenance"] = self.processors
        return _body(**fields)


@dataclass(frozen=True)
class _RecordInput:
    event: RecordEvent
    publication: Publication | None = None  # PUBLISH
    statement: ProvenanceStatement | None = None  # ATTACH


RecordHandler: TypeAlias = Callable[[_Record | None, _RecordInput], _Record | str]


def _hold(rec: _Record | None, ev: _RecordInput) -> _Record | str:
    """A record for a stream: starts with no statements (§22.1)."""
    if ev.publication is None:
        return "malformed"
    try:
        state = RecordState(ev.publication.state)
    except ValueError:
        return "malformed"
    if state is RecordState.WITHDRAWN:  # only unpublish withdraws
        return "malformed"
    return _Record(ev.publication, state)


def _replace_record(rec: _Record | None, ev: _RecordInput) -> _Record | str:
    """§22.1: a ULID-older (or the same) record is stale; a newer one replaces, bare."""
    if rec is None or ev.publication is None:
        return "malformed"
    if ev.publication.id <= rec.publication.id:
        return "stale-publication"
    return _hold(rec, ev)


def _withdraw(rec: _Record | None, ev: _RecordInput) -> _Record | str:
    if rec is None:
        return "unknown-publication"
    return replace(rec, state=RecordState.WITHDRAWN)


def _attach(rec: _Record | None, ev: _RecordInput) -> _Record | str:
    """§22.3: the statement is added, never replacing the publisher; a processor's newer
    statement replaces its earlier one in place."""
    if rec is None or ev.statement is None:
        return "malformed"
    s = ev.statement
    kept = [x if x.processor != s.processor else s for x in rec.statements]
    if s.processor not in rec.processors:
        kept.append(s)
    return replace(rec, statements=tuple(kept))


_RS, _RE = RecordState, RecordEvent

#: One stream's record: (state held — ``None`` for none —, event) → handler. A handler
#: returns the new record or a drop reason. No row: ``unknown-publication`` without a
#: record, ``publication-withdrawn`` after ``unpublish``.
PUBLICATION_TRANSITIONS: Final[Mapping[tuple[RecordState | None, RecordEvent], RecordHandler]] = {
    (None, _RE.PUBLISH): _hold,  # → live | scheduled | ended
    (_RS.LIVE, _RE.PUBLISH): _replace_record,  # newer: → its state; else stale
    (_RS.SCHEDULED, _RE.PUBLISH): _replace_record,
    (_RS.ENDED, _RE.PUBLISH): _replace_record,
    (_RS.WITHDRAWN, _RE.PUBLISH): _replace_record,  # a newer record re-publishes
    (_RS.LIVE, _RE.UNPUBLISH): _withdraw,  # → withdrawn
    (_RS.SCHEDULED, _RE.UNPUBLISH): _withdraw,
    (_RS.ENDED, _RE.UNPUBLISH): _withdraw,
    (_RS.LIVE, _RE.ATTACH): _attach,  # state unchanged, statement attached
    (_RS.SCHEDULED, _RE.ATTACH): _attach,
    (_RS.ENDED, _RE.ATTACH): _attach,
}


# --- authority: held subscriptions ----------------------------------------------------------


class AuthorityTrigger(StrEnum):
    EVENT = "event"  # the target changed: notify the current state
    RENEWED = "renewed"  # an admitted subscribe for the same device+target+events
    UNSUBSCRIBED = "unsubscribed"  # a subscribe with expires_in 0
    EXPIRED = "expired"  # its lifetime ran out (advance)
    REVOKED = "revoked"  # the policy or capability that admitted it is gone


@dataclass
class _Held:
    """One subscription at the authority; forgotten as soon as it ends."""

    id: str
    device: str  # notifies go here
    subscriber: str  # the identity authorised
    target: str
    events: tuple[str, ...]
    expires_at: int
    order: int
    capability: str | None = None
    state: SubscriptionState = SubscriptionState.ACTIVE
    seq: int = 0
    last_body: Body = field(default_factory=lambda: _body())

    def notify(self, state: str, body: Body, reason: str | None = None) -> SendNotify:
        self.seq += 1
        self.last_body = body
        return SendNotify(self.device, self.id, self.seq, state, body, reason)


AuthorityHandler: TypeAlias = Callable[[_Held, Body], list[AuthorityEmission]]


def _notify(sub: _Held, body: Body) -> list[AuthorityEmission]:
    return [sub.notify("active", body)]


def _replaced(sub: _Held, body: Body) -> list[AuthorityEmission]:
    sub.state = SubscriptionState.REPLACED
    return [SubscriptionEnded(sub.id, str(SubscriptionState.REPLACED))]


def _unsubscribed(sub: _Held, body: Body) -> list[AuthorityEmission]:
    sub.state = SubscriptionState.TERMINATED
    return [SubscriptionEnded(sub.id, str(SubscriptionState.TERMINATED))]


def _expired(sub: _Held, body: Body) -> list[AuthorityEmission]:
    """§9.3: a final ``terminated`` notify carrying the last state and ``session.expired``."""
    sub.state = SubscriptionState.TERMINATED
    return [sub.notify("terminated", sub.last_body, EXPIRED_REASON)]


def _revoked(sub: _Held, body: Body) -> list[AuthorityEmission]:
    sub.state = SubscriptionState.TERMINATED
    return [sub.notify("terminated", sub.last_body, REVOKED_REASON)]


_SS, _AT = SubscriptionState, AuthorityTrigger

#: A held subscription's life. Only ACTIVE ones are held, so every row starts there.
AUTHORITY_TRANSITIONS: Final[
    Mapping[tuple[SubscriptionState, AuthorityTrigger], AuthorityHandler]
] = {
    (_SS.ACTIVE, _AT.EVENT): _notify,  # ACTIVE, seq + 1
    (_SS.ACTIVE, _AT.RENEWED): _replaced,  # → REPLACED (no notify: the renewal's own follows)
    (_SS.ACTIVE, _AT.UNSUBSCRIBED): _unsubscribed,  # → TERMINATED (no notify)
    (_SS.ACTIVE, _AT.EXPIRED): _expired,  # → TERMINATED, notify session.expired
    (_SS.ACTIVE, _AT.REVOKED): _revoked,  # → TERMINATED, notify policy.terminated
}


@dataclass(frozen=True)
class _Request:
    """A ``subscribe`` as the authority weighs it."""

    id: str
    device: str
    subscriber: str
    target: str
    events: tuple[str, ...]
    expires_in: int
    capability: str | None

    @property
    def key(self) -> tuple[str, str, frozenset[str]]:
        return (self.device, self.target, frozenset(self.events))

    def answer(self, kind: str, reason: str) -> Send:
        if kind == "reject":
            return Send("reject", self.device, session=self.id, reason=reason)
        return Send(kind, self.device, reason=reason, in_reply_to=self.id)


@dataclass(frozen=True)
class _Check:
    name: str
    fails: Callable[[AuthorityEngine, _Request], bool]
    answer: str  # reject | error
    reason: str


#: §9.3 admission of a ``subscribe`` with ``expires_in > 0``, in order; the first check that
#: fails answers. The last two give the same answer on purpose (anti-enumeration).
ADMISSION: Final[tuple[_Check, ...]] = (
    _Check(
        "event-classes",
        lambda a, r: any(e not in SUBSCRIPTION_CAPS for e in r.events),
        "reject",
        EVENT_UNSUPPORTED,
    ),
    _Check(
        "lifetime",
        lambda a, r: r.expires_in > (lifetime_cap(r.events) or 0),
        "error",
        LIFETIME_REFUSED,
    ),
    _Check(
        "authorisation",
        lambda a, r: not a.authorised(r.subscriber, r.device, r.target, r.capability),
        "reject",
        BLOCKED,
    ),
    _Check(
        "existence",
        lambda a, r: not all(a.serves(r.target, e) for e in r.events),
        "reject",
        BLOCKED,
    ),
)


@dataclass(frozen=True)
class PublicationView:
    publication: str
    publisher: str
    state: RecordState
    provenance: tuple[str, ...]


@dataclass(frozen=True)
class HeldSubscriptionView:
    subscriber: str
    device: str
    target: str
    events: tuple[str, ...]
    seq: int
    expires_at: int


class AuthorityEngine:
    """Records, presence and subscriptions of one authority (sans-I/O).

    ``directory`` maps device DIDs to the identity DIDs they act for (what delegation and
    ``hello`` verification established, §7.4); a DID absent from it stands for itself.
    """

    def __init__(self, *, directory: Mapping[str, str] | None = None) -> None:
        self.directory: dict[str, str] = dict(directory or {})
        self.policies: dict[str, SubscriptionPolicy] = {}
        self.capabilities: dict[str, str] = {}  # token → the target it admits to
        self.records: dict[str, _Record] = {}  # stream_id → held record
        self.bound: dict[str, list[str]] = {}  # identity → devices bound now
        self.seen: set[str] = set()  # identities that ever bound or published here
        self.subscriptions: dict[str, _Held] = {}
        self._order = itertools.count()

    # --- observation ----------------------------------------------------------------------

    def identity_of(self, did: str) -> str:
        return self.directory.get(did, did)

    def presence(self, identity: str) -> str:
        return AVAILABLE if self.bound.get(identity) else OFFLINE

    def publications_view(self) -> dict[str, PublicationView]:
        return {
            stream: PublicationView(
                r.publication.id, r.publication.publisher, r.state, r.processors
            )
            for stream, r in self.records.items()
        }

    def subscriptions_view(self) -> dict[str, HeldSubscriptionView]:
        return {
            s.id: HeldSubscriptionView(
                s.subscriber, s.device, s.target, s.events, s.seq, s.expires_at
            )
            for s in self.subscriptions.values()
        }

    def next_deadline(self) -> int | None:
        return min((s.expires_at for s in self.subscriptions.values()), default=None)

    def authorised(self, identity: str, device: str, target: str, capability: str | None) -> bool:
        """§9.3: the target's policy, or a capability token issued for this target."""
        if self.policies.get(target, SubscriptionPolicy()).admits(identity, device):
            return True
        return capability is not None and self.capabilities.get(capability) == target

    def serves(self, target: str, event: str) -> bool:
        """Whether ``target`` exists here for ``event`` (spec-gap 19): a presence target is
        an identity that bound or published here or that has a policy; a publication
        target is a stream whose record is held."""
        if event == PRESENCE:
            return target in self.seen or target in self.policies
        return event == PUBLICATION and target in self.records

    # --- the clock ------------------------------------------------------------------------

    def advance(self, now: int) -> list[AuthorityEmission]:
        """End every subscription whose lifetime is over, in deadline order (§9.3)."""
        due = sorted(
            (s for s in self.subscriptions.values() if s.expires_at <= now),
            key=lambda s: (s.expires_at, s.order),
        )
        out: list[AuthorityEmission] = []
        for s in due:
            out += self._dispatch(s, AuthorityTrigger.EXPIRED)
        return out

    # --- local configuration --------------------------------------------------------------

    def set_policy(
        self, target: str, policy: SubscriptionPolicy, *, now: int
    ) -> list[AuthorityEmission]:
        """Set ``target``'s policy; subscriptions it no longer admits are terminated."""
        if not target:
            raise EngineMisuseError("target must be a non-empty string")
        self.policies[target] = policy
        return self.advance(now) + self._revoke_unauthorised(target)

    def issue_capability(self, token: str, target: str, *, now: int) -> list[AuthorityEmission]:
        """Hand out an opaque token admitting its holder to ``target`` (a follow token);
        it admits renewals too until revoked."""
        if not token or not target:
            raise EngineMisuseError("token and target must be non-empty strings")
        self.capabilities[token] = target
        return self.advance(now)

    def revoke_capability(self, token: str, *, now: int) -> list[AuthorityEmission]:
        target = self.capabilities.pop(token, None)
        out = self.advance(now)
        return out if target is None else out + self._revoke_unauthorised(target)

    # --- presence source: bindings (§13.2) -------------------------------------------------

    def bind(self, device: str, identity: str, *, now: int) -> list[AuthorityEmission]:
        out = self.advance(now)
        before = self.presence(identity)
        devices = self.bound.setdefault(identity, [])
        if device not in devices:
            devices.append(device)
        self.seen.add(identity)
        return out + self._presence_changed(identity, before)

    def unbind(self, device: str, identity: str, *, now: int) -> list[AuthorityEmission]:
        out = self.advance(now)
        before = self.presence(identity)
        devices = self.bound.get(identity, [])
        if device in devices:
            devices.remove(device)
        return out + self._presence_changed(identity, before)

    # --- received messages ----------------------------------------------------------------

    def receive(self, msg: Mapping[str, Any], *, now: int) -> list[AuthorityEmission]:
        """A verified message (signature, replay window and schema already checked)."""
        out = self.advance(now)
        match _text(msg, "type"):
            case "publish":
                return out + self._on_publish(msg)
            case "unpublish":
                return out + self._on_unpublish(msg)
            case "provenance":
                return out + self._on_provenance(msg)
            case "subscribe":
                return out + self._on_subscribe(msg, now)
        return [*out, Drop("unsupported-type")]

    def _on_publish(self, msg: Mapping[str, Any]) -> list[AuthorityEmission]:
        problem = publication_problem(msg, self.identity_of(_text(msg, "from")))
        if problem is not None:  # §22.1, spec-gap 18
            return [Drop(problem)]
        publication = Publication.from_payload(msg)
        ev = _RecordInput(RecordEvent.PUBLISH, publication=publication)
        return self._record_event(publication.stream_id, ev)

    def _on_unpublish(self, msg: Mapping[str, Any]) -> list[AuthorityEmission]:
        """§22.1: signed by the same identity, naming the held publication."""
        if _text(msg, "publisher") != self.identity_of(_text(msg, "from")):
            return [Drop("publisher-mismatch")]
        stream = _text(msg, "stream_id")
        held = self.records.get(stream)
        if held is None or held.publication.id != _text(msg, "publication"):
            return [Drop("unknown-publication")]
        return self._record_event(stream, _RecordInput(RecordEvent.UNPUBLISH))

    def _on_provenance(self, msg: Mapping[str, Any]) -> list[AuthorityEmission]:
        """§22.3 carriage: attach a verified statement to the record it names."""
        statement = ProvenanceStatement.from_payload(msg)
        held = self._record_by_id(statement.original_publication)
        identity = self.identity_of(_text(msg, "from"))
        problem = provenance_problem(statement, identity, held.publication if held else None)
        if problem is not None or held is None:
            return [Drop(problem or "provenance-unknown-publication")]
        ev = _RecordInput(RecordEvent.ATTACH, statement=statement)
        return self._record_event(held.publication.stream_id, ev)

    def _on_subscribe(self, msg: Mapping[str, Any], now: int) -> list[AuthorityEmission]:
        request = self._request(msg)
        if request is None:
            return [Drop("malformed")]
        current = self._matching(request)
        if request.expires_in == 0:  # §9.3: terminates a matching subscription
            if current is None:
                return [Drop("no-matching-subscription")]
            return self._dispatch(current, AuthorityTrigger.UNSUBSCRIBED)
        if request.id in self.subscriptions:
            return [Drop("duplicate-subscription")]
        for check in ADMISSION:
            if check.fails(self, request):
                return [request.answer(check.answer, check.reason)]
        out = [] if current is None else self._dispatch(current, AuthorityTrigger.RENEWED)
        held = _Held(
            request.id,
            request.device,
            request.subscriber,
            request.target,
            request.events,
            now + request.expires_in,
            next(self._order),
            capability=request.capability,  # re-checked when authorisation changes
        )
        self.subscriptions[held.id] = held
        for event in request.events:  # §9.3: acceptance is the first notify, current state
            out += self._dispatch(held, AuthorityTrigger.EVENT, self._current(held.target, event))
        return out

    # --- helpers --------------------------------------------------------------------------

    def _request(self, msg: Mapping[str, Any]) -> _Request | None:
        device, target, events = _text(msg, "from"), _text(msg, "target"), _events(msg)
        expires_in = _integer(msg, "expires_in")
        if not (device and target and events) or expires_in is None or expires_in < 0:
            return None
        capability = msg.get("capability")
        return _Request(
            _text(msg, "id"),
            device,
            self.identity_of(device),
            target,
            events,
            expires_in,
            capability if isinstance(capability, str) else None,
        )

    def _matching(self, request: _Request) -> _Held | None:
        return next(
            (
                s
                for s in self.subscriptions.values()
                if (s.device, s.target, frozenset(s.events)) == request.key
            ),
            None,
        )

    def _record_by_id(self, publication: str) -> _Record | None:
        return next((r for r in self.records.values() if r.publication.id == publication), None)

    def _current(self, target: str, event: str) -> Body:
        if event == PRESENCE:
            return _body(event=PRESENCE, state=self.presence(target))
        return self.records[target].body()

    def _record_event(self, stream: str, ev: _RecordInput) -> list[AuthorityEmission]:
        held = self.records.get(stream)
        state = None if held is None else held.state
        handler = PUBLICATION_TRANSITIONS.get((state, ev.event))
        if handler is None:
            return [Drop("unknown-publication" if held is None else "publication-withdrawn")]
        result = handler(held, ev)
        if isinstance(result, str):
            return [Drop(result)]
        self.records[stream] = result
        self.seen.add(result.publication.publisher)
        out: list[AuthorityEmission] = []
        if ev.event is RecordEvent.ATTACH and ev.statement is not None:
            out.append(ProvenanceAttached(stream, ev.statement.processor))
        else:
            out.append(PublicationChanged(stream, str(result.state)))
        return out + self._fan_out(stream, PUBLICATION, result.body())

    def _presence_changed(self, identity: str, before: str) -> list[AuthorityEmission]:
        after = self.presence(identity)
        if after == before:
            return []
        return self._fan_out(identity, PRESENCE, _body(event=PRESENCE, state=after))

    def _fan_out(self, target: str, event: str, body: Body) -> list[AuthorityEmission]:
        out: list[AuthorityEmission] = []
        for s in sorted(self.subscriptions.values(), key=lambda s: s.order):
            if s.target == target and event in s.events:
                out += self._dispatch(s, AuthorityTrigger.EVENT, body)
        return out

    def _revoke_unauthorised(self, target: str) -> list[AuthorityEmission]:
        out: list[AuthorityEmission] = []
        for s in sorted(self.subscriptions.values(), key=lambda s: s.order):
            if s.target == target and not self.authorised(
                s.subscriber, s.device, s.target, s.capability
            ):
                out += self._dispatch(s, AuthorityTrigger.REVOKED)
        return out

    def _dispatch(
        self, sub: _Held, trigger: AuthorityTrigger, body: Body | None = None
    ) -> list[AuthorityEmission]:
        handler = AUTHORITY_TRANSITIONS.get((sub.state, trigger))
        if handler is None:  # pragma: no cover - ended subscriptions are never held
            return []
        out = handler(sub, _body() if body is None else body)
        if sub.state is not SubscriptionState.ACTIVE:
            del self.subscriptions[sub.id]
        return out


# --- subscriber -----------------------------------------------------------------------------


class SubscriberTrigger(StrEnum):
    RECV_ACTIVE = "recv:notify-active"
    RECV_TERMINATED = "recv:notify-terminated"
    RECV_REFUSED = "recv:refused"  # a reject, or an error answering the subscribe
    UNSUBSCRIBE = "local:unsubscribe"
    SUPERSEDED = "engine:superseded"  # a renewal for the same target+events was accepted
    LIFETIME_EXPIRED = "timer:lifetime"

    @property
    def received(self) -> bool:
        return self.value.startswith("recv:")

    @property
    def local(self) -> bool:
        return self.value.startswith("local:")


@dataclass
class Subscription:
    """One subscription as the subscriber sees it. Mutated only by the handlers."""

    id: str
    to: str
    target: str
    events: tuple[str, ...]
    expires_at: int
    order: int
    state: SubscriptionState = SubscriptionState.PENDING
    seq: int = 0
    last_body: Body | None = None
    ended_at: int | None = None

    @property
    def key(self) -> tuple[str, str, frozenset[str]]:
        return (self.to, self.target, frozenset(self.events))


@dataclass(frozen=True)
class SubscriptionView:
    target: str
    state: SubscriptionState
    seq: int
    last_body: Body | None


SubscriberHandler: TypeAlias = Callable[[Subscription, Mapping[str, Any]], list[SubscriberEmission]]


def _fresh_seq(s: Subscription, msg: Mapping[str, Any]) -> int | None:
    """§9.3: receivers discard lower-than-seen ``seq`` (an equal one is a duplicate)."""
    seq = _integer(msg, "seq")
    return seq if seq is not None and seq > s.seq else None


def _on_notify(s: Subscription, msg: Mapping[str, Any]) -> list[SubscriberEmission]:
    seq = _fresh_seq(s, msg)
    if seq is None:
        return [Drop("stale-seq", s.id)]
    body = msg.get("body")
    body = body if isinstance(body, Mapping) else {}
    s.seq, s.state, s.last_body = seq, SubscriptionState.ACTIVE, MappingProxyType(dict(body))
    return [Ui("notify", {"event": _text(body, "event"), "state": _text(body, "state")}, s.id)]


def _on_terminated(s: Subscription, msg: Mapping[str, Any]) -> list[SubscriberEmission]:
    """A ``terminated`` notify is final (§9.3)."""
    seq = _fresh_seq(s, msg)
    if seq is None:
        return [Drop("stale-seq", s.id)]
    s.seq, s.state = seq, SubscriptionState.TERMINATED
    reason = _text(msg, "reason")
    return [Ui("subscription_terminated", {"reason": reason} if reason else {}, s.id)]


def _on_refused(s: Subscription, msg: Mapping[str, Any]) -> list[SubscriberEmission]:
    s.state = SubscriptionState.REJECTED
    return [Ui("subscription_rejected", {"reason": _text(msg, "reason")}, s.id)]


def _unsubscribe(s: Subscription, msg: Mapping[str, Any]) -> list[SubscriberEmission]:
    s.state = SubscriptionState.TERMINATED
    return [SendSubscribe(s.to, s.target, s.events, 0)]


def _superseded(s: Subscription, msg: Mapping[str, Any]) -> list[SubscriberEmission]:
    s.state = SubscriptionState.REPLACED
    return []


def _lapse(s: Subscription, msg: Mapping[str, Any]) -> list[SubscriberEmission]:
    s.state = SubscriptionState.LAPSED
    return [Ui("subscription_lapsed", {"subscription": s.id}, s.id)]


_ST = SubscriberTrigger

#: The subscriber's view of one subscription: (state, trigger) → handler. No row: a received
#: message is dropped (``terminated-subscription`` once ended, else ``invalid-state``), a
#: local action is :class:`Refused`, a timer does nothing.
SUBSCRIBER_TRANSITIONS: Final[
    Mapping[tuple[SubscriptionState, SubscriberTrigger], SubscriberHandler]
] = {
    (_SS.PENDING, _ST.RECV_ACTIVE): _on_notify,  # → ACTIVE (accepted)
    (_SS.ACTIVE, _ST.RECV_ACTIVE): _on_notify,  # ACTIVE
    (_SS.PENDING, _ST.RECV_TERMINATED): _on_terminated,  # → TERMINATED
    (_SS.ACTIVE, _ST.RECV_TERMINATED): _on_terminated,  # → TERMINATED
    (_SS.PENDING, _ST.RECV_REFUSED): _on_refused,  # → REJECTED
    (_SS.PENDING, _ST.UNSUBSCRIBE): _unsubscribe,  # → TERMINATED, sends expires_in 0
    (_SS.ACTIVE, _ST.UNSUBSCRIBE): _unsubscribe,  # → TERMINATED, sends expires_in 0
    (_SS.PENDING, _ST.SUPERSEDED): _superseded,  # → REPLACED
    (_SS.ACTIVE, _ST.SUPERSEDED): _superseded,  # → REPLACED
    (_SS.PENDING, _ST.LIFETIME_EXPIRED): _lapse,  # → LAPSED
    (_SS.ACTIVE, _ST.LIFETIME_EXPIRED): _lapse,  # → LAPSED
}


class SubscriberEngine:
    """The subscriptions of one device (sans-I/O). Ended subscriptions are remembered for
    ``ended_retention_s`` so that late notifies drop as ``terminated-subscription``."""

    def __init__(
        self,
        *,
        directory: Mapping[str, str] | None = None,
        ended_retention_s: int = DEFAULT_ENDED_RETENTION_S,
    ) -> None:
        self.directory: dict[str, str] = dict(directory or {})
        self.ended_retention_s = ended_retention_s
        self.subscriptions: dict[str, Subscription] = {}
        self._order = itertools.count()

    # --- observation ----------------------------------------------------------------------

    def view(self, sub_id: str) -> SubscriptionView | None:
        s = self.subscriptions.get(sub_id)
        return None if s is None else SubscriptionView(s.target, s.state, s.seq, s.last_body)

    def views(self) -> dict[str, SubscriptionView]:
        return {i: v for i in self.subscriptions if (v := self.view(i)) is not None}

    def next_deadline(self) -> int | None:
        deadlines = [
            s.expires_at if s.state.live else (s.ended_at or 0) + self.ended_retention_s
            for s in self.subscriptions.values()
        ]
        return min(deadlines, default=None)

    # --- the clock ------------------------------------------------------------------------

    def advance(self, now: int) -> list[SubscriberEmission]:
        """Lapse live subscriptions whose lifetime is over; forget long-ended ones."""
        for s in [s for s in self.subscriptions.values() if s.ended_at is not None]:
            if s.ended_at is not None and s.ended_at + self.ended_retention_s <= now:
                del self.subscriptions[s.id]
        due = sorted(
            (s for s in self.subscriptions.values() if s.state.live and s.expires_at <= now),
            key=lambda s: (s.expires_at, s.order),
        )
        out: list[SubscriberEmission] = []
        for s in due:
            out += self._dispatch(s, SubscriberTrigger.LIFETIME_EXPIRED, {}, now)
        return out

    # --- local actions --------------------------------------------------------------------

    def subscribe(
        self,
        sub_id: str,
        to: str,
        target: str,
        events: Sequence[str],
        expires_in: int,
        *,
        now: int,
        capability: str | None = None,
    ) -> list[SubscriberEmission]:
        """Send a ``subscribe`` (a renewal too: same ``to``+``target``+``events``, new id)."""
        if not (sub_id and to and target and events):
            raise EngineMisuseError("id, to, target and events must be non-empty")
        if expires_in < 1:
            raise EngineMisuseError("expires_in must be positive; unsubscribe() terminates")
        out = self.advance(now)
        if sub_id in self.subscriptions:
            return [*out, Refused("duplicate-subscription", sub_id)]
        cap = lifetime_cap(events)
        if cap is not None and expires_in > cap:  # §9.3: the authority would refuse it
            return [*out, Refused("subscription-lifetime", sub_id)]
        unique = tuple(dict.fromkeys(events))
        s = Subscription(sub_id, to, target, unique, now + expires_in, next(self._order))
        self.subscriptions[sub_id] = s
        send = SendSubscribe(to, target, unique, expires_in, id=sub_id, capability=capability)
        return [*out, send]

    def unsubscribe(self, sub_id: str, *, now: int) -> list[SubscriberEmission]:
        """``expires_in: 0`` for the subscription's target+events (§9.3)."""
        out = self.advance(now)
        s = self.subscriptions.get(sub_id)
        if s is None:
            return [*out, Refused("unknown-subscription", sub_id or None)]
        return out + self._dispatch(s, SubscriberTrigger.UNSUBSCRIBE, {}, now)

    # --- received messages ----------------------------------------------------------------

    def receive(self, msg: Mapping[str, Any], *, now: int) -> list[SubscriberEmission]:
        """A verified ``notify``, or a ``reject``/``error`` answering a ``subscribe``."""
        out = self.advance(now)
        kind = _text(msg, "type")
        if kind == "notify":
            ref = _text(msg, "subscription")
            state = _text(msg, "state")
            trigger = {
                "active": SubscriberTrigger.RECV_ACTIVE,
                "terminated": SubscriberTrigger.RECV_TERMINATED,
            }.get(state)
        elif kind in ("reject", "error"):
            ref = _text(msg, "session") or _text(msg, "in_reply_to")
            trigger = SubscriberTrigger.RECV_REFUSED
        else:
            return [*out, Drop("unsupported-type")]
        s = self.subscriptions.get(ref)
        if s is None or not self._from_authority(s, msg):
            return [*out, Drop("unknown-subscription", ref or None)]
        if trigger is None:
            return [*out, Drop("malformed", s.id)]
        return out + self._dispatch(s, trigger, msg, now)

    # --- dispatch -------------------------------------------------------------------------

    def _from_authority(self, s: Subscription, msg: Mapping[str, Any]) -> bool:
        """Only the authority we subscribed at speaks for the subscription."""
        sender = _text(msg, "from")
        return s.to in (sender, self.directory.get(sender, sender))

    def _dispatch(
        self, s: Subscription, trigger: SubscriberTrigger, msg: Mapping[str, Any], now: int
    ) -> list[SubscriberEmission]:
        handler = SUBSCRIBER_TRANSITIONS.get((s.state, trigger))
        if handler is None:
            ended = not s.state.live
            if trigger.received:
                return [Drop("terminated-subscription" if ended else "invalid-state", s.id)]
            if trigger.local:
                return [Refused("terminated-subscription" if ended else "invalid-state", s.id)]
            return []
        was_pending = s.state is SubscriptionState.PENDING
        out = handler(s, msg)
        if not s.state.live and s.ended_at is None:
            s.ended_at = now
        if was_pending and s.state is SubscriptionState.ACTIVE:
            # The authority admitted a renewal: it replaced the prior subscription (§9.3).
            for other in [o for o in self.subscriptions.values() if o is not s]:
                if other.state.live and other.key == s.key:
                    out += self._dispatch(other, SubscriberTrigger.SUPERSEDED, {}, now)
        return out
