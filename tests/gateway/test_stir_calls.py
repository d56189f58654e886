"""STIR/SHAKEN across the gateway: the certificate is fetched from its x5u over local HTTPS.

Inbound: an INVITE's ``Identity`` is verified and becomes the ``tel`` claim the DSIP callee
sees (attestation, verified). Outbound: on a trunk where the operator may assert the caller,
the INVITE carries a PASSporT that verifies against the STI-CA.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dsip.agent.calls import CallAgent
from dsip.core.gateway.stir import (
    PassportClaims,
    identity_header,
    parse_identity_header,
    sign_passport,
    verify_passport,
)
from dsip.core.identity import KeyPair
from dsip.core.trust.rcid import IssuerTrust, identity_with_rcid, make_rcid
from dsip.core.trust.vc import issue_credential
from dsip.services.gateway import Gateway
from dsip.services.gateway_stir import CertRepository, LocalStiCa, StirSigner, StirVerifier
from dsip.services.localca import LocalCA
from dsip.services.ports import free_port
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import SippServer, run_sipp, scenario

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sti(local_ca: LocalCA) -> AsyncIterator[tuple[LocalStiCa, str]]:
    ca = LocalStiCa.create()
    repo = CertRepository(local_ca.server_context())
    await repo.start()
    yield ca, repo.publish("gw", ca.chain_pem())
    await repo.stop()


def _identity(ca: LocalStiCa, x5u: str, *, orig: str = "15551230001") -> str:
    claims = PassportClaims("A", orig, ("15551230002",), int(time.time()), "origid-1", "Alice")
    return identity_header(sign_passport(claims, key=ca.key, x5u=x5u), x5u)


def _present_in_invites(agent: CallAgent, identity: dict[str, Any]) -> None:
    """Make ``agent``'s invites carry ``identity`` (an RCID) in their v0.7 ``identity``."""
    build = agent.client.build

    def build_with_rcid(msg_type: str, **fields: Any) -> dict[str, Any]:
        if msg_type == "invite":
            fields["identity"] = identity
        return build(msg_type, **fields)

    agent.client.build = build_with_rcid  # type: ignore[method-assign]


async def _outbound_invite(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    sti: tuple[LocalStiCa, str],
    tmp_path: Path,
    **gateway: Any,
) -> tuple[str, Gateway]:
    """One answered DSIP → SIP call through a SHAKEN-signing gateway to a SIPp UAS; the
    INVITE as SIPp received it (from the request line on) and the gateway."""
    ca, x5u = sti
    trace = tmp_path / "uas.msg"
    async with SippServer("uas", extra=("-trace_msg", "-message_file", str(trace))) as uas:
        gw = await gateway_factory(
            trunk=("127.0.0.1", uas.port),
            stir_signer=StirSigner(ca.key, x5u),
            identity_assertable=True,
            outbound_from="15551230001",
            **gateway,
        )
        call = await agent.call(gw.did)
        await call.wait_for("answered", 10)
        await call.hangup()
        res = await uas.wait(10)
        assert res.returncode == 0, res.output[-2000:]
    return trace.read_text().split("INVITE sip:", 1)[1], gw


@pytest.mark.parametrize(("orig", "verified", "attestation"), [
    ("15551230001", True, "A"),
    ("15559999999", False, "none"),  # signed for another number: not this caller's
])  # fmt: skip
async def test_inbound_identity_becomes_the_tel_claim(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    sti: tuple[LocalStiCa, str],
    local_ca: LocalCA,
    tmp_path: Path,
    orig: str,
    verified: bool,
    attestation: str,
) -> None:
    ca, x5u = sti
    verifier = StirVerifier([ca.root], client_ssl=local_ca.client_context())
    gw = await gateway_factory(stir_verifier=verifier)

    async def callee() -> dict[str, object]:
        call = await agent.incoming(timeout=10)
        await call.decline()
        return dict(call.offer)

    task = asyncio.create_task(callee())
    scen = scenario(
        tmp_path,
        "uac_identity.xml.in",
        status="603",
        reason="user.declined",
        identity=_identity(ca, x5u, orig=orig),
    )
    local = str(free_port(udp=True, tcp=False))
    res = await run_sipp(
        "-sf", scen, f"127.0.0.1:{gw.config.sip.port}", "-p", local, "-m", "1", "-s", "15551230002"
    )
    assert res.returncode == 0, res.output[-2000:]
    offer = await asyncio.wait_for(task, 5)
    identity = offer["identity"]
    assert isinstance(identity, dict)
    (claim,) = identity["claims"]
    assert claim["type"] == "tel"
    assert claim["verified"] is verified
    assert claim["attestation"] == attestation
    assert claim["verifier"] == gw.did
    assert offer["from"] == gw.did  # the gateway signs, the caller is a claim (G§2)


async def test_outbound_invite_carries_a_verifiable_passport(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    sti: tuple[LocalStiCa, str],
    local_ca: LocalCA,
    tmp_path: Path,
) -> None:
    ca, _ = sti
    invite, _ = await _outbound_invite(gateway_factory, agent, sti, tmp_path)
    headers = re.findall(r"^Identity: (.+?)\r?$", invite, re.MULTILINE)
    assert re.search(r"^P-Asserted-Identity: <sip:15551230001@", invite, re.MULTILINE)
    verifier = StirVerifier([ca.root], client_ssl=local_ca.client_context())
    facts = await verifier.verify(headers[:1], from_tn="15551230001", to_tn="pstn")
    assert facts is not None
    assert (facts.verified, facts.attest) == (True, "A")


@pytest.mark.parametrize("trusted", [True, False])
async def test_verified_rcid_name_becomes_pai_display_and_rcd(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    sti: tuple[LocalStiCa, str],
    local_ca: LocalCA,
    tmp_path: Path,
    trusted: bool,
) -> None:
    """The DSIP caller's name reaches SIP (From, P-Asserted-Identity, PASSporT ``rcd.nam``)
    only when a DisplayNameCredential from an issuer the gateway trusts vouches for it."""
    ca, _ = sti
    issuer, stranger = KeyPair.generate(), KeyPair.generate()
    now = int(time.time())
    credential = issue_credential(
        issuer,
        "DisplayNameCredential",
        {"id": agent.client.identity, "displayName": "Alice Example"},
        now=now - 60,
        valid_until=now + 3600,
    )
    _present_in_invites(
        agent, identity_with_rcid(make_rcid([credential], display_name="Alice Example"))
    )
    trust = IssuerTrust.of({"DisplayNameCredential": [(issuer if trusted else stranger).did]})
    invite, _ = await _outbound_invite(gateway_factory, agent, sti, tmp_path, rcid_trust=trust)
    invite = invite.split("\n\n", 1)[0]
    pai = re.search(r"^P-Asserted-Identity: (.+?)\r?$", invite, re.MULTILINE)
    sender = re.search(r"^From: (.+?)\r?$", invite, re.MULTILINE)
    assert pai is not None
    assert sender is not None
    (value,) = re.findall(r"^Identity: (.+?)\r?$", invite, re.MULTILINE)
    passport = parse_identity_header(value).passport
    claims = verify_passport(
        passport,
        chain=(ca.cert, ca.root),
        anchors=(ca.root,),
        now=int(time.time()),
        from_tn="15551230001",
        to_tn="pstn",
    )
    if trusted:
        assert pai.group(1).startswith('"Alice Example" <sip:15551230001@')
        assert '"Alice Example"' in sender.group(1)
        assert claims.rcd_name == "Alice Example"
    else:  # only claimed: nothing in SIP says a name
        assert pai.group(1).startswith("<sip:15551230001@")
        assert "Alice" not in sender.group(1)
        assert claims.rcd_name is None


@pytest.mark.parametrize("trusted", [True, False])
async def test_e164_number_only_through_a_verified_phone_number_credential(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    sti: tuple[LocalStiCa, str],
    local_ca: LocalCA,
    tmp_path: Path,
    trusted: bool,
) -> None:
    """Seed §15: a DSIP caller calls out as its own E.164 number (From, P-Asserted-Identity,
    PASSporT orig) only when a PhoneNumberCredential from a trusted number authority vouches
    for it; the gateway then routes calls to that number to the DID. Otherwise the trunk's
    default number is used and the number reaches nobody."""
    ca, _ = sti
    carrier, stranger = KeyPair.generate(), KeyPair.generate()
    now = int(time.time())
    credential = issue_credential(
        carrier,
        "PhoneNumberCredential",
        {"id": agent.client.identity, "telephoneNumber": "+15557654321"},
        now=now - 60,
        valid_until=now + 3600,
    )
    _present_in_invites(agent, identity_with_rcid(make_rcid([credential])))
    trust = IssuerTrust.of({"PhoneNumberCredential": [(carrier if trusted else stranger).did]})
    invite, gw = await _outbound_invite(
        gateway_factory,
        agent,
        sti,
        tmp_path,
        default_route=None,  # nothing reaches a DID unless a route or credential says so
        rcid_trust=trust,
    )
    invite = invite.split("\n\n", 1)[0]
    sender = re.search(r"^From: (.+?)\r?$", invite, re.MULTILINE)
    assert sender is not None
    number = "15557654321" if trusted else "15551230001"
    assert f"<sip:{number}@" in sender.group(1)
    assert re.search(rf"^P-Asserted-Identity: <sip:{number}@", invite, re.MULTILINE)
    (value,) = re.findall(r"^Identity: (.+?)\r?$", invite, re.MULTILINE)
    claims = verify_passport(
        parse_identity_header(value).passport,
        chain=(ca.cert, ca.root),
        anchors=(ca.root,),
        now=int(time.time()),
        from_tn=number,
        to_tn="pstn",
    )
    assert claims.orig_tn == number

    # inbound: a call to the credential's number reaches the DID only if it was verified
    async def callee() -> str:
        incoming = await agent.incoming(timeout=10)
        await incoming.decline()
        return incoming.peer

    task = asyncio.create_task(callee()) if trusted else None
    status, reason = ("603", "user.declined") if trusted else ("404", ".*")
    scen = scenario(tmp_path, "uac_final.xml.in", status=status, reason=reason)
    if not trusted:  # a 404 before any DSIP leg exists carries no DSIP Reason
        Path(scen).write_text(Path(scen).read_text().replace(' check_it="true"', ""))
    local = str(free_port(udp=True, tcp=False))
    res = await run_sipp(
        "-sf", scen, f"127.0.0.1:{gw.config.sip.port}", "-p", local, "-m", "1", "-s", "15557654321"
    )
    assert res.returncode == 0, res.output[-2000:]
    if task is not None:
        assert await asyncio.wait_for(task, 5) == gw.did  # the gateway places the call
    assert ("15557654321" in gw.numbers) is trusted  # private: the gateway's memory only
