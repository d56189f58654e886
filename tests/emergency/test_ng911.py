"""NG911 interop: an emergency DSIP call leaves through the SIP gateway toward an ESInet
played by SIPp; the INVITE carries the verified location by value (PIDF-LO)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from dsip.agent.emergency import ANSWERED, EmergencyCaller
from dsip.core.emergency.pidf import parse_pidf_lo
from dsip.core.emergency.psap_policy import PsapPolicy
from dsip.core.gateway.b2bua import TrunkProfile
from dsip.services.gateway import Gateway, GatewayConfig
from dsip.services.gateway_sip import SipEndpointConfig
from dsip.services.ports import free_port
from dsip.services.psap import install_ng911
from tests.emergency.emfix import World, albany_fix

pytestmark = pytest.mark.timeout(60)
DATA = Path(__file__).parent / "data"


async def test_emergency_call_reaches_esinet_with_pidf_lo(world: World, tmp_path: Path) -> None:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("sipp not installed (Debian package sip-tester)")
    port = free_port(udp=True, tcp=False)
    log = tmp_path / "esinet-messages.log"
    proc = await asyncio.create_subprocess_exec(
        *[sipp, "-nostdin", "-i", "127.0.0.1", "-p", str(port), "-m", "1"],
        *[
            "-sf",
            str(DATA / "esinet_uas.xml"),
            "-trace_msg",
            "-message_file",
            str(log),
            "-trace_err",
            "-error_file",
            str(tmp_path / "err.log"),
        ],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    gw = None
    try:
        await asyncio.sleep(0.2)
        cfg = GatewayConfig(
            sip=SipEndpointConfig(
                host="127.0.0.1", port=free_port(udp=True, tcp=False), trunk=("127.0.0.1", port)
            ),
            relay=world.relay_uri,
            outbound_user="911",
            trunk=TrunkProfile(),
        )
        gw = Gateway(cfg, world.psap_key, ssl_context=world.ca.client_context())
        resolver = world.resolver()
        install_ng911(
            gw,
            world.psap_key,
            documents=resolver.cached,
            policy=PsapPolicy(trusted_certifiers=frozenset({world.certifier.did})),
        )
        await gw.start()
        agent, key, device, creds, resolver = await world.caller()
        caller = EmergencyCaller(
            agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
            answer_timeout=15,
        )  # fmt: skip
        outcome = await caller.call(albany_fix(), psap=world.psap_did)
        assert outcome.kind == ANSWERED, outcome
        assert outcome.call is not None
        await outcome.call.hangup()
        async with asyncio.timeout(15):
            out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if gw is not None:
            await gw.stop()
    # the INVITE as SIPp received it: its PIDF-LO part validates against the schema
    text = log.read_text(errors="replace")
    invite = text[text.index("INVITE sip:") :]
    geo = re.search(r"Geolocation: <cid:([^>]+)>", invite)
    assert geo is not None
    part = re.search(
        r"Content-Type: application/pidf\+xml\r?\nContent-ID: <([^>]+)>\r?\n\r?\n(.*?</presence>)",
        invite,
        flags=re.S,
    )
    assert part is not None, invite[:3000]
    assert part.group(1) == geo.group(1)  # the header references this very part
    loc = parse_pidf_lo(part.group(2).encode())
    assert (str(loc.lat), str(loc.lon), str(loc.radius)) == ("42.7460000", "-73.7590000", "5")
    assert loc.entity == agent.client.identity
