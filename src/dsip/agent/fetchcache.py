"""The caching and single-flight machinery the DID resolver and the alias resolver share.

Both look a key up over the network and then:

* cache an answer until its expiry and a failure for ``negative_ttl`` seconds (0: never), a
  cached failure being raised as a fresh exception each time (no traceback build-up);
* bound both caches to ``max_entries``, evicting the oldest insertion first;
* run at most one lookup per key at a time: concurrent callers await the same task, and one
  caller giving up (cancelled, timed out) does not cancel it for the others;
* own their ``httpx.AsyncClient`` unless one was handed in, closing it in :meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Self, TypeVar

import httpx

from dsip.errors import ResolutionError

__all__ = ["FetchCache"]

V = TypeVar("V")


class FetchCache(Generic[V]):
    """Base of a resolver whose answers are ``V``, keyed by string."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None,
        verify: ssl.SSLContext | bool,
        timeout: float,
        negative_ttl: int,
        clock: Callable[[], float],
        max_entries: int,
    ) -> None:
        self._client = client
        self._owns_client = client is None
        self._verify = verify
        self._timeout = timeout
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._max_entries = max_entries
        self._cache: dict[str, tuple[V, float]] = {}
        self._negative: dict[str, tuple[ResolutionError, float]] = {}
        self._inflight: dict[str, asyncio.Task[V]] = {}

    def _fresh(self, key: str) -> V | None:
        """The cached answer for ``key``; raises its cached failure; None: ask the network."""
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and now < hit[1]:
            return hit[0]
        miss = self._negative.get(key)
        if miss is not None and now < miss[1]:
            err = miss[0]
            raise ResolutionError(err.message, code=err.code, reason=err.reason, remote=err.remote)
        return None

    async def _single_flight(
        self, key: str, lookup: Callable[[], Coroutine[Any, Any, V]], name: str
    ) -> V:
        """Await the lookup in flight for ``key``, starting ``lookup()`` if there is none."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(lookup(), name=name)
            task.add_done_callback(self._done(key))
            self._inflight[key] = task
        return await asyncio.shield(task)

    def _done(self, key: str) -> Callable[[asyncio.Task[V]], None]:
        def done(task: asyncio.Task[V]) -> None:
            if self._inflight.get(key) is task:
                del self._inflight[key]
            if not task.cancelled():
                task.exception()  # retrieved: no "never retrieved" warning if nobody waited

        return done

    def _forget(self, key: str) -> None:
        self._cache.pop(key, None)
        self._negative.pop(key, None)

    def _store(self, key: str, value: V, expires: float) -> None:
        self._negative.pop(key, None)
        self._cache.pop(key, None)
        self._cache[key] = (value, expires)
        while len(self._cache) > self._max_entries:  # oldest insertion first
            del self._cache[next(iter(self._cache))]

    def _store_failure(self, key: str, err: ResolutionError) -> None:
        if self._negative_ttl <= 0:
            return
        self._negative.pop(key, None)
        self._negative[key] = (err, self._clock() + self._negative_ttl)
        while len(self._negative) > self._max_entries:
            del self._negative[next(iter(self._negative))]

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._verify, timeout=httpx.Timeout(self._timeout), follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        """Cancel lookups in flight and close the HTTP client if we created it."""
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
