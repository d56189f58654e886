"""Media benchmarks: connect time, loss and CPU of signed DSIP calls with real WebRTC media.

Rows (each the median of ``--calls`` calls unless stated):

* P2P connect — from sending the signed invite (through a real relay over wss) to the
  first RTP audio packet at the callee (before the jitter buffer and decoder);
* TURN connect — the same with relay-only ICE through a local coturn, credentials from the
  relay hello;
* reference: aiortc ⇄ aiortc in one process, SDP handed over directly (no DSIP, no relay);
* loss — packets lost / expected over ``--seconds`` of Opus audio on one P2P call;
* CPU — process CPU seconds per second of a two-party call (both ends in this process).

Usage: ``python bench/media.py [--calls 5] [--seconds 30]``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from dsip.agent.calls import CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.media.tone import ToneTrack
from dsip.media.webrtc import WebRtcMedia, ice_servers_from, loopback_only
from dsip.services.coturn import Coturn
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store


async def dsip_call(
    uri: str, ca: LocalCA, *, relay_only: bool, hold: float = 0.0
) -> tuple[float, dict[str, float]]:
    a, b = SignalingClient(KeyPair.generate()), SignalingClient(KeyPair.generate())
    await a.connect(uri, ssl_context=ca.client_context())
    await b.connect(uri, ssl_context=ca.client_context())
    alice, bob = CallAgent(a), CallAgent(b)
    await alice.start()
    await bob.start()
    am = WebRtcMedia(
        audio=ToneTrack(1000.0), ice_servers=ice_servers_from(a.capabilities), relay_only=relay_only
    )
    bm = WebRtcMedia(
        audio=ToneTrack(600.0), ice_servers=ice_servers_from(b.capabilities), relay_only=relay_only
    )
    stats: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        media, transports = await am.offer()
        call = await alice.call(b.identity, media=media, transports=transports)
        incoming = await bob.incoming(timeout=10)
        sel, ans = await bm.answer(incoming.offer)
        packet = first_packet(bm)
        await incoming.answer(media=sel, transports=ans)
        answered = await call.wait_for("answered", 10)
        assert answered.message is not None
        await am.accept(answered.message.payload)
        await asyncio.wait_for(packet.wait(), 20)
        connect = time.perf_counter() - t0
        track = await bm.next_track("audio", timeout=20)
        if hold:
            cpu0 = time.process_time()
            end = time.monotonic() + hold
            while time.monotonic() < end:
                await track.recv()
            stats["cpu_per_s"] = (time.process_time() - cpu0) / hold
            report = await bm.pc.getStats()
            for s in report.values():
                if getattr(s, "type", "") == "inbound-rtp" and getattr(s, "kind", "") == "audio":
                    stats["lost"] = float(s.packetsLost)
                    stats["received"] = float(s.packetsReceived)
        await call.hangup()
        return connect, stats
    finally:
        await am.close()
        await bm.close()
        await alice.close()
        await bob.close()


async def raw_aiortc() -> float:
    am, bm = WebRtcMedia(audio=ToneTrack(1000.0)), WebRtcMedia(audio=ToneTrack(600.0))
    try:
        t0 = time.perf_counter()
        offer_m, offer_t = await am.offer()
        ans_m, ans = await bm.answer({"media": offer_m, "transports": offer_t})
        packet = first_packet(bm)
        await am.accept({"media": ans_m, "transports": ans})
        await asyncio.wait_for(packet.wait(), 20)
        return time.perf_counter() - t0
    finally:
        await am.close()
        await bm.close()


async def main_async(calls: int, seconds: float) -> None:
    loopback_only(True)
    work = Path(tempfile.mkdtemp(prefix="dsip-bench-media-"))
    ca = LocalCA.create()
    coturn = Coturn(work / "coturn").start()
    store = await open_store(f"sqlite:///{work}/relay.db")
    relay = Relay(
        RelayConfig(ws_port=0),
        KeyPair.generate(),
        store,
        server_ssl=ca.server_context(),
        turn=lambda did, token: coturn.credentials(did).as_capability(),
    )
    await relay.start()
    uri = f"wss://localhost:{relay.ws_port}/dsip"
    try:
        p2p = [(await dsip_call(uri, ca, relay_only=False))[0] for _ in range(calls)]
        turn = [(await dsip_call(uri, ca, relay_only=True))[0] for _ in range(calls)]
        ref = [await raw_aiortc() for _ in range(calls)]
        _, held = await dsip_call(uri, ca, relay_only=False, hold=seconds)
    finally:
        await relay.stop()
        coturn.stop()
    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print(f"media benchmark: loopback, {calls} calls per row (median), Opus 20 ms frames")
    print(f"{'row':<52} {'value':>12}  reference / goal")
    print(f"{'-' * 52} {'-' * 12}  {'-' * 30}")
    print(
        f"{'P2P connect: invite sent -> first audio packet':<52} {ms(p2p):>9.1f} ms  goal < 100 ms"
    )
    print(f"{'TURN (relay-only) connect, coturn':<52} {ms(turn):>9.1f} ms  goal < 600 ms")
    print(f"{'aiortc <-> aiortc, no DSIP (reference)':<52} {ms(ref):>9.1f} ms  reference")
    expected = held.get("received", 0) + held.get("lost", 0)
    loss = held.get("lost", 0) / expected * 100 if expected else float("nan")
    print(
        f"{f'loss over {seconds:.0f} s of audio (packets lost / expected)':<52} "
        f"{int(held.get('lost', 0)):>6} / {int(expected):<5}  {loss:.2f} %, goal 0"
    )
    print(
        f"{'CPU per two-party call (both ends, this process)':<52} {held.get('cpu_per_s', 0) * 100:>10.1f} %  of one core"
    )
    fanout = await sfu_fanout((3, 6), min(seconds, 10.0))
    for n, (cpu, streams) in fanout.items():
        print(
            f"{f'SFU fan-out, {n} participants (Janus CPU)':<52} {cpu:>10.1f} %  {streams} forwarded audio streams"
        )
    if not fanout:
        print(
            "SFU fan-out: skipped (needs root for the Janus network namespace and the janus package)"
        )


async def sfu_fanout(sizes: tuple[int, ...], seconds: float) -> dict[int, tuple[float, int]]:
    """Janus CPU (% of one core) while N participants each publish a tone and receive the
    other N-1, and the number of forwarded streams; Janus runs in its test namespace."""
    import shutil

    from dsip.media.sfu_client import SfuGroupClient, request_join
    from dsip.services.janus import IsolatedNetwork, Janus
    from dsip.services.sfu import (
        JanusRooms,
        JoinAdmitter,
        SfuJoinService,
        issue_access_token,
        jwt_access_verifier,
    )

    if IsolatedNetwork.available() is not None or shutil.which("janus") is None:
        return {}
    net = IsolatedNetwork().create()
    janus = Janus(Path(tempfile.mkdtemp(prefix="dsip-bench-janus-")), network=net)
    results: dict[int, tuple[float, int]] = {}
    try:
        janus.start()
        assert janus.proc is not None
        pid = janus.proc.pid
        for n in sizes:

            async def scenario(n: int = n) -> tuple[float, int]:
                issuer = KeyPair.generate()
                verifier = jwt_access_verifier({issuer.did: issuer.public_key})
                rooms = JanusRooms(
                    janus.admin(), janus_url=janus.url, room_admin_key=janus.room_admin_key
                )
                service = await SfuJoinService(
                    JoinAdmitter(audience="bench", verify_token=verifier), rooms
                ).start()
                clients = []
                try:
                    for i in range(n):
                        key = KeyPair.generate()
                        tok = issue_access_token(
                            issuer, subject=key.did, room=f"bench{n}", now=int(time.time())
                        )
                        grant = await request_join(
                            service.url, key, access_token=tok, room=f"bench{n}", audience="bench"
                        )
                        clients.append(SfuGroupClient(grant, audio=ToneTrack(400.0 + 100 * i)))
                    await asyncio.gather(*(c.join() for c in clients))
                    for c in clients:
                        await c.wait_for_tracks(n - 1, timeout=30)
                    cpu0 = _proc_cpu(pid)
                    await asyncio.sleep(seconds)
                    return (_proc_cpu(pid) - cpu0) / seconds * 100, n * (n - 1)
                finally:
                    for c in clients:
                        await c.close()
                    await service.stop()
                    await rooms.admin.aclose()

            results[n] = await net.run(scenario, timeout=180)
    finally:
        janus.stop()
        net.delete()
    return results


def _proc_cpu(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_packet(media: WebRtcMedia) -> asyncio.Event:
    """Set when the first RTP packet reaches any of ``media``'s receivers (before decoding).

    Wraps aiortc's private ``RTCRtpReceiver._handle_rtp_packet`` — bench-only instrumentation.
    """
    seen = asyncio.Event()
    for transceiver in media.pc.getTransceivers():
        receiver = transceiver.receiver
        original = receiver._handle_rtp_packet

        async def hook(packet: object, arrival_time_ms: int, _orig: object = original) -> None:
            seen.set()
            await _orig(packet, arrival_time_ms)  # type: ignore[operator]

        receiver._handle_rtp_packet = hook  # type: ignore[method-assign]
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    asyncio.run(main_async(args.calls, args.seconds))


if __name__ == "__main__":
    main()
