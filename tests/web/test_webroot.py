"""Static files on the relay's ws/1.0 port: the lookup refuses every path that could leave
the web root, and the same port still speaks ws/1.0."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dsip.errors import ConfigError, TransportError
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.services.webroot import StaticFiles, default_web_root
from dsip.transport.ws import connect_ws

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>t</title>")
    (web / "js" / "app.js").write_text("export {};")
    (web / ".secret.txt").write_text("hidden")
    (web / "notes.md").write_text("unknown type")
    (tmp_path / "outside.txt").write_text("outside")
    (web / "link.txt").symlink_to(tmp_path / "outside.txt")
    return web


def test_lookup_finds_files_inside_the_root(root: Path) -> None:
    files = StaticFiles(root)
    assert files.lookup("/").path == root.resolve() / "index.html"
    assert files.lookup("/?ice=loopback&trust=did:key:z6Mk").path.name == "index.html"
    found = files.lookup("/js/app.js")
    assert found.content_type == "text/javascript; charset=utf-8"
    assert files.lookup("/js/%61pp.js").path == found.path  # percent-decoding is fine


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/../outside.txt", "web-path-invalid"),
        ("/js/../../outside.txt", "web-path-invalid"),
        ("/%2e%2e/outside.txt", "web-path-invalid"),
        ("/js/%2E%2E%2F%2E%2E%2Foutside.txt", "web-path-invalid"),
        ("/..%5coutside.txt", "web-path-invalid"),
        ("/index.html%00.js", "web-path-invalid"),
        ("/.secret.txt", "web-path-invalid"),
        ("index.html", "web-path-invalid"),
        ("/" + "a" * 600, "web-path-invalid"),
        ("/%ff%fe.html", "web-path-invalid"),
        ("/notes.md", "web-not-found"),
        ("/missing.js", "web-not-found"),
        ("/link.txt", "web-not-found"),  # a symlink leading out of the root
        ("/js", "web-not-found"),
    ],
)
def test_hostile_targets_are_refused(root: Path, target: str, code: str) -> None:
    files = StaticFiles(root)
    with pytest.raises(TransportError) as err:
        files.lookup(target)
    assert err.value.code == code
    status, _, body = files.respond("GET", target)
    assert status == (404 if code == "web-not-found" else 400)
    assert b"outside" not in body
    assert b"hidden" not in body


def test_only_get_and_head(root: Path) -> None:
    files = StaticFiles(root)
    assert files.respond("POST", "/")[0] == 405
    status, headers, body = files.respond("HEAD", "/")
    assert (status, body) == (200, b"")
    assert ("Content-Length", str(len((root / "index.html").read_bytes()))) in headers


def test_a_missing_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        StaticFiles(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        StaticFiles(tmp_path / "file")


def test_the_packaged_client_is_found() -> None:
    root = default_web_root()
    assert root is not None
    assert (root / "js" / "envelope.js").is_file()


async def test_the_relay_serves_pages_and_ws_on_one_port(web_relay: Relay, web_ca: LocalCA) -> None:
    ctx = web_ca.client_context()
    base = f"https://localhost:{web_relay.ws_port}"
    async with httpx.AsyncClient(verify=ctx, timeout=5) as http:
        page = await http.get(f"{base}/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert b'<script type="module" src="js/app.js">' in page.content
        assert (await http.get(f"{base}/js/../../pyproject.toml")).status_code in (400, 404)
        assert (await http.get(f"{base}/%2e%2e/pyproject.toml")).status_code == 400
    conn = await connect_ws(f"wss://localhost:{web_relay.ws_port}/dsip", ssl_context=ctx)
    assert not conn.closed
    await conn.close()


async def test_dsip_relay_web_serves_the_client(tmp_path: Path) -> None:
    import asyncio
    import json
    import ssl
    import subprocess
    import sys

    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsip",
            "relay",
            "--local-ca",
            str(tmp_path / "tls"),
            "--ws-port",
            "0",
            "--web",
            "--store",
            f"sqlite:///{tmp_path}/r.db",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(15):
            while not ready.exists():
                await asyncio.sleep(0.1)
        port = json.loads(ready.read_text())["ws_port"]
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        async with httpx.AsyncClient(verify=ctx, timeout=5) as http:
            page = await http.get(f"https://localhost:{port}/js/envelope.js")
        assert page.status_code == 200
        assert "export async function verifyFrame" in page.text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"browser client on https://127.0.0.1:{port}/" in out.decode()
