"""Bridged call setups per second through ``dsip gateway``, against raw SIP in the same run.

Measured: SIPp UAC → ``dsip gateway`` (sippy, UDP) → DSIP agent on a ``dsip relay``, which
verifies every envelope's signature and answers at once; SIPp hangs up right away
(INVITE/100/180/200/ACK/BYE/200 on the SIP side; invite/progress/answer/bye, all signed and
verified, on the DSIP side). Reference: SIPp UAC → SIPp UAS directly, same rate and count.
The relay, the gateway and the answering agent are three processes, as deployed. Setup time
is SIPp's INVITE → 200 response time (``-trace_rtt``); the rate is completed calls over the
wall time of the SIPp run. The relay's per-sender limits are lifted (a gateway is a
trunk-class client, not a phone).

Usage: ``python bench/gateway.py [--rate 300] [--calls 3000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsip.agent.calls import Call, CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.services.ports import free_port

Run = tuple[int, int, float, list[float]]  # ok, failed, seconds, setup times (ms)


def _sipp() -> str:
    found = shutil.which("sipp")
    if found is None:
        raise SystemExit("sipp not installed (Debian package sip-tester)")
    return found


def run_uac(target: int, rate: int, calls: int, workdir: Path) -> Run:
    stat = workdir / f"stat-{target}.csv"
    cmd = [
        _sipp(), "-sn", "uac", f"127.0.0.1:{target}", "-i", "127.0.0.1",
        "-p", str(free_port(udp=True, tcp=False)), "-r", str(rate), "-l", str(rate * 4),
        "-m", str(calls), "-d", "0", "-nostdin", "-timeout", "120",
        "-trace_stat", "-fd", "1", "-stf", str(stat), "-trace_rtt", "-rtt_freq", "1",
    ]  # fmt: skip
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    lines = stat.read_text().splitlines()
    row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    rtts: list[float] = []
    for f in workdir.glob("uac_*_rtt.csv"):
        with f.open() as fh:
            for rec in csv.reader(fh, delimiter=";"):
                if len(rec) >= 2 and rec[1].replace(".", "", 1).isdigit():
                    rtts.append(float(rec[1]))
        f.unlink()
    return int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"]), elapsed, rtts


def _wait_ready(path: Path, proc: subprocess.Popen[bytes], what: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)
    data: dict[str, object] = json.loads(path.read_text())
    return data


CPU: dict[str, float] = {}  # CPU seconds each process spent during the bridged run


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def bridged(rate: int, calls: int, workdir: Path) -> Run:
    procs: list[subprocess.Popen[bytes]] = []
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        (workdir / "relay.toml").write_text(
            "[relay]\nenvelopes_per_minute = 10000000\ninvites_per_minute = 10000000\n"
            "ip_envelopes_per_minute = 10000000\nsend_queue = 8192\n"
        )
        relay = subprocess.Popen(
            _py("-m", "dsip", "relay", "--config", str(workdir / "relay.toml"),
                "--ws-port", "0", "--local-ca", str(workdir / "tls"),
                "--store", f"sqlite:///{workdir}/relay.db",
                "--ready-file", str(workdir / "relay.json")),
            **quiet,
        )  # fmt: skip
        procs.append(relay)
        info = _wait_ready(workdir / "relay.json", relay, "relay")
        uri = f"wss://localhost:{info['ws_port']}/dsip"
        ca = str(workdir / "tls" / "ca.pem")
        agent = subprocess.Popen(
            _py(__file__, "--agent", uri, "--ca", ca, "--ready", str(workdir / "agent.json")),
            **quiet,
        )
        procs.append(agent)
        did = str(_wait_ready(workdir / "agent.json", agent, "agent")["did"])
        port = free_port(udp=True, tcp=False)
        gateway = subprocess.Popen(
            _py("-m", "dsip", "gateway", "--relay", uri, "--ca", ca,
                "--sip", f"127.0.0.1:{port}", "--default-route", did,
                "--max-calls", str(max(500, rate * 8)),
                "--ready-file", str(workdir / "gw.json")),
            **quiet,
        )  # fmt: skip
        procs.append(gateway)
        _wait_ready(workdir / "gw.json", gateway, "gateway")
        before = [_cpu(p.pid) for p in procs]
        result = run_uac(port, rate, calls, workdir)
        spent = [_cpu(p.pid) - b for p, b in zip(procs, before, strict=True)]
        CPU.update(zip(("relay", "agent", "gateway"), spent, strict=True))
        return result
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def direct(rate: int, calls: int, workdir: Path) -> Run:
    port = free_port(udp=True, tcp=False)
    uas = subprocess.Popen(
        [_sipp(), "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        return run_uac(port, rate, calls, workdir)
    finally:
        uas.terminate()
        uas.wait(5)


async def answer_everything(uri: str, ca: str, ready: Path) -> None:
    """The answering DSIP agent (its own process): every incoming call is answered."""
    client = SignalingClient(KeyPair.generate(), verifier=Verifier())
    await client.connect(uri, cafile=ca, timeout=10)
    agent = CallAgent(client)
    await agent.start()
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"did": client.identity}))
    os.replace(tmp, ready)
    pending: set[asyncio.Task[None]] = set()

    async def answer(call: Call) -> None:
        await call.answer()
        await call.wait_for("ended", 120)

    while True:
        call = await agent.incoming()
        task = asyncio.create_task(answer(call))
        pending.add(task)
        task.add_done_callback(pending.discard)


def _row(name: str, run: Run) -> tuple[str, float, int, int, float, float]:
    ok, failed, seconds, rtts = run
    ordered = sorted(rtts)
    p50 = statistics.median(ordered) if ordered else float("nan")
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")
    return name, ok / seconds, ok, failed, p50, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rate", type=int, default=300, help="SIPp call rate (calls/s)")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--agent", metavar="URI", help=argparse.SUPPRESS)
    ap.add_argument("--ca", help=argparse.SUPPRESS)
    ap.add_argument("--ready", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.agent:
        asyncio.run(answer_everything(args.agent, args.ca, args.ready))
        return
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        rows = [
            _row("SIPp UAC -> gateway -> DSIP agent (verified)", bridged(args.rate, args.calls, Path(t1))),
            _row("SIPp UAC -> SIPp UAS direct (reference)", direct(args.rate, args.calls, Path(t2))),
        ]  # fmt: skip
    print(
        f"offered {args.rate} calls/s, {args.calls} calls, UDP on 127.0.0.1, {os.cpu_count()} CPUs"
    )
    print(f"{'path':<46} {'cps':>8} {'ok':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, cps, ok, failed, p50, p99 in rows:
        print(f"{name:<46} {cps:>8.1f} {ok:>6} {failed:>6} {p50:>8.1f} {p99:>8.1f}")
    if rows[1][1]:
        print(f"\nratio bridged / direct = {rows[0][1] / rows[1][1]:.2f}")
    per_call = ", ".join(f"{k} {v * 1000 / max(rows[0][2], 1):.2f}" for k, v in CPU.items())
    print(f"CPU ms per bridged call: {per_call}")


if __name__ == "__main__":
    main()
