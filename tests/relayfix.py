"""Fixtures for relay tests: a local CA, a relay on 127.0.0.1 with a SQLite store, clients."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store


@pytest.fixture(scope="session")
def local_ca() -> LocalCA:
    return LocalCA.create()


@pytest.fixture
def client_ssl(local_ca: LocalCA) -> ssl.SSLContext:
    return local_ca.client_context()


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(tmp_path: Path, local_ca: LocalCA) -> AsyncIterator[RelayFactory]:
    relays: list[Relay] = []

    async def factory(**overrides: object) -> Relay:
        cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp_path}/relay-{len(relays)}.db")
        cfg = cfg.with_overrides(**overrides)
        store = await open_store(cfg.store)
        relay = Relay(cfg, KeyPair.generate(), store, server_ssl=local_ca.server_context())
        await relay.start()
        relays.append(relay)
        return relay

    yield factory
    for relay in relays:
        await relay.stop()


@pytest.fixture
async def relay(make_relay: RelayFactory) -> Relay:
    return await make_relay()


def relay_uri(relay: Relay) -> str:
    return f"wss://localhost:{relay.ws_port}/dsip"


ClientFactory = Callable[..., Awaitable[SignalingClient]]


@pytest.fixture
async def connect(relay: Relay, client_ssl: ssl.SSLContext) -> AsyncIterator[ClientFactory]:
    clients: list[SignalingClient] = []

    async def factory(device: KeyPair | None = None, **kw: object) -> SignalingClient:
        client = SignalingClient(device or KeyPair.generate(), verifier=Verifier(), **kw)  # type: ignore[arg-type]
        await client.connect(relay_uri(relay), ssl_context=client_ssl, timeout=5)
        clients.append(client)
        return client

    yield factory
    for c in clients:
        await c.close()
