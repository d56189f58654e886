"""Calls for one device: the asyncio face of the sans-I/O session engine (seed §6.1, v0.7 §12).

``CallAgent`` glues three things together:

* the ``EndpointEngine`` (``dsip.core.session``), which decides every state change, timer
  and message from verified input and an explicit ``now``;
* a ``SignalingClient``, which verifies everything that arrives and signs everything that
  leaves;
* a timer task that sleeps until the engine's next deadline and calls ``advance``.

Applications see ``Call`` objects with an event queue::

    call = await agent.call("did:web:example.com:users:bob")
    await call.wait_for("answered")         # progress/answered/ended/... events
    await call.send_ice([{"candidate": "...", "sdp_mid": "0", "sdp_m_line_index": 0}])
    await call.hangup()

    incoming = await agent.incoming()        # a Call in OFFERED state
    await incoming.answer()                  # ring + answer (two signed messages)

The seed's ``dsip.invite/answer/ice/update/bye/cancel`` map onto v0.7 ``invite``,
``answer``, ``info`` (``about: transport:webrtc``, trickle candidates), ``update``, ``bye``
and ``cancel``; ``dsip.error`` is v0.7 ``error``/``reject`` with a reason token
(see ``docs/errors.md`` for the 4xx/5xx/6xx mapping).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verified
from dsip.core.session import (
    Drop,
    Emission,
    EndpointEngine,
    FirstContactPolicy,
    Info,
    Media,
    Refused,
    Send,
    SessionState,
    TimerConfig,
    TimerFire,
    TimerStart,
    TimerStop,
    Ui,
)
from dsip.core.trust.policy import Decision
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError
from dsip.transport.base import ConnectionClosed

__all__ = ["DEFAULT_AUDIO_OFFER", "Call", "CallAgent", "CallEvent"]

logger = logging.getLogger("dsip.calls")

DEFAULT_AUDIO_OFFER: list[dict[str, Any]] = [
    {
        "type": "audio",
        "direction": "sendrecv",
        "codecs": [{"id": "codec:audio/opus", "sample_rates": [48000], "channels": [1, 2]}],
    }
]
DEFAULT_TRANSPORTS: list[dict[str, Any]] = [{"id": "transport:webrtc", "ice": "trickle"}]


@dataclass(frozen=True)
class CallEvent:
    """One thing that happened to a call: ``kind`` is the engine's UI/media vocabulary
    (``offered``, ``progress``, ``answered``, ``ended``, ``missed_call``, ``error``,
    ``update_offered``, ``update_rejected``, ``glare_retry``, ``media``, ``info``)."""

    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    message: Verified | None = None


class Call:
    """One session as the application sees it."""

    def __init__(self, agent: CallAgent, session: str, *, peer: str, role: str) -> None:
        self.agent = agent
        self.id = session
        self.peer = peer
        self.role = role
        self.events: asyncio.Queue[CallEvent] = asyncio.Queue()
        self.offer: dict[str, Any] = {}  # the invite (or last update) payload
        self.answer_payload: dict[str, Any] | None = None
        self.local_media: list[dict[str, Any]] = DEFAULT_AUDIO_OFFER
        self.local_transports: list[dict[str, Any]] = DEFAULT_TRANSPORTS
        self.pending_info: dict[str, Any] | None = None
        self.local_identity: dict[str, Any] | None = None  # invite ``identity`` (RCID, name)
        self.decision: Decision | None = None  # the trust policy's, when the agent screens

    @property
    def state(self) -> SessionState | None:
        view = self.agent.engine.session_view(self.id)
        return view.state if view else None

    async def next_event(self, timeout: float | None = None) -> CallEvent:
        async with asyncio.timeout(timeout):
            return await self.events.get()

    async def wait_for(self, kind: str, timeout: float | None = 30) -> CallEvent:
        """Skip events until one of ``kind``; ``ended`` of another kind raises."""
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.events.get()
                if ev.kind == kind:
                    return ev
                if ev.kind == "ended" and kind != "ended":
                    raise DsipError(
                        f"call ended ({ev.fields.get('reason')}) while waiting for {kind}",
                        code="call-ended",
                        reason=str(ev.fields.get("reason", "session.failed")),
                        remote=False,
                    )

    # --- actions ----------------------------------------------------------------------

    async def ring(self, ring_timeout: int | None = None) -> None:
        await self.agent._act(
            lambda now: self.agent.engine.alert(self.id, now=now, ring_timeout=ring_timeout)
        )

    async def answer(
        self,
        *,
        answered_by: str = "user",
        media: Sequence[Mapping[str, Any]] | None = None,
        transports: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Ring (if not ringing yet) and answer with a selection from the offer."""
        if media is not None:
            self.local_media = [dict(m) for m in media]
        else:
            self.local_media = _default_selection(self.offer.get("media", []))
        self.local_transports = [dict(t) for t in (transports or [{"id": "transport:webrtc"}])]
        if self.state is SessionState.OFFERED:
            await self.ring()
        await self.agent._act(
            lambda now: self.agent.engine.accept(self.id, now=now, answered_by=answered_by)
        )

    async def decline(self) -> None:
        if self.state is SessionState.OFFERED:
            await self.agent._act(
                lambda now: self.agent.engine.auto_reject(self.id, "user.declined", now=now)
            )
        else:
            await self.agent._act(lambda now: self.agent.engine.decline(self.id, now=now))

    async def cancel(self) -> None:
        await self.agent._act(lambda now: self.agent.engine.cancel(self.id, now=now))

    async def hangup(self, reason: str = "user.hangup") -> None:
        await self.agent._act(lambda now: self.agent.engine.hangup(self.id, now=now, reason=reason))

    async def update(
        self,
        media: Sequence[Mapping[str, Any]],
        *,
        transports: Sequence[Mapping[str, Any]] | None = None,
        answered_by: str | None = None,
    ) -> str:
        """Renegotiate (§12.8); returns the update's id."""
        self.local_media = [dict(m) for m in media]
        if transports is not None:
            self.local_transports = [dict(t) for t in transports]
        update_id = new_ulid(int(self.agent.clock() * 1000))
        await self.agent._act(
            lambda now: self.agent.engine.update(
                self.id, update_id, now=now, answered_by=answered_by
            )
        )
        return update_id

    async def accept_update(
        self,
        *,
        media: Sequence[Mapping[str, Any]] | None = None,
        answered_by: str = "user",
    ) -> None:
        """Answer the peer's outstanding ``update`` with a selection from its offer."""
        update_id = str(self.offer.get("id", ""))
        self.local_media = (
            [dict(m) for m in media]
            if media is not None
            else _default_selection(self.offer.get("media", []))
        )
        self.local_transports = [{"id": "transport:webrtc"}]
        await self.agent._act(
            lambda now: self.agent.engine.answer_update(
                self.id, update_id, now=now, answered_by=answered_by
            )
        )

    async def reject_update(self, reason: str = "media.unsupported") -> None:
        update_id = str(self.offer.get("id", ""))
        await self.agent._act(
            lambda now: self.agent.engine.reject_update(self.id, update_id, reason, now=now)
        )

    async def send_ice(
        self, candidates: Sequence[Mapping[str, Any]], *, end_of_candidates: bool = False
    ) -> None:
        """Trickle ICE candidates in a signed ``info`` (the seed's ``dsip.ice``, §12.12)."""
        self.pending_info = {
            "candidates": [dict(c) for c in candidates],
            "end_of_candidates": end_of_candidates,
        }
        await self.agent._act(
            lambda now: self.agent.engine.send_info(self.id, now=now, about="transport:webrtc")
        )


def _default_selection(offer_media: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Accept each offered stream with its first codec, answering the offered direction."""
    answer_dir = {
        "sendrecv": "sendrecv",
        "sendonly": "recvonly",
        "recvonly": "sendonly",
        "inactive": "inactive",
    }
    out = []
    for m in offer_media:
        codecs = m.get("codecs") or [{}]
        sel: dict[str, Any] = {
            "type": m.get("type"),
            "direction": answer_dir.get(str(m.get("direction")), "inactive"),
            "codecs": [{"id": codecs[0].get("id")}],
        }
        if "purpose" in m:
            sel["purpose"] = m["purpose"]
        out.append(sel)
    return out


class CallAgent:
    """All calls of one device over one signaling connection."""

    def __init__(
        self,
        client: SignalingClient,
        *,
        timers: TimerConfig | None = None,
        policy: FirstContactPolicy | None = None,
        clock: Callable[[], float] = time.time,
        screen: Callable[[Verified], Decision] | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        # Trust policy (dsip.core.trust.policy.endpoint_screen): each offered invite is
        # rung, kept silent, sent to voicemail or rejected by the rule that fires.
        self.screen = screen
        self.voicemail: list[Call] = []  # invites the policy stored for later
        self._screening: list[str] = []
        self.engine = EndpointEngine(
            client.device.did, client.identity, timers=timers, policy=policy
        )
        self.calls: dict[str, Call] = {}
        self._incoming: asyncio.Queue[Call] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer_wakeup = asyncio.Event()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._timer_loop()),
        ]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.client.close()

    async def __aenter__(self) -> CallAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- API --------------------------------------------------------------------------

    async def call(
        self,
        to: str,
        *,
        media: Sequence[Mapping[str, Any]] | None = None,
        transports: Sequence[Mapping[str, Any]] | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> Call:
        """Place a call: sends the signed invite and returns the ``Call`` (INVITING).
        ``identity``: the invite's v0.7 ``identity`` member (display name, RCID claims)."""
        session = new_ulid(int(self.clock() * 1000))
        call = Call(self, session, peer=to, role="initiator")
        call.local_identity = dict(identity) if identity is not None else None
        call.local_media = [dict(m) for m in (media or DEFAULT_AUDIO_OFFER)]
        call.local_transports = [dict(t) for t in (transports or DEFAULT_TRANSPORTS)]
        self.calls[session] = call
        await self._act(lambda now: self.engine.place_call(session, to, now=now))
        return call

    async def incoming(self, timeout: float | None = None) -> Call:
        """The next offered call (state OFFERED)."""
        async with asyncio.timeout(timeout):
            return await self._incoming.get()

    # --- plumbing ---------------------------------------------------------------------

    async def _act(self, action: Callable[[int], list[Emission]]) -> None:
        async with self._lock:
            emissions = action(int(self.clock()))
            await self._apply(emissions, None)

    async def _receive_loop(self) -> None:
        while True:
            try:
                v = await self.client.recv()
            except ConnectionClosed:
                logger.info("signaling connection closed")
                return
            msg = dict(v.payload)
            # The engine sees legs by device: ``from`` is the signing device, and the
            # directory records which identity it verified for (§7.4, §12.7).
            msg["from"] = v.signer
            self.engine.directory[v.signer] = v.identity
            async with self._lock:
                if v.type == "invite":
                    self._prepare_incoming(v)
                emissions = self.engine.receive(msg, now=int(self.clock()))
                await self._apply(emissions, v)
                if self._screening:
                    await self._screen_offered(v)

    def _prepare_incoming(self, v: Verified) -> None:
        if v.id not in self.calls:
            call = Call(self, v.id, peer=v.identity, role="responder")
            call.offer = dict(v.payload)
            self.calls[v.id] = call

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self.clock())
            self._timer_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wakeup.wait()
            if deadline is not None and self.clock() >= deadline:
                async with self._lock:
                    await self._apply(self.engine.advance(int(self.clock())), None)

    async def _apply(self, emissions: list[Emission], msg: Verified | None) -> None:
        for em in emissions:
            if isinstance(em, Send):
                await self._send(em)
            elif isinstance(em, (TimerStart, TimerStop, TimerFire)):
                self._timer_wakeup.set()
            elif isinstance(em, Ui):
                self._surface(em, msg)
            elif isinstance(em, Media):
                self._event(em.session, CallEvent("media", {"action": em.action}, msg))
            elif isinstance(em, Info):
                data = msg.payload.get("data") if msg else None
                self._event(em.session, CallEvent("info", {"about": em.about, "data": data}, msg))
            elif isinstance(em, Refused):
                raise DsipError(
                    f"the session engine refused: {em.reason}", code="refused", remote=False
                )
            elif isinstance(em, Drop):
                logger.debug("dropped: %s", em)

    async def _screen_offered(self, v: Verified) -> None:
        """Act on the policy's decision for an invite that reached OFFERED: ``ring``
        alerts (progress ringing) and hands the call to :meth:`incoming`; ``silent`` hands
        it over without ringing; ``voicemail`` stores it in :attr:`voicemail` and rejects
        with ``endpoint.unavailable`` (or the rule's reason); ``reject`` rejects with the
        rule's reason. Every call gets a ``screened`` event naming the rule."""
        assert self.screen is not None
        while self._screening:
            session = self._screening.pop(0)
            call = self.calls[session]
            decision = self.screen(v)
            call.decision = decision
            now = int(self.clock())
            self._event(
                session,
                CallEvent(
                    "screened",
                    {"action": decision.action, "rule": decision.rule, "why": decision.explain()},
                    v,
                ),
            )
            if decision.action == "ring":
                emissions = self.engine.alert(session, now=now)
                self._incoming.put_nowait(call)
            elif decision.action == "silent":
                emissions = []
                self._incoming.put_nowait(call)
            elif decision.action == "voicemail":
                self.voicemail.append(call)
                reason = decision.reason or "endpoint.unavailable"
                emissions = self.engine.auto_reject(session, reason, now=now)
            else:
                reason = decision.reason or "policy.trust-insufficient"
                emissions = self.engine.auto_reject(session, reason, now=now)
            await self._apply(emissions, None)

    def _surface(self, ui: Ui, msg: Verified | None) -> None:
        if ui.kind == "offered" and ui.session in self.calls:
            if self.screen is None:
                self._incoming.put_nowait(self.calls[ui.session])
            else:
                self._screening.append(ui.session)
        if ui.kind == "update_offered" and msg is not None and ui.session in self.calls:
            self.calls[ui.session].offer = dict(msg.payload)
        if ui.kind == "answered" and msg is not None and ui.session in self.calls:
            self.calls[ui.session].answer_payload = dict(msg.payload)
        self._event(ui.session, CallEvent(ui.kind, dict(ui.fields), msg))

    def _event(self, session: str | None, ev: CallEvent) -> None:
        call = self.calls.get(session or "")
        if call is not None:
            call.events.put_nowait(ev)
        elif ev.kind == "error":
            logger.info("error for no call: %s", ev.fields)

    async def _send(self, send: Send) -> None:
        fields = send.to_payload_fields()
        msg_type = fields.pop("type")
        msg_id = fields.pop("id", None)
        call = self.calls.get(send.session or "")
        if msg_type == "invite":
            fields.pop("session", None)
            msg_id = send.session
            fields.update(
                media=call.local_media if call else DEFAULT_AUDIO_OFFER,
                transports=call.local_transports if call else DEFAULT_TRANSPORTS,
            )
            if call is not None and call.local_identity is not None:
                fields["identity"] = call.local_identity
        elif msg_type in ("answer", "update") and call is not None:
            fields.update(media=call.local_media, transports=call.local_transports)
            if msg_type == "answer" and "in_reply_to" not in fields:
                fields["transports"] = call.local_transports[:1]
        elif msg_type == "info" and call is not None:
            fields["data"] = call.pending_info or {"candidates": [], "end_of_candidates": True}
            fields.setdefault("about", "transport:webrtc")
        payload = self.client.build(msg_type, **fields)
        if msg_id:
            payload["id"] = msg_id
        if call is not None and msg_type in ("invite", "update"):
            call.offer = payload if call.role == "initiator" else call.offer
        try:
            await self.client.send(payload)
        except ConnectionClosed:
            logger.warning("could not send %s: signaling connection closed", msg_type)
