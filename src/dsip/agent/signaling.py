"""A device's signaling connection to its relay: hello, verified receive, signed send, acks.

``SignalingClient`` dials the relay (``wss://`` or ``quic://``), sends the client ``hello``,
verifies the relay's answer (signature, ``in_reply_to`` anti-splicing, capabilities), and
then delivers every inbound envelope *after* the full verification pipeline.

Custody acknowledgements (profile store-and-forward/1.0) let the relay delete its stored
copies. Only stored envelopes need one, and a stored envelope was necessarily issued before
this connection was bound, so the client acknowledges exactly the envelopes issued before
``bound_at + ACK_SKEW`` (batched); live traffic costs no acknowledgements. An envelope from
a sender whose clock runs ahead may miss its acknowledgement once; the relay then delivers
it again at the next binding, where it is acknowledged, and the duplicate-id store keeps the
application from seeing it twice. Duplicates — a relay redelivering after a
crash — are refused by the verifier's duplicate-id store and never reach the application.

Inbound refusals (bad signature, replay, ...) are logged with their reason token and
dropped: an unauthenticated sender gets no answer from an endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dsip.agent.resolver import DidResolver
from dsip.core.envelope import Verified, Verifier, decode_jose, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jsonwire import loads_strict
from dsip.core.jws import encode_frame
from dsip.core.semantic import SemanticContext
from dsip.core.ulid import is_ulid
from dsip.errors import DsipError, TransportError
from dsip.transport.base import COSE_EXTENSION, ConnectionClosed, FrameConnection
from dsip.transport.hello import ACK_EXTENSION, client_hello, extensions_of

__all__ = ["SignalingClient", "dial"]

logger = logging.getLogger("dsip.signaling")

ACK_DELAY = 0.02  # seconds: batch acknowledgements instead of one message per envelope
ACK_MAX = 256
ACK_SKEW = 5  # seconds after binding during which older-issued envelopes are acknowledged


async def dial(
    uri: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
    timeout: float = 10.0,
) -> FrameConnection:
    """Open a binding connection: ``wss://host:port/path`` or ``quic://host:port``.

    ``cafile`` trusts an extra CA for either binding (QUIC's TLS stack, aioquic, takes a
    file rather than an ``ssl.SSLContext``).
    """
    if uri.startswith("quic://"):
        from dsip.transport.quic import connect_quic

        hostport = uri[len("quic://") :].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        return await connect_quic(host, int(port), cafile=cafile, server_name=host, timeout=timeout)
    if cafile is not None and ssl_context is None:
        ssl_context = ssl.create_default_context(cafile=cafile)
    from dsip.transport.ws import connect_ws

    return await connect_ws(uri, ssl_context=ssl_context, timeout=timeout)


class SignalingClient:
    """One device, one relay connection."""

    def __init__(
        self,
        device: KeyPair,
        *,
        identity: str | None = None,
        delegations: Sequence[Mapping[str, str]] = (),
        verifier: Verifier | None = None,
        clock: Callable[[], float] = time.time,
        extensions: Sequence[str] = (ACK_EXTENSION,),
        resolver: DidResolver | None = None,
        access_token: str | None = None,
    ) -> None:
        self.device = device
        self.access_token = access_token
        self.resolver = resolver
        self.identity = identity or device.did
        self.delegations = list(delegations)
        self.verifier = verifier or Verifier(resolver.cached if resolver else None)
        self.clock = clock
        self.extensions = tuple(extensions)
        self.relay_did: str | None = None
        self.capabilities: dict[str, Any] = {}
        self.negotiated: frozenset[str] = frozenset()
        self.errors: list[Verified] = []  # signed errors received (relay refusals, peer errors)
        self.bound_at = 0
        self._conn: FrameConnection | None = None
        self._inbox: asyncio.Queue[Verified | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._acker: asyncio.Task[None] | None = None
        self._pending_acks: list[str] = []
        self._ack_wakeup = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def connect(
        self,
        uri: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        cafile: str | None = None,
        timeout: float = 10.0,
        connection: FrameConnection | None = None,
    ) -> None:
        """Dial, say hello, and verify the relay's hello (``timeout`` covers both)."""
        async with asyncio.timeout(timeout):
            conn = connection or await dial(
                uri, ssl_context=ssl_context, cafile=cafile, timeout=timeout
            )
            now = int(self.clock())
            hello, frame = client_hello(
                self.device,
                now=now,
                identity=self.identity,
                delegations=self.delegations,
                extensions=self.extensions,
                bindings=("quic/1.0",) if uri.startswith("quic://") else ("ws/1.0",),
                access_token=self.access_token,
            )
            await conn.send(frame)
            while True:
                reply = await conn.recv()
                try:
                    v = self.verifier.verify(
                        reply if isinstance(reply, str) else decode_jose(reply),
                        now=int(self.clock()),
                        context=SemanticContext(sent_hello_id=hello["id"]),
                    )
                except DsipError as exc:
                    await conn.close(1002, exc.code)
                    raise TransportError(
                        f"relay hello refused: {exc}", code=exc.code, reason=exc.reason
                    ) from None
                if v.type == "error":
                    await conn.close()
                    raise TransportError(
                        f"relay refused our hello: {v.payload.get('reason')} ({v.payload.get('detail', '')})",
                        code="hello-refused",
                        reason=str(v.payload.get("reason")),
                    )
                if v.type == "hello" and v.payload.get("in_reply_to") == hello["id"]:
                    break
        if "capabilities" not in v.payload:
            raise TransportError("relay hello without capabilities", code="schema-invalid")
        self.relay_did = v.identity
        self.capabilities = dict(v.payload["capabilities"])
        self.negotiated = extensions_of(v.payload) & set(self.extensions)
        self._conn = conn
        self.bound_at = int(self.clock())
        self._reader = asyncio.create_task(self._read_loop(conn))
        self._acker = asyncio.create_task(self._ack_loop())
        logger.info("%s bound at relay %s", self.device.did, self.relay_did)

    async def close(self) -> None:
        for task in (self._reader, self._acker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._conn is not None:
            await self._conn.close()
        self._inbox.put_nowait(None)

    # --- sending --------------------------------------------------------------------------

    def build(self, msg_type: str, *, ttl: int = 30, **fields: Any) -> dict[str, Any]:
        """A payload from this device's identity (``from`` = identity, signed by the device)."""
        return make_payload(
            msg_type, sender=self.identity, now=int(self.clock()), ttl=ttl, **fields
        )

    def seal(self, payload: Mapping[str, Any]) -> str | bytes:
        """Sign ``payload`` for the wire (COSE when negotiated, else JOSE)."""
        delegations = self.delegations if payload.get("from") != self.device.did else ()
        if COSE_EXTENSION in self.negotiated:
            from dsip.core.cose import sign_cose

            return sign_cose(payload, self.device, delegations=delegations)
        return encode_frame(sign_envelope(payload, self.device, delegations=delegations))

    async def send(self, payload: Mapping[str, Any]) -> None:
        if self._conn is None:
            raise TransportError("not connected", code="not-connected")
        await self._conn.send(self.seal(payload))

    async def send_frame(self, frame: str | bytes) -> None:
        """Send an envelope signed elsewhere (e.g. a ``msg`` from the messaging layer)."""
        if self._conn is None:
            raise TransportError("not connected", code="not-connected")
        await self._conn.send(frame)

    # --- receiving ------------------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> Verified:
        """The next verified inbound envelope (errors included)."""
        async with asyncio.timeout(timeout):
            item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # stay closed for every later reader
            raise ConnectionClosed("signaling connection closed")
        return item

    async def _read_loop(self, conn: FrameConnection) -> None:
        try:
            while True:
                frame = await conn.recv()
                try:
                    if isinstance(frame, bytes):
                        from dsip.core.cose import decode_cose

                        signed = decode_cose(frame)
                    else:
                        signed = decode_jose(frame)
                    if self.resolver is not None:
                        await self.resolver.prefetch(signed)
                    v = self.verifier.verify_signed(signed, now=int(self.clock()))
                except DsipError as exc:
                    if exc.code == "duplicate-id":
                        # Already delivered to us once (the relay lost our ack): take custody
                        # again so the relay can let go, but do not show it twice.
                        self._ack_duplicate(frame)
                    logger.info("dropped inbound envelope: %s", exc)
                    continue
                if (
                    ACK_EXTENSION in self.negotiated
                    and v.signer != self.relay_did
                    and v.payload["issued_at"] <= self.bound_at + ACK_SKEW
                ):
                    self._pending_acks.append(v.id)
                    self._ack_wakeup.set()
                if v.type == "error":
                    self.errors.append(v)
                self._inbox.put_nowait(v)
        except ConnectionClosed:
            pass
        finally:
            self._inbox.put_nowait(None)

    def _ack_duplicate(self, frame: str | bytes) -> None:
        if ACK_EXTENSION not in self.negotiated or isinstance(frame, bytes):
            return
        try:
            body, _ = loads_strict(decode_jose(frame).payload_bytes)
        except DsipError:
            return
        if isinstance(body, dict) and is_ulid(body.get("id")):
            self._pending_acks.append(str(body["id"]))
            self._ack_wakeup.set()

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wakeup.wait()
            await asyncio.sleep(ACK_DELAY)
            self._ack_wakeup.clear()
            while self._pending_acks and self._conn is not None:
                batch, self._pending_acks = (
                    self._pending_acks[:ACK_MAX],
                    self._pending_acks[ACK_MAX:],
                )
                payload = make_payload(
                    "ack",
                    sender=self.device.did,
                    now=int(self.clock()),
                    profiles=[],
                    to=self.relay_did,
                    acks=batch,
                )
                try:
                    await self._conn.send(encode_frame(sign_envelope(payload, self.device)))
                except ConnectionClosed:
                    return
