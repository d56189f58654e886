"""Demo: calls across ``dsip gateway`` between a DSIP agent and SIPp, with STIR/SHAKEN.

Inbound, SIPp (a real SIP UAC) calls a number routed to a DSIP agent, which answers; the
agent sees the gateway as the signer and the PSTN caller as an unattested ``tel`` claim.
Outbound, the agent calls the gateway, which places a SHAKEN-signed INVITE (certificate from
a local test STI-CA, published over HTTPS) to a SIPp UAS; the captured ``Identity`` header is
then verified like any terminating service would.
"""

from __future__ import annotations

import asyncio
import pathlib
import re
import shutil
from collections.abc import Callable

import rich.console

from dsip.agent.calls import CallAgent
from dsip.agent.signaling import SignalingClient
from dsip.config import RelayConfig
from dsip.core.envelope import Verifier
from dsip.core.gateway.b2bua import TrunkProfile
from dsip.core.identity import KeyPair
from dsip.services.gateway import Gateway, GatewayConfig
from dsip.services.gateway_sip import SipEndpointConfig
from dsip.services.gateway_stir import CertRepository, LocalStiCa, StirSigner, StirVerifier
from dsip.services.localca import LocalCA
from dsip.services.ports import free_port
from dsip.services.relay import Relay
from dsip.storage import open_store

__all__ = ["demo_gateway"]


async def _sipp(*args: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "sipp",
        "-nostdin",
        "-i",
        "127.0.0.1",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(20):
        return await proc.wait()


async def demo_gateway(
    console: rich.console.Console,
    ca: LocalCA,
    tmp: pathlib.Path,
    expect: Callable[[bool, str], None],
) -> None:
    console.print(
        "\n[bold]5. a SIP phone and a DSIP agent call each other[/bold] through `dsip gateway` "
        "(sippy B2BUA; SIPp as the phone; STIR/SHAKEN)"
    )
    if shutil.which("sipp") is None:
        expect(False, "sipp is installed (Debian package sip-tester)")
        return
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp}/gateway-relay.db")
    relay = Relay(
        cfg, KeyPair.generate(), await open_store(cfg.store), server_ssl=ca.server_context()
    )
    await relay.start()
    uri = f"wss://localhost:{relay.ws_port}/dsip"
    sti = LocalStiCa.create()
    repo = CertRepository(ca.server_context())
    await repo.start()
    x5u = repo.publish("gateway", sti.chain_pem())
    client = SignalingClient(KeyPair.generate(), verifier=Verifier())
    await client.connect(uri, ssl_context=ca.client_context(), timeout=5)
    agent = CallAgent(client)
    await agent.start()
    uas_port = free_port(udp=True, tcp=False)
    gw_cfg = GatewayConfig(
        sip=SipEndpointConfig(port=free_port(udp=True, tcp=False), trunk=("127.0.0.1", uas_port)),
        relay=uri,
        default_route=client.identity,
        outbound_from="15551230001",
        trunk=TrunkProfile(identity_assertable=True),
    )
    verifier = StirVerifier([sti.root], client_ssl=ca.client_context())
    gw = Gateway(
        gw_cfg,
        KeyPair.generate(),
        ssl_context=ca.client_context(),
        stir_signer=StirSigner(sti.key, x5u),
        stir_verifier=verifier,
    )
    await gw.start()
    try:
        async with asyncio.timeout(60):
            console.print(
                f"   gateway {gw.did[:32]}… on udp:127.0.0.1:{gw_cfg.sip.port}", emoji=False
            )

            async def answer() -> dict[str, object]:
                call = await agent.incoming()
                await call.answer()
                return dict(call.offer)

            answering = asyncio.create_task(answer())
            rc = await _sipp(
                "-sn", "uac", f"127.0.0.1:{gw_cfg.sip.port}", "-m", "1", "-s", "15550100",
                "-p", str(free_port(udp=True, tcp=False)),
            )  # fmt: skip
            offer = await answering
            expect(rc == 0, "SIPp → gateway → DSIP agent: answered, SIPp hung up (BYE)")
            identity = offer.get("identity")
            claims = identity.get("claims", []) if isinstance(identity, dict) else []
            console.print(
                f"   SIPp calls 15550100 → the DSIP agent answers; it sees the invite signed by "
                f"the gateway {str(offer.get('from'))[:24]}… and caller claims {claims or 'none'}",
                emoji=False,
                markup=False,
            )
            expect(
                offer.get("from") == gw.did and not any(c.get("verified") for c in claims),
                "the gateway signs the invite; the caller (no Identity header) is not verified",
            )

            trace = tmp / "uas.msg"
            uas = await asyncio.create_subprocess_exec(
                "sipp", "-nostdin", "-i", "127.0.0.1", "-p", str(uas_port), "-sn", "uas",
                "-m", "1", "-trace_msg", "-message_file", str(trace),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(0.3)
            call = await agent.call(gw.did)
            answered = await call.wait_for("answered", 10)
            expect(
                answered.fields.get("answered_by") == "gateway",
                "DSIP agent → gateway → SIPp UAS: answered_by gateway (G§10)",
            )
            await call.hangup()
            expect(await uas.wait() == 0, "the DSIP bye reached SIPp as a BYE")
            invite = trace.read_text().split("INVITE sip:", 1)[1]
            headers = re.findall(r"^Identity: (.+?)\r?$", invite, re.MULTILINE)
            facts = await verifier.verify(headers[:1], from_tn="15551230001", to_tn="pstn")
            expect(
                facts is not None and facts.verified and facts.attest == "A",
                "the outbound INVITE's SHAKEN PASSporT verifies (x5u over HTTPS, ES256)",
            )
            console.print(
                f"   the agent calls out: answered by {answered.fields.get('answered_by')}; its "
                "bye reached SIPp as a BYE; the INVITE's SHAKEN PASSporT verifies (attestation "
                f"{facts.attest if facts is not None else '?'}, ES256, x5u over HTTPS)",
                emoji=False,
            )
    finally:
        await gw.stop()
        await agent.close()
        await repo.stop()
        await relay.stop()
