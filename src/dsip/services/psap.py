"""``dsip psap``: a Public Safety Answering Point on DSIP (seed §19; profile emergency/1.0).

The PSAP is an emergency namespace identity (``did:web:911.us``) bound at a relay like any
device. For each incoming invite it:

1. opens the sealed ``emergency`` content with its key-agreement key (only it can);
2. verifies caller DID (the envelope pipeline already did), the dual-signed geo-attestation
   (``seq`` per caller must increase), and the device's certification credentials
   (:func:`~dsip.core.emergency.psap_policy.assess_emergency_call`);
3. under the default policy accepts every emergency call and *flags* what did not verify;
   under ``strict`` rejects with the ``x-emergency.*`` reason (see ``docs/profiles.md``);
4. rings and queues it (:class:`CallQueue`: emergency first, then arrival);
5. hands it to the call taker: :meth:`PsapService.answer_next` answers with aiortc media
   (a tone generator stands in for the call taker's microphone and a detector for their
   ear), and :attr:`PsapService.board` is what the call taker's screen shows — verified
   location, tier, certification level and flags.

:meth:`PsapService.callback` rings a caller back; its invite carries
``priority: "emergency"`` from the emergency identity, so relays exempt it, and the caller's
agent lets it past first contact within its callback window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsip.agent.calls import Call, CallAgent
from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient
from dsip.core.emergency.alerts import alert_payload, alert_stream, baseline_payload
from dsip.core.emergency.errors import EmergencyError
from dsip.core.emergency.privacy import open_precise
from dsip.core.emergency.psap_policy import (
    CallAssessment,
    CallQueue,
    PsapPolicy,
    assess_emergency_call,
)
from dsip.core.envelope import Verified, Verifier, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.session import Send
from dsip.core.subscription import (
    AuthorityEngine,
    PolicyMode,
    SendNotify,
    SubscriptionPolicy,
)
from dsip.errors import DsipError
from dsip.services.didweb_host import DidWebHost
from dsip.services.localca import LocalCA

__all__ = [
    "NamespaceHost",
    "PsapCall",
    "PsapService",
    "demo_emergency",
    "describe",
    "install_ng911",
]

logger = logging.getLogger("dsip.psap")

MediaFactory = Callable[[], Any]
"""Builds the call taker's media side (a ``dsip.media.webrtc.WebRtcMedia``)."""


class NamespaceHost(DidWebHost):
    """A did:web host for one emergency namespace name (``911.us``) served on loopback:
    ``did:web:911.us%3A<port>``. The TLS certificate must name the host (``LocalCA.create``
    with it); clients reach it through :class:`~dsip.agent.emergency.PinnedHosts`."""

    def __init__(self, ca: LocalCA, name: str) -> None:
        super().__init__(ca)
        self.name = name

    @property
    def authority(self) -> str:
        return f"{self.name}:{self.port}"


class _PsapSignaling(SignalingClient):
    """Every invite a PSAP places is an emergency callback (relay priority, no gates);
    ``subscribe`` requests for its warning streams go to ``divert``, not to the calls."""

    divert: Callable[[Verified], Awaitable[None]] | None = None

    async def send(self, payload: Mapping[str, Any]) -> None:
        if payload.get("type") == "invite" and isinstance(payload, dict):
            payload["priority"] = "emergency"
        await super().send(payload)

    async def recv(self, timeout: float | None = None) -> Verified:
        while True:
            v = await super().recv(timeout)
            if v.type == "subscribe" and self.divert is not None:
                await self.divert(v)
                continue
            return v


@dataclass
class PsapCall:
    """One emergency call as the call taker sees it."""

    call: Call
    assessment: CallAssessment
    arrived: float
    emergency: bool
    answered_at: float | None = None
    media: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def describe(pc: PsapCall) -> str:
    """One line for the call taker's screen."""
    a = pc.assessment
    if a.location is not None:
        loc = a.location
        where = (
            f"{loc.lat:.6f},{loc.lon:.6f} ±{loc.accuracy} m tier {int(loc.tier)} "
            f"({loc.method}, {loc.keystore} key)"
        )
    else:
        where = "location unknown"
    level = a.certification.level.label if a.certification else "uncertified"
    flags = ", ".join(a.flags) if a.flags else "verified"
    return f"{a.caller}: {where}; device {level}; {flags}"


class PsapService:
    """A PSAP bound at one relay."""

    def __init__(
        self,
        key: KeyPair,
        *,
        resolver: DidResolver,
        policy: PsapPolicy,
        media_factory: MediaFactory | None = None,
        auto_answer: bool = False,
        on_call: Callable[[PsapCall], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.did = key.did
        self.resolver = resolver
        self.policy = policy
        self.media_factory = media_factory
        self.auto_answer = auto_answer
        self.on_call = on_call
        self.clock = clock
        self.queue = CallQueue()
        self.board: dict[str, PsapCall] = {}
        self.refused: list[CallAssessment] = []
        self._last_seq: dict[str, int] = {}
        self._waiting = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.agent: CallAgent | None = None
        self.client: _PsapSignaling | None = None
        # public warnings: an authority for this PSAP's region streams (alerts module)
        self.authority = AuthorityEngine()
        self._records: dict[str, dict[str, str]] = {}  # stream → signed live publish

    async def start(
        self, relay_uri: str, *, cafile: str | None = None, ssl_context: Any = None
    ) -> None:
        client = _PsapSignaling(
            self.key,
            verifier=Verifier(self.resolver.cached),
            resolver=self.resolver,
            clock=self.clock,
        )
        client.divert = self._on_subscribe
        await client.connect(relay_uri, cafile=cafile, ssl_context=ssl_context, timeout=10)
        self.client = client
        self.agent = CallAgent(client, clock=self.clock)
        await self.agent.start()
        self._tasks.append(asyncio.create_task(self._intake()))
        if self.auto_answer:
            self._tasks.append(asyncio.create_task(self._taker()))
        logger.info("PSAP %s on duty at %s", self.did, relay_uri)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for pc in self.board.values():
            if pc.media is not None:
                with contextlib.suppress(Exception):
                    await pc.media.close()
        if self.agent is not None:
            await self.agent.close()

    async def __aenter__(self) -> PsapService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- intake ---------------------------------------------------------------------------

    async def _intake(self) -> None:
        assert self.agent is not None
        while True:
            call = await self.agent.incoming()
            try:
                await self._admit(call)
            except DsipError as exc:
                logger.warning("call %s not admitted: %s", call.id, exc)

    def assess(self, call: Call) -> CallAssessment:
        """Open and verify the emergency content of an offered call."""
        offer = call.offer
        content: dict[str, Any] | None = None
        sealed = offer.get("emergency")
        if isinstance(sealed, Mapping):
            try:
                content = open_precise(
                    sealed, key=self.key, recipient=self.did, envelope_id=call.id
                )
            except EmergencyError as exc:
                logger.info("call %s: sealed location does not open: %s", call.id, exc)
        assessment = assess_emergency_call(
            content,
            caller=call.peer,
            documents=self.resolver.cached,
            now=int(self.clock()),
            policy=self.policy,
            last_seq=self._last_seq.get(call.peer, 0),
        )
        if assessment.location is not None:
            self._last_seq[call.peer] = assessment.location.seq
        return assessment

    async def _admit(self, call: Call) -> None:
        assert self.agent is not None
        emergency = call.offer.get("priority") == "emergency"
        assessment = self.assess(call)
        if not assessment.accept:
            self.refused.append(assessment)
            reason = assessment.refusal or "policy.trust-insufficient"
            logger.info("strict policy refuses %s: %s", call.peer, reason)
            agent = self.agent
            await agent._act(lambda now: agent.engine.auto_reject(call.id, reason, now=now))
            return
        await call.ring(ring_timeout=300)
        pc = PsapCall(call, assessment, self.clock(), emergency)
        self.board[call.id] = pc
        self.queue.push(call.id, emergency=emergency)
        logger.info("queued: %s", describe(pc))
        if self.on_call is not None:
            self.on_call(pc)
        self._waiting.set()

    # --- call taker -------------------------------------------------------------------------

    async def answer_next(self, timeout: float | None = None) -> PsapCall | None:
        """Answer the first call in the queue (waiting up to ``timeout`` for one)."""
        async with asyncio.timeout(timeout):
            while True:
                session = self.queue.pop()
                if session is None:
                    self._waiting.clear()
                    await self._waiting.wait()
                    continue
                pc = self.board[session]
                if pc.call.state is None or pc.call.state.value in ("ended",):
                    continue
                await self._answer(pc)
                return pc

    async def _answer(self, pc: PsapCall) -> None:
        if self.media_factory is not None:
            pc.media = self.media_factory()
            selection, transports = await pc.media.answer(pc.call.offer)
            await pc.call.answer(media=selection, transports=transports)
        else:
            await pc.call.answer()
        pc.answered_at = self.clock()

    async def _taker(self) -> None:
        while True:
            try:
                await self.answer_next()
            except DsipError as exc:
                logger.warning("answer failed: %s", exc)

    # --- public warnings --------------------------------------------------------------------

    def serve_regions(self, regions: Sequence[str]) -> None:
        """Open the region streams (geohash prefixes) this PSAP warns: a baseline record
        each, subscribable by anyone."""
        now = int(self.clock())
        for region in regions:
            stream = alert_stream(self.did, region)
            self.authority.set_policy(stream, SubscriptionPolicy(PolicyMode.PUBLIC), now=now)
            payload = baseline_payload(self.did, region, now=now)
            self.authority.receive({**payload, "from": self.did}, now=now)

    async def publish_alert(
        self,
        region: str,
        *,
        severity: str,
        headline: str,
        instruction: str = "",
        ttl: int = 3600,
    ) -> dict[str, str]:
        """Sign a warning for ``region`` and notify every subscriber of its stream; returns
        the signed ``publish`` envelope."""
        now = int(self.clock())
        held = self.authority.records.get(alert_stream(self.did, region))
        payload = alert_payload(
            self.did,
            region,
            severity=severity,
            headline=headline,
            instruction=instruction,
            now=now,
            ttl=ttl,
            after=held.publication.id if held is not None else None,
        )
        envelope = sign_envelope(payload, self.key)
        self._records[alert_stream(self.did, region)] = envelope
        await self._emit(self.authority.receive({**payload, "from": self.did}, now=now))
        return envelope

    async def _on_subscribe(self, v: Verified) -> None:
        self.authority.directory[v.signer] = v.identity
        msg = {**v.payload, "from": v.signer}
        await self._emit(self.authority.receive(msg, now=int(self.clock())))

    async def _emit(self, emissions: Sequence[Any]) -> None:
        if self.client is None:
            return
        for em in emissions:
            if isinstance(em, SendNotify):
                fields = em.to_payload_fields()
                held = self.authority.subscriptions.get(em.subscription)
                live = self._records.get(held.target) if held is not None else None
                if live is not None:
                    fields["body"] = {**fields["body"], "alert": dict(live)}
            elif isinstance(em, Send):
                fields = em.to_payload_fields()
            else:
                continue
            msg_type = fields.pop("type")
            try:
                await self.client.send(self.client.build(msg_type, **fields))
            except DsipError as exc:
                logger.warning("warning stream message not sent: %s", exc)

    async def callback(
        self,
        caller: str,
        *,
        media: Sequence[Mapping[str, Any]] | None = None,
        transports: Sequence[Mapping[str, Any]] | None = None,
    ) -> Call:
        """Ring a caller back (emergency priority; within the caller's callback window)."""
        assert self.agent is not None
        return await self.agent.call(caller, media=media, transports=transports)


async def demo_emergency(
    console: Any, ca: LocalCA, tmp: Any, expect: Callable[[bool, str], None]
) -> None:
    """Demo: an emergency call through a real relay to ``did:web:911.us`` (document pinned
    in each resolver), with a verified, sealed location; the native-dialer fallback; a
    public warning to the caller's region bucket."""
    from dsip.agent.emergency import ANSWERED, USE_NATIVE_DIALER, AlertListener, EmergencyCaller
    from dsip.agent.emergency import EmergencySignalingClient as Client
    from dsip.config import RelayConfig
    from dsip.core.emergency.certification import Level, issue_certification
    from dsip.core.emergency.geo import FileKeyStore, Fix
    from dsip.core.identity import did_web_document
    from dsip.services.relay import Relay
    from dsip.storage import open_store

    psap_did = "did:web:911.us"
    base = KeyPair.generate()
    doc = did_web_document(psap_did, [("key-1", base.public_key_multibase)])
    certifier = KeyPair.generate()
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp}/emergency-relay.db")
    relay = Relay(
        cfg,
        KeyPair.generate(),
        await open_store(cfg.store),
        resolver=DidResolver(documents={psap_did: doc}),
        server_ssl=ca.server_context(),
    )
    await relay.start()
    uri = f"wss://localhost:{relay.ws_port}/dsip"
    psap = PsapService(
        KeyPair(base.private_key, f"{psap_did}#key-1"),
        resolver=DidResolver(documents={psap_did: doc}),
        policy=PsapPolicy(trusted_certifiers=frozenset({certifier.did})),
    )
    agent: CallAgent | None = None
    try:
        await psap.start(uri, ssl_context=ca.client_context())
        console.print(f"   PSAP [bold]{psap_did}[/] on duty at the relay")
        key, device = KeyPair.generate(), FileKeyStore.open(tmp / "emergency-device.key")
        resolver = DidResolver(documents={psap_did: doc})
        client = Client(key, verifier=Verifier(resolver.cached), resolver=resolver)
        await client.connect(uri, ssl_context=ca.client_context())
        agent = CallAgent(client)
        await agent.start()
        now = int(time.time())
        cred = issue_certification(certifier, device.did, Level.GOLD, now=now - 5)
        caller = EmergencyCaller(
            agent,
            identity_key=key,
            device=device,
            resolver=resolver,
            credentials=[cred],
            answer_timeout=3,
        )
        fix = Fix(42.746, -73.759, 5, "gps", now)
        placing = asyncio.create_task(caller.call(fix, psap=psap_did))
        taken = await psap.answer_next(timeout=10)
        outcome = await placing
        expect(outcome.kind == ANSWERED, "the PSAP answered the emergency call")
        if taken is not None:
            console.print(f"   call taker sees: {describe(taken)}", emoji=False, markup=False)
            expect(taken.assessment.verified, "location, device signature and gold device verified")
        if outcome.call is not None:
            await outcome.call.hangup()
        slow = EmergencyCaller(
            agent, identity_key=key, device=device, resolver=resolver, answer_timeout=1.0
        )
        fallback = await slow.call(Fix(42.746, -73.759, 5, "gps", int(time.time())), psap=psap_did)
        console.print(f"   nobody answers within 1 s: {fallback.kind} ({fallback.reason})")
        expect(fallback.kind == USE_NATIVE_DIALER, "no answer in time means the native dialer")
        # a public warning to the caller's region bucket
        psap.serve_regions(["dre"])
        listener = AlertListener(client, geohash="dree1t")
        await listener.subscribe(psap_did)
        await listener.wait_settled()
        await psap.publish_alert(
            "dre", severity="severe", headline="Flash flood warning", instruction="Move uphill"
        )
        alert = await asyncio.wait_for(listener.alerts.get(), 5)
        console.print(f"   warning for bucket {alert.region}: {alert.headline} ({alert.severity})")
        expect(alert.authority == psap_did, "a signed warning reached the agent in its bucket")
    finally:
        if agent is not None:
            await agent.close()
        await psap.close()
        await relay.stop()


def install_ng911(
    gateway: Any,
    key: KeyPair,
    *,
    documents: Any,
    policy: PsapPolicy,
    domain: str = "dsip.invalid",
    clock: Callable[[], float] = time.time,
) -> None:
    """Make a :class:`~dsip.services.gateway.Gateway` an NG911 ingress (seed §16, §19.3).

    The gateway holds the emergency namespace key (``key``), so it can open the sealed
    location of the DSIP invites it receives. Each outbound INVITE then carries the verified
    location by value — a PIDF-LO body part (RFC 4119/5491) — referenced by ``Geolocation``
    (RFC 6442), plus ``Resource-Priority: esnet.1``. The verification flags (default policy:
    accept and flag) travel in the PIDF-LO ``note-well``; a call with no usable location
    still goes out, with the priority header and without a location.
    """
    from dsip.core.emergency.pidf import CONTENT_TYPE, build_pidf_lo, ng911_headers
    from dsip.services.gateway_sip import BodyPart

    done: dict[str, tuple[list[tuple[str, str]], list[Any]]] = {}  # by DSIP session id

    def compute(bridge: Any) -> tuple[list[tuple[str, str]], list[Any]]:
        call = bridge.dsip
        if call is not None and call.id in done:
            return done[call.id]
        headers: list[tuple[str, str]] = [("Resource-Priority", "esnet.1")]
        parts: list[Any] = []
        if call is not None and call.offer.get("priority") == "emergency":
            content = None
            sealed = call.offer.get("emergency")
            if isinstance(sealed, Mapping):
                with contextlib.suppress(EmergencyError):
                    content = open_precise(sealed, key=key, recipient=key.did, envelope_id=call.id)
            a = assess_emergency_call(
                content, caller=call.peer, documents=documents, now=int(clock()), policy=policy
            )
            if a.location is not None:
                cid = f"{call.id.lower()}@{domain}"
                note = ("dsip flags: " + ", ".join(a.flags)) if a.flags else None
                xml = build_pidf_lo(a.location, entity=a.caller, note_well=note)
                headers = ng911_headers(cid)
                parts = [BodyPart(CONTENT_TYPE, xml.decode("utf-8"), cid)]
        if call is not None:
            while len(done) >= 256:  # both hooks run once per INVITE: keep only recent ones
                del done[next(iter(done))]
            done[call.id] = (headers, parts)
        return headers, parts

    gateway.outbound_headers = lambda bridge: compute(bridge)[0]
    gateway.outbound_parts = lambda bridge: compute(bridge)[1]
