"""``dsip resolver``: an HTTP resolver node in the style of the DIF Universal Resolver.

Endpoints:

``GET /1.0/identifiers/{did}``
    A DID resolution result, ``{"didDocument", "didResolutionMetadata", "didDocumentMetadata"}``.
    ``did:key`` is derived locally; ``did:web`` is fetched by
    :class:`~dsip.agent.resolver.DidResolver` — HTTPS with certificate verification,
    same-origin redirects only, size and time caps, TTL cache — so this node adds no trust
    of its own: it is a cache in front of the did:web hosts, and its answers are exactly as
    good as the TLS verification it performed (v0.7 §8.1 item 6: caches distribute, they
    are not authorities; clients that can resolve for themselves should). ``cached`` says
    whether the document came from the cache, ``retrieved`` when it was fetched.
    Status codes: 400 ``invalidDid``, 404 ``notFound`` (the host answered 404/410),
    501 ``methodNotSupported``, 502 for every other upstream failure (unreachable host,
    failed TLS verification, timeout, oversized or invalid document), with the dsip
    ``code`` and wire ``reason`` in ``didResolutionMetadata``.
    The DID is taken from the *raw* path: ``did:web:host%3A8443`` keeps its ``%3A``;
    a DID sent fully percent-encoded (``did%3Aweb%3A…``) is decoded once.
``GET /1.0/aliases/{alias}``
    :class:`~dsip.agent.aliases.AliasResolver` over WebFinger and DNS (with DNSSEC state):
    200 with the DID and which paths answered, 400 malformed alias, 404 not found,
    409 ``alias-conflict``, 502 otherwise (``dnssec-bogus`` included).
``GET /.well-known/webfinger``
    The aliases this node is configured to publish (:mod:`dsip.services.webfinger`).

HTTP stack: **aiohttp**. One maintained, typed, asyncio-native package gives the server,
TLS through a plain ``ssl.SSLContext``, an ``AppRunner`` that starts on port 0 inside an
event loop someone else owns (tests, or a process that also runs a relay) and access to the
raw request path, which did:web DIDs need. starlette+uvicorn would be two packages plus
anyio and an ASGI layer, with a server built to own the process (signals, lifespan); the
standard library's ``http.server`` (enough for :mod:`dsip.services.didweb_host`) is
thread-per-request and would have to bridge into the asyncio resolvers.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from dsip.agent.aliases import AliasResolver, AliasResult
from dsip.agent.resolver import DidResolver
from dsip.core.identity import is_did
from dsip.errors import ResolutionError
from dsip.services.httpbase import RunnerService
from dsip.services.webfinger import WebFingerResponder, add_routes

__all__ = [
    "ALIASES_PATH",
    "IDENTIFIERS_PATH",
    "RESOLUTION_CONTENT_TYPE",
    "ResolverService",
    "alias_result_json",
]

IDENTIFIERS_PATH = "/1.0/identifiers/"
ALIASES_PATH = "/1.0/aliases/"
RESOLUTION_CONTENT_TYPE = 'application/ld+json;profile="https://w3id.org/did-resolution"'
_UPSTREAM_NOT_FOUND = re.compile(r"answered HTTP (404|410)\b")
_MAX_RETRIEVED = 10_000

SHUTDOWN_TIMEOUT_S = 5.0  # stop() waits this long for requests in flight

logger = logging.getLogger("dsip.resolver.service")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(status: int, body: Mapping[str, Any], content_type: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": content_type, "Access-Control-Allow-Origin": "*"},
    )


def _did_status(err: ResolutionError) -> tuple[int, str]:
    """HTTP status and DID-resolution ``error`` for a DidResolver failure."""
    if err.code in ("did-invalid", "kid-invalid", "key-invalid"):  # key-invalid: a bad did:key
        return 400, "invalidDid"
    if err.code == "method-unsupported":
        return 501, "methodNotSupported"
    # DidResolver reports every upstream status as http-status; only 404/410 mean "no such DID".
    if err.code == "http-status" and _UPSTREAM_NOT_FOUND.search(err.message):
        return 404, "notFound"
    return 502, "internalError"


_ALIAS_STATUS = {
    "alias-invalid": 400,
    "alias-too-long": 400,
    "alias-not-found": 404,
    "alias-conflict": 409,
}


def _raw_tail(request: web.Request, prefix: str) -> str:
    raw = request.rel_url.raw_path[len(prefix) :]
    return raw if raw.startswith("did:") else unquote(raw)


class ResolverService(RunnerService):
    """The resolver node: DID resolution, alias resolution and WebFinger over aiohttp."""

    def __init__(
        self,
        resolver: DidResolver,
        *,
        aliases: AliasResolver | None = None,
        webfinger: WebFingerResponder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self.aliases = aliases
        self.webfinger = webfinger
        self._clock = clock
        self._retrieved: dict[str, float] = {}
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get(IDENTIFIERS_PATH + "{did:.+}", self._identifiers)
        app.router.add_get(ALIASES_PATH + "{alias:.+}", self._aliases)
        if self.webfinger is not None:
            add_routes(app, self.webfinger)
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> ResolverService:
        self._runner = web.AppRunner(
            self.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        logger.info(
            "resolver listening on %s:%d (tls=%s)", host, self.port, ssl_context is not None
        )
        return self

    async def __aenter__(self) -> ResolverService:
        return self

    # --- handlers -------------------------------------------------------------------------

    async def _identifiers(self, request: web.Request) -> web.Response:
        did = _raw_tail(request, IDENTIFIERS_PATH)
        if not is_did(did):
            return self._did_error(400, "invalidDid", "did-invalid", "not a DID", None)
        local = did.startswith("did:key:")
        cached = not local and self.resolver.cached(did) is not None
        try:
            doc = await self.resolver.resolve(did)
        except ResolutionError as err:
            status, error = _did_status(err)
            logger.info("resolution of %s failed: %s", did, err)
            return self._did_error(status, error, err.code, err.message, err.reason)
        now = self._clock()
        if local:
            retrieved = now
        elif cached and did in self._retrieved:
            retrieved = self._retrieved[did]
        else:
            cached = False
            retrieved = now
            self._retrieved.pop(did, None)
            self._retrieved[did] = now
            while len(self._retrieved) > _MAX_RETRIEVED:
                del self._retrieved[next(iter(self._retrieved))]
        raw = dict(doc.raw)
        content_type = "application/did+ld+json" if "@context" in raw else "application/did+json"
        return _json(
            200,
            {
                "didDocument": raw,
                "didResolutionMetadata": {
                    "contentType": content_type,
                    "retrieved": _iso(retrieved),
                    "cached": cached,
                },
                "didDocumentMetadata": {},
            },
            RESOLUTION_CONTENT_TYPE,
        )

    @staticmethod
    def _did_error(
        status: int, error: str, code: str, message: str, reason: str | None
    ) -> web.Response:
        meta: dict[str, Any] = {"error": error, "code": code, "message": message[:300]}
        if reason is not None:
            meta["reason"] = reason
        return _json(
            status,
            {"didDocument": None, "didResolutionMetadata": meta, "didDocumentMetadata": {}},
            RESOLUTION_CONTENT_TYPE,
        )

    async def _aliases(self, request: web.Request) -> web.Response:
        if self.aliases is None:
            return _json(404, {"error": "alias resolution is not enabled"}, "application/json")
        alias = unquote(request.rel_url.raw_path[len(ALIASES_PATH) :])
        try:
            result = await self.aliases.resolve(alias)
        except ResolutionError as err:
            body = {"error": err.code, "reason": err.reason, "message": err.message[:300]}
            return _json(_ALIAS_STATUS.get(err.code, 502), body, "application/json")
        return _json(200, alias_result_json(result), "application/json")


def alias_result_json(result: AliasResult) -> dict[str, Any]:
    """The JSON form of an :class:`~dsip.agent.aliases.AliasResult` served by the node."""
    return {
        "alias": result.alias,
        "did": result.did,
        "answeredBy": list(result.answered_by),
        "dnssec": result.dnssec,
        "overruled": list(result.overruled),
        "cached": result.cached,
        "ttl": result.ttl,
        "answers": [
            {
                "method": a.method,
                "source": a.source,
                "did": a.did,
                "dnssec": a.dnssec,
                "error": a.error,
            }
            for a in result.answers
        ],
    }
