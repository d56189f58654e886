"""``dsip relay``: run a relay / homeserver (ws/1.0, optional quic/1.0, store-and-forward)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import Any

from dsip.cli.service import until_stopped, write_ready
from dsip.config import RelayConfig, load_relay_config
from dsip.core.identity import KeyPair
from dsip.errors import ConfigError

logger = logging.getLogger("dsip.relay")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "relay",
        help="run a relay (homeserver)",
        description=(
            "Run a DSIP relay: binds devices with hello, routes signed envelopes by DID to every "
            "bound device, and stores envelopes for offline known identities in SQLite or "
            "PostgreSQL until they are delivered and acknowledged. Settings come from --config "
            "(TOML, [relay] table) and are overridden by flags."
        ),
    )
    p.add_argument("--config", type=Path, help="TOML file with a [relay] table")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--ws-port", type=int, help="ws/1.0 port (0 = any free port)")
    p.add_argument("--quic-port", type=int, help="quic/1.0 UDP port (needs TLS)")
    p.add_argument("--tls-cert", help="PEM certificate chain")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument(
        "--local-ca",
        type=Path,
        metavar="DIR",
        help="mint a local CA + localhost certificate into DIR (ca.pem, relay.crt, relay.key) "
        "and serve TLS with it; for local networks and tests",
    )
    p.add_argument("--store", help="sqlite:///path.db (default) or postgresql://…")
    p.add_argument(
        "--identity-seed-file", help="32-byte Ed25519 seed (mode 0600); default: ephemeral did:key"
    )
    p.add_argument("--did", help="the relay's did:web (its key must be #key-1 in that document)")
    p.add_argument(
        "--retention", type=int, dest="offline_retention_s", help="offline retention, seconds"
    )
    p.add_argument(
        "--trust-ca",
        type=Path,
        metavar="FILE",
        help="also trust this CA (PEM) when resolving did:web documents (local networks)",
    )
    p.add_argument(
        "--public-uri",
        metavar="URI",
        action="append",
        help="federation: this relay's own wss:// (or quic://) URI as its users' DID documents "
        "name it (repeat for each endpoint); envelopes for DIDs whose documents name another "
        "relay are forwarded there",
    )
    p.add_argument(
        "--federation-rate",
        type=int,
        metavar="N",
        help="federation: envelopes per minute accepted from each peer relay (default 60000)",
    )
    p.add_argument(
        "--federation-backoff-max",
        type=float,
        metavar="SECONDS",
        help="federation: longest pause between reconnection attempts to a far relay "
        "(default 60; the first pause is at most 1 s, doubling, fully jittered)",
    )
    p.add_argument(
        "--prekeys",
        type=Path,
        metavar="FILE",
        help="offer the prekeys/1.0 service (end-to-end messaging) with this SQLite file",
    )
    p.add_argument(
        "--mls-state",
        type=Path,
        metavar="FILE",
        help="keep the mls/1.0 delivery service's groups and key packages in this SQLite file "
        "(created if missing; a damaged or foreign file is refused); without it they live in "
        "memory and a restart forgets them",
    )
    p.add_argument(
        "--cluster",
        metavar="NATS_URL",
        help="serve one domain with several relay processes: share bindings and route between "
        "them over this NATS server (nats://host:4222, comma-separated for several); every node "
        "needs the same --identity-seed-file/--did and the same postgresql:// --store",
    )
    p.add_argument(
        "--cluster-name",
        default="dsip",
        help="subject prefix: nodes with the same name are one relay (default: dsip)",
    )
    p.add_argument(
        "--web-root",
        type=Path,
        metavar="DIR",
        help="serve the browser client's static files from DIR on the ws/1.0 port "
        "(https://host:port/); use --web for the client shipped with dsip",
    )
    p.add_argument(
        "--web",
        action="store_true",
        help="serve the browser client shipped with dsip (see --web-root)",
    )
    p.add_argument(
        "--ready-file", type=Path, help="write {did, ws_port, quic_port} here once listening"
    )
    p.set_defaults(func=_run)


def run_event_loop(main: Any) -> int:
    """Run ``main`` on uvloop when installed, else (or with ``DSIP_EVENT_LOOP=asyncio``) on
    the standard asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return int(asyncio.run(main))
    if os.environ.get("DSIP_EVENT_LOOP") == "asyncio":
        return int(asyncio.run(main))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return int(runner.run(main))


def store_limits(cfg: RelayConfig) -> Any:
    from dsip.storage import StoreLimits

    return StoreLimits(
        max_envelopes_per_recipient=cfg.quota_envelopes,
        max_bytes_per_recipient=cfg.quota_bytes,
        retention_s=cfg.offline_retention_s,
    )


def _load_key(cfg: RelayConfig) -> KeyPair:
    if cfg.identity_seed_file is None:
        return KeyPair.generate()
    path = Path(cfg.identity_seed_file)
    try:
        st = path.stat()
        seed = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read relay identity seed {path}: {exc}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others; run: chmod 600 {path}")
    if len(seed) != 32:
        raise ConfigError(f"{path} must hold exactly 32 bytes (an Ed25519 seed)")
    sk = KeyPair.from_seed(seed)
    return KeyPair(sk.private_key, f"{cfg.did}#key-1") if cfg.did else sk


def _run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {
        "host": args.host,
        "ws_port": args.ws_port,
        "quic_port": args.quic_port,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "store": args.store,
        "identity_seed_file": args.identity_seed_file,
        "did": args.did,
        "offline_retention_s": args.offline_retention_s,
    }
    if args.local_ca is not None:
        overrides["tls_cert"], overrides["tls_key"] = _mint_local_tls(args.local_ca)
    cfg = load_relay_config(args.config).with_overrides(**overrides)
    uris = args.public_uri or []
    federation: dict[str, Any] = {"public_uri": uris[0] if uris else None}
    federation["other_uris"] = tuple(uris[1:])
    if args.federation_rate is not None:
        federation["peer_envelopes_per_minute"] = args.federation_rate
    if args.federation_backoff_max is not None:
        federation["backoff_max_s"] = args.federation_backoff_max
        federation["backoff_initial_s"] = min(1.0, args.federation_backoff_max)
    cluster = None
    if args.cluster:
        from dsip.services.cluster import ClusterConfig

        if not cfg.store.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "--cluster needs a shared --store postgresql://… (all nodes, one queue)"
            )
        cluster = ClusterConfig(args.cluster, name=args.cluster_name)
    web_root = args.web_root
    if web_root is None and args.web:
        from dsip.services.webroot import default_web_root

        web_root = default_web_root()
        if web_root is None:
            raise ConfigError("--web: this installation has no browser client; use --web-root")
    return run_event_loop(
        _serve(
            cfg,
            args.ready_file,
            args.trust_ca,
            federation,
            args.prekeys,
            cluster,
            web_root,
            mls_state=args.mls_state,
        )
    )


def _mint_local_tls(directory: Path) -> tuple[str, str]:
    """A fresh local CA and a localhost certificate: ca.pem, relay.crt, relay.key (0600)."""
    from dsip.services.localca import LocalCA

    directory.mkdir(parents=True, exist_ok=True)
    ca = LocalCA.create()
    ca.write_ca_pem(directory / "ca.pem")
    with open(directory / "relay.crt", "wb") as fh:
        for pem in ca.server.cert_chain_pems:
            fh.write(pem.bytes())
    key_path = directory / "relay.key"
    ca.server.private_key_pem.write_to_path(str(key_path))
    os.chmod(key_path, 0o600)
    return str(directory / "relay.crt"), str(key_path)


async def _serve(
    cfg: RelayConfig,
    ready_file: Path | None,
    trust_ca: Path | None = None,
    federation: dict[str, Any] | None = None,
    prekeys_path: Path | None = None,
    cluster: Any = None,
    web_root: Path | None = None,
    mls_state: Path | None = None,
) -> int:
    from dsip.agent.resolver import DidResolver
    from dsip.messaging.prekeys import PrekeyStore
    from dsip.services.federation import FederationSettings
    from dsip.services.relay import Relay
    from dsip.storage import open_store

    server_ssl = None
    if cfg.tls_cert and cfg.tls_key:
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.minimum_version = ssl.TLSVersion.TLSv1_3
        server_ssl.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    key = _load_key(cfg)
    resolver_tls: ssl.SSLContext | bool = True
    if trust_ca is not None:
        resolver_tls = ssl.create_default_context()
        resolver_tls.load_verify_locations(cafile=str(trust_ca))
    try:  # far relays are dialled with the same trust as did:web documents are fetched
        settings = FederationSettings(
            ssl_context=resolver_tls if isinstance(resolver_tls, ssl.SSLContext) else None,
            cafile=str(trust_ca) if trust_ca is not None else None,
            **(federation or {}),
        )
    except ValueError as exc:
        raise ConfigError(f"federation: {exc}") from None
    store = await open_store(cfg.store, limits=store_limits(cfg))
    prekeys = PrekeyStore.open(prekeys_path) if prekeys_path is not None else None
    relay = Relay(
        cfg,
        key,
        store,
        server_ssl=server_ssl,
        resolver=DidResolver(verify=resolver_tls),
        federation=settings,
        prekeys=prekeys,
        cluster=cluster,
        web_root=web_root,
        mls_state=mls_state,
    )
    await relay.start()
    info = {
        "did": relay.did,
        "ws_port": relay.ws_port,
        "quic_port": relay.quic_port,
        "public_uri": settings.public_uri,
        "pid": os.getpid(),
    }
    scheme = "wss" if server_ssl else "ws"
    print(f"relay {relay.did} listening on {scheme}://{cfg.host}:{relay.ws_port}/dsip", flush=True)
    if web_root is not None:
        web = "https" if server_ssl else "http"
        print(f"browser client on {web}://{cfg.host}:{relay.ws_port}/", flush=True)
    write_ready(ready_file, info)
    await until_stopped()
    logger.info("shutting down")
    await relay.stop()
    if prekeys is not None:
        prekeys.close()
    return 0
