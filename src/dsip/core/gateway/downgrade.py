"""The trust-downgrade rule (Gateway Profile G§7, core §6.3, spec-gap 27).

Crossing into the PSTN is a trust downgrade unless the gateway can preserve what the DSIP
side held. Each lost guarantee has a name (:class:`Loss`); a crossing that loses any sends one
informational ``error gateway.downgraded`` on the DSIP leg naming them all, and the session
continues (:func:`downgrade_notice`).

=========================  ==============================================================
loss                       condition
=========================  ==============================================================
no-srtp-on-trunk           the SIP media is plain RTP (no SDES, no DTLS-SRTP), R§4
identity-not-assertable    outbound, and the operator cannot assert the DSIP caller's
                           identity into the PSTN (no STI certificate, G§11 path b)
no-attestation             inbound, and the caller carried no verifiable STIR attestation
policy-unenforceable       the DSIP party declared a ``policy`` (§16.4) the gateway cannot
                           enforce past the trunk
=========================  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CallDirection",
    "CrossingFacts",
    "Downgrade",
    "DowngradeNotice",
    "Loss",
    "assess",
    "downgrade_notice",
]


class CallDirection(StrEnum):
    """Which way a call crosses: ``outbound`` DSIP → PSTN, ``inbound`` PSTN → DSIP."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"


class Loss(StrEnum):
    """The named losses, in the order they are reported (G§7)."""

    NO_SRTP_ON_TRUNK = "no-srtp-on-trunk"
    IDENTITY_NOT_ASSERTABLE = "identity-not-assertable"
    NO_ATTESTATION = "no-attestation"
    POLICY_UNENFORCEABLE = "policy-unenforceable"


@dataclass(frozen=True)
class CrossingFacts:
    """What the gateway knows about one crossing. The defaults are the honest ones: an
    operator without an STI certificate cannot assert identity (findings §3b), a caller
    without a verified PASSporT is not attested."""

    direction: CallDirection
    trunk_srtp: bool
    identity_assertable: bool = False
    caller_attested: bool = False
    policy_present: bool = False


@dataclass(frozen=True)
class Downgrade:
    lost: tuple[Loss, ...]

    @property
    def downgraded(self) -> bool:
        return bool(self.lost)


def assess(facts: CrossingFacts) -> Downgrade:
    """Every guarantee this crossing loses, in :class:`Loss` order."""
    outbound = facts.direction is CallDirection.OUTBOUND
    conditions = {
        Loss.NO_SRTP_ON_TRUNK: not facts.trunk_srtp,
        Loss.IDENTITY_NOT_ASSERTABLE: outbound and not facts.identity_assertable,
        Loss.NO_ATTESTATION: not outbound and not facts.caller_attested,
        Loss.POLICY_UNENFORCEABLE: facts.policy_present,
    }
    return Downgrade(tuple(loss for loss in Loss if conditions[loss]))


@dataclass(frozen=True)
class DowngradeNotice:
    """The informational ``error`` for the DSIP leg: reason, the losses, and a detail."""

    losses: tuple[Loss, ...]
    reason: str = "gateway.downgraded"

    @property
    def detail(self) -> str:
        return "crossing lost: " + ", ".join(self.losses)


def downgrade_notice(facts: CrossingFacts) -> DowngradeNotice | None:
    """The ``gateway.downgraded`` notice for a crossing, or ``None`` when nothing is lost."""
    result = assess(facts)
    return DowngradeNotice(result.lost) if result.downgraded else None
