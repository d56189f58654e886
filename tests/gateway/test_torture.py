"""RFC 4475 torture messages at the gateway's SIP port (messages in ``data/rfc4475/``).

Valid messages get a proper answer (200 to OPTIONS, 501 to an unknown method); invalid ones
get a 4xx/5xx error or are dropped — never a success, never a dialog — and afterwards the
gateway still completes a normal call.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from string import Template

import pytest

from dsip.agent.calls import CallAgent
from dsip.services.gateway import Gateway
from dsip.services.ports import free_port
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import DATA, run_sipp

pytestmark = pytest.mark.timeout(60)

MESSAGES = sorted((DATA / "rfc4475").glob("*.sip"))
EXPECTED_VALID = {
    "valid_intmeth": 501,
    "valid_lwsdisp": 200,
    "valid_longreq_compact": 200,
    "valid_zeromf": 200,  # RFC 4475 §3.1.1.9: a UAS takes Max-Forwards 0 normally
}


async def _exchange(gw: Gateway, path: Path) -> list[int]:
    """Send one message over UDP; the status codes that come back (up to the final one,
    within 0.5 s)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    text = Template(path.read_text()).substitute(host=f"127.0.0.1:{gw.config.sip.port}", port=port)
    wire = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    loop = asyncio.get_running_loop()
    statuses: list[int] = []
    try:
        await loop.sock_sendto(sock, wire, ("127.0.0.1", gw.config.sip.port))
        async with asyncio.timeout(0.5):
            while not statuses or statuses[-1] < 200:  # until a final response
                data = await loop.sock_recv(sock, 65535)
                m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
                if m:
                    statuses.append(int(m.group(1)))
    except TimeoutError:
        pass
    finally:
        sock.close()
    return statuses


async def test_torture_messages(gateway_factory: GatewayFactory, agent: CallAgent) -> None:
    gw = await gateway_factory()
    seen = {}
    for path in MESSAGES:
        statuses = await _exchange(gw, path)
        seen[path.stem] = statuses
        if path.stem in EXPECTED_VALID:
            assert statuses, path.stem
            assert statuses[-1] == EXPECTED_VALID[path.stem], (path.stem, statuses)
        else:
            assert all(s >= 400 for s in statuses), (path.stem, statuses)
            assert all(s in (400, 505) for s in statuses), (path.stem, statuses)
    assert gw.sip.live_calls == 0  # no message left a dialog behind
    assert gw.live_calls == 0

    async def answer_one() -> None:
        call = await agent.incoming(timeout=10)
        await call.answer()

    task = asyncio.create_task(answer_one())
    local = str(free_port(udp=True, tcp=False))
    res = await run_sipp("-sn", "uac", f"127.0.0.1:{gw.config.sip.port}", "-p", local, "-m", "1")
    assert res.returncode == 0, (seen, res.output[-1500:])
    await asyncio.wait_for(task, 5)
