"""The B2BUA controller: one bridged call, DSIP leg ⇄ SIP leg (Gateway Profile G§3, G§8).

A :class:`BridgedCall` mediates one call in one direction:

* ``outbound`` (DSIP → PSTN, G§3.1): the gateway is the DSIP *responder* and the SIP UAC;
* ``inbound`` (PSTN → DSIP, G§3.2): the gateway is the SIP UAS and the DSIP *initiator*.

Events go in (:meth:`BridgedCall.handle`): what arrived on the DSIP leg (``Dsip*``), on the
SIP leg (``Sip*``), and the clock (:meth:`BridgedCall.handle_timer` fires SIP Timer C).
Emissions come out: what each leg is told (:class:`SendSipRequest`, :class:`SendSipResponse`,
:class:`DsipLocal`), the media bridge (:class:`Media`), the G§7 downgrade notice
(:class:`Downgraded`) and :class:`Ignored` for events the current state has no row for.
Nothing here touches a socket or a clock; the SIP stack and the DSIP endpoint engine around it
do the I/O.

The controller never re-implements either protocol. On the DSIP side a :class:`DsipLocal`
names the :class:`~dsip.core.session.EndpointEngine` action to take (``place_call``,
``alert``, ``accept``, ``hangup``, ...), and the engine keeps the §12 state machine. On the SIP
side it acts as the transaction user: the transaction layer absorbs retransmissions, ACKs
non-2xx finals itself and holds a CANCEL back until a provisional response has arrived
(RFC 3261 §9.1) — so a CANCEL emitted while the SIP leg is still ``calling`` is correct here.

How to read it: :data:`TRANSITIONS` maps ``(direction, DSIP leg, SIP leg, trigger)`` to a
handler; ``None`` as the direction is a row both directions share. Handlers are the small
functions above the table; each sets the legs' next states and returns its emissions in the
house order: what the event's own leg needs at once (the response to a request, the ACK of a
2xx, the CANCEL on Timer C) → what the other leg is told → the event leg's follow-ups (the 487
closing an INVITE) → media. An event without a row is answered conservatively (a SIP request
gets 481 or 500, anything else is :class:`Ignored`) and changes nothing.

Decisions the profile leaves open are stated where they are made (``# decision:``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeAlias

from dsip.core.gateway.claims import CallerPresentation, PassportFacts, caller_claim
from dsip.core.gateway.downgrade import (
    CallDirection,
    CrossingFacts,
    DowngradeNotice,
    downgrade_notice,
)
from dsip.core.gateway.reasons import (
    GatewayMisuseError,
    Phase,
    bye_for,
    final_response_for,
    map_inbound,
    wire_token,
)
from dsip.core.gateway.sdp import SrtpMode
from dsip.core.media_binding import Direction
from dsip.core.registry import effective_answered_by, effective_status

__all__ = [
    "TRANSITIONS",
    "BridgedCall",
    "CallView",
    "Downgraded",
    "DsipAction",
    "DsipAnswer",
    "DsipBye",
    "DsipCancel",
    "DsipEvent",
    "DsipInvite",
    "DsipLeg",
    "DsipLegEnded",
    "DsipLocal",
    "DsipProgress",
    "DsipReject",
    "DsipUpdate",
    "EarlyMediaPolicy",
    "Emission",
    "Event",
    "Ignored",
    "Media",
    "MediaAction",
    "SendSipRequest",
    "SendSipResponse",
    "SipEvent",
    "SipInvite",
    "SipLeg",
    "SipReinvite",
    "SipRequest",
    "SipResponse",
    "TimerC",
    "Trigger",
    "TrunkProfile",
    "dsip_event_from_payload",
]


# --- configuration ----------------------------------------------------------------------------


class EarlyMediaPolicy(StrEnum):
    """Per-trunk ``pass-early-media`` (G§8)."""

    AUTO = "auto"  # a classified announcement → its reason; otherwise answer and pass audio
    ALWAYS = "always"  # 183 + SDP answers the DSIP leg and bridges
    NEVER = "never"  # 183 + SDP only rings; the DSIP leg is answered on 2xx


# RFC 3261 §16.6 step 11: Timer C MUST be greater than 3 minutes.
_TIMER_C_MIN: Final = 181


@dataclass(frozen=True)
class TrunkProfile:
    """What the controller needs to know about the trunk a call crosses.

    ``identity_assertable``: the operator can sign a SHAKEN PASSporT for the DSIP caller on
    this trunk (G§11 path a/c); off by default, the honest default of findings §5.
    ``retry_after_default``: the Retry-After (s) of a 503 whose DSIP refusal named none.
    """

    early_media: EarlyMediaPolicy = EarlyMediaPolicy.AUTO
    identity_assertable: bool = False
    timer_c: int = 185
    retry_after_default: int = 60

    def __post_init__(self) -> None:
        if self.timer_c < _TIMER_C_MIN:
            raise GatewayMisuseError(f"timer_c={self.timer_c}: RFC 3261 requires > 180 s")
        if self.retry_after_default < 1:
            raise GatewayMisuseError("retry_after_default must be at least 1 s")


# --- states and triggers ----------------------------------------------------------------------


class DsipLeg(StrEnum):
    """The DSIP leg as the controller sees it. Outbound it is the DSIP caller's attempt
    (inviting → proceeding → active); inbound it is our attempt (offered → alerting →
    active)."""

    IDLE = "idle"
    INVITING = "inviting"
    PROCEEDING = "proceeding"
    OFFERED = "offered"
    ALERTING = "alerting"
    ACTIVE = "active"
    ENDED = "ended"


class SipLeg(StrEnum):
    """The SIP INVITE dialog: ``calling`` (INVITE sent, nothing but 100), ``early``,
    ``confirmed``, ``terminated``."""

    IDLE = "idle"
    CALLING = "calling"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Trigger(StrEnum):
    DSIP_INVITE = "dsip:invite"
    DSIP_PROGRESS = "dsip:progress"
    DSIP_ANSWER = "dsip:answer"
    DSIP_REJECT = "dsip:reject"
    DSIP_CANCEL = "dsip:cancel"
    DSIP_BYE = "dsip:bye"
    DSIP_UPDATE = "dsip:update"
    DSIP_LEG_ENDED = "dsip:ended"  # our own DSIP engine ended the leg (a §12.9 timer)
    SIP_INVITE = "sip:INVITE"
    SIP_REINVITE = "sip:re-INVITE"
    SIP_ACK = "sip:ACK"
    SIP_BYE = "sip:BYE"
    SIP_CANCEL = "sip:CANCEL"
    SIP_REFER = "sip:REFER"
    SIP_OTHER = "sip:other-request"
    SIP_TRYING = "sip:100"
    SIP_PROVISIONAL = "sip:1xx"
    SIP_SUCCESS = "sip:2xx"
    SIP_FAILURE = "sip:3xx-6xx"
    TIMER_C = "timer:C"

    @property
    def sip_request(self) -> bool:
        return self in _SIP_REQUESTS


_SIP_REQUESTS: Final = frozenset(
    {
        Trigger.SIP_INVITE,
        Trigger.SIP_REINVITE,
        Trigger.SIP_BYE,
        Trigger.SIP_CANCEL,
        Trigger.SIP_REFER,
        Trigger.SIP_OTHER,
    }
)
_SIP_METHOD_TRIGGERS: Final[Mapping[str, Trigger]] = {
    "ACK": Trigger.SIP_ACK,
    "BYE": Trigger.SIP_BYE,
    "CANCEL": Trigger.SIP_CANCEL,
    "REFER": Trigger.SIP_REFER,
}


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DsipInvite:
    """The DSIP caller's ``invite``, admitted by §19 policy (outbound)."""

    policy_present: bool = False


@dataclass(frozen=True)
class DsipProgress:
    status: str = "ringing"


@dataclass(frozen=True)
class DsipAnswer:
    """An ``answer``: to our invite (inbound), or to an ``update`` (``in_reply_to``)."""

    answered_by: str = "user"
    direction: Direction | None = None
    in_reply_to: str | None = None


@dataclass(frozen=True)
class DsipReject:
    reason: str = "session.failed"
    retry_after: int | None = None
    in_reply_to: str | None = None


@dataclass(frozen=True)
class DsipCancel:
    reason: str | None = None


@dataclass(frozen=True)
class DsipBye:
    reason: str | None = None


@dataclass(frozen=True)
class DsipUpdate:
    direction: Direction = Direction.SENDRECV


@dataclass(frozen=True)
class DsipLegEnded:
    """Our DSIP engine ended the leg on its own (T-Ring, T-Establish, ...) with ``reason``."""

    reason: str


@dataclass(frozen=True)
class SipInvite:
    """An initial INVITE from the trunk (inbound). ``passport``: what the stack verified of
    the ``Identity`` header; ``srtp``: the keying of its SDP when it carried one."""

    from_tn: str
    passport: PassportFacts | None = None
    cnam: str | None = None
    srtp: SrtpMode | None = None


@dataclass(frozen=True)
class SipReinvite:
    """A re-INVITE in the confirmed dialog. ``sdp_changed=False`` is a session refresh
    (RFC 4028: same SDP version), answered without bothering the DSIP side."""

    direction: Direction = Direction.SENDRECV
    sdp_changed: bool = True


@dataclass(frozen=True)
class SipRequest:
    """Any other in-dialog request (ACK, BYE, CANCEL, REFER, ...). ``q850``: the
    ``Reason: Q.850;cause=`` it carried; ``completed_elsewhere``: a CANCEL with
    ``Reason: SIP;cause=200`` (RFC 3326 §2: answered on another branch)."""

    method: str
    q850: int | None = None
    completed_elsewhere: bool = False
    srtp: SrtpMode | None = None  # an ACK carrying the answer to a late offer


@dataclass(frozen=True)
class SipResponse:
    """A response on the SIP leg; ``method`` is its CSeq method. ``direction``/``srtp`` come
    from its SDP when ``sdp``; ``q850`` from a ``Reason`` header; ``moved_to`` is a known
    successor for a 410."""

    status: int
    method: str = "INVITE"
    sdp: bool = False
    direction: Direction | None = None
    srtp: SrtpMode | None = None
    q850: int | None = None
    moved_to: str | None = None


@dataclass(frozen=True)
class TimerC:
    """SIP Timer C expired (fed by :meth:`BridgedCall.handle_timer`)."""


DsipEvent: TypeAlias = (
    DsipInvite
    | DsipProgress
    | DsipAnswer
    | DsipReject
    | DsipCancel
    | DsipBye
    | DsipUpdate
    | DsipLegEnded
)
SipEvent: TypeAlias = SipInvite | SipReinvite | SipRequest | SipResponse
Event: TypeAlias = DsipEvent | SipEvent | TimerC


# --- emissions --------------------------------------------------------------------------------


def _reason_values(q850: int | None, reason: str | None) -> tuple[str, ...]:
    values = [] if q850 is None else [f"Q.850;cause={q850}"]
    if reason is not None:
        values.append(f'DSIP;text="{wire_token(reason)}"')
    return tuple(values)


@dataclass(frozen=True)
class SendSipRequest:
    """A request on the SIP leg. ``in_dialog`` INVITE is a re-INVITE. ``reason`` is the DSIP
    token for ``Reason: DSIP;text=`` (G§3, spec-gap 24), ``q850`` the ``Q.850;cause=``."""

    method: str
    in_dialog: bool = False
    direction: Direction | None = None
    q850: int | None = None
    reason: str | None = None

    @property
    def reason_header(self) -> tuple[str, ...]:
        """The ``Reason`` header values, Q.850 first."""
        return _reason_values(self.q850, self.reason)


@dataclass(frozen=True)
class SendSipResponse:
    """A response on the SIP leg to the pending ``method`` request."""

    status: int
    method: str = "INVITE"
    direction: Direction | None = None
    q850: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    @property
    def reason_header(self) -> tuple[str, ...]:
        return _reason_values(self.q850, self.reason)


class DsipAction(StrEnum):
    """:class:`~dsip.core.session.EndpointEngine` actions the DSIP leg is driven with."""

    PLACE_CALL = "place_call"
    ALERT = "alert"
    PROGRESS = "progress"  # a non-ringing progress (queued, forwarded)
    ACCEPT = "accept"
    AUTO_REJECT = "auto_reject"
    CANCEL = "cancel"
    HANGUP = "hangup"
    UPDATE = "update"
    ANSWER_UPDATE = "answer_update"
    REJECT_UPDATE = "reject_update"


@dataclass(frozen=True)
class DsipLocal:
    """Drive the DSIP leg: ``action`` with the fields it needs."""

    action: DsipAction
    reason: str | None = None
    detail: str | None = None
    answered_by: str | None = None
    direction: Direction | None = None
    status: str | None = None
    caller: CallerPresentation | None = None


class MediaAction(StrEnum):
    BRIDGE = "bridge"  # start relaying/transcoding between the two legs' media
    RELEASE = "release"  # stop it and free the anchors


@dataclass(frozen=True)
class Media:
    action: MediaAction


@dataclass(frozen=True)
class Downgraded:
    """Send ``error gateway.downgraded`` on the DSIP leg (G§7); the session continues."""

    notice: DowngradeNotice


@dataclass(frozen=True)
class Ignored:
    """An event the current state has no row for; nothing changed."""

    why: str


Emission: TypeAlias = SendSipRequest | SendSipResponse | DsipLocal | Media | Downgraded | Ignored


# --- the per-call record ----------------------------------------------------------------------


class _Pending(StrEnum):
    """Which side started the renegotiation in flight (one at a time across the bridge)."""

    SIP = "sip"  # a trunk re-INVITE, now a DSIP update awaiting its answer
    DSIP = "dsip"  # a DSIP update, now our re-INVITE awaiting its final response


@dataclass
class _Call:
    direction: CallDirection
    gateway: str
    trunk: TrunkProfile
    dsip: DsipLeg = DsipLeg.IDLE
    sip: SipLeg = SipLeg.IDLE
    bridged: bool = False
    alerted: bool = False  # outbound: the DSIP caller was told `ringing`
    confirmed: bool = False  # the SIP dialog was confirmed (a 2xx ACKed) at some point
    pending: _Pending | None = None
    pending_direction: Direction | None = None
    sip_direction: Direction = Direction.SENDRECV
    policy_present: bool = False
    caller_attested: bool = False
    assessed: bool = False  # the G§7 downgrade check has run for this crossing
    timer_c: int | None = None  # deadline

    def release(self) -> list[Emission]:
        if not self.bridged:
            return []
        self.bridged = False
        return [Media(MediaAction.RELEASE)]

    def bridge(self) -> list[Emission]:
        self.bridged = True
        return [Media(MediaAction.BRIDGE)]

    def end(self, sip: SipLeg | None = None) -> None:
        self.dsip = DsipLeg.ENDED
        if sip is not None:
            self.sip = sip
        if self.sip is SipLeg.TERMINATED:
            self.timer_c = None
        self.pending = None


@dataclass(frozen=True)
class _Step:
    now: int


Handler: TypeAlias = Callable[[_Call, Any, _Step], list[Emission]]


# --- small helpers ----------------------------------------------------------------------------


def _retry_after(call: _Call, token: str, asked: int | None) -> int | None:
    """decision: a DSIP ``retry_after`` > 0 travels as Retry-After on any refusal; a refusal
    whose row requires one (``policy.rate-limited`` → 503) gets the trunk default when the DSIP
    side named none — RFC 3261 §21.5.4 treats a 503 without it as a 500."""
    if asked is not None and asked > 0:
        return asked
    return call.trunk.retry_after_default if final_response_for(token).retry_after else None


def _refuse_invite(call: _Call, token: str, retry_after: int | None = None) -> SendSipResponse:
    final = final_response_for(token)
    return SendSipResponse(
        final.status,
        q850=final.q850,
        reason=final.reason,
        retry_after=_retry_after(call, final.reason, retry_after),
    )


def _bye(token: str) -> SendSipRequest:
    bye = bye_for(token)
    return SendSipRequest("BYE", in_dialog=True, q850=bye.q850, reason=bye.reason)


def _cancel(reason: str | None) -> SendSipRequest:
    # decision: a CANCEL carries only the DSIP token (no Q.850: G§4.2 gives user.cancelled none)
    return SendSipRequest("CANCEL", reason=reason)


def _arm_timer_c(call: _Call, step: _Step) -> None:
    call.timer_c = step.now + call.trunk.timer_c


# --- handlers: outbound (G§3.1) ---------------------------------------------------------------


def _send_invite(call: _Call, ev: DsipInvite, step: _Step) -> list[Emission]:
    call.policy_present = ev.policy_present
    call.dsip, call.sip = DsipLeg.INVITING, SipLeg.CALLING
    _arm_timer_c(call, step)
    return [SendSipRequest("INVITE")]


def _nothing(call: _Call, ev: object, step: _Step) -> list[Emission]:
    return []


def _early_media_answers(call: _Call, ev: SipResponse) -> bool | str:
    """G§8 for a 183 with SDP: ``True`` answer and bridge, ``False`` only ring, or the reason
    token of a classified announcement. decision: under ``auto`` a 183 is classified by the
    mapped Q.850 cause its ``Reason`` header carries (ISUP interworking puts the cause of an
    in-band announcement there); early media without one is passed through."""
    if ev.status != 183 or not ev.sdp:
        return False
    policy = call.trunk.early_media
    if policy is EarlyMediaPolicy.NEVER:
        return False
    if policy is EarlyMediaPolicy.AUTO and ev.q850 is not None:
        mapped = map_inbound(Phase.PRE_ANSWER, q850=ev.q850)
        if mapped.reason != "gateway.mapped" and mapped.reason != "user.hangup":
            return mapped.reason
    return True


def _progress_for(call: _Call, status: int) -> list[Emission]:
    """decision: 180/183 → ``ringing`` (once); 181 → ``forwarded``; 182 → ``queued``; any
    other provisional says nothing the DSIP caller can use."""
    if status in (180, 183):
        if call.alerted:
            return []
        call.alerted = True
        return [DsipLocal(DsipAction.ALERT)]
    named = {181: "forwarded", 182: "queued"}.get(status)
    return [] if named is None else [DsipLocal(DsipAction.PROGRESS, status=named)]


def _on_provisional(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    _arm_timer_c(call, step)  # RFC 3261 §16.7: a provisional response resets Timer C
    call.sip = SipLeg.EARLY
    if call.dsip is DsipLeg.INVITING:
        call.dsip = DsipLeg.PROCEEDING
    out = _progress_for(call, ev.status)
    early = _early_media_answers(call, ev)
    if isinstance(early, str):  # an announcement we can name: refuse with its reason
        call.end()
        detail = f"Q.850 {ev.q850}"
        return [
            *out,
            _cancel(early),
            DsipLocal(DsipAction.AUTO_REJECT, reason=early, detail=detail),
        ]
    if early:
        call.dsip = DsipLeg.ACTIVE
        out.append(DsipLocal(DsipAction.ACCEPT, answered_by="gateway"))
        out += call.bridge()
    return out


def _on_answered(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """2xx: ACK, answer the DSIP leg ``answered_by: gateway`` (G§10) and bridge."""
    call.timer_c = None
    call.dsip, call.sip, call.confirmed = DsipLeg.ACTIVE, SipLeg.CONFIRMED, True
    call.sip_direction = ev.direction or Direction.SENDRECV
    return [
        SendSipRequest("ACK", in_dialog=True),
        DsipLocal(DsipAction.ACCEPT, answered_by="gateway"),
        *call.bridge(),
    ]


def _on_answered_after_early_media(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """The DSIP leg was answered on early media; the 2xx only confirms the SIP dialog."""
    call.timer_c = None
    call.sip, call.confirmed = SipLeg.CONFIRMED, True
    call.sip_direction = ev.direction or Direction.SENDRECV
    return [SendSipRequest("ACK", in_dialog=True)]


def _on_refused(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """3xx–6xx before the answer → ``reject`` with the G§4.1 reason. 3xx is not followed
    (single contact, spec-gap 29): it maps like any other final."""
    mapped = map_inbound(Phase.PRE_ANSWER, sip_status=ev.status, q850=ev.q850, moved_to=ev.moved_to)
    call.end(SipLeg.TERMINATED)
    return [DsipLocal(DsipAction.AUTO_REJECT, reason=mapped.reason, detail=mapped.detail)]


def _on_refused_after_early_media(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """A final ≥ 300 after early media answered the DSIP leg: ``bye`` with the ACTIVE mapping
    (attempt tokens become ``gateway.mapped``, G§3.1)."""
    mapped = map_inbound(Phase.ACTIVE, sip_status=ev.status, q850=ev.q850, moved_to=ev.moved_to)
    call.end(SipLeg.TERMINATED)
    hangup = DsipLocal(DsipAction.HANGUP, reason=mapped.reason, detail=mapped.detail)
    return [hangup, *call.release()]


def _cancel_sip(
    call: _Call, ev: DsipCancel | DsipBye | DsipLegEnded, step: _Step
) -> list[Emission]:
    """The DSIP side withdrew before the SIP leg was confirmed: CANCEL it. The SIP leg stays
    as it is until its final response (487, or a 2xx crossing the CANCEL)."""
    call.end()
    return [_cancel(ev.reason), *call.release()]


def _bye_crossed_answer(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """A 2xx crossing our CANCEL: ACK it, then ``BYE session.cancelled`` (§12.5 rule 3)."""
    call.end(SipLeg.TERMINATED)
    call.confirmed = True  # ACKed: a retransmission of this 2xx is only ACKed again
    return [SendSipRequest("ACK", in_dialog=True), _bye("session.cancelled")]


def _sip_closed(call: _Call, ev: object, step: _Step) -> list[Emission]:
    """The final response to a cancelled INVITE (487): the SIP leg is done."""
    call.end(SipLeg.TERMINATED)
    return []


def _late_provisional(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    call.sip = SipLeg.EARLY
    return []


def _late_answer(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """A 2xx after the SIP leg was given up (Timer C) is ACKed and, if this dialog was never
    confirmed, torn down; a retransmitted 2xx is only ACKed again (RFC 3261 §13.2.2.4)."""
    if call.confirmed:
        return [SendSipRequest("ACK", in_dialog=True)]
    call.confirmed = True
    return [SendSipRequest("ACK", in_dialog=True), _bye("session.cancelled")]


def _timer_c_unanswered(call: _Call, ev: TimerC, step: _Step) -> list[Emission]:
    """No final response in time: CANCEL, ``reject gateway.unreachable`` (G§3.1). The SIP leg
    is given up at once: nothing more is awaited from it."""
    call.end(SipLeg.TERMINATED)
    reject = DsipLocal(DsipAction.AUTO_REJECT, reason="gateway.unreachable", detail="SIP Timer C")
    return [_cancel(None), reject]


def _timer_c_early_media(call: _Call, ev: TimerC, step: _Step) -> list[Emission]:
    call.end(SipLeg.TERMINATED)
    hangup = DsipLocal(DsipAction.HANGUP, reason="gateway.unreachable", detail="SIP Timer C")
    return [_cancel(None), hangup, *call.release()]


def _timer_c_after_cancel(call: _Call, ev: TimerC, step: _Step) -> list[Emission]:
    """The cancelled SIP leg never sent its final response: stop waiting for it."""
    call.end(SipLeg.TERMINATED)
    return []


def _bye_after_crossed_cancel(call: _Call, ev: DsipCancel, step: _Step) -> list[Emission]:
    """A DSIP ``cancel`` that crossed our answer (§12.5): the DSIP leg ends; so does SIP."""
    call.end(SipLeg.TERMINATED)
    return [_bye(ev.reason or "user.cancelled"), *call.release()]


# --- handlers: inbound (G§3.2) ----------------------------------------------------------------


def _place_call(call: _Call, ev: SipInvite, step: _Step) -> list[Emission]:
    presentation = caller_claim(ev.from_tn, ev.passport, verifier=call.gateway, cnam=ev.cnam)
    claim = presentation.claim
    call.caller_attested = claim is not None and claim.verified
    call.dsip, call.sip = DsipLeg.OFFERED, SipLeg.EARLY
    return [DsipLocal(DsipAction.PLACE_CALL, caller=presentation), SendSipResponse(100)]


_PROGRESS_RESPONSES: Final[Mapping[str, int]] = {"ringing": 180, "forwarded": 181, "queued": 182}


def _on_dsip_progress(call: _Call, ev: DsipProgress, step: _Step) -> list[Emission]:
    """decision: ``ringing`` → 180 once (alerting); ``forwarded`` → 181, ``queued`` → 182
    (RFC 3261 §21.1); ``trying`` says nothing the 100 did not."""
    status = effective_status(ev.status)
    if status == "ringing":
        if call.dsip is DsipLeg.ALERTING:
            return []
        call.dsip = DsipLeg.ALERTING
    code = _PROGRESS_RESPONSES.get(status)
    return [] if code is None else [SendSipResponse(code)]


def _on_dsip_answer(call: _Call, ev: DsipAnswer, step: _Step) -> list[Emission]:
    """200 OK and bridge. A screening answer (§14.4) is ``sendonly`` toward the PSTN, as G§3.2
    and the vectors pin it; any other answer takes its own direction, ``sendrecv`` if none."""
    if effective_answered_by(ev.answered_by) == "screening":
        direction = Direction.SENDONLY
    else:
        direction = ev.direction or Direction.SENDRECV
    call.dsip, call.sip, call.confirmed = DsipLeg.ACTIVE, SipLeg.CONFIRMED, True
    call.sip_direction = direction
    return [SendSipResponse(200, direction=direction), *call.bridge()]


def _on_dsip_reject(call: _Call, ev: DsipReject, step: _Step) -> list[Emission]:
    """The mapped final response, the DSIP token in ``Reason`` (G§3.2, G§4.2)."""
    call.end(SipLeg.TERMINATED)
    return [_refuse_invite(call, ev.reason, ev.retry_after)]


def _on_dsip_gave_up(call: _Call, ev: DsipLegEnded, step: _Step) -> list[Emission]:
    """Our DSIP engine ended the attempt (T-Establish/T-Ring: ``session.timeout`` → 480)."""
    call.end(SipLeg.TERMINATED)
    return [_refuse_invite(call, ev.reason)]


def _on_sip_cancel(call: _Call, ev: SipRequest, step: _Step) -> list[Emission]:
    """CANCEL (or a BYE on the early dialog): 200 to it, ``cancel`` the DSIP leg, 487 to the
    INVITE. decision: ``Reason: SIP;cause=200`` (answered elsewhere) keeps its meaning as
    ``session.answered-elsewhere`` so the callee shows no missed call."""
    call.end(SipLeg.TERMINATED)
    reason = "session.answered-elsewhere" if ev.completed_elsewhere else None
    return [
        SendSipResponse(200, method=ev.method),
        DsipLocal(DsipAction.CANCEL, reason=reason),
        SendSipResponse(487),
    ]


def _cancel_too_late(call: _Call, ev: SipRequest, step: _Step) -> list[Emission]:
    """A CANCEL after the final response has no effect but is answered (RFC 3261 §9.2)."""
    return [SendSipResponse(200, method="CANCEL")]


# --- handlers: both directions, ACTIVE ----------------------------------------------------------


def _bye_sip(call: _Call, ev: DsipBye | DsipLegEnded, step: _Step) -> list[Emission]:
    call.end(SipLeg.TERMINATED)
    return [_bye(ev.reason or "user.hangup"), *call.release()]


def _on_sip_bye(call: _Call, ev: SipRequest, step: _Step) -> list[Emission]:
    """200 to the BYE, ``bye`` on the DSIP leg with the ACTIVE mapping (no cause →
    ``user.hangup``), release the bridge."""
    mapped = map_inbound(Phase.ACTIVE, q850=ev.q850)
    call.end(SipLeg.TERMINATED)
    hangup = DsipLocal(DsipAction.HANGUP, reason=mapped.reason, detail=mapped.detail)
    return [SendSipResponse(200, method="BYE"), hangup, *call.release()]


def _decline_refer(call: _Call, ev: SipRequest, step: _Step) -> list[Emission]:
    """Transfer is out of scope in this version (G§1): 603 Decline (G§3.2)."""
    return [SendSipResponse(603, method="REFER")]


def _on_sip_reinvite(call: _Call, ev: SipReinvite, step: _Step) -> list[Emission]:
    """A trunk re-INVITE becomes a DSIP ``update`` with the same direction (the gateway plays
    the trunk's part on the DSIP leg). One renegotiation at a time across the bridge: a
    second one gets 491 Request Pending (RFC 3261 §14.2)."""
    if call.pending is not None:
        return [SendSipResponse(491)]
    if not ev.sdp_changed:
        return [SendSipResponse(200, direction=call.sip_direction)]
    call.pending, call.pending_direction = _Pending.SIP, ev.direction
    return [DsipLocal(DsipAction.UPDATE, direction=ev.direction)]


def _on_dsip_update(call: _Call, ev: DsipUpdate, step: _Step) -> list[Emission]:
    """A DSIP ``update`` (escalation after screening, hold) becomes a re-INVITE mirroring the
    direction. decision: while one renegotiation is in flight, the DSIP update is refused
    with ``session.glare`` (§12.8 rule 3's token for crossing updates)."""
    if call.pending is not None:
        return [DsipLocal(DsipAction.REJECT_UPDATE, reason="session.glare")]
    call.pending, call.pending_direction = _Pending.DSIP, ev.direction
    return [SendSipRequest("INVITE", in_dialog=True, direction=ev.direction)]


def _on_update_answered(call: _Call, ev: DsipAnswer, step: _Step) -> list[Emission]:
    if call.pending is not _Pending.SIP:
        return [Ignored("answer without a pending update")]
    direction = ev.direction or call.pending_direction or Direction.SENDRECV
    call.pending, call.sip_direction = None, direction
    return [SendSipResponse(200, direction=direction)]


def _on_update_rejected(call: _Call, ev: DsipReject, step: _Step) -> list[Emission]:
    """The DSIP side refused the update: the re-INVITE fails with the mapped status; a failed
    re-INVITE leaves the dialog as it was (RFC 3261 §14.2)."""
    if call.pending is not _Pending.SIP:
        return [Ignored("reject without a pending update")]
    call.pending = None
    return [_refuse_invite(call, ev.reason, ev.retry_after)]


def _on_reinvite_answered(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """2xx to our re-INVITE: ACK, and the DSIP update is answered; otherwise a retransmitted
    2xx of the initial INVITE, ACKed again."""
    ack = SendSipRequest("ACK", in_dialog=True)
    if call.pending is not _Pending.DSIP:
        return [ack]
    direction = ev.direction or call.pending_direction or Direction.SENDRECV
    call.pending, call.sip_direction = None, direction
    return [ack, DsipLocal(DsipAction.ANSWER_UPDATE, direction=direction)]


def _on_reinvite_refused(call: _Call, ev: SipResponse, step: _Step) -> list[Emission]:
    """A final ≥ 300 to our re-INVITE: the DSIP update is rejected with the mapped reason;
    408 and 481 mean the dialog is gone (RFC 3261 §14.1), so the call ends."""
    if call.pending is not _Pending.DSIP:
        return [Ignored("final response without a pending re-INVITE")]
    call.pending = None
    if ev.status not in (408, 481):
        mapped = map_inbound(Phase.PRE_ANSWER, sip_status=ev.status, q850=ev.q850)
        return [DsipLocal(DsipAction.REJECT_UPDATE, reason=mapped.reason, detail=mapped.detail)]
    # the call ends; the bye discards the DSIP update with it (§12.8 rule 6)
    call.end(SipLeg.TERMINATED)
    ended = map_inbound(Phase.ACTIVE, sip_status=ev.status, q850=ev.q850)
    bye = [_bye("gateway.mapped")] if ev.status == 408 else []  # 481: no dialog to BYE
    hangup = DsipLocal(DsipAction.HANGUP, reason=ended.reason, detail=ended.detail)
    return [*bye, hangup, *call.release()]


def _refuse_early_update(call: _Call, ev: DsipUpdate, step: _Step) -> list[Emission]:
    """decision: no re-INVITE on an early dialog; the DSIP update is refused until the trunk
    answers (``session.invalid-state``, §15.6 lets a receiver apply it on ``reject``)."""
    return [DsipLocal(DsipAction.REJECT_UPDATE, reason="session.invalid-state")]


# --- the table --------------------------------------------------------------------------------

_O, _I, _BOTH = CallDirection.OUTBOUND, CallDirection.INBOUND, None
_D, _S, _T = DsipLeg, SipLeg, Trigger

#: G§3 as a table: (direction | None for both, DSIP leg, SIP leg, trigger) → handler. The
#: comment names the (DSIP, SIP) states the handler normally moves to.
TRANSITIONS: Final[Mapping[tuple[CallDirection | None, DsipLeg, SipLeg, Trigger], Handler]] = {
    # -- outbound: DSIP → PSTN (G§3.1) ------------------------------------------------------------
    (_O, _D.IDLE, _S.IDLE, _T.DSIP_INVITE): _send_invite,  # → inviting, calling
    (_O, _D.INVITING, _S.CALLING, _T.SIP_TRYING): _nothing,
    (_O, _D.INVITING, _S.CALLING, _T.SIP_PROVISIONAL): _on_provisional,  # → proceeding|active
    (_O, _D.PROCEEDING, _S.EARLY, _T.SIP_PROVISIONAL): _on_provisional,  # → proceeding|active
    (_O, _D.INVITING, _S.CALLING, _T.SIP_SUCCESS): _on_answered,  # → active, confirmed
    (_O, _D.PROCEEDING, _S.EARLY, _T.SIP_SUCCESS): _on_answered,  # → active, confirmed
    (_O, _D.INVITING, _S.CALLING, _T.SIP_FAILURE): _on_refused,  # → ended, terminated
    (_O, _D.PROCEEDING, _S.EARLY, _T.SIP_FAILURE): _on_refused,  # → ended, terminated
    (_O, _D.INVITING, _S.CALLING, _T.DSIP_CANCEL): _cancel_sip,  # → ended, calling
    (_O, _D.PROCEEDING, _S.EARLY, _T.DSIP_CANCEL): _cancel_sip,  # → ended, early
    (_O, _D.INVITING, _S.CALLING, _T.DSIP_LEG_ENDED): _cancel_sip,  # → ended, calling
    (_O, _D.PROCEEDING, _S.EARLY, _T.DSIP_LEG_ENDED): _cancel_sip,  # → ended, early
    (_O, _D.INVITING, _S.CALLING, _T.TIMER_C): _timer_c_unanswered,  # → ended, terminated
    (_O, _D.PROCEEDING, _S.EARLY, _T.TIMER_C): _timer_c_unanswered,  # → ended, terminated
    # answered on early media (G§8), SIP dialog still early
    (_O, _D.ACTIVE, _S.EARLY, _T.SIP_PROVISIONAL): _nothing,
    (_O, _D.ACTIVE, _S.EARLY, _T.SIP_SUCCESS): _on_answered_after_early_media,  # → confirmed
    (_O, _D.ACTIVE, _S.EARLY, _T.SIP_FAILURE): _on_refused_after_early_media,  # → ended, term.
    (_O, _D.ACTIVE, _S.EARLY, _T.DSIP_BYE): _cancel_sip,  # → ended, early
    (_O, _D.ACTIVE, _S.EARLY, _T.DSIP_CANCEL): _cancel_sip,  # → ended, early
    (_O, _D.ACTIVE, _S.EARLY, _T.DSIP_LEG_ENDED): _cancel_sip,  # → ended, early
    (_O, _D.ACTIVE, _S.EARLY, _T.DSIP_UPDATE): _refuse_early_update,
    (_O, _D.ACTIVE, _S.EARLY, _T.TIMER_C): _timer_c_early_media,  # → ended, terminated
    (_O, _D.ACTIVE, _S.CONFIRMED, _T.DSIP_CANCEL): _bye_after_crossed_cancel,  # → ended, term.
    # the DSIP leg is over, the SIP INVITE transaction is not (CANCEL sent)
    (_O, _D.ENDED, _S.CALLING, _T.SIP_TRYING): _nothing,
    (_O, _D.ENDED, _S.CALLING, _T.SIP_PROVISIONAL): _late_provisional,  # → early
    (_O, _D.ENDED, _S.EARLY, _T.SIP_PROVISIONAL): _nothing,
    (_O, _D.ENDED, _S.CALLING, _T.SIP_SUCCESS): _bye_crossed_answer,  # → terminated
    (_O, _D.ENDED, _S.EARLY, _T.SIP_SUCCESS): _bye_crossed_answer,  # → terminated
    (_O, _D.ENDED, _S.CALLING, _T.SIP_FAILURE): _sip_closed,  # → terminated
    (_O, _D.ENDED, _S.EARLY, _T.SIP_FAILURE): _sip_closed,  # → terminated
    (_O, _D.ENDED, _S.CALLING, _T.TIMER_C): _timer_c_after_cancel,  # → terminated
    (_O, _D.ENDED, _S.EARLY, _T.TIMER_C): _timer_c_after_cancel,  # → terminated
    (_O, _D.ENDED, _S.TERMINATED, _T.SIP_SUCCESS): _late_answer,  # terminated
    # -- inbound: PSTN → DSIP (G§3.2) -------------------------------------------------------------
    (_I, _D.IDLE, _S.IDLE, _T.SIP_INVITE): _place_call,  # → offered, early
    (_I, _D.OFFERED, _S.EARLY, _T.DSIP_PROGRESS): _on_dsip_progress,  # → alerting
    (_I, _D.ALERTING, _S.EARLY, _T.DSIP_PROGRESS): _on_dsip_progress,  # alerting
    (_I, _D.OFFERED, _S.EARLY, _T.DSIP_ANSWER): _on_dsip_answer,  # → active, confirmed
    (_I, _D.ALERTING, _S.EARLY, _T.DSIP_ANSWER): _on_dsip_answer,  # → active, confirmed
    (_I, _D.OFFERED, _S.EARLY, _T.DSIP_REJECT): _on_dsip_reject,  # → ended, terminated
    (_I, _D.ALERTING, _S.EARLY, _T.DSIP_REJECT): _on_dsip_reject,  # → ended, terminated
    (_I, _D.OFFERED, _S.EARLY, _T.DSIP_LEG_ENDED): _on_dsip_gave_up,  # → ended, terminated
    (_I, _D.ALERTING, _S.EARLY, _T.DSIP_LEG_ENDED): _on_dsip_gave_up,  # → ended, terminated
    (_I, _D.OFFERED, _S.EARLY, _T.SIP_CANCEL): _on_sip_cancel,  # → ended, terminated
    (_I, _D.ALERTING, _S.EARLY, _T.SIP_CANCEL): _on_sip_cancel,  # → ended, terminated
    (_I, _D.OFFERED, _S.EARLY, _T.SIP_BYE): _on_sip_cancel,  # → ended, terminated
    (_I, _D.ALERTING, _S.EARLY, _T.SIP_BYE): _on_sip_cancel,  # → ended, terminated
    (_I, _D.ACTIVE, _S.CONFIRMED, _T.SIP_CANCEL): _cancel_too_late,
    (_I, _D.ENDED, _S.TERMINATED, _T.SIP_CANCEL): _cancel_too_late,
    # -- both directions: the answered call -----------------------------------------------------
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.SIP_ACK): _nothing,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.SIP_BYE): _on_sip_bye,  # → ended, terminated
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.DSIP_BYE): _bye_sip,  # → ended, terminated
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.DSIP_LEG_ENDED): _bye_sip,  # → ended, terminated
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.SIP_REFER): _decline_refer,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.SIP_REINVITE): _on_sip_reinvite,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.DSIP_UPDATE): _on_dsip_update,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.DSIP_ANSWER): _on_update_answered,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.DSIP_REJECT): _on_update_rejected,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.SIP_SUCCESS): _on_reinvite_answered,
    (_BOTH, _D.ACTIVE, _S.CONFIRMED, _T.SIP_FAILURE): _on_reinvite_refused,
}


def _lookup(
    direction: CallDirection, dsip: DsipLeg, sip: SipLeg, trigger: Trigger
) -> Handler | None:
    return TRANSITIONS.get((direction, dsip, sip, trigger)) or TRANSITIONS.get(
        (None, dsip, sip, trigger)
    )


def _no_row(call: _Call, trigger: Trigger, ev: Event) -> list[Emission]:
    """An event the state has no row for changes nothing. A SIP request still gets a final
    response: 481 once the dialog is gone (or never existed here), 500 otherwise."""
    if trigger.sip_request:
        gone = call.sip in (SipLeg.IDLE, SipLeg.TERMINATED)
        return [SendSipResponse(481 if gone else 500, method=_method_of(ev))]
    if trigger is Trigger.TIMER_C:
        return []
    return [Ignored(f"{trigger} in {call.dsip}/{call.sip}")]


def _method_of(ev: Event) -> str:
    return ev.method if isinstance(ev, SipRequest) else "INVITE"


# --- the controller -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallView:
    direction: CallDirection
    dsip: DsipLeg
    sip: SipLeg
    bridged: bool
    renegotiating: bool


class BridgedCall:
    """One call across the gateway (sans-I/O). ``gateway`` is the gateway's DID (the tel
    claim's verifier, G§2); ``trunk`` the profile of the trunk it crosses."""

    def __init__(
        self,
        direction: CallDirection,
        *,
        gateway: str,
        trunk: TrunkProfile | None = None,
    ) -> None:
        if not gateway.startswith("did:"):
            raise GatewayMisuseError(f"gateway must be the gateway's DID, not {gateway!r}")
        self._call = _Call(CallDirection(direction), gateway, trunk or TrunkProfile())

    # --- observation ----------------------------------------------------------------------

    @property
    def direction(self) -> CallDirection:
        return self._call.direction

    @property
    def dsip_state(self) -> DsipLeg:
        return self._call.dsip

    @property
    def sip_state(self) -> SipLeg:
        return self._call.sip

    def view(self) -> CallView:
        c = self._call
        return CallView(c.direction, c.dsip, c.sip, c.bridged, c.pending is not None)

    @property
    def finished(self) -> bool:
        """Both legs are over: the host may forget this call."""
        return self._call.dsip is DsipLeg.ENDED and self._call.sip is SipLeg.TERMINATED

    # --- the clock (aioquic's get_timer / handle_timer) -----------------------------------

    def next_deadline(self) -> int | None:
        """When SIP Timer C fires, or ``None`` when it is not running."""
        return self._call.timer_c

    def handle_timer(self, now: int) -> list[Emission]:
        deadline = self._call.timer_c
        if deadline is None or now < deadline:
            return []
        self._call.timer_c = None
        return self._dispatch(Trigger.TIMER_C, TimerC(), now)

    # --- events -----------------------------------------------------------------------------

    def handle(self, event: Event, *, now: int) -> list[Emission]:
        """Feed one event; return what the legs are told, in order."""
        trigger = _trigger_of(event)
        if trigger is None:
            return [Ignored(_why_unclassified(event))]
        out = self._dispatch(trigger, event, now)
        return out + self._assess_downgrade(event)

    def _dispatch(self, trigger: Trigger, event: Event, now: int) -> list[Emission]:
        c = self._call
        handler = _lookup(c.direction, c.dsip, c.sip, trigger)
        if handler is None:
            return _no_row(c, trigger, event)
        return handler(c, event, _Step(now))

    def _assess_downgrade(self, event: Event) -> list[Emission]:
        """G§7, once per crossing: when the trunk's SRTP mode first becomes known (the SDP of
        the INVITE, a 183/2xx or an ACK) and the DSIP leg is still alive, every loss known by
        then goes into one notice. decision: a trunk whose SDP never says (no SDP seen) is
        not assessed — the host, which configured the trunk, knows better than a guess."""
        c = self._call
        srtp = getattr(event, "srtp", None)
        if c.assessed or srtp is None or c.dsip in (DsipLeg.IDLE, DsipLeg.ENDED):
            return []
        c.assessed = True
        facts = CrossingFacts(
            direction=c.direction,
            trunk_srtp=srtp is not SrtpMode.NONE,
            identity_assertable=c.trunk.identity_assertable,
            caller_attested=c.caller_attested,
            policy_present=c.policy_present,
        )
        notice = downgrade_notice(facts)
        return [] if notice is None else [Downgraded(notice)]


_DSIP_TRIGGERS: Final[Mapping[type, Trigger]] = {
    DsipInvite: Trigger.DSIP_INVITE,
    DsipProgress: Trigger.DSIP_PROGRESS,
    DsipAnswer: Trigger.DSIP_ANSWER,
    DsipReject: Trigger.DSIP_REJECT,
    DsipCancel: Trigger.DSIP_CANCEL,
    DsipBye: Trigger.DSIP_BYE,
    DsipUpdate: Trigger.DSIP_UPDATE,
    DsipLegEnded: Trigger.DSIP_LEG_ENDED,
    SipInvite: Trigger.SIP_INVITE,
    SipReinvite: Trigger.SIP_REINVITE,
    TimerC: Trigger.TIMER_C,
}


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 699


def _trigger_of(event: Event) -> Trigger | None:
    if isinstance(event, SipResponse):
        if not _is_status(event.status) or event.method != "INVITE":
            return None  # only INVITE transactions drive the call; BYE/CANCEL answers do not
        if event.status == 100:
            return Trigger.SIP_TRYING
        if event.status < 200:
            return Trigger.SIP_PROVISIONAL
        return Trigger.SIP_SUCCESS if event.status < 300 else Trigger.SIP_FAILURE
    if isinstance(event, SipRequest):
        return _SIP_METHOD_TRIGGERS.get(event.method.upper(), Trigger.SIP_OTHER)
    return _DSIP_TRIGGERS.get(type(event))


def _why_unclassified(event: Event) -> str:
    if isinstance(event, SipResponse) and _is_status(event.status):
        return f"{event.method} response needs no action"
    return f"not an event this controller knows: {type(event).__name__}"


# --- DSIP payloads → events ---------------------------------------------------------------------


def _direction_of(payload: Mapping[str, Any]) -> Direction | None:
    """The first audio descriptor's direction (§16.2), else the first descriptor's."""
    media = payload.get("media")
    if not isinstance(media, list):
        return None
    entries = [m for m in media if isinstance(m, Mapping)]
    chosen = next((m for m in entries if m.get("type") == "audio"), entries[0] if entries else None)
    value = None if chosen is None else chosen.get("direction")
    return Direction(value) if value in {d.value for d in Direction} else None


def _str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def dsip_event_from_payload(payload: Mapping[str, Any]) -> DsipEvent | None:
    """A verified DSIP payload (signature, replay and schema already checked) as the event for
    :meth:`BridgedCall.handle`; ``None`` for types the controller does not act on."""
    kind = payload.get("type")
    reason = _str(payload, "reason")
    retry = payload.get("retry_after")
    retry_after = retry if isinstance(retry, int) and not isinstance(retry, bool) else None
    match kind:
        case "invite":
            return DsipInvite(policy_present=isinstance(payload.get("policy"), Mapping))
        case "progress":
            return DsipProgress(_str(payload, "status") or "trying")
        case "answer":
            return DsipAnswer(
                _str(payload, "answered_by") or "user",
                _direction_of(payload),
                _str(payload, "in_reply_to"),
            )
        case "reject":
            return DsipReject(reason or "session.failed", retry_after, _str(payload, "in_reply_to"))
        case "cancel":
            return DsipCancel(reason)
        case "bye":
            return DsipBye(reason)
        case "update":
            return DsipUpdate(_direction_of(payload) or Direction.SENDRECV)
    return None
