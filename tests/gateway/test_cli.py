"""``dsip gateway`` as a process: relay process, gateway process, SIPp, and a DSIP agent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsip.agent.calls import CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.core.identity import KeyPair
from dsip.services.ports import free_port
from tests.gateway.sipp import run_sipp
from tests.services.procs import RelayProcess

pytestmark = pytest.mark.timeout(90)


def test_help_lists_the_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dsip", "gateway", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for option in ("--relay", "--sip", "--trunk", "--route", "--max-calls", "--key-seed-file"):
        assert option in out.stdout


def test_bad_route_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    from dsip.cli import main

    assert main(["gateway", "--relay", "wss://x/", "--route", "nodid"]) == 2
    assert "--route must be USER=DID" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sti-key", "k.pem"], "--sti-key and --sti-x5u go together"),
        (["--sti-anchor", "/nonexistent.pem"], "cannot load STIR material"),
        (["--sip", "nohost"], "--sip must be HOST:PORT"),
        (["--max-calls", "0"], "--max-calls must be at least 1"),
        (["--no-reply", "40"], "--no-reply must be between 0 and 32"),
        (["--tcp-port", "5070"], "need --tls-cert and --tls-key"),
        (["--name-issuer", "voice.net"], "--name-issuer must be a DID"),
    ],
)
def test_config_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from dsip.cli import main

    assert main(["gateway", "--relay", "wss://x/", *args]) == 2
    assert message in capsys.readouterr().err


async def test_inbound_call_through_gateway_process(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay")
    relay.start()
    callee = SignalingClient(KeyPair.generate())
    sip_port = free_port(udp=True, tcp=False)
    ready = tmp_path / "gw.json"
    gw = None
    try:
        await callee.connect(relay.uri, cafile=str(tmp_path / "relay" / "tls" / "ca.pem"))
        agent = CallAgent(callee)
        await agent.start()
        gw = subprocess.Popen(
            [
                sys.executable, "-m", "dsip", "gateway",
                "--relay", relay.uri,
                "--ca", str(tmp_path / "relay" / "tls" / "ca.pem"),
                "--sip", f"127.0.0.1:{sip_port}",
                "--route", f"15550100={callee.identity}",
                "--tcp-port", str(free_port()),  # Kamailio in front: SIP over TCP too
                "--tls-cert", str(tmp_path / "relay" / "tls" / "relay.crt"),
                "--tls-key", str(tmp_path / "relay" / "tls" / "relay.key"),
                "--ready-file", str(ready),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert gw.poll() is None, gw.stderr.read().decode() if gw.stderr else ""
            assert time.monotonic() < deadline, "gateway did not become ready"
            await asyncio.sleep(0.05)
        info = json.loads(ready.read_text())

        async def answer() -> str:
            call = await agent.incoming(timeout=15)
            await call.answer()
            return call.peer

        for transport, port in (("u1", sip_port), ("t1", info["tcp_port"])):
            task = asyncio.create_task(answer())
            local = str(free_port(udp=True, tcp=True))
            res = await run_sipp(
                "-sn", "uac", f"127.0.0.1:{port}", "-t", transport,
                "-p", local, "-m", "1", "-s", "15550100",
            )  # fmt: skip
            assert res.returncode == 0, res.output[-2000:]
            assert await asyncio.wait_for(task, 5) == info["did"]
        await agent.close()
    finally:
        if gw is not None:
            gw.terminate()
            assert gw.wait(10) == 0
        relay.stop()
