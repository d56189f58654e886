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
    "EffectiveReason",
    "effective_answered_by",
    "effective_status",
    "interpret_reason",
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
