"""Cost of keeping the relay's MLS delivery-service state on disk (dsip.messaging.mls_store).

The relay side only (``MlsService.handle`` on verified envelopes, no sockets), for one
group of ``--members`` members:

* **commit**: a member's update commit accepted (GroupInfo, tree hash and signature
  checks, then the new epoch written in one transaction);
* **application**: a message of the current epoch accepted (no write: nothing durable
  changes);
* **publish + fetch**: a key package published (checked, stored) and handed out (marked
  used).

Figure: ``MlsService.open(FILE)`` (SQLite, WAL, ``synchronous=FULL``: one fsync per
transaction); reference in the same run: the same envelopes on an in-memory service.
The fsync cost depends on the disk; the ratio says what durability adds.

    .venv/bin/python bench/mls_state.py [--members 10] [--count 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dsip.core.envelope import Verified, Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.messaging.mls import MlsMember, MlsMessage
from dsip.messaging.mls_service import MlsService

RELAY = KeyPair.generate()


def envelope(sender: KeyPair, kind: str, now: int, **fields: object) -> Verified:
    payload = make_payload(kind, sender=sender.did, now=now, profiles=[], to=RELAY.did, **fields)
    return Verifier().verify(sign_envelope(payload, sender), now=now)


def mls(sender: KeyPair, message: MlsMessage, now: int) -> Verified:
    return envelope(sender, "mls", now, **message.payload_fields())


def workload(members: int, count: int, now: int) -> dict[str, list[Verified]]:
    keys = [KeyPair.generate() for _ in range(members)]
    group = [MlsMember(k) for k in keys]
    group[0].create_group(now)
    first = group[0].add([m.key_package(now) for m in group[1:]], now)
    group[0].merge()
    setup = [mls(keys[0], first.message, now)]
    commits = []
    for _ in range(count):
        staged = group[0].update()
        group[0].merge()
        commits.append(mls(keys[0], staged.message, now))
    apps = [mls(keys[0], group[0].encrypt(b"x" * 200), now) for _ in range(count)]
    dave, carol = KeyPair.generate(), KeyPair.generate()
    owner = MlsMember(dave)
    packages = []
    for _ in range(count):
        packages.append(mls(dave, owner.key_package(now), now))
        packages.append(envelope(carol, "mls-fetch", now, target=dave.did))
    return {"setup": setup, "commit": commits, "application": apps, "publish + fetch": packages}


def run(service: MlsService, envelopes: Sequence[Verified], now: int) -> float:
    t0 = time.perf_counter()
    for v in envelopes:
        action = service.handle(v, now=now)
        if action.error is not None:
            raise SystemExit(f"refused: {action.error.code}: {action.error.message}")
    return time.perf_counter() - t0


def measure(
    make: Callable[[], MlsService], work: dict[str, list[Verified]], now: int
) -> dict[str, float]:
    service = make()
    try:
        run(service, work["setup"], now)
        return {
            name: run(service, work[name], now)
            for name in ("commit", "application", "publish + fetch")
        }
    finally:
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    now = int(time.time())
    work = workload(args.members, args.count, now)
    measure(MlsService, work, now)  # warm-up: imports, crypto provider, caches
    with tempfile.TemporaryDirectory() as tmp:
        disk = measure(lambda: MlsService.open(Path(tmp) / "mls.db"), work, now)
    memory = measure(MlsService, work, now)
    print(f"{args.members} members, {args.count} envelopes of each kind; per envelope:")
    print(f"{'envelope':>16} | {'on disk (FULL)':>14} | {'in memory (ref)':>15} | {'ratio':>6}")
    print("-" * 62)
    for name in ("commit", "application", "publish + fetch"):
        n = args.count * (2 if name == "publish + fetch" else 1)
        d, m = disk[name] / n, memory[name] / n
        print(f"{name:>16} | {d * 1e3:>11.2f} ms | {m * 1e3:>12.2f} ms | {d / m:>5.2f}x")


if __name__ == "__main__":
    main()
