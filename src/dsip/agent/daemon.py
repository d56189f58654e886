"""``dsip agent``: the DSIP Agent as one long-running daemon (seed §11, §21.E).

One process holds one identity's wallet key, resolver cache, signaling connection, call and
messaging engines, RCID rendering and (when configured) the presence publisher, and offers
them to the CLI and to local UIs through an API on 127.0.0.1:

* ``GET /v1/status`` · ``GET /v1/lookup?target=DID-or-acct`` (§5.2, every step named)
* ``POST /v1/calls {"to", "tone"?}`` · ``GET /v1/calls`` ·
  ``POST /v1/calls/{id}/answer {"tone"?}|decline|hangup`` · ``GET /v1/calls/{id}/audio``
  (with ``tone``, real WebRTC audio flows — aiortc, a sine at that frequency standing in for
  a microphone — and ``/audio`` reports the dominant frequency heard from the peer)
* ``POST /v1/messages {"to", "text"}`` (X3DH + Double Ratchet) · ``GET /v1/messages?peer=``
* ``POST /v1/introductions {"to", "purpose", "pow"?}`` (v0.7 first contact, optionally with
  a proof of work) — answers with the relay's refusal, if any
* ``POST /v1/presence`` (publish now) · ``GET /v1/events`` (WebSocket: one JSON object per
  event — incoming calls with their RCID display, call progress, messages, errors)

Every request carries ``Authorization: Bearer <token>``; the token is minted at start and
written to ``<home>/agent/<identity>.token`` with mode 0600 (only this user can read it),
beside ``<identity>.json`` (port, pid, DID). A request without the token gets 401 and does
nothing. The API listens on loopback only and refuses any other bind address.

One signaling connection serves every engine: a demultiplexer reads each verified envelope
once and hands session types (invite, progress, answer, …) to the call engine and the rest
(messages, prekey replies, errors without a session) to the messaging engine.

HTTP server: ``aiohttp`` (already the project's HTTP stack for WebFinger and the resolver).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import WSMsgType, web

from dsip.agent.calls import Call, CallAgent, CallEvent
from dsip.agent.credentials import fetch_status_lists, resolve_issuers
from dsip.agent.lookup import Lookup
from dsip.agent.messaging import MessagingAgent
from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient
from dsip.agent.wallet import Wallet
from dsip.core.envelope import Verified
from dsip.core.identity import KeyPair
from dsip.core.session import SessionState
from dsip.core.trust.rcid import (
    MAX_CREDENTIALS,
    IssuerTrust,
    RcidDisplay,
    identity_with_rcid,
    make_rcid,
    rcid_of,
    render_caller,
)
from dsip.errors import ConfigError, DsipError, TransportError, WalletError
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import WebRtcMedia, ice_servers_from
from dsip.messaging.messages import Messenger
from dsip.messaging.session_store import SessionStore

__all__ = ["AgentDaemon", "AgentSettings", "ApiClient", "runtime_paths"]

logger = logging.getLogger("dsip.agent.daemon")

CALL_TYPES = frozenset(
    {"invite", "progress", "answer", "reject", "cancel", "update", "info", "bye", "grant"}
)
EVENT_BACKLOG = 256  # events kept for a subscriber that reads slowly; older ones are dropped


@dataclass(frozen=True)
class AgentSettings:
    """What one agent runs with. ``relay``: ws(s):// or quic:// URI (default: the identity's
    own ``ws`` service endpoint); ``cafile``: extra CA for the relay and did:web hosts."""

    home: Path
    identity: str
    relay: str | None = None
    cafile: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 0
    trusted_issuers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    issuer_names: Mapping[str, str] = field(default_factory=dict)
    display_name: str | None = None  # shown to callees as a claim unless a credential vouches
    credentials: tuple[Mapping[str, Any] | str, ...] = ()  # presented as rcid.v1 in invites
    dht_bootstrap: tuple[str, ...] = ()  # multiaddrs: publish presence and look up via the DHT
    geohash: str | None = None  # coarse location in presence (privacy mode "normal", §20.3)
    presence_ttl: int = 120
    push_subscription: Mapping[str, Any] | None = None  # Web Push channel the relay may wake
    policy_file: Path | None = None  # user trust policy (TOML): ring/silent/voicemail/reject

    def __post_init__(self) -> None:
        if self.api_host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError("the agent API listens on loopback only (127.0.0.1 or ::1)")
        if not 0 <= self.api_port < 65536:
            raise ConfigError(f"agent API port {self.api_port} is not a TCP port")


def runtime_paths(home: Path, identity: str) -> tuple[Path, Path]:
    """``(<home>/agent/<identity>.json, <home>/agent/<identity>.token)``."""
    base = home / "agent"
    return base / f"{identity}.json", base / f"{identity}.token"


class _View:
    """What one engine sees of the shared :class:`SignalingClient`: the same connection,
    but ``recv`` returns only the envelopes the demultiplexer routed to it."""

    def __init__(self, client: SignalingClient) -> None:
        self._client = client
        self.queue: asyncio.Queue[Verified | BaseException] = asyncio.Queue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def recv(self, timeout: float | None = None) -> Verified:
        async with asyncio.timeout(timeout):
            item = await self.queue.get()
        if isinstance(item, BaseException):
            self.queue.put_nowait(item)  # every later reader sees the end too
            raise item
        return item

    async def close(self) -> None:
        return None  # the daemon owns the connection


class AgentDaemon:
    """One identity's agent: engines + the local API."""

    def __init__(self, settings: AgentSettings, passphrase: str) -> None:
        self.settings = settings
        self._passphrase = passphrase
        self.wallet = Wallet(settings.home)
        self.key: KeyPair | None = None
        self.did = ""
        self._verify = self._tls_verify()  # one TLS trust for did:web, status lists
        self.resolver = DidResolver(verify=self._verify)
        self.client: SignalingClient | None = None
        self.calls: CallAgent | None = None
        self.messaging: MessagingAgent | None = None
        self.trust = IssuerTrust.of(
            {k: list(v) for k, v in settings.trusted_issuers.items()}, settings.issuer_names
        )
        self.token = secrets.token_urlsafe(32)
        self.port: int | None = None
        self.started_at = time.time()
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.stopped = asyncio.Event()
        self._inbox: asyncio.Queue[Verified] = asyncio.Queue()
        self._relay_uri = ""
        self.media: dict[str, _Media] = {}
        self._pending: dict[str, asyncio.Future[Verified]] = {}
        self.dht: Any = None  # dsip.dht.DhtClient when presence is on
        self.presence: Any = None  # dsip.dht.PresencePublisher
        self._stopper: asyncio.Future[None] | None = None

    def _tls_verify(self) -> Any:
        if self.settings.cafile is None:
            return True
        import ssl

        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=self.settings.cafile)
        return ctx

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        screen = None
        if self.settings.policy_file is not None:  # a bad file refuses to start, never allows
            from dsip.core.trust.policy import TrustPolicy, endpoint_screen

            screen = endpoint_screen(
                TrustPolicy.load(self.settings.policy_file), documents=self.resolver.cached
            )
        entry = self.wallet.entry(self.settings.identity)
        self.key = self.wallet.unlock(self.settings.identity, self._passphrase)
        self.did = entry.did
        relay = self.settings.relay or next(iter(entry.services.get("ws", [])), None)
        if relay is None:
            raise WalletError(
                f"{self.settings.identity} advertises no ws endpoint: pass --relay URI",
                code="no-relay",
            )
        store_path = self.settings.home / "messages" / f"{self.settings.identity}.db"
        store_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = SessionStore.open(store_path, passphrase=self._passphrase)
        client = SignalingClient(self.key, resolver=self.resolver)
        await client.connect(relay, cafile=self.settings.cafile)
        self.client = client
        call_view, msg_view = _View(client), _View(client)
        self.calls = CallAgent(cast(SignalingClient, call_view), screen=screen)
        self.messaging = MessagingAgent(cast(SignalingClient, msg_view), Messenger(self.key, store))
        await self.calls.start()
        self._relay_uri = relay
        self._spawn(self._demux(call_view, msg_view))
        self._spawn(self._incoming_calls())
        self._spawn(self._incoming_messages())
        with contextlib.suppress(DsipError):  # peers can reach us by message right away
            await self.messaging.publish_prekeys(target=20)
        if self.settings.push_subscription is not None:
            await client.send(
                client.build(
                    "push-subscription",
                    to=client.relay_did,
                    profiles=[],
                    **self.settings.push_subscription,
                )
            )
        if self.settings.dht_bootstrap:
            await self._start_presence(relay)
        await self._serve_api()
        logger.info("agent %s up: relay %s, API port %s", self.did, relay, self.port)

    async def _start_presence(self, relay: str) -> None:
        """A client-mode DHT node (stores nothing for others) and the presence publisher."""
        from dsip.core.presence import make_presence
        from dsip.dht import DhtClient, DhtNodeConfig, PresencePublisher

        key = self.key
        assert key is not None
        self.dht = await DhtClient.start(
            DhtNodeConfig(server=False, bootstrap=tuple(self.settings.dht_bootstrap))
        )
        geohash, ttl = self.settings.geohash, self.settings.presence_ttl
        self.presence = PresencePublisher(
            self.dht,
            lambda seq, now: make_presence(
                key, endpoints={"ws": [relay]}, seq=seq, now=now, ttl=ttl, geohash=geohash
            ),
            region_precisions=(4,) if geohash else (),
        )
        await self.presence.publish()
        self.presence.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.presence is not None:
            await self.presence.stop()
        if self.dht is not None:
            await self.dht.close()
        if self.calls is not None:
            await self.calls.close()
        if self.client is not None:
            await self.client.close()
        if self.messaging is not None:
            self.messaging.messenger.store.close()
        if self._runner is not None:
            await self._runner.cleanup()
        info, token = runtime_paths(self.settings.home, self.settings.identity)
        for path in (info, token):
            path.unlink(missing_ok=True)
        await self.resolver.aclose()
        self.stopped.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- engines ----------------------------------------------------------------------------

    async def _demux(self, calls: _View, msgs: _View) -> None:
        while True:
            assert self.client is not None
            try:
                v = await self.client.recv()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the relay went away: the engines keep their state
                self.emit({"event": "relay.disconnected", "detail": str(exc)[:200]})
                await self._reconnect(calls, msgs)
                continue
            has_session = isinstance(v.payload.get("session"), str)
            waiting = self._pending.get(str(v.payload.get("in_reply_to")))
            if v.type == "error" and waiting is not None and not waiting.done():
                waiting.set_result(v)  # a refusal of something this API sent
            elif v.type == "introduction":
                self.emit(
                    {
                        "event": "introduction",
                        "from": v.identity,
                        "purpose": v.payload.get("purpose"),
                        "id": v.id,
                    }
                )
            elif v.type in CALL_TYPES or (v.type == "error" and has_session):
                calls.queue.put_nowait(v)
            elif v.type == "msg":
                self._inbox.put_nowait(v)
            else:  # replies to the messaging engine's requests (prekeys), relay errors
                msgs.queue.put_nowait(v)

    async def _reconnect(self, calls: _View, msgs: _View) -> None:
        """Dial the relay again (backoff 0.5 s doubling to 10 s) and bind the same device;
        calls and message sessions carry on over the new connection."""
        assert self.key is not None
        delay = 0.5
        while True:
            await asyncio.sleep(delay)
            client = SignalingClient(self.key, resolver=self.resolver)
            try:
                await client.connect(self._relay_uri, cafile=self.settings.cafile)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.info("relay still unreachable (%s); next try in %.1f s", exc, delay)
                delay = min(delay * 2, 10.0)
                continue
            old, self.client = self.client, client
            calls._client = msgs._client = client
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.close()
            self.emit({"event": "relay.reconnected", "relay": client.relay_did})
            return

    async def _incoming_calls(self) -> None:
        assert self.calls is not None
        while True:
            call = await self.calls.incoming()
            display = await self._render(call)
            with contextlib.suppress(DsipError):
                await call.ring()  # the caller hears ringing while the user decides
            self.emit(
                {
                    "event": "call.incoming",
                    "session": call.id,
                    "from": call.peer,
                    "rcid": _display_json(display) if display else None,
                }
            )
            self._spawn(self._watch(call))

    async def _render(self, call: Call) -> RcidDisplay | None:
        """The caller ID to show: every presented credential checked, after fetching what
        that needs (issuer did:web documents, status lists; 5 s at most — what is missing
        then shows as unverified, never as verified)."""
        if not call.offer:
            return None
        rcid = rcid_of(call.offer)
        presented = rcid.get("credentials") if rcid is not None else None
        status: Any = None
        if isinstance(presented, list) and presented:
            items = presented[:MAX_CREDENTIALS]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await resolve_issuers(items, self.resolver)
                    status = await fetch_status_lists(items, verify=self._verify)
        return render_caller(
            call.offer,
            call.peer,
            now=int(time.time()),
            documents=self.resolver.cached,
            trust=self.trust,
            status_lists=status,
        )

    async def _watch(self, call: Call) -> None:
        try:
            while True:
                ev: CallEvent = await call.next_event()
                self.emit({"event": f"call.{ev.kind}", "session": call.id, **_jsonable(ev.fields)})
                if ev.kind == "answered" and call.id in self.media and ev.message is not None:
                    self._spawn(self._media_up(call, ev.message.payload))
                if ev.kind == "ended":
                    return
        finally:
            await self._media_down(call.id)

    # --- media (aiortc; a tone stands in for the microphone of a daemon) ---------------------

    async def _media_up(self, call: Call, answer: Mapping[str, Any] | None) -> None:
        """Connect WebRTC for ``call`` and start listening to what the peer sends."""
        entry = self.media.get(call.id)
        if entry is None:
            return
        try:
            if answer is not None:
                await entry.rtc.accept(answer)
            await entry.rtc.wait_connected(15)
            entry.heard = ToneDetector(await entry.rtc.next_track("audio"))
        except (DsipError, TimeoutError) as exc:
            self.emit({"event": "call.audio-failed", "session": call.id, "detail": str(exc)[:200]})
            return
        self.emit({"event": "call.audio", "session": call.id, "state": "connected"})

    async def _media_down(self, session: str) -> None:
        entry = self.media.pop(session, None)
        if entry is not None:
            if entry.heard is not None:
                entry.heard.stop()
            await entry.rtc.close()

    async def _incoming_messages(self) -> None:
        """Decrypt each ``msg`` in arrival order (the ratchet needs that order per peer)."""
        assert self.messaging is not None
        while True:
            v = await self._inbox.get()
            try:
                received = await self.messaging.accept(v)
            except DsipError as exc:  # forged, replayed, undecryptable: refused, nothing kept
                self.emit({"event": "message.refused", "code": exc.code, "reason": exc.reason})
                continue
            if received is None:
                continue  # a redelivery of one already accepted
            self.emit(
                {
                    "event": "message",
                    "from": received.sender_identity,
                    "type": received.message.get("type"),
                    "body": received.message.get("body"),
                }
            )

    # --- events -----------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        event.setdefault("at", time.time())
        for queue in list(self._subscribers):
            if queue.qsize() >= EVENT_BACKLOG:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    # --- API --------------------------------------------------------------------------------

    async def _serve_api(self) -> None:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024)
        app.add_routes(
            [
                web.get("/v1/status", self._status),
                web.get("/v1/lookup", self._lookup),
                web.get("/v1/calls", self._list_calls),
                web.post("/v1/calls", self._place_call),
                web.post("/v1/calls/{session}/{action}", self._call_action),
                web.get("/v1/calls/{session}/audio", self._audio),
                web.get("/v1/messages", self._history),
                web.post("/v1/introductions", self._introduce),
                web.post("/v1/messages", self._send_message),
                web.get("/v1/events", self._events),
                web.post("/v1/shutdown", self._shutdown),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.api_host, self.settings.api_port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        info, token = runtime_paths(self.settings.home, self.settings.identity)
        info.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token)
        os.chmod(token, 0o600)
        tmp = info.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "did": self.did,
                    "port": self.port,
                    "host": self.settings.api_host,
                    "pid": os.getpid(),
                }
            )
        )
        tmp.replace(info)

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(
                401, "unauthorized", "transport.routing-refused", "missing or wrong token"
            )
        try:
            return cast(web.StreamResponse, await handler(request))
        except DsipError as exc:
            return _error(400, exc.code, exc.reason, exc.message)
        except TimeoutError:
            return _error(504, "timeout", "session.timeout", "no answer in time")

    async def _status(self, request: web.Request) -> web.Response:
        assert self.client is not None
        return web.json_response(
            {
                "did": self.did,
                "device": self.key.did if self.key else None,
                "relay": self.client.relay_did,
                "connected": self.client.connected,
                "calls": len(self.calls.calls) if self.calls else 0,
                "uptime_s": round(time.time() - self.started_at, 1),
            }
        )

    async def _lookup(self, request: web.Request) -> web.Response:
        target = request.query.get("target", "")
        if not target:
            return _error(400, "bad-request", "transport.routing-refused", "target= is required")
        dht = None
        if self.dht is not None:
            from dsip.dht import LookupSource

            dht = LookupSource(self.dht)
        route = await Lookup(self.resolver, dht=dht).locate(target)
        return web.json_response(
            {
                "did": route.did,
                "path": route.path,
                "endpoints": route.endpoints,
                "steps": route.explain(),
            }
        )

    async def _list_calls(self, request: web.Request) -> web.Response:
        assert self.calls is not None
        return web.json_response(
            [
                {
                    "session": c.id,
                    "peer": c.peer,
                    "role": c.role,
                    "state": str(c.state.value) if c.state is not None else "ended",
                }
                for c in self.calls.calls.values()
            ]
        )

    async def _place_call(self, request: web.Request) -> web.Response:
        assert self.calls is not None
        body = await _json_body(request)
        to = body.get("to")
        if not isinstance(to, str) or not to.startswith("did:"):
            return _error(400, "bad-request", "transport.routing-refused", '"to" must be a DID')
        tone = _tone(body)
        identity = self._identity()
        if tone is None:
            call = await self.calls.call(to, identity=identity)
        else:
            rtc = WebRtcMedia(audio=ToneTrack(tone), ice_servers=self._ice_servers())
            media, transports = await rtc.offer()
            call = await self.calls.call(to, media=media, transports=transports, identity=identity)
            self.media[call.id] = _Media(rtc)
        self._spawn(self._watch(call))
        return web.json_response({"session": call.id}, status=201)

    def _ice_servers(self) -> list[Any]:
        """TURN from the relay hello (short-lived REST credentials), when the relay offers it."""
        return ice_servers_from(self.client.capabilities) if self.client is not None else []

    def _identity(self) -> dict[str, Any] | None:
        """The invite's ``identity``: our name claim and credentials as ``rcid.v1``."""
        if not self.settings.credentials:
            name = self.settings.display_name
            return {"display_name": name, "claims": []} if name else None
        rcid = make_rcid(self.settings.credentials, display_name=self.settings.display_name)
        return identity_with_rcid(rcid)

    async def _call_action(self, request: web.Request) -> web.Response:
        assert self.calls is not None
        session, action = request.match_info["session"], request.match_info["action"]
        call = self.calls.calls.get(session)
        if call is None:
            return _error(404, "unknown-session", "session.unknown-session", "no such call")
        if action == "answer":
            tone = _tone(await _json_body(request)) if request.can_read_body else None
            if tone is None:
                await call.answer()
            else:
                rtc = WebRtcMedia(audio=ToneTrack(tone), ice_servers=self._ice_servers())
                self.media[session] = _Media(rtc)
                selection, transports = await rtc.answer(call.offer)
                await call.answer(media=selection, transports=transports)
                self._spawn(self._media_up(call, None))
        elif action == "decline":
            await call.decline()
        elif action == "hangup":
            await (
                call.cancel() if call.role == "initiator" and not _answered(call) else call.hangup()
            )
        else:
            return _error(404, "bad-request", "transport.routing-refused", f"no action {action!r}")
        return web.json_response({"session": session, "done": action})

    async def _audio(self, request: web.Request) -> web.Response:
        entry = self.media.get(request.match_info["session"])
        if entry is None or entry.heard is None:
            return _error(404, "no-media", "session.unknown-session", "no audio on this call")
        heard = entry.heard
        return web.json_response({"frames": heard.frames, "frequency": round(heard.frequency(), 1)})

    async def _send_message(self, request: web.Request) -> web.Response:
        assert self.messaging is not None
        body = await _json_body(request)
        to, text = body.get("to"), body.get("text")
        if not isinstance(to, str) or not to.startswith("did:") or not isinstance(text, str):
            return _error(
                400, "bad-request", "transport.routing-refused", '"to" (DID) and "text" required'
            )
        sent = await self.messaging.send_text(to, text)
        return web.json_response({"id": sent.id, "devices": len(sent.outbound)}, status=201)

    async def _introduce(self, request: web.Request) -> web.Response:
        """v0.7 first contact: an ``introduction`` (optionally with a proof of work of
        ``pow`` bits); answers whether the relay refused it (within ``wait`` seconds)."""
        assert self.client is not None
        body = await _json_body(request)
        to, purpose, bits = body.get("to"), body.get("purpose", ""), body.get("pow")
        if not isinstance(to, str) or not to.startswith("did:") or not isinstance(purpose, str):
            return _error(400, "bad-request", "transport.routing-refused", '"to" must be a DID')
        if bits is not None and (
            isinstance(bits, bool) or not isinstance(bits, int) or not 0 < bits <= 28
        ):
            return _error(400, "bad-request", "transport.routing-refused", '"pow" is 1-28 bits')
        payload = self.client.build(
            "introduction",
            to=to,
            ttl=3600,
            purpose=purpose[:200],
            identity=self._identity() or {"claims": []},
        )
        if bits:
            from dsip.core.trust.first_contact import pow_claim

            claim = await asyncio.to_thread(pow_claim, payload, bits)
            payload["identity"].setdefault("claims", []).append(claim)
        waiting: asyncio.Future[Verified] = asyncio.get_running_loop().create_future()
        self._pending[payload["id"]] = waiting
        try:
            await self.client.send(payload)
            try:
                refusal = await asyncio.wait_for(waiting, float(body.get("wait", 1.5)))
            except TimeoutError:
                return web.json_response({"id": payload["id"], "refused": None}, status=201)
        finally:
            self._pending.pop(payload["id"], None)
        return web.json_response(
            {
                "id": payload["id"],
                "refused": refusal.payload.get("reason"),
                "detail": refusal.payload.get("detail"),
            },
            status=200,
        )

    async def _history(self, request: web.Request) -> web.Response:
        assert self.messaging is not None
        peer = request.query.get("peer")
        return web.json_response(
            [
                {"peer": m.peer_identity, "author": m.author, "sent_at": m.sent_at, **m.body}
                for m in self.messaging.messenger.history(peer)
            ]
        )

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        async with self.subscribe() as queue:
            # first event: the subscription is live, so nothing after this can be missed
            await ws.send_str(json.dumps({"event": "subscribed", "did": self.did}))
            reader = asyncio.create_task(_drain_ws(ws))
            try:
                while not ws.closed:
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait({getter, reader}, return_when="FIRST_COMPLETED")
                    if getter not in done:
                        getter.cancel()
                        break
                    await ws.send_str(json.dumps(getter.result()))
            finally:
                reader.cancel()
        return ws

    async def _shutdown(self, request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.1, lambda: self._spawn_stop())
        return web.json_response({"stopping": True})

    def _spawn_stop(self) -> None:
        if self._stopper is None:
            self._stopper = asyncio.ensure_future(self.stop())


@dataclass
class _Media:
    rtc: WebRtcMedia
    heard: ToneDetector | None = None


def _tone(body: Mapping[str, Any]) -> float | None:
    """``"tone": Hz`` asks for real audio: a sine at that frequency instead of a microphone."""
    tone = body.get("tone")
    if tone is None:
        return None
    if isinstance(tone, bool) or not isinstance(tone, int | float) or not 100 <= tone <= 4000:
        raise TransportError('"tone" must be a frequency in Hz (100-4000)', code="bad-request")
    return float(tone)


async def _drain_ws(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            return


def _answered(call: Call) -> bool:
    return call.state not in (SessionState.INVITING, SessionState.PROCEEDING)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        raise TransportError("the request body is not JSON", code="bad-request") from None
    if not isinstance(body, dict):
        raise TransportError("the request body must be a JSON object", code="bad-request")
    return body


def _error(status: int, code: str, reason: str, message: str) -> web.Response:
    return web.json_response({"error": code, "reason": reason, "message": message}, status=status)


def _jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(fields), default=str))  # type: ignore[no-any-return]


def _display_json(d: RcidDisplay) -> dict[str, Any]:
    return {
        "name": d.name,
        "name_verified": d.name_verified,
        "name_basis": d.name_basis,
        "identity_basis": d.identity_basis,
        "verified_by": list(d.verified_by),
        "unverified": list(d.unverified),
        "organization": d.organization,
        "problem": d.problem,
    }


class ApiClient:
    """The CLI's side of the local API: reads the port and token the agent wrote."""

    def __init__(self, home: Path, identity: str) -> None:
        info_path, token_path = runtime_paths(home, identity)
        try:
            info = json.loads(info_path.read_text())
            self.token = token_path.read_text().strip()
        except (OSError, ValueError):
            raise ConfigError(
                f"no agent is running for {identity} (start one: dsip agent run --id {identity})"
            ) from None
        self.base = f"http://{info.get('host', '127.0.0.1')}:{int(info['port'])}"

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        async with httpx.AsyncClient(timeout=60) as http:
            try:
                resp = await http.request(
                    method,
                    self.base + path,
                    json=body,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
            except httpx.TransportError as exc:
                raise TransportError(
                    f"the agent does not answer: {exc}", code="agent-down"
                ) from None
        data = resp.json()
        if resp.status_code >= 400:
            raise TransportError(
                str(data.get("message", resp.status_code)),
                code=str(data.get("error", "agent-error")),
                reason=str(data.get("reason", "transport.routing-refused")),
            )
        return data

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        import aiohttp

        url = self.base.replace("http://", "ws://") + "/v1/events"
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, headers={"Authorization": f"Bearer {self.token}"}) as ws,
        ):
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    yield json.loads(msg.data)
