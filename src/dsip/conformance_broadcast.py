"""Adapters from the shared vectors to verified broadcast and subscriptions (§9.3, §22).

* ``kind: broadcast`` → :func:`run_broadcast`: the vector's publication and provenance
  envelopes through :func:`dsip.core.broadcast.verify_broadcast`, reported as the result
  dict :mod:`dsip.conformance` compares with ``expect``.
* ``kind: state`` with ``component`` ``authority`` / ``subscriber`` →
  :func:`run_authority_state` / :func:`run_subscriber_state`: scripted events through
  :class:`~dsip.core.subscription.AuthorityEngine` / :class:`~dsip.core.subscription.
  SubscriberEngine`, returning every mismatch as one line (empty = pass), like
  :func:`dsip.conformance_state.run_state`.

This module is the only place that speaks the vectors' vocabulary for these components.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dsip.conformance_state import emission_to_vector
from dsip.core.broadcast import BroadcastView, Capabilities, StatementVerdict, verify_broadcast
from dsip.core.envelope import ReplayStore, Verifier
from dsip.core.identity import StaticDocuments
from dsip.core.subscription import (
    AuthorityEmission,
    AuthorityEngine,
    PolicyMode,
    ProvenanceAttached,
    PublicationChanged,
    SendNotify,
    SendSubscribe,
    SubscriberEmission,
    SubscriberEngine,
    SubscriptionEnded,
    SubscriptionPolicy,
)
from dsip.core.version import Supported
from dsip.errors import DsipError

__all__ = [
    "broadcast_result",
    "run_authority_state",
    "run_broadcast",
    "run_subscriber_state",
    "subscription_emission_to_vector",
]


# --- kind: broadcast ------------------------------------------------------------------------


def run_broadcast(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    """Verify the vector's publication and statements with the receiver it describes."""
    now = int(context["now"])
    replay = ReplayStore()
    for seen in context.get("seen_ids", []):
        replay.add(seen, now)
    verifier = Verifier(
        StaticDocuments(context.get("did_documents", {})),
        delegations=context.get("delegations", []),
        replay=replay,
        supported=Supported.from_mapping(context.get("supported", {})),
    )
    try:
        view = verify_broadcast(
            verifier,
            inp["publication"],
            list(inp.get("provenance", [])),
            capabilities=Capabilities.from_mapping(inp.get("capabilities", {})),
            now=now,
        )
    except DsipError as exc:
        return {"verdict": "reject", "code": exc.code, "reason": exc.reason, "message": exc.message}
    return broadcast_result(view)


def broadcast_result(view: BroadcastView) -> dict[str, Any]:
    """A :class:`BroadcastView` in the vectors' result shape."""
    d = view.display
    return {
        "verdict": "accept",
        "type": view.verified.type,
        "signer": view.verified.signer,
        "identity": view.verified.identity,
        "selected_variant": None if view.selected_variant is None else view.selected_variant.id,
        "provenance": [_statement(v) for v in view.provenance],
        "display": {
            "original_publisher": d.original_publisher,
            "delivered_by": list(d.delivered_by),
            "transcoded_by": list(d.transcoded_by),
            "integrity_mode": d.integrity_mode,
        },
    }


def _statement(verdict: StatementVerdict) -> dict[str, Any]:
    s = verdict.statement
    if s is None:
        return {"verdict": "reject", "code": verdict.code}
    out: dict[str, Any] = {
        "verdict": "accept",
        "processor": s.processor,
        "operation": s.operation,
        "integrity_mode": verdict.integrity_mode,
    }
    if verdict.policy_violation is not None:
        out["policy_violation"] = verdict.policy_violation
    return out


# --- kind: state, components authority / subscriber -----------------------------------------


def subscription_emission_to_vector(em: AuthorityEmission | SubscriberEmission) -> dict[str, Any]:
    """One authority/subscriber emission in the vectors' emission vocabulary."""
    match em:
        case SendNotify() | SendSubscribe():
            return {"send": em.to_payload_fields()}
        case PublicationChanged():
            return {"publication": {"stream": em.stream, "state": em.state}}
        case ProvenanceAttached():
            return {"provenance": {"stream": em.stream, "processor": em.processor}}
        case SubscriptionEnded():
            return {"subscription": {"id": em.id, "state": em.state}}
    return emission_to_vector(em)  # Send, Ui, Drop, Refused: the session vocabulary


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class _AuthorityRunner:
    def __init__(self, context: Mapping[str, Any]) -> None:
        self.now = int(context.get("start", 0))
        self.engine = AuthorityEngine(directory=context.get("identities", {}))

    def drive(self, ev: Mapping[str, Any]) -> Sequence[AuthorityEmission]:
        e = self.engine
        if "advance" in ev:
            self.now += int(ev["advance"])
            return e.advance(self.now)
        if "recv" in ev:
            return e.receive(ev["recv"], now=self.now)
        match ev.get("local"), ev.get("relay"):
            case "policy", None:
                policy = SubscriptionPolicy(PolicyMode(ev["mode"]), frozenset(ev.get("allow", [])))
                return e.set_policy(ev["target"], policy, now=self.now)
            case "issue_capability", None:
                return e.issue_capability(ev["token"], ev["target"], now=self.now)
            case None, "bind":
                return e.bind(ev["device"], ev["identity"], now=self.now)
            case None, "unbind":
                return e.unbind(ev["device"], ev["identity"], now=self.now)
        raise ValueError(f"unsupported authority event {_show(ev)}")

    def snapshots(self) -> dict[str, Any]:
        return {
            "publications": {
                stream: {
                    "publication": p.publication,
                    "publisher": p.publisher,
                    "state": str(p.state),
                }
                for stream, p in self.engine.publications_view().items()
            },
            "subscriptions": {
                sid: {
                    "subscriber": s.subscriber,
                    "target": s.target,
                    "events": list(s.events),
                    "seq": s.seq,
                    "expires_at": s.expires_at,
                }
                for sid, s in self.engine.subscriptions_view().items()
            },
        }


class _SubscriberRunner:
    def __init__(self, context: Mapping[str, Any]) -> None:
        self.now = int(context.get("start", 0))
        self.engine = SubscriberEngine(directory=context.get("identities", {}))

    def drive(self, ev: Mapping[str, Any]) -> Sequence[SubscriberEmission]:
        e = self.engine
        if "advance" in ev:
            self.now += int(ev["advance"])
            return e.advance(self.now)
        if "recv" in ev:
            return e.receive(ev["recv"], now=self.now)
        match ev.get("local"):
            case "subscribe":
                return e.subscribe(
                    ev["id"],
                    ev["to"],
                    ev["target"],
                    list(ev["events"]),
                    int(ev["expires_in"]),
                    now=self.now,
                    capability=ev.get("capability"),
                )
            case "unsubscribe":
                return e.unsubscribe(ev["id"], now=self.now)
        raise ValueError(f"unsupported subscriber event {_show(ev)}")

    def snapshots(self) -> dict[str, Any]:
        return {
            "subscriptions": {
                sid: {"target": v.target, "state": str(v.state), "seq": v.seq}
                for sid, v in self.engine.views().items()
            }
        }


def _run(runner: _AuthorityRunner | _SubscriberRunner, inp: Mapping[str, Any]) -> list[str]:
    """Each step: emissions compared exactly, in order; each named snapshot compared whole."""
    problems: list[str] = []
    for index, step in enumerate(inp.get("steps", [])):
        event = step.get("event", {})
        expect = step.get("expect", {})
        where = f"step {index} {_show(event)}"
        try:
            got = [subscription_emission_to_vector(em) for em in runner.drive(event)]
        except Exception as exc:  # a crash is a mismatch, reported with its step
            problems.append(f"{where}: crashed: {type(exc).__name__}: {exc}")
            break
        want = list(expect.get("emit", []))
        if got != want:
            problems.append(f"{where}: emit\n  expected {_show(want)}\n  got      {_show(got)}")
        snapshots = runner.snapshots()
        for name, expected in expect.items():
            if name != "emit" and snapshots.get(name) != expected:
                problems.append(
                    f"{where}: {name}: expected {_show(expected)}, got {_show(snapshots.get(name))}"
                )
    return problems


def run_authority_state(context: Mapping[str, Any], inp: Mapping[str, Any]) -> list[str]:
    """Drive an :class:`AuthorityEngine` through ``inp["steps"]``; return mismatches."""
    return _run(_AuthorityRunner(context), inp)


def run_subscriber_state(context: Mapping[str, Any], inp: Mapping[str, Any]) -> list[str]:
    """Drive a :class:`SubscriberEngine` through ``inp["steps"]``; return mismatches."""
    return _run(_SubscriberRunner(context), inp)
