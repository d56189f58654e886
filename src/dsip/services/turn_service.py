"""TURN admission and metering for a relay (seed §7, §17).

A device asks for TURN by binding to its relay; the relay calls ``TurnService.credentials``
with the identity its ``hello`` authenticated and, when the device presented one, the
verified access token (``access_token`` in the hello's protected header, signed over like
everything else there):

* no token and ``require_token`` → no TURN (the hello carries no ``turn`` capability);
* a token → short-lived TURN REST credentials (``expiry:DID``) whose lifetime is bounded by
  the token's expiry and by what its balance buys, and a ``Meter`` for that DID.

Every ``interval`` seconds the service reads coturn's sessions for each metered DID through
coturn's CLI (allocation usage in bytes, both directions), feeds the meter, and acts on its
state: *throttled* → a warning to the device (coturn has no per-allocation bandwidth
control, so the throttle is the warning plus the shortened credentials); *cut* → every
allocation of that DID is cancelled in coturn and the device gets a signed usage record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dsip.core.identity import KeyPair
from dsip.core.metering import AccessToken, Meter, MeterState, usage_record
from dsip.services.coturn import Coturn

__all__ = ["TurnService"]

logger = logging.getLogger("dsip.turn")

Notify = Callable[[str, Mapping[str, Any]], Awaitable[None]]
"""Deliver a signed envelope (usage record, warning) to a DID through the relay."""


@dataclass
class _Grant:
    token: AccessToken
    meter: Meter | None = None  # starts with the DID's first allocation
    warned: bool = False


class TurnService:
    def __init__(
        self,
        coturn: Coturn,
        signer: KeyPair,
        *,
        signer_did: str | None = None,
        require_token: bool = False,
        interval: float = 1.0,
        throttle_window: int = 5,
        free_ttl: int = 600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.coturn = coturn
        self.cli = coturn.cli()
        self.signer = signer
        self.signer_did = signer_did or signer.did
        self.require_token = require_token
        self.interval = interval
        self.throttle_window = throttle_window
        self.free_ttl = free_ttl
        self.clock = clock
        self.grants: dict[str, _Grant] = {}
        self.records: list[Mapping[str, str]] = []  # every usage record issued (operator audit)
        self.notify: Notify | None = None
        self._task: asyncio.Task[None] | None = None

    def credentials(self, identity: str, token: AccessToken | None) -> Mapping[str, Any] | None:
        """The ``turn`` capability for a freshly bound identity, or ``None``."""
        now = int(self.clock())
        if token is None:
            if self.require_token:
                return None
            return self.coturn.credentials(identity, ttl=self.free_ttl, now=now).as_capability()
        grant = _Grant(token)
        self.grants[identity] = grant
        ttl = max(
            1, min(token.expires_at - now, Meter(token, "turn", started_at=now).seconds_left() + 1)
        )
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        return self.coturn.credentials(identity, ttl=ttl, now=now).as_capability()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while self.grants:
            await asyncio.sleep(self.interval)
            for did, grant in list(self.grants.items()):
                try:
                    await self._meter(did, grant)
                except Exception:  # one DID's trouble never stops the others' metering
                    logger.exception("metering %s failed", did)

    async def _meter(self, did: str, grant: _Grant) -> None:
        now = int(self.clock())
        sessions = await self.cli.sessions(did)
        if grant.meter is None:
            if not sessions:
                return
            grant.meter = Meter(
                grant.token, "turn", started_at=now, throttle_window=self.throttle_window
            )
        state = grant.meter.update(now=now, total_bytes=sum(s.bytes for s in sessions))
        if state is MeterState.THROTTLED and not grant.warned:
            grant.warned = True
            await self._send(did, grant.meter, now)
        if state is MeterState.CUT:
            for s in sessions:
                await self.cli.cancel(s.id)
            logger.info("cut TURN for %s: balance spent after %d s", did, grant.meter.seconds)
            del self.grants[did]
            await self._send(did, grant.meter, now)

    async def _send(self, did: str, meter: Meter, now: int) -> None:
        record = usage_record(meter, self.signer, now=now, signer_did=self.signer_did)
        self.records.append(record)
        if self.notify is not None:
            await self.notify(did, record)
