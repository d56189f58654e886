"""Outbound calls, DSIP → SIP: a DSIP agent calls the gateway, which calls a SIPp UAS."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsip.agent.calls import CallAgent
from tests.gateway.conftest import GatewayFactory
from tests.gateway.sipp import DATA, SippServer, scenario

pytestmark = pytest.mark.timeout(60)


async def test_answered_then_dsip_hangs_up(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    async with SippServer("uas") as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port))
        call = await agent.call(gw.did)
        assert (await call.wait_for("progress", 10)).fields["status"] == "ringing"
        answered = await call.wait_for("answered", 10)
        assert answered.fields["answered_by"] == "gateway"  # G§10: the gateway answers
        # G§7: the trunk's plain RTP/AVP answer loses DSIP's media protection, and the
        # gateway says so once the crossing is known (right after the answer)
        notice = await call.wait_for("error", 5)
        assert notice.fields["reason"] == "gateway.downgraded"
        await call.hangup()
        res = await uas.wait(10)
        assert res.returncode == 0, res.output[-2000:]


async def test_answered_then_sip_hangs_up(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    async with SippServer(str(DATA / "uas_bye.xml")) as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port))
        call = await agent.call(gw.did)
        await call.wait_for("answered", 10)
        ended = await call.wait_for("ended", 10)
        assert ended.fields["reason"] == "user.hangup"  # Q.850 16, normal clearing
        res = await uas.wait(10)
        assert res.returncode == 0, res.output[-2000:]


@pytest.mark.parametrize(
    ("status", "phrase", "token"),
    [
        ("486", "Busy Here", "endpoint.busy"),
        ("603", "Decline", "user.declined"),
        ("404", "Not Found", "identity.unknown"),
    ],
)
async def test_sip_refusal_maps_to_dsip_reject(
    gateway_factory: GatewayFactory,
    agent: CallAgent,
    tmp_path: Path,
    status: str,
    phrase: str,
    token: str,
) -> None:
    scen = scenario(tmp_path, "uas_final.xml.in", status=status, phrase=phrase)
    async with SippServer(scen) as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port))
        call = await agent.call(gw.did)
        await call.wait_for("progress", 10)
        ended = await call.wait_for("ended", 10)
        assert ended.fields["reason"] == token
        res = await uas.wait(10)
        assert res.returncode == 0, res.output[-2000:]


async def test_trunk_that_never_answers(gateway_factory: GatewayFactory, agent: CallAgent) -> None:
    async with SippServer(str(DATA / "uas_silent.xml")) as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port), no_reply=1.5)
        call = await agent.call(gw.did)
        ended = await call.wait_for("ended", 10)
        assert ended.fields["reason"] == "endpoint.unavailable"  # SIP 408 (G§4.1)


async def test_dsip_cancel_cancels_the_invite(
    gateway_factory: GatewayFactory, agent: CallAgent, tmp_path: Path
) -> None:
    # the trunk rings, then would refuse after a long time; the caller gives up first
    async with SippServer(str(DATA / "uas_ring_cancel.xml")) as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port))
        call = await agent.call(gw.did)
        await call.wait_for("progress", 10)
        await call.cancel()
        res = await uas.wait(10)
        assert res.returncode == 0, res.output[-2000:]


async def test_outbound_invite_takes_extra_headers_and_body_parts(
    gateway_factory: GatewayFactory, agent: CallAgent
) -> None:
    """The hook an NG911 path uses (RFC 6442 Geolocation + PIDF-LO, RFC 4412 priority)."""
    from dsip.services.gateway_sip import BodyPart

    pidf = '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:x@y"/>'
    async with SippServer(str(DATA / "uas_ng911.xml")) as uas:
        gw = await gateway_factory(trunk=("127.0.0.1", uas.port))
        gw.outbound_headers = lambda bridge: [
            ("Geolocation", "<cid:loc1@gw.example>"),
            ("Resource-Priority", "esnet.1"),
        ]
        gw.outbound_parts = lambda bridge: [
            BodyPart("application/pidf+xml", pidf, content_id="loc1@gw.example")
        ]
        call = await agent.call(gw.did)
        ended = await call.wait_for("ended", 10)
        assert ended.fields["reason"] == "user.declined"
        res = await uas.wait(10)
        assert res.returncode == 0, res.output[-2000:]
