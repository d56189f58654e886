"""Interop with js-libp2p (``libp2p`` + ``@libp2p/kad-dht`` from npm, interop/js/).

Both sides speak ``/ipfs/kad/1.0.0`` and know the ``/dsip/`` namespace. The js node cannot
verify DSIP records (no DSIP-JOSE in js here): its validator checks the envelope's shape
and accepts what it cannot verify, which is why dsip readers re-verify everything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dsip.core.identity import KeyPair
from dsip.dht import DhtClient, DhtNodeConfig, RecordKey
from tests.dht.dhtfix import REPO, frame, swarm

JS_DIR = REPO / "interop" / "js"
pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]


def _js_ready() -> str | None:
    """``None`` when the js node can run, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS_DIR / "node_modules" / "@libp2p" / "kad-dht").exists():
        if shutil.which("npm") is None:
            return "npm is not installed (needed for interop/js)"
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            return f"npm ci failed in interop/js: {result.stderr[-400:]!r}"
    return None


class JsNode:
    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.peer_id: str = ready["peerId"]
        self.addr: str = ready["addrs"][0]
        self._ids = itertools.count(1)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        cmd_id = next(self._ids)
        self.proc.stdin.write((json.dumps({"id": cmd_id, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the js node exited")
            reply = json.loads(line)
            if reply.get("id") == cmd_id:
                if not reply["ok"]:
                    raise RuntimeError(reply["error"])
                return reply  # type: ignore[no-any-return]

    async def put(self, key: RecordKey, value: bytes) -> int:
        reply = await self.call(
            "put", key=key.wire.decode(), value=base64.b64encode(value).decode()
        )
        return int(reply["stored"])

    async def get(self, key: RecordKey) -> list[bytes]:
        reply = await self.call("get", key=key.wire.decode())
        return [base64.b64decode(v) for v in reply["values"]]


@contextlib.asynccontextmanager
async def js_node(*bootstrap: str) -> AsyncIterator[JsNode]:
    reason = _js_ready()
    if reason is not None:
        pytest.skip(reason)
    args = ["node", "dht-node.mjs", "--listen", "/ip4/127.0.0.1/tcp/0"]
    for addr in bootstrap:
        args += ["--bootstrap", addr]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        assert ready["event"] == "ready"
        yield JsNode(proc, ready)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)


async def _until(fn: Any, timeout: float = 20) -> Any:
    """Retry ``fn`` until it returns something truthy (routing tables fill asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await fn()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.25)


async def test_js_node_fetches_a_record_published_by_dsip() -> None:
    async with swarm(2) as nodes, js_node(nodes[0].addrs[0]) as js:
        await nodes[1].bootstrap([js.addr])
        alice = KeyPair.generate()
        key = RecordKey.presence(alice.did)
        value = frame(alice)
        acks = await _until(lambda: nodes[1].put(key, value))
        assert acks == 2  # the other dsip node and the js node
        values = await js.get(key)
        assert value in values
        # what js fetched is the dsip record, byte for byte, and it verifies
        record = nodes[0].validator.best(key.validator_key, values, now=nodes[0].node.clock())
        assert record is not None
        assert record.subject == alice.did


async def test_dsip_node_fetches_a_record_published_by_js() -> None:
    async with swarm(2) as nodes, js_node(nodes[0].addrs[0], nodes[1].addrs[0]) as js:
        bob = KeyPair.generate()
        key = RecordKey.presence(bob.did)
        value = frame(bob)
        stored = await _until(lambda: js.put(key, value))
        assert stored >= 1
        reader = await DhtClient.start(DhtNodeConfig(server=False, bootstrap=(js.addr,)))
        try:
            record = await reader.resolve(bob.did)
            assert record is not None
            assert record.frame.encode() == value
            # the dsip storing nodes verified js's PUT and stored it
            assert any(n.node.raw_local(key) == value for n in nodes)
        finally:
            await reader.close()


async def test_a_forged_record_put_by_js_is_refused_by_dsip_nodes() -> None:
    async with swarm(2) as nodes, js_node(nodes[0].addrs[0], nodes[1].addrs[0]) as js:
        alice, mallory = KeyPair.generate(), KeyPair.generate()
        key = RecordKey.presence(alice.did)
        forged = frame(mallory, subject=alice.did)
        await js.put(key, forged)  # js accepts what it cannot verify, and stores it
        assert forged in await js.get(key)
        assert all(n.node.raw_local(key) is None for n in nodes)  # dsip nodes refused it
        reader = await DhtClient.start(DhtNodeConfig(server=False, bootstrap=(js.addr,)))
        try:
            assert forged in await reader.get(key)  # served by js ...
            assert await reader.resolve(alice.did) is None  # ... and ignored
        finally:
            await reader.close()
