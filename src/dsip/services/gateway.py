"""``dsip gateway``: the DSIP ⇄ SIP back-to-back user agent (Gateway Profile G§3).

The gateway is a DSIP device on a relay (a :class:`~dsip.agent.calls.CallAgent`) and a SIP UA
on a trunk (:class:`~dsip.services.gateway_sip.SipEndpoint`, the sippy stack). Each call across
it is one :class:`_Bridge` around the sans-I/O controller
:class:`~dsip.core.gateway.b2bua.BridgedCall`: events from either leg go in, and what the
controller emits is carried out here — a DSIP action on the call, a SIP response or request on
the dialog. The controller decides; this module only translates and does the I/O.

* inbound (SIP → DSIP): an INVITE for ``to_user`` is routed to a DSIP identity (``routes``,
  else ``default_route``); unknown numbers get ``404``.
* outbound (DSIP → SIP): a DSIP ``invite`` to the gateway becomes an INVITE to the trunk for
  ``outbound_user``. decision: the DSIP invite names no number (its ``to`` is the gateway's
  DID), so the number comes from :attr:`GatewayConfig.outbound_user` or the ``dial`` hook.

What sippy does for us and the controller need not repeat: ``100 Trying``, the ACK of a 2xx or
non-2xx, ``200`` to BYE and CANCEL, ``487`` to a cancelled INVITE.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from dsip.agent.calls import Call, CallAgent, CallEvent
from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier
from dsip.core.gateway.b2bua import (
    BridgedCall,
    Downgraded,
    DsipAction,
    DsipAnswer,
    DsipInvite,
    DsipLegEnded,
    DsipLocal,
    DsipProgress,
    Emission,
    Event,
    Ignored,
    Media,
    SendSipRequest,
    SendSipResponse,
    SipInvite,
    SipLeg,
    SipRequest,
    SipResponse,
    TrunkProfile,
    dsip_event_from_payload,
)
from dsip.core.gateway.downgrade import CallDirection
from dsip.core.gateway.sdp import (
    SrtpMode,
    TrunkMLine,
    TrunkSdpError,
    parse_trunk_sdp,
    render_trunk_sdp,
)
from dsip.core.identity import DocumentSource, KeyPair
from dsip.core.media_binding import Direction
from dsip.core.session import Send, SessionState, Ui
from dsip.core.trust.rcid import IssuerTrust, RcidDisplay, rcid_of, verify_rcid
from dsip.errors import DsipError
from dsip.services.gateway_media import RtpBridge, open_rtp_bridge
from dsip.services.gateway_sip import (
    BodyPart,
    InboundInvite,
    LegEvent,
    OutboundInvite,
    SipEndpoint,
    SipEndpointConfig,
    SipLegHandle,
    SipStackError,
)
from dsip.services.gateway_stir import StirSigner, StirVerifier

__all__ = ["Gateway", "GatewayConfig", "GatewayStats"]

logger = logging.getLogger("dsip.gateway")

_PHRASES: Mapping[int, str] = {
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    410: "Gone",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_PCMU: tuple[str, ...] = ("codec:audio/pcmu", "codec:audio/pcma")


@dataclass(frozen=True)
class GatewayConfig:
    """One gateway: its SIP side, its relay, and the dial plan."""

    sip: SipEndpointConfig
    relay: str
    cafile: str | None = None
    routes: Mapping[str, str] = field(default_factory=dict)  # dialled user → DSIP identity
    default_route: str | None = None
    outbound_user: str = "pstn"
    outbound_from: str = "dsip"
    trunk: TrunkProfile = field(default_factory=TrunkProfile)
    media_host: str = "127.0.0.1"
    media_bridge: bool = False  # WebRTC ⇄ RTP/PCMU audio (gateway_media); off: signaling only


@dataclass
class GatewayStats:
    inbound: int = 0
    outbound: int = 0
    answered: int = 0
    ended: int = 0


def _now() -> int:
    return int(time.time())


def _reason_headers(values: Sequence[str]) -> list[tuple[str, str]]:
    return [("Reason", v) for v in values]


def _srtp_of(sdp: str | None) -> SrtpMode | None:
    if sdp is None:
        return None
    try:
        return parse_trunk_sdp(sdp).srtp
    except TrunkSdpError:
        return None


# The caller presentation of the invite being placed by the current bridge task (G§5): the
# agent builds the invite inside ``CallAgent.call`` in that same task.
_INVITE_IDENTITY: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "dsip_gateway_invite_identity", default=None
)


class _GatewayClient(SignalingClient):
    """The gateway's signaling client: an ``invite`` it places carries the PSTN caller as
    ``identity.claims`` (the G§5 ``tel`` claim), never as the gateway's own identity (G§2)."""

    def build(self, msg_type: str, *, ttl: int = 30, **fields: Any) -> dict[str, Any]:
        identity = _INVITE_IDENTITY.get()
        if msg_type == "invite" and identity is not None and "identity" not in fields:
            fields["identity"] = identity
        return super().build(msg_type, ttl=ttl, **fields)


class _RtpAnchor(asyncio.DatagramProtocol):
    """The gateway's RTP port for one SIP leg (what its SDP advertises)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received += 1

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Bridge:
    """One call across the gateway: the controller, its two legs, and the pump between."""

    def __init__(self, gateway: Gateway, direction: CallDirection) -> None:
        self.gw = gateway
        self.ctl = BridgedCall(direction, gateway=gateway.did, trunk=gateway.config.trunk)
        self.sip: SipLegHandle | None = None
        self.dsip: Call | None = None
        self.events: asyncio.Queue[Event | None] = asyncio.Queue()
        self.remote_sdp: str | None = None
        self.pumps: list[asyncio.Task[None]] = []
        self.target: str | None = None
        self.trust_basis: str | None = None
        self.caller_name: str | None = None  # outbound: the verified RCID name, if any
        self.caller_number: str | None = None  # outbound: from a PhoneNumberCredential
        self.rtp: RtpBridge | None = None
        self.webrtc: Any = None  # dsip.media.webrtc.WebRtcMedia when the media bridge is on

    # --- event sources -----------------------------------------------------------------

    def _pump_sip(self, leg: SipLegHandle) -> None:
        async def pump() -> None:
            while True:
                ev = await leg.events.get()
                if ev.kind == "dead":
                    self.events.put_nowait(None)
                    return
                mapped = self._sip_event(ev)
                if mapped is not None:
                    self.events.put_nowait(mapped)

        self.pumps.append(asyncio.create_task(pump()))

    def _sip_event(self, ev: LegEvent) -> Event | None:
        if ev.sdp:
            self.remote_sdp = ev.sdp
        srtp = _srtp_of(ev.sdp)
        if ev.kind in ("ring", "connect", "fail"):
            return SipResponse(ev.status or 500, sdp=ev.sdp is not None, srtp=srtp, q850=ev.q850)
        if ev.kind == "disconnect":
            if self.ctl.direction is CallDirection.OUTBOUND and self.ctl.sip_state in (
                SipLeg.CALLING,
                SipLeg.EARLY,
            ):
                # sippy gave up on an INVITE nobody answered (no reply in time): a timeout
                return SipResponse(408)
            confirmed = self.ctl.sip_state is SipLeg.CONFIRMED
            return SipRequest("BYE" if confirmed else "CANCEL", q850=ev.q850)
        return None

    def _pump_dsip(self, call: Call) -> None:
        async def pump() -> None:
            while True:
                ev = await call.events.get()
                if ev.kind == "answered" and self.webrtc is not None and call.answer_payload:
                    await self._media_answered(call.answer_payload)
                mapped = self._dsip_event(ev)
                if mapped is not None:
                    self.events.put_nowait(mapped)

        self.pumps.append(asyncio.create_task(pump()))

    def _dsip_event(self, ev: CallEvent) -> Event | None:
        payload = ev.message.payload if ev.message is not None else None
        if ev.kind == "progress":
            return DsipProgress(str(ev.fields.get("status", "ringing")))
        if ev.kind == "answered":
            if payload is not None:
                return dsip_event_from_payload(payload)
            return DsipAnswer(str(ev.fields.get("answered_by", "user")))
        if ev.kind == "ended":
            if payload is not None and payload.get("type") in ("reject", "cancel", "bye"):
                return dsip_event_from_payload(payload)
            return DsipLegEnded(str(ev.fields.get("reason", "session.failed")))
        return None

    # --- the loop ----------------------------------------------------------------------

    async def run(self, first: Event) -> None:
        try:
            await self._apply(self.ctl.handle(first, now=_now()))
            while not self.ctl.finished:
                deadline = self.ctl.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.time())
                try:
                    async with asyncio.timeout(timeout):
                        ev = await self.events.get()
                except TimeoutError:
                    await self._apply(self.ctl.handle_timer(_now()))
                    continue
                if ev is None:  # the SIP dialog is gone for good
                    if not self.ctl.finished:
                        await self._apply(self.ctl.handle(SipResponse(408), now=_now()))
                    break
                await self._apply(self.ctl.handle(ev, now=_now()))
        finally:
            await self._close()

    async def _close(self) -> None:
        for task in self.pumps:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.webrtc is not None:
            with contextlib.suppress(Exception):
                await self.webrtc.pc.close()
        if self.rtp is not None:
            await self.rtp.close()
        self.gw.stats.ended += 1
        self.gw._bridges.discard(self)
        call = self.dsip
        if call is not None and call.state in (SessionState.ENDED, None):
            # a gateway runs for months: forget the finished session (the engine scans every
            # session it holds for timers, and the envelope verifier keeps the replay window)
            call.agent.calls.pop(call.id, None)
            call.agent.engine.sessions.pop(call.id, None)

    async def _apply(self, emissions: list[Emission]) -> None:
        for em in emissions:
            try:
                await self._apply_one(em)
            except DsipError as exc:
                logger.warning("could not carry out %s: %s", em, exc.message)

    async def _apply_one(self, em: Emission) -> None:
        if isinstance(em, DsipLocal):
            await self._dsip_action(em)
        elif isinstance(em, SendSipResponse):
            await self._sip_response(em)
        elif isinstance(em, SendSipRequest):
            await self._sip_request(em)
        elif isinstance(em, Media):
            logger.debug("media %s", em.action)
        elif isinstance(em, Downgraded):
            await self._send_downgraded(em)
        elif isinstance(em, Ignored):
            logger.debug("ignored: %s", em.why)

    # --- DSIP leg ----------------------------------------------------------------------

    async def _send_downgraded(self, em: Downgraded) -> None:
        """G§7: tell the DSIP party, in an informational ``error``, what the crossing loses;
        the session goes on."""
        call = self.dsip
        session = None if call is None else call.agent.engine.sessions.get(call.id)
        if call is None or session is None or not session.peer:
            return
        client = call.agent.client
        payload = client.build(
            "error",
            to=session.peer,
            reason=em.notice.reason,
            detail=em.notice.detail,
            session=call.id,
        )
        await client.send(payload)

    async def _dsip_action(self, em: DsipLocal) -> None:
        agent = self.gw.agent
        if em.action is DsipAction.PLACE_CALL:
            assert self.target is not None
            identity: dict[str, Any] | None = None
            if em.caller is not None and em.caller.claims:
                identity = {"claims": [dict(c) for c in em.caller.claims]}
                cnam = em.caller.claim.cnam if em.caller.claim is not None else None
                if cnam:
                    identity["display_name"] = cnam
            token = _INVITE_IDENTITY.set(identity)
            offer: tuple[Any, Any] = (None, None)
            if self.gw.config.media_bridge:
                offer = await self._webrtc_offer()
            try:
                self.dsip = await agent.call(self.target, media=offer[0], transports=offer[1])
            finally:
                _INVITE_IDENTITY.reset(token)
            self.trust_basis = em.caller.trust_basis if em.caller is not None else None
            self._pump_dsip(self.dsip)
            return
        call = self.dsip
        if call is None:
            return
        if em.action is DsipAction.ALERT:
            await call.ring()
        elif em.action is DsipAction.ACCEPT:
            if self.webrtc is not None:
                selection, transports = await self.webrtc.answer(call.offer)
                await call.answer(
                    answered_by=em.answered_by or "gateway", media=selection, transports=transports
                )
                self._start_media()
            else:
                await call.answer(answered_by=em.answered_by or "gateway")
            self.gw.stats.answered += 1
        elif em.action is DsipAction.AUTO_REJECT:
            await self._reject(call, em.reason or "session.failed")
        elif em.action is DsipAction.CANCEL:
            await call.cancel()
        elif em.action is DsipAction.HANGUP:
            await call.hangup(em.reason or "user.hangup")
        else:
            logger.info("DSIP action %s not carried out by this gateway", em.action)

    async def _reject(self, call: Call, reason: str) -> None:
        """Refuse the DSIP caller with ``reason``. decision: the engine only takes a reason
        while OFFERED (``auto_reject``); once ringing it knows only ``decline``
        (``user.declined``), so the gateway ends the ringing session with the mapped reason
        itself: stop its timers, send the ``reject``, surface ``ended``."""
        agent = call.agent
        if call.state is SessionState.OFFERED:
            await agent._act(lambda now: agent.engine.auto_reject(call.id, reason, now=now))
            return
        session = agent.engine.sessions.get(call.id)
        if session is None or session.state is not SessionState.ALERTING:
            return
        async with agent._lock:
            out = session.stop_all_timers()
            session.state = SessionState.ENDED
            reject = Send("reject", session.peer, session=call.id, reason=reason)
            ended = Ui("ended", {"reason": reason}, call.id)
            await agent._apply([*out, reject, ended], None)

    # --- media bridge (G§6; gateway_media) ---------------------------------------------

    async def _open_rtp(self) -> RtpBridge:
        if self.rtp is None:
            self.rtp = await open_rtp_bridge(self.gw.config.media_host)
        return self.rtp

    async def _webrtc_offer(self) -> tuple[Any, Any]:
        from dsip.media.webrtc import WebRtcMedia

        rtp = await self._open_rtp()
        self.webrtc = WebRtcMedia(audio=rtp.track)
        result: tuple[Any, Any] = await self.webrtc.offer()
        return result

    async def _media_answered(self, answer: Mapping[str, Any]) -> None:
        """Inbound: the DSIP callee's answer completes our WebRTC offer."""
        try:
            await self.webrtc.accept(answer)
        except DsipError as exc:
            logger.warning("media answer refused: %s", exc.message)
            return
        self._start_media()

    def _start_media(self) -> None:
        """Once the DSIP peer's audio track arrives, send it to the trunk's RTP address."""

        async def start() -> None:
            track = await self.webrtc.next_track("audio", timeout=15)
            remote = self._remote_rtp()
            if remote is not None and self.rtp is not None:
                self.rtp.start(track, remote)

        self.pumps.append(asyncio.create_task(start()))

    def _remote_rtp(self) -> tuple[str, int] | None:
        if self.remote_sdp is None:
            return None
        try:
            described = parse_trunk_sdp(self.remote_sdp).described
        except TrunkSdpError:
            return None
        if not described or described[0].address is None or described[0].port == 0:
            return None
        return (described[0].address, described[0].port)

    async def _media_port(self) -> int:
        if self.gw.config.media_bridge:
            return (await self._open_rtp()).port
        # without the bridge no call's media is handled: one shared port takes (and drops)
        # whatever the trunk sends, instead of a socket per call
        return await self.gw.shared_media_port()

    # --- SIP leg -----------------------------------------------------------------------

    async def _local_sdp(self, direction: Direction | None) -> str:
        port = await self._media_port()
        line = TrunkMLine("audio", _PCMU, direction or Direction.SENDRECV)
        offer = None
        if self.remote_sdp is not None:
            with contextlib.suppress(TrunkSdpError):
                offer = parse_trunk_sdp(self.remote_sdp)
        if offer is not None and len(offer.described) == 1:
            return render_trunk_sdp(
                [line], address=self.gw.config.media_host, ports=[port], answer_to=offer
            )
        return render_trunk_sdp([line], address=self.gw.config.media_host, ports=[port])

    async def _sip_response(self, em: SendSipResponse) -> None:
        leg = self.sip
        if leg is None or em.method != "INVITE" or em.status == 100:
            return  # sippy answers BYE, CANCEL and sends 100 Trying itself
        if em.status < 200:
            leg.ring(em.status, _PHRASES.get(em.status, "Session Progress"))
        elif em.status < 300:
            leg.answer(await self._local_sdp(em.direction))
        else:
            headers = _reason_headers(em.reason_header)
            if em.retry_after is not None:
                headers.append(("Retry-After", str(em.retry_after)))
            leg.refuse(em.status, _PHRASES.get(em.status, "Call Failed"), headers)

    async def _sip_request(self, em: SendSipRequest) -> None:
        if em.method == "INVITE" and not em.in_dialog:
            shown = self.gw.caller_rcid(self)
            self.caller_name = self.gw.caller_name(shown)
            self.caller_number = self.gw.caller_number(shown)
            if self.gw.config.media_bridge and self.webrtc is None:
                from dsip.media.webrtc import WebRtcMedia

                self.webrtc = WebRtcMedia(audio=(await self._open_rtp()).track)
            sdp = await self._local_sdp(Direction.SENDRECV)
            try:
                self.sip = self.gw.sip.invite(
                    OutboundInvite(
                        to_user=self.gw.dial(self),
                        from_user=self.caller_number or self.gw.config.outbound_from,
                        from_name=self.caller_name,
                        sdp=sdp,
                        headers=tuple(self.gw.outbound_headers(self)),
                        parts=tuple(self.gw.outbound_parts(self)),
                    )
                )
            except SipStackError as exc:  # over capacity: as if the trunk had said 503
                logger.info("outbound INVITE not sent: %s", exc.message)
                self.events.put_nowait(SipResponse(503))
                return
            self._pump_sip(self.sip)
        elif em.method in ("BYE", "CANCEL") and self.sip is not None:
            self.sip.hang_up(_reason_headers(em.reason_header))
        elif em.method != "ACK":
            logger.info("SIP %s not sent: not supported by this gateway", em.method)


class Gateway:
    """The gateway service: ``await start()``, then calls flow until ``await stop()``."""

    def __init__(
        self,
        config: GatewayConfig,
        key: KeyPair,
        *,
        ssl_context: ssl.SSLContext | None = None,
        stir_signer: StirSigner | None = None,
        stir_verifier: StirVerifier | None = None,
        rcid_trust: IssuerTrust | None = None,
        documents: DocumentSource | None = None,
    ) -> None:
        self.config = config
        self.rcid_trust = rcid_trust
        self.documents = documents
        self.numbers: dict[str, tuple[str, int]] = {}  # E.164 digits → (DID, valid until)
        self.stir_signer = stir_signer
        self.stir_verifier = stir_verifier
        self.key = key
        self.did = key.did
        self.ssl_context = ssl_context
        self.stats = GatewayStats()
        self.agent: CallAgent
        self.sip = SipEndpoint(config.sip, self._on_invite)
        self._bridges: set[_Bridge] = set()
        self._shared_anchor: _RtpAnchor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._incoming_task: asyncio.Task[None] | None = None
        # hooks for what the profile leaves to the operator (numbering, extra INVITE headers)
        self.dial: Callable[[_Bridge], str] = lambda bridge: config.outbound_user
        self.outbound_headers: Callable[[_Bridge], Sequence[tuple[str, str]]] = self._identity
        self.outbound_parts: Callable[[_Bridge], Sequence[BodyPart]] = lambda b: ()

    @property
    def live_calls(self) -> int:
        return len(self._bridges)

    async def shared_media_port(self) -> int:
        if self._shared_anchor is None:
            loop = asyncio.get_running_loop()
            transport, anchor = await loop.create_datagram_endpoint(
                _RtpAnchor, local_addr=(self.config.media_host, 0)
            )
            anchor.transport = transport
            self._shared_anchor = anchor
        return self._shared_anchor.port

    def caller_rcid(self, bridge: _Bridge) -> RcidDisplay | None:
        """The DSIP caller's RCID, every credential verified once (``rcid_trust`` decides
        which issuers count); ``None`` without a call, a trust list or an RCID."""
        call = bridge.dsip
        if call is None or self.rcid_trust is None:
            return None
        rcid = rcid_of(call.offer)
        if rcid is None:
            return None
        return verify_rcid(
            rcid,
            caller=call.peer,
            now=int(time.time()),
            documents=self.documents,
            trust=self.rcid_trust,
        )

    def caller_number(self, shown: RcidDisplay | None) -> str | None:
        """The DSIP caller's E.164 number (digits, no '+') from a *verified*
        ``PhoneNumberCredential`` in its RCID, from an issuer in ``rcid_trust`` for that
        type (seed §15: E.164 ⇄ DID only through a credential the DID holds). The number is
        then remembered for inbound routing to that DID — privately, here only, for as long
        as the credential is valid — and is what the INVITE and the PASSporT assert."""
        if shown is None:
            return None
        for vc in shown.credentials:
            number = vc.subject.get("telephoneNumber")
            if vc.type == "PhoneNumberCredential" and isinstance(number, str):
                digits = number.removeprefix("+")
                until = vc.valid_until if vc.valid_until is not None else int(time.time()) + 86_400
                self.numbers[digits] = (shown.caller, until)
                return digits
        return None

    @staticmethod
    def caller_name(shown: RcidDisplay | None) -> str | None:
        """The DSIP caller's name as a *verified* RCID shows it (seed §12 step 4, v0.7 §18):
        a ``DisplayNameCredential`` from an issuer in ``rcid_trust``. A name the caller only
        claims is not carried into SIP, where it would look asserted."""
        if shown is None or not shown.name_verified or shown.name is None:
            return None
        # a header value: printable characters only, no quote or escape (RFC 3261 §25.1)
        cleaned = "".join(ch for ch in shown.name if ch.isprintable() and ch not in '"\\')
        return cleaned.strip()[:64] or None

    def _identity(self, bridge: _Bridge) -> list[tuple[str, str]]:
        """G§11 path (a): on a trunk where the operator may assert the caller, a SHAKEN
        PASSporT (RFC 8224 ``Identity``, with the verified RCID name as RFC 9795 ``rcd``)
        and ``P-Asserted-Identity`` for the number the trunk knows the DSIP caller by
        (``outbound_from``)."""
        if self.stir_signer is None or not self.config.trunk.identity_assertable:
            return []
        orig, dest = bridge.caller_number or self.config.outbound_from, self.dial(bridge)
        name = bridge.caller_name
        display = "" if name is None else f'"{name}" '
        host = self.config.sip.host
        return [
            ("P-Asserted-Identity", f"{display}<sip:{orig}@{host};user=phone>"),
            ("Identity", self.stir_signer.identity(orig, dest, name=name)),
        ]

    async def start(self) -> None:
        client = _GatewayClient(self.key, verifier=Verifier())
        if self.ssl_context is not None:
            await client.connect(self.config.relay, ssl_context=self.ssl_context, timeout=10)
        else:
            await client.connect(self.config.relay, cafile=self.config.cafile, timeout=10)
        self.agent = CallAgent(client)
        await self.agent.start()
        await self.sip.start()
        self._incoming_task = asyncio.create_task(self._incoming_loop())
        logger.info(
            "gateway %s up: sip udp:%s:%d", self.did, self.config.sip.host, self.config.sip.port
        )

    async def stop(self) -> None:
        if self._incoming_task is not None:
            self._incoming_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._incoming_task
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.sip.stop()
        await self.agent.close()
        if self._shared_anchor is not None:
            self._shared_anchor.close()

    def _spawn(self, bridge: _Bridge, first: Event) -> None:
        self._bridges.add(bridge)
        task = asyncio.create_task(self._guarded(bridge.run(first)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(run: Awaitable[None]) -> None:
        try:
            await run
        except Exception:
            logger.exception("bridged call failed")

    def route(self, to_user: str | None) -> str | None:
        """Configured routes first, then numbers DIDs proved with a PhoneNumberCredential
        (:meth:`caller_number`; forgotten when the credential expires), then the default."""
        if to_user is not None and to_user in self.config.routes:
            return self.config.routes[to_user]
        learned = self.numbers.get(to_user or "")
        if learned is not None:
            did, until = learned
            if until > time.time():
                return did
            del self.numbers[to_user or ""]
        return self.config.default_route

    # --- inbound: SIP → DSIP ------------------------------------------------------------

    def _on_invite(self, invite: InboundInvite, leg: SipLegHandle) -> None:
        target = self.route(invite.to_user)
        if target is None:
            leg.refuse(404, "Not Found")
            return
        if invite.sdp is not None:
            try:
                parse_trunk_sdp(invite.sdp)
            except TrunkSdpError as exc:  # RFC 3261 §21.4.26: the offer cannot be used
                logger.info("INVITE refused, its SDP: %s", exc.message)
                leg.refuse(488, "Not Acceptable Here", [("Warning", '399 dsip "bad SDP"')])
                return
        self.stats.inbound += 1
        bridge = _Bridge(self, CallDirection.INBOUND)
        bridge.target = target
        bridge.sip = leg
        bridge.remote_sdp = invite.sdp
        bridge._pump_sip(leg)
        task = asyncio.create_task(self._guarded(self._admit_inbound(bridge, invite)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _admit_inbound(self, bridge: _Bridge, invite: InboundInvite) -> None:
        """Verify the caller's ``Identity`` (if a verifier is configured), then bridge."""
        passport = None
        if self.stir_verifier is not None:
            passport = await self.stir_verifier.verify(
                invite.identity, from_tn=invite.from_user or "", to_tn=invite.to_user or ""
            )
        first = SipInvite(
            from_tn=invite.from_user or "",
            passport=passport,
            cnam=invite.from_name,
            srtp=_srtp_of(invite.sdp),
        )
        self._spawn(bridge, first)

    # --- outbound: DSIP → SIP -----------------------------------------------------------

    async def _incoming_loop(self) -> None:
        while True:
            call = await self.agent.incoming()
            self.stats.outbound += 1
            bridge = _Bridge(self, CallDirection.OUTBOUND)
            bridge.dsip = call
            bridge._pump_dsip(call)
            policy = call.offer.get("policy")
            self._spawn(bridge, DsipInvite(policy_present=isinstance(policy, Mapping)))
