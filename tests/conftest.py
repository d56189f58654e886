"""Shared test fixtures: where the shared conformance vectors live, deterministic keys."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dsip.core.identity import KeyPair

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO.parent / "shared" / "reference" / "dsip-v0.7" / "vectors"
NOW = 1_760_000_000


def vector_key(name: str) -> KeyPair:
    """The conformance fixtures' keys: Ed25519 seeded with sha256("dsip-vector:" + name).

    TEST FIXTURE ONLY — these private keys are public knowledge by construction.
    """
    return KeyPair.from_seed(hashlib.sha256(f"dsip-vector:{name}".encode()).digest())


@pytest.fixture
def alice() -> KeyPair:
    return vector_key("alice")


@pytest.fixture
def bob() -> KeyPair:
    return vector_key("bob")


@pytest.fixture
def mallory() -> KeyPair:
    return vector_key("mallory")


from tests.pgserver import postgres_url  # noqa: E402,F401 - the shared PostgreSQL fixture
from tests.relayfix import client_ssl, connect, local_ca, make_relay, relay  # noqa: E402,F401 - relay fixtures
