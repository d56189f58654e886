"""Stateless post-schema checks (pipeline stage 14) and the effective interpretation.

Each check needs only the decoded payload and what the receiver already knows
(``SemanticContext``): the offer an answer refers to, the introductions it holds, the
``hello`` id it sent, the encoded size, the signing ``kid``. A check whose context is
absent is skipped — e.g. without the offer the subset rule cannot be applied.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsip.core import registry
from dsip.errors import SemanticError

__all__ = [
    "INTRODUCTION_MAX_BYTES",
    "SUBSCRIPTION_CAPS",
    "Interpretation",
    "SemanticContext",
    "check_semantics",
    "interpret",
]

INTRODUCTION_MAX_BYTES = 4096  # §19.4 core constant, on the encoded envelope
SUBSCRIPTION_CAPS = {"presence": 3600, "publication": 86_400}  # §9.3 per-event caps, seconds
_ANSWER_DIRECTIONS = {
    "sendrecv": {"sendrecv", "sendonly", "recvonly", "inactive"},
    "sendonly": {"recvonly", "inactive"},
    "recvonly": {"sendonly", "inactive"},
    "inactive": {"inactive"},
}


@dataclass(frozen=True)
class SemanticContext:
    offer: Mapping[str, Any] | None = None  # the invite/update an answer selects from
    known_introductions: Collection[str] | None = None
    sent_hello_id: str | None = None
    encoded_size: int | None = None
    signer_kid: str | None = None
    recovery_kids: Collection[str] | None = None  # the subject document's recovery methods


@dataclass(frozen=True)
class Interpretation:
    effective: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _selection_is_subset(answer: Mapping[str, Any], offer: Mapping[str, Any]) -> str | None:
    """§14.2 subset rule; returns why not, or ``None`` if the selection is a subset."""
    offered_media = [m for m in offer.get("media", []) if isinstance(m, Mapping)]
    for sel in answer.get("media", []) or []:
        if not isinstance(sel, Mapping):
            return "media entry is not an object"
        match = next(
            (
                o
                for o in offered_media
                if o.get("type") == sel.get("type")
                and ("purpose" not in sel or o.get("purpose") == sel.get("purpose"))
            ),
            None,
        )
        if match is None:
            return f"{sel.get('type')!s:.20} media was not offered"
        offered_codecs = {c.get("id") for c in match.get("codecs", []) if isinstance(c, Mapping)}
        for c in sel.get("codecs", []) or []:
            cid = c.get("id") if isinstance(c, Mapping) else None
            if cid not in offered_codecs:
                return f"codec {cid!s:.40} was not offered for {sel.get('type')!s:.20}"
        allowed = _ANSWER_DIRECTIONS.get(str(match.get("direction")), set())
        if sel.get("direction") not in allowed:
            return f"direction {sel.get('direction')!s:.12} does not answer {match.get('direction')!s:.12}"
    offered_t = {t.get("id") for t in offer.get("transports", []) if isinstance(t, Mapping)}
    for t in answer.get("transports", []) or []:
        if not isinstance(t, Mapping) or t.get("id") not in offered_t:
            return "selected transport was not offered"
    return None


def check_semantics(payload: Mapping[str, Any], ctx: SemanticContext) -> None:
    """Raise ``SemanticError`` for the first failing stage-14 check."""
    t = payload.get("type")
    if (
        t in ("answer", "reject")
        and ctx.offer is not None
        and ("media" in payload or "transports" in payload)
    ):
        why = _selection_is_subset(payload, ctx.offer)
        if why:
            raise SemanticError(
                f"selection is not a subset of the offer: {why}",
                code="selection-not-subset",
                reason="media.unsupported",
            )
    elif t == "subscribe":
        events = payload.get("events", [])
        expires_in = payload.get("expires_in", 0)
        caps = [SUBSCRIPTION_CAPS.get(str(e), SUBSCRIPTION_CAPS["publication"]) for e in events]
        if caps and isinstance(expires_in, int) and expires_in > min(caps):
            raise SemanticError(
                f"expires_in {expires_in} exceeds the cap of {min(caps)} s for {events}",
                code="subscription-lifetime-exceeded",
                reason="policy.subscription-lifetime",
            )
    elif t == "introduction":
        if ctx.encoded_size is not None and ctx.encoded_size > INTRODUCTION_MAX_BYTES:
            raise SemanticError(
                f"introduction envelope is {ctx.encoded_size} bytes (cap {INTRODUCTION_MAX_BYTES})",
                code="introduction-too-large",
                reason="transport.routing-refused",
            )
    elif t == "grant":
        if (
            ctx.known_introductions is not None
            and payload.get("session") not in ctx.known_introductions
        ):
            raise SemanticError(
                "grant references no known introduction", code="grant-unknown-introduction"
            )
    elif t == "hello":
        irt = payload.get("in_reply_to")
        if ctx.sent_hello_id is not None and irt is not None and irt != ctx.sent_hello_id:
            raise SemanticError(
                "relay hello answers a hello we did not send on this connection (splicing)",
                code="hello-in-reply-to-mismatch",
                reason="transport.hello-rejected",
            )
    elif t == "key-rotation":
        _check_rotation(payload, ctx)


def _check_rotation(payload: Mapping[str, Any], ctx: SemanticContext) -> None:
    if payload.get("from") != payload.get("subject"):
        raise SemanticError(
            "only the identity rotates its own keys (from ≠ subject)",
            code="rotation-subject-mismatch",
        )
    if payload.get("next") == payload.get("previous"):
        raise SemanticError("next key equals previous key", code="rotation-next-same-as-previous")
    if ctx.signer_kid is None:
        return
    if payload.get("recovery") is True:
        if ctx.recovery_kids is not None and ctx.signer_kid not in ctx.recovery_kids:
            raise SemanticError(
                f"{ctx.signer_kid} is not a recovery method of the subject",
                code="rotation-signer-not-previous",
            )
    elif ctx.signer_kid != payload.get("previous"):
        raise SemanticError(
            f"rotation signed by {ctx.signer_kid}, not by the retiring key {payload.get('previous')}",
            code="rotation-signer-not-previous",
        )


def interpret(payload: Mapping[str, Any]) -> Interpretation:
    """Registry membership → effective values and warnings (never a rejection)."""
    t = payload.get("type")
    if t in registry.REASON_BEARING and isinstance(payload.get("reason"), str):
        eff = registry.interpret_reason(payload["reason"], str(t))
        return Interpretation(
            eff.as_dict(), () if eff.valid_on_type else ("reason-not-valid-on-type",)
        )
    if t == "answer" and isinstance(payload.get("answered_by"), str):
        return Interpretation(
            {"answered_by": registry.effective_answered_by(payload["answered_by"])}
        )
    if t == "progress" and isinstance(payload.get("status"), str):
        return Interpretation({"status": registry.effective_status(payload["status"])})
    return Interpretation()
