"""``dsip psap``: run a PSAP (emergency answering point) for an emergency namespace DID."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from dsip.cli.service import until_stopped
from dsip.errors import ConfigError, DsipError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "psap",
        help="run a PSAP: answer emergency calls with verified location",
        description=(
            "Bind an emergency namespace identity (did:web:911.us, did:web:112.eu, ...) at a "
            "relay and take emergency calls: open the sealed location, verify the caller, "
            "the dual-signed geo-attestation and the device certification, queue by "
            "priority and show the call taker each call with its location, tier, "
            "certification and flags. The default policy accepts every emergency call and "
            "flags what did not verify; --strict applies the seed's rule (gold devices, "
            "valid signatures) and refuses the rest."
        ),
    )
    p.add_argument("--relay", required=True, metavar="URI", help="wss:// URI of the relay")
    p.add_argument("--did", required=True, help="the PSAP's did:web (its key is #key-1)")
    p.add_argument(
        "--identity-seed-file", required=True, type=Path, help="32-byte Ed25519 seed (mode 0600)"
    )
    p.add_argument("--trust-ca", type=Path, metavar="FILE", help="also trust this CA (PEM)")
    p.add_argument(
        "--pin-host",
        action="append",
        default=[],
        metavar="NAME=ADDR",
        help="resolve NAME to ADDR when fetching did:web documents (loopback deployments)",
    )
    p.add_argument(
        "--certifier",
        action="append",
        default=[],
        metavar="DID",
        help="a device certifier whose DeviceCertificationCredentials are trusted",
    )
    p.add_argument("--strict", action="store_true", help="refuse calls that do not verify")
    p.add_argument(
        "--answer", action="store_true", help="answer each call in queue order (tone media)"
    )
    p.add_argument("--tone", type=float, default=1500.0, help="answering tone, Hz")
    p.set_defaults(func=_run)
    _register_test_call(sub)


def _register_test_call(sub: Any) -> None:
    p = sub.add_parser(
        "psap-test-call",
        help="place an emergency call to a PSAP (exit 3: use the native dialer)",
        description=(
            "Place an emergency call the way an agent does (seed §19.2): dual-signed "
            "location (device key in its own file), sealed to the PSAP, priority emergency. "
            "Exit status 0 when a PSAP answers; 3 when none answers in --answer-timeout "
            "seconds or DSIP cannot reach one: the device must fall back to the native "
            "dialer (§19.3)."
        ),
    )
    p.add_argument("--relay", required=True, metavar="URI", help="wss:// URI of the relay")
    p.add_argument("--psap", required=True, metavar="DID", help="did:web:911.<region>")
    p.add_argument("--device-key", required=True, type=Path, help="device key file (0600)")
    p.add_argument("--lat", type=float, required=True)
    p.add_argument("--lon", type=float, required=True)
    p.add_argument("--accuracy", type=int, default=5, help="metres")
    p.add_argument("--method", default="gps", choices=["gps", "gnss", "wifi", "cell", "ip"])
    p.add_argument("--answer-timeout", type=float, default=20.0)
    p.add_argument("--trust-ca", type=Path, metavar="FILE", help="also trust this CA (PEM)")
    p.add_argument("--pin-host", action="append", default=[], metavar="NAME=ADDR")
    p.set_defaults(func=_run_test_call)


def _run_test_call(args: argparse.Namespace) -> int:
    return asyncio.run(_test_call(args))


async def _test_call(args: argparse.Namespace) -> int:
    import ssl
    import time

    import httpx

    from dsip.agent.calls import CallAgent
    from dsip.agent.emergency import (
        ANSWERED,
        NATIVE_DIALER_EXIT,
        EmergencyCaller,
        EmergencySignalingClient,
        PinnedHosts,
    )
    from dsip.agent.resolver import DidResolver
    from dsip.core.emergency.geo import FileKeyStore, Fix
    from dsip.core.envelope import Verifier
    from dsip.core.identity import KeyPair

    verify: ssl.SSLContext | bool = True
    if args.trust_ca:
        verify = ssl.create_default_context(cafile=str(args.trust_ca))
    http = httpx.AsyncClient(transport=PinnedHosts(_pins(args.pin_host), verify=verify))
    resolver = DidResolver(client=http)
    key = KeyPair.generate()
    client = EmergencySignalingClient(key, verifier=Verifier(resolver.cached), resolver=resolver)
    try:
        await client.connect(args.relay, cafile=str(args.trust_ca) if args.trust_ca else None)
    except (DsipError, OSError) as exc:  # no relay: no DSIP emergency call at all
        print(f"use native dialer: relay unreachable ({type(exc).__name__})")
        await http.aclose()
        return NATIVE_DIALER_EXIT
    agent = CallAgent(client)
    await agent.start()
    try:
        caller = EmergencyCaller(
            agent,
            identity_key=key,
            device=FileKeyStore.open(args.device_key),
            resolver=resolver,
            answer_timeout=args.answer_timeout,
        )
        fix = Fix(args.lat, args.lon, args.accuracy, args.method, int(time.time()))
        outcome = await caller.call(fix, psap=args.psap)
        if outcome.kind == ANSWERED and outcome.call is not None:
            print(f"answered by {outcome.psap}")
            await outcome.call.hangup()
            return 0
        print(f"use native dialer: {outcome.reason}")
        return NATIVE_DIALER_EXIT
    finally:
        await agent.close()
        await http.aclose()


def _pins(items: list[str]) -> dict[str, str]:
    pins = {}
    for item in items:
        name, sep, addr = item.partition("=")
        if not sep or not name or not addr:
            raise ConfigError(f"--pin-host {item!r}: expected NAME=ADDR")
        pins[name] = addr
    return pins


def _run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    import ssl

    import httpx
    from rich.console import Console

    from dsip.agent.emergency import PinnedHosts
    from dsip.agent.resolver import DidResolver
    from dsip.core.emergency.namespaces import require_emergency_did
    from dsip.core.emergency.psap_policy import PsapPolicy
    from dsip.core.identity import KeyPair
    from dsip.services.psap import PsapCall, PsapService, describe

    console = Console()
    did = require_emergency_did(args.did)
    seed = args.identity_seed_file.read_bytes()
    if len(seed) != 32:
        raise ConfigError(f"{args.identity_seed_file} is not a 32-byte seed")
    key = KeyPair.from_seed(seed, f"{did}#key-1")
    pins = _pins(args.pin_host)
    verify: ssl.SSLContext | bool = True
    if args.trust_ca:
        verify = ssl.create_default_context(cafile=str(args.trust_ca))
    client = httpx.AsyncClient(transport=PinnedHosts(pins, verify=verify))
    resolver = DidResolver(client=client)
    media_factory = None
    if args.answer:
        from dsip.media.tone import ToneTrack
        from dsip.media.webrtc import WebRtcMedia

        def media_factory() -> Any:
            return WebRtcMedia(audio=ToneTrack(args.tone))

    def show(pc: PsapCall) -> None:
        style = "green" if pc.assessment.verified else "yellow"
        console.print(f"[{style}]queued[/] {describe(pc)}")

    policy = PsapPolicy(trusted_certifiers=frozenset(args.certifier), strict=args.strict)
    service = PsapService(
        key,
        resolver=resolver,
        policy=policy,
        media_factory=media_factory,
        auto_answer=args.answer,
        on_call=show,
    )
    await service.start(args.relay, cafile=str(args.trust_ca) if args.trust_ca else None)
    console.print(f"PSAP {did} on duty at {args.relay}")
    try:
        await until_stopped()
    finally:
        await service.close()
        await client.aclose()
    return 0
