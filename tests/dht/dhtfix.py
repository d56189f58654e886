"""Helpers for the DHT tests: in-process swarms, node processes, raw libp2p peers.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
import varint
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE, PROTOCOL_ID, format_time_rfc3339
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.pb.kademlia_pb2 import Message, Record
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.records.validator import BlankValidator
from libp2p.tools.anyio_service import background_trio_service
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from dsip.core.identity import KeyPair
from dsip.core.presence import make_presence
from dsip.dht import DhtClient, DhtNodeConfig, TrioRuntime

REPO = Path(__file__).resolve().parents[2]
WS = {"ws": ["wss://relay.example/dsip"]}


def now() -> int:
    return int(time.time())


def frame(
    key: KeyPair,
    *,
    seq: int | None = None,
    at: int | None = None,
    ttl: int = 60,
    geohash: str | None = None,
    subject: str | None = None,
    delegations: Sequence[dict[str, str]] = (),
    endpoints: dict[str, list[str]] | None = None,
) -> bytes:
    t = now() if at is None else at
    return make_presence(
        key,
        subject=subject,
        endpoints=endpoints or WS,
        seq=t if seq is None else seq,
        now=t,
        ttl=ttl,
        geohash=geohash,
        delegations=delegations,
    ).encode()


class ManualClock:
    """Integer seconds that move only when a test says so; ``sleep`` waits for them."""

    def __init__(self, start: int) -> None:
        self.t = start
        self._cond = asyncio.Condition()

    def __call__(self) -> int:
        return self.t

    async def sleep(self, seconds: float) -> None:
        target = self.t + seconds
        async with self._cond:
            await self._cond.wait_for(lambda: self.t >= target)

    async def advance(self, seconds: int) -> None:
        self.t += seconds
        async with self._cond:
            self._cond.notify_all()


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


# --- in-process swarms ---------------------------------------------------------------------


async def start_swarm(
    n: int, *, bootstrap_count: int = 2, clock: Callable[[], int] | None = None, **config: Any
) -> list[DhtClient]:
    """``n`` server nodes on the shared trio thread, each bootstrapped to the first ones."""
    first = await DhtClient.start(DhtNodeConfig(**config), clock=clock)
    nodes = [first]
    boots = [first.addrs[0]]
    for i in range(1, n):
        node = await DhtClient.start(DhtNodeConfig(bootstrap=tuple(boots), **config), clock=clock)
        nodes.append(node)
        if i < bootstrap_count:
            boots.append(node.addrs[0])
    # a second self-lookup once everyone is up, so early nodes learn late ones
    await asyncio.gather(*(node.bootstrap(boots) for node in nodes))
    return nodes


async def close_all(nodes: Sequence[DhtClient]) -> None:
    await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)


@contextlib.asynccontextmanager
async def swarm(
    n: int, *, clock: Callable[[], int] | None = None, **config: Any
) -> AsyncIterator[list[DhtClient]]:
    nodes = await start_swarm(n, clock=clock, **config)
    try:
        yield nodes
    finally:
        await close_all(nodes)


# --- raw libp2p: a plain py-libp2p peer with no dsip code at all ---------------------------


class RawPeer:
    """A py-libp2p host + KadDHT that validates nothing (accepts any dsip-namespace value).

    It plays the attacker (raw PUT_VALUE calls that bypass dsip's publisher) and the bad
    storing node (serves whatever was put in its store).
    """

    def __init__(self) -> None:
        self.host: IHost = new_host(
            key_pair=create_new_key_pair(),
            listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],
        )
        self.dht = KadDHT(self.host, DHTMode.SERVER)
        for ns in ("dsip", "dsipg", "dsiph"):
            self.dht.register_validator(ns, BlankValidator())
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    @property
    def addr(self) -> str:
        text = str(self.host.get_addrs()[0])
        own = f"/p2p/{self.host.get_id()}"
        return text if text.endswith(own) else text + own

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                async with (
                    self.host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]),
                    background_trio_service(self.dht),
                ):
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._done.set()

    async def stop(self) -> None:
        self._scope.cancel()
        await self._done.wait()

    async def connect(self, addr: str) -> None:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await self.host.connect(info)

    async def raw_put(self, addr: str, key: bytes, value: bytes) -> bool:
        """One PUT_VALUE straight onto a libp2p stream; True if the node echoed it."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await self.host.connect(info)
        msg = Message()
        msg.type = Message.MessageType.PUT_VALUE
        msg.key = key
        msg.record.key = key
        msg.record.value = value
        stream = await self.host.new_stream(info.peer_id, [PROTOCOL_ID])
        try:
            data = msg.SerializeToString()
            await stream.write(varint.encode(len(data)) + data)
            with trio.fail_after(5):
                raw = await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE)
        except Exception:  # the node reset the stream: refused
            return False
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
        resp = Message()
        resp.ParseFromString(raw)
        return resp.type == Message.MessageType.PUT_VALUE and resp.key == key

    def hold(self, key: bytes, value: bytes) -> None:
        """Put ``value`` in this peer's own store, as a bad storing node would."""
        record = Record()
        record.key = key
        record.value = value
        record.timeReceived = format_time_rfc3339()
        self.dht.value_store.put_record(key, record)


@contextlib.asynccontextmanager
async def raw_peer() -> AsyncIterator[tuple[RawPeer, TrioRuntime]]:
    runtime = TrioRuntime.acquire()
    peer = RawPeer()

    async def start() -> None:
        assert runtime._nursery is not None
        await runtime._nursery.start(peer.serve)

    try:
        await runtime.call(start, timeout=10)
        yield peer, runtime
    finally:
        await runtime.call(peer.stop, timeout=10)
        TrioRuntime.release(runtime)


# --- node processes (``dsip dht-node``) ----------------------------------------------------


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    ready_file: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return str(self.info["addrs"][0])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn_node(
    tmp: Path, name: str, bootstrap: Sequence[str] = (), *, extra: Sequence[str] = ()
) -> NodeProcess:
    ready = tmp / f"{name}.json"
    cmd = [sys.executable, "-m", "dsip.cli.dht", "dht-node", "--ready-file", str(ready)]
    for addr in bootstrap:
        cmd += ["--bootstrap", addr]
    cmd += list(extra)
    log = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return NodeProcess(proc, ready)


async def wait_ready(nodes: Sequence[NodeProcess], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for node in nodes:
        while not node.ready_file.exists():
            if node.proc.poll() is not None:
                raise RuntimeError(f"dht-node exited with {node.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("dht-node did not become ready")
            await asyncio.sleep(0.05)
        node.info = json.loads(node.ready_file.read_text())


async def spawn_network(tmp: Path, n: int) -> list[NodeProcess]:
    """``n`` node processes: two seeds first, then the rest bootstrapped to both."""
    seeds = [spawn_node(tmp, "node0")]
    await wait_ready(seeds)
    seeds.append(spawn_node(tmp, "node1", [seeds[0].addr]))
    await wait_ready(seeds)
    boot = [s.addr for s in seeds]
    rest = [spawn_node(tmp, f"node{i}", boot) for i in range(2, n)]
    await wait_ready(rest)
    return seeds + rest


def stop_network(nodes: Sequence[NodeProcess]) -> None:
    for node in nodes:
        node.terminate()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
