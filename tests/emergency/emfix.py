"""Fixtures for emergency end-to-end tests: a test CA naming ``911.us``, the namespace's
did:web host, a relay that records every frame it receives and sends, resolvers that pin
``911.us`` to loopback."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsip.agent.calls import CallAgent
from dsip.agent.emergency import EmergencySignalingClient, PinnedHosts
from dsip.agent.resolver import DidResolver
from dsip.config import RelayConfig
from dsip.core.emergency.certification import Level, issue_certification
from dsip.core.emergency.geo import FileKeyStore, Fix
from dsip.core.emergency.psap_policy import PsapPolicy
from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair, did_web_document
from dsip.core.session import FirstContactPolicy
from dsip.media.tone import ToneTrack
from dsip.media.webrtc import WebRtcMedia
from dsip.services.localca import LocalCA
from dsip.services.psap import NamespaceHost, PsapService
from dsip.services.relay import Relay
from dsip.storage import open_store

HOSTS = ("localhost", "127.0.0.1", "911.us")
LAT_E7, LON_E7 = 427460000, -737590000
SECRET_MARKERS = ("427460000", "-737590000", "42.746", "73.759")


def albany_fix() -> Fix:
    return Fix(lat=42.746, lon=-73.759, accuracy=5, method="gps", timestamp=int(time.time()) - 1)


class RecordingRelay(Relay):
    """A real relay that also keeps every frame it received and every frame it queued."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire: list[str | bytes] = []

    async def _on_frame(self, peer: Any, frame: str | bytes) -> None:
        self.wire.append(frame)
        await super()._on_frame(peer, frame)

    def _enqueue(self, peer: Any, frame: str | bytes) -> None:
        self.wire.append(frame)
        super()._enqueue(peer, frame)

    async def _deliver(self, target: Any, frame: str | bytes, *, urgent: bool = False) -> None:
        self.wire.append(frame)
        await super()._deliver(target, frame, urgent=urgent)


def decoded_text(frame: str | bytes) -> str:
    """Everything readable in a JOSE frame: the frame text plus its decoded payload."""
    text = frame.decode("latin-1") if isinstance(frame, bytes) else frame
    try:
        payload = json.loads(text)["payload"]
        text += base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode("utf-8")
    except (ValueError, KeyError, TypeError):
        pass
    return text


@dataclass
class World:
    ca: LocalCA
    host: NamespaceHost
    relay: RecordingRelay
    psap_key: KeyPair
    certifier: KeyPair
    tmp: Path
    resolvers: list[DidResolver] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)

    @property
    def psap_did(self) -> str:
        return self.psap_key.did

    @property
    def relay_uri(self) -> str:
        return f"wss://localhost:{self.relay.ws_port}/dsip"

    def resolver(self) -> DidResolver:
        client = httpx.AsyncClient(
            transport=PinnedHosts({"911.us": "127.0.0.1"}, verify=self.ca.client_context())
        )
        r = DidResolver(client=client)
        self.resolvers.append(r)
        self.closers.append(client)
        return r

    async def psap(self, **kw: Any) -> PsapService:
        kw.setdefault("policy", PsapPolicy(trusted_certifiers=frozenset({self.certifier.did})))
        svc = PsapService(self.psap_key, resolver=self.resolver(), **kw)
        await svc.start(self.relay_uri, ssl_context=self.ca.client_context())
        self.closers.append(svc)
        return svc

    async def caller(
        self, *, first_contact: bool = False, level: Level | None = Level.GOLD
    ) -> tuple[CallAgent, KeyPair, FileKeyStore, list[dict[str, Any]], DidResolver]:
        key = KeyPair.generate()
        resolver = self.resolver()
        client = EmergencySignalingClient(
            key, verifier=Verifier(resolver.cached), resolver=resolver
        )
        await client.connect(self.relay_uri, ssl_context=self.ca.client_context(), timeout=5)
        agent = CallAgent(client, policy=FirstContactPolicy(first_contact_required=first_contact))
        await agent.start()
        self.closers.append(agent)
        device = FileKeyStore.open(self.tmp / f"device-{len(self.closers)}.key")
        now = int(time.time())
        creds = (
            []
            if level is None
            else [
                issue_certification(
                    self.certifier, device.did, level, now=now - 10, keystore="file"
                )
            ]
        )
        return agent, key, device, creds, resolver


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    ca = LocalCA.create(HOSTS)
    host = NamespaceHost(ca, "911.us").start()
    psap_key0 = KeyPair.generate()
    did = f"did:web:911.us%3A{host.port}"
    psap_key = KeyPair(psap_key0.private_key, f"{did}#key-1")
    host.publish(did, did_web_document(did, [("key-1", psap_key0.public_key_multibase)]))
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp_path}/relay.db")
    w = World(ca, host, None, psap_key, KeyPair.generate(), tmp_path)  # type: ignore[arg-type]
    relay_resolver = w.resolver()
    cfg = cfg.with_overrides(invites_per_minute=2)
    relay = RecordingRelay(
        cfg,
        KeyPair.generate(),
        await open_store(cfg.store),
        resolver=relay_resolver,
        server_ssl=ca.server_context(),
        first_contact=lambda v: (
            "policy.first-contact-required" if v.type == "invite" else None
        ),  # a relay that gates every first contact: emergency invites pass anyway
    )
    await relay.start()
    w.relay = relay
    try:
        yield w
    finally:
        for c in reversed(w.closers):
            close = getattr(c, "close", None) or c.aclose
            with contextlib.suppress(Exception):  # teardown best effort
                await close()
        await relay.stop()
        host.close()


def tone_media(freq: float) -> WebRtcMedia:
    return WebRtcMedia(audio=ToneTrack(freq))


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    from dsip.media.webrtc import loopback_only

    loopback_only(True)
    yield
    loopback_only(False)
