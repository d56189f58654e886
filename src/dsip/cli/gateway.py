"""``dsip gateway``: run the DSIP ⇄ SIP gateway (a B2BUA between a relay and a SIP trunk).

The gateway connects to a relay as its own DSIP device and listens for SIP on UDP::

    dsip gateway --relay wss://localhost:8443/dsip --ca ca.pem \\
        --sip 127.0.0.1:5060 --trunk 127.0.0.1:5070 \\
        --route 15550100=did:key:z6Mk… --default-route did:key:z6Mk…

Inbound INVITEs are routed by their Request-URI user (``--route USER=DID``, else
``--default-route``); DSIP calls to the gateway go to the trunk as an INVITE for
``--outbound-user``. ``--ready-file`` receives ``{"did", "sip_port"}`` once both sides are up.

STIR/SHAKEN: ``--sti-key``/``--sti-x5u`` sign outbound INVITEs on a trunk marked
``--assert-identity``; ``--sti-anchor`` (with ``--sti-fetch-ca`` for the x5u's HTTPS) verifies
inbound ``Identity`` headers. ``--media-bridge`` bridges audio (WebRTC ⇄ RTP/PCMU).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dsip.cli.service import until_stopped, write_ready
from dsip.core.gateway.b2bua import TrunkProfile
from dsip.core.identity import KeyPair
from dsip.core.trust.rcid import IssuerTrust
from dsip.errors import ConfigError
from dsip.services.gateway import Gateway, GatewayConfig
from dsip.services.gateway_front import KamailioFront
from dsip.services.gateway_sip import SipEndpointConfig
from dsip.services.gateway_stir import StirSigner, StirVerifier


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gateway",
        help="run the DSIP <-> SIP gateway (B2BUA)",
        description="Bridge calls between DSIP (through a relay) and SIP over UDP (sippy stack).",
    )
    p.add_argument("--relay", required=True, metavar="URI", help="relay URI (wss://…)")
    p.add_argument("--ca", type=Path, metavar="FILE", help="trust this CA (PEM) for the relay")
    p.add_argument(
        "--sip",
        default="127.0.0.1:5060",
        metavar="HOST:PORT",
        help="SIP listen address, UDP (default 127.0.0.1:5060)",
    )
    p.add_argument("--trunk", metavar="HOST:PORT", help="SIP next hop for outbound calls")
    p.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="USER=DID",
        help="route inbound calls for USER to DID (repeatable)",
    )
    p.add_argument("--default-route", metavar="DID", help="where other inbound calls go")
    p.add_argument(
        "--outbound-user", default="pstn", metavar="USER", help="Request-URI user outbound"
    )
    p.add_argument("--max-calls", type=int, default=200, metavar="N", help="503 beyond N calls")
    p.add_argument(
        "--no-reply",
        type=float,
        metavar="S",
        help="give up on an outbound INVITE with no response after S seconds (< 32)",
    )
    p.add_argument(
        "--key-seed-file",
        type=Path,
        metavar="FILE",
        help="32-byte Ed25519 seed of the gateway's device key (default: ephemeral)",
    )
    p.add_argument(
        "--outbound-from", default="dsip", metavar="NUMBER", help="caller number toward the trunk"
    )
    p.add_argument("--media-bridge", action="store_true", help="bridge audio: WebRTC <-> RTP/PCMU")
    stir = p.add_argument_group("STIR/SHAKEN")
    stir.add_argument(
        "--sti-key", type=Path, metavar="PEM", help="ES256 key of our STI certificate (signing)"
    )
    stir.add_argument("--sti-x5u", metavar="URL", help="https URL where that certificate is")
    stir.add_argument(
        "--assert-identity",
        action="store_true",
        help="the operator may assert callers on this trunk: sign outbound INVITEs (G§11)",
    )
    stir.add_argument(
        "--sti-anchor",
        type=Path,
        action="append",
        default=[],
        metavar="PEM",
        help="trusted STI-CA root for verifying inbound Identity (repeatable)",
    )
    stir.add_argument(
        "--sti-fetch-ca", type=Path, metavar="PEM", help="CA trusted when fetching x5u (HTTPS)"
    )
    stir.add_argument(
        "--name-issuer",
        action="append",
        default=[],
        metavar="DID",
        help="trust this issuer's DisplayNameCredential: the caller's verified name goes "
        "into From, P-Asserted-Identity and the PASSporT rcd (repeatable; did:key issuers)",
    )
    p.add_argument(
        "--number-issuer",
        action="append",
        default=[],
        metavar="DID",
        help="trust this issuer's PhoneNumberCredential: a DSIP caller presenting one calls "
        "out as that E.164 number (From, P-Asserted-Identity, PASSporT orig), and calls to the "
        "number reach that DID while the credential is valid (repeatable; did:key issuers)",
    )
    front = p.add_argument_group("SIP over TCP/TLS (Kamailio in front of the UDP port)")
    front.add_argument("--tcp-port", type=int, metavar="PORT", help="also take SIP over TCP")
    front.add_argument("--tls-port", type=int, metavar="PORT", help="also take SIP over TLS")
    front.add_argument("--tls-cert", type=Path, metavar="PEM", help="TLS server certificate")
    front.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key")
    p.add_argument("--ready-file", type=Path, help="write {did, sip_port} here once up")
    p.set_defaults(func=_run)


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT, not {value!r}")
    return host, int(port)


def _routes(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        user, sep, did = value.partition("=")
        if not sep or not user or not did.startswith("did:"):
            raise ConfigError(f"--route must be USER=DID, not {value!r}")
        out[user] = did
    return out


def _key(path: Path | None) -> KeyPair:
    if path is None:
        return KeyPair.generate()
    try:
        seed = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if len(seed) != 32:
        raise ConfigError(f"{path} must hold exactly 32 bytes (an Ed25519 seed)")
    return KeyPair.from_seed(seed)


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    host, port = _host_port(args.sip, "--sip")
    trunk = _host_port(args.trunk, "--trunk") if args.trunk else None
    if args.max_calls < 1:
        raise ConfigError("--max-calls must be at least 1")
    if args.no_reply is not None and not 0 < args.no_reply < 32:
        raise ConfigError("--no-reply must be between 0 and 32 seconds")
    sip = SipEndpointConfig(
        host=host, port=port, trunk=trunk, max_calls=args.max_calls, no_reply=args.no_reply
    )
    return GatewayConfig(
        sip=sip,
        relay=args.relay,
        cafile=str(args.ca) if args.ca else None,
        routes=_routes(args.route),
        default_route=args.default_route,
        outbound_user=args.outbound_user,
        outbound_from=args.outbound_from,
        trunk=TrunkProfile(identity_assertable=args.assert_identity),
        media_host=host,
        media_bridge=args.media_bridge,
    )


def stir_from_args(args: argparse.Namespace) -> tuple[StirSigner | None, StirVerifier | None]:
    """The signer (``--sti-key`` + ``--sti-x5u``) and verifier (``--sti-anchor``) asked for."""
    signer = verifier = None
    if (args.sti_key is None) != (args.sti_x5u is None):
        raise ConfigError("--sti-key and --sti-x5u go together")
    try:
        if args.sti_key is not None:
            key = serialization.load_pem_private_key(args.sti_key.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ConfigError(f"{args.sti_key} is not an EC (ES256) private key")
            signer = StirSigner(key, args.sti_x5u)
        if args.sti_anchor:
            anchors = [
                c for f in args.sti_anchor for c in x509.load_pem_x509_certificates(f.read_bytes())
            ]
            fetch = None
            if args.sti_fetch_ca is not None:
                fetch = ssl.create_default_context(cafile=str(args.sti_fetch_ca))
            verifier = StirVerifier(anchors, client_ssl=fetch)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load STIR material: {exc}") from None
    return signer, verifier


def front_from_args(args: argparse.Namespace, cfg: GatewayConfig) -> KamailioFront | None:
    """Kamailio in front when ``--tcp-port``/``--tls-port`` ask for stream transports."""
    if args.tcp_port is None and args.tls_port is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError(
            "--tcp-port/--tls-port need --tls-cert and --tls-key (Kamailio serves both)"
        )
    return KamailioFront(
        Path(tempfile.mkdtemp(prefix="dsip-gateway-kamailio-")),
        cfg.sip.port,
        args.tls_cert,
        args.tls_key,
        host=cfg.sip.host,
        tcp_port=args.tcp_port or 0,
        tls_port=args.tls_port or 0,
    )


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    signer, verifier = stir_from_args(args)
    front = front_from_args(args, cfg)
    key = _key(args.key_seed_file)
    for flag, dids in (
        ("--name-issuer", args.name_issuer),
        ("--number-issuer", args.number_issuer),
    ):
        for did in dids:
            if not did.startswith("did:"):
                raise ConfigError(f"{flag} must be a DID, not {did!r}")
    issuers = {
        "DisplayNameCredential": args.name_issuer,
        "PhoneNumberCredential": args.number_issuer,
    }
    trust = (
        IssuerTrust.of({k: v for k, v in issuers.items() if v}) if any(issuers.values()) else None
    )
    asyncio.run(_serve(cfg, key, args.ready_file, signer, verifier, front, trust))
    return 0


async def _serve(
    cfg: GatewayConfig,
    key: KeyPair,
    ready_file: Path | None,
    signer: StirSigner | None = None,
    verifier: StirVerifier | None = None,
    front: KamailioFront | None = None,
    rcid_trust: IssuerTrust | None = None,
) -> None:
    gw = Gateway(
        cfg,
        key,
        stir_signer=signer,
        stir_verifier=verifier,
        rcid_trust=rcid_trust,
    )
    await gw.start()
    if front is not None:
        try:
            await front.start()
        except BaseException:
            await gw.stop()
            raise
    ready = {"did": gw.did, "sip_port": cfg.sip.port}
    if front is not None:
        ready.update(tcp_port=front.tcp_port, tls_port=front.tls_port)
    write_ready(ready_file, ready)
    print(f"ready {gw.did} sip=udp:{cfg.sip.host}:{cfg.sip.port}", flush=True)
    try:
        await until_stopped()
    finally:
        if front is not None:
            await front.stop()
        await gw.stop()
