"""``dsip`` command line. Every subcommand has ``--help``; errors print their reason token.

Subcommands live one per module and register themselves on the shared parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from dsip import __version__
from dsip.errors import DsipError

__all__ = ["build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    from dsip.cli import (
        agent,
        call,
        demo,
        dht,
        envelope,
        gateway,
        issuer,
        msg,
        psap,
        relay,
        resolver,
        vectors,
    )

    parser = argparse.ArgumentParser(
        prog="dsip",
        description="DSIP: signed real-time sessions and messaging between DIDs.",
    )
    parser.add_argument("--version", action="version", version=f"dsip {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = [agent, call, msg, relay, dht, resolver, issuer, psap, gateway, vectors, envelope]
    modules.append(demo)
    try:
        from dsip.cli import id as id_cli

        modules.insert(0, id_cli)
    except ImportError:  # pragma: no cover - during partial installs only
        pass
    for module in modules:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed command: logging from ``-v``, DSIP errors as one line and exit status 2."""
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except DsipError as exc:
        print(f"error: {exc.code} ({exc.reason}): {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
