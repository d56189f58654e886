"""The call API end to end through a real relay: invite → ring → answer → ICE → bye."""

from __future__ import annotations

import pytest

from dsip.agent.calls import CallAgent
from dsip.core.session import SessionState
from tests.relayfix import ClientFactory

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


async def test_forked_call_first_answer_wins_and_other_leg_is_cancelled(
    connect: ClientFactory,
) -> None:
    """§12.7: bob's two devices ring; one answers; the other is cancelled answered-elsewhere
    and must not show a missed call; an early reject from a leg is withheld."""
    import time as _time

    from dsip.core.delegation import issue_delegation
    from dsip.core.identity import KeyPair

    bob = KeyPair.generate()
    now = int(_time.time())
    legs = []
    for _ in range(3):
        device = KeyPair.generate()
        deleg = issue_delegation(bob, device.did, issued_at=now - 5, expires_at=now + 3600)
        agent = CallAgent(await connect(device, identity=bob.did, delegations=[deleg]))
        await agent.start()
        legs.append(agent)
    alice = CallAgent(await connect())
    await alice.start()
    try:
        call = await alice.call(bob.did)
        incoming = [await leg.incoming(timeout=5) for leg in legs]
        await incoming[0].ring()
        await incoming[0].decline()  # withheld: other legs are still live
        await incoming[1].ring()
        await incoming[2].answer()
        answered = await call.wait_for("answered", 5)
        assert answered.message is not None
        assert answered.message.signer == legs[2].client.device.did
        kinds = []
        while not kinds or kinds[-1].kind != "ended":
            kinds.append(await incoming[1].next_event(5))
        assert kinds[-1].fields["reason"] == "session.answered-elsewhere"
        assert "missed_call" not in [e.kind for e in kinds]
        # the caller never saw the first leg's decline
        assert call.state is SessionState.ACTIVE
        await call.hangup()
        assert (await incoming[2].wait_for("ended", 5)).fields["reason"] == "user.hangup"
    finally:
        for agent in [alice, *legs]:
            await agent.close()


async def test_update_adds_video_and_is_answered(connect: ClientFactory) -> None:
    alice = CallAgent(await connect())
    bob = CallAgent(await connect())
    await alice.start()
    await bob.start()
    try:
        call = await alice.call(bob.client.identity)
        incoming = await bob.incoming(timeout=5)
        await incoming.answer()
        await call.wait_for("answered", 5)
        video = [
            {"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]},
            {"type": "video", "direction": "sendrecv", "codecs": [{"id": "codec:video/vp8"}]},
        ]
        await call.update(video)
        await incoming.wait_for("update_offered", 5)
        assert [m["type"] for m in incoming.offer["media"]] == ["audio", "video"]
        await incoming.accept_update()
        media = await call.wait_for("media", 5)
        assert media.fields["action"] == "apply_update"
        # A second update that bob rejects leaves the call ACTIVE (§12.8 rule 5).
        await call.update(video[:1])
        await incoming.wait_for("update_offered", 5)
        await incoming.reject_update("media.unsupported")
        rejected = await call.wait_for("update_rejected", 5)
        assert rejected.fields["reason"] == "media.unsupported"
        assert call.state is SessionState.ACTIVE
        await call.hangup()
    finally:
        await alice.close()
        await bob.close()
