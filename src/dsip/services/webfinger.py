"""A WebFinger responder (RFC 7033) that points ``acct:user@domain`` aliases at DIDs.

The counterpart of the WebFinger path of :mod:`dsip.agent.aliases`: for each configured
alias it serves the JRD

.. code-block:: json

    {"subject": "acct:alice@voice.example",
     "aliases": ["did:web:voice.example:users:alice"],
     "links": [{"rel": "https://dsip.dev/rel/did", "href": "did:web:voice.example:users:alice"}]}

with ``Content-Type: application/jrd+json`` and ``Access-Control-Allow-Origin: *`` (RFC 7033
§5: browser clients must be able to read it). Errors follow RFC 7033 §4.2: 400 when
``resource`` is missing, repeated or malformed, 404 when it names nothing we serve (a
well-formed URI of another scheme included); ``rel`` parameters filter ``links``.

What a WebFinger answer is worth: exactly the TLS certificate of the domain it is served
under, no more. It publishes a pointer; the DID document it points to stays authoritative
(v0.7 §8.1), so this responder signs nothing and needs no keys.

Shape, after the house style: :class:`WebFingerResponder` is sans-I/O (a method and a query
string in, a :class:`WebFingerReply` out). Thin adapters mount it where HTTP is already
served: :func:`add_routes` on an aiohttp application (``dsip resolver``),
:func:`websockets_process_request` on a ``websockets`` server (``dsip relay``), and
:class:`WebFingerServer` runs it standalone over aiohttp.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aiohttp import web

from dsip.agent.aliases import DSIP_DID_REL, Alias, normalize_alias
from dsip.core.identity import is_did
from dsip.errors import ConfigError, ResolutionError
from dsip.services.httpbase import RunnerService

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request, Response

__all__ = [
    "JRD_CONTENT_TYPE",
    "WEBFINGER_PATH",
    "WebFingerReply",
    "WebFingerResponder",
    "WebFingerServer",
    "add_routes",
    "websockets_process_request",
]

WEBFINGER_PATH = "/.well-known/webfinger"
JRD_CONTENT_TYPE = "application/jrd+json"
MAX_QUERY_FIELDS = 32
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

SHUTDOWN_TIMEOUT_S = 5.0  # stop() waits this long for requests in flight

logger = logging.getLogger("dsip.webfinger")


@dataclass(frozen=True, slots=True)
class WebFingerReply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class WebFingerResponder:
    """Answer WebFinger queries for a mapping ``acct:user@domain → DID`` (sans-I/O)."""

    def __init__(self, aliases: Mapping[str, str] | None = None, *, max_age: int = 300) -> None:
        self.max_age = max_age
        self._dids: dict[str, str] = {}
        for alias, did in (aliases or {}).items():
            self.set(alias, did)

    def set(self, alias: str, did: str) -> None:
        """Serve ``did`` for ``alias`` (replacing any earlier DID)."""
        try:
            key = normalize_alias(alias).acct
        except ResolutionError as exc:
            raise ConfigError(f"alias {alias[:80]!r}: {exc.message}") from None
        if not is_did(did):
            raise ConfigError(f"alias {key}: {did[:80]!r} is not a DID")
        self._dids[key] = did

    def remove(self, alias: str) -> None:
        self._dids.pop(normalize_alias(alias).acct, None)

    def lookup(self, alias: str) -> str | None:
        try:
            return self._dids.get(normalize_alias(alias).acct)
        except ResolutionError:
            return None

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._dids)

    def jrd(self, alias: Alias, did: str, rels: list[str] | None = None) -> dict[str, object]:
        links = [{"rel": DSIP_DID_REL, "href": did}]
        if rels:
            links = [link for link in links if link["rel"] in rels]
        return {"subject": alias.acct, "aliases": [did], "links": links}

    def respond(self, method: str, query: str) -> WebFingerReply:
        """Answer ``method`` on ``/.well-known/webfinger?<query>`` (``query`` still encoded)."""
        if method == "OPTIONS":  # CORS preflight
            return self._reply(
                204,
                b"",
                extra=(
                    ("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS"),
                    ("Access-Control-Max-Age", "86400"),
                ),
            )
        if method not in ("GET", "HEAD"):
            return self._reply(405, b"only GET\n", extra=(("Allow", "GET, HEAD, OPTIONS"),))
        try:
            params = parse_qs(
                query,
                keep_blank_values=True,
                max_num_fields=MAX_QUERY_FIELDS,
                errors="strict",
            )
        except (ValueError, UnicodeError):
            return self._reply(400, b"malformed query\n")
        resources = params.get("resource", [])
        if len(resources) != 1 or not resources[0]:
            return self._reply(400, b"exactly one non-empty resource parameter is required\n")
        resource = resources[0]
        scheme = _URI_SCHEME.match(resource)
        if scheme is not None and scheme.group().lower() != "acct:":
            return self._reply(404, b"unknown resource\n")
        try:
            alias = normalize_alias(resource)
        except ResolutionError as exc:
            return self._reply(400, f"malformed resource: {exc.code}\n".encode())
        did = self._dids.get(alias.acct)
        if did is None:
            logger.debug("webfinger: unknown %s", alias)
            return self._reply(404, b"unknown resource\n")
        body = json.dumps(self.jrd(alias, did, params.get("rel")), separators=(",", ":"))
        return self._reply(
            200,
            b"" if method == "HEAD" else body.encode(),
            content_type=JRD_CONTENT_TYPE,
            extra=(("Cache-Control", f"max-age={self.max_age}"),),
        )

    @staticmethod
    def _reply(
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> WebFingerReply:
        headers = (
            ("Content-Type", content_type),
            ("Access-Control-Allow-Origin", "*"),
            *extra,
        )
        return WebFingerReply(status, headers, body)


# --- adapters ------------------------------------------------------------------------------


def add_routes(app: web.Application, responder: WebFingerResponder) -> None:
    """Serve ``/.well-known/webfinger`` from ``responder`` on an aiohttp application."""

    async def handle(request: web.Request) -> web.StreamResponse:
        reply = responder.respond(request.method, request.rel_url.raw_query_string)
        response = web.Response(status=reply.status, body=reply.body)
        for name, value in reply.headers:
            response.headers[name] = value
        return response

    app.router.add_route("*", WEBFINGER_PATH, handle)


def websockets_process_request(
    responder: WebFingerResponder,
) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` hook for a ``websockets`` server (the relay): answers WebFinger
    GETs itself and lets every other request through to the WebSocket handshake."""
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path != WEBFINGER_PATH:
            return None
        reply = responder.respond("GET", query)
        headers = Headers(reply.headers)
        headers["Content-Length"] = str(len(reply.body))
        headers["Connection"] = "close"
        return Response(reply.status, HTTPStatus(reply.status).phrase, headers, reply.body)

    return process_request


class WebFingerServer(RunnerService):
    """``responder`` alone on an HTTPS (or, behind a proxy, HTTP) port, over aiohttp."""

    def __init__(
        self,
        responder: WebFingerResponder,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.responder = responder
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self) -> WebFingerServer:
        app = web.Application()
        add_routes(app, self.responder)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl)
        await self._site.start()
        return self

    async def __aenter__(self) -> WebFingerServer:
        return await self.start()
