"""DID resolution with a TTL cache: the I/O edge in front of the sans-I/O core (§8.1).

The verification pipeline in ``dsip.core`` never does I/O. It asks :meth:`DidResolver.cached`
(synchronous, no network) for a document; the agent calls :meth:`DidResolver.resolve`
beforehand, e.g. when a ``kid`` it has not seen arrives, to fill the cache.

Where documents come from, in order:

1. **Pinned documents** — the ``documents`` map (the conformance vectors'
   ``context.did_documents``) and :meth:`DidResolver.pin`. Never fetched, never expire.
2. **did:key** — derived locally from the DID itself (no I/O, nothing to cache).
3. **did:web** — fetched over HTTPS from the URL of the did:web method spec
   (:func:`dsip.core.identity.did_web_to_url`), then cached.

did:web fetch policy, and why:

* **HTTPS only, redirects handled here.** httpx runs with ``follow_redirects=False``; we
  follow at most ``MAX_REDIRECTS`` (3), and only to ``https`` URLs on the *same host and
  port*. did:web's whole security claim is "whoever controls this origin's TLS
  certificate controls this DID" (§8.4); a redirect to another origin would hand that
  authority to a host the DID does not name, and a downgrade to ``http`` would hand it to
  anyone on the path. Anything else fails with ``redirect-refused``.
* **Bounded body.** The body is streamed and counted as it arrives; we stop at
  ``max_document_bytes`` (``document-too-large``). ``Content-Length`` only lets us refuse
  early — a chunked or lying response is still cut off. We ask for
  ``Accept-Encoding: identity`` and refuse compressed bodies, so a small gzip bomb cannot
  inflate past the cap inside a single decoder call.
* **Bounded time.** ``timeout`` is both httpx's per-operation timeout and a deadline for
  the whole resolution including redirects, so a server that dribbles one byte at a time
  cannot hold a resolution open (``resolver-timeout``).
* **Strict JSON.** Bodies are parsed with :func:`dsip.core.jsonwire.loads_strict`: a
  document with duplicate member names means different things to different parsers, so
  it is refused (``document-invalid``), as is a document whose ``id`` is not the DID.

TTL policy: a fetched document lives for ``Cache-Control: max-age`` seconds, clamped to
``[min_ttl, max_ttl]``; without a usable ``max-age`` it lives ``default_ttl``.
``no-cache``/``no-store`` count as ``max-age=0`` and are therefore clamped up to
``min_ttl``: the floor stops a peer from making us re-fetch on every message it sends,
the ceiling bounds how long a rotated-out key (§7.5) can stay trusted when the agent
never sees the ``key-rotation`` record (which calls :meth:`DidResolver.invalidate`).
Failures are cached for ``negative_ttl`` seconds so an unreachable host is not hammered.
Concurrent :meth:`~DidResolver.resolve` calls for one DID share a single fetch.

Every failure is a :class:`~dsip.errors.ResolutionError`; no httpx exception escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from dsip.agent.fetchcache import FetchCache
from dsip.core.b64 import b64url_decode
from dsip.core.envelope import Signed
from dsip.core.identity import (
    DidDocument,
    did_key_document,
    did_method,
    did_web_to_url,
    parse_did_document,
)
from dsip.core.jsonwire import loads_strict
from dsip.errors import DsipError, PayloadError, ResolutionError

__all__ = ["MAX_REDIRECTS", "DidResolver"]

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "application/did+json, application/did+ld+json;q=0.9, application/json;q=0.8"

logger = logging.getLogger("dsip.resolver")


def _as_resolution_error(err: DsipError) -> ResolutionError:
    if isinstance(err, ResolutionError):
        return err
    return ResolutionError(err.message, code=err.code, reason=err.reason, remote=err.remote)


def _ssl_context(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext | bool:
    # httpx 0.28 deprecates verify=<path>; build the context ourselves.
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return verify


@functools.lru_cache(maxsize=1024)
def _did_key_document(did: str) -> DidDocument:
    # Derivation costs a base58 decode and an Ed25519->X25519 map; the verification
    # pipeline asks on every message. DidDocument is immutable, so sharing is safe.
    return did_key_document(did)


def _max_age(cache_control: list[str]) -> int | None:
    """``max-age`` from Cache-Control header values; ``0`` for no-cache/no-store."""
    age: int | None = None
    for value in cache_control:
        for directive in value.split(","):
            name, _, arg = directive.strip().partition("=")
            name = name.strip().lower()
            if name in ("no-store", "no-cache"):
                return 0
            if name == "max-age" and age is None:
                arg = arg.strip().strip('"')
                if arg.isascii() and arg.isdigit():
                    age = int(arg[:12])
    return age


class DidResolver(FetchCache[DidDocument]):
    """Resolve DIDs to documents; see the module docstring for the policies."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 5.0,
        max_document_bytes: int = 256 * 1024,
        default_ttl: int = 300,
        min_ttl: int = 30,
        max_ttl: int = 86_400,
        negative_ttl: int = 30,
        documents: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
    ) -> None:
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError("need 0 <= min_ttl <= max_ttl")
        if timeout <= 0 or max_document_bytes <= 0 or max_entries <= 0:
            raise ValueError("timeout, max_document_bytes and max_entries must be positive")
        super().__init__(
            client=client,
            verify=_ssl_context(verify),
            timeout=timeout,
            negative_ttl=negative_ttl,
            clock=clock,
            max_entries=max_entries,
        )
        self._max_bytes = max_document_bytes
        self._default_ttl = default_ttl
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._pinned: dict[str, DidDocument] = {}
        # Bumped by invalidate(): a fetch started before it must not repopulate the cache.
        self._generation: dict[str, int] = {}
        for did, doc in (documents or {}).items():
            self.pin(did, doc)

    # --- public API -----------------------------------------------------------------------

    async def resolve(self, did: str) -> DidDocument:
        """Resolve ``did``: pinned, did:key locally, did:web over HTTPS (cached)."""
        method = self._method(did)
        pinned = self._pinned.get(did)
        if pinned is not None:
            return pinned
        if method == "key":
            return self._did_key(did)
        if method != "web":
            raise ResolutionError(
                f"DID method {method!r} is not supported (did:key, did:web only)",
                code="method-unsupported",
                remote=False,
            )
        try:
            url = did_web_to_url(did)
        except DsipError as exc:
            raise _as_resolution_error(exc) from None
        hit = self._fresh(did)
        if hit is not None:
            return hit
        generation = self._generation.get(did, 0)
        return await self._single_flight(
            did, lambda: self._fetch(did, url, generation), f"dsip-resolve {did}"
        )

    def cached(self, did: str) -> DidDocument | None:
        """The document for ``did`` if known without I/O (pinned, did:key, fresh cache)."""
        pinned = self._pinned.get(did)
        if pinned is not None:
            return pinned
        if isinstance(did, str) and did.startswith("did:key:"):
            try:
                return self._did_key(did)
            except ResolutionError:
                return None
        hit = self._cache.get(did)
        if hit is not None and self._clock() < hit[1]:
            return hit[0]
        return None

    def pin(self, did: str, document: Mapping[str, Any]) -> None:
        """Use ``document`` for ``did`` from now on; never fetched, never expires."""
        try:
            parsed = parse_did_document(document, did)
        except DsipError as exc:
            raise _as_resolution_error(exc) from None
        self._pinned[did] = parsed
        self._forget(did)

    def invalidate(self, did: str) -> None:
        """Forget the cached (or negatively cached) document, e.g. after a key rotation.

        Pinned documents stay: they were configured, not learned; :meth:`pin` replaces one.
        A fetch already in flight still completes for its waiters but is not cached, and
        the next :meth:`resolve` starts a new one.
        """
        self._forget(did)
        self._inflight.pop(did, None)
        self._generation[did] = self._generation.get(did, 0) + 1
        logger.debug("invalidated cached document of %s", did)

    async def prefetch(self, signed: Signed) -> None:
        """Resolve, ahead of the sans-I/O verifier, the documents a signed object needs: its
        ``kid``'s DID and the subjects of delegations in its header. Failures are left for
        the verifier to report with the right verdict (``kid-unresolvable`` and friends)."""
        dids = {signed.kid.split("#", 1)[0]}
        for d in signed.header.get("delegations", ()) or ():
            try:
                body, _ = loads_strict(b64url_decode(str(d.get("payload", ""))))
            except (DsipError, AttributeError):
                continue
            if isinstance(body, dict) and isinstance(body.get("subject"), str):
                dids.add(body["subject"])
        for did in dids:
            if not did.startswith("did:key:") and self.cached(did) is None:
                with contextlib.suppress(DsipError):
                    await self.resolve(did)

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _method(did: str) -> str:
        try:
            return did_method(did)
        except DsipError as exc:
            raise _as_resolution_error(exc) from None

    @staticmethod
    def _did_key(did: str) -> DidDocument:
        try:
            return _did_key_document(did)
        except DsipError as exc:
            raise _as_resolution_error(exc) from None

    def _ttl(self, response: httpx.Response) -> int:
        age = _max_age(response.headers.get_list("cache-control"))
        if age is None:
            return self._default_ttl
        return max(self._min_ttl, min(self._max_ttl, age))

    async def _fetch(self, did: str, url: str, generation: int) -> DidDocument:
        def current() -> bool:
            return self._generation.get(did, 0) == generation

        try:
            try:
                async with asyncio.timeout(self._timeout):
                    body, ttl = await self._get(did, url)
            except TimeoutError:
                raise ResolutionError(
                    f"resolving {did} took longer than {self._timeout:g}s",
                    code="resolver-timeout",
                ) from None
            try:
                value, _saw_float = loads_strict(body, what="DID document", code_prefix="document")
            except PayloadError as exc:
                raise ResolutionError(
                    f"DID document of {did} is not strict JSON: {exc.message}",
                    code="document-invalid",
                ) from None
            try:
                doc = parse_did_document(value, did)
            except DsipError as exc:
                raise _as_resolution_error(exc) from None
        except ResolutionError as err:
            logger.warning("resolution of %s failed: %s", did, err)
            if current():
                self._store_failure(did, err)
            raise
        if current():
            self._store(did, doc, self._clock() + ttl)
        logger.info("resolved %s (%d verification methods, ttl %ds)", did, len(doc.methods), ttl)
        return doc

    async def _get(self, did: str, url: str) -> tuple[bytes, int]:
        """GET the document, following same-origin HTTPS redirects; (body, ttl)."""
        target = httpx.URL(url)
        origin = (target.host, target.port or 443)
        client = self._http()
        for hop in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream(
                    "GET",
                    target,
                    headers={"Accept": _ACCEPT, "Accept-Encoding": "identity"},
                    follow_redirects=False,
                    timeout=httpx.Timeout(self._timeout),
                ) as response:
                    status = response.status_code
                    if status in _REDIRECT_STATUSES:
                        target = self._redirect_target(did, target, response, origin, hop)
                        continue
                    if status != 200:
                        raise ResolutionError(
                            f"GET {target} for {did} answered HTTP {status}",
                            code="http-status",
                        )
                    body = await self._read_body(did, response)
                    return body, self._ttl(response)
            except httpx.TimeoutException:
                raise ResolutionError(
                    f"resolving {did} timed out at {target.host}", code="resolver-timeout"
                ) from None
            except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError) as exc:
                # Connection refused, DNS failure, TLS handshake/certificate failure, ...
                raise ResolutionError(
                    f"cannot fetch the document of {did} from {target.host}: "
                    f"{type(exc).__name__}: {str(exc)[:200]}",
                    code="resolver-unreachable",
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns/raises

    def _redirect_target(
        self,
        did: str,
        current: httpx.URL,
        response: httpx.Response,
        origin: tuple[str, int],
        hop: int,
    ) -> httpx.URL:
        if hop >= MAX_REDIRECTS:
            raise ResolutionError(
                f"more than {MAX_REDIRECTS} redirects resolving {did}", code="redirect-refused"
            )
        location = response.headers.get("location")
        if not location:
            raise ResolutionError(
                f"HTTP {response.status_code} without Location resolving {did}",
                code="redirect-refused",
            )
        try:
            nxt = current.join(location)
        except (httpx.InvalidURL, ValueError):
            raise ResolutionError(
                f"unparseable redirect Location resolving {did}", code="redirect-refused"
            ) from None
        if nxt.scheme != "https" or (nxt.host, nxt.port or 443) != origin:
            raise ResolutionError(
                f"redirect from {origin[0]}:{origin[1]} to {nxt.scheme}://{nxt.host}"
                f"{':' + str(nxt.port) if nxt.port else ''} refused resolving {did} "
                "(only same-origin https redirects are followed)",
                code="redirect-refused",
            )
        logger.debug("following redirect %d for %s to %s", hop + 1, did, nxt.path)
        return nxt

    async def _read_body(self, did: str, response: httpx.Response) -> bytes:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ResolutionError(
                f"DID document of {did} sent with Content-Encoding {encoding[:40]!r}, "
                "but identity was requested",
                code="document-invalid",
            )
        declared = (response.headers.get("content-length") or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared[:20]) > self._max_bytes:
            raise self._too_large(did)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self._max_bytes:
                raise self._too_large(did)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, did: str) -> ResolutionError:
        return ResolutionError(
            f"DID document of {did} exceeds {self._max_bytes} bytes",
            code="document-too-large",
        )
