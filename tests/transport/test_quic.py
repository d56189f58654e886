"""quic/1.0 on loopback: ordering, the 65,536-byte cap, TLS, closing, hostile streams,
backpressure, liveness — plus the sans-I/O stream framing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.core.cose import decode_cose, sign_cose
from dsip.core.envelope import Verifier, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.jws import encode_frame as jose_frame
from dsip.errors import ConfigError, DsipError, FrameTooLargeError, TransportError
from dsip.services.localca import LocalCA
from dsip.transport.base import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    ConnectionClosed,
    FrameConnection,
)
from dsip.transport.quic import (
    ALPN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    RECV_WINDOW,
    SEND_BUFFER,
    QuicServer,
    StreamFrameDecoder,
    connect_quic,
    encode_stream_frame,
    serve_quic,
)
from tests.conftest import NOW, vector_key

pytestmark = pytest.mark.network

BOUND = 15.0  # seconds: every network test finishes within this or fails


@dataclass(frozen=True)
class Pki:
    certfile: str
    keyfile: str
    cafile: str
    other_cafile: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("quic-pki")
    local, other = LocalCA.create(), LocalCA.create()
    cert, key = d / "server.pem", d / "server.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in local.server.cert_chain_pems))
    local.server.private_key_pem.write_to_path(str(key))
    return Pki(
        certfile=str(cert),
        keyfile=str(key),
        cafile=str(local.write_ca_pem(d / "ca.pem")),
        other_cafile=str(other.write_ca_pem(d / "other-ca.pem")),
    )


Handler = Callable[[FrameConnection], Awaitable[None]]


@asynccontextmanager
async def running(pki: Pki, handler: Handler, **kw: Any) -> AsyncIterator[QuicServer]:
    server = await serve_quic(handler, certfile=pki.certfile, keyfile=pki.keyfile, **kw)
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def client(pki: Pki, server: QuicServer, **kw: Any) -> AsyncIterator[FrameConnection]:
    conn = await connect_quic("127.0.0.1", server.port, cafile=pki.cafile, **kw)
    try:
        yield conn
    finally:
        await conn.close()


class Seen:
    """What a server handler observed: its connection and how ``recv`` ended."""

    def __init__(self) -> None:
        self.conn: asyncio.Future[FrameConnection] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.frames: list[str | bytes] = []

    async def reader(self, conn: FrameConnection) -> None:
        self.conn.set_result(conn)
        try:
            while True:
                self.frames.append(await conn.recv())
        except Exception as exc:  # the test asserts on the type
            self.ended.set_result(exc)


async def echo(conn: FrameConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await conn.send(await conn.recv())


# A peer that speaks raw QUIC, to put bytes on the stream our client would never send.


class RawPeer(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.terminated: asyncio.Future[events.ConnectionTerminated] = (
            asyncio.get_running_loop().create_future()
        )

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)

    def write(self, data: bytes, stream_id: int = 0, end: bool = False) -> None:
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()


@asynccontextmanager
async def raw_peer(pki: Pki, server: QuicServer, alpn: str = ALPN) -> AsyncIterator[RawPeer]:
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name="localhost")
    config.load_verify_locations(cafile=pki.cafile)
    async with connect(
        "127.0.0.1", server.port, configuration=config, create_protocol=RawPeer
    ) as p:
        assert isinstance(p, RawPeer)
        yield p


def _invite_frames() -> tuple[str, bytes]:
    key = vector_key("alice")
    payload = example_invite(key.did, "did:web:example.com:users:bob", now=NOW)
    return jose_frame(sign_envelope(payload, key)), sign_cose(payload, key)


# --- ordering and frames ----------------------------------------------------------------


async def test_echo_of_jose_and_cose_frames_keeps_order_and_kind(pki: Pki) -> None:
    jose, cose = _invite_frames()
    frames: list[str | bytes] = [
        f"{i}:{jose}" if i % 2 else cose + i.to_bytes(2, "big") for i in range(1000)
    ]
    async with asyncio.timeout(BOUND), running(pki, echo) as server, client(pki, server) as conn:
        assert isinstance(conn, FrameConnection)

        async def send_all() -> None:
            for f in frames:
                await conn.send(f)

        sending = asyncio.create_task(send_all())
        received = [await conn.recv() for _ in frames]
        await sending
    assert received == frames  # same order, str stays str, bytes stay bytes


async def test_frames_arrive_verifiable(pki: Pki) -> None:
    jose, cose = _invite_frames()
    async with asyncio.timeout(BOUND), running(pki, echo) as server, client(pki, server) as conn:
        await conn.send(jose)
        await conn.send(cose)
        back_jose, back_cose = await conn.recv(), await conn.recv()
    assert isinstance(back_jose, str)
    assert isinstance(back_cose, bytes)
    assert Verifier().verify(back_jose, now=NOW).type == "invite"
    assert Verifier().verify_signed(decode_cose(back_cose), now=NOW).type == "invite"


async def test_remote_address_is_the_loopback_peer(pki: Pki) -> None:
    seen = Seen()
    async with (
        asyncio.timeout(BOUND),
        running(pki, seen.reader) as server,
        client(pki, server) as conn,
    ):
        assert (conn.remote_ip, conn.remote) == ("127.0.0.1", f"127.0.0.1:{server.port}")
        await conn.send("hello")
        server_side = await seen.conn
        assert server_side.remote_ip == "127.0.0.1"
        assert server_side.remote.startswith("127.0.0.1:")


# --- the 65,536-byte cap ------------------------------------------------------------------


async def test_a_max_size_frame_passes_and_one_byte_more_closes_1009(pki: Pki) -> None:
    seen = Seen()
    async with asyncio.timeout(BOUND), running(pki, seen.reader) as server:
        async with client(pki, server) as conn:
            await conn.send("j" * MAX_FRAME_BYTES)
            await conn.send(b"c" * MAX_FRAME_BYTES)
            while len(seen.frames) < 2:
                await asyncio.sleep(0.01)
            # Our own client refuses to send too much, locally, and stays usable.
            with pytest.raises(FrameTooLargeError) as err:
                await conn.send(b"c" * (MAX_FRAME_BYTES + 1))
            assert err.value.remote is False
            await conn.send("still open")
            while len(seen.frames) < 3:
                await asyncio.sleep(0.01)
        assert seen.frames == ["j" * MAX_FRAME_BYTES, b"c" * MAX_FRAME_BYTES, "still open"]

    seen = Seen()
    async with asyncio.timeout(BOUND), running(pki, seen.reader) as server:
        async with raw_peer(pki, server) as peer:
            peer.write(encode_stream_frame("ok"))
            # Only the header of an oversize frame: the refusal must not wait for the body.
            peer.write(b"\x01" + (MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
            ended = await peer.terminated
        assert (ended.error_code, ended.frame_type) == (CLOSE_TOO_BIG, None)
        exc = await seen.ended
        assert isinstance(exc, ConnectionClosed)
        assert exc.close_code == CLOSE_TOO_BIG
        assert seen.frames == ["ok"]  # frames before the fault were delivered


# --- TLS --------------------------------------------------------------------------------


async def test_a_client_that_does_not_trust_the_server_fails_cleanly(pki: Pki) -> None:
    async with asyncio.timeout(BOUND), running(pki, echo) as server:
        with pytest.raises(TransportError) as err:
            await connect_quic("127.0.0.1", server.port, cafile=pki.other_cafile)
        assert err.value.code == "connect-failed"
        with pytest.raises(TransportError) as err:  # right CA, wrong name
            await connect_quic(
                "127.0.0.1", server.port, cafile=pki.cafile, server_name="other.example"
            )
        assert err.value.code == "connect-failed"
        with pytest.raises(TransportError) as err:  # the system/certifi store: not our CA
            await connect_quic("127.0.0.1", server.port)
        # The server is unharmed.
        async with client(pki, server) as conn:
            await conn.send("ping")
            assert await conn.recv() == "ping"


async def test_a_peer_without_the_dsip_alpn_is_refused(pki: Pki) -> None:
    async with asyncio.timeout(BOUND), running(pki, echo) as server:
        with pytest.raises(ConnectionError):
            async with raw_peer(pki, server, alpn="h3"):
                pass


async def test_bad_local_files_are_config_errors(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError):
        await serve_quic(echo, certfile=str(junk), keyfile=pki.keyfile)
    with pytest.raises(ConfigError):
        await connect_quic("127.0.0.1", 9, cafile=str(tmp_path / "missing.pem"))


async def test_a_busy_port_is_a_local_transport_error(pki: Pki) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        with pytest.raises(TransportError) as err:
            await serve_quic(
                echo, port=busy.getsockname()[1], certfile=pki.certfile, keyfile=pki.keyfile
            )
    assert (err.value.code, err.value.remote) == ("listen-failed", False)


async def test_connect_to_a_silent_port_times_out(pki: Pki) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        async with asyncio.timeout(BOUND):
            with pytest.raises(TransportError) as err:
                await connect_quic("127.0.0.1", port, cafile=pki.cafile, timeout=0.5)
    assert err.value.code == "connect-timeout"


# --- closing ----------------------------------------------------------------------------


async def test_client_close_ends_the_server_recv(pki: Pki) -> None:
    seen = Seen()
    async with asyncio.timeout(BOUND), running(pki, seen.reader) as server:
        conn = await connect_quic("127.0.0.1", server.port, cafile=pki.cafile)
        await conn.send("hello")
        await seen.conn
        await conn.close(CLOSE_POLICY, "bye")
        assert conn.closed
        await conn.close()  # idempotent
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        with pytest.raises(ConnectionClosed):
            await conn.send("after close")
        exc = await seen.ended
    assert isinstance(exc, ConnectionClosed)
    assert exc.close_code == CLOSE_POLICY
    assert "bye" in exc.message
    assert seen.frames == ["hello"]


async def test_server_close_ends_the_client_recv(pki: Pki) -> None:
    async def greet_and_leave(conn: FrameConnection) -> None:
        await conn.send(await conn.recv())
        await conn.close(CLOSE_NORMAL, "done")

    async with (
        asyncio.timeout(BOUND),
        running(pki, greet_and_leave) as server,
        client(pki, server) as conn,
    ):
        await conn.send("hello")
        assert await conn.recv() == "hello"
        with pytest.raises(ConnectionClosed) as err:
            await conn.recv()
        assert err.value.close_code == CLOSE_NORMAL
        assert conn.closed


async def test_server_close_cancels_handlers_and_says_going_away(pki: Pki) -> None:
    cancelled = asyncio.Event()

    async def forever(conn: FrameConnection) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with asyncio.timeout(BOUND):
        server = await serve_quic(forever, certfile=pki.certfile, keyfile=pki.keyfile)
        conn = await connect_quic("127.0.0.1", server.port, cafile=pki.cafile)
        await conn.send("hello")
        await asyncio.sleep(0.1)
        await server.close()
        assert cancelled.is_set()
        with pytest.raises(ConnectionClosed) as err:
            await conn.recv()
        assert err.value.close_code == CLOSE_GOING_AWAY
        await conn.close()


async def test_a_failing_handler_closes_with_1011(pki: Pki) -> None:
    async def broken(conn: FrameConnection) -> None:
        await conn.recv()
        raise RuntimeError("bug")

    async with asyncio.timeout(BOUND), running(pki, broken) as server, client(pki, server) as conn:
        await conn.send("hello")
        with pytest.raises(ConnectionClosed) as err:
            await conn.recv()
        assert err.value.close_code == CLOSE_INTERNAL_ERROR


# --- hostile streams --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x07\x00\x00\x00\x01x", CLOSE_PROTOCOL),  # unknown kind byte
        (b"garbage on the signaling stream", CLOSE_PROTOCOL),
        (b"\x00\x00\x00\x00\x02\xff\xfe", CLOSE_INVALID_DATA),  # JOSE frame, not UTF-8
    ],
)
async def test_garbage_on_the_stream_closes_the_connection(
    pki: Pki, data: bytes, code: int
) -> None:
    seen = Seen()
    async with asyncio.timeout(BOUND), running(pki, seen.reader) as server:
        async with raw_peer(pki, server) as peer:
            peer.write(encode_stream_frame(b"fine"))
            peer.write(data)
            ended = await peer.terminated
        exc = await seen.ended
    assert ended.error_code == code
    assert isinstance(exc, ConnectionClosed)
    assert exc.close_code == code
    assert seen.frames == [b"fine"]


async def drain(conn: FrameConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await conn.recv()


async def test_a_second_stream_or_a_frame_cut_by_fin_is_a_protocol_error(pki: Pki) -> None:
    async with asyncio.timeout(BOUND), running(pki, drain) as server:
        async with raw_peer(pki, server) as peer:
            peer.write(encode_stream_frame("first"))
            peer.write(encode_stream_frame("second stream"), stream_id=4)
            assert (await peer.terminated).error_code == CLOSE_PROTOCOL
        async with raw_peer(pki, server) as peer:
            peer.write(encode_stream_frame("cut")[:-1], end=True)
            assert (await peer.terminated).error_code == CLOSE_PROTOCOL
        async with raw_peer(pki, server) as peer:
            peer.write(encode_stream_frame("clean end"), end=True)
            assert (await peer.terminated).error_code == CLOSE_NORMAL
        async with raw_peer(pki, server) as peer:
            peer.write(encode_stream_frame("then a reset"))
            peer._quic.reset_stream(0, error_code=0)
            peer.transmit()
            assert (await peer.terminated).error_code == CLOSE_PROTOCOL


# --- backpressure -----------------------------------------------------------------------


async def test_a_slow_reader_blocks_the_sender_instead_of_growing_memory(pki: Pki) -> None:
    go = asyncio.Event()
    seen = Seen()

    async def slow(conn: FrameConnection) -> None:
        await go.wait()
        await seen.reader(conn)

    frame = b"x" * MAX_FRAME_BYTES
    wire = len(encode_stream_frame(frame))
    async with asyncio.timeout(BOUND), running(pki, slow) as server, client(pki, server) as conn:
        sent = 0
        for _ in range(200):  # 13 MB if nothing pushed back
            try:
                await asyncio.wait_for(conn.send(frame), 0.5)
            except TimeoutError:
                break
            sent += 1
        # Bounded: the reader's window plus the sender's buffer, and a frame of slack each.
        assert 0 < sent * wire <= RECV_WINDOW + SEND_BUFFER + 2 * wire
        go.set()  # the reader catches up; the sender proceeds; nothing was lost or torn
        for _ in range(20):
            await conn.send(frame)
        while len(seen.frames) < sent + 20:
            await asyncio.sleep(0.02)
    assert seen.frames == [frame] * (sent + 20)


# --- liveness ---------------------------------------------------------------------------


class UdpProxy:
    """Forwards UDP between one client and the server until ``cut`` (a network partition)."""

    def __init__(self) -> None:
        self.cut = False
        self.port = 0
        self._client: Any = None
        self._front: asyncio.DatagramTransport | None = None
        self._back: asyncio.DatagramTransport | None = None

    async def start(self, server_port: int) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                proxy._client = addr
                if not proxy.cut and proxy._back is not None:
                    proxy._back.sendto(data)

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not proxy.cut and proxy._front is not None:
                    proxy._front.sendto(data, proxy._client)

        self._front, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self._back, _ = await loop.create_datagram_endpoint(
            Back, remote_addr=("127.0.0.1", server_port)
        )
        self.port = self._front.get_extra_info("sockname")[1]

    def close(self) -> None:
        for t in (self._front, self._back):
            if t is not None:
                t.close()


async def test_keepalive_holds_a_quiet_connection_and_a_partition_is_detected(pki: Pki) -> None:
    seen = Seen()
    proxy = UdpProxy()
    async with asyncio.timeout(BOUND), running(pki, seen.reader, idle_timeout=1.0) as server:
        await proxy.start(server.port)
        conn = await connect_quic("127.0.0.1", proxy.port, cafile=pki.cafile, idle_timeout=1.0)
        try:
            await conn.send("before")
            await asyncio.sleep(2.5)  # 2.5x the idle timeout, no frame sent by anyone
            await conn.send("after")
            while len(seen.frames) < 2:
                await asyncio.sleep(0.02)
            assert not conn.closed

            proxy.cut = True  # both peers vanish for each other: no CONNECTION_CLOSE
            with pytest.raises(ConnectionClosed) as err:
                await asyncio.wait_for(conn.recv(), 5.0)
            assert err.value.close_code is None  # lost, not closed
            exc = await asyncio.wait_for(seen.ended, 5.0)
            assert isinstance(exc, ConnectionClosed)
            assert exc.close_code is None
        finally:
            await conn.close()
            proxy.close()
    assert seen.frames == ["before", "after"]


# --- framing, sans-I/O --------------------------------------------------------------------


def test_encode_frame_kinds_and_limits() -> None:
    assert encode_stream_frame("é") == b"\x00\x00\x00\x00\x02\xc3\xa9"
    assert encode_stream_frame(b"\x01") == b"\x01\x00\x00\x00\x01\x01"
    with pytest.raises(FrameTooLargeError):
        encode_stream_frame(b"x" * (MAX_FRAME_BYTES + 1))
    with pytest.raises(TransportError):
        encode_stream_frame(5)  # type: ignore[arg-type]


def test_decoder_refuses_a_bad_kind_at_the_first_byte_and_a_big_length_at_the_header() -> None:
    dec = StreamFrameDecoder()
    assert dec.feed(b"\x09") == []
    assert dec.error is not None
    assert dec.error.close_code == CLOSE_PROTOCOL
    dec = StreamFrameDecoder()
    assert dec.feed(b"\x01" + (MAX_FRAME_BYTES + 1).to_bytes(4, "big")) == []
    assert dec.error is not None
    assert (dec.error.close_code, dec.error.code) == (CLOSE_TOO_BIG, "frame-too-large")
    assert dec.buffered == 0  # nothing of the body is kept
    assert dec.feed(encode_stream_frame("ignored after an error")) == []


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.text(max_size=40) | st.binary(max_size=40) | st.just(b"\x00" * 300), max_size=12
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=20),
)
def test_property_any_chunking_gives_the_same_frames(
    frames: list[str | bytes], cuts: list[int]
) -> None:
    stream = b"".join(encode_stream_frame(f) for f in frames)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    dec = StreamFrameDecoder()
    out: list[tuple[str | bytes, int]] = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        out += dec.feed(stream[a:b])
    assert [f for f, _ in out] == frames
    assert sum(n for _, n in out) == len(stream)
    assert dec.error is None
    assert dec.at_boundary


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_property_arbitrary_stream_bytes_never_raise(data: bytes) -> None:
    dec = StreamFrameDecoder()
    for f, size in dec.feed(data):
        assert isinstance(f, (str, bytes))
        assert size >= 5
    assert dec.error is None or isinstance(dec.error, DsipError)
