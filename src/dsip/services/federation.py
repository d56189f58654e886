"""Relay-to-relay federation (seed §14: "anyone can run resolver, relay, SFU, TURN nodes").

A relay serves the identities whose DID documents name it (``DSIPService.ws`` or
``DSIPSignaling``; ``FederationSettings.public_uri`` and ``other_uris`` say which endpoints
are this relay's own). When one of its devices sends an envelope to a DID that is neither
bound nor known here, the relay resolves that DID's document and, if the document names
another relay, hands the envelope — byte for byte, still signed by its author — to that
relay.

Peer relays and their identity
    A relay is a ``did:web`` identity (``did:web:relay.example.com``, in tests
    ``did:web:localhost%3A<port>:relays:<name>``) whose document carries a
    ``DSIPRelay`` service (:func:`relay_document`). A *naming* convention such as
    ``relay.<domain>`` cannot be checked; an entry in a document only the domain's TLS
    certificate holder can publish can. A peer relay connects like a device — ws/1.0 or
    QUIC, ``hello`` signed with the relay's own key (kid ``did:web:…#key-1``) — and lists
    the ``federation/1.0`` extension. The receiving relay verifies the hello as always, then
    checks that the signer speaks for itself (no delegation) and that its document has the
    ``DSIPRelay`` service; anything else is refused with ``transport.hello-rejected``. A
    forged relay hello (a kid of the relay's DID with some other key) already fails the
    signature stage.

One direction per connection
    ``FederationLink`` is the *outbound* half: relay A dials relay B to hand over A→B
    traffic, and B dials A for B→A traffic. On a link, the far relay only ever sends its
    hello, custody ``ack`` messages and ``error`` refusals; it never routes user traffic
    back over it. That keeps each side's state simple: the dialer owns an outbox, the
    listener owns nothing but a token bucket.

Outbox and custody acknowledgements (store-and-forward/1.0, relay to relay)
    ``Federation.forward`` first writes the envelope to the relay's own ``EnvelopeStore``
    under the recipient key ``relay-outbox:<far relay URI>`` (one durable transaction, so
    it survives a crash of either side), then wakes the link. The link sends the outbox in
    enqueue order, at most ``window`` envelopes unacknowledged. The far relay verifies each
    envelope fully, delivers it to bound devices or stores it for a known identity, and
    only then answers with a signed ``ack`` naming the envelope id — custody has passed —
    and the envelope leaves the outbox. A refusal (``error`` with ``in_reply_to``) also
    ends it, and the refusal is passed on, signed by the origin relay, to the device that
    sent the envelope (a bounded map envelope id → sender; rebuilt from the outbox rows
    after a restart). ``transport.rate-limited`` is the exception: the envelope stays, the
    link pauses for ``retry_after`` and halves its window (additive increase on every
    ack), then resends.

    After a reconnect the whole outbox is sent again from its first row; envelopes that
    already crossed are answered ``ack`` again, since the far relay records an envelope id
    in its duplicate store only when it takes custody (not when it merely verifies it), so
    a duplicate id from a peer relay means "already mine". Envelopes that were delivered
    twice by a far relay that crashed before its ack reach the recipient's device twice
    and are dropped there by its verifier's duplicate-id store: delivery is at least once
    between relays and exactly once to the application.

    The store cannot list recipients, so the relay also keeps a small index (recipient key
    ``relay-outbox-index``, one row per far relay whose wire is the URI) that
    ``Federation.start`` reads to restart the links of a previous run. Index rows are
    refreshed every ``INDEX_REFRESH_S`` (two alternating slots, so there is always one) and
    removed when an idle link retires.

Loop prevention
    What a peer relay hands over is delivered *only locally*: to bound devices, stored for
    known identities, or — an introduction for a DID whose document names this relay —
    held for it. It is never forwarded again; a ``to`` not served here is answered with
    ``error transport.unknown-recipient``. So every envelope crosses at most one
    relay-to-relay hop and no set of documents can make relays bounce it around.

Limits
    Frames from a peer relay are counted in a token bucket per origin relay DID (instead of
    the per-IP bucket devices share), checked *before* verification, so a refused envelope
    leaves no trace and its resend is judged afresh. Links reconnect with exponential
    backoff and full jitter (``backoff_initial_s`` doubling to ``backoff_max_s``: 1 s →
    60 s by default), retire after ``idle_s`` with an empty outbox, and at most
    ``max_links`` far relays are served at once. Only ``wss://`` and ``quic://`` endpoints
    are dialled. The outbox shares the store's per-recipient quota: a far relay that stays
    down long enough fills it, and further envelopes for it are refused with
    ``transport.rate-limited``; outbox rows expire with the envelope (or the retention
    period), silently, like any stored envelope (§13.3).

Cost: custody is durable, so each forwarded envelope costs the origin relay two fsynced
store transactions (outbox ``put``, ``ack`` on custody). ``bench/federation.py`` measures
the hop against same-relay delivery; batching would need a batch ``put``/``ack`` in the
``EnvelopeStore`` protocol.

Not covered: fork bookkeeping (§12.7) for invites that arrive from a peer relay — they are
fanned out to every bound device of the callee, whose answers route back by ``to`` — and
forwarding over more than one hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient, dial
from dsip.core.envelope import (
    HELD_TYPES,
    Signed,
    Verified,
    Verifier,
    decode_jose,
    make_payload,
    sign_envelope,
)
from dsip.core.identity import DidDocument, KeyPair, did_web_document
from dsip.core.jws import encode_frame
from dsip.core.ratelimit import RateLimiter
from dsip.core.ulid import is_ulid
from dsip.errors import DsipError, TransportError
from dsip.storage.base import EnvelopeStore, StoredEnvelope
from dsip.transport.base import COSE_EXTENSION, ConnectionClosed, FrameConnection

__all__ = [
    "FEDERATION_EXTENSION",
    "OUTBOX_INDEX",
    "OUTBOX_PREFIX",
    "RELAY_SERVICE_TYPE",
    "Federation",
    "FederationLink",
    "FederationSettings",
    "backoff_delay",
    "envelope_id_of",
    "outbox_key",
    "record_custody",
    "relay_document",
]

logger = logging.getLogger("dsip.federation")

FEDERATION_EXTENSION = "federation/1.0"
RELAY_SERVICE_TYPE = "DSIPRelay"
OUTBOX_PREFIX = "relay-outbox:"
OUTBOX_INDEX = "relay-outbox-index"
INDEX_REFRESH_S = 300.0
_DIALLABLE = ("wss://", "quic://")

ErrorSink = Callable[[str, str, Mapping[str, Any]], Awaitable[None]]
"""``(sender device, sender identity, far relay's error payload)``: tell the sender."""


def outbox_key(uri: str) -> str:
    """The store recipient key of the outbox towards the relay at ``uri``."""
    return OUTBOX_PREFIX + uri


def relay_document(
    did: str, key: KeyPair, uri: str, *, extra_uris: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A relay's did:web document: its signing key as ``#key-1``, its endpoints as
    ``DSIPService.ws`` and the ``DSIPRelay`` service that makes it a relay identity."""
    uris = [uri, *extra_uris]
    doc = did_web_document(did, [("key-1", key.public_key_multibase)], services={"ws": uris})
    doc["service"].append(
        {
            "id": f"{did}#relay",
            "type": RELAY_SERVICE_TYPE,
            "serviceEndpoint": {"uri": uri, "extensions": [FEDERATION_EXTENSION]},
        }
    )
    return doc


def backoff_delay(attempt: int, *, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(maximum, initial·2^n)]``."""
    ceiling = min(maximum, initial * (2.0 ** min(attempt, 32)))
    return rng.uniform(0.0, ceiling)


def record_custody(verifier: Verifier, v: Verified) -> None:
    """Remember ``v``'s id in the duplicate store once the relay has taken custody of it
    (the verifier ran with ``record=False`` for peer-relay frames), keeping it as long as
    the verifier itself would."""
    keep = int(v.payload["expires_at"]) if v.type in HELD_TYPES else None
    verifier.replay.add(v.id, int(v.payload["issued_at"]), keep_until=keep)


def _decode(frame: str | bytes) -> Signed:
    if isinstance(frame, str):
        return decode_jose(frame)
    from dsip.core.cose import decode_cose

    return decode_cose(frame)


def _body(frame: str | bytes) -> dict[str, Any] | None:
    try:
        signed = _decode(frame)
        body, _ = signed.decode_payload(signed.payload_bytes)
    except (DsipError, ValueError, TypeError):
        return None
    return body if isinstance(body, dict) else None


def envelope_id_of(frame: str | bytes) -> str | None:
    """The ``id`` of an (already verified) envelope frame, JOSE or COSE."""
    body = _body(frame)
    value = body.get("id") if body is not None else None
    return value if is_ulid(value) else None


def _frame_of(item: StoredEnvelope) -> str | bytes:
    return item.wire.decode() if item.wire[:1] == b"{" else item.wire


@dataclass(frozen=True)
class FederationSettings:
    """How a relay federates. ``public_uri`` (the endpoint its users' documents name) turns
    on outbound forwarding; inbound peer relays are accepted either way."""

    public_uri: str | None = None
    other_uris: tuple[str, ...] = ()  # further endpoints of this relay, e.g. its quic:// one
    ssl_context: ssl.SSLContext | None = None  # for dialling far relays over wss
    cafile: str | None = None  # extra trust anchor for QUIC (aioquic takes a file)
    peer_envelopes_per_minute: int = 60_000  # per origin relay DID
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    window: int = 256  # envelopes sent and not yet acknowledged, per link
    resend_after_s: float = 30.0  # resend unacknowledged envelopes after this long
    idle_s: float = 60.0  # retire a link whose outbox stayed empty this long
    connect_timeout_s: float = 10.0
    max_links: int = 256
    sender_memory: int = 65_536  # envelope id → sender entries kept for relaying errors

    def __post_init__(self) -> None:
        for name in (
            "peer_envelopes_per_minute",
            "backoff_initial_s",
            "backoff_max_s",
            "window",
            "resend_after_s",
            "idle_s",
            "connect_timeout_s",
            "max_links",
            "sender_memory",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"FederationSettings.{name} must be positive")
        for uri in (self.public_uri, *self.other_uris):
            if uri is not None and not uri.startswith(_DIALLABLE):
                raise ValueError(f"{uri[:80]!r} is not a wss:// or quic:// URI")


class _PrefetchingConnection:
    """A connection that resolves each inbound frame's signer before handing it on.

    ``SignalingClient.connect`` verifies the far relay's hello synchronously against the
    resolver's cache; the far relay's did:web document is fetched here, first.
    """

    def __init__(self, inner: FrameConnection, resolver: DidResolver) -> None:
        self._inner = inner
        self._resolver = resolver

    @property
    def remote(self) -> str:
        return self._inner.remote

    @property
    def remote_ip(self) -> str:
        return self._inner.remote_ip

    @property
    def closed(self) -> bool:
        return self._inner.closed

    async def send(self, frame: str | bytes) -> None:
        await self._inner.send(frame)

    async def recv(self) -> str | bytes:
        frame = await self._inner.recv()
        with contextlib.suppress(DsipError):
            await self._resolver.prefetch(_decode(frame))
        return frame

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.close(code, reason)


class FederationLink:
    """The outbound half towards one far relay: its outbox, its connection, its backoff."""

    def __init__(self, federation: Federation, uri: str) -> None:
        self.federation = federation
        self.uri = uri
        self.key = outbox_key(uri)
        self.settings = federation.settings
        self.far_did: str | None = None
        self.attempts = 0  # consecutive failed connection attempts
        self.closed = False
        self.connected = False
        self.task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._generation = 0
        self._inflight: dict[str, float] = {}  # envelope id → when sent
        self._sent_upto = 0  # store seq of the last outbox row sent on this connection
        self._has_more = False
        self._window = self.settings.window
        self._paused_until = 0.0
        self._last_activity = federation.clock()

    def notify(self) -> None:
        """Something was added to the outbox."""
        self._generation += 1
        self._wake.set()

    # --- the link's life -------------------------------------------------------------------

    async def run(self) -> None:
        fed = self.federation
        try:
            await fed.touch_index(self.uri, force=True)
            while True:
                try:
                    if await self._cycle():
                        return
                except DsipError as exc:  # the store failed: the outbox is still there
                    logger.warning("federation link to %s: %s", self.uri, exc)
                    await asyncio.sleep(self._backoff())
        finally:
            self.closed = True
            if fed.links.get(self.uri) is self:
                del fed.links[self.uri]

    def _backoff(self) -> float:
        delay = backoff_delay(
            self.attempts,
            initial=self.settings.backoff_initial_s,
            maximum=self.settings.backoff_max_s,
            rng=self.federation.rng,
        )
        self.attempts += 1
        return delay

    async def _cycle(self) -> bool:
        """Wait for work, connect, send until the connection drops; ``True``: retired."""
        self._wake.clear()  # before looking: a forward() from now on wakes us
        if not await self._has_pending():
            return await self._wait_or_retire()
        bound = await self._connect()
        if bound is None:
            await asyncio.sleep(self._backoff())
            return False
        self.attempts = 0
        client, conn = bound
        try:
            if await self._session(client, conn):
                return True
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await client.close()
        # The connection went away: reconnect after a first, short, jittered pause.
        await asyncio.sleep(self._backoff())
        return False

    async def _has_pending(self) -> bool:
        now = int(self.federation.clock())
        return bool(await self.federation.store.pending(self.key, now=now, limit=1))

    async def _wait_or_retire(self) -> bool:
        """Nothing to send: wait for work; after ``idle_s`` without any, retire."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.idle_s):
                await self._wake.wait()
                return False
        return await self._try_retire()

    async def _try_retire(self) -> bool:
        generation = self._generation
        if await self._has_pending():
            return False
        await self.federation.drop_index(self.uri)
        if generation != self._generation:  # forward() raced us: keep going, re-index
            await self.federation.touch_index(self.uri, force=True)
            return False
        # No await between the check above and this: a later forward() creates a new link.
        self.closed = True
        if self.federation.links.get(self.uri) is self:
            del self.federation.links[self.uri]
        logger.info("federation link to %s retired (idle)", self.uri)
        return True

    async def _connect(self) -> tuple[SignalingClient, FrameConnection] | None:
        fed = self.federation
        extensions = [FEDERATION_EXTENSION]
        if fed.cose_available:
            extensions.append(COSE_EXTENSION)
        client = SignalingClient(
            fed.key,
            identity=fed.did,
            verifier=Verifier(fed.resolver.cached),
            clock=fed.clock,
            extensions=extensions,
            resolver=fed.resolver,
        )
        timeout = self.settings.connect_timeout_s
        raw: FrameConnection | None = None
        try:
            async with asyncio.timeout(timeout):
                raw = await dial(
                    self.uri,
                    ssl_context=self.settings.ssl_context,
                    cafile=self.settings.cafile,
                    timeout=timeout,
                )
            conn = _PrefetchingConnection(raw, fed.resolver)
            await client.connect(self.uri, connection=conn, timeout=timeout)
        except (DsipError, OSError, TimeoutError) as exc:
            if raw is not None:
                with contextlib.suppress(Exception):
                    await raw.close()
            fed.stats["connect_failures"] += 1
            logger.info("federation link to %s: connect failed: %s", self.uri, exc)
            return None
        if FEDERATION_EXTENSION not in client.negotiated:
            await client.close()
            logger.warning("%s does not speak %s", self.uri, FEDERATION_EXTENSION)
            await self._fail_all(
                "transport.routing-refused",
                f"the recipient's relay {self.uri[:80]} does not speak {FEDERATION_EXTENSION}",
            )
            return None
        self.far_did = client.relay_did
        self.connected = True
        logger.info("federation link to %s (%s) up", self.uri, self.far_did)
        return client, conn

    async def _session(self, client: SignalingClient, conn: FrameConnection) -> bool:
        """Send the outbox and follow the far relay's acks/errors until the connection drops
        (``False``) or the link retires (``True``)."""
        self._inflight.clear()
        self._sent_upto = 0
        self._last_activity = self.federation.clock()
        reader = asyncio.create_task(self._read(client))
        try:
            while True:
                self._wake.clear()
                now = self.federation.clock()
                if now >= self._paused_until:
                    try:
                        await self._pump(conn)
                    except ConnectionClosed:
                        return False
                if reader.done():
                    return False
                now = self.federation.clock()
                oldest = min(self._inflight.values(), default=None)
                if oldest is not None and now - oldest >= self.settings.resend_after_s:
                    self._rewind()  # unanswered for too long: send everything again
                    continue
                timeouts: list[float] = []
                if now < self._paused_until:
                    timeouts.append(self._paused_until - now)
                if oldest is not None:
                    timeouts.append(self.settings.resend_after_s - (now - oldest))
                elif not self._has_more:
                    idle = now - self._last_activity
                    if idle >= self.settings.idle_s:
                        if await self._try_retire():
                            return True
                        self._last_activity = now
                        continue
                    timeouts.append(self.settings.idle_s - idle)
                waker = asyncio.create_task(self._wake.wait())
                try:
                    done, _ = await asyncio.wait(
                        {waker, reader},
                        timeout=max(0.0, min(timeouts)) if timeouts else None,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waker.cancel()
                if reader in done:
                    return False
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def _rewind(self) -> None:
        self._inflight.clear()
        self._sent_upto = 0

    async def _pump(self, conn: FrameConnection) -> None:
        """Send outbox rows after ``_sent_upto`` while the window has room."""
        fed = self.federation
        self._has_more = False
        while True:
            room = self._window - len(self._inflight)
            if room <= 0:
                self._has_more = True
                return
            batch = await fed.store.pending(
                self.key,
                now=int(fed.clock()),
                after_seq=self._sent_upto,
                limit=min(100, room),
            )
            if not batch:
                return
            for item in batch:
                self._sent_upto = item.seq
                frame = _frame_of(item)
                fed.remember_sender_of(item.envelope_id, frame)
                self._inflight[item.envelope_id] = fed.clock()
                await conn.send(frame)
                fed.stats["sent"] += 1
                self._last_activity = fed.clock()

    async def _read(self, client: SignalingClient) -> None:
        fed = self.federation
        while True:
            try:
                v = await client.recv()
            except ConnectionClosed:
                return
            client.errors.clear()  # we keep no history on a long-lived link
            if v.signer != self.far_did:
                continue  # a link carries only the far relay's own acks and errors
            self._last_activity = fed.clock()
            if v.type == "ack":
                for env_id in v.payload.get("acks", []):
                    await self._done(env_id)
                    fed.stats["acked"] += 1
                    self._window = min(self.settings.window, self._window + 1)
                self._wake.set()
            elif v.type == "error":
                await self._on_error(v)
                self._wake.set()

    async def _on_error(self, v: Verified) -> None:
        fed = self.federation
        env_id = v.payload.get("in_reply_to")
        reason = str(v.payload.get("reason"))
        if not isinstance(env_id, str) or not is_ulid(env_id):
            logger.info("far relay %s: %s (%s)", self.far_did, reason, v.payload.get("detail"))
            return
        if reason == "transport.rate-limited":
            # Back off as told, halve the window, then send everything still held again.
            fed.stats["rate_limited"] += 1
            pause = min(float(v.payload.get("retry_after", 1)), 3600.0)
            self._paused_until = max(self._paused_until, fed.clock() + pause)
            self._window = max(1, self._window // 2)
            self._rewind()
            return
        fed.stats["refused"] += 1
        sender = fed.senders.pop(env_id, None)
        removed = await self._done(env_id)
        logger.info("far relay %s refused %s: %s", self.far_did, env_id, reason)
        if removed and sender is not None:
            await fed.on_error(sender[0], sender[1], v.payload)

    async def _done(self, env_id: object) -> bool:
        if not isinstance(env_id, str) or not is_ulid(env_id):
            return False
        self._inflight.pop(env_id, None)
        self.federation.senders.pop(env_id, None)
        return await self.federation.store.ack(self.key, env_id)

    async def _fail_all(self, reason: str, detail: str) -> None:
        """The far relay cannot take anything: refuse every held envelope to its sender."""
        fed = self.federation
        now = int(fed.clock())
        while batch := await fed.store.pending(self.key, now=now, limit=100):
            for item in batch:
                frame = _frame_of(item)
                fed.remember_sender_of(item.envelope_id, frame)
                sender = fed.senders.pop(item.envelope_id, None)
                await fed.store.ack(self.key, item.envelope_id)
                body = _body(frame) or {}
                if sender is not None:
                    error: dict[str, Any] = {
                        "from": fed.did,
                        "reason": reason,
                        "detail": detail,
                        "in_reply_to": item.envelope_id,
                    }
                    session = item.envelope_id if body.get("type") == "invite" else None
                    session = session or body.get("session")
                    if is_ulid(session):
                        error["session"] = session
                    await fed.on_error(sender[0], sender[1], error)


class Federation:
    """A relay's federation: outbound links with their outboxes, and the checks and
    acknowledgements the relay applies to peer relays (see the module docstring)."""

    def __init__(
        self,
        key: KeyPair,
        did: str,
        store: EnvelopeStore,
        resolver: DidResolver,
        settings: FederationSettings,
        *,
        on_error: ErrorSink,
        retention_s: int,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.key = key
        self.did = did
        self.store = store
        self.resolver = resolver
        self.settings = settings
        self.on_error = on_error
        self.retention_s = retention_s
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.links: dict[str, FederationLink] = {}
        self.senders: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "forwarded",
                "sent",
                "acked",
                "refused",
                "rate_limited",
                "connect_failures",
                "peer_received",
                "peer_custody",
                "peer_refused",
                "peer_rate_limited",
            ),
            0,
        )
        self._limiter = RateLimiter(settings.peer_envelopes_per_minute)
        self._index_slot: dict[str, str] = {}
        self._index_touched: dict[str, float] = {}
        self._closing = False
        try:
            import dsip.core.cose  # noqa: F401

            self.cose_available = True
        except ImportError:  # pragma: no cover
            self.cose_available = False

    @property
    def enabled(self) -> bool:
        """Whether this relay forwards to other relays (it knows its own public URI)."""
        return self.settings.public_uri is not None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Restart the links whose outboxes a previous run left behind."""
        now = int(self.clock())
        after = 0
        while batch := await self.store.pending(OUTBOX_INDEX, now=now, after_seq=after):
            for item in batch:
                after = item.seq
                uri = item.wire.decode(errors="replace")
                self._index_slot[uri] = item.envelope_id.split("-", 1)[0]
                if uri not in self.links and uri.startswith(_DIALLABLE):
                    logger.info("resuming federation outbox towards %s", uri)
                    self.link(uri)

    async def stop(self) -> None:
        self._closing = True
        tasks = [link.task for link in self.links.values() if link.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.links.clear()

    # --- outbound --------------------------------------------------------------------------

    def is_local(self, uri: str) -> bool:
        """Whether ``uri`` is one of this relay's own endpoints."""
        own = (self.settings.public_uri, *self.settings.other_uris)
        return uri.rstrip("/") in {u.rstrip("/") for u in own if u is not None}

    async def home_relay(self, did: str) -> str | None:
        """The relay endpoint ``did``'s document names (this relay's own URI if it is among
        them), or ``None`` when the DID does not resolve or names no dialable relay."""
        try:
            doc = await self.resolver.resolve(did)
        except DsipError as exc:
            logger.info("no home relay for %s: %s", did, exc)
            return None
        uris = [u for u in doc.dsip_endpoints().get("ws", []) if u.startswith(_DIALLABLE)]
        for uri in uris:
            if self.is_local(uri):
                return uri
        return uris[0] if uris else None

    async def serves(self, did: str) -> bool:
        """Whether ``did``'s document names this relay as its home."""
        if not self.enabled:
            return False
        uri = await self.home_relay(did)
        return uri is not None and self.is_local(uri)

    def link(self, uri: str) -> FederationLink:
        """The live link towards ``uri``, started if there is none."""
        link = self.links.get(uri)
        if link is None or link.closed:
            link = FederationLink(self, uri)
            self.links[uri] = link
            link.task = asyncio.create_task(link.run(), name=f"dsip-federation {uri}")
        return link

    async def forward(
        self,
        uri: str,
        wire: str | bytes,
        envelope_id: str,
        *,
        expires_at: int,
        sender: str,
        identity: str,
    ) -> None:
        """Put an envelope in the outbox towards ``uri`` (durably) and wake its link.

        Raises ``DsipError`` (``StoreError`` for a full outbox, ``TransportError`` when too
        many far relays are being served) for the relay to answer the sender with.
        """
        if not self.enabled or self._closing:
            raise TransportError("this relay does not federate", code="federation-off")
        if uri not in self.links and len(self.links) >= self.settings.max_links:
            raise TransportError(
                f"serving {len(self.links)} far relays already",
                code="federation-links",
                reason="transport.rate-limited",
            )
        now = int(self.clock())
        await self.touch_index(uri)
        data = wire.encode() if isinstance(wire, str) else wire
        await self.store.put(
            outbox_key(uri),
            envelope_id,
            data,
            expires_at=min(expires_at, now + self.retention_s),
            now=now,
        )
        self._remember(envelope_id, sender, identity)
        self.link(uri).notify()  # no await between the put and this (see _try_retire)
        self.stats["forwarded"] += 1

    def _remember(self, envelope_id: str, device: str, identity: str) -> None:
        self.senders[envelope_id] = (device, identity)
        self.senders.move_to_end(envelope_id)
        while len(self.senders) > self.settings.sender_memory:
            self.senders.popitem(last=False)

    def remember_sender_of(self, envelope_id: str, frame: str | bytes) -> None:
        """After a restart the map is empty: the envelope itself names its sender."""
        if envelope_id in self.senders:
            return
        try:
            signed = _decode(frame)
        except DsipError:
            return
        body = _body(frame)
        sender = body.get("from") if body is not None else None
        if isinstance(sender, str):
            self._remember(envelope_id, signed.kid.split("#", 1)[0], sender)

    def _index_id(self, uri: str, slot: str) -> str:
        return f"{slot}-{hashlib.sha256(uri.encode()).hexdigest()[:48]}"

    async def touch_index(self, uri: str, *, force: bool = False) -> None:
        """Make sure the outbox index names ``uri`` for at least the retention period."""
        now = self.clock()
        last = self._index_touched.get(uri)
        if not force and last is not None and now - last < INDEX_REFRESH_S:
            return
        current = self._index_slot.get(uri)
        nxt = "b" if current == "a" else "a"
        # Free the other slot first (put never refreshes a row that exists), write it, and
        # only then drop the current one: there is always at least one index row.
        await self.store.ack(OUTBOX_INDEX, self._index_id(uri, nxt))
        await self.store.put(
            OUTBOX_INDEX,
            self._index_id(uri, nxt),
            uri.encode(),
            expires_at=int(now) + self.retention_s,
            now=int(now),
        )
        if current is not None:
            await self.store.ack(OUTBOX_INDEX, self._index_id(uri, current))
        self._index_slot[uri] = nxt
        self._index_touched[uri] = now

    async def drop_index(self, uri: str) -> None:
        for slot in ("a", "b"):
            await self.store.ack(OUTBOX_INDEX, self._index_id(uri, slot))
        self._index_slot.pop(uri, None)
        self._index_touched.pop(uri, None)

    async def outbox_size(self, uri: str) -> int:
        return (await self.store.stats(outbox_key(uri))).envelopes

    # --- inbound (the relay's side of a peer relay's link) ---------------------------------

    async def is_relay(self, did: str) -> bool:
        """Whether ``did`` is a relay identity: a did:web whose document has ``DSIPRelay``."""
        if not did.startswith("did:web:"):
            return False
        doc: DidDocument | None = self.resolver.cached(did)
        if doc is None:
            try:
                doc = await self.resolver.resolve(did)
            except DsipError:
                return False
        return doc.service(RELAY_SERVICE_TYPE) is not None

    def admit(self, relay_did: str, now: float) -> bool:
        """The per-origin token bucket; checked before verification."""
        self.stats["peer_received"] += 1
        if self._limiter.allow(relay_did, now):
            return True
        self.stats["peer_rate_limited"] += 1
        return False

    def retry_after(self, relay_did: str) -> int:
        return self._limiter.retry_after(relay_did)

    def custody_ack(self, relay_did: str, envelope_ids: list[str]) -> str:
        """The signed ``ack`` (store-and-forward/1.0) that passes custody back to a peer."""
        self.stats["peer_custody"] += len(envelope_ids)
        payload = make_payload(
            "ack",
            sender=self.did,
            now=int(self.clock()),
            profiles=[],
            to=relay_did,
            acks=envelope_ids,
        )
        return encode_frame(sign_envelope(payload, self.key))
