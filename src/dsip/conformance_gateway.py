"""Adapter from the shared ``kind: gateway`` vectors to :mod:`dsip.core.gateway`.

``input.check`` selects one check (vectors README, "Kind: gateway"): ``reason-inbound``,
``reason-outbound``, ``sdp-to-descriptors``, ``descriptors-to-sdp``, ``claims``,
``downgrade`` (plus ``downgrade-error``, the notice a callee receives) and ``trace``, which
scripts a :class:`~dsip.core.gateway.b2bua.BridgedCall` step by step and pins each step's
emissions and both legs' states. This module is the only place that speaks the vectors'
vocabulary: it turns vector inputs into core calls, core results and emissions back into
vector dicts, and reports every difference as one human-readable line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from dsip.core.gateway.b2bua import (
    BridgedCall,
    Downgraded,
    DsipAnswer,
    DsipBye,
    DsipCancel,
    DsipInvite,
    DsipLegEnded,
    DsipLocal,
    DsipProgress,
    DsipReject,
    DsipUpdate,
    EarlyMediaPolicy,
    Emission,
    Event,
    Ignored,
    Media,
    SendSipRequest,
    SendSipResponse,
    SipInvite,
    SipReinvite,
    SipRequest,
    SipResponse,
    TrunkProfile,
)
from dsip.core.gateway.claims import PassportFacts, caller_claim
from dsip.core.gateway.downgrade import CallDirection, CrossingFacts, assess, downgrade_notice
from dsip.core.gateway.reasons import Phase, SipFinal, map_inbound, map_outbound
from dsip.core.gateway.sdp import TrunkSdpError, m_lines_for, parse_trunk_sdp
from dsip.core.media_binding import Direction, MediaDescriptor

__all__ = ["emission_to_vector", "run_gateway"]

# The gateway identity the vectors are written for (G§2): a did:web of the operator.
_GATEWAY_DID = "did:web:gw.example"

Check = Callable[[Mapping[str, Any], Mapping[str, Any], Any], list[str]]


def run_gateway(context: Mapping[str, Any], inp: Mapping[str, Any], expect: Any) -> list[str]:
    """Run one gateway vector; return mismatches with ``expect`` (empty = pass)."""
    check = str(inp.get("check"))
    runner = _CHECKS.get(check)
    if runner is None:
        return [f"unknown gateway check {check!r}"]
    return runner(context, inp, expect)


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _compare(expect: Any, got: Any) -> list[str]:
    return [] if expect == got else [f"expected {_show(expect)}, got {_show(got)}"]


def _result_check(
    compute: Callable[[Mapping[str, Any], Mapping[str, Any]], Any],
) -> Check:
    def run(context: Mapping[str, Any], inp: Mapping[str, Any], expect: Any) -> list[str]:
        return _compare(expect, compute(context, inp))

    return run


def _gateway(context: Mapping[str, Any]) -> str:
    return str(context.get("gateway", _GATEWAY_DID))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


# --- reasons ----------------------------------------------------------------------------------


def _reason_inbound(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    mapped = map_inbound(
        Phase(inp.get("phase", "pre-answer")),
        sip_status=_int_or_none(inp.get("sip_status")),
        q850=_int_or_none(inp.get("q850")),
        moved_to=inp.get("moved_to"),
    )
    out: dict[str, Any] = {"reason": mapped.reason, "carry": str(mapped.carry)}
    if mapped.detail is not None:
        out["detail"] = mapped.detail
    return out


def _reason_header(token: str) -> dict[str, str]:
    return {"protocol": "DSIP", "text": token}


def _reason_outbound(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    sip = map_outbound(str(inp["reason"]), Phase(inp["phase"]))
    if isinstance(sip, SipFinal):
        out: dict[str, Any] = {"status": sip.status}
        if sip.q850 is not None:
            out["q850"] = sip.q850
        out["reason_header"] = _reason_header(sip.reason)
        if sip.retry_after:
            out["retry_after"] = True
        return out
    return {"method": "BYE", "q850": sip.q850, "reason_header": _reason_header(sip.reason)}


# --- SDP --------------------------------------------------------------------------------------


def _sdp_to_descriptors(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    try:
        trunk = parse_trunk_sdp(inp["sdp"])
    except TrunkSdpError as exc:
        return {"error": exc.code}
    return {"media": trunk.media(), "srtp": str(trunk.srtp)}


def _descriptors_to_sdp(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    media = [MediaDescriptor.from_mapping(m, i) for i, m in enumerate(inp["media"])]
    return {
        "m_lines": [
            {"kind": line.kind, "encodings": list(line.encodings), "direction": str(line.direction)}
            for line in m_lines_for(media)
        ]
    }


# --- claims and downgrade ---------------------------------------------------------------------


def _passport(value: Any) -> PassportFacts | None:
    if not isinstance(value, Mapping):
        return None
    return PassportFacts(
        attest=str(value.get("attest", "none")),
        verified=value.get("verified") is True,
        orig_tn=str(value.get("orig_tn", "")),
    )


def _claims(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    shown = caller_claim(
        str(inp["from_tn"]),
        _passport(inp.get("identity")),
        verifier=_gateway(context),
        cnam=inp.get("cnam"),
    )
    claim = None if shown.claim is None else shown.claim.to_mapping()
    return {"claim": claim, "trust_basis": shown.trust_basis}


def _facts(inp: Mapping[str, Any]) -> CrossingFacts:
    facts = inp["facts"]
    attestation = facts.get("attestation")
    return CrossingFacts(
        direction=CallDirection(facts["direction"]),
        trunk_srtp=bool(facts.get("trunk_srtp", False)),
        identity_assertable=bool(facts.get("identity_assertable", False)),
        caller_attested=attestation not in (None, "none") and facts.get("verified") is not False,
        policy_present=bool(facts.get("policy_present", False)),
    )


def _downgrade(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any]:
    result = assess(_facts(inp))
    return {"downgraded": result.downgraded, "lost": [str(loss) for loss in result.lost]}


def _downgrade_error(context: Mapping[str, Any], inp: Mapping[str, Any]) -> dict[str, Any] | None:
    notice = downgrade_notice(_facts(inp))
    return None if notice is None else {"losses": [str(loss) for loss in notice.losses]}


# --- trace ------------------------------------------------------------------------------------


def emission_to_vector(em: Emission) -> dict[str, Any]:
    """One controller emission in the vectors' trace vocabulary."""
    match em:
        case SendSipRequest():
            name = "re-INVITE" if em.method == "INVITE" and em.in_dialog else em.method
            fields = _sip_fields(em.direction, em.q850, em.reason)
            return {"sip": {"request": name, **fields} if fields else name}
        case SendSipResponse():
            response: dict[str, Any] = {"response": em.status}
            response.update(_sip_fields(em.direction, em.q850, em.reason))
            if em.retry_after is not None:
                response["retry_after"] = em.retry_after
            return {"sip": response}
        case DsipLocal():
            local: dict[str, Any] = {"local": str(em.action)}
            if em.caller is not None:
                local["claims"] = list(em.caller.claims)
                local["trust_basis"] = em.caller.trust_basis
            for key in ("reason", "detail", "answered_by", "direction", "status"):
                value = getattr(em, key)
                if value is not None:
                    local[key] = str(value)
            return {"dsip": local}
        case Media():
            return {"media": str(em.action)}
        case Downgraded():
            losses = [str(loss) for loss in em.notice.losses]
            return {"dsip": {"error": em.notice.reason, "losses": losses}}
        case Ignored():
            return {"ignored": em.why}
    raise TypeError(f"not an emission: {em!r}")  # pragma: no cover - exhaustive above


def _sip_fields(
    direction: Direction | None, q850: int | None, reason: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if direction is not None:
        out["direction"] = str(direction)
    if q850 is not None:
        out["q850"] = q850
    if reason is not None:
        out["reason_header"] = _reason_header(reason)
    return out


def _direction(value: Any) -> Direction | None:
    return None if value is None else Direction(value)


def _dsip_event(msg: Mapping[str, Any]) -> Event:
    """The vectors' DSIP messages, abbreviated (``direction`` stands for the media's)."""
    kind = msg.get("type")
    reason = msg.get("reason")
    match kind:
        case "invite":
            return DsipInvite(policy_present="policy" in msg)
        case "progress":
            return DsipProgress(str(msg.get("status", "trying")))
        case "answer":
            return DsipAnswer(
                str(msg.get("answered_by", "user")),
                _direction(msg.get("direction")),
                msg.get("in_reply_to"),
            )
        case "reject":
            return DsipReject(
                str(reason or "session.failed"),
                _int_or_none(msg.get("retry_after")),
                msg.get("in_reply_to"),
            )
        case "cancel":
            return DsipCancel(reason)
        case "bye":
            return DsipBye(reason)
        case "update":
            return DsipUpdate(_direction(msg.get("direction")) or Direction.SENDRECV)
        case "ended":
            return DsipLegEnded(str(reason))
    raise ValueError(f"unsupported dsip event {_show(msg)}")


def _sip_event(msg: Mapping[str, Any]) -> Event:
    if "status" in msg:
        return SipResponse(
            int(msg["status"]),
            method=str(msg.get("method", "INVITE")),
            sdp=bool(msg.get("sdp", False)),
            direction=_direction(msg.get("direction")),
            q850=_int_or_none(msg.get("q850")),
            moved_to=msg.get("moved_to"),
        )
    method = str(msg["request"])
    if method == "INVITE":
        return SipInvite(
            str(msg.get("from_tn", "")), _passport(msg.get("identity")), msg.get("cnam")
        )
    if method == "re-INVITE":
        return SipReinvite(_direction(msg.get("direction")) or Direction.SENDRECV)
    return SipRequest(method, q850=_int_or_none(msg.get("q850")))


def _trace(context: Mapping[str, Any], inp: Mapping[str, Any], expect: Any) -> list[str]:
    early = EarlyMediaPolicy(context.get("early_media", "auto"))
    call = BridgedCall(
        CallDirection(context["direction"]),
        gateway=_gateway(context),
        trunk=TrunkProfile(early_media=early),
    )
    now = int(context.get("start", 0))
    steps = list(inp.get("steps", []))
    wanted = list((expect or {}).get("steps", []))
    problems = []
    if len(steps) != len(wanted):
        problems.append(f"{len(steps)} steps but {len(wanted)} expectations")
    for index, (step, want) in enumerate(zip(steps, wanted, strict=False)):
        event = step.get("event", {})
        if "timer" in event:
            if event["timer"] != "C":
                raise ValueError(f"unsupported timer {_show(event)}")
            now = call.next_deadline() or now
            emitted = call.handle_timer(now)
        elif "dsip" in event:
            emitted = call.handle(_dsip_event(event["dsip"]), now=now)
        elif "sip" in event:
            emitted = call.handle(_sip_event(event["sip"]), now=now)
        else:
            raise ValueError(f"unsupported trace event {_show(event)}")
        got = [emission_to_vector(em) for em in emitted]
        if got != list(want.get("emit", [])):
            problems.append(
                f"step {index} {_show(event)}: emit\n  expected {_show(want.get('emit'))}"
                f"\n  got      {_show(got)}"
            )
        state = {"dsip": str(call.dsip_state), "sip": str(call.sip_state)}
        if "state" in want and state != want["state"]:
            problems.append(
                f"step {index} {_show(event)}: state expected {_show(want['state'])}, "
                f"got {_show(state)}"
            )
    return problems


_CHECKS: dict[str, Check] = {
    "reason-inbound": _result_check(_reason_inbound),
    "reason-outbound": _result_check(_reason_outbound),
    "sdp-to-descriptors": _result_check(_sdp_to_descriptors),
    "descriptors-to-sdp": _result_check(_descriptors_to_sdp),
    "claims": _result_check(_claims),
    "downgrade": _result_check(_downgrade),
    "downgrade-error": _result_check(_downgrade_error),
    "trace": _trace,
}
