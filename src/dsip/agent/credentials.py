"""Fetch what verifying presented credentials needs: issuer DID documents, status lists.

The trust core (:mod:`dsip.core.trust`) never fetches: verifiers hand it documents and a
:data:`~dsip.core.trust.vc.StatusListSource`. This is the edge that fills those in — the
agent before rendering a caller's RCID, the issuer before weighting a rater — over HTTPS
with the caller's TLS trust, bounded in size and time. Anything unavailable is simply
absent, and the verifier then fails closed (``status unknown``, ``issuer unresolvable``).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from dsip.agent.resolver import DidResolver
from dsip.core.b64 import b64url_decode
from dsip.core.jsonwire import loads_strict
from dsip.core.trust.vc import StatusListSource
from dsip.errors import DsipError

__all__ = [
    "MAX_STATUS_FETCH",
    "credential_body",
    "credential_issuer",
    "fetch_status_lists",
    "resolve_issuers",
    "status_urls",
]

MAX_STATUS_FETCH = 1024 * 1024  # bytes of one status list credential
MAX_FETCHES = 4  # status lists per credential


def credential_body(presented: object) -> Mapping[str, Any] | None:
    """The claims of a credential as presented (JSON object, or the payload of a vc+jwt)."""
    if isinstance(presented, Mapping):
        return presented
    if isinstance(presented, str) and presented.count(".") == 2 and len(presented) <= 8192:
        try:
            value, _ = loads_strict(b64url_decode(presented.split(".")[1]))
        except DsipError:
            return None
        return value if isinstance(value, dict) else None
    return None


def credential_issuer(presented: object) -> str | None:
    body = credential_body(presented)
    issuer = body.get("issuer") if body is not None else None
    if isinstance(issuer, Mapping):
        issuer = issuer.get("id")
    return issuer if isinstance(issuer, str) else None


def status_urls(presented: object) -> list[str]:
    """The https:// status list URLs a credential names."""
    body = credential_body(presented)
    raw = body.get("credentialStatus") if body is not None else None
    entries = raw if isinstance(raw, list) else [raw]
    urls = []
    for entry in entries:
        url = entry.get("statusListCredential") if isinstance(entry, Mapping) else None
        if isinstance(url, str) and url.startswith("https://"):
            urls.append(url)
    return urls


async def resolve_issuers(
    presented: Iterable[object], resolver: DidResolver, *, skip: str | None = None
) -> None:
    """Resolve each credential's did:web issuer into ``resolver``'s cache (``skip``: ours)."""
    for item in presented:
        issuer = credential_issuer(item)
        if issuer is not None and issuer.startswith("did:web:") and issuer != skip:
            with contextlib.suppress(DsipError):
                await resolver.resolve(issuer)


async def fetch_status_lists(
    presented: Iterable[object],
    *,
    verify: ssl.SSLContext | bool = True,
    known: Mapping[str, Any] | None = None,
) -> StatusListSource:
    """Fetch the status lists the credentials name; ``known``: lists already held."""
    lists: dict[str, Any] = dict(known or {})
    for item in presented:
        for url in status_urls(item)[:MAX_FETCHES]:
            if url in lists:
                continue
            try:
                async with httpx.AsyncClient(verify=verify, timeout=5) as http:
                    r = await http.get(url)
                if r.status_code == 200 and len(r.content) <= MAX_STATUS_FETCH:
                    jwt = r.headers.get("content-type", "").startswith("application/vc+jwt")
                    lists[url] = r.text.strip() if jwt else r.json()
            except (httpx.HTTPError, ValueError):
                continue
    return lists.get
