"""STIR/SHAKEN I/O for the gateway: a local test STI-CA, its certificate repository served
over HTTPS (the PASSporT's ``x5u``), signing outbound and verifying inbound ``Identity``.

:class:`LocalStiCa` is a stand-in for the STI-PA/STI-CA ecosystem, which cannot run here: a
throw-away root and one gateway signing certificate (EC P-256, ES256), minted with
``cryptography``. It omits the TNAuthList extension (RFC 8226) a production SHAKEN
certificate carries. :class:`CertRepository` publishes the PEM chain over HTTPS with
``aiohttp`` (TLS from :class:`~dsip.services.localca.LocalCA`); :class:`StirVerifier` fetches
it with ``httpx``, caches it per URL and checks everything else with
:mod:`dsip.core.gateway.stir`.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dsip.core.gateway.claims import PassportFacts, canonical_tn
from dsip.core.gateway.stir import (
    PassportClaims,
    StirError,
    identity_header,
    parse_identity_header,
    passport_facts,
    sign_passport,
    verify_passport,
)
from dsip.core.ulid import new_ulid
from dsip.services.ports import free_port

__all__ = ["CertRepository", "LocalStiCa", "StirSigner", "StirVerifier"]

logger = logging.getLogger("dsip.gateway.stir")

MAX_CHAIN_BYTES = 64 * 1024


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dsip test STI-CA"),
        ]
    )


@dataclass
class LocalStiCa:
    """A local STI-CA root and one gateway SHAKEN signing certificate (test use only)."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, *, now: float | None = None, days: int = 7) -> LocalStiCa:
        start = dt.datetime.fromtimestamp(now or time.time(), tz=dt.UTC) - dt.timedelta(hours=1)
        end = start + dt.timedelta(days=days)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = (
            x509.CertificateBuilder()
            .subject_name(_name("dsip test STI-CA root"))
            .issuer_name(_name("dsip test STI-CA root"))
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("dsip gateway SHAKEN"))
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        return cls(root_key, root, key, cert)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, self.root))


class CertRepository:
    """Serves certificate chains over HTTPS at ``/sti/<name>.pem`` (the ``x5u`` URLs)."""

    def __init__(self, server_ssl: ssl.SSLContext, *, host: str = "127.0.0.1") -> None:
        self._ssl = server_ssl
        self._host = host
        self._chains: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def publish(self, name: str, chain_pem: bytes) -> str:
        self._chains[name] = chain_pem
        return f"https://localhost:{self.port}/sti/{name}.pem"

    async def _get(self, request: web.Request) -> web.Response:
        chain = self._chains.get(request.match_info["name"])
        if chain is None:
            raise web.HTTPNotFound()
        return web.Response(body=chain, content_type="application/pem-certificate-chain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/sti/{name}.pem", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port(host=self._host)
        site = web.TCPSite(self._runner, self._host, self.port, ssl_context=self._ssl)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass(frozen=True)
class StirSigner:
    """Signs outbound calls: ``Identity`` for ``orig_tn`` → ``dest_tn`` with ``attest``."""

    key: ec.EllipticCurvePrivateKey
    x5u: str
    attest: str = "A"

    def identity(self, orig_tn: str, dest_tn: str, *, name: str | None = None) -> str:
        claims = PassportClaims(
            attest=self.attest,
            orig_tn=canonical_tn(orig_tn) or orig_tn,
            dest_tns=(canonical_tn(dest_tn) or dest_tn,),
            iat=int(time.time()),
            origid=new_ulid(int(time.time() * 1000)),
            rcd_name=name,
        )
        return identity_header(sign_passport(claims, key=self.key, x5u=self.x5u), self.x5u)


@dataclass
class StirVerifier:
    """Verifies inbound ``Identity`` headers. ``anchors``: the trusted STI-CA roots;
    ``client_ssl``: how to trust the HTTPS certificate repositories."""

    anchors: Sequence[x509.Certificate]
    client_ssl: ssl.SSLContext | None = None
    timeout: float = 2.0
    _cache: dict[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)

    async def _chain(self, url: str) -> tuple[x509.Certificate, ...]:
        cached = self._cache.get(url)
        if cached is not None:
            return cached
        if not url.startswith("https://"):
            raise StirError("x5u must be an https URL")
        try:
            async with httpx.AsyncClient(
                verify=self.client_ssl or True, timeout=self.timeout
            ) as client:
                resp = await client.get(url)
        except httpx.HTTPError as exc:
            raise StirError(f"cannot fetch x5u: {type(exc).__name__}") from None
        if resp.status_code != 200 or len(resp.content) > MAX_CHAIN_BYTES:
            raise StirError(f"x5u answered {resp.status_code}")
        try:
            chain = tuple(x509.load_pem_x509_certificates(resp.content))
        except ValueError:
            raise StirError("x5u holds no PEM certificates") from None
        self._cache[url] = chain
        return chain

    async def verify(
        self, headers: Sequence[str], *, from_tn: str, to_tn: str, now: int | None = None
    ) -> PassportFacts | None:
        """The facts of the first ``Identity`` that verifies; unverified facts if none does
        (the caller still presented a number); ``None`` without any ``Identity``."""
        if not headers:
            return None
        when = int(time.time()) if now is None else now
        for value in headers:
            try:
                parsed = parse_identity_header(value)
                chain = await self._chain(parsed.info)
                claims = verify_passport(
                    parsed.passport,
                    chain=chain,
                    anchors=self.anchors,
                    now=when,
                    from_tn=from_tn,
                    to_tn=to_tn,
                )
            except StirError as exc:
                logger.info("Identity not verified: %s", exc.message)
                continue
            return passport_facts(claims, from_tn)
        return passport_facts(None, from_tn)
