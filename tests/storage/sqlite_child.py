"""A stand-in relay process for test_sqlite_durability.py (run as a script, never imported).

    python sqlite_child.py put   DB PREFIX   put PREFIX-0, PREFIX-1, ...; print "stored ID"
                                             after each put returned (= acknowledged)
    python sqlite_child.py ack   DB          flush the queue: ack every pending envelope;
                                             print "acked ID" after each ack returned
    python sqlite_child.py serve DB PREFIX   like put, but on SIGTERM close the store
                                             gracefully and print "closed"

Each mode stops by itself after MAX_SECONDS or MAX_OPS, so a test that fails to kill it
never leaves it running.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from dsip.storage import SqliteStore, StoreLimits

NOW = 1_760_000_000
RECIPIENTS = [f"did:key:z6MkRecipient{n}" for n in range(8)]
LIMITS = StoreLimits(max_envelopes_per_recipient=100_000, max_bytes_per_recipient=2**30)
MAX_SECONDS = 30.0
MAX_OPS = 200_000


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def put(db: str, prefix: str, stop: asyncio.Event | None = None) -> None:
    store = await SqliteStore.open(db, limits=LIMITS)
    deadline = time.monotonic() + MAX_SECONDS
    for n in range(MAX_OPS):
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            break
        envelope_id = f"{prefix}-{n}"
        wire = envelope_id.encode() * 40
        recipient = RECIPIENTS[n % len(RECIPIENTS)]
        if await store.put(recipient, envelope_id, wire, expires_at=NOW + 3600, now=NOW):
            report(f"stored {envelope_id}")
    await store.close()
    if stop is not None:
        report("closed")


async def ack(db: str) -> None:
    store = await SqliteStore.open(db, limits=LIMITS)
    deadline = time.monotonic() + MAX_SECONDS
    while time.monotonic() < deadline:
        flushed = False
        for recipient in RECIPIENTS:
            for envelope in await store.pending(recipient, now=NOW, limit=10):
                if await store.ack(recipient, envelope.envelope_id):
                    report(f"acked {envelope.envelope_id}")
                flushed = True
        if not flushed:
            break
    await store.close()


async def serve(db: str, prefix: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await put(db, prefix, stop)


def main() -> None:
    mode, db, *rest = sys.argv[1:]
    if mode == "put":
        asyncio.run(put(db, rest[0]))
    elif mode == "ack":
        asyncio.run(ack(db))
    elif mode == "serve":
        asyncio.run(serve(db, rest[0]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
