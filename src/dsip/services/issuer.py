"""``dsip issuer``: a credential issuer over HTTPS (seed §9; v0.7 §18).

Endpoints (JSON in and out; errors are ``{"error": <code>, "reason": <token>,
"message": …}`` with the status :class:`~dsip.core.trust.issuance.IssuanceError` names):

``GET /.well-known/did.json``
    The issuer's did:web document (``did:web:<host>%3A<port>`` unless ``did`` is configured).
``POST /v1/challenges`` ``{"did"}``
    A single-use challenge for that DID (:mod:`dsip.core.trust.issuance` step 1).
``POST /v1/credentials`` ``{"proof"}``
    Issue the credential the signed proof of control asks for, if the issuer attests it:
    ``201 {"credential", "id", "statusListIndex"}``.
``POST /v1/revocations`` ``{"proof"}``
    An administrator's signed revoke request; flips the status bit.
``GET /status/1``
    The signed ``BitstringStatusListCredential`` (short ``validUntil``; verifiers cap age).
``POST /v1/ratings`` ``{"rating", "credential"?}``
    Only with ``[issuer.reputation]``: accept a signed rating
    (:mod:`dsip.core.trust.reputation`), weighted by the rater's own ``ReputationScore``
    when it presents one (from this issuer or a ``trusted_issuers`` one; verified with its
    status list, fetched over HTTPS); ``ReputationScore`` requests are then answered with
    the aggregated score instead of a configured grant.

Example ``issuer.toml``::

    [issuer]
    host = "127.0.0.1"
    port = 8600
    tls_cert = "issuer.crt"             # or run with --local-ca DIR
    tls_key = "issuer.key"
    key_seed_file = "issuer.seed"       # 32 raw bytes; omitted -> a fresh key each start
    state_file = "issuer-state.json"    # status list and issued records survive restarts
    admins = ["did:key:z6Mk…"]          # may revoke
    credential_ttl_s = 31536000
    status_list_ttl_s = 3600

    [[issuer.grants]]                   # what this issuer attests, and about whom
    subject = "did:key:z6Mk…"
    type = "DisplayNameCredential"
    claims = { displayName = "Alice Example" }

    [issuer.reputation]                 # optional: act as a reputation issuer
    period_s = 86400

HTTP stack: **aiohttp**, as :mod:`dsip.services.resolver` (one asyncio-native package for
server, TLS via ``ssl.SSLContext`` and request size limits). did:web subjects' documents are
fetched with :class:`~dsip.agent.resolver.DidResolver` (verified HTTPS, caps, cache).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from dsip.agent.credentials import fetch_status_lists, resolve_issuers
from dsip.agent.resolver import DidResolver
from dsip.config import read_toml_table
from dsip.core.b64 import b64url_decode
from dsip.core.identity import KeyPair, is_did
from dsip.core.jsonwire import loads_strict
from dsip.core.trust.issuance import Grant, IssuanceError, IssuerCore, IssuerState
from dsip.core.trust.reputation import RatingError, ReputationAggregator
from dsip.core.trust.vc import CREDENTIAL_TYPES, CredentialError, StatusListSource
from dsip.errors import ConfigError, DsipError
from dsip.services.httpbase import RunnerService

__all__ = [
    "CHALLENGES_PATH",
    "CREDENTIALS_PATH",
    "DID_PATH",
    "RATINGS_PATH",
    "REVOCATIONS_PATH",
    "STATUS_PATH",
    "IssuerConfig",
    "IssuerService",
    "load_issuer_config",
]

DID_PATH = "/.well-known/did.json"
CHALLENGES_PATH = "/v1/challenges"
CREDENTIALS_PATH = "/v1/credentials"
REVOCATIONS_PATH = "/v1/revocations"
RATINGS_PATH = "/v1/ratings"
STATUS_PATH = "/status/1"
MAX_BODY = 16 * 1024
SHUTDOWN_TIMEOUT_S = 5.0

logger = logging.getLogger("dsip.issuer")


@dataclass(frozen=True)
class IssuerConfig:
    host: str = "127.0.0.1"
    port: int = 8600
    public_url: str | None = None  # default https://localhost:<port>
    did: str | None = None  # default: the did:web of public_url
    tls_cert: str | None = None
    tls_key: str | None = None
    key_seed_file: str | None = None
    state_file: str | None = None
    admins: tuple[str, ...] = ()
    credential_ttl_s: int = 365 * 86_400
    status_list_ttl_s: int = 3600
    grants: tuple[Grant, ...] = ()
    reputation: bool = False
    reputation_period_s: int = 86_400
    reputation_issuers: tuple[str, ...] = field(default=())

    def validate(self) -> IssuerConfig:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"issuer.port must be a TCP port, got {self.port!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("issuer.tls_cert and issuer.tls_key go together")
        for name in ("credential_ttl_s", "status_list_ttl_s", "reputation_period_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"issuer.{name} must be > 0")
        for did in (*self.admins, *self.reputation_issuers):
            if not is_did(did):
                raise ConfigError(f"issuer: {did[:80]!r} is not a DID")
        if self.state_file is not None and self.key_seed_file is None:
            # credentials outlive a restart only if the key that signed them does
            raise ConfigError("issuer.state_file needs issuer.key_seed_file (a persistent key)")
        if self.did is not None and not self.did.startswith("did:web:"):
            raise ConfigError("issuer.did must be a did:web (its document is served here)")
        return self


_SCALARS: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "port": int,
    "public_url": str,
    "did": str,
    "tls_cert": str,
    "tls_key": str,
    "key_seed_file": str,
    "state_file": str,
    "credential_ttl_s": int,
    "status_list_ttl_s": int,
}


def load_issuer_config(path: Path) -> IssuerConfig:
    """Read ``[issuer]`` (with ``[[issuer.grants]]`` and ``[issuer.reputation]``) from TOML.
    Anything unknown or mistyped refuses to load (``ConfigError``)."""
    section = read_toml_table(path, "issuer")
    known = {*_SCALARS, "admins", "grants", "reputation"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown issuer settings {unknown}")
    values: dict[str, Any] = {}
    for name, kind in _SCALARS.items():
        if name in section:
            value = section[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"{path}: issuer.{name} has the wrong type")
            values[name] = value
    admins = section.get("admins", [])
    if not isinstance(admins, list) or not all(isinstance(a, str) for a in admins):
        raise ConfigError(f"{path}: issuer.admins is a list of DIDs")
    values["admins"] = tuple(admins)
    grants: list[Grant] = []
    for i, raw in enumerate(section.get("grants", [])):
        if (
            not isinstance(raw, dict)
            or set(raw) != {"subject", "type", "claims"}
            or not isinstance(raw["subject"], str)
            or not isinstance(raw["type"], str)
            or not isinstance(raw["claims"], dict)
        ):
            raise ConfigError(f"{path}: issuer.grants[{i}] needs exactly subject, type, claims")
        if raw["type"] not in CREDENTIAL_TYPES:
            raise ConfigError(f"{path}: issuer.grants[{i}]: unknown type {raw['type']!r}")
        grants.append(Grant(raw["subject"], raw["type"], raw["claims"]))
    values["grants"] = tuple(grants)
    rep = section.get("reputation")
    if rep is not None:
        if not isinstance(rep, dict) or set(rep) - {"period_s", "trusted_issuers"}:
            raise ConfigError(f"{path}: issuer.reputation takes period_s and trusted_issuers")
        values["reputation"] = True
        period = rep.get("period_s", 86_400)
        if not isinstance(period, int) or isinstance(period, bool):
            raise ConfigError(f"{path}: issuer.reputation.period_s is an integer")
        values["reputation_period_s"] = period
        values["reputation_issuers"] = tuple(rep.get("trusted_issuers", []))
    try:
        return IssuerConfig(**values).validate()
    except IssuanceError as exc:  # pragma: no cover - grants are checked when the core starts
        raise ConfigError(f"{path}: {exc.message}") from None


def _read_seed(path: str) -> bytes:
    try:
        seed = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read issuer key seed {path}: {exc}") from None
    if len(seed) != 32:
        raise ConfigError(f"issuer key seed {path} must hold exactly 32 bytes")
    return seed


def _error(exc: DsipError, status: int) -> web.Response:
    body = {"error": exc.code, "reason": exc.reason, "message": exc.message[:300]}
    return web.json_response(body, status=status)


async def _json_body(request: web.Request) -> object:
    if request.content_type != "application/json":
        raise IssuanceError("Content-Type must be application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise IssuanceError(f"request body exceeds {MAX_BODY} bytes") from None
    try:
        value, saw_float = loads_strict(raw, what="request body")
    except DsipError:
        raise IssuanceError("request body is not strict JSON") from None
    if saw_float:
        raise IssuanceError("request body must not contain floats")
    return value


def _jws_did(token: object) -> str | None:
    """The DID a compact JWS's ``kid`` names, read *without* verifying (to fetch did:web)."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 4096:
        return None
    try:
        header, _ = loads_strict(b64url_decode(token.split(".")[0]))
    except DsipError:
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid.split("#", 1)[0] if isinstance(kid, str) and "#" in kid else None


class IssuerService(RunnerService):
    """The issuer over aiohttp. The core (and the DID, which may name the bound port) is
    created by :meth:`start`."""

    def __init__(
        self,
        config: IssuerConfig,
        *,
        resolver: DidResolver | None = None,
        clock: Callable[[], float] = time.time,
        http_verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.config = config
        self.resolver = resolver or DidResolver(verify=http_verify)
        self._http_verify = http_verify  # for other issuers' status lists
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self.core: IssuerCore | None = None
        self.reputation: ReputationAggregator | None = None

    @property
    def did(self) -> str:
        assert self.core is not None, "not started"
        return self.core.did

    @property
    def url(self) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"https://localhost:{self.port}"

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get(DID_PATH, self._did_document)
        app.router.add_get(STATUS_PATH, self._status)
        app.router.add_post(CHALLENGES_PATH, self._challenge)
        app.router.add_post(CREDENTIALS_PATH, self._issue)
        app.router.add_post(REVOCATIONS_PATH, self._revoke)
        if self.config.reputation:
            app.router.add_post(RATINGS_PATH, self._rate)
        return app

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> IssuerService:
        self._runner = web.AppRunner(
            self.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        await web.TCPSite(
            self._runner, self.config.host, self.config.port, ssl_context=ssl_context
        ).start()
        try:
            self.core = self._build_core()
        except BaseException:
            await self.stop()
            raise
        logger.info("issuer %s listening on %s", self.core.did, self.url)
        return self

    def _build_core(self) -> IssuerCore:
        cfg = self.config
        did = cfg.did or "did:web:" + quote(urlsplit(self.url).netloc, safe="")
        seed = _read_seed(cfg.key_seed_file) if cfg.key_seed_file else os.urandom(32)
        key = KeyPair.from_seed(seed, f"{did}#key-1")
        state = None
        if cfg.state_file and Path(cfg.state_file).exists():
            try:
                data = json.loads(Path(cfg.state_file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read issuer state {cfg.state_file}: {exc}") from None
            try:
                state = IssuerState.from_json(data)
            except IssuanceError as exc:
                raise ConfigError(exc.message) from None
        computed = {}
        if cfg.reputation:
            self.reputation = ReputationAggregator(
                did, period=cfg.reputation_period_s, trusted_issuers=cfg.reputation_issuers
            )
            computed["ReputationScore"] = self.reputation.claims
        try:
            return IssuerCore(
                key,
                status_list_url=self.url + STATUS_PATH,
                grants=cfg.grants,
                admins=cfg.admins,
                computed=computed,
                credential_ttl=cfg.credential_ttl_s,
                computed_ttl=cfg.reputation_period_s,
                status_list_ttl=cfg.status_list_ttl_s,
                state=state,
            )
        except IssuanceError as exc:
            raise ConfigError(exc.message) from None

    async def __aenter__(self) -> IssuerService:
        return self

    def _now(self) -> int:
        return int(self._clock())

    def _save(self) -> None:
        if self.config.state_file is None or self.core is None:
            return
        path = Path(self.config.state_file)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.core.state.to_json()), encoding="utf-8")
        tmp.replace(path)

    async def _fetch_document(self, token: object) -> None:
        """Resolve a did:web signer before the (sans-I/O) core checks its proof."""
        did = _jws_did(token)
        if did is not None and did.startswith("did:web:"):
            with contextlib.suppress(DsipError):  # the core reports it as unresolvable
                await self.resolver.resolve(did)

    # --- handlers -------------------------------------------------------------------------

    async def _did_document(self, request: web.Request) -> web.Response:
        assert self.core is not None
        return web.json_response(self.core.did_document(), content_type="application/did+json")

    async def _status(self, request: web.Request) -> web.Response:
        assert self.core is not None
        signed = self.core.status_list_credential(now=self._now())
        headers = {"Cache-Control": f"max-age={min(300, self.config.status_list_ttl_s)}"}
        if isinstance(signed, str):
            return web.Response(text=signed, content_type="application/vc+jwt", headers=headers)
        return web.json_response(signed, content_type="application/vc", headers=headers)

    async def _challenge(self, request: web.Request) -> web.Response:
        assert self.core is not None
        try:
            return web.json_response(
                self.core.challenge(await _json_body(request), now=self._now()), status=201
            )
        except IssuanceError as exc:
            return _error(exc, exc.status)

    async def _issue(self, request: web.Request) -> web.Response:
        assert self.core is not None
        try:
            body = await _json_body(request)
            if isinstance(body, Mapping):
                await self._fetch_document(body.get("proof"))
            record, credential = self.core.issue(
                body, now=self._now(), documents=self.resolver.cached
            )
        except IssuanceError as exc:
            logger.info("issuance refused: %s", exc)
            return _error(exc, exc.status)
        self._save()
        logger.info(
            "issued", extra={"did": record.subject, "type": record.credential_type, "id": record.id}
        )
        return web.json_response(
            {"credential": credential, "id": record.id, "statusListIndex": record.index},
            status=201,
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        assert self.core is not None
        try:
            body = await _json_body(request)
            if isinstance(body, Mapping):
                await self._fetch_document(body.get("proof"))
            record = self.core.revoke(body, now=self._now(), documents=self.resolver.cached)
        except IssuanceError as exc:
            logger.info("revocation refused: %s", exc)
            return _error(exc, exc.status)
        self._save()
        logger.info("revoked", extra={"did": record.subject, "id": record.id})
        return web.json_response({"revoked": record.id, "statusListIndex": record.index})

    async def _rate(self, request: web.Request) -> web.Response:
        assert self.reputation is not None
        assert self.core is not None
        now = self._now()
        rater: str | None = None
        try:
            body = await _json_body(request)
            if (
                not isinstance(body, Mapping)
                or "rating" not in body
                or not set(body) <= {"rating", "credential"}
            ):
                raise IssuanceError('a rating request is {"rating": <JWS>, "credential"?: <VC>}')
            await self._fetch_document(body["rating"])
            rating = self.reputation.check(body["rating"], now=now, documents=self.resolver.cached)
            rater = rating.rater
            if "credential" in body:
                # The rater's own ReputationScore gives its rating weight (module
                # dsip.core.trust.reputation); it must verify, status included.
                presented = body["credential"]
                await self._fetch_issuer_of(presented)
                self.reputation.attest_credential(
                    presented,
                    now=now,
                    documents=self.resolver.cached,
                    status_lists=await self._status_source(presented),
                    subject=rating.rater,
                )
            self.reputation.record(rating)
        except IssuanceError as exc:
            return _error(exc, exc.status)
        except RatingError as exc:
            return _error(exc, 409 if exc.code == "rating-duplicate" else 400)
        except CredentialError as exc:
            void = ("credential-revoked", "credential-suspended", "credential-expired")
            if rater is not None and exc.code in void:
                self.reputation.forget(rater)  # its earlier standing is void too
            return _error(exc, 400)
        return web.json_response(
            {"accepted": True, "ratee": rating.ratee, "period": rating.period}, status=201
        )

    async def _fetch_issuer_of(self, presented: object) -> None:
        await resolve_issuers([presented], self.resolver, skip=self.did)

    async def _status_source(self, presented: object) -> StatusListSource:
        """Status lists a presented credential points at: ours from memory, others fetched
        over HTTPS (bounded size and time); anything unavailable fails closed."""
        assert self.core is not None
        own = {self.core.status_list_url: self.core.status_list_credential(now=self._now())}
        return await fetch_status_lists([presented], verify=self._http_verify, known=own)
