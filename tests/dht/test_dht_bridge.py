"""The asyncio ⇄ trio bridge: results, error mapping, timeouts, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import trio

from dsip.dht import DhtClosedError, DhtTimeoutError, DhtUnavailableError, TrioRuntime
from dsip.errors import EnvelopeError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def runtime():  # type: ignore[no-untyped-def]
    rt = TrioRuntime(name="test-trio")
    rt.start()
    yield rt
    rt.stop()


async def test_a_trio_coroutine_result_comes_back_to_asyncio(runtime: TrioRuntime) -> None:
    async def work(x: int) -> tuple[int, str]:
        await trio.sleep(0.01)  # only works inside trio
        return x * 2, threading.current_thread().name

    value, thread_name = await runtime.call(work, 21)
    assert value == 42
    assert thread_name == "test-trio"


async def test_dsip_errors_pass_through_unchanged(runtime: TrioRuntime) -> None:
    async def refuse() -> None:
        raise EnvelopeError("bad signature", code="signature-invalid")

    with pytest.raises(EnvelopeError) as info:
        await runtime.call(refuse)
    assert info.value.code == "signature-invalid"


async def test_other_errors_become_dht_unavailable(runtime: TrioRuntime) -> None:
    async def boom() -> None:
        raise OSError("connection refused")

    with pytest.raises(DhtUnavailableError) as info:
        await runtime.call(boom)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.code == "dht-unavailable"
    assert not info.value.remote


async def test_timeout_is_enforced_on_the_trio_side(runtime: TrioRuntime) -> None:
    cancelled = []

    async def slow() -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(True)
            raise

    t0 = time.monotonic()
    with pytest.raises(DhtTimeoutError):
        await runtime.call(slow, timeout=0.1)
    assert time.monotonic() - t0 < 2
    assert cancelled == [True]


async def test_cancelling_the_asyncio_task_cancels_the_trio_task(runtime: TrioRuntime) -> None:
    started, cancelled = asyncio.Event(), []
    loop = asyncio.get_running_loop()

    async def slow() -> None:
        loop.call_soon_threadsafe(started.set)
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(True)
            raise

    task = asyncio.create_task(runtime.call(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if cancelled:
            break
        await asyncio.sleep(0.01)
    assert cancelled == [True]


async def test_a_stopped_runtime_refuses_calls() -> None:
    rt = TrioRuntime()
    rt.start()
    rt.stop()
    rt.stop()  # idempotent

    async def work() -> int:
        return 1

    with pytest.raises(DhtClosedError):
        await rt.call(work)


async def test_stopping_cancels_calls_in_flight() -> None:
    rt = TrioRuntime()
    rt.start()

    async def forever() -> None:
        await trio.sleep_forever()

    task = asyncio.create_task(rt.call(forever))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(rt.stop)
    with pytest.raises(DhtClosedError):
        await asyncio.wait_for(task, 5)


async def test_the_shared_runtime_is_one_thread_reference_counted() -> None:
    a = TrioRuntime.acquire()
    b = TrioRuntime.acquire()
    assert a is b
    TrioRuntime.release(a)
    assert not a.closed
    TrioRuntime.release(b)
    assert a.closed
    c = TrioRuntime.acquire()
    assert c is not a
    TrioRuntime.release(c)


async def test_round_trip_overhead_is_small(runtime: TrioRuntime) -> None:
    async def noop() -> None:
        return None

    for _ in range(50):  # warm up
        await runtime.call(noop)
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        await runtime.call(noop)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 0.002  # measured ~50 µs; generous bound for loaded CI machines
