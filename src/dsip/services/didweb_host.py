"""A did:web host: serves DID documents over HTTPS at the did:web method's paths.

``did:web:localhost%3A8443:users:bob`` is served at ``https://localhost:8443/users/bob/did.json``
and ``did:web:localhost%3A8443`` at ``/.well-known/did.json``. Documents are held in memory
and can be replaced at any time (key rotation publishes a new document this way).

The server is the standard library's ``ThreadingHTTPServer`` wrapped in TLS 1.3, in a
background thread: it only ever answers GETs for a handful of small JSON files, so an async
web framework would add a dependency and nothing else.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from dsip.core.identity import did_web_to_url, url_to_did_web
from dsip.services.localca import LocalCA

__all__ = ["DidWebHost"]

logger = logging.getLogger("dsip.didweb")


class DidWebHost:
    """Serve DID documents for ``did:web:<host>%3A<port>…`` on ``127.0.0.1``."""

    def __init__(
        self, ca: LocalCA, *, host: str = "127.0.0.1", port: int = 0, max_age: int = 300
    ) -> None:
        self.ca = ca
        self.max_age = max_age
        self._docs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                with outer._lock:
                    body = outer._docs.get(urlsplit(self.path).path)
                if body is None:
                    self.send_error(404, "no such DID document")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/did+json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", f"max-age={outer.max_age}")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("did:web host: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._server.socket = ca.server_context().wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="didweb-host", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def authority(self) -> str:
        return f"localhost:{self.port}"

    def did(self, *path: str) -> str:
        """The did:web DID for a path on this host, e.g. ``did("users", "bob")``."""
        return url_to_did_web(self.authority, path)

    def publish(self, did: str, document: Mapping[str, Any]) -> str:
        """Serve (or replace) ``document`` for ``did``; returns its HTTPS URL."""
        url = did_web_to_url(did)
        parts = urlsplit(url)
        if parts.netloc != self.authority:
            raise ValueError(f"{did} is not hosted here ({self.authority})")
        with self._lock:
            self._docs[parts.path] = json.dumps(document, indent=2).encode()
        return url

    def start(self) -> DidWebHost:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DidWebHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
