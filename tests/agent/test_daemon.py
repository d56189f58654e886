"""``dsip agent``: two agent daemons on a real relay, driven only through their local APIs."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsip.agent.daemon import AgentDaemon, AgentSettings, ApiClient, runtime_paths
from dsip.agent.wallet import Wallet
from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.errors import ConfigError, TransportError
from dsip.messaging.prekeys import PrekeyStore
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store

pytestmark = [pytest.mark.network, pytest.mark.timeout(90)]

PASS = "agent test passphrase - not a secret"


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A relay with prekeys/1.0 on 127.0.0.1 and the CA file agents trust."""
    ca = LocalCA.create()
    cafile = tmp_path / "ca.pem"
    ca.write_ca_pem(cafile)
    store = await open_store(f"sqlite:///{tmp_path}/relay.db")
    prekeys = PrekeyStore.open(tmp_path / "prekeys.db")
    relay = Relay(
        RelayConfig(ws_port=0),
        KeyPair.generate(),
        store,
        server_ssl=ca.server_context(),
        prekeys=prekeys,
    )
    await relay.start()
    try:
        yield f"wss://localhost:{relay.ws_port}/dsip", cafile
    finally:
        await relay.stop()
        prekeys.close()


async def _agent(
    tmp_path: Path, name: str, relay: str, cafile: Path, **settings: Any
) -> AgentDaemon:
    home = tmp_path / name
    Wallet(home).create(name, PASS, now=int(time.time()))
    daemon = AgentDaemon(
        AgentSettings(home=home, identity=name, relay=relay, cafile=str(cafile), **settings),
        PASS,
    )
    await daemon.start()
    return daemon


async def _next(events: AsyncIterator[dict[str, Any]], kind: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        async for event in events:
            if event["event"] == kind:
                return event
    raise AssertionError(f"event stream ended before {kind}")


async def test_call_and_message_between_two_agents_through_their_apis(
    tmp_path: Path, network: tuple[str, Path]
) -> None:
    relay, cafile = network
    alice = await _agent(tmp_path, "alice", relay, cafile)
    bob = await _agent(tmp_path, "bob", relay, cafile)
    try:
        a_api, b_api = ApiClient(alice.settings.home, "alice"), ApiClient(bob.settings.home, "bob")
        status = await a_api.request("GET", "/v1/status")
        assert status["did"] == alice.did
        assert status["connected"] is True

        b_events = b_api.events()
        a_events = a_api.events()
        for events in (a_events, b_events):  # live subscriptions before anything happens
            assert (await _next(events, "subscribed"))["did"] in (alice.did, bob.did)
        placed = await a_api.request("POST", "/v1/calls", {"to": bob.did})
        incoming = await _next(b_events, "call.incoming")
        assert incoming["from"] == alice.did
        assert incoming["session"] == placed["session"]
        # no credentials presented: the name is shown as a claim, never as verified
        assert incoming["rcid"]["name_verified"] is False
        assert incoming["rcid"]["verified_by"] == []

        await b_api.request("POST", f"/v1/calls/{incoming['session']}/answer")
        answered = await _next(a_events, "call.answered")
        assert answered["session"] == placed["session"]
        calls = await a_api.request("GET", "/v1/calls")
        assert [(c["session"], c["state"]) for c in calls] == [(placed["session"], "ACTIVE")]
        await a_api.request("POST", f"/v1/calls/{placed['session']}/hangup")
        ended = await _next(b_events, "call.ended")
        assert ended["reason"] == "user.hangup"

        sent = await a_api.request(
            "POST", "/v1/messages", {"to": bob.did, "text": "Dinner at eight?"}
        )
        assert sent["devices"] == 1
        got = await _next(b_events, "message")
        assert (got["from"], got["body"]) == (alice.did, "Dinner at eight?")
        history = await b_api.request("GET", "/v1/messages")
        assert [m["body"] for m in history] == ["Dinner at eight?"]
        await b_events.aclose()
        await a_events.aclose()
    finally:
        await alice.stop()
        await bob.stop()
    # stopping removes the runtime files: a stale token cannot be reused
    assert not any(p.exists() for p in runtime_paths(alice.settings.home, "alice"))


async def test_api_refuses_requests_without_the_token_and_bad_bodies_change_nothing(
    tmp_path: Path, network: tuple[str, Path]
) -> None:
    relay, cafile = network
    alice = await _agent(tmp_path, "alice", relay, cafile)
    try:
        _, token_path = runtime_paths(alice.settings.home, "alice")
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        base = f"http://127.0.0.1:{alice.port}"
        async with httpx.AsyncClient() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
                r = await http.post(
                    base + "/v1/calls", json={"to": KeyPair.generate().did}, headers=headers
                )
                assert r.status_code == 401
                assert r.json()["error"] == "unauthorized"
            auth = {"Authorization": f"Bearer {alice.token}"}
            for body in (b"{not json", b"[1,2]", b'{"to": "bob"}', b'{"to": 7}'):
                r = await http.post(base + "/v1/calls", content=body, headers=auth)
                assert r.status_code == 400
                assert r.json()["reason"] == "transport.routing-refused"
            r = await http.post(base + "/v1/calls/01J00000000000000000000000/answer", headers=auth)
            assert (r.status_code, r.json()["reason"]) == (404, "session.unknown-session")
            r = await http.post(base + "/v1/messages", json={"to": "did:key:z6Mk"}, headers=auth)
            assert r.status_code == 400
            assert (await http.get(base + "/v1/calls", headers=auth)).json() == []
            assert (await http.get(base + "/v1/messages", headers=auth)).json() == []
    finally:
        await alice.stop()


def test_api_listens_on_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AgentSettings(home=tmp_path, identity="a", api_host="0.0.0.0")


def test_cli_without_a_running_agent_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dsip agent run --id alice"):
        ApiClient(tmp_path, "alice")


async def test_dsip_agent_run_process_and_cli_status(
    tmp_path: Path, network: tuple[str, Path]
) -> None:
    relay, cafile = network
    home = tmp_path / "home"
    Wallet(home).create("carol", PASS, now=int(time.time()))
    env = {**os.environ, "DSIP_PASSPHRASE": PASS}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "dsip", "agent", "run", "--id", "carol", "--home", str(home)),
            *("--relay", relay, "--ca", str(cafile)),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        info, _ = runtime_paths(home, "carol")
        deadline = time.monotonic() + 30
        while not info.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "agent did not start"
            await asyncio.sleep(0.1)
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "dsip", "agent", "status", "--id", "carol", "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert status["did"] == json.loads(info.read_text())["did"]
        assert status["connected"] is True
        stop = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "dsip", "agent", "stop", "--id", "carol", "--home", str(home)],
            capture_output=True,
            timeout=30,
        )
        assert stop.returncode == 0
        assert await asyncio.to_thread(proc.wait, 15) == 0
        with pytest.raises(ConfigError):
            ApiClient(home, "carol")  # its runtime files are gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_client_reports_a_dead_agent(tmp_path: Path) -> None:
    info, token = runtime_paths(tmp_path, "ghost")
    info.parent.mkdir(parents=True)
    from dsip.services.ports import free_port

    info.write_text(json.dumps({"port": free_port(), "did": "did:key:x"}))
    token.write_text("t")
    with pytest.raises(TransportError) as err:
        await ApiClient(tmp_path, "ghost").request("GET", "/v1/status")
    assert err.value.code == "agent-down"


async def test_agent_reconnects_after_the_relay_restarts(tmp_path: Path) -> None:
    ca = LocalCA.create()
    cafile = tmp_path / "ca.pem"
    ca.write_ca_pem(cafile)
    key = KeyPair.generate()  # the relay's identity survives its restart

    async def start_relay(port: int) -> tuple[Relay, PrekeyStore]:
        prekeys = PrekeyStore.open(tmp_path / "prekeys.db")
        relay = Relay(
            RelayConfig(ws_port=port),
            key,
            await open_store(f"sqlite:///{tmp_path}/relay.db"),
            server_ssl=ca.server_context(),
            prekeys=prekeys,
        )
        await relay.start()
        return relay, prekeys

    relay, prekeys = await start_relay(0)
    port = relay.ws_port
    assert port is not None
    uri = f"wss://localhost:{port}/dsip"
    alice = await _agent(tmp_path, "alice", uri, cafile)
    bob = await _agent(tmp_path, "bob", uri, cafile)
    try:
        b_events = ApiClient(bob.settings.home, "bob").events()
        await _next(b_events, "subscribed")
        await relay.stop()
        prekeys.close()
        assert (await _next(b_events, "relay.disconnected"))["event"] == "relay.disconnected"
        relay, prekeys = await start_relay(port)
        await _next(b_events, "relay.reconnected")
        a_api = ApiClient(alice.settings.home, "alice")
        async with asyncio.timeout(20):
            while not (await a_api.request("GET", "/v1/status"))["connected"]:
                await asyncio.sleep(0.2)
        await a_api.request("POST", "/v1/messages", {"to": bob.did, "text": "still there?"})
        got = await _next(b_events, "message")
        assert got["body"] == "still there?"
        await b_events.aclose()
    finally:
        await alice.stop()
        await bob.stop()
        await relay.stop()
        prekeys.close()


async def test_a_call_with_real_audio_both_ways(tmp_path: Path, network: tuple[str, Path]) -> None:
    from dsip.media.webrtc import loopback_only

    loopback_only(True)
    relay, cafile = network
    alice = await _agent(tmp_path, "alice", relay, cafile)
    bob = await _agent(tmp_path, "bob", relay, cafile)
    try:
        a_api, b_api = ApiClient(alice.settings.home, "alice"), ApiClient(bob.settings.home, "bob")
        b_events, a_events = b_api.events(), a_api.events()
        await _next(b_events, "subscribed")
        await _next(a_events, "subscribed")
        placed = await a_api.request("POST", "/v1/calls", {"to": bob.did, "tone": 1000})
        incoming = await _next(b_events, "call.incoming")
        await b_api.request("POST", f"/v1/calls/{incoming['session']}/answer", {"tone": 1500})
        await _next(a_events, "call.audio")
        await _next(b_events, "call.audio")

        async def hears(api: ApiClient, session: str, hz: float) -> float:
            async with asyncio.timeout(20):
                while True:
                    got = await api.request("GET", f"/v1/calls/{session}/audio")
                    if got["frames"] > 25 and abs(got["frequency"] - hz) <= 30:
                        return float(got["frequency"])
                    await asyncio.sleep(0.2)

        assert abs(await hears(b_api, incoming["session"], 1000) - 1000) <= 30
        assert abs(await hears(a_api, placed["session"], 1500) - 1500) <= 30
        await a_api.request("POST", f"/v1/calls/{placed['session']}/hangup")
        assert (await _next(b_events, "call.ended"))["reason"] == "user.hangup"
        await a_events.aclose()
        await b_events.aclose()
    finally:
        loopback_only(False)
        await alice.stop()
        await bob.stop()


async def test_incoming_call_shows_verified_by_only_for_a_trusted_issuer(
    tmp_path: Path, network: tuple[str, Path]
) -> None:
    from dsip.core.trust.vc import issue_credential

    relay, cafile = network
    voice_net, stranger = KeyPair.generate(), KeyPair.generate()
    now = int(time.time())
    # carol's DID is only known once her wallet exists: issue to it after creating the agent
    home = tmp_path / "carol"
    carol_did = Wallet(home).create("carol", PASS, now=now).did

    def name_vc(issuer: KeyPair, subject: str) -> Any:
        return issue_credential(
            issuer,
            "DisplayNameCredential",
            {"id": subject, "displayName": "Carol Ng"},
            now=now,
            valid_until=now + 3600,
        )

    bob = await _agent(
        tmp_path,
        "bob",
        relay,
        cafile,
        trusted_issuers={"DisplayNameCredential": (voice_net.did,)},
        issuer_names={voice_net.did: "voice.net"},
    )
    carol = AgentDaemon(
        AgentSettings(
            home=home,
            identity="carol",
            relay=relay,
            cafile=str(cafile),
            display_name="Carol Ng",
            credentials=(
                name_vc(voice_net, carol_did),  # genuine
                name_vc(stranger, carol_did),  # an issuer bob does not trust
                name_vc(voice_net, KeyPair.generate().did),  # issued to someone else
            ),
        ),
        PASS,
    )
    await carol.start()
    try:
        b_api = ApiClient(bob.settings.home, "bob")
        events = b_api.events()
        await _next(events, "subscribed")
        await ApiClient(home, "carol").request("POST", "/v1/calls", {"to": bob.did})
        rcid = (await _next(events, "call.incoming"))["rcid"]
        assert rcid["name"] == "Carol Ng"
        assert rcid["name_verified"] is True
        assert rcid["verified_by"] == ["Verified by voice.net"]
        assert len(rcid["unverified"]) == 2  # each bad credential listed with its reason
        assert any("trusted" in line for line in rcid["unverified"])
        assert any("different" in line or "subject" in line for line in rcid["unverified"])
        await events.aclose()
    finally:
        await carol.stop()
        await bob.stop()


async def test_the_agent_enforces_its_user_policy_and_refuses_a_broken_one(
    tmp_path: Path, network: tuple[str, Path]
) -> None:
    relay, cafile = network
    home = tmp_path / "bob"
    Wallet(home).create("bob", PASS, now=int(time.time()))
    broken = tmp_path / "broken.toml"
    broken.write_text('version = 1\nscope = "user"\n[[rules]]\nid = "x"\naction = "ring-maybe"\n')
    with pytest.raises(ConfigError):
        await AgentDaemon(
            AgentSettings(
                home=home, identity="bob", relay=relay, cafile=str(cafile), policy_file=broken
            ),
            PASS,
        ).start()
    assert not any(p.exists() for p in runtime_paths(home, "bob"))  # it never came up

    alice = await _agent(tmp_path, "alice", relay, cafile)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\nscope = "user"\n[defaults]\naction = "ring"\n[[rules]]\n'
        f'id = "blocked"\nwhen = {{ callers = ["{alice.did}"] }}\naction = "reject"\n'
        'reason = "policy:blocked"\n'
    )
    bob = AgentDaemon(
        AgentSettings(
            home=home, identity="bob", relay=relay, cafile=str(cafile), policy_file=policy
        ),
        PASS,
    )
    await bob.start()
    try:
        a_api = ApiClient(alice.settings.home, "alice")
        events = a_api.events()
        await _next(events, "subscribed")
        await a_api.request("POST", "/v1/calls", {"to": bob.did})
        ended = await _next(events, "call.ended")
        assert ended["reason"] == "policy.blocked"
        assert (await ApiClient(home, "bob").request("GET", "/v1/calls"))[0]["state"] == "ENDED"
        await events.aclose()
    finally:
        await alice.stop()
        await bob.stop()
