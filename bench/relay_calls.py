"""Signed call setups per second through one relay process, beside raw SIP (SIPp) on loopback.

One relay runs as its own process (``dsip relay``, wss with a local CA, SQLite store). A
load process holds N caller/callee pairs, each pair two real WebSocket connections; every
pair loops invite → answer → bye. Every envelope is verified twice — by the relay's full
pipeline and by the receiving endpoint's — and signed once by its sender.

Reported: setups/s, setup latency (invite sent → answer verified) p50/p99, the relay's CPU
seconds per setup (from /proc), and the reference line: SIPp UAC → SIPp UAS, plain SIP
INVITE/200/ACK/BYE over UDP on loopback, in the same run.

Usage: ``python bench/relay_calls.py [--pairs 50] [--seconds 10] [--no-sipp]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier, make_payload
from dsip.core.identity import KeyPair

ANSWER_MEDIA = [{"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]}]
OFFER_MEDIA = [
    {
        "type": "audio",
        "direction": "sendrecv",
        "codecs": [{"id": "codec:audio/opus", "sample_rates": [48000]}],
    }
]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def run_pairs(
    uri: str, ctx: ssl.SSLContext, pairs: int, seconds: float
) -> tuple[int, list[float]]:
    clients = []
    for _ in range(pairs):
        a, b = (
            SignalingClient(KeyPair.generate(), verifier=Verifier()),
            SignalingClient(KeyPair.generate(), verifier=Verifier()),
        )
        await a.connect(uri, ssl_context=ctx, timeout=20)
        await b.connect(uri, ssl_context=ctx, timeout=20)
        clients.append((a, b))
    latencies: list[float] = []
    done = 0
    stop_at = time.monotonic() + seconds

    async def callee(b: SignalingClient, caller: str) -> None:
        while True:
            v = await b.recv()
            if v.type == "invite":
                await b.send(
                    b.build(
                        "answer",
                        to=caller,
                        session=v.id,
                        answered_by="user",
                        media=ANSWER_MEDIA,
                        transports=[{"id": "transport:webrtc"}],
                    )
                )

    async def caller(a: SignalingClient, callee_did: str) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            invite = make_payload(
                "invite",
                sender=a.identity,
                now=int(time.time()),
                to=callee_did,
                media=OFFER_MEDIA,
                transports=[{"id": "transport:webrtc", "ice": "trickle"}],
            )
            t0 = time.perf_counter()
            await a.send(invite)
            while True:
                v = await a.recv(10)
                if v.type == "answer" and v.payload.get("session") == invite["id"]:
                    break
            latencies.append(time.perf_counter() - t0)
            await a.send(a.build("bye", to=callee_did, session=invite["id"], reason="user.hangup"))
            done += 1

    callees = [asyncio.create_task(callee(b, a.identity)) for a, b in clients]
    t0 = time.monotonic()
    await asyncio.gather(*(caller(a, b.identity) for a, b in clients))
    elapsed = time.monotonic() - t0
    for t in callees:
        t.cancel()
    for a, b in clients:
        await a.close()
        await b.close()
    return int(done / elapsed), latencies


def sipp_reference() -> tuple[float, str]:
    """Highest SIPp UAC→UAS rate that completes with zero failed calls (ramped 1k→12k cps)."""
    sipp = shutil.which("sipp")
    if sipp is None:
        return 0.0, "sipp not installed (Debian package sip-tester)"
    uas = subprocess.Popen(
        [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", "15070", "-nostdin"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    best, note = 0.0, ""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for target in (1000, 2000, 3000, 4000, 6000, 8000, 12000):
                calls = target * 2
                stat = Path(tmp) / f"stat-{target}.csv"
                t0 = time.monotonic()
                subprocess.run(
                    [
                        sipp,
                        "-sn",
                        "uac",
                        "127.0.0.1:15070",
                        "-i",
                        "127.0.0.1",
                        "-p",
                        "15071",
                        "-r",
                        str(target),
                        "-l",
                        str(target),
                        "-m",
                        str(calls),
                        "-d",
                        "0",
                        "-nostdin",
                        "-timeout",
                        "15",
                        "-trace_stat",
                        "-fd",
                        "1",
                        "-stf",
                        str(stat),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
                elapsed = time.monotonic() - t0
                header, last = (
                    line.split(";")
                    for line in stat.read_text().splitlines()[
                        :: len(stat.read_text().splitlines()) - 1
                    ]
                )
                row = dict(zip(header, last, strict=False))
                ok, failed = int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])
                if failed or ok < calls:
                    break
                best, note = ok / elapsed, f"{ok} calls at target {target}/s, 0 failed"
    finally:
        uas.terminate()
        uas.wait(5)
    return best, note + "; INVITE/100/180/200/ACK/BYE/200 over UDP"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-sipp", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dsip-bench-"))
    ready = work / "ready.json"
    # Generous policy limits: this measures throughput, not the rate limiter.
    (work / "relay.toml").write_text(
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
            str(work / "relay.toml"),
            "--ws-port",
            "0",
            "--local-ca",
            str(work / "tls"),
            "--store",
            f"sqlite:///{work}/relay.db",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("relay did not start")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        ctx = ssl.create_default_context(cafile=str(work / "tls" / "ca.pem"))
        uri = f"wss://localhost:{info['ws_port']}/dsip"
        cpu0 = _cpu_seconds(proc.pid)
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            rate, lat = runner.run(run_pairs(uri, ctx, args.pairs, args.seconds))
        cpu1 = _cpu_seconds(proc.pid)
        setups = max(1, int(rate * args.seconds))
        lat.sort()
        p50 = statistics.median(lat) * 1000
        p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
        sipp_rate, sipp_note = (0.0, "skipped") if args.no_sipp else sipp_reference()
        print(f"relay call-setup benchmark: {args.pairs} pairs over wss, {args.seconds:.0f} s")
        print(
            f"{'line':<44} {'setups/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'relay CPU ms/setup':>19}"
        )
        print(f"{'-' * 44} {'-' * 9} {'-' * 8} {'-' * 8} {'-' * 19}")
        print(
            f"{'dsip invite/answer/bye, signed + verified':<44} {rate:>9,} {p50:>8.1f} {p99:>8.1f} "
            f"{(cpu1 - cpu0) / setups * 1000:>19.3f}"
        )
        print(
            f"{'SIPp UAC -> UAS raw SIP (reference)':<44} {sipp_rate:>9,.0f} {'':>8} {'':>8} {'':>19}  {sipp_note}"
        )
        print(f"\nratio dsip / raw SIP = {rate / sipp_rate:.2f}" if sipp_rate else "")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
