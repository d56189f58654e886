"""The endpoint session engine: §12.4 state machines as a sans-I/O transition table.

One :class:`EndpointEngine` holds every session of one device — each in the initiator
(caller) or responder (callee leg) role — plus the device's first-contact state (§19.4).
Events go in (a verified message, a local user/policy action, or the clock); emissions come
out (messages to build and sign, timer, media and UI instructions). Nothing here touches a
socket, a task or the wall clock: every method takes ``now`` (integer seconds) and timers
fire only from :meth:`EndpointEngine.advance`.

How to read it:

* :data:`TRANSITIONS` is the §12.4 table: ``(role, state, trigger) → handler``. ``ANY`` in
  the role or state position is a wildcard, looked up after the exact row. An event with no
  row is *invalid for the state*: a received message is answered with ``error
  session.invalid-state`` (or dropped once the session has ENDED), a local action is
  :class:`Refused`.
* Handlers are the small functions above the table. Each one sets the next state and
  returns its emissions in the house order (timer stops → sends → media → UI → timer
  starts, §12.4; a session that ends stops media before surfacing ``ended``).
* Session-independent decisions that involve *several* sessions — glare (§12.6) and the
  first-contact trust policy (§19.4) — are made in :meth:`EndpointEngine.receive` before a
  row is dispatched, and turned into their own triggers (``GLARE_LOST``, ``GLARE_WON``,
  ``INVITE_REFUSED``) so they, too, are rows of the table.

``ENDING`` is collapsed into ``ENDED``: local teardown is synchronous here (spec-gap 13).
Peer messages never raise; only programmer misuse does (:class:`EngineMisuseError`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final, TypeAlias

from dsip.core.registry import effective_answered_by, effective_status
from dsip.errors import ConfigError, DsipError

__all__ = [
    "ANY",
    "TRANSITIONS",
    "ContactBook",
    "ContactsView",
    "Drop",
    "Emission",
    "EndpointEngine",
    "EngineMisuseError",
    "FirstContactPolicy",
    "Info",
    "Media",
    "Refused",
    "Role",
    "Send",
    "Session",
    "SessionState",
    "SessionView",
    "TimerConfig",
    "TimerFire",
    "TimerName",
    "TimerStart",
    "TimerStop",
    "Trigger",
    "Ui",
    "UpdateDirection",
    "UpdateView",
]


class EngineMisuseError(DsipError):
    """The caller used the engine wrongly (empty ids, impossible arguments). Never remote."""

    default_code = "engine-misuse"
    default_reason = "x-dsip.engine-misuse"
    default_remote = False


# --- states, triggers, timers ---------------------------------------------------------


class Role(StrEnum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class SessionState(StrEnum):
    """§12.4 states of both roles (ENDING collapsed into ENDED, spec-gap 13)."""

    IDLE = "IDLE"
    INVITING = "INVITING"  # initiator: invite sent, nothing heard
    PROCEEDING = "PROCEEDING"  # initiator: at least one progress
    OFFERED = "OFFERED"  # responder: invite admitted, not alerting yet
    ALERTING = "ALERTING"  # responder: user alerted, progress sent
    ACTIVE = "ACTIVE"  # both: answer sent/accepted; RENEGOTIATING is a sub-state (§12.8)
    ENDED = "ENDED"


class TimerName(StrEnum):
    """§12.9 timers."""

    T_ESTABLISH = "T-Establish"
    T_RING = "T-Ring"
    T_QUEUE = "T-Queue"
    T_RING_LOCAL = "T-Ring-Local"


class Trigger(StrEnum):
    """What happened to a session: a local action, an engine decision, a message, a timer."""

    # local user / policy actions
    PLACE_CALL = "local:place_call"
    CANCEL = "local:cancel"
    HANGUP = "local:hangup"
    ALERT = "local:alert"
    AUTO_REJECT = "local:auto_reject"
    ACCEPT = "local:accept"
    DECLINE = "local:decline"
    UPDATE = "local:update"
    ANSWER_UPDATE = "local:answer_update"
    REJECT_UPDATE = "local:reject_update"
    INFO = "local:info"
    # engine decisions spanning several sessions
    GLARE_LOST = "engine:glare_lost"  # our outbound invite lost the §12.6 comparison
    GLARE_WON = "engine:glare_won"  # the inbound invite lost it
    INVITE_REFUSED = "engine:invite_refused"  # §19.4 first-contact policy refused it
    # verified messages
    RECV_INVITE = "recv:invite"
    RECV_PROGRESS = "recv:progress"
    RECV_ANSWER = "recv:answer"
    RECV_REJECT = "recv:reject"
    RECV_CANCEL = "recv:cancel"
    RECV_UPDATE = "recv:update"
    RECV_INFO = "recv:info"
    RECV_BYE = "recv:bye"
    RECV_ERROR = "recv:error"
    # timers
    T_ESTABLISH_EXPIRED = "timer:T-Establish"
    T_RING_EXPIRED = "timer:T-Ring"
    T_QUEUE_EXPIRED = "timer:T-Queue"
    T_RING_LOCAL_EXPIRED = "timer:T-Ring-Local"

    @property
    def received(self) -> bool:
        return self.value.startswith("recv:")

    @property
    def local(self) -> bool:
        return self.value.startswith("local:")


_TIMER_TRIGGER: Final[Mapping[TimerName, Trigger]] = {
    TimerName.T_ESTABLISH: Trigger.T_ESTABLISH_EXPIRED,
    TimerName.T_RING: Trigger.T_RING_EXPIRED,
    TimerName.T_QUEUE: Trigger.T_QUEUE_EXPIRED,
    TimerName.T_RING_LOCAL: Trigger.T_RING_LOCAL_EXPIRED,
}

# Session-scoped message types (§12.2) and the trigger each one raises.
_RECEIVED: Final[Mapping[str, Trigger]] = {
    "progress": Trigger.RECV_PROGRESS,
    "answer": Trigger.RECV_ANSWER,
    "reject": Trigger.RECV_REJECT,
    "cancel": Trigger.RECV_CANCEL,
    "update": Trigger.RECV_UPDATE,
    "info": Trigger.RECV_INFO,
    "bye": Trigger.RECV_BYE,
}


# --- emissions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """A message to build, sign and send. Only the fields the state machine decides are
    here; the signing layer adds ``dsip``, ``from``, ``issued_at``/``expires_at``, a fresh
    ``id`` when :attr:`id` is ``None``, and the media offer/selection or ``info.data``.
    ``session`` is the §12.2 session reference (for ``invite`` it is the invite's own id).
    """

    type: str
    to: str
    session: str | None = None
    reason: str | None = None
    status: str | None = None
    ring_timeout: int | None = None
    answered_by: str | None = None
    in_reply_to: str | None = None
    id: str | None = None
    about: str | None = None
    purpose: str | None = None
    contact_token: str | None = None
    scope: tuple[str, ...] | None = None
    valid_until: int | None = None

    def to_payload_fields(self) -> dict[str, Any]:
        """The payload fields this emission fixes, ready to merge into the message body."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def msg(self) -> dict[str, Any]:
        return self.to_payload_fields()


@dataclass(frozen=True)
class TimerStart:
    """Start (or restart: no stop precedes a restart) a §12.9 timer."""

    name: TimerName
    seconds: int
    session: str | None = None


@dataclass(frozen=True)
class TimerStop:
    """Stop a running timer (emitted only for a timer that was running)."""

    name: TimerName
    session: str | None = None


@dataclass(frozen=True)
class TimerFire:
    """A timer expired; the emissions of its transition follow."""

    name: TimerName
    session: str | None = None


@dataclass(frozen=True)
class Media:
    """Media-layer instruction: ``start`` | ``stop`` | ``apply_update`` (§14.1, §12.8)."""

    action: str
    session: str | None = None


@dataclass(frozen=True)
class Ui:
    """Something to surface to the user: ``kind`` plus its fields (e.g. ``reason``)."""

    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    session: str | None = None


@dataclass(frozen=True)
class Info:
    """An ``info`` whose ``about`` names a binding we implement: hand it over (§12.12)."""

    about: str
    session: str | None = None


@dataclass(frozen=True)
class Refused:
    """A local action the engine refused (``update-pending``, ``invalid-state``, ...)."""

    reason: str
    session: str | None = None


@dataclass(frozen=True)
class Drop:
    """A received message silently ignored, with why (``ended-session``, ...)."""

    reason: str
    session: str | None = None


Emission: TypeAlias = Send | TimerStart | TimerStop | TimerFire | Media | Ui | Info | Refused | Drop


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class TimerConfig:
    """§12.9 timer values. Defaults are the spec defaults; overrides must stay in bounds."""

    t_establish: int = 15
    t_ring: int = 120
    t_ring_local: int = 120
    ring_min: int = 30
    ring_max: int = 300
    queue_cap: int = 1800  # §12.10 core constant
    requeue_limit: int = 3  # §12.10 RECOMMENDED consecutive-queued limit

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("t_establish", self.t_establish, 5, 60),
            ("t_ring", self.t_ring, self.ring_min, self.ring_max),
            ("t_ring_local", self.t_ring_local, self.ring_min, self.ring_max),
            ("queue_cap", self.queue_cap, 1, 1800),
        ):
            if not low <= value <= high:
                raise ConfigError(f"{name}={value} is outside the §12.9 bounds {low}–{high}")
        if self.requeue_limit < 1:
            raise ConfigError("requeue_limit must be at least 1")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TimerConfig:
        known = {k: int(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def clamp_ring(self, seconds: int) -> int:
        """A ``ring_timeout`` clamped to the T-Ring / T-Ring-Local bounds (§12.9)."""
        return max(self.ring_min, min(self.ring_max, seconds))


@dataclass(frozen=True)
class FirstContactPolicy:
    """§19.4 local trust policy: require a grant (or allow-listing) before ringing."""

    first_contact_required: bool = False
    allow: frozenset[str] = frozenset()


# --- per-session record -----------------------------------------------------------------


class UpdateDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class EndCause(StrEnum):
    """Why a session ENDED; decides the ``bye`` reason for a late answer (§12.4, §12.5)."""

    WITHDRAWN = "withdrawn"  # a cancel crossed (ours: user, timeout, glare; or the peer's)
    REJECTED = "rejected"  # the attempt ended by reject (spec-gap 12)
    TORN_DOWN = "torn-down"  # ended by bye after ACTIVE


@dataclass(frozen=True)
class UpdateView:
    id: str
    direction: UpdateDirection


@dataclass(frozen=True)
class SessionView:
    """What an observer may rely on about one session."""

    role: Role
    state: SessionState
    renegotiating: bool
    outstanding_update: UpdateView | None


@dataclass
class _Timer:
    deadline: int
    seq: int  # start order, the tie-break among equal deadlines


@dataclass
class Session:
    """One session as this device sees it. Mutated only by the transition handlers."""

    id: str
    role: Role
    state: SessionState = SessionState.IDLE
    target: str = ""  # the invite's `to` (initiator: whom we called)
    peer: str = ""  # the device we address: the inviter, or the leg whose answer we accepted
    peer_identity: str = ""  # responder: identity that signed the invite (§12.11 check)
    expires_at: int | None = None  # responder: the invite's delivery validity (§12.9)
    update: UpdateView | None = None  # the one outstanding update, either direction (§12.8)
    media: bool = False  # media layer told to start and not yet told to stop
    end_cause: EndCause | None = None
    peer_spoke_after_answer: bool = False  # responder: tells crossed from late cancel (§12.5)
    queued_in_a_row: int = 0  # initiator: consecutive `queued` progress (§12.10)
    timers: dict[TimerName, _Timer] = field(default_factory=dict)

    @property
    def renegotiating(self) -> bool:
        """§12.8: the RENEGOTIATING sub-state is the *sender's* view of its own update."""
        return self.update is not None and self.update.direction is UpdateDirection.OUTBOUND

    def view(self) -> SessionView:
        return SessionView(self.role, self.state, self.renegotiating, self.update)

    # timer bookkeeping; each returns the emission it implies
    def start_timer(self, name: TimerName, seconds: int, step: _Step) -> TimerStart:
        self.timers[name] = _Timer(step.now + seconds, next(step.seq))
        return TimerStart(name, seconds, self.id)

    def stop_timer(self, name: TimerName) -> list[Emission]:
        if self.timers.pop(name, None) is None:
            return []
        return [TimerStop(name, self.id)]

    def stop_all_timers(self) -> list[Emission]:
        out: list[Emission] = []
        for name in sorted(self.timers, key=lambda n: self.timers[n].seq):
            out += self.stop_timer(name)
        return out


@dataclass(frozen=True)
class Event:
    """One event for one session. ``msg`` is the received payload; the other fields carry
    the arguments of local actions."""

    trigger: Trigger
    msg: Mapping[str, Any] = field(default_factory=dict)
    to: str = ""
    reason: str = ""
    answered_by: str | None = None
    ring_timeout: int | None = None
    update_id: str = ""
    in_reply_to: str = ""
    about: str | None = None


@dataclass
class _Step:
    """What a handler may consult besides its session: the clock and the configuration."""

    now: int
    config: TimerConfig
    seq: Iterator[int]
    info_bindings: frozenset[str]


# --- small helpers ----------------------------------------------------------------------


def _text(msg: Mapping[str, Any], key: str) -> str:
    value = msg.get(key)
    return value if isinstance(value, str) else ""


def _integer(msg: Mapping[str, Any], key: str) -> int | None:
    value = msg.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error(msg: Mapping[str, Any], session: str, reason: str) -> Send:
    """A session-scoped ``error`` answering ``msg`` (§12.4 "any | invalid for state")."""
    return Send(
        "error", _text(msg, "from"), session=session, reason=reason, in_reply_to=_text(msg, "id")
    )


def _end(
    s: Session,
    cause: EndCause,
    *,
    sends: Iterable[Emission] = (),
    ui: Iterable[Ui] = (),
) -> list[Emission]:
    """Move ``s`` to ENDED: stop every timer, send, stop media, then surface (§12.4)."""
    out = s.stop_all_timers()
    out += sends
    if s.media:
        out.append(Media("stop", s.id))
        s.media = False
    out += ui
    s.state = SessionState.ENDED
    s.end_cause = cause
    s.update = None  # §12.8 rule 6: bye (or any end) discards a pending update
    return out


def _ended(s: Session, reason: str) -> Ui:
    return Ui("ended", {"reason": reason}, s.id)


# --- transition handlers: initiator (§12.4) ----------------------------------------------

Handler: TypeAlias = Callable[[Session, Event, _Step], list[Emission]]


def _place_call(s: Session, ev: Event, step: _Step) -> list[Emission]:
    s.target = ev.to
    s.state = SessionState.INVITING
    return [
        Send("invite", ev.to, session=s.id),
        s.start_timer(TimerName.T_ESTABLISH, step.config.t_establish, step),
    ]


def _on_progress(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.9/§12.10 (spec-gap 4, 11): adjust T-Ring / T-Queue by the progress status."""
    cfg = step.config
    status = effective_status(_text(ev.msg, "status"))
    out = s.stop_timer(TimerName.T_ESTABLISH)
    out.append(Ui("progress", {"status": status}, s.id))
    s.state = SessionState.PROCEEDING
    if status == "ringing":
        s.queued_in_a_row = 0
        out += s.stop_timer(TimerName.T_QUEUE)
        ring_timeout = _integer(ev.msg, "ring_timeout")
        if ring_timeout is not None:  # (re)start at the advertised value, clamped
            out.append(s.start_timer(TimerName.T_RING, cfg.clamp_ring(ring_timeout), step))
        elif TimerName.T_RING not in s.timers:  # repeated ringing does not extend
            out.append(s.start_timer(TimerName.T_RING, cfg.t_ring, step))
    elif status == "queued":
        s.queued_in_a_row += 1
        if s.queued_in_a_row > cfg.requeue_limit:  # treated as T-Queue expiry (spec-gap 11)
            return out + _withdraw(s, "session.timeout", surface=True)
        out += s.stop_timer(TimerName.T_RING)  # T-Queue replaces T-Ring
        asked = _integer(ev.msg, "queue_timeout")
        seconds = cfg.queue_cap if asked is None or asked <= 0 else min(asked, cfg.queue_cap)
        out.append(s.start_timer(TimerName.T_QUEUE, seconds, step))
    elif TimerName.T_RING not in s.timers and TimerName.T_QUEUE not in s.timers:
        # trying / forwarded: PROCEEDING is always bounded (spec-gap 4)
        out.append(s.start_timer(TimerName.T_RING, cfg.t_ring, step))
    return out


def _on_answer(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """First answer accepted (§12.7 rule 2): media starts; §12.7 rule 3 cancel if the invite
    was identity-addressed (the answering device is not the invite's `to`, spec-gap 5)."""
    if _text(ev.msg, "in_reply_to"):  # an update reply before ACTIVE makes no sense
        return [_error(ev.msg, s.id, "session.invalid-state")]
    leg = _text(ev.msg, "from")
    out = s.stop_all_timers()
    s.state = SessionState.ACTIVE
    s.peer = leg
    s.media = True
    out.append(Media("start", s.id))
    answered_by = effective_answered_by(_text(ev.msg, "answered_by"))
    out.append(Ui("answered", {"answered_by": answered_by}, s.id))
    if leg != s.target:
        out.append(Send("cancel", s.target, session=s.id, reason="session.answered-elsewhere"))
    return out


def _on_attempt_rejected(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """A reject is the attempt outcome (§12.7 rule 6: the relay signals only the last)."""
    if _text(ev.msg, "in_reply_to"):
        return [_error(ev.msg, s.id, "session.invalid-state")]
    reason = _text(ev.msg, "reason") or "session.failed"
    return _end(s, EndCause.REJECTED, ui=[_ended(s, reason)])


def _withdraw(s: Session, reason: str, *, surface: bool) -> list[Emission]:
    """The initiator withdraws its invite with ``cancel`` to the invite's `to` (§12.11)."""
    cancel = Send("cancel", s.target, session=s.id, reason=reason)
    return _end(s, EndCause.WITHDRAWN, sends=[cancel], ui=[_ended(s, reason)] if surface else [])


def _cancel_by_user(s: Session, ev: Event, step: _Step) -> list[Emission]:
    return _withdraw(s, "user.cancelled", surface=False)


def _cancel_on_timeout(s: Session, ev: Event, step: _Step) -> list[Emission]:
    return _withdraw(s, "session.timeout", surface=True)


def _cancel_on_glare(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.6 (spec-gap 2): the loser withdraws its own invite with ``cancel session.glare``."""
    return _withdraw(s, "session.glare", surface=True)


def _on_answer_while_active(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """An update reply, or a late answer from another leg: ``bye session.already-answered``
    to that leg only (§12.7 rule 4). A second answer from the accepted leg is invalid."""
    if _text(ev.msg, "in_reply_to"):
        return _on_update_reply(s, ev, step)
    leg = _text(ev.msg, "from")
    if leg == s.peer:
        return [_error(ev.msg, s.id, "session.invalid-state")]
    return [Send("bye", leg, session=s.id, reason="session.already-answered")]


def _on_late_answer(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """An answer after the attempt ended never resurrects it (§12.5 rule 3, spec-gap 12)."""
    leg = _text(ev.msg, "from")
    if _text(ev.msg, "in_reply_to"):
        return [Drop("ended-session", s.id)]
    if s.end_cause is EndCause.WITHDRAWN:
        return [Send("bye", leg, session=s.id, reason="session.cancelled")]
    if s.end_cause is EndCause.REJECTED:
        return [Send("bye", leg, session=s.id, reason="session.failed")]
    if leg != s.peer:  # torn down after ACTIVE: still exactly one answer per invite
        return [Send("bye", leg, session=s.id, reason="session.already-answered")]
    return [Drop("ended-session", s.id)]


# --- transition handlers: responder (§12.4) ----------------------------------------------


def _offer(s: Session, ev: Event, step: _Step) -> list[Emission]:
    s.state = SessionState.OFFERED
    return [Ui("offered", {}, s.id)]


def _refuse_first_contact(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§19.4: no live grant and not allow-listed → reject, never alert."""
    reject = Send("reject", s.peer, session=s.id, reason="policy.first-contact-required")
    return _end(s, EndCause.REJECTED, sends=[reject])


def _reject_glare_loser(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.6: our invite won; the inbound one is answered ``reject session.glare``."""
    reject = Send("reject", s.peer, session=s.id, reason="session.glare")
    return _end(s, EndCause.REJECTED, sends=[reject])


def _alert(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.9: the invite's ``expires_at`` bounds delivery up to the moment alerting begins;
    from then on T-Ring-Local governs."""
    if s.expires_at is not None and step.now > s.expires_at:
        expired = Send("reject", s.peer, session=s.id, reason="session.expired")
        return _end(s, EndCause.REJECTED, sends=[expired])
    ring_timeout = None if ev.ring_timeout is None else step.config.clamp_ring(ev.ring_timeout)
    s.state = SessionState.ALERTING
    seconds = step.config.t_ring_local if ring_timeout is None else ring_timeout
    return [
        Send("progress", s.peer, session=s.id, status="ringing", ring_timeout=ring_timeout),
        s.start_timer(TimerName.T_RING_LOCAL, seconds, step),
    ]


def _auto_reject(s: Session, ev: Event, step: _Step) -> list[Emission]:
    reject = Send("reject", s.peer, session=s.id, reason=ev.reason)
    return _end(s, EndCause.REJECTED, sends=[reject])


def _on_cancel_before_alerting(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """OFFERED + cancel: discard; the user never saw it, so no missed call."""
    return _end(s, EndCause.WITHDRAWN, ui=[_ended(s, _text(ev.msg, "reason"))])


def _accept(s: Session, ev: Event, step: _Step) -> list[Emission]:
    out = s.stop_timer(TimerName.T_RING_LOCAL)
    out.append(Send("answer", s.peer, session=s.id, answered_by=ev.answered_by or "user"))
    out.append(Media("start", s.id))
    s.media = True
    s.state = SessionState.ACTIVE
    return out


def _decline(s: Session, ev: Event, step: _Step) -> list[Emission]:
    reject = Send("reject", s.peer, session=s.id, reason="user.declined")
    return _end(s, EndCause.REJECTED, sends=[reject])


# Cancels that are not a missed call: the call was taken elsewhere (§12.11), or it continues
# in the other direction (§12.6).
_NOT_MISSED: Final = frozenset({"session.answered-elsewhere", "session.glare"})


def _on_cancel_while_alerting(s: Session, ev: Event, step: _Step) -> list[Emission]:
    reason = _text(ev.msg, "reason")
    ui = [] if reason in _NOT_MISSED else [Ui("missed_call", {}, s.id)]
    return _end(s, EndCause.WITHDRAWN, ui=[*ui, _ended(s, reason)])


def _ring_local_expired(s: Session, ev: Event, step: _Step) -> list[Emission]:
    reject = Send("reject", s.peer, session=s.id, reason="user.no-answer")
    return _end(s, EndCause.REJECTED, sends=[reject], ui=[_ended(s, "user.no-answer")])


def _on_cancel_while_active(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.5 rule 2 (spec-gap 1): a cancel that crossed our answer ends the session without
    error; once the initiator has spoken post-answer it is late → invalid-state. A per-leg
    ``session.answered-elsewhere`` reaching the answering leg was misrouted, never crossed."""
    reason = _text(ev.msg, "reason")
    if s.peer_spoke_after_answer or reason == "session.answered-elsewhere":
        return [_error(ev.msg, s.id, "session.invalid-state")]
    return _end(s, EndCause.WITHDRAWN, ui=[_ended(s, reason)])


# --- transition handlers: ACTIVE, both roles (§12.4, §12.8, §12.12) ---------------------


def _hang_up(s: Session, ev: Event, step: _Step) -> list[Emission]:
    bye = Send("bye", s.peer, session=s.id, reason=ev.reason or "user.hangup")
    return _end(s, EndCause.TORN_DOWN, sends=[bye])


def _on_bye(s: Session, ev: Event, step: _Step) -> list[Emission]:
    reason = _text(ev.msg, "reason") or "user.hangup"
    return _end(s, EndCause.TORN_DOWN, ui=[_ended(s, reason)])


def _send_update(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.8 rule 2: one outstanding update per session, across both directions."""
    if s.update is not None:
        return [Refused("update-pending", s.id)]
    s.update = UpdateView(ev.update_id, UpdateDirection.OUTBOUND)
    return [Send("update", s.peer, session=s.id, id=ev.update_id, answered_by=ev.answered_by)]


def _on_update(s: Session, ev: Event, step: _Step) -> list[Emission]:
    update_id = _text(ev.msg, "id")
    current = s.update
    if current is None:
        s.update = UpdateView(update_id, UpdateDirection.INBOUND)
        return [Ui("update_offered", {}, s.id)]
    if current.direction is UpdateDirection.INBOUND:
        # rule 4 (spec-gap 3): a second update from the same sender; process neither
        s.update = None
        return [_error(ev.msg, s.id, "session.update-pending")]
    # rule 3: both directions outstanding → the smaller id proceeds (glare rule, §12.6)
    glare_reject = Send(
        "reject", s.peer, session=s.id, reason="session.glare", in_reply_to=update_id
    )
    ours_lost = Ui("update_rejected", {"reason": "session.glare"}, s.id)
    if update_id < current.id:
        s.update = UpdateView(update_id, UpdateDirection.INBOUND)
        return [ours_lost, Ui("update_offered", {}, s.id)]
    if update_id > current.id:
        return [glare_reject]
    s.update = None  # equal ids (pathological): neither proceeds
    return [glare_reject, ours_lost]


def _on_update_reply(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """``answer``/``reject`` naming our outstanding update via ``in_reply_to`` (§12.8 rule 1).
    A reply to anything else (an update that lost glare, a duplicate) is stale."""
    current = s.update
    reply_to = _text(ev.msg, "in_reply_to")
    if (
        current is None
        or current.direction is not UpdateDirection.OUTBOUND
        or current.id != reply_to
    ):
        return [Drop("stale-update-reply", s.id)]
    s.update = None
    if ev.trigger is Trigger.RECV_ANSWER:
        return [Media("apply_update", s.id)]
    # rule 5: a rejected update leaves the prior negotiated state; never ends the session
    return [Ui("update_rejected", {"reason": _text(ev.msg, "reason")}, s.id)]


def _on_reply_while_active(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """Responder: an ``answer``; both roles: a ``reject`` — valid in ACTIVE only as update
    replies."""
    if _text(ev.msg, "in_reply_to"):
        return _on_update_reply(s, ev, step)
    return [_error(ev.msg, s.id, "session.invalid-state")]


def _inbound_update_matches(s: Session, ev: Event) -> bool:
    return (
        s.update is not None
        and s.update.direction is UpdateDirection.INBOUND
        and s.update.id == ev.in_reply_to
    )


def _answer_update(s: Session, ev: Event, step: _Step) -> list[Emission]:
    if not _inbound_update_matches(s, ev):
        return [Refused("no-pending-update", s.id)]
    s.update = None
    answer = Send(
        "answer",
        s.peer,
        session=s.id,
        answered_by=ev.answered_by or "user",
        in_reply_to=ev.in_reply_to,
    )
    return [answer, Media("apply_update", s.id)]


def _reject_update(s: Session, ev: Event, step: _Step) -> list[Emission]:
    if not _inbound_update_matches(s, ev):
        return [Refused("no-pending-update", s.id)]
    s.update = None
    return [Send("reject", s.peer, session=s.id, reason=ev.reason, in_reply_to=ev.in_reply_to)]


def _send_info(s: Session, ev: Event, step: _Step) -> list[Emission]:
    return [Send("info", s.peer, session=s.id, about=ev.about)]


def _on_info(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """§12.12: handed to the binding named by ``about``; an unknown ``about`` is ignored."""
    about = _text(ev.msg, "about")
    if about in step.info_bindings:
        return [Info(about, s.id)]
    return [Drop("unknown-about", s.id)]


def _surface_error(s: Session, ev: Event, step: _Step) -> list[Emission]:
    """A received ``error`` is surfaced, changes no state, and is never answered."""
    return [Ui("error", {"reason": _text(ev.msg, "reason")}, s.id)]


# --- the table ------------------------------------------------------------------------

ANY: Final = None
_I, _R = Role.INITIATOR, Role.RESPONDER
_S, _T = SessionState, Trigger

#: §12.4 as a table: (role, state, trigger) → handler. Rows are grouped as in the spec;
#: the comment names the state the handler normally moves to.
TRANSITIONS: Final[Mapping[tuple[Role | None, SessionState | None, Trigger], Handler]] = {
    # -- initiator ------------------------------------------------------------------------
    (_I, _S.IDLE, _T.PLACE_CALL): _place_call,  # → INVITING
    (_I, _S.INVITING, _T.RECV_PROGRESS): _on_progress,  # → PROCEEDING
    (_I, _S.INVITING, _T.RECV_ANSWER): _on_answer,  # → ACTIVE
    (_I, _S.INVITING, _T.RECV_REJECT): _on_attempt_rejected,  # → ENDED
    (_I, _S.INVITING, _T.CANCEL): _cancel_by_user,  # → ENDED
    (_I, _S.INVITING, _T.T_ESTABLISH_EXPIRED): _cancel_on_timeout,  # → ENDED
    (_I, _S.INVITING, _T.GLARE_LOST): _cancel_on_glare,  # → ENDED
    (_I, _S.PROCEEDING, _T.RECV_PROGRESS): _on_progress,  # → PROCEEDING (| ENDED, requeues)
    (_I, _S.PROCEEDING, _T.RECV_ANSWER): _on_answer,  # → ACTIVE
    (_I, _S.PROCEEDING, _T.RECV_REJECT): _on_attempt_rejected,  # → ENDED
    (_I, _S.PROCEEDING, _T.CANCEL): _cancel_by_user,  # → ENDED
    (_I, _S.PROCEEDING, _T.T_RING_EXPIRED): _cancel_on_timeout,  # → ENDED
    (_I, _S.PROCEEDING, _T.T_QUEUE_EXPIRED): _cancel_on_timeout,  # → ENDED
    (_I, _S.PROCEEDING, _T.GLARE_LOST): _cancel_on_glare,  # → ENDED
    (_I, _S.ACTIVE, _T.RECV_ANSWER): _on_answer_while_active,  # ACTIVE
    (_I, _S.ENDED, _T.RECV_ANSWER): _on_late_answer,  # ENDED
    # -- responder ------------------------------------------------------------------------
    (_R, _S.IDLE, _T.RECV_INVITE): _offer,  # → OFFERED
    (_R, _S.IDLE, _T.INVITE_REFUSED): _refuse_first_contact,  # → ENDED
    (_R, _S.IDLE, _T.GLARE_WON): _reject_glare_loser,  # → ENDED
    (_R, _S.OFFERED, _T.ALERT): _alert,  # → ALERTING (| ENDED, invite expired)
    (_R, _S.OFFERED, _T.AUTO_REJECT): _auto_reject,  # → ENDED
    (_R, _S.OFFERED, _T.RECV_CANCEL): _on_cancel_before_alerting,  # → ENDED
    (_R, _S.ALERTING, _T.ACCEPT): _accept,  # → ACTIVE
    (_R, _S.ALERTING, _T.DECLINE): _decline,  # → ENDED
    (_R, _S.ALERTING, _T.RECV_CANCEL): _on_cancel_while_alerting,  # → ENDED
    (_R, _S.ALERTING, _T.T_RING_LOCAL_EXPIRED): _ring_local_expired,  # → ENDED
    (_R, _S.ACTIVE, _T.RECV_CANCEL): _on_cancel_while_active,  # → ENDED | ACTIVE
    (_R, _S.ACTIVE, _T.RECV_ANSWER): _on_reply_while_active,  # ACTIVE
    # -- ACTIVE, both roles -------------------------------------------------------------
    (ANY, _S.ACTIVE, _T.HANGUP): _hang_up,  # → ENDED
    (ANY, _S.ACTIVE, _T.RECV_BYE): _on_bye,  # → ENDED
    (ANY, _S.ACTIVE, _T.RECV_REJECT): _on_reply_while_active,  # ACTIVE
    (ANY, _S.ACTIVE, _T.UPDATE): _send_update,  # ACTIVE (RENEGOTIATING)
    (ANY, _S.ACTIVE, _T.RECV_UPDATE): _on_update,  # ACTIVE
    (ANY, _S.ACTIVE, _T.ANSWER_UPDATE): _answer_update,  # ACTIVE
    (ANY, _S.ACTIVE, _T.REJECT_UPDATE): _reject_update,  # ACTIVE
    (ANY, _S.ACTIVE, _T.INFO): _send_info,  # ACTIVE
    (ANY, _S.ACTIVE, _T.RECV_INFO): _on_info,  # ACTIVE
    # -- any state ----------------------------------------------------------------------
    (ANY, ANY, _T.RECV_ERROR): _surface_error,  # unchanged
}


def _lookup(role: Role, state: SessionState, trigger: Trigger) -> Handler | None:
    for key in ((role, state, trigger), (ANY, state, trigger), (role, ANY, trigger)):
        if key in TRANSITIONS:
            return TRANSITIONS[key]
    return TRANSITIONS.get((ANY, ANY, trigger))


def _no_transition(s: Session, ev: Event) -> list[Emission]:
    """No row: the event is invalid for the state (§12.4 "any | invalid for state")."""
    if ev.trigger.received:
        if s.state is SessionState.ENDED:
            return [Drop("ended-session", s.id)]
        return [_error(ev.msg, s.id, "session.invalid-state")]
    if ev.trigger.local:
        return [
            Refused("ended-session" if s.state is SessionState.ENDED else "invalid-state", s.id)
        ]
    return []  # a timer or engine decision with no row cannot change anything


# --- first contact (§19.4) --------------------------------------------------------------

INVITE_SCOPE: Final = "dsip.invite"
TOKEN_GRANT_VALIDITY_S: Final = 365 * 86_400  # a contact token's auto-grant lives a year


@dataclass(frozen=True)
class ContactGrant:
    """A contact grant, issued by us (grantee = them) or held by us (grantee = us)."""

    id: str
    grantee: str  # identity DID
    grantor: str  # identity DID
    scope: frozenset[str]
    valid_until: int
    introduction: str

    def admits_invite_from(self, identity: str, now: int) -> bool:
        """§19.4 (spec-gap 15): live, scoped for invites, and held by the inviter."""
        return self.grantee == identity and INVITE_SCOPE in self.scope and now <= self.valid_until


@dataclass(frozen=True)
class IntroductionRequest:
    id: str
    device: str  # the sending device (a reject goes back to it)
    identity: str  # the identity asking (a grant is issued to it)
    purpose: str


@dataclass(frozen=True)
class ContactsView:
    """Sorted ids of each first-contact collection."""

    allow: tuple[str, ...]
    grants_issued: tuple[str, ...]
    grants_held: tuple[str, ...]
    requests: tuple[str, ...]
    pending_sent: tuple[str, ...]


class ContactBook:
    """A device's first-contact state: the allow-list, received introductions awaiting a
    decision (the requests surface — never a ring), grants issued and held, introductions
    we sent, and pre-authorised single-use contact tokens (§19.4)."""

    def __init__(self, identity: str, policy: FirstContactPolicy) -> None:
        self.identity = identity
        self.policy = policy
        self.allow: set[str] = set(policy.allow)
        self.requests: dict[str, IntroductionRequest] = {}
        self.seen_introductions: set[str] = set()
        self.grants_issued: dict[str, ContactGrant] = {}
        self.grants_held: dict[str, ContactGrant] = {}
        self.pending_sent: dict[str, str] = {}  # introduction id → to
        self.tokens: dict[str, str] = {}  # contact token → id of the grant it will mint

    def view(self) -> ContactsView:
        return ContactsView(
            allow=tuple(sorted(self.allow)),
            grants_issued=tuple(sorted(self.grants_issued)),
            grants_held=tuple(sorted(self.grants_held)),
            requests=tuple(sorted(self.requests)),
            pending_sent=tuple(sorted(self.pending_sent)),
        )

    def admits_invite(self, identity: str, now: int) -> bool:
        """Whether the §19.4 policy lets an invite from ``identity`` reach OFFERED. A grant
        named by the invite's ``grant`` field is an optimisation: the grantee match below
        finds it too, and a grant named by someone other than its grantee admits nothing."""
        if not self.policy.first_contact_required or identity in self.allow:
            return True
        return any(g.admits_invite_from(identity, now) for g in self.grants_issued.values())

    # received
    def on_introduction(self, msg: Mapping[str, Any], identity: str, now: int) -> list[Emission]:
        intro_id = _text(msg, "id")
        if intro_id in self.seen_introductions:
            return [Drop("duplicate-introduction")]
        self.seen_introductions.add(intro_id)
        token = _text(msg, "contact_token")
        grant_id = self.tokens.pop(token, None) if token else None
        if grant_id is not None:  # single-use token: auto-grant and consume (spec-gap 15)
            surfaced = Ui("introduction_received", {"from": identity, "token": True})
            valid_until = now + TOKEN_GRANT_VALIDITY_S
            return [
                surfaced,
                *self._issue(intro_id, identity, grant_id, (INVITE_SCOPE,), valid_until),
            ]
        request = IntroductionRequest(intro_id, _text(msg, "from"), identity, _text(msg, "purpose"))
        self.requests[intro_id] = request
        return [Ui("introduction_received", {"from": identity})]

    def on_grant(self, msg: Mapping[str, Any], identity: str) -> list[Emission]:
        intro_id = _text(msg, "session")
        if self.pending_sent.pop(intro_id, None) is None:
            return [Drop("unknown-introduction")]
        scope = msg.get("scope")
        grant = ContactGrant(
            id=_text(msg, "id"),
            grantee=self.identity,
            grantor=identity,
            scope=frozenset(x for x in scope if isinstance(x, str))
            if isinstance(scope, list)
            else frozenset(),
            valid_until=_integer(msg, "valid_until") or 0,
            introduction=intro_id,
        )
        self.grants_held[grant.id] = grant
        return [Ui("granted", {"by": identity})]

    def on_reject(self, msg: Mapping[str, Any]) -> list[Emission]:
        self.pending_sent.pop(_text(msg, "session"), None)
        return [Ui("introduction_rejected", {"reason": _text(msg, "reason")})]

    # local
    def introduce(self, intro_id: str, to: str, purpose: str, token: str | None) -> list[Emission]:
        self.pending_sent[intro_id] = to
        return [Send("introduction", to, id=intro_id, purpose=purpose, contact_token=token)]

    def grant(
        self, intro_id: str, grant_id: str, scope: Iterable[str], valid_until: int
    ) -> list[Emission]:
        request = self.requests.pop(intro_id, None)
        if request is None:
            return [Refused("unknown-introduction")]
        return self._issue(intro_id, request.identity, grant_id, tuple(scope), valid_until)

    def reject_introduction(self, intro_id: str, reason: str) -> list[Emission]:
        """Declining is a policy choice; silence (doing nothing) is the default."""
        request = self.requests.pop(intro_id, None)
        if request is None:
            return [Refused("unknown-introduction")]
        return [Send("reject", request.device, session=intro_id, reason=reason)]

    def revoke(self, grant_id: str) -> list[Emission]:
        if self.grants_issued.pop(grant_id, None) is None:
            return [Refused("unknown-grant")]
        return []

    def issue_token(self, token: str, grant_id: str) -> list[Emission]:
        self.tokens[token] = grant_id
        return []

    def _issue(
        self, intro_id: str, grantee: str, grant_id: str, scope: tuple[str, ...], valid_until: int
    ) -> list[Emission]:
        self.grants_issued[grant_id] = ContactGrant(
            grant_id, grantee, self.identity, frozenset(scope), valid_until, intro_id
        )
        return [
            Send(
                "grant",
                grantee,
                session=intro_id,
                id=grant_id,
                scope=scope,
                valid_until=valid_until,
            )
        ]


# --- the engine ---------------------------------------------------------------------------


class EndpointEngine:
    """All sessions and first-contact state of one device (sans-I/O).

    ``directory`` maps device DIDs to the identity DIDs they act for (what delegation
    verification established, §7.4); a DID absent from it stands for itself.
    """

    def __init__(
        self,
        device: str,
        identity: str,
        *,
        directory: Mapping[str, str] | None = None,
        timers: TimerConfig | None = None,
        policy: FirstContactPolicy | None = None,
        info_bindings: Iterable[str] = ("transport:webrtc",),
    ) -> None:
        self.device = device
        self.identity = identity
        self.directory: dict[str, str] = dict(directory or {})
        self.config = timers or TimerConfig()
        self.contacts = ContactBook(identity, policy or FirstContactPolicy())
        self.info_bindings = frozenset(info_bindings)
        self.sessions: dict[str, Session] = {}
        self._seq = itertools.count()

    # --- observation ----------------------------------------------------------------

    def identity_of(self, did: str) -> str:
        return self.directory.get(did, did)

    def session_view(self, session: str) -> SessionView | None:
        s = self.sessions.get(session)
        return None if s is None else s.view()

    def contacts_view(self) -> ContactsView:
        return self.contacts.view()

    def next_deadline(self) -> int | None:
        """The earliest running timer's deadline, or ``None`` (aioquic's ``get_timer``)."""
        deadlines = [t.deadline for s in self.sessions.values() for t in s.timers.values()]
        return min(deadlines, default=None)

    # --- the clock ----------------------------------------------------------------------

    def advance(self, now: int) -> list[Emission]:
        """Fire every timer due at ``now``, in deadline order, ties by start order (§12.9)."""
        out: list[Emission] = []
        while True:
            due = [
                (t.deadline, t.seq, s, name)
                for s in self.sessions.values()
                for name, t in s.timers.items()
                if t.deadline <= now
            ]
            if not due:
                return out
            deadline, _, s, name = min(due, key=lambda d: (d[0], d[1]))
            del s.timers[name]
            out.append(TimerFire(name, s.id))
            out += self._dispatch(s, Event(_TIMER_TRIGGER[name]), deadline)

    # --- local actions: calls -------------------------------------------------------------

    def place_call(self, session: str, to: str, *, now: int) -> list[Emission]:
        """Send an ``invite`` whose id is ``session`` (§12.2) and start T-Establish."""
        _require(session=session, to=to)
        if session in self.sessions:
            return [Refused("duplicate-session", session)]
        s = self.sessions[session] = Session(session, Role.INITIATOR)
        return self._dispatch(s, Event(Trigger.PLACE_CALL, to=to), now)

    def cancel(self, session: str, *, now: int) -> list[Emission]:
        """The user abandons the call before an answer (``cancel user.cancelled``)."""
        return self._local(session, Event(Trigger.CANCEL), now)

    def hangup(self, session: str, *, now: int, reason: str = "user.hangup") -> list[Emission]:
        """``bye`` an ACTIVE session (the media layer passes ``media.failed``, B§8)."""
        return self._local(session, Event(Trigger.HANGUP, reason=reason), now)

    def alert(self, session: str, *, now: int, ring_timeout: int | None = None) -> list[Emission]:
        """Policy admitted the invite: ``progress ringing`` and start T-Ring-Local."""
        return self._local(session, Event(Trigger.ALERT, ring_timeout=ring_timeout), now)

    def auto_reject(self, session: str, reason: str, *, now: int) -> list[Emission]:
        _require(reason=reason)
        return self._local(session, Event(Trigger.AUTO_REJECT, reason=reason), now)

    def accept(self, session: str, *, now: int, answered_by: str = "user") -> list[Emission]:
        return self._local(session, Event(Trigger.ACCEPT, answered_by=answered_by), now)

    def decline(self, session: str, *, now: int) -> list[Emission]:
        return self._local(session, Event(Trigger.DECLINE), now)

    def update(
        self, session: str, update_id: str, *, now: int, answered_by: str | None = None
    ) -> list[Emission]:
        """Send an ``update``; ``update_id`` is its ULID (glare compares it, §12.8 rule 3)."""
        _require(update_id=update_id)
        event = Event(Trigger.UPDATE, update_id=update_id, answered_by=answered_by)
        return self._local(session, event, now)

    def answer_update(
        self, session: str, in_reply_to: str, *, now: int, answered_by: str = "user"
    ) -> list[Emission]:
        event = Event(Trigger.ANSWER_UPDATE, in_reply_to=in_reply_to, answered_by=answered_by)
        return self._local(session, event, now)

    def reject_update(
        self, session: str, in_reply_to: str, reason: str, *, now: int
    ) -> list[Emission]:
        _require(reason=reason)
        event = Event(Trigger.REJECT_UPDATE, in_reply_to=in_reply_to, reason=reason)
        return self._local(session, event, now)

    def send_info(self, session: str, *, now: int, about: str | None = None) -> list[Emission]:
        return self._local(session, Event(Trigger.INFO, about=about), now)

    # --- local actions: first contact (§19.4) -------------------------------------------

    def introduce(
        self, intro_id: str, to: str, purpose: str, *, now: int, contact_token: str | None = None
    ) -> list[Emission]:
        _require(intro_id=intro_id, to=to)
        return self.contacts.introduce(intro_id, to, purpose, contact_token)

    def grant(
        self,
        introduction: str,
        grant_id: str,
        scope: Iterable[str],
        valid_until: int,
        *,
        now: int,
    ) -> list[Emission]:
        _require(grant_id=grant_id)
        return self.contacts.grant(introduction, grant_id, scope, valid_until)

    def reject_introduction(self, introduction: str, reason: str, *, now: int) -> list[Emission]:
        return self.contacts.reject_introduction(introduction, reason)

    def revoke(self, grant_id: str, *, now: int) -> list[Emission]:
        return self.contacts.revoke(grant_id)

    def issue_token(self, token: str, grant_id: str, *, now: int) -> list[Emission]:
        _require(token=token, grant_id=grant_id)
        return self.contacts.issue_token(token, grant_id)

    # --- received messages --------------------------------------------------------------

    def receive(self, msg: Mapping[str, Any], *, now: int) -> list[Emission]:
        """A verified message (signature, replay window and schema already checked)."""
        kind = _text(msg, "type")
        sender = _text(msg, "from")
        if kind == "invite":
            return self._receive_invite(msg, now)
        if kind == "introduction":
            return self.contacts.on_introduction(msg, self.identity_of(sender), now)
        if kind == "grant":
            return self.contacts.on_grant(msg, self.identity_of(sender))
        session = _text(msg, "session")
        if kind == "error":
            s = self.sessions.get(session)
            if s is None:  # never answered, whatever it refers to
                return [Ui("error", {"reason": _text(msg, "reason")}, session or None)]
            return self._dispatch(s, Event(Trigger.RECV_ERROR, msg=msg), now)
        if kind == "reject" and session in self.contacts.pending_sent:
            return self.contacts.on_reject(msg)
        trigger = _RECEIVED.get(kind)
        if trigger is None:
            return [Drop("unsupported-type")]
        s = self.sessions.get(session)
        if s is None:  # §12.2
            return [_error(msg, session, "session.unknown-session")]
        if s.role is Role.RESPONDER and self.identity_of(sender) != s.peer_identity:
            # §12.11: only the inviting identity may act on its session
            return [Drop("not-party", s.id)]
        return self._dispatch(s, Event(trigger, msg=msg), now)

    def _receive_invite(self, msg: Mapping[str, Any], now: int) -> list[Emission]:
        session = _text(msg, "id")
        sender = _text(msg, "from")
        sender_identity = self.identity_of(sender)
        rival = self._glare_rival(sender, sender_identity)
        existing = self.sessions.get(session)
        if existing is not None:
            if self._is_rival(existing, sender, sender_identity):
                # §12.6 equal ids: both invites fail; either side MAY retry after 1–4 s
                out = self._dispatch(existing, Event(Trigger.GLARE_LOST), now)
                reject = Send("reject", sender, session=session, reason="session.glare")
                return [*out, reject, Ui("glare_retry", {}, session)]
            return [Drop("duplicate-session", session)]
        expires_at = _integer(msg, "expires_at")
        s = Session(
            session,
            Role.RESPONDER,
            target=_text(msg, "to"),
            peer=sender,
            peer_identity=sender_identity,
            expires_at=expires_at,
        )
        self.sessions[session] = s
        if not self.contacts.admits_invite(sender_identity, now):
            return self._dispatch(s, Event(Trigger.INVITE_REFUSED, msg=msg), now)
        if rival is None:
            return self._dispatch(s, Event(Trigger.RECV_INVITE, msg=msg), now)
        if session < rival.id:  # §12.6: the smaller ULID wins; ours lost
            out = self._dispatch(rival, Event(Trigger.GLARE_LOST), now)
            return out + self._dispatch(s, Event(Trigger.RECV_INVITE, msg=msg), now)
        return self._dispatch(s, Event(Trigger.GLARE_WON, msg=msg), now)

    def _glare_rival(self, sender: str, sender_identity: str) -> Session | None:
        """Our own not-yet-answered invite to the party now inviting us (§12.6)."""
        rivals = [s for s in self.sessions.values() if self._is_rival(s, sender, sender_identity)]
        return min(rivals, key=lambda s: s.id, default=None)

    @staticmethod
    def _is_rival(s: Session, sender: str, sender_identity: str) -> bool:
        return (
            s.role is Role.INITIATOR
            and s.state in (SessionState.INVITING, SessionState.PROCEEDING)
            and s.target in (sender, sender_identity)
        )

    # --- dispatch -------------------------------------------------------------------------

    def _local(self, session: str, ev: Event, now: int) -> list[Emission]:
        s = self.sessions.get(session)
        if s is None:
            return [Refused("unknown-session", session or None)]
        return self._dispatch(s, ev, now)

    def _dispatch(self, s: Session, ev: Event, now: int) -> list[Emission]:
        handler = _lookup(s.role, s.state, ev.trigger)
        if handler is None:
            return _no_transition(s, ev)
        if (
            s.role is Role.RESPONDER
            and s.state is SessionState.ACTIVE
            and ev.trigger.received
            and ev.trigger is not Trigger.RECV_CANCEL
        ):
            s.peer_spoke_after_answer = True  # §12.5: a later cancel is late, not crossed
        step = _Step(now, self.config, self._seq, self.info_bindings)
        return handler(s, ev, step)


def _require(**values: str) -> None:
    for name, value in values.items():
        if not value:
            raise EngineMisuseError(f"{name} must be a non-empty string")
