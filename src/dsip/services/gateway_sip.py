"""The SIP side of ``dsip gateway``: one SIP endpoint on the sippy stack.

Library: **sippy** (the RFC 3261 stack of the Sippy B2BUA, BSD). It parses and writes every
SIP message, runs the transaction layer (retransmissions, Timer A–K, the ACK of a non-2xx
final, CANCEL matching, 482 loop detection, 400 for what it cannot parse) and keeps one
dialog per :class:`sippy.UA.UA` in either role. Nothing here parses or writes SIP text; this
module only starts the stack, admits new INVITEs and carries events across threads.

Threads: sippy runs its own reactor (``EventDispatcher2``, one per process) with its UDP
sockets read by worker threads. :func:`_reactor` starts that reactor once in a daemon thread
ticking at 1 kHz (the default 100 Hz adds 10 ms to every crossing). The asyncio side enters
it only through ``ED2.callFromThread``; whatever sippy reports goes back with
``loop.call_soon_threadsafe``. Sippy keeps the local address and port in process-wide settings
(``SipConf``, used in Via and Contact), so a process hosts one :class:`SipEndpoint`.

Transport: sippy carries SIP over UDP (and WSS, unused here). TCP and TLS are not part of it;
:mod:`dsip.services.gateway_front` puts Kamailio in front of this UDP port for them.

Load: at most ``max_calls`` dialogs live at once; an INVITE beyond that is answered
``503 Service Unavailable`` with ``Retry-After`` before any state is created (RFC 3261 §21.5.4).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from typing import Any, Literal

from dsip.errors import DsipError

__all__ = [
    "BodyPart",
    "InboundInvite",
    "LegEvent",
    "OutboundInvite",
    "SipEndpoint",
    "SipEndpointConfig",
    "SipLegHandle",
    "SipStackError",
]

logger = logging.getLogger("dsip.gateway.sip")

_REACTOR_HZ = 1000.0
_NEGATIVE_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*-", re.IGNORECASE | re.MULTILINE)
# RFC 3261 §25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF (single spaces)
_REQUEST_LINE = re.compile(rb"^[A-Za-z!%*_+`'~.-]+ [^ \r\n]+ SIP/[0-9]+\.[0-9]+\r?$")


def _malformed(raw: bytes) -> str | None:
    """Two things sippy's parser lets through that RFC 4475 wants answered with 400: a
    negative Content-Length (§3.1.2.4 ncl) and a Request-Line with extra whitespace
    (§3.1.2.12 lwsstart). Only the start line and the header block are looked at."""
    if raw.startswith(b"SIP/2.0 "):
        return None
    head = raw.split(b"\r\n\r\n", 1)[0]
    if _NEGATIVE_LENGTH.search(head):
        return "Bad Request - Negative Content-Length"
    if not _REQUEST_LINE.match(head.split(b"\n", 1)[0]):
        return "Bad Request - Malformed Request-Line"
    return None


class SipStackError(DsipError):
    """The SIP side cannot take the call: not started, no trunk, or over capacity
    (``gateway.unreachable``)."""

    def __init__(self, message: str, *, code: str = "sip-stack") -> None:
        super().__init__(message, code=code, reason="gateway.unreachable", remote=False)


# --- the reactor thread -----------------------------------------------------------------------

_reactor_lock = threading.Lock()
_reactor_thread: threading.Thread | None = None


def _fast_clock() -> None:
    """sippy reads its clocks through ``ctypes`` (``sippy.Time.clock_dtime``), which drops
    and retakes the GIL on every timestamp; with the asyncio thread busy that costs ~0.1 ms
    a reading and over 1 ms a call. ``time.clock_gettime`` reads the same clock ids without
    releasing the GIL."""
    import sippy.Time.MonoTime as mono

    mono.clock_getdtime = time.clock_gettime


def _reactor() -> Any:
    """sippy's process-wide reactor, running in its own thread (started on first use)."""
    global _reactor_thread
    from _thread import get_ident

    from sippy.Core.EventDispatcher import ED2

    with _reactor_lock:
        if _reactor_thread is None:
            _fast_clock()
            ready = threading.Event()

            def run() -> None:
                # sippy checks that timers are armed from the reactor's own thread
                ED2.my_ident = get_ident()
                ready.set()
                ED2.loop(freq=_REACTOR_HZ)

            _reactor_thread = threading.Thread(target=run, name="sippy-reactor", daemon=True)
            _reactor_thread.start()
            ready.wait(5)
    return ED2


def _in_reactor(fn: Callable[..., object], *args: object) -> None:
    _reactor().callFromThread(fn, *args)


def _in_reactor_sync(fn: Callable[..., object], *args: object) -> object:
    return _reactor().callFromThreadSync(fn, *args)


class _SipLog:
    """sippy's logger interface, into ``logging`` at DEBUG (messages may carry numbers)."""

    def write(self, *args: object, **kwargs: object) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", "".join(str(a) for a in args))

    def shutdown(self) -> None:
        pass


# --- records crossing the thread boundary -------------------------------------------------------


@dataclass(frozen=True)
class InboundInvite:
    """What the gateway needs of an initial INVITE from the trunk."""

    call_id: str
    from_user: str | None
    from_name: str | None
    to_user: str | None
    sdp: str | None
    identity: tuple[str, ...]  # raw RFC 8224 ``Identity`` header values
    source: tuple[str, int]


@dataclass(frozen=True)
class LegEvent:
    """Something the SIP leg did. ``ring``/``connect``/``fail`` carry the response status;
    ``disconnect`` is the far end's BYE or CANCEL; ``q850`` is its ``Reason: Q.850;cause=``."""

    kind: Literal["ring", "connect", "fail", "disconnect", "dead"]
    status: int | None = None
    sdp: str | None = None
    q850: int | None = None


@dataclass(frozen=True)
class BodyPart:
    """An extra MIME part next to the SDP (the INVITE body becomes ``multipart/mixed``,
    RFC 5621): e.g. a PIDF-LO location (``application/pidf+xml``, RFC 6442)."""

    content_type: str
    content: str
    content_id: str | None = None


@dataclass(frozen=True)
class OutboundInvite:
    """An INVITE toward the trunk. ``headers``: extra ``(name, value)`` header fields (e.g.
    ``Identity``, ``P-Asserted-Identity``, ``Geolocation``, ``Resource-Priority``);
    ``parts``: extra body parts after the SDP."""

    to_user: str
    from_user: str
    from_name: str | None = None
    sdp: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    parts: tuple[BodyPart, ...] = ()


@dataclass(frozen=True)
class SipEndpointConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    trunk: tuple[str, int] | None = None  # next hop for outbound INVITEs
    max_calls: int = 200
    retry_after: int = 5
    no_reply: float | None = None  # CANCEL an outbound INVITE with no response after S (< 32)
    user_agent: str = "dsip-gateway"


def _headers(pairs: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
    from sippy.SipHeader import SipHeader

    return tuple(SipHeader(name=name, bodys=value) for name, value in pairs)


def _body(sdp: str | None, parts: Sequence[BodyPart]) -> Any:
    from sippy.MsgBody import MsgBody
    from sippy.SipContentType import SipContentType

    if not parts:
        return None if sdp is None else MsgBody(sdp)
    mixed = MIMEMultipart("mixed")
    items = ([BodyPart("application/sdp", sdp)] if sdp is not None else []) + list(parts)
    for item in items:
        major, _, minor = item.content_type.partition("/")
        part = MIMENonMultipart(major, minor)
        part.set_payload(item.content)
        del part["MIME-Version"]
        if item.content_id is not None:
            part["Content-ID"] = f"<{item.content_id}>"
        mixed.attach(part)
    text = mixed.as_string().split("\n\n", 1)[1].replace("\r\n", "\n").replace("\n", "\r\n")
    # RFC 2045 §5.1: the boundary email picks contains "=", a tspecial: it must be quoted
    ctype = SipContentType(f'multipart/mixed;boundary="{mixed.get_boundary()}"')
    ctype.parse()
    return MsgBody(text, mtype=ctype)


def _q850(event: Any) -> int | None:
    reason = getattr(event, "reason_rfc3326", None)
    if reason is None:
        return None
    try:
        reason.parse()
    except Exception:  # a Reason sippy cannot read carries no cause we can use
        return None
    return int(reason.cause) if str(reason.protocol).upper() == "Q.850" else None


def _sdp_text(body: Any) -> str | None:
    if body is None:
        return None
    try:
        return str(body.localStr(None) if hasattr(body, "localStr") else body)
    except Exception:
        return str(body)


# --- one SIP leg --------------------------------------------------------------------------------


class SipLegHandle:
    """One SIP dialog (a sippy UA) as the asyncio side sees it. Every method only queues work
    for the reactor thread; :attr:`events` receives what the leg does, in order."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self._endpoint = endpoint
        self._ua: Any = None
        self.events: asyncio.Queue[LegEvent] = asyncio.Queue()
        self._dead = False
        self._slot_freed = False

    # reactor thread → asyncio
    def _on_ua_event(self, event: Any, ua: Any) -> None:
        from sippy.CCEvents import (
            CCEventConnect,
            CCEventDisconnect,
            CCEventFail,
            CCEventPreConnect,
            CCEventRedirect,
            CCEventRing,
        )

        leg: LegEvent | None = None
        if isinstance(event, CCEventRing):
            code, _phrase, body = event.getData()
            leg = LegEvent("ring", code, _sdp_text(body), _q850(event))
        elif isinstance(event, (CCEventConnect, CCEventPreConnect)):
            code, _phrase, body = event.getData()
            leg = LegEvent("connect", code, _sdp_text(body))
        elif isinstance(event, (CCEventFail, CCEventRedirect)):
            data = event.getData()
            code = data[0] if isinstance(data, tuple) and data else 500
            leg = LegEvent("fail", int(code), None, _q850(event))
        elif isinstance(event, CCEventDisconnect):
            leg = LegEvent("disconnect", None, None, _q850(event))
        if leg is not None:
            self._endpoint._post(self.events.put_nowait, leg)

    def _on_over(self, *args: object) -> None:
        """The dialog failed or was disconnected: its slot is free again. (sippy keeps the UA
        a while longer to absorb retransmissions, then calls :meth:`_on_dead`.)"""
        if not self._slot_freed:
            self._slot_freed = True
            self._endpoint._released()

    def _on_dead(self, *args: object) -> None:
        self._on_over()
        if not self._dead:
            self._dead = True
            self._endpoint._post(self.events.put_nowait, LegEvent("dead"))

    def _send(self, event: Any) -> None:
        def go() -> None:
            if self._ua is not None and not self._ua.isDead():
                self._ua.recvEvent(event)

        _in_reactor(go)

    # asyncio → reactor thread
    def ring(self, status: int = 180, phrase: str = "Ringing", sdp: str | None = None) -> None:
        from sippy.CCEvents import CCEventRing

        self._send(CCEventRing((status, phrase, _body(sdp, ()))))

    def answer(self, sdp: str | None, headers: Sequence[tuple[str, str]] = ()) -> None:
        from sippy.CCEvents import CCEventConnect

        ev = CCEventConnect((200, "OK", _body(sdp, ())))
        ev.extra_headers = _headers(headers) or None
        self._send(ev)

    def refuse(self, status: int, phrase: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        from sippy.CCEvents import CCEventFail

        ev = CCEventFail((status, phrase))
        ev.extra_headers = _headers(headers) or None
        self._send(ev)

    def hang_up(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        """BYE a confirmed dialog, CANCEL a pending INVITE (sippy picks by dialog state)."""
        from sippy.CCEvents import CCEventDisconnect

        ev = CCEventDisconnect()
        ev.extra_headers = _headers(headers) or None
        self._send(ev)


# --- the endpoint -------------------------------------------------------------------------------

InviteHandler = Callable[[InboundInvite, SipLegHandle], None]


@dataclass
class _Counters:
    live: int = 0
    shed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SipEndpoint:
    """The gateway's SIP UA on ``config.host:config.port`` (UDP). ``on_invite`` is called in
    the asyncio loop for every admitted initial INVITE, with the leg already sending
    ``100 Trying``."""

    _taken = False

    def __init__(
        self,
        config: SipEndpointConfig,
        on_invite: InviteHandler,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self._on_invite = on_invite
        self._loop = loop
        self._global: dict[str, Any] = {}
        self.counters = _Counters()

    @property
    def live_calls(self) -> int:
        return self.counters.live

    @property
    def shed_calls(self) -> int:
        return self.counters.shed

    def _post(self, fn: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _released(self) -> None:
        with self.counters.lock:
            self.counters.live -= 1

    def _admit(self) -> bool:
        with self.counters.lock:
            if self.counters.live >= self.config.max_calls:
                self.counters.shed += 1
                return False
            self.counters.live += 1
            return True

    async def start(self) -> None:
        if SipEndpoint._taken:
            raise SipStackError("one SIP endpoint per process (sippy's SipConf is global)")
        self._loop = self._loop or asyncio.get_running_loop()
        from sippy.SipConf import SipConf
        from sippy.SipTransactionManager import SipTransactionManager
        from sippy.Udp_server import Udp_server, Udp_server_opts

        SipConf.my_address = self.config.host
        SipConf.my_port = self.config.port
        SipConf.my_uaname = self.config.user_agent
        self._global = {
            "_sip_address": self.config.host,
            "_sip_port": self.config.port,
            "_sip_logger": _SipLog(),
        }

        class OneWorker(Udp_server_opts):  # type: ignore[misc]
            # sippy defaults to three sender/receiver threads per socket, which lets a 180
            # and the 200 right behind it leave in either order; one keeps them in order
            nworkers = 1

        class TransactionManager(SipTransactionManager):  # type: ignore[misc]
            model_udp_server = (Udp_server, OneWorker)
            closed = False

            def transmitData(self, *args: Any, **kwargs: Any) -> Any:
                # after stop(): dialogs still winding down on sippy timers send nothing
                if self.closed:
                    return None
                return super().transmitData(*args, **kwargs)

            def handleIncoming(self, data: Any, ra: Any, server: Any, *args: Any) -> Any:
                raw = data if isinstance(data, bytes) else str(data).encode()
                why = _malformed(raw)
                if why is None:
                    return super().handleIncoming(data, ra, server, *args)
                # sippy is lenient here; the RFC 4475 answer is 400 (sippy writes it)
                logger.info("400 to a malformed request: %s", why)
                try:
                    from sippy.SipRequest import SipRequest

                    resp = SipRequest(raw.decode(errors="replace")).genResponse(400, why)
                    self.transmitMsg(server, resp, resp.getHFBody("via").getTAddr(), None)
                except Exception:  # not even sippy can read it: dropped
                    logger.info("dropped a malformed message")
                return None

            def newTransaction(self, msg: Any, *args: Any, **kwargs: Any) -> Any:
                # RFC 3261 §19.1.4: URI parameters such as transport= compare without
                # case; sippy only knows "udp", and many UAs write "UDP" in Contact
                address, transport = msg.getTarget()
                if isinstance(transport, str):
                    msg.setTarget((address, transport.lower()))
                return super().newTransaction(msg, *args, **kwargs)

        def create() -> None:
            self._global["_sip_tm"] = TransactionManager(self._global, self._on_request)

        try:
            await asyncio.to_thread(_in_reactor_sync, create)
        except OSError as exc:
            raise SipStackError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc}"
            ) from None
        SipEndpoint._taken = True
        logger.info("SIP listening on udp:%s:%d", self.config.host, self.config.port)

    async def stop(self) -> None:
        tm = self._global.get("_sip_tm")
        if tm is not None:

            def close() -> None:
                # not tm.shutdown(): it unsets state that the timers of dialogs still
                # winding down (RFC 3261 Timers D/H/J) use; close the sockets and go quiet
                tm.closed = True
                tm.l4r.shutdown()

            await asyncio.to_thread(_in_reactor_sync, close)
        SipEndpoint._taken = False

    # --- reactor thread: new requests -----------------------------------------------------

    def _on_request(self, req: Any, sip_t: Any) -> Any:
        method = req.getMethod()
        if not 0 <= req.getHFBody("cseq").getCSeqNum() < 2**31:
            # RFC 3261 §8.1.1.5: the CSeq number is below 2**31 (RFC 4475 §3.1.2.7 scalar02)
            return (req.genResponse(400, "Bad Request - CSeq Out Of Range"), None, None)
        if req.getHFBody("cseq").getCSeqMethod() != method:
            # RFC 4475 §3.1.2.10 (mismatch01): a CSeq method unlike the request's is a 400
            return (req.genResponse(400, "Bad Request - CSeq Method Mismatch"), None, None)
        if req.countHFs("content-length") and req.getHFBody("content-length").getNum() < 0:
            # RFC 4475 §3.1.2.4 (ncl): a negative Content-Length is malformed, 400
            return (req.genResponse(400, "Bad Request - Negative Content-Length"), None, None)
        if req.getHFBody("to").getTag() is not None:
            return (req.genResponse(481, "Call Leg/Transaction Does Not Exist"), None, None)
        if method == "INVITE":
            return self._on_invite_request(req, sip_t)
        if method == "OPTIONS":
            return (req.genResponse(200, "OK"), None, None)
        if method in ("ACK", "CANCEL"):
            return None
        return (req.genResponse(501, "Not Implemented"), None, None)

    def _on_invite_request(self, req: Any, sip_t: Any) -> Any:
        from sippy.UA import UA

        if not self._admit():
            resp = req.genResponse(503, "Service Unavailable")
            resp.appendHeader(_headers([("Retry-After", str(self.config.retry_after))])[0])
            return (resp, None, None)
        leg = SipLegHandle(self)
        ua = UA(
            self._global,
            event_cb=leg._on_ua_event,
            disc_cbs=(leg._on_over,),
            fail_cbs=(leg._on_over,),
            dead_cbs=(leg._on_dead,),
        )
        leg._ua = ua
        try:
            invite = _inbound_invite(req)
            rval = ua.recvRequest(req, sip_t)
        except Exception:
            logger.exception("INVITE the stack could not take")
            leg._on_dead()
            return (req.genResponse(400, "Bad Request"), None, None)
        self._post(self._on_invite, invite, leg)
        return rval

    # --- asyncio side: outbound calls -----------------------------------------------------

    def invite(self, outbound: OutboundInvite) -> SipLegHandle:
        """Send an INVITE to the trunk (the configured next hop); returns its leg."""
        trunk = self.config.trunk
        if trunk is None:
            raise SipStackError("no trunk configured for outbound calls", code="no-trunk")
        if not self._admit():
            raise SipStackError("too many calls", code="overloaded")
        leg = SipLegHandle(self)

        def go() -> None:
            from sippy.CCEvents import CCEventTry
            from sippy.UA import UA

            ua = UA(
                self._global,
                event_cb=leg._on_ua_event,
                nh_address=trunk,
                disc_cbs=(leg._on_over,),
                fail_cbs=(leg._on_over,),
                dead_cbs=(leg._on_dead,),
            )
            if self.config.no_reply is not None:
                ua.no_reply_time = self.config.no_reply
            leg._ua = ua
            body = _body(outbound.sdp, outbound.parts)
            event = CCEventTry(
                (None, outbound.from_user, outbound.to_user, body, None, outbound.from_name)
            )
            event.extra_headers = _headers(outbound.headers) or None
            ua.recvEvent(event)

        _in_reactor(go)
        return leg


def _inbound_invite(req: Any) -> InboundInvite:
    from_uri = req.getHFBody("from").getUri()
    body = req.getBody()
    identity = tuple(str(h.getBody()) for h in req.getHFs("identity"))
    source = req.getSource()
    return InboundInvite(
        call_id=str(req.getHFBody("call-id")),
        from_user=from_uri.url.username,
        from_name=from_uri.name,
        to_user=req.getRURI().username,
        sdp=_sdp_text(body),
        identity=identity,
        source=(str(source[0]), int(source[1])) if source else ("", 0),
    )
