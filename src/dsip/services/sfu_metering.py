"""Metering for SFU groups (seed §7, §17): spend a prepaid token while a DID is in a room.

``MeteredRooms`` wraps the Janus provisioner: an admission whose access token is a
metering/1.0 token (``dsip.services.sfu.metering_access_verifier``) starts a ``Meter`` for
that grant. Every ``interval`` seconds the bytes Janus forwarded for each DID (its admin
API's handle counters, in and out) feed the meters:

* *throttled* — less than ``throttle_window`` seconds left: a signed usage record tells the
  user (the same record the cut produces, with state ``throttled``);
* *cut* — the balance is spent: the grant is revoked in Janus (token removed from the room
  ACL and the participant kicked) and a final signed usage record is issued.
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
from dsip.core.metering import Meter, MeterState, usage_record
from dsip.services.sfu import Admission, JanusRooms, JoinGrant

__all__ = ["MeteredRooms"]

logger = logging.getLogger("dsip.sfu.metering")

Notify = Callable[[str, Mapping[str, Any]], Awaitable[None]]


@dataclass
class _Metered:
    grant: JoinGrant
    meter: Meter
    warned: bool = False


class MeteredRooms(JanusRooms):
    def __init__(
        self,
        *args: Any,
        signer: KeyPair,
        interval: float = 1.0,
        throttle_window: int = 5,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.signer = signer
        self.interval = interval
        self.throttle_window = throttle_window
        self.clock = clock
        self.metered: dict[str, _Metered] = {}  # janus token → meter
        self.records: list[Mapping[str, str]] = []
        self.notify: Notify | None = None
        self._task: asyncio.Task[None] | None = None

    async def provision(self, admission: Admission) -> JoinGrant:
        grant = await super().provision(admission)
        if admission.metered is not None:
            meter = Meter(
                admission.metered,
                "sfu",
                started_at=int(self.clock()),
                throttle_window=self.throttle_window,
            )
            self.metered[grant.token] = _Metered(grant, meter)
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._loop())
        return grant

    async def close_metering(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while self.metered:
            await asyncio.sleep(self.interval)
            try:
                usage = await self.usage()
            except Exception:  # Janus trouble: try again next tick, never stop metering
                logger.exception("reading Janus usage failed")
                continue
            now = int(self.clock())
            for token, m in list(self.metered.items()):
                b_in, b_out = usage.get(m.grant.did, (0, 0))
                state = m.meter.update(now=now, total_bytes=b_in + b_out)
                if state is MeterState.THROTTLED and not m.warned:
                    m.warned = True
                    await self._record(m, now)
                elif state is MeterState.CUT:
                    # leaves ``metered`` only once revoked and recorded: no observer sees a
                    # grant that is no longer metered but not yet cut
                    await self.revoke(token)
                    logger.info("cut SFU for %s after %d s", m.grant.did, m.meter.seconds)
                    await self._record(m, now)
                    del self.metered[token]

    async def _record(self, m: _Metered, now: int) -> None:
        record = usage_record(m.meter, self.signer, now=now)
        self.records.append(record)
        if self.notify is not None:
            await self.notify(m.grant.did, record)
