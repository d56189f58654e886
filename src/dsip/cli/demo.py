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
        help="run the local demo",
        description=(
            "Create two identities, resolve them (did:key locally, did:web over HTTPS from a "
            "local host), sign an invite and verify it, then show a tampered copy, a replay and "
            "an expired copy being refused with their reason tokens."
        ),
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the demo wallet here instead of a temporary directory",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dsip.demo import run_foundation_demo

    return asyncio.run(run_foundation_demo(Console(emoji=False, highlight=False), args.workdir))
