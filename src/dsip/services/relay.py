"""The relay / homeserver (§13.2–§13.3): binds devices, routes envelopes, stores for the offline.

Per connection:

1. The first envelope must be a ``hello`` within ``hello_timeout_s``; anything else gets a
   signed ``error transport.hello-required`` and the connection stays open for a hello.
   A verified hello binds (device, identity); a new hello from an already-bound device
   replaces its older connection (§13.2). The relay answers with its own signed hello.
2. Every later envelope is verified (the full pipeline, shared duplicate-id store), must be
   signed by the bound device, passes the per-IP, per-DID and per-DID invite token buckets,
   and is routed by ``to``: to the bound device, or to every bound device of the identity
   (multi-device fan-out; the sender's own connection excluded).
3. No live device: a *known* identity (one that completed a hello here within the retention
   window) gets the envelope stored — one transaction — until delivered and acknowledged
   (``ack``, profile store-and-forward/1.0) or expired; an unknown identity gets
   ``error transport.unknown-recipient``, except introductions, which are held silently
   (§19.4 anti-enumeration).

A relay never silently drops an envelope on a live connection (§13.2): a refusal is a
signed ``error`` with the reason token. A slow reader cannot stall anyone else: each
connection has a bounded send queue; when it is full the connection is closed and what
could not be sent is stored for the device's next binding.

Federation (``dsip.services.federation``) adds clearly marked hooks: a ``hello`` carrying
``federation/1.0`` from a relay identity binds a *peer relay*, whose envelopes are limited
per origin, delivered only locally and acknowledged with a custody ``ack``; an envelope for a
DID neither bound nor known here goes to the outbox of the relay its DID document names.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsip.agent.resolver import DidResolver
from dsip.config import RelayConfig
from dsip.core.envelope import Signed, Verified, Verifier, decode_jose, make_payload, sign_envelope
from dsip.core.forking import Deliver, Forward, RelayEngine
from dsip.core.identity import KeyPair
from dsip.core.jsonwire import loads_strict
from dsip.core.jws import encode_frame
from dsip.core.metering import AccessToken, verify_access_token
from dsip.core.ratelimit import RateLimiter
from dsip.core.ulid import is_ulid
from dsip.errors import DsipError
from dsip.messaging.prekeys import PrekeyStore, verify_prekey_bundle
from dsip.services.cluster import ClusterBus, ClusterConfig
from dsip.services.federation import (
    FEDERATION_EXTENSION,
    Federation,
    FederationSettings,
    envelope_id_of,
    record_custody,
)
from dsip.storage.base import EnvelopeStore
from dsip.transport.base import (
    CLOSE_GOING_AWAY,
    CLOSE_HELLO_TIMEOUT,
    CLOSE_POLICY,
    COSE_EXTENSION,
    ConnectionClosed,
    FrameConnection,
)
from dsip.transport.hello import ACK_EXTENSION, extensions_of, relay_hello

__all__ = ["FirstContactHook", "Relay"]

logger = logging.getLogger("dsip.relay")

FirstContactHook = Callable[[Verified], str | None]
"""Called for every routed envelope; returns a reason token to refuse it (trust issue)."""

TurnIssuer = Callable[[str, "AccessToken | None"], "Mapping[str, Any] | None"]
"""Issues short-lived TURN credentials for an authenticated identity (the ``turn``
capability of the relay hello), given the access token the hello presented (verified) or
``None``: only DIDs that completed a verified hello get them (``TurnService``)."""

_SUPPORTED_EXTENSIONS = (ACK_EXTENSION,)


@dataclass(eq=False)
class _Peer:
    conn: FrameConnection
    device: str | None = None
    identity: str | None = None
    acks: bool = False
    cose: bool = False
    limit: int = 256  # send-queue bound, frames
    out: deque[str | bytes] = field(default_factory=deque)
    writer: asyncio.Task[None] | None = None
    # stored deliveries awaiting the device's ack: envelope id → store recipient key
    unacked: dict[str, str] = field(default_factory=dict)
    hello_deadline: float = 0.0
    relay: str | None = None  # federation: the DID of a bound peer relay (device = it, too)


@dataclass(eq=False)
class _AttemptWires:
    """What the relay must be able to resend for one forked invite."""

    invite: str | bytes
    initiator_device: str
    created: float
    rejects: dict[str, str | bytes] = field(default_factory=dict)  # leg device → its reject


ATTEMPT_TTL = 3600.0  # forget attempt bookkeeping an hour after the invite


class _Nobody:
    """Stand-in for "no connection to exclude" in ``Relay._targets``."""


_NOBODY: Any = _Nobody()


class Relay:
    """A relay bound to one identity key and one envelope store."""

    def __init__(
        self,
        config: RelayConfig,
        key: KeyPair,
        store: EnvelopeStore,
        *,
        did: str | None = None,
        resolver: DidResolver | None = None,
        server_ssl: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        first_contact: FirstContactHook | None = None,
        turn: TurnIssuer | None = None,
        federation: FederationSettings | None = None,
        prekeys: PrekeyStore | None = None,
        mls_state: Any = None,  # path of the mls/1.0 state file (str or os.PathLike); None: memory
        cluster: ClusterConfig | None = None,
        web_root: Any = None,
    ) -> None:
        self.config = config
        # --- web client hook (1/2): static files of the browser client on the ws/1.0 port ---
        self.web_root = web_root  # pathlib.Path or None
        self.key = key
        self.did = did or config.did or key.did
        self.store = store
        self.resolver = resolver or DidResolver()
        self.server_ssl = server_ssl
        self.clock = clock
        self.first_contact = first_contact
        self.turn = turn
        self.prekeys = prekeys  # one-time prekey store (profile prekeys/1.0); None: not offered
        self.mls: Any = None  # mls/1.0 MlsService, created on the first mls envelope
        if mls_state is not None:  # --- mls state hook: groups and key packages survive restarts
            from dsip.messaging.mls_service import MlsService

            self.mls = MlsService.open(mls_state, documents=self.resolver.cached)  # ConfigError
        self._mls_lock = asyncio.Lock()  # one group message at a time: acceptance = fan-out order
        if turn is not None and hasattr(turn, "__self__") and hasattr(turn.__self__, "notify"):
            turn.__self__.notify = self._notify  # usage records and warnings reach the device
        self.verifier = Verifier(self.resolver.cached)
        self.devices: dict[str, _Peer] = {}
        self.identities: dict[str, set[str]] = {}
        # Forking attempts (§12.7) are decided by the sans-I/O engine; the relay keeps the
        # wire form of what the engine refers to by id.
        self.forking = RelayEngine(offline_retention_s=config.offline_retention_s)
        # Web Push (RFC 8030/8291/8292): device DID → (identity, subscription payload).
        self.push_subscriptions: dict[str, tuple[str, dict[str, Any]]] = {}
        self._vapid: Any = None
        self._attempts: dict[str, _AttemptWires] = {}
        self._peers: set[_Peer] = set()
        self._rl_did = RateLimiter(config.envelopes_per_minute)
        self._rl_invite = RateLimiter(config.invites_per_minute)
        self._rl_ip = RateLimiter(config.ip_envelopes_per_minute)
        self._psaps: set[str] = set()  # emergency hook: bound devices of emergency identities
        self._servers: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.ws_port: int | None = None
        self.quic_port: int | None = None
        self.stats: dict[str, int] = {"received": 0, "routed": 0, "stored": 0, "refused": 0}
        # --- cluster hook (1/5): nodes of one relay share bindings over NATS ---
        self.cluster: ClusterBus | None = None
        if cluster is not None:
            self.cluster = ClusterBus(
                cluster, on_deliver=self._from_cluster, on_stored=self._flush_stored
            )
        self._flushing: dict[_Peer, bool] = {}  # peer → another flush was asked meanwhile
        # --- federation hook (1/6): relay-to-relay links, outboxes, peer-relay admission ---
        self.federation = Federation(
            key,
            self.did,
            store,
            self.resolver,
            federation or FederationSettings(),
            on_error=self._federation_error,
            retention_s=config.offline_retention_s,
            clock=clock,
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        from dsip.transport.ws import serve_ws

        static = None
        if self.web_root is not None:  # web client hook (2/2)
            from dsip.services.webroot import StaticFiles, http_responder

            static = http_responder(StaticFiles(self.web_root), "/dsip")
        ws = await serve_ws(
            self.serve_connection,
            host=self.config.host,
            port=self.config.ws_port,
            ssl_context=self.server_ssl,
            process_request=static,
        )
        self._servers.append(ws)
        self.ws_port = ws.port
        if self.config.quic_port is not None:
            from dsip.transport.quic import serve_quic

            assert self.config.tls_cert
            assert self.config.tls_key
            q = await serve_quic(
                self.serve_connection,
                host=self.config.host,
                port=self.config.quic_port,
                certfile=self.config.tls_cert,
                keyfile=self.config.tls_key,
            )
            self._servers.append(q)
            self.quic_port = q.port
        self._spawn(self._purge_loop())
        if self.cluster is not None:  # cluster hook (2/5)
            await self.cluster.start()
        await self.federation.start()  # federation hook (2/6): resume outboxes of a past run
        logger.info("relay %s listening: ws=%s quic=%s", self.did, self.ws_port, self.quic_port)

    async def stop(self) -> None:
        """Graceful shutdown: stop listening, close connections (1001), close the store."""
        self._closing = True
        await self.federation.stop()  # federation hook (2/6): links stop before the store
        if self.cluster is not None:  # cluster hook (2/5): other nodes stop routing here
            await self.cluster.close()
        for server in self._servers:
            await server.close()
        for peer in list(self._peers):
            await peer.conn.close(CLOSE_GOING_AWAY, "relay shutting down")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()
        await self.resolver.aclose()
        if self.mls is not None:  # mls state hook: close the state file
            self.mls.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                n = await self.store.purge_expired(int(self.clock()))
                if n:
                    logger.info("purged %d expired stored envelopes", n)
            except DsipError as exc:  # pragma: no cover - store trouble is logged, not fatal
                logger.warning("purge failed: %s", exc)

    # --- one connection -------------------------------------------------------------------

    async def serve_connection(self, conn: FrameConnection) -> None:
        peer = _Peer(conn, limit=self.config.send_queue)
        peer.hello_deadline = self.clock() + self.config.hello_timeout_s
        self._peers.add(peer)
        try:
            while not self._closing:
                timeout = None if peer.device else max(0.0, peer.hello_deadline - self.clock())
                try:
                    frame = await asyncio.wait_for(conn.recv(), timeout)
                except TimeoutError:
                    logger.info(
                        "%s sent no verified hello in %ss", conn.remote, self.config.hello_timeout_s
                    )
                    await conn.close(CLOSE_HELLO_TIMEOUT, "no hello")
                    return
                if self._psaps and not _urgent(peer, frame):
                    # emergency hook (5/5): while a PSAP is bound here, an ordinary frame
                    # yields once, so an emergency frame woken in the same loop round is
                    # verified and routed first (one loop iteration per frame: only then)
                    await asyncio.sleep(0)
                try:
                    await self._on_frame(peer, frame)
                except (ConnectionClosed, asyncio.CancelledError):
                    raise
                except Exception:  # a relay bug must not take the connection down silently
                    logger.exception("internal error handling a frame from %s", conn.remote)
                    await self._error(peer, frame, "session.failed", "internal relay error")
        except ConnectionClosed:
            pass
        finally:
            self._unbind(peer)
            self._peers.discard(peer)
            if peer.writer:
                peer.writer.cancel()
            await self._requeue_unsent(peer)

    async def _writer(self, peer: _Peer) -> None:
        """Drain the peer's send queue, then exit: idle connections hold no writer task."""
        try:
            while peer.out:
                await peer.conn.send(peer.out.popleft())
        except (ConnectionClosed, asyncio.CancelledError):
            return
        finally:
            peer.writer = None
        if peer.out:  # raced with an enqueue after our last check
            self._kick(peer)

    def _kick(self, peer: _Peer) -> None:
        if peer.writer is None and not peer.conn.closed:
            peer.writer = asyncio.create_task(self._writer(peer))

    def _enqueue(self, peer: _Peer, frame: str | bytes) -> None:
        """Queue a frame for ``peer`` without waiting; raises ``asyncio.QueueFull``."""
        if len(peer.out) >= peer.limit:
            raise asyncio.QueueFull
        peer.out.append(frame)
        self._kick(peer)

    async def _enqueue_wait(self, peer: _Peer, frame: str | bytes) -> None:
        """Queue a frame, waiting for room (flushes of stored envelopes)."""
        while True:
            try:
                self._enqueue(peer, frame)
                return
            except asyncio.QueueFull:
                if peer.conn.closed:
                    raise ConnectionClosed("peer went away during flush") from None
                await asyncio.sleep(0.01)

    async def _requeue_unsent(self, peer: _Peer) -> None:
        """Frames still queued for a departed device go to its store-and-forward queue."""
        if peer.device is None or peer.relay is not None:  # a peer relay resends by itself
            return
        while peer.out:
            frame = peer.out.popleft()
            await self._store_frame(peer.device, frame)

    async def _on_frame(self, peer: _Peer, frame: str | bytes) -> None:
        now = self.clock()
        self.stats["received"] += 1
        # --- federation hook (3/6): a bound peer relay has a bucket per origin, not per IP ---
        if peer.relay is not None and not self.federation.admit(peer.relay, now):
            await self._error(
                peer,
                frame,
                "transport.rate-limited",
                "per-origin rate limit",
                retry_after=self.federation.retry_after(peer.relay),
            )
            return
        # --- end federation hook (3/6) ---
        if (
            peer.relay is None
            and not self._rl_ip.allow(peer.conn.remote_ip, now)
            and not _claims_emergency(frame)  # emergency hook (1/5): exempt, still verified
            and not (peer.identity is not None and _is_emergency_identity(peer.identity))
        ):
            await self._error(
                peer,
                frame,
                "transport.rate-limited",
                "per-IP rate limit",
                retry_after=self._rl_ip.retry_after(peer.conn.remote_ip),
            )
            return
        try:
            signed = self._decode(peer, frame)
            await self._prefetch(signed)
            v = self.verifier.verify_signed(
                signed,
                now=int(now),
                hello_verified=peer.device is not None,
                record=peer.relay is None,  # peer-relay frames: recorded on custody only
            )
        except DsipError as exc:
            # --- federation hook (4/6): a duplicate from a peer relay is already ours ---
            if peer.relay is not None and exc.code == "duplicate-id":
                env_id = envelope_id_of(frame)
                if env_id is not None:
                    self._custody_ack(peer, env_id)
                    return
            # --- end federation hook (4/6) ---
            self.stats["refused"] += 1
            reason = exc.reason
            if peer.device is None and exc.code != "hello-required":
                reason = "transport.hello-rejected"
            logger.info("refused envelope from %s: %s", peer.conn.remote, exc)
            await self._error(peer, frame, reason, exc.code)
            return
        # --- federation hook (5/6): peer relays (and relay hellos) take their own path ---
        if peer.relay is not None or (
            v.type == "hello" and FEDERATION_EXTENSION in extensions_of(v.payload)
        ):
            await self._from_peer_relay(peer, v, now)
            return
        # --- end federation hook (5/6) ---
        if v.type == "hello":
            await self._bind(peer, v)
        elif v.type == "ack":
            await self._on_ack(peer, v)
        elif v.type in ("prekey-bundle", "prekey-claim"):
            await self._on_prekeys(peer, v)
        elif v.type in ("mls", "mls-fetch") and v.payload.get("to") == self.did:
            await self._on_mls(peer, v, now)
        elif v.type == "push-subscription":
            if v.signer == peer.device and peer.device and peer.identity:
                self.push_subscriptions[peer.device] = (peer.identity, dict(v.payload))
                logger.info("push subscription registered for %s", peer.device)
        else:
            await self._route(peer, v, now)

    def _decode(self, peer: _Peer, frame: str | bytes) -> Signed:
        if isinstance(frame, bytes):
            if not peer.cose:
                from dsip.errors import TransportError

                raise TransportError(
                    "binary frame without negotiated cose-envelope/1.0",
                    code="envelope-shape",
                    reason="session.unsupported-wire-format",
                )
            from dsip.core.cose import decode_cose

            return decode_cose(frame)
        return decode_jose(frame)

    async def _prefetch(self, signed: Signed) -> None:
        await self.resolver.prefetch(signed)

    # --- binding --------------------------------------------------------------------------

    async def _bind(self, peer: _Peer, v: Verified) -> None:
        device, identity = v.signer, v.identity
        if peer.device is not None and (peer.device, peer.identity) != (device, identity):
            self._unbind(peer)  # re-hello with another key replaces the binding
        old = self.devices.get(device)
        if old is not None and old is not peer:
            logger.info("device %s re-bound: closing its older connection", device)
            self._unbind(old)
            await old.conn.close(CLOSE_POLICY, "replaced by a newer connection")
        exts = extensions_of(v.payload)
        peer.device, peer.identity = device, identity
        peer.acks = ACK_EXTENSION in exts
        offered = [e for e in _SUPPORTED_EXTENSIONS if e in exts]
        if COSE_EXTENSION in exts and self._cose_available():
            offered.append(COSE_EXTENSION)
            peer.cose = True
        self.devices[device] = peer
        self.identities.setdefault(identity, set()).add(device)
        if _is_emergency_identity(identity):  # emergency hook: a PSAP is bound here
            self._psaps.add(device)
        if self.cluster is not None:  # cluster hook (3/5): this node now serves these DIDs
            await self.cluster.bind(device, identity)
        now = int(self.clock())
        joins = [
            em for em in self.forking.bind(device, identity, now=now) if isinstance(em, Deliver)
        ]
        await self.store.remember_identity(identity, now=now)
        await self.store.remember_identity(device, now=now)
        self._enqueue(
            peer,
            relay_hello(
                self.key,
                relay_did=self.did,
                in_reply_to=v.id,
                now=now,
                offline_retention_s=self.config.offline_retention_s,
                rate_limit={
                    "envelopes_per_minute": self.config.envelopes_per_minute,
                    "invites_per_minute": self.config.invites_per_minute,
                },
                extensions=offered,
                extra_capabilities=self._turn_capability(identity, v),
            ),
        )
        logger.info("bound %s for %s on %s", device, identity, peer.conn.remote)
        self._spawn(self._flush_until_quiet(peer))
        for em in joins:  # a device that binds mid-attempt becomes a leg (§12.7 rule 3)
            wires = self._attempts.get(em.id or "")
            if wires is not None:
                await self._deliver(peer, wires.invite)

    async def _on_prekeys(self, peer: _Peer, v: Verified) -> None:
        """prekeys/1.0: a bound device publishes its signed bundle; anyone bound may claim the
        bundles of a DID's devices, each with a one-time prekey handed out at most once."""
        if self.prekeys is None:
            await self._error(
                peer,
                v.wire,
                "transport.routing-refused",
                "no prekey service here",
                in_reply_to=v.id,
            )
            return
        store, now = self.prekeys, int(self.clock())
        if v.type == "prekey-bundle":
            if v.signer != peer.device:
                await self._error(
                    peer,
                    v.wire,
                    "transport.routing-refused",
                    "not the bound device",
                    in_reply_to=v.id,
                )
                return
            try:
                bundle = verify_prekey_bundle(
                    v.wire,
                    now=now,
                    documents=self.resolver.cached,
                    delegations=list(v.header.get("delegations", ()) or ()),
                )
                await asyncio.to_thread(store.publish, bundle, now=now)
            except DsipError as exc:
                await self._error(peer, v.wire, exc.reason, exc.code, in_reply_to=v.id)
                return
            bundles: list[dict[str, Any]] = []  # an empty prekey-claimed: the publish receipt
        else:
            target = str(v.payload["target"])
            claimed = await asyncio.to_thread(store.claim_identity, target, now=now)
            if not claimed:
                one = await asyncio.to_thread(store.claim, target, now=now)
                claimed = [one] if one is not None else []
            bundles = []
            for c in claimed:
                item: dict[str, Any] = {"device": c.device, "frame": c.frame}
                if c.one_time_prekey_id is not None:
                    item["one_time_prekey_id"] = c.one_time_prekey_id
                bundles.append(item)
        payload = make_payload(
            "prekey-claimed",
            sender=self.did,
            now=now,
            profiles=[],
            to=v.signer,
            in_reply_to=v.id,
            bundles=bundles,
        )
        self._enqueue(peer, encode_frame(sign_envelope(payload, self.key)))

    async def _on_mls(self, peer: _Peer, v: Verified, now: float) -> None:
        """mls/1.0: the relay is the delivery service of the MLS groups whose envelopes are
        addressed to it (rules in ``dsip.messaging.mls_service``). An accepted envelope goes
        unchanged to every member DID it names, the sender included (its echo is the
        acceptance); a member with no bound device gets it through store-and-forward."""
        if v.signer != peer.device:
            await self._error(
                peer, v.wire, "transport.routing-refused", "not the bound device", in_reply_to=v.id
            )
            return
        if not self._rl_did.allow(v.identity, now):
            await self._error(
                peer,
                v.wire,
                "transport.rate-limited",
                "per-DID rate limit",
                in_reply_to=v.id,
                retry_after=self._rl_did.retry_after(v.identity),
            )
            return
        if self.mls is None:
            from dsip.messaging.mls_service import MlsService

            self.mls = MlsService(documents=self.resolver.cached)
            logger.warning(  # mls state hook: once, when the in-memory state is created
                "MLS state is not durable: a relay restart forgets every group and key "
                "package (run with --mls-state FILE to keep them)"
            )
        async with self._mls_lock:
            if v.payload.get("content_type") == "application":  # header checks only: inline
                action = self.mls.handle(v, now=int(now))
            else:  # commits (GroupInfo, tree hash, signatures), key packages: off the loop
                action = await asyncio.to_thread(self.mls.handle, v, now=int(now))
            if action.error is not None:
                await self._error(
                    peer, v.wire, action.error.reason, action.error.code, in_reply_to=v.id
                )
                return
            if action.reply is not None:
                payload = make_payload(
                    "mls-fetched",
                    sender=self.did,
                    now=int(now),
                    profiles=[],
                    to=v.signer,
                    in_reply_to=v.id,
                    **action.reply,
                )
                self._enqueue(peer, encode_frame(sign_envelope(payload, self.key)))
            for did in action.recipients:
                targets = self._targets(did, exclude=_NOBODY)
                if targets and self._wire_ok(targets, v.wire):
                    for target in targets:
                        await self._deliver(target, v.wire)
                else:
                    try:
                        await self._store(did, v)
                    except DsipError as exc:
                        logger.warning("group message for %s not stored: %s", did, exc)
            if action.recipients:
                self.stats["routed"] += 1

    def _turn_capability(self, identity: str, v: Verified) -> dict[str, Any] | None:
        if self.turn is None:
            return None
        token = None
        raw = v.header.get("access_token")
        if isinstance(raw, str):
            try:
                token = verify_access_token(
                    raw,
                    audience="turn",
                    now=int(self.clock()),
                    documents=self.resolver.cached,
                    trusted_issuers=self.config_trusted_issuers(),
                    subject=identity,
                )
            except DsipError as exc:
                logger.info("access token of %s refused: %s", identity, exc)
        cap = self.turn(identity, token)
        return {"turn": dict(cap)} if cap else None

    def config_trusted_issuers(self) -> frozenset[str]:
        """Token issuers this relay accepts: itself (and, later, configured payment issuers)."""
        return frozenset({self.did, self.key.did})

    async def _notify(self, did: str, envelope: Mapping[str, Any]) -> None:
        await self._to_device_or_identity(did, encode_frame(dict(envelope)))

    async def _to_device_or_identity(self, did: str, frame: str) -> None:
        for target in self._targets(did, exclude=_NOBODY) or []:
            await self._deliver(target, frame)

    def _cose_available(self) -> bool:
        try:
            import dsip.core.cose  # noqa: F401
        except ImportError:  # pragma: no cover
            return False
        return True

    def _unbind(self, peer: _Peer) -> None:
        if peer.device is None:
            return
        if self.devices.get(peer.device) is peer:
            self._psaps.discard(peer.device)  # emergency hook
            self.forking.unbind(peer.device, peer.identity or peer.device, now=int(self.clock()))
            del self.devices[peer.device]
            if self.cluster is not None:  # cluster hook (3/5)
                self.cluster.unbind(peer.device, peer.identity or peer.device)
            devs = self.identities.get(peer.identity or "", set())
            devs.discard(peer.device)
            if not devs:
                self.identities.pop(peer.identity or "", None)

    async def _flush(self, peer: _Peer) -> None:
        """Deliver what was stored for this device and its identity, in order."""
        assert peer.device
        assert peer.identity
        now = int(self.clock())
        for key in dict.fromkeys((peer.device, peer.identity)):
            after = 0
            while True:
                batch = await self.store.pending(key, now=now, after_seq=after, limit=100)
                if not batch:
                    break
                for item in batch:
                    after = item.seq
                    frame = item.wire if item.wire[:1] != b"{" else item.wire.decode()
                    if peer.acks:
                        peer.unacked[item.envelope_id] = key
                    try:
                        await self._enqueue_wait(peer, frame)
                    except (asyncio.CancelledError, ConnectionClosed):
                        return
                    if not peer.acks:
                        # No custody acknowledgement from this client: handing the frame to a
                        # live connection is delivery (§13.2).
                        await self.store.ack(key, item.envelope_id)

    # --- cluster (hooks' bodies; design in dsip.services.cluster) ----------------------------

    async def _from_cluster(self, did: str, wire: str | bytes) -> bool:
        """Another node routed ``wire`` to ``did``, bound here: hand it to our connections."""
        targets = self._targets(did, exclude=_NOBODY)
        if not targets or not self._wire_ok(targets, wire):
            return False
        for target in targets:
            await self._deliver(target, wire)
        self.stats["routed"] += 1
        return True

    async def _flush_stored(self, did: str) -> None:
        """Another node stored for ``did``: flush it to our devices of ``did`` (once at a time)."""
        for peer in [p for p in self.devices.values() if did in (p.device, p.identity)]:
            if peer in self._flushing:
                self._flushing[peer] = True  # the running flush goes round once more
                continue
            self._spawn(self._flush_until_quiet(peer))

    async def _flush_until_quiet(self, peer: _Peer) -> None:
        self._flushing[peer] = False
        try:
            while True:
                await self._flush(peer)
                if not self._flushing.get(peer):
                    return
                self._flushing[peer] = False
        finally:
            self._flushing.pop(peer, None)

    async def _on_ack(self, peer: _Peer, v: Verified) -> None:
        if v.signer != peer.device:
            return
        for env_id in v.payload.get("acks", []):
            key = peer.unacked.pop(env_id, None)
            if key is not None:
                await self.store.ack(key, env_id)

    # --- routing --------------------------------------------------------------------------

    async def _route(self, peer: _Peer, v: Verified, now: float) -> None:
        if v.signer != peer.device:
            await self._error(
                peer,
                v.wire,
                "transport.routing-refused",
                "not signed by the bound device",
                in_reply_to=v.id,
            )
            return
        ident = v.identity
        urgent = _is_emergency_invite(v)  # emergency hook (2/5): no rate limit, no gate
        if not urgent and not self._rl_did.allow(ident, now):
            await self._error(
                peer,
                v.wire,
                "transport.rate-limited",
                "per-DID rate limit",
                in_reply_to=v.id,
                retry_after=self._rl_did.retry_after(ident),
            )
            return
        if v.type == "invite" and not urgent and not self._rl_invite.allow(ident, now):
            await self._error(
                peer,
                v.wire,
                "policy.rate-limited",
                "invite rate limit",
                in_reply_to=v.id,
                retry_after=self._rl_invite.retry_after(ident),
            )
            return
        if self.first_contact is not None and not urgent:
            refusal = self.first_contact(v)
            if refusal:
                # a PolicyRefusal (dsip.core.trust.policy) says which rule fired
                detail = getattr(refusal, "detail", None) or "first-contact policy"
                await self._error(peer, v.wire, str(refusal), detail, in_reply_to=v.id)
                return
        to = v.payload.get("to")
        if not isinstance(to, str):
            await self._error(
                peer, v.wire, "transport.routing-refused", "no recipient", in_reply_to=v.id
            )
            return
        if await self._route_forked(peer, v, to, now):
            return
        targets = self._targets(to, exclude=peer)
        if targets and not self._wire_ok(targets, v.wire):
            await self._refuse_wire(peer, v)
            return
        if targets:
            for target in targets:
                await self._deliver(target, v.wire, urgent=urgent or _from_emergency(v))
            if self.cluster is not None:  # cluster hook (4/5): devices bound at other nodes
                await self.cluster.publish(to, v.wire)
            self.stats["routed"] += 1
            return
        # --- cluster hook (4/5): bound at another node of this relay? ---
        if self.cluster is not None and await self.cluster.deliver(to, v.wire):
            self.stats["routed"] += 1
            return
        known = await self.store.is_known(
            to, now=int(now), retention_s=self.config.offline_retention_s
        )
        # --- federation hook (6/6): a foreign recipient goes to its home relay's outbox ---
        if not known and await self._federate(peer, v, to):
            return
        # --- end federation hook (6/6) ---
        if v.type == "introduction" or known:
            try:
                await self._store(to, v)
            except DsipError as exc:
                await self._error(peer, v.wire, exc.reason, exc.code, in_reply_to=v.id)
            return
        await self._error(
            peer,
            v.wire,
            "transport.unknown-recipient",
            f"{to} is not served here",
            in_reply_to=v.id,
        )

    async def _route_forked(self, peer: _Peer, v: Verified, to: str, now: float) -> bool:
        """Invites to identities, their legs' answers and the initiator's cancels (§12.7).

        Returns ``False`` when the message is not part of a forking attempt; plain routing
        then applies.
        """
        session = v.payload.get("session")
        if v.type == "invite":
            leg_peers = self._targets(to, exclude=peer)
            legs = [p.device for p in leg_peers if p.device]
            if to in self.devices or not legs:
                return False  # device-addressed, or nobody bound: no fork to track
            if not self._wire_ok(leg_peers, v.wire):
                await self._refuse_wire(peer, v)
                return True
            self._prune_attempts(now)
            assert peer.device is not None
            self._attempts[v.id] = _AttemptWires(v.wire, peer.device, now)
            for em in self.forking.fork_invite(
                v.id, v.identity, to, legs, now=int(now), expires_at=int(v.payload["expires_at"])
            ):
                if isinstance(em, Deliver) and em.leg in self.devices:
                    await self._deliver(
                        self.devices[em.leg], v.wire, urgent=_is_emergency_invite(v)
                    )
            self.stats["routed"] += 1
            return True
        if not isinstance(session, str):
            return False
        wires = self._attempts.get(session)
        if wires is None or v.type not in ("progress", "answer", "reject", "cancel"):
            return False
        if (
            v.type == "cancel"
            and v.signer != wires.initiator_device
            and v.identity != self._initiator(session)
        ):
            return False
        if v.type != "cancel" and v.signer == wires.initiator_device:
            return False  # e.g. an update reply from the initiator: not a leg message
        msg = {"type": v.type, "from": v.signer, "session": session, "id": v.id, "to": to}
        for key in ("reason", "status"):
            if key in v.payload:
                msg[key] = v.payload[key]
        if v.type == "reject":
            wires.rejects[v.signer] = v.wire
        for em in self.forking.receive(msg, now=int(now)):
            if isinstance(em, Deliver) and em.leg in self.devices:
                await self._deliver(self.devices[em.leg], v.wire)  # the initiator's cancel, per leg
            elif isinstance(em, Deliver):
                await self._store_frame(em.leg, v.wire)
            elif isinstance(em, Forward):
                wire = v.wire if em.type != "reject" else wires.rejects.get(em.leg)
                if wire is not None:
                    await self._to_device(wires.initiator_device, wire)
        self.stats["routed"] += 1
        return True

    @staticmethod
    def _wire_ok(targets: list[_Peer], wire: str | bytes) -> bool:
        """A COSE (binary) envelope can only go to devices that negotiated it: a relay never
        re-encodes, since the signature covers the exact bytes."""
        return isinstance(wire, str) or all(t.cose for t in targets)

    async def _refuse_wire(self, peer: _Peer, v: Verified) -> None:
        await self._error(
            peer,
            v.wire,
            "session.unsupported-wire-format",
            "recipient did not negotiate cose-envelope/1.0; send JOSE",
            in_reply_to=v.id,
        )

    def _initiator(self, session: str) -> str | None:
        a = self.forking.attempts.get(session)
        return a.initiator if a is not None else None

    async def _to_device(self, device: str, wire: str | bytes) -> None:
        target = self.devices.get(device)
        if target is not None:
            await self._deliver(target, wire)
        else:
            await self._store_frame(device, wire)

    def _prune_attempts(self, now: float) -> None:
        stale = [s for s, w in self._attempts.items() if now - w.created > ATTEMPT_TTL]
        for session in stale:
            del self._attempts[session]
            self.forking.attempts.pop(session, None)

    def _targets(self, to: str, *, exclude: _Peer) -> list[_Peer]:
        peer = self.devices.get(to)
        if peer is not None:
            return [] if peer is exclude else [peer]
        return [
            self.devices[d]
            for d in sorted(self.identities.get(to, ()))
            if self.devices[d] is not exclude
        ]

    async def _deliver(self, target: _Peer, frame: str | bytes, *, urgent: bool = False) -> None:
        if urgent:  # emergency hook (3/5): ahead of everything queued, even over the bound
            if target.writer is None and not target.out and not target.conn.closed:
                # idle connection: write now, not after every task already queued this round
                target.writer = asyncio.current_task()
                try:
                    await target.conn.send(frame)
                except ConnectionClosed:
                    target.out.appendleft(frame)  # stored at unbind like any unsent frame
                finally:
                    target.writer = None
                if target.out:
                    self._kick(target)
                return
            target.out.appendleft(frame)
            self._kick(target)
            return
        try:
            self._enqueue(target, frame)
        except asyncio.QueueFull:
            # A reader this slow would stall everyone behind it: cut it loose; what it did
            # not take is stored for its next binding.
            logger.warning("closing slow connection of %s (send queue full)", target.device)
            self._unbind(target)
            await target.conn.close(CLOSE_POLICY, "send queue full")
            if target.device:
                await self._store_frame(target.device, frame)

    async def _store(self, recipient: str, v: Verified) -> None:
        expires = min(
            int(v.payload["expires_at"]), int(self.clock()) + self.config.offline_retention_s
        )
        wire = v.wire.encode() if isinstance(v.wire, str) else v.wire
        await self.store.put(recipient, v.id, wire, expires_at=expires, now=int(self.clock()))
        self.stats["stored"] += 1
        if self.cluster is not None:  # cluster hook (5/5): a node where it just bound flushes
            await self.cluster.stored(recipient)
        self._spawn(self._push_wake(recipient, v.id))

    async def _push_wake(self, recipient: str, envelope_id: str) -> None:
        """Wake the recipient's devices: a Web Push whose payload is only {relay, envelope_id}."""
        targets = [
            sub
            for device, (identity, sub) in self.push_subscriptions.items()
            if recipient in (device, identity) and device not in self.devices
        ]
        if not targets:
            return
        import json as _json

        from pywebpush import WebPushException, webpush

        if self._vapid is None:
            from py_vapid import Vapid02

            self._vapid = Vapid02()
            self._vapid.generate_keys()
        data = _json.dumps({"relay": self.did, "envelope_id": envelope_id})
        for sub in targets:
            info = {"endpoint": sub["endpoint"], "keys": sub["keys"]}
            try:
                await asyncio.to_thread(
                    webpush,
                    info,
                    data=data,
                    vapid_private_key=self._vapid,
                    vapid_claims={"sub": "mailto:relay@dsip.invalid"},
                    ttl=self.config.offline_retention_s,
                    timeout=5,
                )
                self.stats["pushed"] = self.stats.get("pushed", 0) + 1
            except WebPushException as exc:
                logger.warning("push to %s failed: %s", sub["endpoint"][:60], exc)

    async def _store_frame(self, recipient: str, frame: str | bytes) -> None:
        """Store an already-verified frame again (slow or departed connection)."""
        try:
            signed = (
                frame
                if isinstance(frame, Signed)
                else decode_jose(frame)
                if isinstance(frame, str)
                else None
            )
            if signed is None:
                from dsip.core.cose import decode_cose

                signed = decode_cose(frame)  # type: ignore[arg-type]
            body, _ = signed.decode_payload(signed.payload_bytes)
            env_id, expires = body["id"], int(body["expires_at"])
        except (DsipError, KeyError, TypeError, ValueError):
            return  # our own relay hello or error frames: nothing to keep
        if not is_ulid(env_id) or (
            body.get("type") in ("hello", "error") and body.get("from") == self.did
        ):
            return
        wire = frame.encode() if isinstance(frame, str) else frame
        now = int(self.clock())
        if expires > now:
            with contextlib.suppress(DsipError):
                await self.store.put(
                    recipient,
                    env_id,
                    wire,
                    expires_at=min(expires, now + self.config.offline_retention_s),
                    now=now,
                )

    # --- federation (hooks' bodies; design in dsip.services.federation) --------------------

    async def _bind_relay(self, peer: _Peer, v: Verified) -> None:
        """A ``federation/1.0`` hello binds a peer relay — only from a relay identity that
        signs for itself (its did:web document has a ``DSIPRelay`` service)."""
        if v.signer != v.identity or not await self.federation.is_relay(v.signer):
            self.stats["refused"] += 1
            await self._error(
                peer,
                v.wire,
                "transport.hello-rejected",
                f"{FEDERATION_EXTENSION} hello from a DID that is not a relay",
                in_reply_to=v.id,
            )
            return
        if peer.relay is None and peer.device is not None:
            self._unbind(peer)  # a device connection turning into a peer link
        peer.device = peer.identity = peer.relay = v.signer
        peer.acks = False
        offered = [FEDERATION_EXTENSION]
        if COSE_EXTENSION in extensions_of(v.payload) and self._cose_available():
            offered.append(COSE_EXTENSION)
            peer.cose = True
        self._enqueue(
            peer,
            relay_hello(
                self.key,
                relay_did=self.did,
                in_reply_to=v.id,
                now=int(self.clock()),
                offline_retention_s=self.config.offline_retention_s,
                rate_limit={
                    "envelopes_per_minute": self.federation.settings.peer_envelopes_per_minute
                },
                extensions=offered,
            ),
        )
        logger.info("peer relay %s bound on %s", v.signer, peer.conn.remote)

    async def _from_peer_relay(self, peer: _Peer, v: Verified, now: float) -> None:
        """What a peer relay hands over is delivered here or refused, never forwarded again
        (loop prevention); custody taken is acknowledged with a signed ``ack``."""
        if v.type == "hello":
            await self._bind_relay(peer, v)
            return
        if v.type in ("ack", "push-subscription"):
            return  # transport messages of the peer itself: nothing to route
        assert peer.relay is not None
        to = v.payload.get("to")
        if not isinstance(to, str):
            await self._error(
                peer, v.wire, "transport.routing-refused", "no recipient", in_reply_to=v.id
            )
            return
        if self.first_contact is not None:
            refusal = self.first_contact(v)
            if refusal:
                # a PolicyRefusal (dsip.core.trust.policy) says which rule fired
                detail = getattr(refusal, "detail", None) or "first-contact policy"
                await self._error(peer, v.wire, str(refusal), detail, in_reply_to=v.id)
                return
        targets = self._targets(to, exclude=_NOBODY)
        if targets and not self._wire_ok(targets, v.wire):
            await self._refuse_wire(peer, v)
            return
        try:
            if targets:
                for target in targets:
                    await self._deliver(target, v.wire)
                self.stats["routed"] += 1
            elif await self.store.is_known(
                to, now=int(now), retention_s=self.config.offline_retention_s
            ) or (v.type == "introduction" and await self.federation.serves(to)):
                await self._store(to, v)
            else:
                self.federation.stats["peer_refused"] += 1
                await self._error(
                    peer,
                    v.wire,
                    "transport.unknown-recipient",
                    f"{to} is not served here",
                    in_reply_to=v.id,
                )
                return
        except DsipError as exc:
            self.federation.stats["peer_refused"] += 1
            await self._error(peer, v.wire, exc.reason, exc.code, in_reply_to=v.id)
            return
        record_custody(self.verifier, v)
        self._custody_ack(peer, v.id)

    def _custody_ack(self, peer: _Peer, envelope_id: str) -> None:
        assert peer.relay is not None
        try:
            self._enqueue(peer, self.federation.custody_ack(peer.relay, [envelope_id]))
        except asyncio.QueueFull:  # the peer resends; its duplicate is acknowledged then
            self._spawn(peer.conn.close(CLOSE_POLICY, "send queue full"))

    async def _federate(self, peer: _Peer, v: Verified, to: str) -> bool:
        """``to`` is neither bound nor known here: when its DID document names another
        relay, the envelope goes to that relay's outbox. ``False``: local rules apply."""
        if not self.federation.enabled or peer.device is None:
            return False
        uri = await self.federation.home_relay(to)
        if uri is None or self.federation.is_local(uri):
            return False
        try:
            await self.federation.forward(
                uri,
                v.wire,
                v.id,
                expires_at=int(v.payload["expires_at"]),
                sender=peer.device,
                identity=v.identity,
            )
        except DsipError as exc:
            await self._error(peer, v.wire, exc.reason, exc.code, in_reply_to=v.id)
            return True
        self.stats["routed"] += 1
        return True

    async def _federation_error(self, device: str, identity: str, far: Mapping[str, Any]) -> None:
        """A far relay refused an envelope we forwarded: the sender hears it, signed by us."""
        to = device if device in self.devices else identity
        fields: dict[str, Any] = {
            "to": to,
            "reason": str(far.get("reason", "transport.routing-refused")),
            "detail": f"{far.get('from', 'far relay')}: {far.get('detail', '')}"[:200],
        }
        for key in ("in_reply_to", "session", "retry_after"):
            if key in far:
                fields[key] = far[key]
        payload = make_payload(
            "error", sender=self.did, now=int(self.clock()), profiles=[], **fields
        )
        await self._to_device_or_identity(to, encode_frame(sign_envelope(payload, self.key)))

    # --- errors ---------------------------------------------------------------------------

    async def _error(
        self,
        peer: _Peer,
        frame: str | bytes,
        reason: str,
        detail: str,
        *,
        in_reply_to: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        sender, msg_id, session = _peek(frame)
        fields: dict[str, Any] = {
            "to": peer.device or sender or self.did,
            "reason": reason,
            "detail": detail[:200],
        }
        if session:
            fields["session"] = session
        irt = in_reply_to or msg_id
        if irt:
            fields["in_reply_to"] = irt
        if retry_after is not None:
            fields["retry_after"] = retry_after
        payload = make_payload(
            "error", sender=self.did, now=int(self.clock()), profiles=[], **fields
        )
        try:
            self._enqueue(peer, encode_frame(sign_envelope(payload, self.key)))
        except asyncio.QueueFull:
            await peer.conn.close(CLOSE_POLICY, "send queue full")


# --- emergency hook (4/5): emergency/1.0 invites (seed §19.2, dsip.core.emergency) ---


def _urgent(peer: _Peer, frame: str | bytes) -> bool:
    """Cheap pre-verification triage: frames from a bound emergency namespace identity (a
    PSAP's answers, progress, callbacks) and frames whose payload bytes carry
    ``"priority":"emergency"`` (compact JSON, as dsip signs it). A guess that only orders
    work; every frame is still verified, and exemptions follow :func:`_is_emergency_invite`."""
    from dsip.core.emergency.namespaces import is_emergency_did

    if peer.identity is not None and is_emergency_did(peer.identity):
        return True
    if not isinstance(frame, str) or len(frame) > 65_536:
        return False
    start = frame.find('"payload":"')
    end = frame.find('"', start + 11) if start >= 0 else -1
    if end < 0:
        return False
    try:
        payload = base64.urlsafe_b64decode(frame[start + 11 : end] + "==")
    except ValueError:
        return False
    return b'"priority":"emergency"' in payload


def _is_emergency_identity(did: str) -> bool:
    from dsip.core.emergency.namespaces import is_emergency_did

    return is_emergency_did(did)


def _from_emergency(v: Verified) -> bool:
    """Signed by an emergency namespace identity (a PSAP): delivered ahead, too."""
    return _is_emergency_identity(v.identity)


def _is_emergency_invite(v: Verified) -> bool:
    """A verified invite with ``priority: "emergency"`` to or from an emergency namespace DID
    (a call to a PSAP, or a PSAP's call back): routed first, never rate-limited, never held
    at a first-contact gate."""
    if v.type != "invite" or v.payload.get("priority") != "emergency":
        return False
    from dsip.core.emergency.namespaces import is_emergency_did

    return is_emergency_did(v.payload.get("to")) or is_emergency_did(v.identity)


def _claims_emergency(frame: str | bytes) -> bool:
    """Before verification (per-IP limit): does the frame claim to be an emergency invite?
    Only consulted when the limit would refuse; the frame is verified as usual afterwards
    and the exemptions above apply only if it really is one."""
    if isinstance(frame, bytes) or len(frame) > 65_536:
        return False
    try:
        body, _ = loads_strict(decode_jose(frame).payload_bytes)
    except DsipError:
        return False
    return (
        isinstance(body, dict)
        and body.get("type") == "invite"
        and body.get("priority") == "emergency"
    )


# --- end emergency hook ---


def _peek(frame: str | bytes | Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Best-effort (from, id, session) of an envelope being refused, for the error reply.

    A refusal of a session message carries ``session`` so the caller's state machine can
    attribute it (§12.2); for an invite the session is the invite's own id.
    """
    try:
        if isinstance(frame, bytes):
            return None, None, None
        signed = decode_jose(frame)
        body, _ = loads_strict(signed.payload_bytes)
    except DsipError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    from dsip.core.identity import is_did

    sender = body.get("from") if is_did(body.get("from")) else None
    msg_id = body.get("id") if is_ulid(body.get("id")) else None
    session = msg_id if body.get("type") == "invite" else body.get("session")
    return sender, msg_id, session if is_ulid(session) else None
