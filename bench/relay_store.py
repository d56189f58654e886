"""Store-and-forward throughput and relay memory with many idle clients.

Part 1 — store-and-forward through a real relay process (wss, SQLite, synchronous=FULL):
a sender pushes N introductions to an offline, known recipient; we time until all N are
committed (stored/s), then the recipient binds and we time until all N are delivered,
verified and acknowledged and the relay's queue is empty (drained/s). Reference in the
same run: the store alone (``SqliteStore.put`` / ``pending`` + ``ack`` in a loop).

Part 2 — relay RSS with C idle clients, each a real TLS WebSocket with a verified hello
(goal: < 500 MiB at 10,000).

Usage: ``python bench/relay_store.py [--n 2000] [--clients 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.storage import SqliteStore, StoreLimits
from dsip.transport.hello import client_hello
from dsip.transport.ws import connect_ws

IDENTITY = {"display_name": "Load", "claims": []}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RelayProc:
    """A ``dsip relay`` process with limits lifted for load (also used by bench/cluster.py)."""

    def __init__(self, work: Path, *, store: str | None = None, extra: Sequence[str] = ()) -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        ready = work / "ready.json"
        (work / "relay.toml").write_text(
            "[relay]\nenvelopes_per_minute = 10000000\ninvites_per_minute = 10000000\n"
            "ip_envelopes_per_minute = 100000000\nquota_envelopes = 100000\nquota_bytes = 1000000000\n"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsip",
                "relay",
                "--config",
                str(work / "relay.toml"),
                "--ws-port",
                "0",
                "--local-ca",
                str(work / "tls"),
                "--store",
                store or f"sqlite:///{work}/relay.db",
                "--ready-file",
                str(ready),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("relay did not start")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.uri = f"wss://localhost:{info['ws_port']}/dsip"
        self.ssl = ssl.create_default_context(cafile=str(work / "tls" / "ca.pem"))

    def stored(self) -> int:
        import sqlite3

        db = sqlite3.connect(f"file:{self.work}/relay.db?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT count(*) FROM envelopes").fetchone()[0])
        finally:
            db.close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def store_and_forward(relay: RelayProc, n: int) -> tuple[float, float]:
    bob_key = KeyPair.generate()
    bob = SignalingClient(bob_key, verifier=Verifier())
    await bob.connect(relay.uri, ssl_context=relay.ssl)
    await bob.close()
    alice = SignalingClient(KeyPair.generate(), verifier=Verifier())
    await alice.connect(relay.uri, ssl_context=relay.ssl)
    frames = [
        alice.seal(
            alice.build(
                "introduction", to=bob_key.did, purpose=f"m{i}", identity=IDENTITY, ttl=3600
            )
        )
        for i in range(n)
    ]
    t0 = time.perf_counter()
    for f in frames:
        await alice._conn.send(f)  # type: ignore[union-attr]
    while relay.stored() < n:
        await asyncio.sleep(0.02)
    stored_rate = n / (time.perf_counter() - t0)
    await alice.close()
    bob = SignalingClient(bob_key, verifier=Verifier())
    t0 = time.perf_counter()
    await bob.connect(relay.uri, ssl_context=relay.ssl)
    got = 0
    while got < n:
        v = await bob.recv(30)
        got += v.type == "introduction"
    while relay.stored() > 0:
        await asyncio.sleep(0.02)
    drained_rate = n / (time.perf_counter() - t0)
    await bob.close()
    return stored_rate, drained_rate


async def store_reference(work: Path, n: int) -> tuple[float, float]:
    store = await SqliteStore.open(
        str(work / "ref.db"),
        limits=StoreLimits(max_envelopes_per_recipient=10**6, max_bytes_per_recipient=10**10),
    )
    blob = b"x" * 1700
    now = int(time.time())
    t0 = time.perf_counter()
    for i in range(n):
        await store.put("did:key:z6Mkref", f"{i:026d}", blob, expires_at=now + 3600, now=now)
    put_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    after = 0
    while True:
        batch = await store.pending("did:key:z6Mkref", now=now, after_seq=after, limit=100)
        if not batch:
            break
        for item in batch:
            after = item.seq
            await store.ack("did:key:z6Mkref", item.envelope_id)
    drain_rate = n / (time.perf_counter() - t0)
    await store.close()
    return put_rate, drain_rate


async def idle_clients(relay: RelayProc, count: int) -> list[object]:
    conns: list[object] = []
    sem = asyncio.Semaphore(64)

    async def one() -> None:
        async with sem:
            key = KeyPair.generate()
            conn = await connect_ws(relay.uri, ssl_context=relay.ssl, timeout=60)
            _, frame = client_hello(key, now=int(time.time()))
            await conn.send(frame)
            await conn.recv()  # the relay's hello
            conns.append(conn)

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="envelopes stored and drained")
    ap.add_argument(
        "--clients", type=int, default=10_000, help="idle connections for the RSS figure"
    )
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients * 2 + 1000)), hard)
    )
    work = Path(tempfile.mkdtemp(prefix="dsip-bench-store-"))
    import uvloop

    relay = RelayProc(work)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            stored, drained = runner.run(store_and_forward(relay, args.n))
            ref_put, ref_drain = runner.run(store_reference(work, args.n))
            base = rss_mib(relay.proc.pid)
            t0 = time.perf_counter()
            conns = runner.run(idle_clients(relay, args.clients))
            connect_s = time.perf_counter() - t0
            time.sleep(1.0)
            loaded = rss_mib(relay.proc.pid)
            del conns
        print(
            f"store-and-forward benchmark: {args.n} envelopes (~1.7 kB frames), SQLite WAL synchronous=FULL"
        )
        print(f"{'figure':<52} {'value':>12}  reference")
        print(f"{'-' * 52} {'-' * 12}  {'-' * 30}")
        print(
            f"{'relay: envelopes stored/s (sender -> relay -> disk)':<52} {stored:>12,.0f}  "
            f"store alone put/s {ref_put:,.0f}"
        )
        print(
            f"{'relay: envelopes drained/s (deliver, verify, ack)':<52} {drained:>12,.0f}  "
            f"store alone pending+ack/s {ref_drain:,.0f}"
        )
        print(f"{'relay RSS, idle (MiB)':<52} {base:>12,.1f}")
        print(
            f"{f'relay RSS with {args.clients:,} idle wss clients (MiB)':<52} {loaded:>12,.1f}  goal < 500 MiB"
        )
        print(
            f"{'per idle client (KiB)':<52} {(loaded - base) * 1024 / max(1, args.clients):>12,.1f}  "
            f"({connect_s:.1f} s to connect + hello)"
        )
    finally:
        relay.close()
        shutil.rmtree(work, ignore_errors=True)
        os.environ.pop("_", None)


if __name__ == "__main__":
    main()
