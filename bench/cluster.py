"""One relay on 1 node vs 3 nodes (NATS + PostgreSQL), on this machine, and the NATS hop.

Every node is a real ``dsip relay`` process with ``--cluster nats://…`` and one shared
PostgreSQL store; a real nats-server routes between them. A load process holds P
sender/receiver pairs (real wss connections; every envelope signed by its sender, verified
by the relay and by the receiver). With 3 nodes, each pair's sender and receiver are bound
at *different* nodes, so every envelope crosses NATS.

On a 2-core machine three relay processes plus the load process cannot show a speed-up, so
the table reports what scales: relay CPU per envelope (all node processes + nats-server,
from /proc) beside the throughput and p99, and the latency one NATS hop adds (ping-pong,
one envelope in flight, same node vs across nodes).

Usage: ``python bench/cluster.py [--pairs 8] [--per-pair 300] [--pings 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.pgserver

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.services.ports import free_port
from relay_store import RelayProc  # bench/ is on sys.path when run as a script
from tests.pgserver import local_postgres


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def nats_server(work: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-a", "127.0.0.1", "-p", str(port), "-l", str(work / "nats.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield f"nats://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(10)


class Node(RelayProc):
    """One node of the cluster: the shared relay seed, the PostgreSQL store, NATS."""

    def __init__(self, work: Path, store: str, nats: str, seed: Path) -> None:
        super().__init__(
            work, store=store, extra=("--identity-seed-file", str(seed), "--cluster", nats)
        )


def _intro(client: SignalingClient, to: str, i: int) -> dict[str, Any]:
    return client.build(
        "introduction",
        to=to,
        purpose=f"{time.perf_counter():.9f} {i}",
        ttl=600,
        identity={"display_name": "Bench", "claims": []},
    )


async def _client(node: Node) -> SignalingClient:
    c = SignalingClient(KeyPair.generate(), verifier=Verifier())
    await c.connect(node.uri, ssl_context=node.ssl, timeout=20)
    return c


async def load(nodes: list[Node], pairs: int, per_pair: int) -> tuple[float, list[float]]:
    """Envelopes/s and per-envelope latency (ms), senders and receivers on different nodes."""
    senders, receivers = [], []
    for i in range(pairs):
        senders.append(await _client(nodes[i % len(nodes)]))
        receivers.append(await _client(nodes[(i + 1) % len(nodes)]))
    latencies: list[float] = []

    async def send(a: SignalingClient, b: SignalingClient) -> None:
        for i in range(per_pair):
            await a.send(_intro(a, b.identity, i))
            if i % 16 == 15:
                await asyncio.sleep(0)  # let receivers run: latency, not queueing, is measured

    async def receive(b: SignalingClient) -> None:
        got = 0
        while got < per_pair:
            v = await b.recv(60)
            if v.type == "introduction":
                latencies.append(
                    (time.perf_counter() - float(v.payload["purpose"].split()[0])) * 1e3
                )
                got += 1

    t0 = time.perf_counter()
    await asyncio.gather(
        *(send(a, b) for a, b in zip(senders, receivers, strict=True)),
        *(receive(b) for b in receivers),
    )
    rate = pairs * per_pair / (time.perf_counter() - t0)
    for c in senders + receivers:
        await c.close()
    return rate, latencies


async def ping(a_node: Node, b_node: Node, n: int) -> list[float]:
    a, b = await _client(a_node), await _client(b_node)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await a.send(_intro(a, b.identity, i))
        while (await b.recv(30)).type != "introduction":
            pass
        out.append((time.perf_counter() - t0) * 1e3)
    await a.close()
    await b.close()
    return out


def pct(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


async def run(args: argparse.Namespace, work: Path, pg: str, nats: str, nats_pid: int) -> None:
    import psycopg

    seed = work / "relay.seed"
    seed.write_bytes(os.urandom(32))
    seed.chmod(0o600)
    rows = []
    ping_rows = []
    for count in (1, 3):
        with psycopg.connect(pg, autocommit=True) as db, contextlib.suppress(Exception):
            db.execute("DELETE FROM envelopes")
        nodes = [Node(work / f"n{count}-{i}", pg, nats, seed) for i in range(count)]
        try:
            await ping(nodes[0], nodes[-1], 20)  # warm-up: TLS, imports, NATS interest
            pids = [n.proc.pid for n in nodes] + [nats_pid]
            cpu0 = sum(cpu_seconds(p) for p in pids)
            rate, lat = await load(nodes, args.pairs, args.per_pair)
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            total = args.pairs * args.per_pair
            rows.append((count, rate, pct(lat, 0.5), pct(lat, 0.99), cpu / total * 1e3))
            ping_rows.append((count, await ping(nodes[0], nodes[-1], args.pings)))
        finally:
            for n in nodes:
                n.close()

    print(
        f"\nrelay cluster on {os.cpu_count()} cores: {args.pairs} pairs x {args.per_pair} envelopes"
    )
    print("(3 nodes: every envelope crosses NATS; CPU = all relay nodes + nats-server)\n")
    print(f"{'nodes':<6}{'envelopes/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'relay CPU ms/env':>18}")
    for count, rate, p50, p99, cpu_ms in rows:
        print(f"{count:<6}{rate:>12.0f}{p50:>9.2f}{p99:>9.2f}{cpu_ms:>18.3f}")
    print("\none envelope in flight (ping), ms")
    print(f"{'path':<28}{'p50':>8}{'p99':>8}")
    same = ping_rows[0][1]
    cross = ping_rows[1][1]
    print(f"{'same node (reference)':<28}{statistics.median(same):>8.2f}{pct(same, 0.99):>8.2f}")
    print(f"{'across nodes via NATS':<28}{statistics.median(cross):>8.2f}{pct(cross, 0.99):>8.2f}")
    print(f"{'NATS hop adds (p50)':<28}{statistics.median(cross) - statistics.median(same):>8.2f}")
    print("federation hop: see `python bench/federation.py` (relay → far relay over wss)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--per-pair", type=int, default=300)
    ap.add_argument("--pings", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsip-bench-cluster-"))
    try:
        with local_postgres() as pg, nats_server(work) as (nats, nats_proc):
            asyncio.run(run(args, work, pg, nats, nats_proc.pid))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
