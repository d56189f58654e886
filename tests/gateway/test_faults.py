"""Faults on the SIP side: an INVITE flood is shed with 503 and the gateway recovers."""

from __future__ import annotations

import asyncio

import pytest

from dsip.agent.calls import Call, CallAgent
from dsip.services.ports import free_port
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import DATA, run_sipp

pytestmark = pytest.mark.timeout(90)


async def test_invite_flood_is_shed_with_503_and_recovers(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    gw = await gateway_factory(max_calls=5, retry_after=7)
    held: list[Call] = []

    async def hold_then_decline() -> None:
        while len(held) < 5:
            call = await agent.incoming(timeout=20)
            await call.ring()
            held.append(call)
        await asyncio.sleep(1.0)  # the rest of the flood arrives while all five ring
        for call in held:
            await call.decline()

    task = asyncio.create_task(hold_then_decline())
    local = str(free_port(udp=True, tcp=False))
    flood = ["-sf", str(DATA / "uac_flood.xml"), f"127.0.0.1:{gw.config.sip.port}"]
    res = await run_sipp(*flood, "-p", local, "-m", "40", "-r", "100", "-l", "40", timeout=30)
    await asyncio.wait_for(task, 10)
    assert res.returncode == 0, res.output[-2000:]
    assert gw.sip.shed_calls == 35  # every INVITE beyond the five live calls
    assert len(held) == 5

    # recovered: the five dialogs are gone and a normal call goes through
    for _ in range(50):
        if gw.sip.live_calls == 0:
            break
        await asyncio.sleep(0.1)
    assert gw.sip.live_calls == 0

    async def answer_one() -> None:
        call = await agent.incoming(timeout=10)
        await call.answer()

    answering = asyncio.create_task(answer_one())
    local = str(free_port(udp=True, tcp=False))
    ok = await run_sipp("-sn", "uac", f"127.0.0.1:{gw.config.sip.port}", "-p", local, "-m", "1")
    assert ok.returncode == 0, ok.output[-2000:]
    await asyncio.wait_for(answering, 5)
