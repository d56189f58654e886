"""DidResolver against a real HTTPS server on loopback (trustme CA), no mocked HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import trustme

from dsip.agent.resolver import DidResolver
from dsip.core.identity import KeyPair, did_web_document
from dsip.errors import ResolutionError

pytestmark = [pytest.mark.network, pytest.mark.timeout(20)]

Factory = Callable[..., DidResolver]
ROOT_PATH = "/.well-known/did.json"
BOB_PATH = "/users/bob/did.json"


# --- the HTTPS server ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # before the status line
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    dribble: float = 0.0  # seconds between 1-byte chunks of the body (implies chunked)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        reply = self.server.routes.get(self.path, Reply(404, b"not found"))
        if reply.delay:
            time.sleep(reply.delay)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if reply.chunked or reply.dribble:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = 1 if reply.dribble else 4096
            for i in range(0, len(reply.body), step):
                piece = reply.body[i : i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                if reply.dribble:
                    time.sleep(reply.dribble)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        # Handshake in the handler thread, so a failing client doesn't stall accept().
        self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.routes: dict[str, Reply] = {}
        self.hits: Counter[str] = Counter()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-body (size cap, timeouts) are expected here


@dataclass
class DocHost:
    server: _Server
    port: int
    client_ctx: ssl.SSLContext

    @property
    def root_did(self) -> str:
        return f"did:web:localhost%3A{self.port}"

    @property
    def bob_did(self) -> str:
        return f"{self.root_did}:users:bob"

    def serve(self, path: str, reply: Reply) -> None:
        self.server.routes[path] = reply

    def serve_doc(self, path: str, doc: dict[str, Any], **kw: Any) -> None:
        self.serve(path, Reply(body=json.dumps(doc).encode(), **kw))

    def hits(self, path: str) -> int:
        return self.server.hits[path]


def make_doc(did: str, key: KeyPair | None = None) -> dict[str, Any]:
    key = key or KeyPair.generate()
    return did_web_document(did, [("key-1", key.public_key_multibase)])


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def host(ca: trustme.CA) -> Iterator[DocHost]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    server = _Server(server_ctx)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield DocHost(server, server.server_address[1], client_ctx)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_resolver(host: DocHost, clock: Clock) -> AsyncIterator[Factory]:
    made: list[DidResolver] = []

    def factory(**kw: Any) -> DidResolver:
        kw.setdefault("verify", host.client_ctx)
        kw.setdefault("clock", clock)
        kw.setdefault("timeout", 3.0)
        r = DidResolver(**kw)
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.aclose()


def _tripwire() -> httpx.AsyncClient:
    """A client that fails the test if the resolver touches the network at all."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unexpected network request to {request.url}")

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def _fails(resolver: DidResolver, did: str, code: str) -> ResolutionError:
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve(did)
    assert info.value.code == code, info.value
    return info.value


# --- happy path and caching ------------------------------------------------------------------


async def test_resolves_root_and_path_documents(host: DocHost, make_resolver: Factory) -> None:
    root_key, bob_key = KeyPair.generate(), KeyPair.generate()
    host.serve_doc(ROOT_PATH, make_doc(host.root_did, root_key))
    host.serve_doc(BOB_PATH, make_doc(host.bob_did, bob_key))
    resolver = make_resolver()

    root = await resolver.resolve(host.root_did)
    bob = await resolver.resolve(host.bob_did)

    assert root.id == host.root_did
    vm = bob.method(f"{host.bob_did}#key-1")
    assert vm is not None
    assert vm.verify(bob_key.sign(b"hello"), b"hello")
    assert (host.hits(ROOT_PATH), host.hits(BOB_PATH)) == (1, 1)


async def test_second_resolve_is_served_from_cache(host: DocHost, make_resolver: Factory) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did))
    resolver = make_resolver()
    assert resolver.cached(host.bob_did) is None

    first = await resolver.resolve(host.bob_did)
    second = await resolver.resolve(host.bob_did)

    assert second is first
    assert resolver.cached(host.bob_did) is first
    assert host.hits(BOB_PATH) == 1


async def test_entry_expires_after_default_ttl(
    host: DocHost, make_resolver: Factory, clock: Clock
) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did))
    resolver = make_resolver(default_ttl=300)
    await resolver.resolve(host.bob_did)

    clock.t += 299
    assert resolver.cached(host.bob_did) is not None
    await resolver.resolve(host.bob_did)
    assert host.hits(BOB_PATH) == 1

    clock.t += 2
    assert resolver.cached(host.bob_did) is None
    await resolver.resolve(host.bob_did)
    assert host.hits(BOB_PATH) == 2


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("max-age=100", 100),
        ('public, max-age="120"', 120),
        ("max-age=5", 30),  # clamped up to min_ttl
        ("max-age=999999999", 3600),  # clamped down to max_ttl
        ("no-store", 30),
        ("max-age=soon", 300),  # unusable: default_ttl
        (None, 300),
    ],
)
async def test_cache_control_max_age_is_clamped(
    host: DocHost, make_resolver: Factory, clock: Clock, cache_control: str | None, ttl: int
) -> None:
    headers = {"Cache-Control": cache_control} if cache_control else {}
    host.serve_doc(BOB_PATH, make_doc(host.bob_did), headers=headers)
    resolver = make_resolver(min_ttl=30, max_ttl=3600, default_ttl=300)
    start = clock.t
    await resolver.resolve(host.bob_did)

    clock.t = start + ttl - 1
    assert resolver.cached(host.bob_did) is not None
    clock.t = start + ttl
    assert resolver.cached(host.bob_did) is None


async def test_invalidate_forces_a_new_fetch(host: DocHost, make_resolver: Factory) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did))
    resolver = make_resolver()
    await resolver.resolve(host.bob_did)
    new_key = KeyPair.generate()
    host.serve_doc(BOB_PATH, make_doc(host.bob_did, new_key))

    resolver.invalidate(host.bob_did)
    assert resolver.cached(host.bob_did) is None
    doc = await resolver.resolve(host.bob_did)

    vm = doc.method(f"{host.bob_did}#key-1")
    assert vm is not None
    assert vm.public_key_multibase == new_key.public_key_multibase
    assert host.hits(BOB_PATH) == 2


async def test_concurrent_resolves_share_one_fetch(host: DocHost, make_resolver: Factory) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did), delay=0.3)
    resolver = make_resolver()

    docs = await asyncio.gather(*(resolver.resolve(host.bob_did) for _ in range(8)))

    assert all(d is docs[0] for d in docs)
    assert host.hits(BOB_PATH) == 1


async def test_cancelled_waiter_does_not_cancel_shared_fetch(
    host: DocHost, make_resolver: Factory
) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did), delay=0.3)
    resolver = make_resolver()
    impatient = asyncio.ensure_future(resolver.resolve(host.bob_did))
    patient = asyncio.ensure_future(resolver.resolve(host.bob_did))
    await asyncio.sleep(0.05)
    impatient.cancel()

    doc = await patient

    assert doc.id == host.bob_did
    assert host.hits(BOB_PATH) == 1


# --- failures --------------------------------------------------------------------------------


async def test_failures_are_negatively_cached(
    host: DocHost, make_resolver: Factory, clock: Clock
) -> None:
    resolver = make_resolver(negative_ttl=30)
    err = await _fails(resolver, host.bob_did, "http-status")
    assert "404" in err.message

    host.serve_doc(BOB_PATH, make_doc(host.bob_did))
    await _fails(resolver, host.bob_did, "http-status")  # still cached
    assert host.hits(BOB_PATH) == 1

    clock.t += 31
    assert (await resolver.resolve(host.bob_did)).id == host.bob_did
    assert host.hits(BOB_PATH) == 2


async def test_http_error_status(host: DocHost, make_resolver: Factory) -> None:
    host.serve(BOB_PATH, Reply(500, b"oops"))
    err = await _fails(make_resolver(), host.bob_did, "http-status")
    assert "500" in err.message


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_oversize_document_is_refused(
    host: DocHost, make_resolver: Factory, chunked: bool
) -> None:
    doc = make_doc(host.bob_did)
    doc["padding"] = "x" * 20_000
    host.serve_doc(BOB_PATH, doc, chunked=chunked)
    await _fails(make_resolver(max_document_bytes=8192), host.bob_did, "document-too-large")


async def test_document_under_the_cap_is_accepted_when_chunked(
    host: DocHost, make_resolver: Factory
) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did), chunked=True)
    doc = await make_resolver(max_document_bytes=8192).resolve(host.bob_did)
    assert doc.id == host.bob_did


async def test_default_cap_refuses_a_large_streamed_document(
    host: DocHost, make_resolver: Factory
) -> None:
    doc = make_doc(host.bob_did)
    doc["padding"] = "x" * (300 * 1024)
    host.serve_doc(BOB_PATH, doc, chunked=True)
    await _fails(make_resolver(), host.bob_did, "document-too-large")


@pytest.mark.parametrize(
    "location",
    [
        "https://127.0.0.1:{port}/users/bob/did.json",  # another host, same port
        "http://localhost:{port}/users/bob/did.json",  # downgrade
        "https://localhost:1/users/bob/did.json",  # another port
        "https://example.com/users/bob/did.json",
    ],
)
async def test_cross_origin_redirect_is_refused(
    host: DocHost, make_resolver: Factory, location: str
) -> None:
    host.serve(BOB_PATH, Reply(302, headers={"Location": location.format(port=host.port)}))
    host.serve_doc("/elsewhere.json", make_doc(host.bob_did))
    await _fails(make_resolver(), host.bob_did, "redirect-refused")


async def test_same_origin_redirects_are_followed(host: DocHost, make_resolver: Factory) -> None:
    host.serve(BOB_PATH, Reply(301, headers={"Location": "/moved/1"}))
    host.serve(
        "/moved/1",
        Reply(307, headers={"Location": f"https://localhost:{host.port}/moved/2"}),
    )
    host.serve_doc("/moved/2", make_doc(host.bob_did))

    doc = await make_resolver().resolve(host.bob_did)

    assert doc.id == host.bob_did
    assert host.hits("/moved/2") == 1


async def test_more_than_three_redirects_are_refused(host: DocHost, make_resolver: Factory) -> None:
    host.serve(BOB_PATH, Reply(302, headers={"Location": "/r1"}))
    host.serve("/r1", Reply(302, headers={"Location": "/r2"}))
    host.serve("/r2", Reply(302, headers={"Location": "/r3"}))
    host.serve("/r3", Reply(302, headers={"Location": "/r4"}))
    host.serve_doc("/r4", make_doc(host.bob_did))
    await _fails(make_resolver(), host.bob_did, "redirect-refused")
    assert host.hits("/r4") == 0


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"id": "did:web:x", "id": "did:web:y"}',  # duplicate member names
        b"\xff\xfe{}",  # not UTF-8
        b'{"id": NaN}',
        b"[]",
    ],
    ids=["html", "duplicate-keys", "not-utf8", "nan", "array"],
)
async def test_malformed_document_is_refused(
    host: DocHost, make_resolver: Factory, body: bytes
) -> None:
    host.serve(BOB_PATH, Reply(body=body))
    await _fails(make_resolver(), host.bob_did, "document-invalid")


async def test_duplicate_id_that_would_fool_a_lax_parser(
    host: DocHost, make_resolver: Factory
) -> None:
    doc = json.dumps(make_doc(host.bob_did))
    # The last "id" wins in a lax parser; both are plausible here.
    body = doc.replace("{", '{"id": "did:web:attacker.example", ', 1).encode()
    host.serve(BOB_PATH, Reply(body=body))
    await _fails(make_resolver(), host.bob_did, "document-invalid")


async def test_document_with_wrong_id_is_refused(host: DocHost, make_resolver: Factory) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.root_did))  # bob's URL serves the root's document
    err = await _fails(make_resolver(), host.bob_did, "document-invalid")
    assert host.root_did in err.message


async def test_untrusted_certificate_is_unreachable(host: DocHost, make_resolver: Factory) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did))
    resolver = make_resolver(verify=True)  # system CAs only: the trustme CA is unknown
    err = await _fails(resolver, host.bob_did, "resolver-unreachable")
    assert err.__suppress_context__  # no httpx exception chained in
    assert host.hits(BOB_PATH) == 0


async def test_connection_refused_is_unreachable(make_resolver: Factory) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    await _fails(make_resolver(), f"did:web:localhost%3A{port}", "resolver-unreachable")


async def test_slow_server_times_out(host: DocHost, make_resolver: Factory) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did), delay=2.0)
    resolver = make_resolver(timeout=0.3)
    start = time.monotonic()
    await _fails(resolver, host.bob_did, "resolver-timeout")
    assert time.monotonic() - start < 1.5


async def test_dribbling_body_hits_the_overall_deadline(
    host: DocHost, make_resolver: Factory
) -> None:
    # Each byte arrives well within the per-read timeout; the whole never does.
    host.serve_doc(BOB_PATH, make_doc(host.bob_did), dribble=0.05)
    resolver = make_resolver(timeout=0.5)
    start = time.monotonic()
    await _fails(resolver, host.bob_did, "resolver-timeout")
    assert time.monotonic() - start < 2.0


# --- no network --------------------------------------------------------------------------------


async def test_injected_documents_are_used_without_network() -> None:
    did = "did:web:example.com:users:bob"
    doc = make_doc(did)
    resolver = DidResolver(client=_tripwire(), documents={did: doc}, clock=lambda: 1e12)
    try:
        assert resolver.cached(did) is not None
        resolved = await resolver.resolve(did)
        assert resolved.id == did
        resolver.invalidate(did)  # pinned documents are configuration, not cache
        assert (await resolver.resolve(did)) is resolved
    finally:
        await resolver.aclose()


async def test_did_key_resolves_locally() -> None:
    key = KeyPair.generate()
    resolver = DidResolver(client=_tripwire())
    try:
        doc = await resolver.resolve(key.did)
        vm = doc.method(key.kid)
        assert vm is not None
        assert vm.verify(key.sign(b"m"), b"m")
        assert resolver.cached(key.did) is not None
    finally:
        await resolver.aclose()


@pytest.mark.parametrize(
    ("did", "code"),
    [
        ("did:example:123", "method-unsupported"),
        ("did:key:z6MkNOTAKEY", "key-invalid"),
        ("not-a-did", "did-invalid"),
        ("did:web:bad_host!", "did-invalid"),
    ],
)
async def test_unresolvable_identifiers(did: str, code: str) -> None:
    resolver = DidResolver(client=_tripwire())
    try:
        await _fails(resolver, did, code)
        assert resolver.cached(did) is None
    finally:
        await resolver.aclose()


def test_pinning_an_invalid_document_is_refused() -> None:
    with pytest.raises(ResolutionError) as info:
        DidResolver(documents={"did:web:example.com": {"id": "did:web:other.example"}})
    assert info.value.code == "document-invalid"


async def test_aclose_leaves_a_caller_supplied_client_open(host: DocHost) -> None:
    host.serve_doc(BOB_PATH, make_doc(host.bob_did))
    async with httpx.AsyncClient(verify=host.client_ctx) as client:
        resolver = DidResolver(client=client)
        await resolver.resolve(host.bob_did)
        await resolver.aclose()
        assert not client.is_closed
