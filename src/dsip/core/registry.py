"""The v0.7 registries a receiver interprets (§14.3, §12.10, §15.3–§15.4, §7.5).

Registry membership never rejects a well-formed value (schemas check shape). It yields
the *effective* interpretation:

* reason tokens: registered → itself (``fallback: none``); unregistered condition in a
  known category → the category's behaviour (``fallback: category``); unknown category →
  ``session.failed`` (``fallback: unknown-category``). A registered token on a message
  type the registry does not list it for is accepted with the warning
  ``reason-not-valid-on-type`` (§15.6: "MUST NOT reject on that ground").
* ``answered_by``: unknown → ``service`` (the conservative rendering, §14.3).
* ``progress.status``: unknown → ``trying`` (§12.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "ANSWERED_BY",
    "CATEGORIES",
    "PROGRESS_STATUSES",
    "REASONS",
    "ROTATION_REASONS",
    "SEED_ERROR_CODES",
    "EffectiveReason",
    "effective_answered_by",
    "effective_status",
    "interpret_reason",
    "reason_from_seed",
    "seed_error_code",
]

# Category → default behaviour for an unknown condition (§15.3), shown to users and logs.
CATEGORIES: Final = MappingProxyType(
    {
        "user": "a person decided; do not auto-retry",
        "endpoint": "device state; another device or a later retry may succeed",
        "identity": "about the identity itself; terminal without new information",
        "session": "protocol lifecycle; per the state machine, generally terminal",
        "media": "negotiation failed; retry only with a changed offer",
        "policy": "a policy refused; retry only after meeting its requirement",
        "transport": "binding condition; reconnect/retry per binding rules",
        "gateway": "beyond a gateway; mapped semantics, downgraded trust",
    }
)

_R, _B, _C, _E = "reject", "bye", "cancel", "error"

# token → message types it is listed as valid on (§15.4).
REASONS: Final = MappingProxyType(
    {
        "user.declined": frozenset({_R, _B}),
        "user.no-answer": frozenset({_R}),
        "user.hangup": frozenset({_B}),
        "user.cancelled": frozenset({_C}),
        "user.blocked": frozenset({_R}),
        "endpoint.busy": frozenset({_R}),
        "endpoint.unavailable": frozenset({_R}),
        "endpoint.capability": frozenset({_R}),
        "identity.not-in-service": frozenset({_R, _E}),
        "identity.moved": frozenset({_R}),
        "identity.suspended": frozenset({_R}),
        "identity.unknown": frozenset({_R, _E}),
        "session.expired": frozenset({_R}),
        "session.timeout": frozenset({_C}),
        "session.glare": frozenset({_R, _C}),
        "session.answered-elsewhere": frozenset({_C}),
        "session.already-answered": frozenset({_B}),
        "session.cancelled": frozenset({_B}),
        "session.invalid-state": frozenset({_E}),
        "session.unknown-session": frozenset({_E}),
        "session.update-pending": frozenset({_E}),
        "session.unsupported-core-version": frozenset({_R, _E}),
        "session.unsupported-profile-version": frozenset({_R, _E}),
        "session.unsupported-critical-extension": frozenset({_R, _E}),
        "session.version-downgrade-detected": frozenset({_E}),
        "session.unsupported-wire-format": frozenset({_E}),
        "session.failed": frozenset({_R, _B, _E}),
        "media.unsupported": frozenset({_R}),
        "media.offer-required": frozenset({_R}),
        "media.encryption-required": frozenset({_R}),
        "media.failed": frozenset({_B}),
        "policy.trust-insufficient": frozenset({_R}),
        "policy.first-contact-required": frozenset({_R}),
        "policy.blocked": frozenset({_R, _C}),
        "policy.terminated": frozenset({_B}),
        "policy.rate-limited": frozenset({_R, _E}),
        "policy.subscription-lifetime": frozenset({_E}),
        "transport.envelope-too-large": frozenset({_E}),
        "transport.hello-required": frozenset({_E}),
        "transport.hello-rejected": frozenset({_E}),
        "transport.routing-refused": frozenset({_E}),
        "transport.unknown-recipient": frozenset({_E}),
        "transport.rate-limited": frozenset({_E}),
        "gateway.unreachable": frozenset({_R, _E}),
        "gateway.downgraded": frozenset({_E}),
        "gateway.mapped": frozenset({_R, _B, _E}),
    }
)

ANSWERED_BY: Final = frozenset({"user", "service", "screening", "gateway"})
PROGRESS_STATUSES: Final = frozenset({"trying", "ringing", "queued", "forwarded"})
ROTATION_REASONS: Final = frozenset({"scheduled", "compromised", "lost", "policy"})

# Message types whose top-level ``reason`` is a dsip-reason token.
REASON_BEARING: Final = frozenset({"reject", "cancel", "bye", "error"})


@dataclass(frozen=True, slots=True)
class EffectiveReason:
    reason: str
    fallback: str  # none | category | unknown-category
    valid_on_type: bool

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "fallback": self.fallback}


def interpret_reason(token: str, message_type: str | None = None) -> EffectiveReason:
    if token in REASONS:
        valid = message_type is None or message_type in REASONS[token]
        return EffectiveReason(token, "none", valid)
    category = token.split(".", 1)[0]
    if category in CATEGORIES:
        return EffectiveReason(token, "category", True)
    return EffectiveReason("session.failed", "unknown-category", True)


def effective_answered_by(value: str) -> str:
    return value if value in ANSWERED_BY else "service"


def effective_status(value: str) -> str:
    return value if value in PROGRESS_STATUSES else "trying"


# --- the seed's numeric error model (§21.A) ------------------------------------------------
#
# The seed proposal's ``dsip.error`` carries a numeric ``code`` (4xx caller issues: auth,
# policy; 5xx callee/relay issues: capacity, unavailable; 6xx global failures: blocked) next
# to a reason string. v0.7 replaced numerics with reason tokens (§15.1). We speak v0.7 on the
# wire and keep this table for the seed's API surface, logs and the SIP gateway: every
# registered token has one code in the class the seed assigns to whose fault it is.
SEED_ERROR_CODES: Final = MappingProxyType(
    {
        # 4xx — the caller's side: authentication, policy, malformed or stale requests
        "session.failed": 400,
        "transport.hello-required": 401,
        "transport.hello-rejected": 401,
        "policy.trust-insufficient": 403,
        "policy.first-contact-required": 403,
        "policy.blocked": 403,
        "policy.terminated": 403,
        "policy.subscription-lifetime": 403,
        "identity.unknown": 404,
        "transport.unknown-recipient": 404,
        "session.timeout": 408,
        "session.invalid-state": 409,
        "session.update-pending": 409,
        "session.glare": 409,
        "identity.moved": 410,
        "identity.not-in-service": 410,
        "transport.envelope-too-large": 413,
        "media.offer-required": 415,
        "media.unsupported": 415,
        "media.encryption-required": 415,
        "session.unsupported-core-version": 426,
        "session.unsupported-profile-version": 426,
        "session.unsupported-critical-extension": 426,
        "session.version-downgrade-detected": 426,
        "session.unsupported-wire-format": 426,
        "policy.rate-limited": 429,
        "transport.rate-limited": 429,
        "session.unknown-session": 481,
        "user.cancelled": 487,
        "session.cancelled": 487,
        "session.already-answered": 487,
        "session.answered-elsewhere": 487,
        # 5xx — the callee's device or a relay/gateway on the way: capacity, availability
        "media.failed": 500,
        "endpoint.capability": 501,
        "transport.routing-refused": 502,
        "gateway.unreachable": 502,
        "gateway.mapped": 502,
        "gateway.downgraded": 502,
        "endpoint.busy": 503,
        "endpoint.unavailable": 503,
        "identity.suspended": 503,
        "session.expired": 504,
        "user.no-answer": 504,
        # 6xx — global: a decision that holds everywhere (declined, blocked, hung up)
        "user.declined": 603,
        "user.hangup": 600,
        "user.blocked": 607,
    }
)

# Family defaults for tokens outside the table (category fallback, §15.3).
_CATEGORY_CODES: Final = MappingProxyType(
    {
        "user": 603,
        "endpoint": 503,
        "identity": 404,
        "session": 400,
        "media": 415,
        "policy": 403,
        "transport": 502,
        "gateway": 502,
    }
)
# Code → the token a seed-style ``dsip.error`` maps to on the v0.7 wire.
_SEED_TO_TOKEN: Final = MappingProxyType(
    {
        400: "session.failed",
        401: "transport.hello-rejected",
        403: "policy.blocked",
        404: "identity.unknown",
        408: "session.timeout",
        409: "session.invalid-state",
        410: "identity.not-in-service",
        413: "transport.envelope-too-large",
        415: "media.unsupported",
        426: "session.unsupported-core-version",
        429: "policy.rate-limited",
        481: "session.unknown-session",
        487: "session.cancelled",
        500: "media.failed",
        501: "endpoint.capability",
        502: "transport.routing-refused",
        503: "endpoint.unavailable",
        504: "session.expired",
        600: "user.hangup",
        603: "user.declined",
        607: "user.blocked",
    }
)
_CLASS_TOKEN: Final = MappingProxyType(
    {4: "session.failed", 5: "endpoint.unavailable", 6: "user.declined"}
)


def seed_error_code(token: str) -> int:
    """The seed §21.A numeric code for a v0.7 reason token (category fallback for others)."""
    eff = interpret_reason(token)
    if eff.reason in SEED_ERROR_CODES:
        return SEED_ERROR_CODES[eff.reason]
    return _CATEGORY_CODES.get(eff.reason.split(".", 1)[0], 400)


def reason_from_seed(code: int, reason: str | None = None) -> str:
    """The v0.7 token for a seed ``dsip.error``: its ``reason`` if it is a registered token,
    else the code's token, else its class's (4xx/5xx/6xx) generic token."""
    if reason is not None and reason in REASONS:
        return reason
    if code in _SEED_TO_TOKEN:
        return _SEED_TO_TOKEN[code]
    return _CLASS_TOKEN.get(code // 100, "session.failed")
