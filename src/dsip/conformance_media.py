"""Adapter from the shared ``kind: media-binding`` vectors to :mod:`dsip.core.media_binding`.

``input.check`` selects one of six checks (vectors README, "Kind: media-binding"):
``offer``, ``answer`` and ``role`` end in a verdict; ``candidates`` and ``renegotiation``
script an engine step by step and pin each step's emissions; ``one-answer`` pins which
forked leg's answer is applied. This module is the only place that speaks the vectors'
vocabulary: it turns vector inputs into core calls, and core results and emissions back
into vector dicts, then reports every difference as one human-readable line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from dsip.core.media_binding import (
    ApplyCandidates,
    ApplyRemote,
    BufferedCandidates,
    CandidateEmission,
    CandidateExchange,
    DroppedBuffered,
    IceCandidate,
    IceCredentials,
    Ignored,
    LocalDescription,
    RejectUpdate,
    RemoteEndOfCandidates,
    Renegotiation,
    RenegotiationEmission,
    Rollback,
    SendInfo,
    UpdateOffered,
    check_answer,
    check_offer,
    dtls_roles,
    select_answer,
)
from dsip.errors import DsipError

__all__ = ["emission_to_vector", "run_media_binding"]

# The vectors pin only the ufrag; a re-offer changes both credentials in every real stack,
# so one fixed password stands in for both sides.
_ICE_STAND_IN = "vector-ice-pwd-0123456789"


def run_media_binding(
    context: Mapping[str, Any], inp: Mapping[str, Any], expect: Mapping[str, Any]
) -> list[str]:
    """Run one media-binding vector; return mismatches with ``expect`` (empty = pass)."""
    check = inp.get("check")
    runner = _CHECKS.get(str(check))
    if runner is None:
        return [f"unknown media-binding check {check!r}"]
    return runner(context, inp, expect)


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _reject(exc: DsipError) -> dict[str, Any]:
    return {"verdict": "reject", "code": exc.code, "reason": exc.reason}


def _compare_verdict(expect: Mapping[str, Any], got: Mapping[str, Any], why: str) -> list[str]:
    if dict(expect) == dict(got):
        return []
    return [f"expected {_show(expect)}, got {_show(got)}{why}"]


# --- verdict checks ---------------------------------------------------------------------


def _verdict_check(
    decide: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]],
) -> Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], list[str]]:
    def run(
        context: Mapping[str, Any], inp: Mapping[str, Any], expect: Mapping[str, Any]
    ) -> list[str]:
        try:
            got, why = decide(context, inp), ""
        except DsipError as exc:
            got, why = _reject(exc), f" ({exc.message})"
        return _compare_verdict(expect, got, why)

    return run


def _offer(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    if check_offer(inp["payload"]) is None:
        return {"verdict": "accept", "binding": "not-webrtc"}
    return {"verdict": "accept"}


def _answer(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    offer = check_offer(inp["offer"])
    if offer is None:
        raise ValueError("the vector's offer is not a transport:webrtc offer")
    if check_answer(offer, inp["payload"]) is None:
        return {"verdict": "accept", "binding": "not-webrtc"}
    return {"verdict": "accept"}


def _role(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    roles = dtls_roles(str(inp["offer_setup"]), str(inp["answer_setup"]))
    return {"verdict": "accept", "offerer": str(roles.offerer), "answerer": str(roles.answerer)}


# --- one answer -------------------------------------------------------------------------


def _one_answer(
    context: Mapping[str, Any], inp: Mapping[str, Any], expect: Mapping[str, Any]
) -> list[str]:
    offer = check_offer(inp["offer"])
    if offer is None:
        return ["the vector's offer is not a transport:webrtc offer"]
    selection = select_answer(offer, inp["answers"])
    legs: list[dict[str, Any]] = []
    for leg in selection.legs:
        row: dict[str, Any] = {"from": leg.leg}
        if leg.applied:
            row["applied"] = True
        else:
            row["bye"] = leg.bye
            if leg.code is not None:
                row["code"] = leg.code
        legs.append(row)
    return _compare_verdict(expect, {"applied": selection.applied, "legs": legs}, "")


# --- stepped engines --------------------------------------------------------------------


def emission_to_vector(em: CandidateEmission | RenegotiationEmission) -> dict[str, Any]:
    """One engine emission in the vectors' emission vocabulary."""
    match em:
        case BufferedCandidates():
            return {"buffer": str(em.side), "n": em.total}
        case SendInfo():
            return {
                "send_info": {
                    "candidates": len(em.candidates),
                    "end_of_candidates": em.end_of_candidates,
                }
            }
        case ApplyCandidates():
            return {"apply": len(em.candidates)}
        case RemoteEndOfCandidates():
            return {"remote_end": True}
        case Ignored():
            return {"ignore": str(em.reason)}
        case DroppedBuffered():
            return {"drop_buffered": em.count}
        case LocalDescription():
            return {"local_description": em.which}
        case ApplyRemote():
            return {"apply": em.what}
        case Rollback():
            return {"rollback": True}
        case RejectUpdate():
            reject: dict[str, Any] = {"reason": em.reason}
            if em.detail is not None:
                reject["detail"] = em.detail
            return {"reject": reject}
        case UpdateOffered():
            return {"ui": "update_offered"}
    raise TypeError(f"not an emission: {em!r}")  # pragma: no cover - exhaustive above


def _stepped(
    make: Callable[[Mapping[str, Any]], Callable[[Mapping[str, Any]], list[Any]]],
) -> Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], list[str]]:
    def run(
        context: Mapping[str, Any], inp: Mapping[str, Any], expect: Mapping[str, Any]
    ) -> list[str]:
        drive = make(context)
        steps = list(inp.get("steps", []))
        wanted = list(expect.get("steps", []))
        problems = []
        if len(steps) != len(wanted):
            problems.append(f"{len(steps)} steps but {len(wanted)} expectations")
        for index, (step, want) in enumerate(zip(steps, wanted, strict=False)):
            event = step.get("event", {})
            try:
                got = [emission_to_vector(em) for em in drive(event)]
            except DsipError as exc:
                if exc.remote:
                    raise  # a peer's input must never raise out of an engine
                got = [{"error": exc.code, "detail": exc.message}]
            if got != list(want.get("emit", [])):
                problems.append(
                    f"step {index} {_show(event)}: expected {_show(want.get('emit'))}, got {_show(got)}"
                )
        return problems

    return run


def _candidates_driver(
    context: Mapping[str, Any],
) -> Callable[[Mapping[str, Any]], list[CandidateEmission]]:
    engine = CandidateExchange(str(context["peer"]))

    def drive(ev: Mapping[str, Any]) -> list[CandidateEmission]:
        if "local_candidate" in ev:
            return engine.local_candidate(IceCandidate.from_mapping(ev["local_candidate"]))
        if "gathering_complete" in ev:
            return engine.gathering_complete()
        if "active" in ev:
            return engine.active()
        if "remote_description" in ev:
            return engine.remote_description_applied()
        if "remote_info" in ev:
            info = ev["remote_info"]
            return engine.remote_info(
                str(info["from"]),
                [IceCandidate.from_mapping(c) for c in info.get("candidates", [])],
                bool(info.get("end_of_candidates", False)),
            )
        if "session_end" in ev:
            return engine.session_end()
        raise ValueError(f"unsupported candidates event {_show(ev)}")

    return drive


def _renegotiation_driver(
    context: Mapping[str, Any],
) -> Callable[[Mapping[str, Any]], list[RenegotiationEmission]]:
    def creds(ufrag: Any) -> IceCredentials:
        return IceCredentials(str(ufrag), _ICE_STAND_IN)

    engine = Renegotiation(creds(context["ufrag"]), creds(context["ufrag"]))

    def drive(ev: Mapping[str, Any]) -> list[RenegotiationEmission]:
        if "local_reoffer" in ev:
            return engine.local_reoffer(creds(ev["local_reoffer"]["ufrag"]))
        if "remote_answer" in ev:
            return engine.remote_answer()
        if "remote_reject" in ev:
            return engine.remote_reject()
        if "remote_reoffer" in ev:
            return engine.remote_reoffer(creds(ev["remote_reoffer"]["ufrag"]))
        if "answer_update" in ev:
            return engine.answer_update()
        if "reject_update" in ev:
            return engine.reject_update(str(ev["reject_update"]))
        raise ValueError(f"unsupported renegotiation event {_show(ev)}")

    return drive


_CHECKS: dict[
    str, Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], list[str]]
] = {
    "offer": _verdict_check(_offer),
    "answer": _verdict_check(_answer),
    "role": _verdict_check(_role),
    "candidates": _stepped(_candidates_driver),
    "renegotiation": _stepped(_renegotiation_driver),
    "one-answer": _one_answer,
}
