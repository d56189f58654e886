"""``dsip call DID`` and ``dsip listen``: signed calls between two terminals through a relay.

Both load an identity from the wallet (``--id NAME``; passphrase from ``--passphrase-file``,
``$DSIP_PASSPHRASE`` or a prompt) and connect to a relay: ``--relay URI`` (``wss://…`` or
``quic://host:port``), or the first ``ws`` endpoint the identity advertises. ``--ca FILE``
trusts a local CA (for a relay started with ``dsip relay --local-ca``).

Output is one event per line, easy to read and to parse::

    ready did:key:z6Mk…  relay=did:key:z6Mk…
    calling did:key:z6Mk… session=01K…
    progress ringing
    answered user
    ended user.hangup
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from dsip.agent.calls import Call, CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.cli.id import _add_common, _passphrase, _wallet
from dsip.errors import DsipError, WalletError


def register(sub: Any) -> None:
    call = sub.add_parser(
        "call",
        help="place a signed call to a DID",
        description="Place a call to DID through the relay, print its progress, hang up after "
        "--hangup-after seconds once answered. Exit status 0 if the call was answered.",
    )
    call.add_argument("did", metavar="DID", help="who to call (an identity or device DID)")
    _common(call)
    call.add_argument(
        "--hangup-after",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds of talk time (default 2)",
    )
    call.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="give up if not answered in S seconds",
    )
    call.set_defaults(func=_run_call)

    listen = sub.add_parser(
        "listen",
        help="wait for calls and answer them",
        description="Wait for incoming calls; answer (default) or decline each, print events. "
        "With --calls N, exit after N calls have ended.",
    )
    _common(listen)
    listen.add_argument("--decline", action="store_true", help="decline instead of answering")
    listen.add_argument(
        "--calls", type=int, default=0, metavar="N", help="exit after N calls (0 = run forever)"
    )
    listen.set_defaults(func=_run_listen)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--id", required=True, metavar="NAME", dest="identity", help="wallet identity to use"
    )
    p.add_argument(
        "--relay", metavar="URI", help="relay URI (default: the identity's own ws endpoint)"
    )
    p.add_argument(
        "--ca", type=Path, metavar="FILE", help="trust this CA certificate (PEM) for the relay"
    )
    _add_common(p, top_level=True)


def _say(*parts: object) -> None:
    print(*parts, flush=True)


async def _connect(args: argparse.Namespace) -> CallAgent:
    wallet = _wallet(args)
    entry = wallet.entry(args.identity)
    key = wallet.unlock(args.identity, _passphrase(args))
    relay = args.relay or next(iter(entry.services.get("ws", [])), None)
    if relay is None:
        raise WalletError(
            f"{args.identity} advertises no ws endpoint: pass --relay URI", code="no-relay"
        )
    client = SignalingClient(key)
    await client.connect(relay, cafile=str(args.ca) if args.ca else None)
    agent = CallAgent(client)
    await agent.start()
    _say("ready", key.did, f"relay={client.relay_did}")
    return agent


async def _print_until_end(call: Call, *, answered: asyncio.Event | None = None) -> str:
    while True:
        ev = await call.next_event()
        if ev.kind == "progress":
            _say("progress", ev.fields.get("status"))
        elif ev.kind == "answered":
            _say("answered", ev.fields.get("answered_by"))
            if answered is not None:
                answered.set()
        elif ev.kind == "error":
            _say("error", ev.fields.get("reason"))
        elif ev.kind == "ended":
            reason = str(ev.fields.get("reason"))
            _say("ended", reason)
            return reason
        elif ev.kind in ("missed_call", "media", "info"):
            _say(ev.kind, *(f"{k}={v}" for k, v in ev.fields.items() if k != "data"))


def _run_call(args: argparse.Namespace) -> int:
    return asyncio.run(_call(args))


async def _call(args: argparse.Namespace) -> int:
    agent = await _connect(args)
    try:
        call = await agent.call(args.did)
        _say("calling", args.did, f"session={call.id}")
        answered = asyncio.Event()
        printer = asyncio.create_task(_print_until_end(call, answered=answered))
        await asyncio.wait(
            [printer, asyncio.create_task(answered.wait())],
            timeout=args.timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not answered.is_set():
            if not printer.done():
                await call.cancel()
                await asyncio.wait_for(printer, 5)
            return 1
        await asyncio.sleep(args.hangup_after)
        await call.hangup()
        _say("ended", "user.hangup")
        printer.cancel()
        return 0
    except DsipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await agent.close()


def _run_listen(args: argparse.Namespace) -> int:
    return asyncio.run(_listen(args))


async def _listen(args: argparse.Namespace) -> int:
    agent = await _connect(args)
    handled = 0
    try:
        while args.calls == 0 or handled < args.calls:
            call = await agent.incoming()
            _say("incoming", call.peer, f"session={call.id}")
            if args.decline:
                await call.ring()
                await call.decline()
                _say("declined")
            else:
                await call.answer()
                _say("answering")
                await _print_until_end(call)
            handled += 1
        return 0
    except DsipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await agent.close()
