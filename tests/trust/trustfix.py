"""Shared trust fixtures: did:web issuers with documents, a caller, a status list, a clock.

TEST FIXTURE ONLY — the keys are derived from public seeds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from dsip.core.identity import KeyPair, StaticDocuments, did_web_document
from dsip.core.trust.vc import BitstringStatusList, issue_status_list_credential

NOW = 1_760_000_000
DAY = 86_400
VOICE = "did:web:voice.net"
TRUSTGRAPH = "did:web:trustgraph.org"
ACME = "did:web:acme.example"
REGISTRY = "did:web:registry.example"
PAYER = "did:web:pay.example"
LISTS = "did:web:lists.example"
STATUS_URL = "https://voice.net/status/1"


def web_key(did: str, fragment: str = "key-1") -> KeyPair:
    seed = hashlib.sha256(f"dsip-trust-test:{did}#{fragment}".encode()).digest()
    return KeyPair.from_seed(seed, f"{did}#{fragment}")


def seed_key(name: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(f"dsip-trust-test:{name}".encode()).digest())


@dataclass
class World:
    """Issuers (did:web with published documents), a caller and a callee (did:key)."""

    voice: KeyPair = field(default_factory=lambda: web_key(VOICE))
    trustgraph: KeyPair = field(default_factory=lambda: web_key(TRUSTGRAPH))
    acme: KeyPair = field(default_factory=lambda: web_key(ACME))
    registry: KeyPair = field(default_factory=lambda: web_key(REGISTRY))
    payer: KeyPair = field(default_factory=lambda: web_key(PAYER))
    lists: KeyPair = field(default_factory=lambda: web_key(LISTS))
    caller: KeyPair = field(default_factory=lambda: seed_key("caller"))
    callee: KeyPair = field(default_factory=lambda: seed_key("callee"))
    mallory: KeyPair = field(default_factory=lambda: seed_key("mallory"))
    documents: StaticDocuments = field(default_factory=StaticDocuments)
    status: BitstringStatusList = field(default_factory=BitstringStatusList)

    def __post_init__(self) -> None:
        for key in (self.voice, self.trustgraph, self.acme, self.registry, self.payer, self.lists):
            doc = did_web_document(key.did, [("key-1", key.public_key_multibase)])
            self.documents.add(key.did, doc)

    @property
    def issuers(self) -> dict[str, list[str]]:
        return {
            "DisplayNameCredential": [VOICE],
            "ReputationScore": [TRUSTGRAPH],
            "RoleCredential": [ACME],
            "OrganizationCredential": [REGISTRY],
        }

    def status_list_credential(self, *, now: int = NOW) -> dict[str, Any] | str:
        return issue_status_list_credential(self.voice, STATUS_URL, self.status, now=now)

    def status_source(self, *, now: int = NOW) -> Any:
        published = self.status_list_credential(now=now)
        return {STATUS_URL: published}.get
