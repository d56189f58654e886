"""MLS commit time and message fan-out at 10/50/100 members (dsip.messaging.mls).

For each group size N (one group, built by one add commit, every member joined):

* **commit**: the committer adds one member (``add`` + ``merge``: proposal, UpdatePath-less
  commit, Welcome, GroupInfo) and one existing member processes that commit;
* **update**: a member commits a fresh path (``update``), the path every other member
  must decrypt — the cost that grows with N — and one member processes it;
* **fan-out**: one ``encrypt`` and N-1 ``decrypt`` of a 200-byte message.

Reference in the same run: the bare AEAD of the payload, AES-128-GCM encrypt once and
decrypt N-1 times (``cryptography``), i.e. what fan-out would cost with no MLS framing,
sender data, signature or secret tree. Best of ``--repeat`` runs.

    .venv/bin/python bench/mls.py [--sizes 10 50 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dsip.core.identity import KeyPair
from dsip.messaging.mls import MlsMember

NOW = 1_760_000_000
PAYLOAD = os.urandom(200)


def build(n: int) -> list[MlsMember]:
    members = [MlsMember(KeyPair.generate()) for _ in range(n)]
    members[0].create_group(NOW)
    staged = members[0].add([m.key_package(NOW) for m in members[1:]], NOW)
    members[0].merge()
    for m in members[1:]:
        m.process(staged.message)
    return members


def best(repeat: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeat))


def measure(n: int, repeat: int) -> dict[str, float]:
    members = build(n)
    committer, observer = members[0], members[1]

    def add_once() -> float:
        newcomer = MlsMember(KeyPair.generate())
        kp = newcomer.key_package(NOW)
        t0 = time.perf_counter()
        staged = committer.add([kp], NOW)
        committer.merge()
        t1 = time.perf_counter()
        observer.process(staged.message)
        t2 = time.perf_counter()
        for m in members[2:]:
            m.process(staged.message)
        newcomer.process(staged.message)
        members.append(newcomer)
        add_once.process = t2 - t1  # type: ignore[attr-defined]
        return t1 - t0

    commit = best(repeat, add_once)
    process = add_once.process  # type: ignore[attr-defined]

    def update_once() -> float:
        t0 = time.perf_counter()
        staged = observer.update()
        observer.merge()
        t1 = time.perf_counter()
        committer.process(staged.message)
        update_once.process = time.perf_counter() - t1  # type: ignore[attr-defined]
        for m in members[2:]:
            m.process(staged.message)
        return t1 - t0

    update = best(repeat, update_once)
    update_process = update_once.process  # type: ignore[attr-defined]

    def fan_out() -> float:
        t0 = time.perf_counter()
        message = committer.encrypt(PAYLOAD)
        for m in members[1:n]:
            m.decrypt(message)
        return time.perf_counter() - t0

    fan = best(repeat, fan_out)

    key = AESGCM.generate_key(bit_length=128)
    aead = AESGCM(key)

    def reference() -> float:
        nonce = os.urandom(12)
        t0 = time.perf_counter()
        ct = aead.encrypt(nonce, PAYLOAD, b"")
        for _ in range(n - 1):
            aead.decrypt(nonce, ct, b"")
        return time.perf_counter() - t0

    ref = best(repeat, reference)
    return {
        "commit": commit,
        "process": process,
        "update": update,
        "update_process": update_process,
        "fan": fan,
        "ref": ref,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{'members':>7} | {'add: commit':>11} | {'add: process':>12} | {'update':>8} |"
        f" {'upd: process':>12} | {'fan-out 1+N-1':>13} | {'per decrypt':>11} |"
        f" {'AES-GCM ref':>11} | {'ratio':>6}"
    )
    print("-" * 118)
    for n in args.sizes:
        r = measure(n, args.repeat)
        per = r["fan"] / (n - 1)
        print(
            f"{n:>7} | {r['commit'] * 1e3:>8.1f} ms | {r['process'] * 1e3:>9.1f} ms |"
            f" {r['update'] * 1e3:>5.1f} ms | {r['update_process'] * 1e3:>9.1f} ms |"
            f" {r['fan'] * 1e3:>10.1f} ms | {per * 1e6:>8.0f} µs |"
            f" {r['ref'] * 1e6:>8.1f} µs | {r['fan'] / r['ref']:>5.0f}x"
        )


if __name__ == "__main__":
    main()
