"""Federation hop cost: a message A → B → recipient beside the same message within one relay.

Two relay processes (``dsip relay``, wss with one local CA, SQLite stores, did:web identities
served by an in-process ``DidWebHost``) federate: alice and carol are homed on relay A, bob
on relay B. The bench process holds the three devices, so one clock times both ends.

* **latency** — one message at a time, sent → verified by the recipient: alice → carol
  (same relay, the reference) and alice → bob (A's outbox, the A→B link, B's custody ack);
* **throughput** — a burst of messages, first sent → last verified.

Every message is an ``introduction`` signed by alice; the relays verify it (both, on the
federated path) and the recipient's device verifies it again.

Usage: ``python bench/federation.py [--messages 300] [--burst 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier, make_payload
from dsip.core.identity import KeyPair, did_web_document
from dsip.services.didweb_host import DidWebHost
from dsip.services.federation import relay_document
from dsip.services.localca import LocalCA
from dsip.services.ports import free_port


def _identity(host: DidWebHost, *path: str, seed: bytes | None = None) -> KeyPair:
    did = host.did(*path)
    base = KeyPair.from_seed(seed) if seed else KeyPair.generate()
    return KeyPair(base.private_key, f"{did}#key-1")


def _start_relay(
    name: str, work: Path, host: DidWebHost, tls: dict[str, Path]
) -> tuple[subprocess.Popen[bytes], KeyPair, str]:
    d = work / name
    d.mkdir()
    seed = os.urandom(32)
    (d / "seed").write_bytes(seed)
    (d / "seed").chmod(0o600)
    key = _identity(host, "relays", name, seed=seed)
    uri = f"wss://localhost:{free_port()}/dsip"
    host.publish(key.did, relay_document(key.did, key, uri))
    (d / "relay.toml").write_text(
        "[relay]\nenvelopes_per_minute = 1000000\ninvites_per_minute = 1000000\n"
        "ip_envelopes_per_minute = 100000000\nsend_queue = 4096\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsip",
            "relay",
            "--config",
            str(d / "relay.toml"),
            "--ws-port",
            uri.rsplit(":", 1)[1].split("/")[0],
            "--tls-cert",
            str(tls["cert"]),
            "--tls-key",
            str(tls["key"]),
            "--trust-ca",
            str(tls["ca"]),
            "--store",
            f"sqlite:///{d}/relay.db",
            "--identity-seed-file",
            str(d / "seed"),
            "--did",
            key.did,
            "--public-uri",
            uri,
            "--ready-file",
            str(d / "ready.json"),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (d / "ready.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"relay {name} did not start")
        time.sleep(0.05)
    return proc, key, uri


def _intro(sender: str, to: str, i: int) -> dict[str, Any]:
    return make_payload(
        "introduction",
        sender=sender,
        now=int(time.time()),
        to=to,
        ttl=600,
        purpose=f"bench {i}",
        identity={"display_name": "Alice", "claims": []},
    )


async def _next_intro(client: SignalingClient) -> None:
    while (await client.recv(30)).type != "introduction":
        pass


async def _latency(alice: SignalingClient, to: SignalingClient, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await alice.send(_intro(alice.identity, to.identity, i))
        await _next_intro(to)
        out.append(time.perf_counter() - t0)
    return out


async def _throughput(alice: SignalingClient, to: SignalingClient, n: int) -> float:
    t0 = time.perf_counter()

    async def sender() -> None:
        for i in range(n):
            await alice.send(_intro(alice.identity, to.identity, i))

    async def receiver() -> None:
        for _ in range(n):
            await _next_intro(to)

    await asyncio.gather(sender(), receiver())
    return n / (time.perf_counter() - t0)


async def run(args: argparse.Namespace, host: DidWebHost, ca: LocalCA, relays: Any) -> None:
    (key_a, uri_a), (key_b, uri_b) = relays
    resolver = DidResolver(verify=ca.client_context())
    users = {}
    for name, (relay_key, uri) in {
        "alice": (key_a, uri_a),
        "carol": (key_a, uri_a),
        "bob": (key_b, uri_b),
    }.items():
        key = _identity(host, "users", name)
        host.publish(
            key.did,
            did_web_document(
                key.did, [("key-1", key.public_key_multibase)], services={"ws": [uri]}
            ),
        )
        await resolver.resolve(relay_key.did)
        client = SignalingClient(key, verifier=Verifier(resolver.cached), resolver=resolver)
        await client.connect(uri, ssl_context=ca.client_context(), timeout=10)
        users[name] = client
    alice, carol, bob = users["alice"], users["carol"], users["bob"]
    await _latency(alice, bob, 20)  # warm-up: link up, documents cached everywhere
    await _latency(alice, carol, 20)
    local = sorted(await _latency(alice, carol, args.messages))
    remote = sorted(await _latency(alice, bob, args.messages))
    local_rate = await _throughput(alice, carol, args.burst)
    remote_rate = await _throughput(alice, bob, args.burst)
    for client in users.values():
        await client.close()
    await resolver.aclose()

    def p(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * q))] * 1000

    print(f"federation benchmark: {args.messages} sequential messages, bursts of {args.burst}")
    print(f"{'figure':<34} {'A -> B -> bob':>14} {'A -> carol (ref)':>17} {'ratio':>7}")
    print(f"{'-' * 34} {'-' * 14} {'-' * 17} {'-' * 7}")
    rows = [
        ("one-way latency p50, ms", p(remote, 0.5), p(local, 0.5)),
        ("one-way latency p99, ms", p(remote, 0.99), p(local, 0.99)),
        ("mean latency, ms", statistics.mean(remote) * 1000, statistics.mean(local) * 1000),
        ("burst throughput, messages/s", remote_rate, local_rate),
    ]
    for label, fig, ref in rows:
        print(f"{label:<34} {fig:>14.2f} {ref:>17.2f} {fig / ref:>7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--burst", type=int, default=1000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsip-bench-fed-"))
    ca = LocalCA.create()
    tls = {"ca": ca.write_ca_pem(work / "ca.pem"), "cert": work / "relay.crt"}
    with open(tls["cert"], "wb") as fh:
        for pem in ca.server.cert_chain_pems:
            fh.write(pem.bytes())
    tls["key"] = work / "relay.key"
    ca.server.private_key_pem.write_to_path(str(tls["key"]))
    tls["key"].chmod(0o600)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with DidWebHost(ca) as host:
            relays = []
            for name in ("a", "b"):
                proc, key, uri = _start_relay(name, work, host, tls)
                procs.append(proc)
                relays.append((key, uri))
            asyncio.run(run(args, host, ca, relays))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
