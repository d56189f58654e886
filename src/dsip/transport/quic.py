"""quic/1.0: the DSIP signaling binding on QUIC (v0.7 §13.4), on ``aioquic``.

quic/1.0 carries exactly the frames of ws/1.0 (§13.2) — a DSIP-JOSE text frame or, once
negotiated, a DSIP-COSE binary frame, never more than 65,536 bytes — and hands the layers
above the same ``FrameConnection``. Design:

* **ALPN ``dsip/1``, TLS 1.3.** QUIC always runs TLS 1.3 (RFC 9001); the client validates the
  server certificate against ``cafile`` (or, without one, the ``certifi`` bundle aioquic
  defaults to) and ``server_name`` (§13.1: encryption and server authentication).
* **One client-initiated bidirectional stream per connection carries every frame, in order.**
  Signaling needs per-connection ordering (§12.3): a ``hello`` must precede the first
  ``invite``, a ``cancel`` must not overtake its ``invite``. QUIC orders bytes only *within*
  a stream, so a stream per session (or per message) would let cross-session messages
  overtake each other, and buys nothing at signaling rates (a few small frames per call;
  there is no bulk transfer whose head-of-line blocking would matter). The client opens the
  stream with its first frame (its ``hello``); the server's ``send`` waits until then. A
  second stream from the peer, a reset or an early end of the stream is a protocol error.
* **Stream framing:** 1 byte kind (``0x00`` UTF-8 JOSE text, ``0x01`` COSE binary) + 4-byte
  big-endian length + frame bytes (``encode_stream_frame`` / ``StreamFrameDecoder``, both
  sans-I/O). A length above 65,536 is refused as soon as the 5-byte header is in, before any
  of the body is buffered: the connection closes with application error code 1009
  (``CLOSE_TOO_BIG``). An unknown kind byte closes with 1002, a text frame that is not UTF-8 with 1007 (the
  WebSocket code ws/1.0 uses for the same fault). Close codes travel as QUIC application
  error codes in CONNECTION_CLOSE and come back as ``ConnectionClosed.close_code``.
* **Backpressure, both ends.** ``aioquic`` (1.x) buffers whatever ``send_stream_data`` is
  given (aiortc/aioquic#328) and raises the receive credit (MAX_STREAM_DATA) as bytes
  *arrive*, not as the application reads them — so on its own a peer that never calls
  ``recv`` absorbs everything, and a sender's buffer grows without bound. We therefore
  (1) advertise credit as the application *consumes* frames: the window is
  ``consumed + RECV_WINDOW`` (256 KiB), raised in half-window steps, so unread data per
  connection is bounded by the window; and (2) make ``send`` wait while more than
  ``SEND_BUFFER`` (256 KiB) of written bytes are unacknowledged. A slow reader thus stalls
  its sender's ``send`` instead of growing anyone's memory. Both reach into ``aioquic``
  internals that have no public API (``QuicConnection._write_stream_limits``, the stream
  sender's buffer offsets); they are isolated in ``_ConsumptionWindow`` and
  ``_unacked_bytes``, checked at import, and covered by the slow-reader test.
* **Liveness.** ``idle_timeout`` is QUIC's idle timeout (RFC 9000 §10.1); each side sends a
  PING every ``idle_timeout / 3`` so a quiet but live connection stays up (and NAT bindings
  stay open) while a vanished peer is detected within ``idle_timeout``.
* **No library exception escapes.** Connection failures, TLS failures and timeouts become
  ``TransportError``; a gone peer becomes ``ConnectionClosed``; a bad local certificate or
  CA file is a ``ConfigError``.

Each accepted connection runs ``handler(conn)`` as a task once its handshake completed;
when the handler returns the connection is closed (1000; 1011 if it raised), and
``QuicServer.close()`` cancels the handlers and closes every connection with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, Final

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer as _AioQuicServer
from aioquic.asyncio.server import serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.stream import QuicStreamSender
from cryptography import x509

from dsip.errors import ConfigError, FrameTooLargeError, TransportError
from dsip.transport.base import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    ConnectionClosed,
    FrameConnection,
)

__all__ = [
    "ALPN",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "FRAME_HEADER_BYTES",
    "KIND_COSE",
    "KIND_JOSE",
    "RECV_WINDOW",
    "SEND_BUFFER",
    "FramingError",
    "QuicFrameConnection",
    "QuicServer",
    "StreamFrameDecoder",
    "connect_quic",
    "encode_stream_frame",
    "serve_quic",
]

log = logging.getLogger(__name__)

ALPN: Final = "dsip/1"
KIND_JOSE: Final = 0x00
KIND_COSE: Final = 0x01
FRAME_HEADER_BYTES: Final = 5
RECV_WINDOW: Final = 256 * 1024  # unread bytes a peer may have in flight to us
SEND_BUFFER: Final = 256 * 1024  # unacknowledged bytes we hold before ``send`` waits
CLOSE_INVALID_DATA: Final = 1007  # WebSocket numbering: text frame that is not UTF-8
CLOSE_INTERNAL_ERROR: Final = 1011  # WebSocket numbering: our handler failed
_HANDLER_GRACE: Final = 5.0  # seconds a cancelled handler gets to finish on server close

# A half window must hold a whole frame, or credit could stall on a partial one.
assert RECV_WINDOW // 2 >= FRAME_HEADER_BYTES + MAX_FRAME_BYTES


# --- framing (sans-I/O) -----------------------------------------------------------------


class FramingError(TransportError):
    """The peer broke quic/1.0 stream framing; ``close_code`` is how we close for it."""

    def __init__(
        self, message: str, *, code: str, close_code: int, reason: str | None = None
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        self.close_code = close_code


def encode_stream_frame(frame: str | bytes) -> bytes:
    """The stream bytes of one frame: kind, 4-byte big-endian length, body."""
    if isinstance(frame, str):
        kind, body = KIND_JOSE, frame.encode("utf-8")
    elif isinstance(frame, (bytes, bytearray, memoryview)):
        kind, body = KIND_COSE, bytes(frame)
    else:
        raise TransportError(
            f"a frame is str (JOSE) or bytes (COSE), not {type(frame).__name__}",
            code="frame-type",
            remote=False,
        )
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLargeError(
            f"refusing to send a {len(body)}-byte frame (cap {MAX_FRAME_BYTES})", remote=False
        )
    return bytes((kind,)) + len(body).to_bytes(4, "big") + body


class StreamFrameDecoder:
    """Bytes of the signaling stream in, whole frames out; no I/O.

    ``feed`` returns ``(frame, wire_size)`` pairs for every frame completed so far. At the
    first framing fault it stops: ``error`` is set (frames before the fault are still
    returned) and later input is ignored.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._kind = -1
        self._length = -1
        self.error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress."""
        return len(self._buf)

    @property
    def at_boundary(self) -> bool:
        """No partial frame is pending."""
        return self._length < 0 and not self._buf

    def feed(self, data: bytes) -> list[tuple[str | bytes, int]]:
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        out: list[tuple[str | bytes, int]] = []
        pos = 0
        try:
            while True:
                if self._length < 0:
                    if pos < len(buf) and buf[pos] not in (KIND_JOSE, KIND_COSE):
                        raise FramingError(
                            f"unknown frame kind 0x{buf[pos]:02x}",
                            code="frame-kind-invalid",
                            close_code=CLOSE_PROTOCOL,
                        )
                    if len(buf) - pos < FRAME_HEADER_BYTES:
                        break
                    length = int.from_bytes(buf[pos + 1 : pos + 5], "big")
                    if length > MAX_FRAME_BYTES:  # §13.2: refused before the body is buffered
                        raise FramingError(
                            f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte cap",
                            code="frame-too-large",
                            close_code=CLOSE_TOO_BIG,
                            reason="transport.envelope-too-large",
                        )
                    self._kind, self._length = buf[pos], length
                    pos += FRAME_HEADER_BYTES
                if len(buf) - pos < self._length:
                    break
                body = bytes(buf[pos : pos + self._length])
                pos += self._length
                out.append((self._body(body), FRAME_HEADER_BYTES + self._length))
                self._kind = self._length = -1
        except FramingError as exc:
            self.error = exc
            buf.clear()
            return out
        del buf[:pos]
        return out

    def _body(self, body: bytes) -> str | bytes:
        if self._kind == KIND_COSE:
            return body
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise FramingError(
                "text frame is not UTF-8", code="frame-not-utf8", close_code=CLOSE_INVALID_DATA
            ) from None


# --- aioquic internals we depend on (no public API; see the module docstring) -----------


def _check_aioquic_internals() -> None:
    """Fail at import, not under load, if an aioquic release moved what we rely on."""
    sender = QuicStreamSender(stream_id=0, writable=True)
    if not (
        callable(getattr(QuicConnection, "_write_stream_limits", None))
        and isinstance(getattr(sender, "_buffer_start", None), int)
        and isinstance(getattr(sender, "_buffer_stop", None), int)
    ):  # pragma: no cover
        raise ImportError("this aioquic release lacks the flow-control internals quic/1.0 uses")


_check_aioquic_internals()


class _ConsumptionWindow:
    """Make one ``QuicConnection`` grant stream credit as the application consumes.

    aioquic's ``_write_stream_limits`` doubles a stream's MAX_STREAM_DATA once half of it
    has *arrived*. We replace that rule: credit ends at ``consumed + window``, raised in
    half-window steps; aioquic still writes (and re-sends, on loss) the frame itself.
    """

    def __init__(self, quic: QuicConnection, window: int) -> None:
        self.window = window
        self.consumed: dict[int, int] = {}
        self._original = quic._write_stream_limits
        quic._write_stream_limits = self._write_stream_limits  # type: ignore[method-assign]

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if stream.max_stream_data_local:  # zero only for our own unidirectional streams
            target = self.consumed.get(stream.stream_id, 0) + self.window
            if target - stream.max_stream_data_local >= self.window // 2:
                stream.max_stream_data_local = target
        receiver = stream.receiver
        highest = receiver.highest_offset
        receiver.highest_offset = 0  # hide arrivals from aioquic's own doubling rule
        try:
            self._original(builder=builder, space=space, stream=stream)
        finally:
            receiver.highest_offset = highest


def _unacked_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to ``stream_id`` that the peer has not acknowledged yet."""
    stream = quic._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


# --- the connection ---------------------------------------------------------------------


def _printable(addr: NetworkAddress | None) -> tuple[str, str]:
    """(``host:port``, ip) with IPv4-mapped IPv6 addresses shown as IPv4."""
    if addr is None:
        return "unknown", ""
    host, port = str(addr[0]), int(addr[1])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}", host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    shown = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    return shown, str(ip)


class QuicFrameConnection:
    """One quic/1.0 connection as a ``FrameConnection`` (see ``dsip.transport.base``)."""

    def __init__(self, protocol: _DsipQuicProtocol, *, is_client: bool, idle_timeout: float):
        self._protocol = protocol
        self._quic = protocol._quic
        self._is_client = is_client
        self._window = _ConsumptionWindow(self._quic, RECV_WINDOW)
        self._decoder = StreamFrameDecoder()
        self._frames: deque[tuple[str | bytes, int]] = deque()
        self._stream_id: int | None = None
        self._consumed = 0
        self._credited = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._addr: NetworkAddress | None = None
        self._keepalive_interval = idle_timeout / 3
        self._keepalive: asyncio.TimerHandle | None = None
        self._release: Callable[[], Coroutine[Any, Any, None]] | None = None  # client socket
        self._release_task: asyncio.Task[None] | None = None

    # FrameConnection --------------------------------------------------------------------

    @property
    def remote(self) -> str:
        return _printable(self._addr)[0]

    @property
    def remote_ip(self) -> str:
        return _printable(self._addr)[1]

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The close code once closed (ours or the peer's); ``None`` for a lost connection."""
        return self._close_code

    async def send(self, frame: str | bytes) -> None:
        """Write one frame; waits while ``SEND_BUFFER`` bytes are unacknowledged.

        Cancellation-safe: a cancelled ``send`` has written nothing.
        """
        data = encode_stream_frame(frame)
        async with self._send_lock:
            while True:
                if self._closed:
                    raise self._closed_error()
                if self._stream_id is not None and self._unacked() < SEND_BUFFER:
                    break
                self._writable.clear()
                await self._writable.wait()
            try:
                self._quic.send_stream_data(self._stream_id, data)
            except Exception as exc:  # aioquic: stream or connection already finished
                self._shutdown(None, f"send failed: {exc}", keep_pending=False)
                raise self._closed_error() from None
            self._protocol.transmit()

    async def recv(self) -> str | bytes:
        while not self._frames:
            if self._closed:
                raise self._closed_error()
            self._readable.clear()
            await self._readable.wait()
        frame, size = self._frames.popleft()
        self._consumed += size
        if self._stream_id is not None:
            self._window.consumed[self._stream_id] = self._consumed
        if self._consumed - self._credited >= RECV_WINDOW // 2 and not self._closed:
            self._credited = self._consumed
            self._protocol.transmit()  # lets _ConsumptionWindow send MAX_STREAM_DATA now
        return frame

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if not self._closed:
            self._shutdown(code, reason, keep_pending=False, local=True)
        await self._release_socket()

    # internals --------------------------------------------------------------------------

    def _unacked(self) -> int:
        return 0 if self._stream_id is None else _unacked_bytes(self._quic, self._stream_id)

    def _closed_error(self) -> ConnectionClosed:
        code = self._close_code
        text = f"connection closed ({code if code is not None else 'no close code'})"
        if self._close_reason:
            text += f": {self._close_reason[:200]}"
        return ConnectionClosed(text, close_code=code)

    def _shutdown(
        self, code: int | None, reason: str, *, keep_pending: bool, local: bool = True
    ) -> None:
        """Mark closed, wake every waiter; if ``local``, send CONNECTION_CLOSE with ``code``."""
        if self._closed:
            return
        self._closed = True
        self._close_code, self._close_reason = code, reason
        if not keep_pending:
            self._frames.clear()
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if local and code is not None:
            with contextlib.suppress(Exception):  # already closing/terminated in aioquic
                self._protocol.close(error_code=code, reason_phrase=reason[:200])
        self._readable.set()
        self._writable.set()

    async def _release_socket(self) -> None:
        """Client side: leave aioquic's ``connect`` context (drains, closes the socket)."""
        release, self._release = self._release, None
        if release is not None:
            with contextlib.suppress(Exception):
                await release()
        elif self._release_task is not None:
            await asyncio.shield(self._release_task)

    def _schedule_keepalive(self) -> None:
        if self._closed or self._keepalive_interval <= 0:
            return
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(self._keepalive_interval, self._ping)

    def _ping(self) -> None:
        self._keepalive = None
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._quic.send_ping(0)
            self._protocol.transmit()
        self._schedule_keepalive()

    # events from the protocol -------------------------------------------------------------

    def _on_handshake(self) -> None:
        if self._is_client:
            self._stream_id = self._quic.get_next_available_stream_id()
            self._writable.set()
        self._schedule_keepalive()

    def _on_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        if self._closed:
            return
        if self._stream_id is None and not self._is_client and stream_id % 4 == 0:
            self._stream_id = stream_id  # the client's first bidirectional stream
            self._writable.set()
        if stream_id != self._stream_id:
            self._fail(CLOSE_PROTOCOL, "one signaling stream per connection")
            return
        frames = self._decoder.feed(data)
        if frames:
            self._frames.extend(frames)
            self._readable.set()
        if self._decoder.error is not None:
            err = self._decoder.error
            log.info("quic/1.0 %s: %s, closing with %d", self.remote, err.message, err.close_code)
            self._fail(err.close_code, err.message)
        elif end_stream:
            if self._decoder.at_boundary:
                self._fail(CLOSE_NORMAL, "signaling stream finished by peer")
            else:
                self._fail(CLOSE_PROTOCOL, "signaling stream ended inside a frame")

    def _fail(self, code: int, reason: str) -> None:
        """The peer broke the binding: close with ``code``; frames already complete stay
        readable (they were well-framed), then ``recv`` raises ``ConnectionClosed``."""
        self._shutdown(code, reason, keep_pending=True)

    def _on_terminated(self, event: events.ConnectionTerminated) -> None:
        # Application closes carry our close codes; transport errors (frame_type set) and
        # the idle timeout (code 0) are a lost connection: no close code.
        code = event.error_code if event.frame_type is None and event.error_code else None
        self._shutdown(code, event.reason_phrase, keep_pending=True, local=False)
        if self._release is not None and self._release_task is None:
            release, self._release = self._release, None
            self._release_task = asyncio.get_running_loop().create_task(release())

    def _on_datagram(self, addr: NetworkAddress) -> None:
        if self._addr is None:
            self._addr = addr  # the handshake path (per-IP policy keys on it)
        if (
            not self._writable.is_set()
            and self._stream_id is not None
            and (self._closed or self._unacked() < SEND_BUFFER)
        ):
            self._writable.set()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class _DsipQuicProtocol(QuicConnectionProtocol):
    """aioquic's asyncio protocol, routing events to one ``QuicFrameConnection``."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        on_ready: Callable[[QuicFrameConnection], None] | None = None,
        idle_timeout: float = 90.0,
    ) -> None:
        super().__init__(quic, stream_handler=stream_handler)
        self.conn = QuicFrameConnection(
            self, is_client=quic.configuration.is_client, idle_timeout=idle_timeout
        )
        self._on_ready = on_ready
        self.termination: events.ConnectionTerminated | None = None

    async def wait_connected(self) -> None:
        try:
            await super().wait_connected()
        finally:
            # Cancelled (connect timeout): aioquic later fails its waiter with
            # ConnectionError; mark that retrieved instead of logging it as lost.
            waiter = self._connected_waiter
            if waiter is not None:
                waiter.add_done_callback(_retrieve)

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        super().datagram_received(data, addr)
        self.conn._on_datagram(addr)  # acknowledgements may have freed send buffer

    def quic_event_received(self, event: events.QuicEvent) -> None:
        conn = self.conn
        if isinstance(event, events.StreamDataReceived):
            conn._on_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.HandshakeCompleted):
            conn._on_handshake()
            if self._on_ready is not None:
                self._on_ready(conn)
        elif isinstance(event, (events.StreamReset, events.StopSendingReceived)):
            conn._fail(CLOSE_PROTOCOL, "signaling stream reset by peer")
        elif isinstance(event, events.ConnectionTerminated):
            self.termination = event
            conn._on_terminated(event)


# --- server -----------------------------------------------------------------------------

Handler = Callable[[FrameConnection], Awaitable[None]]


class QuicServer:
    """A listening quic/1.0 endpoint; ``close()`` cancels handlers and closes connections."""

    def __init__(self, handler: Handler, idle_timeout: float) -> None:
        self._handler = handler
        self._idle_timeout = idle_timeout
        self._server: _AioQuicServer | None = None
        self._tasks: dict[asyncio.Task[None], QuicFrameConnection] = {}
        self._closing = False
        self.port = 0

    def _protocol(self, quic: QuicConnection, stream_handler: Any = None) -> _DsipQuicProtocol:
        return _DsipQuicProtocol(
            quic, stream_handler, on_ready=self._spawn, idle_timeout=self._idle_timeout
        )

    def _spawn(self, conn: QuicFrameConnection) -> None:
        if self._closing:
            conn._shutdown(CLOSE_GOING_AWAY, "server shutting down", keep_pending=False)
            return
        task = asyncio.get_running_loop().create_task(self._run(conn))
        self._tasks[task] = conn
        task.add_done_callback(self._tasks.pop)

    async def _run(self, conn: QuicFrameConnection) -> None:
        try:
            await self._handler(conn)
        except asyncio.CancelledError:
            await conn.close(CLOSE_GOING_AWAY, "server shutting down")
            raise
        except Exception:
            log.exception("quic/1.0 handler failed for %s", conn.remote)
            await conn.close(CLOSE_INTERNAL_ERROR, "internal error")
        else:
            await conn.close()

    async def close(self) -> None:
        """Stop accepting, cancel every handler (their connections close with 1001)."""
        if self._closing:
            return
        self._closing = True
        running = dict(self._tasks)
        for task in running:
            task.cancel()
        if running:
            _, stuck = await asyncio.wait(running, timeout=_HANDLER_GRACE)
            for task in stuck:  # a handler that swallowed its cancellation
                conn = running[task]
                log.warning("quic/1.0 handler for %s ignored cancellation", conn.remote)
                conn._shutdown(CLOSE_GOING_AWAY, "server shutting down", keep_pending=False)
        if self._server is not None:
            self._server.close()  # remaining (handshaking) connections, then the socket


async def serve_quic(
    handler: Callable[[FrameConnection], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certfile: str,
    keyfile: str,
    idle_timeout: float = 90.0,
) -> QuicServer:
    """Listen for quic/1.0 on UDP ``host:port`` (0 = any free port, see ``.port``)."""
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        idle_timeout=idle_timeout,
        max_stream_data=RECV_WINDOW,
    )
    try:
        config.load_cert_chain(certfile, keyfile)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load QUIC certificate/key: {exc}") from None
    server = QuicServer(handler, idle_timeout)
    try:
        aio_server = await serve(host, port, configuration=config, create_protocol=server._protocol)
    except OSError as exc:
        raise TransportError(
            f"cannot listen on udp {host}:{port}: {exc}", code="listen-failed", remote=False
        ) from None
    server._server = aio_server
    transport = aio_server._transport  # aioquic keeps the UDP transport private
    server.port = int(transport.get_extra_info("sockname")[1]) if transport else port
    return server


# --- client -----------------------------------------------------------------------------


async def connect_quic(
    host: str,
    port: int,
    *,
    cafile: str | None = None,
    server_name: str = "localhost",
    idle_timeout: float = 90.0,
    timeout: float = 5.0,
) -> FrameConnection:
    """Open a quic/1.0 connection; the certificate must chain to ``cafile`` (or the default
    trust store) and match ``server_name``. Raises ``TransportError`` on any failure."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        server_name=server_name,
        idle_timeout=idle_timeout,
        max_stream_data=RECV_WINDOW,
    )
    if cafile is not None:
        try:  # fail here, locally, not as a handshake error
            with open(cafile, "rb") as fp:
                x509.load_pem_x509_certificates(fp.read())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load CA file {cafile!r}: {exc}") from None
        config.load_verify_locations(cafile=cafile)

    created: list[_DsipQuicProtocol] = []

    def protocol(quic: QuicConnection, stream_handler: Any = None) -> _DsipQuicProtocol:
        created.append(_DsipQuicProtocol(quic, stream_handler, idle_timeout=idle_timeout))
        return created[-1]

    def why(exc: BaseException) -> str:
        ended = created[0].termination if created else None
        if ended is not None and ended.reason_phrase:
            return ended.reason_phrase  # e.g. the TLS certificate verification failure
        return str(exc) or type(exc).__name__

    stack = AsyncExitStack()
    try:
        async with asyncio.timeout(timeout):
            await stack.enter_async_context(
                connect(host, port, configuration=config, create_protocol=protocol)
            )
    except TimeoutError:
        await stack.aclose()
        raise TransportError(
            f"quic/1.0 connect to {host}:{port} timed out after {timeout} s",
            code="connect-timeout",
        ) from None
    except (OSError, ValueError) as exc:  # ConnectionError (handshake) is an OSError
        await stack.aclose()
        raise TransportError(
            f"quic/1.0 connect to {host}:{port} failed: {why(exc)}", code="connect-failed"
        ) from None
    conn = created[0].conn
    conn._release = stack.aclose
    if conn.closed:  # terminated between the handshake and here
        await conn._release_socket()
    return conn
