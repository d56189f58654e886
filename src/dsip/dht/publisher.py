"""Publish a presence record to the DHT and keep it there: re-sign and republish at TTL/2.

A stored presence record is only as fresh as its ``expires_at`` (60–300 s, seed §5.1), and
storing nodes come and go, so the publisher — not the storing nodes — keeps a record
alive: at half its lifetime it signs a new one (``seq`` strictly higher, §8.3) and PUTs it
to whichever ``k`` nodes are closest *now*. That second PUT is also what repairs
replication after churn. A round that reached no peer is retried with backoff, well before
the record would expire.

The publisher verifies its own record with the client's :class:`RecordValidator` before
sending anything (a record storing nodes would refuse is a local bug, raised here), and
publishes into the region buckets named by ``region_precisions`` (geohash prefix lengths)
a bucket holding only its own entry; storing nodes merge it (see :mod:`dsip.dht`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from dsip.core.presence import PresenceRecord
from dsip.dht.bridge import DhtClient
from dsip.dht.node import RecordKey
from dsip.errors import DsipError

__all__ = ["PresencePublisher", "PublishReport", "SignRecord"]

logger = logging.getLogger("dsip.dht")

SignRecord = Callable[[int, int], str | bytes]
"""``sign(seq, now)`` returns a freshly signed presence record frame."""


@dataclass(frozen=True)
class PublishReport:
    """What one publication round achieved."""

    subject: str
    seq: int
    issued_at: int
    expires_at: int
    stored: int  # remote peers that acknowledged the presence record
    regions: dict[str, int] = field(default_factory=dict)  # prefix -> acknowledgements

    @property
    def republish_at(self) -> int:
        """TTL/2 after issue."""
        return self.issued_at + (self.expires_at - self.issued_at) // 2


class PresencePublisher:
    """Publishes ``sign(seq, now)`` and republishes it at TTL/2 until :meth:`stop`."""

    def __init__(
        self,
        client: DhtClient,
        sign: SignRecord,
        *,
        region_precisions: Sequence[int] = (),
        retry_s: float = 2.0,
        clock: Callable[[], int] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.sign = sign
        self.region_precisions = tuple(sorted(set(region_precisions)))
        self.retry_s = retry_s
        self.clock = clock or client.node.clock
        self.sleep = sleep
        self.last: PublishReport | None = None
        self.record: PresenceRecord | None = None
        self.rounds = 0
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    def _next_seq(self, now: int) -> int:
        # issued_at-based seq (hints profile §2) stays monotonic across restarts
        self._seq = max(now, self._seq + 1)
        return self._seq

    async def publish(self) -> PublishReport:
        """Sign, verify and PUT one fresh record (and its region buckets)."""
        now = self.clock()
        frame = self.sign(self._next_seq(now), now)
        value = frame.encode("utf-8") if isinstance(frame, str) else bytes(frame)
        records = self.client.validator
        record = records.verify(value, now=now)
        self._seq = max(self._seq, record.seq)
        stored = await self.client.put(RecordKey.presence(record.subject), value)
        regions: dict[str, int] = {}
        geohash = record.geohash or ""
        for precision in self.region_precisions:
            if len(geohash) < precision:
                continue
            prefix = geohash[:precision]
            key = RecordKey.region(prefix)
            bucket = records.merge_region(key.validator_key, [value], now=now)
            regions[prefix] = await self.client.put(key, bucket)
        self.record = record
        self.rounds += 1
        report = PublishReport(
            subject=record.subject,
            seq=record.seq,
            issued_at=int(record.verified.payload["issued_at"]),
            expires_at=record.expires_at,
            stored=stored,
            regions=regions,
        )
        self.last = report
        logger.info(
            "published presence",
            extra={"did": record.subject, "seq": record.seq, "stored": stored},
        )
        return report

    async def run(self) -> None:
        """Publish now, then again at every TTL/2 (sooner, with backoff, after a miss).

        After a successful :meth:`publish` the schedule continues from it instead.
        """
        backoff = self.retry_s
        if self.last is not None and self.last.stored > 0:
            await self.sleep(max(0.0, self.last.republish_at - self.clock()))
        while True:
            try:
                report = await self.publish()
            except DsipError as exc:
                if not exc.remote and exc.code.startswith("dht-"):
                    logger.warning("presence publication failed: %s", exc)
                    await self.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                raise  # our own record is invalid: retrying cannot help
            if report.stored == 0:
                logger.warning("no peer stored our presence record; retrying")
                deadline = report.republish_at - self.clock()
                await self.sleep(max(0.0, min(backoff, deadline)))
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = self.retry_s
            await self.sleep(max(0.0, report.republish_at - self.clock()))

    def start(self) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="dsip-presence-publisher")
        return self._task

    async def stop(self) -> None:
        """Stop republishing. Records already stored expire on their own."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
