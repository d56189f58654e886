"""The caller's lookup algorithm (seed §5.2, v0.7 §8.1): from an identifier to a place to send.

Given a DID — or an alias such as ``acct:alice@voice.example`` — find where the callee is
right now, without a registrar:

1. **alias** → DID, if the input is an alias (WebFinger / DNS TXT; §8.2). The DID, not the
   alias, is the identity from here on.
2. **document**: resolve the DID (did:key locally, did:web over verified TLS; cached). The
   document is authoritative for service endpoints (§8.1 rule 4).
3. **presence**: fetch the presence record from the DHT under ``sha256("dsip-presence:"+DID)``,
   re-verify every value returned and keep the §8.3 winner. Presence is a hint (§8.3): it
   only chooses among endpoints, identity still comes from the signed session envelopes.
4. **route**: prefer the endpoints the presence record names (where the callee is bound
   now: its current relay connection, wss or quic); else the relay in the DID document
   (``DSIPService`` ``ws`` / ``DSIPSignaling``), which stores and forwards to an offline
   callee (§13.3) and wakes it with a push.

Every step is recorded in ``Route.steps`` — what was asked, what answered, why the next
step ran — so the CLI and logs can say which path a call took.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dsip.agent.resolver import DidResolver
from dsip.core.identity import DidDocument, is_did
from dsip.core.presence import PresenceRecord, RecordValidator, presence_key
from dsip.errors import DsipError, ResolutionError

__all__ = ["AliasSource", "DhtSource", "Lookup", "LookupStep", "Route"]


class DhtSource(Protocol):
    async def get(self, key: bytes) -> list[bytes]: ...


AliasSource = Callable[[str], Awaitable[str]]
"""An alias resolver: ``acct:user@domain`` → DID (raises ``DsipError``)."""


@dataclass(frozen=True)
class LookupStep:
    step: str  # alias | document | presence | route
    outcome: str  # resolved | cached | found | none | failed | chosen
    detail: str = ""


@dataclass
class Route:
    target: str
    did: str = ""
    document: DidDocument | None = None
    presence: PresenceRecord | None = None
    endpoints: list[str] = field(default_factory=list)
    path: str = ""  # "presence" | "document-relay" | "none"
    steps: list[LookupStep] = field(default_factory=list)

    @property
    def online(self) -> bool:
        return self.presence is not None

    def explain(self) -> str:
        return " → ".join(
            f"{s.step}:{s.outcome}" + (f" ({s.detail})" if s.detail else "") for s in self.steps
        )


class Lookup:
    def __init__(
        self,
        resolver: DidResolver,
        *,
        dht: DhtSource | None = None,
        aliases: AliasSource | None = None,
        validator: RecordValidator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self.dht = dht
        self.aliases = aliases
        self.validator = validator or RecordValidator(resolver.cached)
        self.clock = clock

    async def locate(self, target: str) -> Route:
        route = Route(target)
        did = target
        if not is_did(target):
            if self.aliases is None:
                raise ResolutionError(
                    f"{target[:80]!r} is not a DID and no alias resolver is set",
                    code="alias-unsupported",
                )
            did = await self.aliases(target)
            route.steps.append(LookupStep("alias", "resolved", f"{target} → {did}"))
        route.did = did
        cached = self.resolver.cached(did) is not None
        route.document = await self.resolver.resolve(did)
        route.steps.append(
            LookupStep("document", "cached" if cached else "resolved", did.split(":")[1])
        )
        await self._presence(route)
        self._choose(route)
        return route

    async def _presence(self, route: Route) -> None:
        if self.dht is None:
            route.steps.append(LookupStep("presence", "none", "no DHT configured"))
            return
        try:
            values = await self.dht.get(presence_key(route.did))
        except DsipError as exc:
            route.steps.append(LookupStep("presence", "failed", exc.code))
            return
        # Documents the records' signers need (delegation subjects on did:web) first.
        record = self.validator.best(presence_key(route.did), values, now=int(self.clock()))
        if record is None:
            detail = f"{len(values)} value(s), none valid and live" if values else "no record"
            route.steps.append(LookupStep("presence", "none", detail))
            return
        route.presence = record
        route.steps.append(
            LookupStep(
                "presence",
                "found",
                f"seq {record.seq}, expires in {record.expires_at - int(self.clock())} s",
            )
        )

    def _choose(self, route: Route) -> None:
        if route.presence is not None:
            eps = route.presence.endpoints
            if isinstance(eps, dict):  # presence/1.0: by kind; quic first, then wss
                ordered: Sequence[Any] = [*eps.get("quic", []), *eps.get("ws", [])]
            else:  # reachability-hint: [{uri, bindings}]
                ordered = [e.get("uri") for e in eps if isinstance(e, dict)]
            route.endpoints = [str(e) for e in ordered if isinstance(e, str)]
            if route.endpoints:
                route.path = "presence"
                route.steps.append(
                    LookupStep("route", "chosen", f"live endpoint {route.endpoints[0]}")
                )
                return
        doc_eps = route.document.dsip_endpoints().get("ws", []) if route.document else []
        if doc_eps:
            route.endpoints = list(doc_eps)
            route.path = "document-relay"
            why = (
                "callee offline: the home relay stores and forwards"
                if route.presence is None
                else "no live endpoint"
            )
            route.steps.append(LookupStep("route", "chosen", f"{doc_eps[0]} ({why})"))
            return
        route.path = "none"
        route.steps.append(
            LookupStep("route", "none", "no presence and no relay in the DID document")
        )
