"""Inbound calls, SIP → DSIP: SIPp UAC → gateway (sippy, UDP) → a DSIP agent on a real relay."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from dsip.agent.calls import CallAgent
from dsip.services.ports import free_port
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import DATA, run_sipp, scenario

pytestmark = pytest.mark.timeout(60)


def _uac(port: int, *args: str) -> list[str]:
    local = str(free_port(udp=True, tcp=False))
    return [*args, f"127.0.0.1:{port}", "-p", local, "-m", "1", "-s", "15550100"]


async def test_answered_then_sip_hangs_up(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    gw = await gateway_factory()

    async def callee() -> tuple[str, str]:
        call = await agent.incoming(timeout=10)
        await call.answer()
        ended = await call.wait_for("ended", 15)
        return call.peer, str(ended.fields["reason"])

    task = asyncio.create_task(callee())
    res = await run_sipp(*_uac(gw.config.sip.port, "-sn", "uac", "-d", "200"))
    assert res.returncode == 0, res.output[-2000:]
    peer, reason = await asyncio.wait_for(task, 10)
    assert peer == gw.did  # the gateway signs; the caller is only a claim (G§2)
    assert reason == "user.hangup"  # a BYE without a cause


async def test_answered_then_dsip_hangs_up(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    gw = await gateway_factory()

    async def callee() -> None:
        call = await agent.incoming(timeout=10)
        await call.answer()
        await asyncio.sleep(0.3)
        await call.hangup()

    task = asyncio.create_task(callee())
    res = await run_sipp(*_uac(gw.config.sip.port, "-sf", str(DATA / "uac_wait_bye.xml")))
    assert res.returncode == 0, res.output[-2000:]
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("action", "status", "token"),
    [("decline", "603", "user.declined"), ("ring-then-decline", "603", "user.declined")],
)
async def test_dsip_reject_maps_to_sip_final(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    tmp_path: Path,
    action: str,
    status: str,
    token: str,
) -> None:
    gw = await gateway_factory()

    async def callee() -> None:
        call = await agent.incoming(timeout=10)
        if action == "ring-then-decline":
            await call.ring()
            await asyncio.sleep(0.2)
        await call.decline()

    task = asyncio.create_task(callee())
    scen = scenario(tmp_path, "uac_final.xml.in", status=status, reason=token)
    res = await run_sipp(*_uac(gw.config.sip.port, "-sf", scen))
    assert res.returncode == 0, res.output[-2000:]
    await asyncio.wait_for(task, 5)


async def test_sip_cancel_reaches_dsip(gateway_factory: GatewayFactory, agent: CallAgent) -> None:
    gw = await gateway_factory()

    async def callee() -> list[str]:
        call = await agent.incoming(timeout=10)
        await call.ring()
        kinds = []
        while not kinds or kinds[-1] != "ended":
            ev = await call.next_event(10)
            kinds.append(ev.kind)
            if ev.kind == "ended":
                assert ev.fields["reason"] == "user.cancelled"
        return kinds

    task = asyncio.create_task(callee())
    res = await run_sipp(*_uac(gw.config.sip.port, "-sf", str(DATA / "uac_cancel.xml")))
    assert res.returncode == 0, res.output[-2000:]
    assert "missed_call" in await asyncio.wait_for(task, 5)


async def test_unrouted_number_is_404(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = await gateway_factory(default_route=None)
    scen = scenario(tmp_path, "uac_final.xml.in", status="404", reason=".*")
    text = Path(scen).read_text().replace(' check_it="true"', "")
    Path(scen).write_text(text)
    res = await run_sipp(*_uac(gw.config.sip.port, "-sf", scen))
    assert res.returncode == 0, res.output[-2000:]


async def test_sip_bye_mid_setup_reaches_dsip(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    gw = await gateway_factory()

    async def callee() -> str:
        call = await agent.incoming(timeout=10)
        await call.ring()
        ended = await call.wait_for("ended", 10)
        return str(ended.fields["reason"])

    task = asyncio.create_task(callee())
    res = await run_sipp(*_uac(gw.config.sip.port, "-sf", str(DATA / "uac_bye_early.xml")))
    assert res.returncode == 0, res.output[-2500:]
    assert await asyncio.wait_for(task, 5) == "user.cancelled"


@pytest.mark.parametrize(
    "sdp",
    [
        "garbage\r\n",
        "v=0\r\nm=audio notaport RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/SAVP 0\r\nm=audio 4002 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
        "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
    ],
)
async def test_hostile_sdp_is_refused_488(
    gateway_factory: GatewayFactory, agent: CallAgent, sdp: str
) -> None:
    """An INVITE whose offer the gateway cannot read gets 488 and places no DSIP call."""
    gw = await gateway_factory()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    gw_addr = f"127.0.0.1:{gw.config.sip.port}"
    invite = (
        f"INVITE sip:15550100@{gw_addr} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbadsdp{len(sdp)}\r\n"
        f"From: <sip:15550001@127.0.0.1>;tag=bad1\r\nTo: <sip:15550100@{gw_addr}>\r\n"
        f"Call-ID: badsdp{len(sdp)}@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:15550001@127.0.0.1:{port}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    )
    loop = asyncio.get_running_loop()
    statuses: list[int] = []
    try:
        await loop.sock_sendto(sock, invite.encode(), ("127.0.0.1", gw.config.sip.port))
        async with asyncio.timeout(3):
            while not statuses or statuses[-1] < 200:
                data = await loop.sock_recv(sock, 65535)
                statuses.append(int(data.split(b" ", 2)[1]))
    finally:
        sock.close()
    assert statuses[-1] == 488
    with pytest.raises(TimeoutError):
        await agent.incoming(timeout=0.3)
