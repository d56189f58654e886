"""``dsip resolver``: run a resolver node (DID resolution cache, aliases, WebFinger)."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsip.cli.service import until_stopped, write_ready
from dsip.errors import ConfigError, DsipError

__all__ = ["main", "register"]

logger = logging.getLogger("dsip.resolver.service")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "resolver",
        help="run a resolver node (GET /1.0/identifiers/{did}, aliases, WebFinger)",
        description=(
            "Run a DSIP resolver node: resolves DIDs (did:key locally, did:web over verified "
            "HTTPS) with a TTL cache at GET /1.0/identifiers/{did} in the style of the DIF "
            "Universal Resolver, resolves aliases (WebFinger + DNS TXT _did.user.domain, "
            "DNSSEC-validated against --trust-anchors) at GET /1.0/aliases/{alias}, and serves "
            "WebFinger for the --alias mappings it is given."
        ),
    )
    _add_arguments(p)
    p.set_defaults(func=_run)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        default="127.0.0.1:8443",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8443; port 0 = any free port)",
    )
    tls = p.add_argument_group("TLS (one of these is required)")
    tls.add_argument("--tls-cert", type=Path, help="PEM certificate chain")
    tls.add_argument("--tls-key", type=Path, help="PEM private key")
    tls.add_argument(
        "--local-ca",
        type=Path,
        metavar="DIR",
        help="mint a local CA + localhost certificate into DIR (ca.pem, resolver.crt, "
        "resolver.key) and serve TLS with it; for local networks and tests",
    )
    tls.add_argument(
        "--plain-http",
        action="store_true",
        help="serve plain HTTP; only behind a TLS-terminating reverse proxy",
    )
    p.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="acct:USER@DOMAIN=DID",
        help="publish this alias over WebFinger (repeatable)",
    )
    p.add_argument(
        "--trust-ca",
        type=Path,
        metavar="FILE",
        help="also trust this CA (PEM) for did:web and WebFinger fetches (local networks)",
    )
    p.add_argument(
        "--dns-server",
        metavar="HOST[:PORT]",
        help="DNS server for _did TXT lookups (default: the system's resolvers)",
    )
    p.add_argument(
        "--trust-anchors",
        type=Path,
        metavar="FILE",
        help="DNSSEC trust anchors: DS or DNSKEY records in zone-file form",
    )
    p.add_argument(
        "--ready-file", type=Path, help="write {url, port, pid} here (JSON) once listening"
    )


def parse_alias_mapping(values: Sequence[str]) -> dict[str, str]:
    """``acct:x@y=DID`` strings → mapping; the DID is split off at the first ``=``."""
    out: dict[str, str] = {}
    for value in values:
        alias, eq, did = value.partition("=")
        if not eq or not alias or not did:
            raise ConfigError(f"--alias {value[:80]!r} is not acct:user@domain=DID")
        out[alias] = did
    return out


def _listen(value: str) -> tuple[str, int]:
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {value[:80]!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _dns_server(value: str | None) -> tuple[list[str] | None, int]:
    if value is None:
        return None, 53
    host, colon, port = value.rpartition(":")
    if colon and port.isdigit() and host and not host.endswith(":"):
        return [host.strip("[]")], int(port)
    return [value.strip("[]")], 53


def _server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    chosen = sum(
        [args.tls_cert is not None or args.tls_key is not None, args.local_ca is not None]
    ) + int(args.plain_http)
    if chosen != 1:
        raise ConfigError("choose one of --tls-cert/--tls-key, --local-ca DIR or --plain-http")
    if args.plain_http:
        return None
    if args.local_ca is not None:
        cert, key = _mint_local_tls(args.local_ca)
    else:
        if args.tls_cert is None or args.tls_key is None:
            raise ConfigError("--tls-cert and --tls-key go together")
        cert, key = args.tls_cert, args.tls_key
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key: {exc}") from None
    return ctx


def _mint_local_tls(directory: Path) -> tuple[Path, Path]:
    from dsip.services.localca import LocalCA

    directory.mkdir(parents=True, exist_ok=True)
    ca = LocalCA.create()
    ca.write_ca_pem(directory / "ca.pem")
    cert = directory / "resolver.crt"
    with open(cert, "wb") as fh:
        for pem in ca.server.cert_chain_pems:
            fh.write(pem.bytes())
    key = directory / "resolver.key"
    ca.server.private_key_pem.write_to_path(str(key))
    os.chmod(key, 0o600)
    return cert, key


def _run(args: argparse.Namespace) -> int:
    from dsip.cli.relay import run_event_loop

    return run_event_loop(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from dsip.agent.aliases import AliasResolver
    from dsip.agent.resolver import DidResolver
    from dsip.services.resolver import ResolverService
    from dsip.services.webfinger import WebFingerResponder

    host, port = _listen(args.listen)
    server_tls = _server_tls(args)
    webfinger = WebFingerResponder(parse_alias_mapping(args.alias))
    verify: ssl.SSLContext | bool = True
    if args.trust_ca is not None:
        verify = ssl.create_default_context()
        try:
            verify.load_verify_locations(cafile=str(args.trust_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --trust-ca {args.trust_ca}: {exc}") from None
    anchors = ""
    if args.trust_anchors is not None:
        try:
            anchors = args.trust_anchors.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read --trust-anchors: {exc}") from None
    nameservers, dns_port = _dns_server(args.dns_server)
    resolver = DidResolver(verify=verify)
    aliases = AliasResolver(
        verify=verify, dns_nameservers=nameservers, dns_port=dns_port, trust_anchors=anchors
    )
    service = ResolverService(resolver, aliases=aliases, webfinger=webfinger)
    await service.start(host, port, server_tls)
    scheme = "https" if server_tls else "http"
    url = f"{scheme}://{'localhost' if host in ('127.0.0.1', '::1') else host}:{service.port}"
    print(f"resolver listening on {url}", flush=True)
    write_ready(args.ready_file, {"url": url, "port": service.port, "pid": os.getpid()})
    try:
        await until_stopped()
    finally:
        logger.info("shutting down")
        await service.stop()
        await aliases.aclose()
        await resolver.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsip.cli.resolver``: the subcommand on its own, until ``dsip`` wires it."""
    parser = argparse.ArgumentParser(prog="dsip resolver", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except DsipError as exc:
        print(f"error: {exc.code} ({exc.reason}): {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
