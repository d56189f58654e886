"""The asyncio ⇄ trio bridge: one trio thread per process, an asyncio-facing ``DhtClient``.

py-libp2p is written for trio; dsip's agent, relay and transports are asyncio. Rather than
run two event loops on one thread, each process starts **one** daemon thread running
``trio.run`` (:class:`TrioRuntime`), and every libp2p host of the process lives there (a
test may run twenty nodes on it; a service runs one).

How a call crosses (:meth:`TrioRuntime.call`), with no thread blocked on the asyncio side:

1. asyncio creates a ``Future`` and hands the trio thread a spawn request through
   ``TrioToken.run_sync_soon`` (thread-safe, wakes trio's loop);
2. the trio side starts the coroutine in the runtime's nursery, inside its own
   ``CancelScope`` and ``trio.fail_after(timeout)``;
3. the result or exception comes back through ``loop.call_soon_threadsafe``.

Cancelling the awaiting asyncio task cancels the trio scope (again via ``run_sync_soon``).
Errors are mapped once, here: a ``DsipError`` raised on the trio side (a validator verdict)
passes unchanged, ``trio.TooSlowError`` becomes :class:`DhtTimeoutError`, a runtime that is
shutting down gives :class:`DhtClosedError`, anything else from libp2p becomes
:class:`DhtUnavailableError` with the original chained. Overhead: two cross-thread wake-ups
per call, measured by ``bench/dht.py`` (the ``bridge round trip`` row) at tens of
microseconds, against DHT lookups of milliseconds.

trio's guest mode (trio running on top of asyncio's loop, same thread) was the alternative;
a dedicated thread keeps libp2p's CPU work and trio's scheduling out of the asyncio loop's
latency budget and lets uvloop run unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import trio

from dsip.core.presence import PresenceRecord, RecordValidator
from dsip.dht.node import (
    DhtClosedError,
    DhtError,
    DhtNode,
    DhtNodeConfig,
    DhtTimeoutError,
    DhtUnavailableError,
    Provider,
    RecordKey,
)
from dsip.errors import DsipError

__all__ = ["DhtClient", "LookupSource", "TrioRuntime"]

logger = logging.getLogger("dsip.dht")

T = TypeVar("T")


class TrioRuntime:
    """A trio event loop on a daemon thread; the process-wide one is :meth:`shared`."""

    _shared: ClassVar[TrioRuntime | None] = None
    _shared_users: ClassVar[int] = 0
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "dsip-trio") -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._closed = False
        self._failure: BaseException | None = None

    # --- process-wide instance, reference counted ---

    @classmethod
    def acquire(cls) -> TrioRuntime:
        """The shared runtime, started if needed; pair with :meth:`release`."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared._closed:
                cls._shared = cls()
                cls._shared.start()
            cls._shared_users += 1
            return cls._shared

    @classmethod
    def release(cls, runtime: TrioRuntime) -> None:
        """Drop one reference; the last one stops the thread."""
        with cls._shared_lock:
            if runtime is not cls._shared:
                return
            cls._shared_users -= 1
            if cls._shared_users > 0:
                return
            cls._shared = None
        runtime.stop()

    # --- lifecycle ---

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._thread_main, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._token is None:
            raise DhtUnavailableError(f"trio runtime did not start: {self._failure!r}")

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported through start() and call()
            self._failure = exc
            logger.exception("trio runtime crashed")
        finally:
            self._closed = True
            self._ready.set()

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything running on the thread and join it (idempotent)."""
        if self._closed or self._token is None or self._stop is None:
            self._closed = True
            return
        self._closed = True
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._stop.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- crossing ---

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout: float | None = None,
    ) -> T:
        """Run ``await fn(*args)`` on the trio thread and await its result from asyncio."""
        if self._closed or self._token is None:
            raise DhtClosedError("the trio runtime is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        scope = trio.CancelScope()

        def deliver(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def post(outcome: Callable[[], None]) -> None:
            with contextlib.suppress(RuntimeError):  # the asyncio loop is already closed
                loop.call_soon_threadsafe(deliver, outcome)

        async def runner() -> None:
            posted = False
            try:
                with scope:
                    try:
                        if timeout is None:
                            result = await fn(*args)
                        else:
                            with trio.fail_after(timeout):
                                result = await fn(*args)
                    except Exception as exc:
                        err = _map_error(exc)
                        post(lambda: future.set_exception(err))
                    else:
                        post(lambda: future.set_result(result))
                    posted = True
            finally:
                if not posted:  # cancelled: by the asyncio side or by stop()
                    closed = DhtClosedError("the call was cancelled on the trio side")
                    post(lambda: future.set_exception(closed))

        def spawn() -> None:
            if self._nursery is None or self._closed:
                err = DhtClosedError("the trio runtime is closed")
                loop.call_soon_threadsafe(deliver, lambda: future.set_exception(err))
                return
            self._nursery.start_soon(runner)

        try:
            self._token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise DhtClosedError("the trio runtime is closed") from None
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope.cancel)
            raise

    def run_sync(self, fn: Callable[[], T]) -> None:
        """Schedule a synchronous ``fn`` on the trio thread (fire and forget)."""
        if self._token is not None and not self._closed:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(fn)


def _map_error(exc: Exception) -> DsipError:
    if isinstance(exc, DsipError):
        return exc
    if isinstance(exc, trio.TooSlowError):
        return DhtTimeoutError("the DHT operation timed out")
    err = DhtUnavailableError(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


async def _noop() -> None:
    return None


class DhtClient:
    """Asyncio handle on one :class:`DhtNode` running on the process's trio thread.

    ``get`` returns raw values for the caller's own §8.3 selection; ``resolve`` and
    ``resolve_region`` are that selection, done with this client's :class:`RecordValidator`
    (a reader never trusts what a node — its own included — returned).
    """

    def __init__(self, node: DhtNode, runtime: TrioRuntime, *, shared: bool) -> None:
        self.node = node
        self.runtime = runtime
        self._shared = shared
        self._done: trio.Event | None = None
        self._closed = False

    @classmethod
    async def start(
        cls,
        config: DhtNodeConfig | None = None,
        *,
        validator: RecordValidator | None = None,
        runtime: TrioRuntime | None = None,
        clock: Callable[[], int] | None = None,
    ) -> DhtClient:
        """Create a node on ``runtime`` (default: the shared one), listening and bootstrapped."""
        shared = runtime is None
        rt = TrioRuntime.acquire() if runtime is None else runtime
        try:
            kwargs: dict[str, Any] = {"validator": validator}
            if clock is not None:
                kwargs["clock"] = clock
            node = DhtNode(config, **kwargs)
            client = cls(node, rt, shared=shared)
            await rt.call(client._start_on_trio, timeout=node.config.op_timeout_s * 2)
        except BaseException:
            if shared:
                TrioRuntime.release(rt)
            raise
        return client

    async def _start_on_trio(self) -> None:
        assert self.runtime._nursery is not None
        self._done = trio.Event()

        async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await self.node.serve(task_status=task_status)
            finally:
                assert self._done is not None
                self._done.set()

        await self.runtime._nursery.start(serve)

    # --- identity ---

    @property
    def peer_id(self) -> str:
        return self.node.peer_id

    @property
    def addrs(self) -> list[str]:
        return self.node.addrs

    @property
    def validator(self) -> RecordValidator:
        return self.node.records

    def _timeout(self, timeout: float | None) -> float:
        return self.node.config.op_timeout_s if timeout is None else timeout

    @staticmethod
    def _key(key: RecordKey | bytes | str) -> RecordKey:
        return key if isinstance(key, RecordKey) else RecordKey.parse(key)

    # --- operations ---

    async def put(
        self, key: RecordKey | bytes | str, value: bytes, *, timeout: float | None = None
    ) -> int:
        """Store ``value`` at the closest peers; returns how many acknowledged."""
        self._check_open()
        return await self.runtime.call(
            self.node.put, self._key(key), bytes(value), timeout=self._timeout(timeout)
        )

    async def get(
        self,
        key: RecordKey | bytes | str,
        *,
        quorum: int | None = None,
        timeout: float | None = None,
    ) -> list[bytes]:
        """Every distinct value found for ``key`` (local store and the closest peers).

        ``quorum``: stop once that many peers returned a value (default: the node
        config's: 3; 0 = ask all ``k`` closest).
        """
        self._check_open()
        return await self.runtime.call(
            self.node.get, self._key(key), quorum, timeout=self._timeout(timeout)
        )

    async def resolve(
        self,
        did: str,
        *,
        now: int | None = None,
        quorum: int | None = None,
        timeout: float | None = None,
    ) -> PresenceRecord | None:
        """The §8.3 winner among the re-verified presence records for ``did`` (or ``None``)."""
        key = RecordKey.presence(did)
        values = await self.get(key, quorum=quorum, timeout=timeout)
        return self.node.records.best(key.validator_key, values, now=self._now(now))

    async def resolve_region(
        self,
        geohash_prefix: str,
        *,
        now: int | None = None,
        quorum: int | None = 0,
        repair: bool = True,
        timeout: float | None = None,
    ) -> list[PresenceRecord]:
        """Every valid entry of a region bucket, merged over all values found.

        A bucket is a set that storing nodes build by merging, and a PUT that failed at one
        of the ``k`` closest leaves that node with a subset. So the read asks every one of
        the ``k`` closest (``quorum=0``; a presence read can stop at 3 copies, a set read
        cannot) and takes the union. With ``repair`` (default), when the peers disagreed
        the merged bucket is written back to them — each entry is still a signed record the
        storing nodes re-verify, so the repair adds nothing a node would not accept from
        the publishers themselves.
        """
        key = RecordKey.region(geohash_prefix)
        at = self._now(now)
        values = await self.get(key, quorum=quorum, timeout=timeout)
        records = self.node.records
        members = records.region_members(key.validator_key, values, now=at)
        if repair and len(values) > 1 and members:
            merged = records.merge_region(key.validator_key, values, now=at)
            try:
                await self.put(key, merged, timeout=timeout)
            except DhtError as exc:  # the read itself succeeded; repair is best effort
                logger.info("region read-repair of %s failed: %s", geohash_prefix, exc)
        return members

    async def provide(self, key: RecordKey | bytes | str, *, timeout: float | None = None) -> bool:
        """Announce this node as a provider for ``key``."""
        self._check_open()
        return await self.runtime.call(
            self.node.provide, self._key(key), timeout=self._timeout(timeout)
        )

    async def get_providers(
        self, key: RecordKey | bytes | str, *, count: int = 20, timeout: float | None = None
    ) -> list[Provider]:
        """Provider records for ``key`` (peers, not DIDs)."""
        self._check_open()
        return await self.runtime.call(
            self.node.get_providers, self._key(key), count, timeout=self._timeout(timeout)
        )

    async def bootstrap(self, addrs: Sequence[str], *, timeout: float | None = None) -> int:
        """Join through ``addrs``; returns how many answered."""
        self._check_open()
        return await self.runtime.call(
            self.node.bootstrap, list(addrs), timeout=self._timeout(timeout)
        )

    async def ping_bridge(self) -> None:
        """A no-op round trip through the bridge (what ``bench/dht.py`` times)."""
        await self.runtime.call(_noop)

    def _now(self, now: int | None) -> int:
        return self.node.clock() if now is None else now

    def _check_open(self) -> None:
        if self._closed:
            raise DhtClosedError("this DhtClient is closed")

    # --- shutdown ---

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the node and wait until its host is down; releases the shared runtime."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.runtime.closed:
                await self.runtime.call(self._close_on_trio, timeout=timeout)
        except DhtError as exc:
            logger.warning("closing DHT node %s: %s", self.peer_id, exc)
        finally:
            if self._shared:
                TrioRuntime.release(self.runtime)

    async def _close_on_trio(self) -> None:
        self.node.close()
        if self._done is not None:
            await self._done.wait()

    async def __aenter__(self) -> DhtClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class LookupSource:
    """``client`` as the DHT of :class:`dsip.agent.lookup.Lookup`.

    The lookup asks by the 32-byte presence digest of seed §21.C and verifies and selects
    the values itself; this maps the digest to the DHT's ``/dsip/`` record key.
    """

    def __init__(self, client: DhtClient) -> None:
        self.client = client

    async def get(self, key: bytes) -> list[bytes]:
        return await self.client.get(RecordKey("presence", bytes(key)))
