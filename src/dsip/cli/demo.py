"""``dsip demo``: the narrated local demo (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from rich.console import Console


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the local demo (a whole DSIP network on 127.0.0.1)",
        description=(
            "First a guided tour of what every envelope goes through: two identities, a "
            "signed invite, a tampered copy, a replay and an expired copy refused with their "
            "reason tokens, a call and a stored message through a relay, end-to-end "
            "encrypted messages, a DHT lookup and credentials. Then a whole local network "
            "comes up — did:web host, DHT nodes, relay, push service, issuer and three agent "
            "daemons — and runs the seed's flows: scan a DID from a QR code and call with "
            "verified caller ID and audio, wake an offline phone with a push, first contact "
            "with proof of work, and components dying mid-run. The network stays up until "
            "Ctrl-C unless --exit is given."
        ),
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the demo's wallets and databases here instead of a temporary directory",
    )
    p.add_argument("--exit", action="store_true", help="stop the network after the flows")
    p.add_argument(
        "--only",
        choices=("tour", "network"),
        help="run only the tour or only the network part",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dsip.demo import run_foundation_demo
    from dsip.demo_network import run_network_demo

    console = Console(emoji=False, highlight=False)

    async def main() -> int:
        if args.only != "network":
            status = await run_foundation_demo(console, args.workdir)
            if status or args.only == "tour":
                return status
        workdir = args.workdir / "network" if args.workdir else None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        return await run_network_demo(console, workdir, stay_up=not args.exit)

    return asyncio.run(main())
