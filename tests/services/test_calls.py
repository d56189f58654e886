"""The call API end to end through a real relay: invite → ring → answer → ICE → bye."""

from __future__ import annotations

import pytest

from dsip.agent.calls import CallAgent
from dsip.core.session import SessionState
from tests.services.conftest import ClientFactory

pytestmark = pytest.mark.timeout(60)


async def test_call_answer_ice_hangup(connect: ClientFactory) -> None:
    alice = CallAgent(await connect())
    bob = CallAgent(await connect())
    await alice.start()
    await bob.start()
    try:
        call = await alice.call(bob.client.identity)
        incoming = await bob.incoming(timeout=5)
        assert incoming.peer == alice.client.identity
        assert incoming.state is SessionState.OFFERED
        await incoming.answer()
        assert (await call.wait_for("progress", 5)).fields["status"] == "ringing"
        answered = await call.wait_for("answered", 5)
        assert answered.fields["answered_by"] == "user"
        assert call.state is SessionState.ACTIVE
        assert call.answer_payload is not None
        assert call.answer_payload["media"][0]["codecs"] == [{"id": "codec:audio/opus"}]
        # trickle ICE rides in signed info envelopes
        cand = {
            "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
            "sdp_mid": "0",
            "sdp_m_line_index": 0,
        }
        await call.send_ice([cand])
        info = await incoming.wait_for("info", 5)
        assert info.fields["data"]["candidates"] == [cand]
        await call.hangup()
        ended = await incoming.wait_for("ended", 5)
        assert ended.fields["reason"] == "user.hangup"
        assert incoming.state is SessionState.ENDED
    finally:
        await alice.close()
        await bob.close()


async def test_decline_and_cancel(connect: ClientFactory) -> None:
    alice = CallAgent(await connect())
    bob = CallAgent(await connect())
    await alice.start()
    await bob.start()
    try:
        call = await alice.call(bob.client.identity)
        incoming = await bob.incoming(timeout=5)
        await incoming.ring()
        await incoming.decline()
        ended = await call.wait_for("ended", 5)
        assert ended.fields["reason"] == "user.declined"

        call2 = await alice.call(bob.client.identity)
        incoming2 = await bob.incoming(timeout=5)
        await incoming2.ring()
        await call2.wait_for("progress", 5)
        await call2.cancel()
        kinds = []
        while not kinds or kinds[-1].kind != "ended":
            kinds.append(await incoming2.next_event(5))
        assert kinds[-1].fields["reason"] == "user.cancelled"
        assert "missed_call" in [e.kind for e in kinds]  # a user cancel is a missed call
    finally:
        await alice.close()
        await bob.close()


async def test_relay_refusal_reaches_the_call(connect: ClientFactory) -> None:
    from dsip.core.identity import KeyPair

    alice = CallAgent(await connect())
    await alice.start()
    try:
        # bob is known to nobody: the relay refuses with unknown-recipient, surfaced as error
        call = await alice.call(KeyPair.generate().did)
        ev = await call.next_event(5)
        assert ev.kind == "error"
        assert ev.fields["reason"] == "transport.unknown-recipient"
    finally:
        await alice.close()
