"""What a PSAP does with an emergency invite: assess, flag, queue (seed §19.2 step 4, §20.4).

**The default policy accepts every emergency call.** Blocking an emergency call can cost a
life, so a location that is missing, forged, stale, signed only by the DID key, or from an
uncertified or low-certification device does not refuse the call: it is *flagged*, and the
call taker sees the flags next to the location and its tier. The seed's strict reading —
gold certification required for emergency (§20.4), every signature valid (§19.2) — is
:attr:`PsapPolicy.strict`; it refuses with the ``x-emergency.*`` reason of the first fault.

:class:`CallQueue` orders waiting calls: emergency invites before everything else (callbacks,
administrative lines), first come first served within a class — a verified location does not
jump the queue, so a caller with an old phone is not punished for it.

:class:`CallbackWindow` is the caller side of a PSAP callback: after an emergency call the
PSAP's identity is allowed past the caller's first-contact policy (§19.4) for a while.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dsip.core.emergency.certification import Certification, Level, certification_level
from dsip.core.emergency.errors import (
    DEVICE_UNCERTIFIED,
    LOCATION_INVALID,
    EmergencyError,
)
from dsip.core.emergency.geo import Tier, VerifiedLocation, verify_attestation
from dsip.core.identity import DocumentSource

__all__ = [
    "CallAssessment",
    "CallQueue",
    "CallbackWindow",
    "PsapPolicy",
    "assess_emergency_call",
]

DEFAULT_CALLBACK_WINDOW: Final = 1800  # s


@dataclass(frozen=True)
class PsapPolicy:
    """``strict=False`` (default): accept and flag. ``strict=True``: the seed's rule."""

    trusted_certifiers: frozenset[str] = frozenset()
    strict: bool = False
    strict_min_level: Level = Level.GOLD


@dataclass(frozen=True)
class CallAssessment:
    """The PSAP's view of one emergency call, for the call taker's screen and the queue."""

    caller: str
    accept: bool
    location: VerifiedLocation | None
    certification: Certification | None
    flags: tuple[str, ...]
    refusal: str | None = None  # reason token when strict policy refuses

    @property
    def verified(self) -> bool:
        return self.location is not None and not self.flags


def assess_emergency_call(
    content: Mapping[str, Any] | None,
    *,
    caller: str,
    documents: DocumentSource | None,
    now: int,
    policy: PsapPolicy,
    last_seq: int = 0,
) -> CallAssessment:
    """Verify the opened ``invite.emergency`` content of ``caller`` under ``policy``.

    ``content`` is ``None`` when the invite carried no location or it did not open; that is
    a flag (``x-emergency.location-invalid``) like any other fault.
    """
    flags: list[str] = []
    location: VerifiedLocation | None = None
    cert: Certification | None = None
    if content is None:
        flags.append(LOCATION_INVALID)
    else:
        try:
            location = verify_attestation(
                content.get("geo"),
                documents=documents,
                now=now,
                expected_did=caller,
                last_seq=last_seq,
            )
        except EmergencyError as exc:
            flags.append(exc.reason)
        if location is not None:
            creds = content.get("credentials", [])
            cert = certification_level(
                creds if isinstance(creds, Sequence) else [],
                device=location.device,
                documents=documents,
                now=now,
                trusted_certifiers=policy.trusted_certifiers,
            )
            if cert is None or cert.level < policy.strict_min_level:
                flags.append(DEVICE_UNCERTIFIED)
            if location.tier is Tier.IP:
                flags.append("x-emergency.tier-3")
    refusal = flags[0] if policy.strict and flags else None
    return CallAssessment(
        caller=caller,
        accept=refusal is None,
        location=location,
        certification=cert,
        flags=tuple(flags),
        refusal=refusal,
    )


@dataclass(order=True)
class _Entry:
    rank: int
    order: int
    session: str = field(compare=False)


class CallQueue:
    """Waiting calls by priority class, then arrival (sans-I/O, no clock needed)."""

    EMERGENCY: Final = 0
    OTHER: Final = 1

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._counter = itertools.count()
        self._live: set[str] = set()

    def __len__(self) -> int:
        return len(self._live)

    def push(self, session: str, *, emergency: bool) -> None:
        if session in self._live:
            return
        self._live.add(session)
        rank = self.EMERGENCY if emergency else self.OTHER
        heapq.heappush(self._heap, _Entry(rank, next(self._counter), session))

    def remove(self, session: str) -> None:
        """A caller hung up while waiting: the entry is skipped when it surfaces."""
        self._live.discard(session)

    def pop(self) -> str | None:
        while self._heap:
            entry = heapq.heappop(self._heap)
            if entry.session in self._live:
                self._live.discard(entry.session)
                return entry.session
        return None


class CallbackWindow:
    """PSAP identities allowed past the caller's first-contact policy, until a deadline."""

    def __init__(self, window: int = DEFAULT_CALLBACK_WINDOW) -> None:
        self.window = window
        self._until: dict[str, int] = {}

    def open(self, psap: str, *, now: int) -> None:
        self._until[psap] = max(self._until.get(psap, 0), now + self.window)

    def allows(self, identity: str, *, now: int) -> bool:
        return self._until.get(identity, 0) > now

    def expire(self, *, now: int) -> list[str]:
        """Close windows that ran out; returns the identities no longer allowed."""
        gone = [did for did, until in self._until.items() if until <= now]
        for did in gone:
            del self._until[did]
        return gone

    def open_identities(self, *, now: int) -> Collection[str]:
        return [did for did, until in self._until.items() if until > now]
