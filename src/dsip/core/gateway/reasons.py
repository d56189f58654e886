"""Reason mapping across the gateway, both directions (Gateway Profile G§4, core §15.5).

Inbound (SIP/PSTN → DSIP), :func:`map_inbound`:

* a ``Reason: Q.850;cause=<n>`` wins over the SIP status when the cause is mapped
  (:data:`Q850_TO_REASON`); otherwise the status decides (:data:`SIP_STATUS_TO_REASON`);
  anything unmapped is ``gateway.mapped`` with the original code in ``detail`` — numerics
  are never tunnelled to DSIP clients (G§4);
* the carrying DSIP message follows the phase: ``reject`` before the answer, ``bye`` once
  ACTIVE, ``error`` for transport-scoped conditions;
* once ACTIVE, tokens that describe a failed *attempt* become ``gateway.mapped``
  (:data:`ATTEMPT_TOKENS`); a BYE without any code is ``user.hangup``.

Outbound (DSIP → SIP), :func:`map_outbound`: a pre-answer refusal becomes a SIP final
response (:data:`FINAL_RESPONSES`), an ACTIVE teardown a BYE (:func:`bye_for`). Both carry
the DSIP token itself as ``Reason: DSIP;text="<token>"`` (RFC 3326, spec-gap 24) next to any
``Q.850;cause=``. An unregistered token maps by its §15.1 category
(:data:`CATEGORY_FINAL_RESPONSES`) and still carries its literal text; an unknown category
maps as ``session.failed``.

:func:`parse_reason_header` reads RFC 3326 ``Reason`` values from the SIP side; it never
raises on hostile text.

Every function here is total over its input types: hostile integers and strings give a
mapping (at worst ``gateway.mapped`` / ``session.failed``), never an exception.
:class:`GatewayError` is the root of the gateway's own errors (SDP verdicts, misuse); it
lives here because every other gateway module already depends on this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from dsip.core.registry import CATEGORIES, REASONS
from dsip.errors import DsipError

__all__ = [
    "ATTEMPT_TOKENS",
    "CATEGORY_FINAL_RESPONSES",
    "FINAL_RESPONSES",
    "Q850_TO_REASON",
    "SIP_STATUS_TO_REASON",
    "Carry",
    "GatewayError",
    "GatewayMisuseError",
    "InboundReason",
    "Phase",
    "ReasonValue",
    "SipBye",
    "SipFinal",
    "SipOutcome",
    "bye_for",
    "final_response_for",
    "map_inbound",
    "map_outbound",
    "parse_reason_header",
    "q850_cause_of",
    "wire_token",
]


class GatewayError(DsipError):
    """A gateway-side condition. ``code`` is the verdict code (``unparseable``, ...)."""

    default_code = "gateway-error"
    default_reason = "gateway.mapped"


class GatewayMisuseError(GatewayError):
    """The host drove the gateway core wrongly (a programming error, never a peer's)."""

    default_code = "gateway-misuse"
    default_reason = "x-dsip.engine-misuse"
    default_remote = False


class Phase(StrEnum):
    """Where in the call a condition arises; decides the carrying message (G§4.1)."""

    PRE_ANSWER = "pre-answer"
    ACTIVE = "active"
    TRANSPORT = "transport"


class Carry(StrEnum):
    """The DSIP message that carries an inbound reason."""

    REJECT = "reject"
    BYE = "bye"
    ERROR = "error"


_CARRY: Final = MappingProxyType(
    {Phase.PRE_ANSWER: Carry.REJECT, Phase.ACTIVE: Carry.BYE, Phase.TRANSPORT: Carry.ERROR}
)

# --- inbound tables (G§4.1) ------------------------------------------------------------------

#: Q.850 cause → DSIP token. Checked before the SIP status: the cause is the more specific
#: signal (G§4).
Q850_TO_REASON: Final = MappingProxyType(
    {
        1: "identity.unknown",  # unallocated number
        16: "user.hangup",  # normal call clearing
        17: "endpoint.busy",  # user busy
        18: "endpoint.unavailable",  # no user responding
        19: "endpoint.unavailable",  # no answer from user (user alerted)
        20: "endpoint.unavailable",  # subscriber absent
        21: "user.declined",  # call rejected
        22: "identity.not-in-service",  # number changed (identity.moved with a successor)
        28: "identity.unknown",  # invalid number format
        31: "user.hangup",  # normal, unspecified
        34: "gateway.unreachable",  # no circuit/channel available
        38: "gateway.unreachable",  # network out of order
        41: "gateway.unreachable",  # temporary failure
        42: "gateway.unreachable",  # switching equipment congestion
        43: "gateway.unreachable",  # access information discarded
        44: "gateway.unreachable",  # requested circuit/channel not available
        47: "media.failed",  # resource unavailable, unspecified
        63: "media.unsupported",  # service or option not available
        65: "media.unsupported",  # bearer capability not implemented
        79: "media.unsupported",  # service or option not implemented
        102: "session.timeout",  # recovery on timer expiry
    }
)

#: SIP final status → DSIP token, used when no mapped Q.850 cause is present.
SIP_STATUS_TO_REASON: Final = MappingProxyType(
    {
        403: "policy.blocked",
        404: "identity.unknown",
        408: "endpoint.unavailable",
        410: "identity.not-in-service",  # identity.moved with a known successor
        415: "media.unsupported",
        480: "endpoint.unavailable",
        484: "identity.unknown",
        486: "endpoint.busy",
        487: "session.cancelled",
        488: "media.unsupported",
        502: "gateway.unreachable",
        503: "gateway.unreachable",
        504: "gateway.unreachable",
        600: "endpoint.busy",
        603: "user.declined",
        604: "identity.unknown",
        606: "media.unsupported",
    }
)

#: The deciding codes that mean "this number changed": with a known successor they become
#: ``identity.moved`` and the successor is the detail (§15.4, §15.5).
_NUMBER_CHANGED: Final = frozenset({"SIP 410", "Q.850 22"})

#: Tokens that describe the outcome of an *attempt*. Arriving once the DSIP leg is ACTIVE the
#: attempt has already succeeded, so they are reported as ``gateway.mapped`` (G§4). What
#: survives a mid-call teardown: ``user.hangup``, ``media.failed``, ``gateway.unreachable``.
ATTEMPT_TOKENS: Final = frozenset(
    {
        "endpoint.busy",
        "endpoint.unavailable",
        "user.declined",
        "identity.unknown",
        "identity.moved",
        "identity.not-in-service",
        "session.cancelled",
        "session.timeout",
        "policy.blocked",
        "media.unsupported",
    }
)

# What the DSIP side is told when the SIP side gave no code at all, per phase: a BYE without
# Reason is a normal hangup (G§4); a refusal without a code is an unmapped condition; a
# transport failure without a code means the far side could not be reached.
_NO_CODE: Final = MappingProxyType(
    {
        Phase.ACTIVE: "user.hangup",
        Phase.PRE_ANSWER: "gateway.mapped",
        Phase.TRANSPORT: "gateway.unreachable",
    }
)

_MAX_DETAIL: Final = 1024  # the schemas' `detail` maxLength


@dataclass(frozen=True)
class InboundReason:
    """What the DSIP leg is told: ``reason`` on a ``carry`` message, ``detail`` the original
    code (``SIP 486``, ``Q.850 17``) or a known successor."""

    reason: str
    carry: Carry
    detail: str | None = None


def map_inbound(
    phase: Phase,
    *,
    sip_status: int | None = None,
    q850: int | None = None,
    moved_to: str | None = None,
) -> InboundReason:
    """Map a SIP status and/or Q.850 cause to the DSIP reason for ``phase`` (G§4.1)."""
    carry = _CARRY[phase]
    reason, detail = _inbound_token(sip_status, q850)
    if moved_to and detail in _NUMBER_CHANGED:
        reason, detail = "identity.moved", moved_to
    if reason is None:
        reason = _NO_CODE[phase]
    elif phase is Phase.ACTIVE and reason in ATTEMPT_TOKENS:
        reason = "gateway.mapped"
    if reason == "user.hangup":
        detail = None  # a normal clearing says nothing a bare BYE does not
    if detail is not None and len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 1] + "…"
    return InboundReason(reason, carry, detail)


def _inbound_token(sip_status: int | None, q850: int | None) -> tuple[str | None, str | None]:
    """(token, detail) from the codes; token ``None`` when there is no code at all."""
    if q850 is not None and q850 in Q850_TO_REASON:
        return Q850_TO_REASON[q850], f"Q.850 {q850}"
    if sip_status is not None and sip_status in SIP_STATUS_TO_REASON:
        return SIP_STATUS_TO_REASON[sip_status], f"SIP {sip_status}"
    codes = [f"SIP {sip_status}"] if sip_status is not None else []
    codes += [f"Q.850 {q850}"] if q850 is not None else []
    if not codes:
        return None, None
    return "gateway.mapped", ", ".join(codes)


# --- outbound tables (G§4.2) -----------------------------------------------------------------


@dataclass(frozen=True)
class SipOutcome:
    """One row of the outbound table: SIP status, Q.850 cause, whether Retry-After goes too."""

    status: int
    cause: int | None
    retry_after: bool = False


_O = SipOutcome

#: Registered DSIP token → SIP final response (G§4.2). ``media.*`` and ``transport.*`` rows
#: are expanded for every registered token of those categories.
FINAL_RESPONSES: Final = MappingProxyType(
    {
        "user.declined": _O(603, 21),
        "user.blocked": _O(603, 21),
        "user.no-answer": _O(480, 19),
        "user.cancelled": _O(487, None),
        "endpoint.busy": _O(486, 17),
        "endpoint.unavailable": _O(480, 18),
        "endpoint.capability": _O(488, 79),
        "identity.not-in-service": _O(410, 22),
        "identity.moved": _O(410, 22),
        "identity.suspended": _O(403, 21),
        "identity.unknown": _O(404, 1),
        "session.expired": _O(480, 102),
        "session.timeout": _O(480, 102),
        "session.failed": _O(500, 41),
        **{t: _O(488, 65) for t in REASONS if t.startswith("media.")},
        "policy.blocked": _O(403, 21),
        "policy.trust-insufficient": _O(403, 21),
        "policy.first-contact-required": _O(403, 21),
        "policy.rate-limited": _O(503, 42, retry_after=True),
        "policy.terminated": _O(480, 31),
        **{t: _O(503, 41) for t in REASONS if t.startswith("transport.")},
        "transport.unknown-recipient": _O(404, 1),
        "gateway.unreachable": _O(503, 38),
        "gateway.mapped": _O(500, 41),
    }
)

#: §15.1 category → SIP final response for a token without its own row (G§4.2).
CATEGORY_FINAL_RESPONSES: Final = MappingProxyType(
    {
        "user": _O(603, 21),
        "endpoint": _O(480, 18),
        "identity": _O(404, 1),
        "session": _O(500, 41),
        "media": _O(488, 65),
        "policy": _O(403, 21),
        "transport": _O(503, 41),
        "gateway": _O(503, 38),
    }
)

#: Q.850 cause on a BYE (G§4.2): normal clearing, except a failed media path.
_BYE_CAUSES: Final = MappingProxyType({"user.hangup": 16, "media.failed": 47})
_NORMAL_CLEARING: Final = 16

_TOKEN_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,62}\.[a-z][a-z0-9-]{0,62}")


def wire_token(token: object) -> str:
    """The token as it may appear on the SIP side: itself when it is a well-formed reason
    token (the schemas' grammar), else ``session.failed`` — a hostile string never reaches a
    SIP header."""
    if isinstance(token, str) and _TOKEN_RE.fullmatch(token):
        return token
    return "session.failed"


def _category(token: str) -> str:
    category = token.split(".", 1)[0]
    return category if category in CATEGORIES else "session"  # §15.1: unknown → session


def _outcome(token: str) -> SipOutcome:
    return FINAL_RESPONSES.get(token) or CATEGORY_FINAL_RESPONSES[_category(token)]


@dataclass(frozen=True)
class SipFinal:
    """A pre-answer refusal on the SIP side: the final response to the INVITE."""

    status: int
    q850: int | None
    reason: str  # the DSIP token for `Reason: DSIP;text=`
    retry_after: bool = False

    @property
    def reason_header(self) -> tuple[str, ...]:
        return _reason_values(self.q850, self.reason)


@dataclass(frozen=True)
class SipBye:
    """An ACTIVE teardown on the SIP side: a BYE with the cause and the DSIP token."""

    q850: int
    reason: str

    @property
    def reason_header(self) -> tuple[str, ...]:
        return _reason_values(self.q850, self.reason)


def final_response_for(token: str) -> SipFinal:
    """The SIP final response refusing an INVITE for the DSIP ``token`` (G§4.2)."""
    token = wire_token(token)
    row = _outcome(token)
    return SipFinal(row.status, row.cause, token, row.retry_after)


def bye_for(token: str) -> SipBye:
    """The BYE ending an answered call for the DSIP ``token`` (G§4.2): ``media.failed`` is
    cause 47, ``user.hangup`` and every ``session.*`` are 16; other tokens keep the cause of
    their refusal row (``policy.terminated`` → 31), and 16 when that row has none."""
    token = wire_token(token)
    if token in _BYE_CAUSES:
        return SipBye(_BYE_CAUSES[token], token)
    if _category(token) == "session":
        return SipBye(_NORMAL_CLEARING, token)
    cause = _outcome(token).cause
    return SipBye(_NORMAL_CLEARING if cause is None else cause, token)


def map_outbound(token: str, phase: Phase) -> SipFinal | SipBye:
    """Pre-answer → :class:`SipFinal`; ACTIVE → :class:`SipBye`. A transport-scoped DSIP
    ``error`` has no SIP message of its own (the SIP stack reports its own transport)."""
    if phase is Phase.PRE_ANSWER:
        return final_response_for(token)
    if phase is Phase.ACTIVE:
        return bye_for(token)
    raise GatewayMisuseError(f"no SIP message carries a DSIP reason in phase {phase}")


# --- the Reason header (RFC 3326) ------------------------------------------------------------


def _reason_values(q850: int | None, token: str) -> tuple[str, ...]:
    """Header values, Q.850 first: ``Q.850;cause=17``, ``DSIP;text="endpoint.busy"``."""
    values = [] if q850 is None else [f"Q.850;cause={q850}"]
    return (*values, f'DSIP;text="{wire_token(token)}"')


@dataclass(frozen=True)
class ReasonValue:
    """One parsed ``Reason`` value: ``protocol`` (upper-cased), ``cause`` and ``text``."""

    protocol: str
    cause: int | None = None
    text: str | None = None


_MAX_REASON_HEADER: Final = 4096
_PROTOCOL_RE: Final = re.compile(r"[A-Za-z0-9.!%*_+`'~-]{1,32}")
_CAUSE_RE: Final = re.compile(r"[0-9]{1,5}")


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_reason_header(value: str) -> tuple[ReasonValue, ...]:
    """Every well-formed value of one ``Reason`` header (comma-separated, RFC 3326).
    Malformed values are skipped; hostile text gives ``()``, never an exception."""
    if not isinstance(value, str) or len(value) > _MAX_REASON_HEADER:
        return ()
    out = []
    for item in _split_outside_quotes(value, ","):
        params = _split_outside_quotes(item, ";")
        protocol = params[0].strip()
        if not _PROTOCOL_RE.fullmatch(protocol):
            continue
        cause: int | None = None
        text: str | None = None
        for param in params[1:]:
            name, _, raw = param.partition("=")
            name = name.strip().lower()
            if name == "cause" and _CAUSE_RE.fullmatch(raw.strip()):
                cause = int(raw.strip())
            elif name == "text":
                text = _unquote(raw)
        out.append(ReasonValue(protocol.upper(), cause, text))
    return tuple(out)


def q850_cause_of(headers: tuple[str, ...] | list[str]) -> int | None:
    """The first ``Q.850;cause=`` among ``Reason`` header values, or ``None``. Causes are
    7-bit (ITU-T Q.850 §2.2.5); anything larger is not a cause."""
    for header in headers:
        for v in parse_reason_header(header):
            if v.protocol == "Q.850" and v.cause is not None and v.cause <= 127:
                return v.cause
    return None
