"""``dsip dht-node``: run one node of the DSIP presence overlay (libp2p Kad-DHT).

The node stores presence records and region buckets for others, refusing any value that
:class:`dsip.core.presence.RecordValidator` rejects, and answers lookups. It runs trio on
the main thread (no asyncio here, hence no bridge). ``python -m dsip.cli.dht`` runs it
without the top-level CLI.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsip.cli import run

if TYPE_CHECKING:  # libp2p costs ~0.7 s to import: only `dsip dht-node` pays it
    from dsip.dht.node import DhtNode, DhtNodeConfig

__all__ = ["main", "register"]

logger = logging.getLogger("dsip.dht")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "dht-node",
        help="run a DSIP presence DHT node (libp2p Kad-DHT)",
        description=(
            "Run a node of the DSIP presence overlay: a libp2p Kademlia DHT (protocol "
            "/ipfs/kad/1.0.0) that stores signed presence records and region buckets after "
            "verifying them in full, and answers lookups. Settings come from --config (TOML, "
            "[dht] table) and are overridden by flags."
        ),
    )
    p.add_argument("--config", type=Path, help="TOML file with a [dht] table")
    p.add_argument(
        "--listen",
        metavar="MULTIADDR",
        help="listen address (default /ip4/127.0.0.1/tcp/0: loopback, any free port)",
    )
    p.add_argument(
        "--bootstrap",
        metavar="MULTIADDR",
        action="append",
        help="a peer to join through, with /p2p/<peer id>; repeatable (adds to --config's)",
    )
    p.add_argument(
        "--identity-seed-file",
        metavar="FILE",
        help="32-byte seed for a stable peer id (created, mode 0600, if missing)",
    )
    p.add_argument(
        "--ready-file",
        type=Path,
        metavar="FILE",
        help="write {peer_id, addrs, pid} here (JSON) once listening and bootstrapped",
    )
    p.set_defaults(func=_run)


def _config(args: argparse.Namespace) -> DhtNodeConfig:
    from dsip.dht.node import load_dht_config

    cfg = load_dht_config(args.config)
    boot = cfg.bootstrap + tuple(args.bootstrap or ())
    return cfg.with_overrides(
        listen=args.listen,
        bootstrap=boot,
        identity_seed_file=args.identity_seed_file,
    )


def _write_ready(path: Path, node: DhtNode) -> None:
    info = {"peer_id": node.peer_id, "addrs": node.addrs, "pid": os.getpid()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info), encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a file


async def serve(config: DhtNodeConfig, ready_file: Path | None = None) -> None:
    """Run one node until SIGINT/SIGTERM."""
    import trio

    from dsip.dht.node import DhtNode

    node = DhtNode(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            logger.info(
                "dht node up",
                extra={"peer_id": node.peer_id, "addrs": node.addrs},
            )
            print(f"dht-node {node.peer_id} listening on {' '.join(node.addrs)}", flush=True)
            if ready_file is not None:
                _write_ready(ready_file, node)
            async for signum in signals:
                logger.info("dht node stopping on signal %s", signum)
                break
            node.close()
            nursery.cancel_scope.cancel()


def _run(args: argparse.Namespace) -> int:
    verbose = int(getattr(args, "verbose", 0) or 0)
    if verbose < 2:
        # py-libp2p logs every unreachable peer at WARNING: noise for a service log.
        logging.getLogger("libp2p").setLevel(logging.ERROR)
    config = _config(args)
    import trio

    trio.run(serve, config, args.ready_file)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m dsip.cli.dht [dht-node] [options]``."""
    parser = argparse.ArgumentParser(prog="dsip")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    return run(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
