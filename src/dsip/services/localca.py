"""A local certificate authority for loopback TLS (did:web hosts, wss relays, the demo).

did:web and ws/1.0 both require real TLS with certificate validation (§8.4, §13.2). On one
machine there is no public CA, so the demo and the tests mint their own with ``trustme``
(a small, maintained library built for exactly this) and point every client at it — the
code path is the real one, only the trust anchor is local.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["LocalCA"]


@dataclass
class LocalCA:
    """A throw-away CA and one server certificate for the given hostnames."""

    ca: trustme.CA
    server: trustme.LeafCert

    @classmethod
    def create(cls, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> LocalCA:
        ca = trustme.CA(organization_name="dsip local CA")
        return cls(ca, ca.issue_cert(*hostnames))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # §13.2: TLS 1.3 or later
        self.server.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ca.configure_trust(ctx)
        return ctx

    def write_ca_pem(self, path: Path) -> Path:
        self.ca.cert_pem.write_to_path(str(path))
        return path
