"""Static files of the browser client, served on the relay's ws/1.0 port (HTTPS).

The relay's WebSocket server (``websockets``) sees every HTTP request first; requests that
are not a WebSocket upgrade to the ws/1.0 path are answered here from one directory
(``--web-root``, default: the packaged ``web/`` client). Serving from the same origin as
the relay lets the page open ``wss://<same host>/dsip`` without any cross-origin setup.

Reusing ``websockets``' ``process_request`` hook keeps one listener and one TLS
configuration (no second HTTP server library for a handful of static files). The file
lookup itself is sans-I/O (:meth:`StaticFiles.lookup`): a request target maps to a file
strictly inside the root, or to a :class:`~dsip.errors.TransportError` that becomes a 4xx
response — traversal (``..``, encoded or not), absolute or backslash paths, NUL and control
bytes, hidden files, unknown extensions and symlinks leading out of the root are refused.
Responses carry a strict Content-Security-Policy (scripts and styles from this origin only,
connections to this origin only) so the page cannot be made to load code from elsewhere.
"""

from __future__ import annotations

import http
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from dsip.errors import ConfigError, TransportError

__all__ = [
    "CONTENT_TYPES",
    "StaticFile",
    "StaticFiles",
    "default_web_root",
    "http_responder",
]

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
MAX_TARGET: Final = 512
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def default_web_root() -> Path | None:
    """The browser client shipped with dsip: ``dsip/web`` in an installed wheel, else the
    ``web/`` directory of a source checkout; ``None`` when neither exists."""
    here = Path(__file__).resolve().parent.parent  # src/dsip
    for candidate in (here / "web", here.parent.parent / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    return None


@dataclass(frozen=True)
class StaticFile:
    """A file found for a request: where it is and what it is."""

    path: Path
    content_type: str


class StaticFiles:
    """Maps request targets to files under ``root`` (resolved once, at start)."""

    def __init__(self, root: Path) -> None:
        try:
            self.root = root.resolve(strict=True)
        except OSError as exc:
            raise ConfigError(f"web root {root} does not exist: {exc}") from None
        if not self.root.is_dir():
            raise ConfigError(f"web root {root} is not a directory")

    def lookup(self, target: str) -> StaticFile:
        """The file for a request target (path and optional query), or ``TransportError``
        with code ``web-path-invalid`` (bad request) or ``web-not-found``."""
        if len(target) > MAX_TARGET:
            raise TransportError("request target is too long", code="web-path-invalid")
        path = target.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/"):
            raise TransportError("request target is not an absolute path", code="web-path-invalid")
        try:
            decoded = unquote(path, errors="strict") if "%" in path else path
        except UnicodeDecodeError:
            raise TransportError("percent-escapes are not UTF-8", code="web-path-invalid") from None
        if any(ord(c) < 0x20 or c in "\\\x7f" for c in decoded):
            raise TransportError("control or backslash in path", code="web-path-invalid")
        parts = [p for p in decoded.split("/") if p]
        if any(p in (".", "..") or p.startswith(".") for p in parts):
            raise TransportError("dot segment or hidden file in path", code="web-path-invalid")
        if not parts or decoded.endswith("/"):
            parts.append("index.html")
        candidate = self.root.joinpath(*parts)
        content_type = CONTENT_TYPES.get(candidate.suffix.lower())
        if content_type is None:
            raise TransportError("not a served file type", code="web-not-found")
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise TransportError("no such file", code="web-not-found") from None
        if not real.is_relative_to(self.root) or not real.is_file():
            raise TransportError("no such file", code="web-not-found")
        return StaticFile(real, content_type)

    def respond(self, method: str, target: str) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one request; never raises on hostile input."""
        if method not in ("GET", "HEAD"):
            return _plain(http.HTTPStatus.METHOD_NOT_ALLOWED)
        try:
            found = self.lookup(target)
            body = found.path.read_bytes()
        except TransportError as exc:
            status = (
                http.HTTPStatus.NOT_FOUND
                if exc.code == "web-not-found"
                else http.HTTPStatus.BAD_REQUEST
            )
            return _plain(status)
        except (OSError, UnicodeError):
            return _plain(http.HTTPStatus.NOT_FOUND)
        if len(body) > MAX_FILE_BYTES:
            return _plain(http.HTTPStatus.NOT_FOUND)
        headers = [
            ("Content-Type", found.content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("Content-Security-Policy", _CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Permissions-Policy", "microphone=(self), camera=(self), geolocation=(self)"),
        ]
        return 200, headers, b"" if method == "HEAD" else body


def _plain(status: http.HTTPStatus) -> tuple[int, list[tuple[str, str]], bytes]:
    body = f"{status.value} {status.phrase}\n".encode()
    return (
        status.value,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        body,
    )


def http_responder(
    files: StaticFiles, ws_path: str
) -> Callable[[ServerConnection, Request], Response | None]:
    """A ``process_request`` hook: WebSocket upgrades to ``ws_path`` pass through (``None``);
    every other request is answered from ``files``."""

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        upgrade = request.headers.get("Upgrade", "")
        if upgrade.lower() == "websocket" and request.path.split("?", 1)[0] == ws_path:
            return None
        status, headers, body = files.respond("GET", request.path)
        # websockets closes the connection after an HTTP response: say so, or clients that
        # keep connections alive would send their next request into a closed socket.
        headers.append(("Connection", "close"))
        return Response(status, http.HTTPStatus(status).phrase, Headers(headers), body)

    return process_request
