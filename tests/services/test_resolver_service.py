"""The resolver node (``dsip resolver``) on loopback: real HTTPS (trustme CA), a real did:web
host, NSD for the DNS alias path; no mocked HTTP or DNS."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from dsip.agent.aliases import DSIP_DID_REL, AliasResolver
from dsip.agent.resolver import DidResolver
from dsip.core.identity import KeyPair, did_web_document
from dsip.services.didweb_host import DidWebHost
from dsip.services.localca import LocalCA
from dsip.services.resolver import RESOLUTION_CONTENT_TYPE, ResolverService
from dsip.services.webfinger import WebFingerResponder, websockets_process_request
from tests.dnsserver import (
    ALICE,
    BOB_DNS,
    DnsServer,
    dns_server_fixture,  # noqa: F401 - the dns_server fixture
)

pytestmark = [pytest.mark.network, pytest.mark.timeout(30)]

BOB_WF = "did:web:voice.example:users:bob-per-webfinger"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca() -> LocalCA:
    return LocalCA.create()


@pytest.fixture(scope="module")
def didweb(ca: LocalCA) -> Iterator[tuple[DidWebHost, str]]:
    with DidWebHost(ca) as host:
        did = host.did("users", "bob")
        key = KeyPair.generate()
        host.publish(did, did_web_document(did, [("key-1", key.public_key_multibase)]))
        yield host, did


@pytest.fixture
async def node(ca: LocalCA, dns_server: DnsServer) -> AsyncIterator[tuple[ResolverService, str]]:
    responder = WebFingerResponder(
        {"acct:alice@signed.test": ALICE, "acct:bob@signed.test": BOB_WF}, max_age=60
    )
    service = ResolverService(DidResolver(verify=ca.client_context(), timeout=3.0))
    service.webfinger = responder
    await service.start("127.0.0.1", 0, ca.server_context())
    base = f"https://localhost:{service.port}"
    # The node's alias resolver asks the node's own WebFinger for these domains, and NSD.
    service.aliases = AliasResolver(
        verify=ca.client_context(),
        timeout=3.0,
        webfinger_endpoints=dict.fromkeys(("signed.test", "plain.test", "expired.test"), base),
        dns_nameservers=[dns_server.host],
        dns_port=dns_server.port,
        trust_anchors=dns_server.trust_anchors,
    )
    yield service, base
    await service.stop()
    await service.aliases.aclose()
    await service.resolver.aclose()


@pytest.fixture
async def client(
    ca: LocalCA, node: tuple[ResolverService, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node[1], verify=ca.client_context(), timeout=10) as http:
        yield http


# --- /1.0/identifiers/{did} ----------------------------------------------------------------


async def test_did_key_is_resolved_locally(client: httpx.AsyncClient) -> None:
    did = KeyPair.generate().did
    response = await client.get(f"/1.0/identifiers/{did}")
    assert response.status_code == 200
    assert response.headers["content-type"] == RESOLUTION_CONTENT_TYPE
    body = response.json()
    assert body["didDocument"]["id"] == did
    meta = body["didResolutionMetadata"]
    assert meta["contentType"] == "application/did+ld+json"
    assert meta["cached"] is False
    assert meta["retrieved"].endswith("Z")
    assert body["didDocumentMetadata"] == {}


async def test_did_web_is_fetched_then_cached(
    client: httpx.AsyncClient, didweb: tuple[DidWebHost, str]
) -> None:
    host, did = didweb
    before = host.requests
    first = await client.get(f"/1.0/identifiers/{did}")  # raw: did:web:localhost%3A<port>:…
    assert first.status_code == 200, first.text
    assert first.json()["didDocument"]["id"] == did
    assert first.json()["didResolutionMetadata"]["cached"] is False
    assert host.requests == before + 1
    second = await client.get(f"/1.0/identifiers/{did}")
    assert second.status_code == 200
    meta = second.json()["didResolutionMetadata"]
    assert meta["cached"] is True
    assert meta["retrieved"] == first.json()["didResolutionMetadata"]["retrieved"]
    assert host.requests == before + 1  # served from the cache


async def test_fully_encoded_did_is_decoded_once(
    client: httpx.AsyncClient, didweb: tuple[DidWebHost, str]
) -> None:
    _, did = didweb
    encoded = did.replace("%", "%25").replace(":", "%3A")
    response = await client.get(f"/1.0/identifiers/{encoded}")
    assert response.status_code == 200
    assert response.json()["didDocument"]["id"] == did


@pytest.mark.parametrize(
    "did",
    [
        "not-a-did",
        "did:",
        "did:web:bad_host!",
        "did:web:a..b",
        "did:key:zNotBase58!",
        "did:key:z6Mkabc",
        "did:web:" + "a" * 5000,
    ],
)
async def test_invalid_did_is_400(client: httpx.AsyncClient, did: str) -> None:
    response = await client.get(f"/1.0/identifiers/{did}")
    assert response.status_code == 400
    body = response.json()
    assert body["didDocument"] is None
    assert body["didResolutionMetadata"]["error"] == "invalidDid"


async def test_unknown_did_web_is_404(
    client: httpx.AsyncClient, didweb: tuple[DidWebHost, str]
) -> None:
    host, _ = didweb
    response = await client.get(f"/1.0/identifiers/{host.did('users', 'nobody')}")
    assert response.status_code == 404
    meta = response.json()["didResolutionMetadata"]
    assert (meta["error"], meta["code"]) == ("notFound", "http-status")


async def test_unsupported_method_is_501(client: httpx.AsyncClient) -> None:
    response = await client.get("/1.0/identifiers/did:example:123456")
    assert response.status_code == 501
    assert response.json()["didResolutionMetadata"]["error"] == "methodNotSupported"


async def test_upstream_tls_failure_is_502(client: httpx.AsyncClient) -> None:
    with DidWebHost(LocalCA.create()) as stranger:  # a CA the node does not trust
        did = stranger.did("users", "eve")
        stranger.publish(
            did, did_web_document(did, [("key-1", KeyPair.generate().public_key_multibase)])
        )
        response = await client.get(f"/1.0/identifiers/{did}")
        assert stranger.requests == 0  # the handshake failed before any request
    assert response.status_code == 502
    meta = response.json()["didResolutionMetadata"]
    assert meta["code"] == "resolver-unreachable"
    assert meta["reason"] == "transport.routing-refused"
    assert "CERTIFICATE_VERIFY_FAILED" in meta["message"]


# --- WebFinger served by the node ----------------------------------------------------------


async def test_webfinger_served(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/.well-known/webfinger", params={"resource": "acct:alice@SIGNED.test"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jrd+json"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["cache-control"] == "max-age=60"
    assert response.json() == {
        "subject": "acct:alice@signed.test",
        "aliases": [ALICE],
        "links": [{"rel": DSIP_DID_REL, "href": ALICE}],
    }
    filtered = await client.get(
        "/.well-known/webfinger", params={"resource": "alice@signed.test", "rel": "self"}
    )
    assert filtered.json()["links"] == []


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("", 400),
        ("resource=", 400),
        ("resource=acct:alice@signed.test&resource=acct:bob@signed.test", 400),
        ("resource=acct:%FF@signed.test", 400),
        ("resource=acct:not%20valid@signed.test", 400),
        ("resource=acct:nobody@signed.test", 404),
        ("resource=https://signed.test/alice", 404),
        ("resource=mailto:alice@signed.test", 404),
    ],
)
async def test_webfinger_errors(client: httpx.AsyncClient, query: str, status: int) -> None:
    response = await client.get(f"/.well-known/webfinger?{query}")
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == "*"


async def test_webfinger_methods(client: httpx.AsyncClient) -> None:
    assert (await client.post("/.well-known/webfinger?resource=a@b.c")).status_code == 405
    preflight = await client.options("/.well-known/webfinger")
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"


# --- /1.0/aliases/{alias} ------------------------------------------------------------------


async def test_alias_resolved_by_both_paths(client: httpx.AsyncClient) -> None:
    response = await client.get("/1.0/aliases/acct:alice@signed.test")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["did"], body["answeredBy"], body["dnssec"]) == (
        ALICE,
        ["webfinger", "dns"],
        "secure",
    )
    again = await client.get("/1.0/aliases/alice@signed.test")
    assert again.json()["cached"] is True


@pytest.mark.parametrize(
    ("alias", "status", "code"),
    [
        ("bob@signed.test", 409, "alias-conflict"),
        ("al%20ice@signed.test", 400, "alias-invalid"),
        ("nobody@plain.test", 404, "alias-not-found"),
        ("alice@expired.test", 502, "dnssec-bogus"),
    ],
)
async def test_alias_errors(client: httpx.AsyncClient, alias: str, status: int, code: str) -> None:
    response = await client.get(f"/1.0/aliases/{alias}")
    assert response.status_code == status
    assert response.json()["error"] == code
    if code == "alias-conflict":
        assert BOB_WF in response.json()["message"]
        assert BOB_DNS in response.json()["message"]


# --- mounting the responder on a websockets server (the relay) -----------------------------


async def test_webfinger_on_a_websockets_server(ca: LocalCA) -> None:
    responder = WebFingerResponder({"acct:alice@relay.test": ALICE})

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(
        echo,
        "127.0.0.1",
        0,
        ssl=ca.server_context(),
        process_request=websockets_process_request(responder),
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with httpx.AsyncClient(verify=ca.client_context(), timeout=5) as http:
            found = await http.get(
                f"https://localhost:{port}/.well-known/webfinger?resource=acct:alice@relay.test"
            )
            missing = await http.get(f"https://localhost:{port}/.well-known/webfinger")
        assert found.status_code == 200
        assert found.headers["content-type"] == "application/jrd+json"
        assert found.json()["links"][0]["href"] == ALICE
        assert missing.status_code == 400
        async with websockets.connect(
            f"wss://localhost:{port}/dsip", ssl=ca.client_context()
        ) as ws:  # other paths still reach the WebSocket handler
            await ws.send("ping")
            assert await ws.recv() == "ping"


# --- the CLI subcommand --------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dsip.cli.resolver", *args]


def test_register_adds_the_subcommand() -> None:
    from dsip.cli import resolver as resolver_cli

    parser = argparse.ArgumentParser(prog="dsip")
    resolver_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["resolver", "--listen", "127.0.0.1:0", "--plain-http", "--alias", "a@b.test=did:x:y"]
    )
    assert (args.command, args.listen, args.plain_http, args.alias) == (
        "resolver",
        "127.0.0.1:0",
        True,
        ["a@b.test=did:x:y"],
    )
    assert callable(args.func)


def test_cli_help() -> None:
    done = subprocess.run(_cli("--help"), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0
    for flag in ("--listen", "--tls-cert", "--local-ca", "--alias", "--ready-file"):
        assert flag in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--listen", "127.0.0.1:0"),  # no TLS choice
        ("--listen", "nowhere", "--plain-http"),
        ("--listen", "127.0.0.1:0", "--plain-http", "--alias", "acct:x@y.test=not-a-did"),
        ("--listen", "127.0.0.1:0", "--plain-http", "--alias", "no-equals-sign"),
    ],
)
def test_cli_refuses_bad_configuration(args: tuple[str, ...]) -> None:
    done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "config-invalid" in done.stderr


def test_cli_serves(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    did = KeyPair.generate().did
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        _cli(
            "--listen",
            "127.0.0.1:0",
            "--local-ca",
            str(tmp_path / "tls"),
            "--alias",
            f"acct:carol@cli.test={did}",
            "--ready-file",
            str(ready),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "resolver did not become ready"
            time.sleep(0.05)
        info: dict[str, Any] = json.loads(ready.read_text())
        assert info["url"].startswith("https://localhost:")
        verify = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        with httpx.Client(base_url=info["url"], verify=verify, timeout=10) as http:
            jrd = http.get("/.well-known/webfinger", params={"resource": "acct:carol@cli.test"})
            assert jrd.json()["aliases"] == [did]
            resolved = http.get(f"/1.0/identifiers/{did}")
            assert resolved.json()["didDocument"]["id"] == did
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
