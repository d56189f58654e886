"""The relay side of a session attempt: forking, leg tracking and store-and-forward.

A :class:`RelayEngine` is the sans-I/O core of a DSIP relay's delivery duties:

* **Forking (§12.7).** An identity-addressed ``invite`` is delivered to every bound device
  of the identity; each device is a *leg* with its own state (:data:`LEG_TRANSITIONS`). The
  relay forwards every leg's ``progress`` and ``answer`` to the initiator (late answers too:
  the initiator decides, rule 4), delivers the initiator's ``cancel`` per leg to the legs
  still live (rule 3), and — when the last live leg terminates without an answer — forwards
  one ``reject`` as the attempt outcome, choosing the most informative reason (rule 6,
  :data:`REJECT_PREFERENCE`). A device that binds while an attempt is live and its invite
  unexpired becomes a leg mid-attempt.
* **Store-and-forward (§13.3).** Envelopes for a *known* identity or device (one that has
  bound here before) with nothing bound are held until ``min(expires_at, retention)`` and
  flushed in arrival order on the next binding; a held ``invite`` becomes a tracked leg when
  flushed and is dropped if its ``cancel`` arrives first. Expiry is silent: the initiator's
  §12.9 timers are the backstop (spec-gap 17).
* **Anti-enumeration (§19.4, §13.2).** Introductions are held for *any* recipient, known or
  not, with no routing response (spec-gap 14); every other message to an identity never
  seen here is answered ``error transport.unknown-recipient``.

Like :mod:`dsip.core.session`, every method takes ``now`` and returns emissions.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeAlias

from dsip.core.session import Drop, Send

__all__ = [
    "LEG_TRANSITIONS",
    "REJECT_PREFERENCE",
    "AttemptOutcome",
    "AttemptView",
    "Deliver",
    "Dequeue",
    "Forward",
    "LegEvent",
    "LegState",
    "Queue",
    "RelayEmission",
    "RelayEngine",
]

DEFAULT_OFFLINE_RETENTION_S: Final = 86_400  # §13.3 RECOMMENDED
INTRODUCTION_INBOX_LIMIT: Final = 16  # §19.4 RECOMMENDED bound per recipient inbox
LEG_EXPIRED_REASON: Final = "endpoint.unavailable"

#: §12.7 rule 6: the most informative reason first; other tokens rank after these, and
#: among equals the first seen wins.
REJECT_PREFERENCE: Final = ("user.declined", "user.no-answer", "endpoint.busy", LEG_EXPIRED_REASON)


# --- emissions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """Hand an envelope to a bound device. ``id`` names a stored envelope to replay (a held
    one, or the invite for a leg added mid-attempt); ``None`` means the one just received."""

    leg: str
    type: str
    reason: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Forward:
    """Pass a leg's message to the initiator (§12.7); ``leg`` is the device it came from.
    When the outcome leg merely expired there is no leg envelope: the relay states it."""

    type: str
    leg: str
    reason: str | None = None
    status: str | None = None
    session: str | None = None


@dataclass(frozen=True)
class Queue:
    """An envelope was held for ``to`` (an identity or a device) (§13.3, §19.4)."""

    to: str
    type: str


@dataclass(frozen=True)
class Dequeue:
    """A held envelope was dropped: ``why`` is ``expired`` or ``cancelled``. Never signalled
    to anyone (§13.3)."""

    to: str
    type: str
    why: str


RelayEmission: TypeAlias = Deliver | Forward | Queue | Dequeue | Send | Drop


# --- legs and attempts --------------------------------------------------------------------


class LegState(StrEnum):
    DELIVERED = "delivered"  # live: the invite reached the device, no final response yet
    ANSWERED = "answered"
    REJECTED = "rejected"
    EXPIRED = "expired"  # the relay's own per-leg delivery expiry
    CANCELLED = "cancelled"  # the initiator's cancel was delivered to it


class LegEvent(StrEnum):
    PROGRESS = "progress"
    ANSWER = "answer"
    REJECT = "reject"
    EXPIRE = "expire"
    CANCEL = "cancel"


#: Per-leg transitions. Only a live leg moves; anything arriving from a terminated leg is
#: dropped (``leg-terminated``) — it never re-alerts or re-answers (§12.7 rule 3).
LEG_TRANSITIONS: Final[Mapping[tuple[LegState, LegEvent], LegState]] = {
    (LegState.DELIVERED, LegEvent.PROGRESS): LegState.DELIVERED,
    (LegState.DELIVERED, LegEvent.ANSWER): LegState.ANSWERED,
    (LegState.DELIVERED, LegEvent.REJECT): LegState.REJECTED,
    (LegState.DELIVERED, LegEvent.EXPIRE): LegState.EXPIRED,
    (LegState.DELIVERED, LegEvent.CANCEL): LegState.CANCELLED,
}

_LEG_MESSAGES: Final[Mapping[str, LegEvent]] = {
    "progress": LegEvent.PROGRESS,
    "answer": LegEvent.ANSWER,
    "reject": LegEvent.REJECT,
}


class AttemptOutcome(StrEnum):
    ANSWERED = "answered"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


@dataclass
class Leg:
    device: str
    state: LegState = LegState.DELIVERED
    reason: str | None = None  # why it terminated without answering
    terminated: int | None = None  # order of termination ("first seen")


@dataclass
class Attempt:
    session: str
    initiator: str
    to: str
    expires_at: int | None
    legs: dict[str, Leg] = field(default_factory=dict)
    outcome: AttemptOutcome | None = None

    def live_legs(self) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.state is LegState.DELIVERED]

    def accepting_legs(self, now: int) -> bool:
        """Whether a device binding now joins as a leg (§12.7 rule 3, spec-gap 17)."""
        return self.outcome is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class AttemptView:
    legs: Mapping[str, LegState]
    outcome: AttemptOutcome | None


@dataclass
class _Held:
    seq: int
    to: str
    msg: Mapping[str, Any]
    held_until: int

    @property
    def type(self) -> str:
        return _text(self.msg, "type")


def _text(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    return value if isinstance(value, str) else ""


def _reason_rank(reason: str) -> int:
    return (
        REJECT_PREFERENCE.index(reason) if reason in REJECT_PREFERENCE else len(REJECT_PREFERENCE)
    )


# --- the engine ---------------------------------------------------------------------------


class RelayEngine:
    """Bindings, held envelopes and forking attempts of one relay (sans-I/O)."""

    def __init__(
        self,
        *,
        offline_retention_s: int = DEFAULT_OFFLINE_RETENTION_S,
        introduction_inbox_limit: int = INTRODUCTION_INBOX_LIMIT,
    ) -> None:
        self.offline_retention_s = offline_retention_s
        self.introduction_inbox_limit = introduction_inbox_limit
        self.bound: dict[str, list[str]] = {}  # identity → devices bound now, in bind order
        self.device_identity: dict[str, str] = {}  # every device ever bound → its identity
        self.known_identities: set[str] = set()  # identities with a verified hello here
        self.held: list[_Held] = []
        self.attempts: dict[str, Attempt] = {}
        self._seq = itertools.count()

    # --- observation ----------------------------------------------------------------------

    def attempt_view(self, session: str) -> AttemptView | None:
        a = self.attempts.get(session)
        if a is None:
            return None
        return AttemptView({d: leg.state for d, leg in a.legs.items()}, a.outcome)

    def inbox(self) -> dict[str, int]:
        """Held envelopes per recipient (identity or device)."""
        counts: dict[str, int] = {}
        for h in self.held:
            counts[h.to] = counts.get(h.to, 0) + 1
        return counts

    def next_deadline(self) -> int | None:
        return min((h.held_until for h in self.held), default=None)

    # --- clock ----------------------------------------------------------------------------

    def advance(self, now: int) -> list[RelayEmission]:
        """Drop held envelopes whose hold ended, in deadline order (silently, §13.3)."""
        due = sorted(
            (h for h in self.held if h.held_until <= now), key=lambda h: (h.held_until, h.seq)
        )
        for h in due:
            self.held.remove(h)
        return [Dequeue(h.to, h.type, "expired") for h in due]

    # --- bindings (§13.2 hello) -------------------------------------------------------------

    def bind(self, device: str, identity: str, *, now: int) -> list[RelayEmission]:
        """A device completed ``hello``: flush what was held for it (and for its identity) in
        arrival order, then join it to live attempts for its identity."""
        out = self.advance(now)
        devices = self.bound.setdefault(identity, [])
        if device not in devices:
            devices.append(device)
        self.device_identity[device] = identity
        self.known_identities.add(identity)
        flushed = [h for h in self.held if h.to in (device, identity)]
        for h in flushed:
            self.held.remove(h)
            out.append(Deliver(device, h.type, id=_text(h.msg, "id")))
            if h.type == "invite":  # a held invite becomes a tracked leg (§13.3)
                self._attempt_for(h.msg).legs.setdefault(device, Leg(device))
        for a in self.attempts.values():
            if a.to == identity and device not in a.legs and a.accepting_legs(now):
                a.legs[device] = Leg(device)
                out.append(Deliver(device, "invite", id=a.session))
        return out

    def unbind(self, device: str, identity: str, *, now: int) -> list[RelayEmission]:
        """The connection went away. The identity stays *known* (§13.3)."""
        devices = self.bound.get(identity, [])
        if device in devices:
            devices.remove(device)
        return self.advance(now)

    # --- forking --------------------------------------------------------------------------

    def fork_invite(
        self,
        session: str,
        initiator: str,
        to: str,
        legs: list[str],
        *,
        now: int,
        expires_at: int | None = None,
    ) -> list[RelayEmission]:
        """Deliver an invite to an explicit set of legs (§12.7)."""
        a = self.attempts[session] = Attempt(session, initiator, to, expires_at)
        out: list[RelayEmission] = []
        for device in legs:
            a.legs[device] = Leg(device)
            out.append(Deliver(device, "invite"))
        return out

    def leg_expired(self, session: str, leg: str, *, now: int) -> list[RelayEmission]:
        """The relay's own per-leg delivery expiry: the leg ends as ``endpoint.unavailable``."""
        a = self.attempts.get(session)
        if a is None or leg not in a.legs:
            return [Drop("unknown-leg", session)]
        if not self._move(a, a.legs[leg], LegEvent.EXPIRE, LEG_EXPIRED_REASON):
            return [Drop("leg-terminated", session)]
        return self._settle(a)

    # --- messages -------------------------------------------------------------------------

    def receive(self, msg: Mapping[str, Any], *, now: int) -> list[RelayEmission]:
        out = self.advance(now)
        kind = _text(msg, "type")
        session = _text(msg, "session")
        a = self.attempts.get(session)
        if a is not None and kind in _LEG_MESSAGES and _text(msg, "from") in a.legs:
            return out + self._on_leg_message(a, msg)
        if kind == "cancel" and (a is not None or self._held_invite(session)):
            return out + self._on_cancel(a, msg)
        return out + self._route(msg, now)

    def _on_leg_message(self, a: Attempt, msg: Mapping[str, Any]) -> list[RelayEmission]:
        event = _LEG_MESSAGES[_text(msg, "type")]
        leg = a.legs[_text(msg, "from")]
        if not self._move(a, leg, event, _text(msg, "reason") or None):
            return [Drop("leg-terminated", a.session)]
        if event is LegEvent.PROGRESS:
            return [Forward("progress", leg.device, status=_text(msg, "status"), session=a.session)]
        if event is LegEvent.ANSWER:
            if a.outcome is None:
                a.outcome = AttemptOutcome.ANSWERED
            return [Forward("answer", leg.device, session=a.session)]
        return self._settle(a)

    def _on_cancel(self, a: Attempt | None, msg: Mapping[str, Any]) -> list[RelayEmission]:
        """§12.7 rule 3: the cancel goes per leg to every leg still live (or to the one leg
        it names); a still-held invite for the session is simply dropped (§13.3)."""
        session = _text(msg, "session")
        reason = _text(msg, "reason") or None
        out: list[RelayEmission] = []
        if a is not None:
            to = _text(msg, "to")
            targets = [a.legs[to]] if to in a.legs else list(a.legs.values())
            for leg in targets:
                if self._move(a, leg, LegEvent.CANCEL, reason):
                    out.append(Deliver(leg.device, "cancel", reason=reason))
            if a.outcome is None and not a.live_legs():
                a.outcome = AttemptOutcome.CANCELLED
        for h in [h for h in self.held if h.type == "invite" and _text(h.msg, "id") == session]:
            self.held.remove(h)
            out.append(Dequeue(h.to, "invite", "cancelled"))
        return out

    def _route(self, msg: Mapping[str, Any], now: int) -> list[RelayEmission]:
        """Deliver by ``to`` to what is bound now; hold for the known; refuse the unknown."""
        kind = _text(msg, "type")
        to = _text(msg, "to")
        if not to:
            return [Drop("no-route")]
        devices = self._bound_devices(to)
        if devices:
            if kind == "invite":
                a = self._attempt_for(msg)
                for device in devices:
                    a.legs[device] = Leg(device)
            return [Deliver(device, kind) for device in devices]
        if kind == "introduction":  # §19.4: held for anyone, never a routing response
            if sum(1 for h in self.held if h.to == to and h.type == kind) >= (
                self.introduction_inbox_limit
            ):
                return [Drop("inbox-full")]
            return self._hold(to, msg, now)
        if to in self.known_identities or to in self.device_identity:
            return self._hold(to, msg, now)
        return [
            Send(
                "error",
                _text(msg, "from"),
                reason="transport.unknown-recipient",
                in_reply_to=_text(msg, "id"),
            )
        ]

    # --- helpers --------------------------------------------------------------------------

    def _bound_devices(self, to: str) -> list[str]:
        if to in self.device_identity:  # a device DID
            return [to] if to in self.bound.get(self.device_identity[to], []) else []
        return list(self.bound.get(to, []))

    def _hold(self, to: str, msg: Mapping[str, Any], now: int) -> list[RelayEmission]:
        held_until = now + self.offline_retention_s
        expires_at = msg.get("expires_at")
        if isinstance(expires_at, int) and not isinstance(expires_at, bool):
            held_until = min(held_until, expires_at)
        self.held.append(_Held(next(self._seq), to, msg, held_until))
        return [Queue(to, _text(msg, "type"))]

    def _held_invite(self, session: str) -> bool:
        return any(h.type == "invite" and _text(h.msg, "id") == session for h in self.held)

    def _attempt_for(self, invite: Mapping[str, Any]) -> Attempt:
        session = _text(invite, "id")
        a = self.attempts.get(session)
        if a is None:
            expires_at = invite.get("expires_at")
            a = self.attempts[session] = Attempt(
                session,
                _text(invite, "from"),
                _text(invite, "to"),
                expires_at if isinstance(expires_at, int) else None,
            )
        return a

    def _move(self, a: Attempt, leg: Leg, event: LegEvent, reason: str | None) -> bool:
        """Apply :data:`LEG_TRANSITIONS`; ``False`` when the leg had already terminated."""
        nxt = LEG_TRANSITIONS.get((leg.state, event))
        if nxt is None:
            return False
        leg.state = nxt
        if nxt in (LegState.REJECTED, LegState.EXPIRED):
            leg.reason = reason or "session.failed"
            leg.terminated = next(self._seq)
        return True

    def _settle(self, a: Attempt) -> list[RelayEmission]:
        """§12.7 rule 6: when the last live leg ends unanswered, forward one reject."""
        if a.outcome is not None or a.live_legs():
            return []
        ended = [leg for leg in a.legs.values() if leg.reason is not None]
        if not ended:
            a.outcome = AttemptOutcome.CANCELLED
            return []
        best = min(ended, key=lambda leg: (_reason_rank(leg.reason or ""), leg.terminated or 0))
        a.outcome = AttemptOutcome.REJECTED
        return [Forward("reject", best.device, reason=best.reason, session=a.session)]
