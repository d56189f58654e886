"""SIP over TCP and TLS: SIPp → Kamailio (front, ``dsip.services.gateway_front``) → the
gateway's UDP port → a DSIP agent; and the gateway's BYE back out over the phone's transport."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from dsip.agent.calls import CallAgent
from dsip.services.gateway import Gateway
from dsip.services.gateway_front import KamailioFront
from dsip.services.ports import free_port
from tests.gateway.baresip import Baresip
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import DATA, run_sipp

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def front(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, KamailioFront, Path]]:
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        pytest.skip("kamailio not installed (Debian kamailio, kamailio-tls-modules)")
    gw = await gateway_factory()
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    # baresip serves TLS too (the gateway's BYE arrives on a connection Kamailio opens)
    phone = ca.issue_cert("127.0.0.1")
    phone.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "phone.pem"))
    kam = KamailioFront(
        tmp_path / "kamailio", gw.config.sip.port, tmp_path / "server.crt", tmp_path / "server.key"
    )
    await kam.start()
    yield gw, kam, tmp_path
    await kam.stop()


async def test_call_over_tcp(front: tuple[Gateway, KamailioFront, Path], agent: CallAgent) -> None:
    _, kam, _ = front

    async def callee() -> None:
        call = await agent.incoming(timeout=10)
        await call.answer()
        await asyncio.sleep(0.3)
        await call.hangup()  # the gateway's BYE goes back through Kamailio on `transport`

    task = asyncio.create_task(callee())
    res = await run_sipp(
        "-sf", str(DATA / "uac_wait_bye.xml"), f"127.0.0.1:{kam.tcp_port}", "-t", "t1",
        "-p", str(free_port()), "-m", "1", "-s", "15550100",
    )  # fmt: skip
    assert res.returncode == 0, res.output[-2500:] + kam.log.read_text(errors="replace")[-1500:]
    await asyncio.wait_for(task, 5)


async def test_call_over_tls_with_baresip(
    front: tuple[Gateway, KamailioFront, Path], agent: CallAgent
) -> None:
    """Debian's SIPp has no TLS; baresip (libre) is the TLS phone: it verifies Kamailio's
    certificate against the test CA, calls, and takes the gateway's BYE over the same TLS."""
    _, kam, tmp = front
    tls = f"sip_cafile\t\t{tmp / 'ca.pem'}\nsip_certificate\t\t{tmp / 'phone.pem'}\n"
    phone = Baresip(tmp, tone=700, extra_config=tls)
    await phone.start(f"/dial sip:15550100@127.0.0.1:{kam.tls_port};transport=tls", seconds=15)
    try:
        call = await agent.incoming(timeout=10)
        await call.answer()
        await asyncio.sleep(0.5)
        await call.hangup()
        # the gateway's BYE reaches the phone over TLS (not baresip quitting at 15 s)
        try:
            # baresip reports a call the far end closed either way, by version and timing
            out = await phone.wait_for_text("terminated (", "session closed", timeout=10)
        except TimeoutError:
            lines = [x for x in phone.output.splitlines() if "audio=" not in x]
            raise AssertionError("\n".join(lines[-25:])) from None
        assert "Call established" in out, out[-2000:]
    finally:
        await phone.stop()
