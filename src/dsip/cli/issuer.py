"""``dsip issuer``: run a credential issuer (challenge → proof of control → credential,
revocation through a Bitstring Status List, its did:web document)."""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import replace
from pathlib import Path
from typing import Any

from dsip.cli.service import until_stopped, write_ready
from dsip.errors import ConfigError

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "issuer",
        help="run a credential issuer (DisplayName/Organization/Role/ReputationScore VCs)",
        description=(
            "Run a DSIP credential issuer over HTTPS. A subject asks POST /v1/challenges for a "
            "challenge, signs it with a key of its DID and POSTs the proof to /v1/credentials; "
            "the issuer answers with the credential its configuration grants that DID "
            "(eddsa-jcs-2022 or vc+jwt, with a Bitstring Status List entry). Administrators "
            "revoke with a signed request to /v1/revocations; the status list is at /status/1 "
            "and the issuer's did:web document at /.well-known/did.json. With "
            "[issuer.reputation] it also takes signed ratings at /v1/ratings and issues "
            "ReputationScore from them."
        ),
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file with an [issuer] table")
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="override issuer.host/port (port 0 = any free port)"
    )
    tls = p.add_argument_group("TLS (config tls_cert/tls_key, or one of these)")
    tls.add_argument(
        "--local-ca",
        type=Path,
        metavar="DIR",
        help="mint a local CA + localhost certificate into DIR (ca.pem, issuer.crt, issuer.key)",
    )
    tls.add_argument(
        "--plain-http",
        action="store_true",
        help="serve plain HTTP; only behind a TLS-terminating proxy (set public_url)",
    )
    p.add_argument(
        "--trust-ca",
        type=Path,
        metavar="FILE",
        help="also trust this CA (PEM) when fetching subjects' did:web documents",
    )
    p.add_argument(
        "--ready-file", type=Path, help="write {url, did, port, pid} here (JSON) once listening"
    )
    p.set_defaults(func=_run)


def _server_tls(
    args: argparse.Namespace, cert: str | None, key: str | None
) -> ssl.SSLContext | None:
    chosen = int(cert is not None) + int(args.local_ca is not None) + int(args.plain_http)
    if chosen != 1:
        raise ConfigError("choose one of issuer.tls_cert/tls_key, --local-ca DIR or --plain-http")
    if args.plain_http:
        return None
    if args.local_ca is not None:
        from dsip.services.localca import LocalCA

        directory: Path = args.local_ca
        directory.mkdir(parents=True, exist_ok=True)
        ca = LocalCA.create()
        ca.write_ca_pem(directory / "ca.pem")
        cert_path = directory / "issuer.crt"
        cert_path.write_bytes(b"".join(pem.bytes() for pem in ca.server.cert_chain_pems))
        key_path = directory / "issuer.key"
        ca.server.private_key_pem.write_to_path(str(key_path))
        os.chmod(key_path, 0o600)
        cert, key = str(cert_path), str(key_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key: {exc}") from None
    return ctx


def _run(args: argparse.Namespace) -> int:
    from dsip.cli.relay import run_event_loop

    return run_event_loop(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from dsip.agent.resolver import DidResolver
    from dsip.services.issuer import IssuerConfig, IssuerService, load_issuer_config

    cfg = load_issuer_config(args.config) if args.config else IssuerConfig().validate()
    if args.listen:
        host, colon, port = args.listen.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"--listen {args.listen[:80]!r} is not HOST:PORT")
        cfg = replace(cfg, host=host.strip("[]") or "127.0.0.1", port=int(port)).validate()
    server_tls = _server_tls(args, cfg.tls_cert, cfg.tls_key)
    verify: ssl.SSLContext | bool = True
    if args.trust_ca is not None:
        verify = ssl.create_default_context()
        try:
            verify.load_verify_locations(cafile=str(args.trust_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --trust-ca {args.trust_ca}: {exc}") from None
    resolver = DidResolver(verify=verify)
    service = IssuerService(cfg, resolver=resolver)
    await service.start(server_tls)
    if server_tls is None and cfg.public_url is None:
        print("warning: plain HTTP without public_url; the did:web names https", flush=True)
    print(f"issuer {service.did} listening on {service.url}", flush=True)
    write_ready(
        args.ready_file,
        {"url": service.url, "did": service.did, "port": service.port, "pid": os.getpid()},
    )
    try:
        await until_stopped()
    finally:
        await service.stop()
        await resolver.aclose()
    return 0
