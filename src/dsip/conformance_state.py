"""Adapter from the shared ``kind: state`` vectors to the sans-I/O engines.

The vectors script one component — an ``endpoint`` (:class:`~dsip.core.session.EndpointEngine`)
or a forking ``relay`` (:class:`~dsip.core.forking.RelayEngine`) — through events with a mock
clock, and after every step pin the exact emissions plus snapshots of the sessions, attempts,
relay inbox and first-contact state. This module is the only place that speaks the vectors'
vocabulary: it turns vector events into engine calls and engine emissions/snapshots back into
vector dicts, then reports every difference as one human-readable line.

Components ``authority`` and ``subscriber`` (§9.3, §22) are driven by
:mod:`dsip.conformance_broadcast`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dsip.core.forking import (
    Deliver,
    Dequeue,
    Forward,
    Queue,
    RelayEmission,
    RelayEngine,
)
from dsip.core.session import (
    Drop,
    Emission,
    EndpointEngine,
    FirstContactPolicy,
    Info,
    Media,
    Refused,
    Send,
    SessionView,
    TimerConfig,
    TimerFire,
    TimerStart,
    TimerStop,
    Ui,
)

__all__ = ["StateSkip", "emission_to_vector", "run_state"]


class StateSkip(Exception):
    """The vector drives a component this package does not implement yet."""


def run_state(context: Mapping[str, Any], inp: Mapping[str, Any]) -> list[str]:
    """Drive the component through ``inp["steps"]``; return mismatches (empty = pass)."""
    component = context.get("component")
    if component in ("authority", "subscriber"):
        from dsip.conformance_broadcast import run_authority_state, run_subscriber_state

        if component == "authority":
            return run_authority_state(context, inp)
        return run_subscriber_state(context, inp)
    if component == "endpoint":
        runner: _Runner = _EndpointRunner(context)
    elif component == "relay":
        runner = _RelayRunner(context)
    else:
        raise StateSkip(f"unknown state component {component!r}")
    problems: list[str] = []
    for index, step in enumerate(inp.get("steps", [])):
        event = step.get("event", {})
        expect = step.get("expect", {})
        try:
            got = runner.step(event)
        except Exception as exc:  # a crash is a mismatch, reported with its step
            problems.append(f"step {index} {_show(event)}: crashed: {type(exc).__name__}: {exc}")
            break
        want = list(expect.get("emit", []))
        if got != want:
            problems.append(
                f"step {index} {_show(event)}: emit\n  expected {_show(want)}\n  got      {_show(got)}"
            )
        problems += [f"step {index} {_show(event)}: {p}" for p in runner.compare(expect)]
    return problems


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=False, separators=(",", ":"))


# --- emissions → vector vocabulary ------------------------------------------------------------


def emission_to_vector(em: Emission | RelayEmission) -> dict[str, Any]:
    """One engine emission in the vectors' emission vocabulary."""
    match em:
        case Send():
            return {"send": em.to_payload_fields()}
        case TimerStart():
            return {"timer": "start", "name": str(em.name), "seconds": em.seconds}
        case TimerStop():
            return {"timer": "stop", "name": str(em.name)}
        case TimerFire():
            return {"timer": "fire", "name": str(em.name)}
        case Media():
            return {"media": em.action}
        case Ui():
            return {"ui": em.kind, **em.fields}
        case Info():
            return {"info": {"about": em.about}}
        case Refused():
            return {"refused": em.reason}
        case Drop():
            return {"drop": em.reason}
        case Queue():
            return {"queue": {"to": em.to, "type": em.type}}
        case Dequeue():
            return {"dequeue": {"to": em.to, "type": em.type, "why": em.why}}
        case Deliver():
            out: dict[str, Any] = {"leg": em.leg, "type": em.type}
            if em.reason is not None:
                out["reason"] = em.reason
            if em.id is not None:
                out["id"] = em.id
            return {"deliver": out}
        case Forward():
            fwd: dict[str, Any] = {"type": em.type}
            if em.status is not None:
                fwd["status"] = em.status
            if em.reason is not None:
                fwd["reason"] = em.reason
            fwd["from"] = em.leg
            return {"forward": fwd}
    raise TypeError(f"not an emission: {em!r}")  # pragma: no cover - exhaustive above


# --- runners ------------------------------------------------------------------------------


class _Runner:
    def __init__(self, context: Mapping[str, Any]) -> None:
        self.now = int(context.get("start", 0))

    def step(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def compare(self, expect: Mapping[str, Any]) -> list[str]:
        raise NotImplementedError


def _compare_named(
    what: str, want: Mapping[str, Any], got: Callable[[str], dict[str, Any] | None]
) -> list[str]:
    """Compare only the ids the expectation names."""
    problems = []
    for key, expected in want.items():
        actual = got(key)
        if actual != expected:
            problems.append(f"{what} {key}: expected {_show(expected)}, got {_show(actual)}")
    return problems


def _session_dict(view: SessionView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    update = view.outstanding_update
    return {
        "role": str(view.role),
        "state": str(view.state),
        "renegotiating": view.renegotiating,
        "outstanding_update": None
        if update is None
        else {"id": update.id, "direction": str(update.direction)},
    }


class _EndpointRunner(_Runner):
    def __init__(self, context: Mapping[str, Any]) -> None:
        super().__init__(context)
        me = context.get("self", {})
        policy = context.get("policy", {}) or {}
        self.engine = EndpointEngine(
            me.get("device", ""),
            me.get("identity", ""),
            directory=context.get("identities", {}),
            timers=TimerConfig.from_mapping(context.get("timers", {})),
            policy=FirstContactPolicy(
                first_contact_required=bool(policy.get("first_contact_required", False)),
                allow=frozenset(policy.get("allow", [])),
            ),
        )

    def step(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [emission_to_vector(em) for em in self._drive(event)]

    def _drive(self, ev: Mapping[str, Any]) -> Sequence[Emission]:
        e, now = self.engine, self.now
        if "advance" in ev:
            self.now += int(ev["advance"])
            return e.advance(self.now)
        if "recv" in ev:
            return e.receive(ev["recv"], now=now)
        action = ev.get("local")
        sid = str(ev.get("session", ""))
        match action:
            case "place_call":
                return e.place_call(sid, ev["to"], now=now)
            case "cancel":
                return e.cancel(sid, now=now)
            case "hangup":
                return e.hangup(sid, now=now, reason=ev.get("reason", "user.hangup"))
            case "alert":
                return e.alert(sid, now=now, ring_timeout=ev.get("ring_timeout"))
            case "auto_reject":
                return e.auto_reject(sid, ev["reason"], now=now)
            case "accept":
                return e.accept(sid, now=now, answered_by=ev.get("answered_by", "user"))
            case "decline":
                return e.decline(sid, now=now)
            case "update":
                return e.update(sid, ev["id"], now=now, answered_by=ev.get("answered_by"))
            case "answer_update":
                return e.answer_update(sid, ev["in_reply_to"], now=now)
            case "reject_update":
                return e.reject_update(sid, ev["in_reply_to"], ev["reason"], now=now)
            case "info":
                return e.send_info(sid, now=now)
            case "introduce":
                return e.introduce(
                    ev["id"],
                    ev["to"],
                    ev.get("purpose", ""),
                    now=now,
                    contact_token=ev.get("contact_token"),
                )
            case "grant":
                return e.grant(
                    ev["introduction"], ev["id"], ev["scope"], ev["valid_until"], now=now
                )
            case "reject_introduction":
                return e.reject_introduction(ev["introduction"], ev["reason"], now=now)
            case "revoke":
                return e.revoke(ev["grant"], now=now)
            case "issue_token":
                return e.issue_token(ev["token"], ev["grant_id"], now=now)
        raise ValueError(f"unsupported endpoint event {_show(ev)}")

    def compare(self, expect: Mapping[str, Any]) -> list[str]:
        problems = _compare_named(
            "session",
            expect.get("sessions", {}),
            lambda sid: _session_dict(self.engine.session_view(sid)),
        )
        if "contacts" in expect:
            view = self.engine.contacts_view()
            got = {
                "allow": list(view.allow),
                "grants_issued": list(view.grants_issued),
                "grants_held": list(view.grants_held),
                "requests": list(view.requests),
                "pending_sent": list(view.pending_sent),
            }
            want = dict(expect["contacts"])
            if {k: got[k] for k in want if k in got} != want:
                problems.append(f"contacts: expected {_show(want)}, got {_show(got)}")
        return problems


class _RelayRunner(_Runner):
    def __init__(self, context: Mapping[str, Any]) -> None:
        super().__init__(context)
        retention = context.get("offline_retention_s")
        self.engine = (
            RelayEngine() if retention is None else RelayEngine(offline_retention_s=int(retention))
        )

    def step(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [emission_to_vector(em) for em in self._drive(event)]

    def _drive(self, ev: Mapping[str, Any]) -> Sequence[RelayEmission]:
        e, now = self.engine, self.now
        if "advance" in ev:
            self.now += int(ev["advance"])
            return e.advance(self.now)
        if "recv" in ev:
            return e.receive(ev["recv"], now=now)
        match ev.get("relay"):
            case "invite":
                return e.fork_invite(
                    ev["session"],
                    ev["from"],
                    ev["to"],
                    list(ev["legs"]),
                    now=now,
                    expires_at=ev.get("expires_at"),
                )
            case "leg_expired":
                return e.leg_expired(ev["session"], ev["leg"], now=now)
            case "bind":
                return e.bind(ev["device"], ev["identity"], now=now)
            case "unbind":
                return e.unbind(ev["device"], ev["identity"], now=now)
        raise ValueError(f"unsupported relay event {_show(ev)}")

    def compare(self, expect: Mapping[str, Any]) -> list[str]:
        def attempt(sid: str) -> dict[str, Any] | None:
            view = self.engine.attempt_view(sid)
            if view is None:
                return None
            outcome = None if view.outcome is None else str(view.outcome)
            return {"legs": {d: str(s) for d, s in view.legs.items()}, "outcome": outcome}

        problems = _compare_named("attempt", expect.get("attempts", {}), attempt)
        if "inbox" in expect and self.engine.inbox() != expect["inbox"]:
            problems.append(
                f"inbox: expected {_show(expect['inbox'])}, got {_show(self.engine.inbox())}"
            )
        return problems
