"""End-to-end 1:1 messages through one relay, beside the raw Double Ratchet in the same run.

One message = alice's ``Messenger.send`` (session from SQLite, encrypt, store, sign) → wss to
a local relay (verify, route, store-and-forward with ack/1.0) → bob's ``Messenger.receive``
(verify, decrypt, store session + inbox + seen id in one transaction). Throughput is messages
fully received by bob per second with ``--window`` messages in flight; latency is send-to-
decrypt per message at a window of 1 (one message at a time). Session stores use
``synchronous=NORMAL`` (WAL; durable against process crash, not against power loss).

The reference is the ``doubleratchet`` library's own encrypt+decrypt in memory (what
bench/ratchet.py calls "raw").

Usage: ``python bench/messaging.py [--n 400] [--window 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dsip.agent.messaging import MessagingAgent
from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.messaging.messages import Messenger
from dsip.messaging.prekeys import PrekeyStore
from dsip.messaging.session_store import SessionStore
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store
from ratchet import raw_library

TEXT = "bench message of a typical chat length, about sixty bytes."


async def run(n: int, window: int) -> list[tuple[str, str, str]]:
    ca = LocalCA.create()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = RelayConfig(
            ws_port=0,
            store=f"sqlite:///{tmp}/relay.db",
            envelopes_per_minute=10**7,
            invites_per_minute=10**7,
            ip_envelopes_per_minute=10**7,
        )
        relay = Relay(
            cfg,
            KeyPair.generate(),
            await open_store(cfg.store),
            server_ssl=ca.server_context(),
            prekeys=PrekeyStore.open(tmp / "prekeys.db"),
        )
        await relay.start()
        uri = f"wss://localhost:{relay.ws_port}/dsip"
        agents = []
        for name in ("alice", "bob"):
            key = KeyPair.generate()
            store = SessionStore.open(tmp / f"{name}.db", key=bytes(32), synchronous="NORMAL")
            client = SignalingClient(key)
            await client.connect(uri, ssl_context=ca.client_context())
            agents.append(MessagingAgent(client, Messenger(key, store), timeout=30))
        alice, bob = agents
        try:
            await bob.publish_prekeys(target=5)
            await alice.send_text(bob.messenger.device.did, "hello")
            await bob.receive()
            # latency, one message at a time
            lat = []
            for _ in range(min(n, 200)):
                t0 = time.perf_counter()
                await alice.send_text(bob.messenger.device.did, TEXT)
                await bob.receive()
                lat.append((time.perf_counter() - t0) * 1000)
            # throughput with a window of messages in flight
            t0, cpu0 = time.perf_counter(), time.process_time()
            in_flight = asyncio.Semaphore(window)  # no busy-waiting: it would count as CPU

            async def consume() -> None:
                for _ in range(n):
                    await bob.receive()
                    in_flight.release()

            consumer = asyncio.create_task(consume())
            for _ in range(n):
                await in_flight.acquire()
                await alice.send_text(bob.messenger.device.did, TEXT)
            await consumer
            rate = n / (time.perf_counter() - t0)
            cpu_ms = (time.process_time() - cpu0) * 1000 / n
        finally:
            for a in agents:
                await a.client.close()
                a.messenger.store.close()
            await relay.stop()
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return [
        (f"E2E messages/s through one relay (window {window})", f"{rate:,.0f}", "msgs/s"),
        ("CPU per E2E message (sender + relay + receiver)", f"{cpu_ms:.2f}", "ms"),
        ("E2E latency p50", f"{statistics.median(lat):.2f}", "ms"),
        ("E2E latency p99", f"{p99:.2f}", "ms"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="messages in the throughput run")
    ap.add_argument("--window", type=int, default=32, help="messages in flight")
    args = ap.parse_args()
    rows = asyncio.run(run(args.n, args.window))
    fn = raw_library(2000, ping_pong=False)
    t0 = time.perf_counter()
    fn()
    raw = 2000 / (time.perf_counter() - t0)
    rows.append(("raw doubleratchet encrypt+decrypt (reference)", f"{raw:,.0f}", "msgs/s"))
    e2e = float(rows[0][1].replace(",", ""))
    rows.append(("ratio E2E / raw", f"{e2e / raw:.3f}", ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  unit")
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:>10}  {unit}")


if __name__ == "__main__":
    main()
