"""Emergency calls end to end: agent → real relay → PSAP, aiortc media, sealed location."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dsip.agent.emergency import ANSWERED, USE_NATIVE_DIALER, EmergencyCaller
from dsip.core.emergency.certification import Level
from dsip.core.emergency.errors import EmergencyError
from dsip.core.emergency.geo import Fix, Tier
from dsip.core.emergency.psap_policy import PsapPolicy
from dsip.core.identity import did_key_document
from dsip.media.tone import ToneDetector
from dsip.services.psap import describe
from tests.emergency.emfix import (
    LAT_E7,
    SECRET_MARKERS,
    World,
    albany_fix,
    decoded_text,
    tone_media,
)

pytestmark = pytest.mark.timeout(90)


async def test_emergency_call_with_verified_location_and_media(world: World) -> None:
    psap = await world.psap(media_factory=lambda: tone_media(1500.0))
    agent, key, device, creds, resolver = await world.caller()
    eve_agent, *_ = await world.caller()  # another party bound at the same relay
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds
    )
    media = tone_media(1000.0)
    offer, transports = await media.offer()
    try:
        placing = asyncio.create_task(
            caller.call(albany_fix(), media=offer, transports=transports, psap=world.psap_did)
        )
        taken = await psap.answer_next(timeout=10)
        assert taken is not None
        outcome = await placing
        assert outcome.kind == ANSWERED
        # the call taker's screen: verified location, tier and certification
        a = taken.assessment
        assert a.accept
        assert a.verified
        assert a.flags == ()
        assert a.location is not None
        assert a.location.lat_e7 == LAT_E7
        assert a.location.tier is Tier.GNSS
        assert a.location.keystore == "file"
        assert a.certification is not None
        assert a.certification.level is Level.GOLD
        assert "42.746000,-73.759000 ±5 m tier 1" in describe(taken)
        assert taken.emergency
        # media flows: the caller's tone is heard at the PSAP
        assert outcome.call is not None
        assert outcome.call.answer_payload is not None
        await media.accept(outcome.call.answer_payload)
        await media.wait_connected(15)
        ear = ToneDetector(await taken.media.next_track("audio"))
        assert abs(await ear.wait_for_tone(1000.0, timeout=15) - 1000.0) <= 30
        ear.stop()
        await outcome.call.hangup()
        # wire capture: the coordinates crossed the relay only as ciphertext
        seen = [decoded_text(f) for f in world.relay.wire]
        assert any('"priority":"emergency"' in t and '"enc":' in t for t in seen)  # decoded
        for frame in world.relay.wire:
            text = decoded_text(frame)
            assert not any(m in text for m in SECRET_MARKERS), text[:200]
        assert eve_agent.calls == {}
    finally:
        await media.close()


async def test_emergency_invite_passes_rate_limit_and_first_contact_gate(world: World) -> None:
    """The relay fixture refuses every invite at its first-contact hook and allows two
    invites a minute: ordinary calls are stopped, emergency calls are not."""
    psap = await world.psap()
    agent, key, device, creds, resolver = await world.caller()
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
        answer_timeout=5,
    )  # fmt: skip
    ordinary = await agent.call(world.psap_did)  # no emergency priority
    ev = await ordinary.next_event(5)
    assert ev.kind == "error"
    assert ev.fields["reason"] == "policy.first-contact-required"
    for _ in range(3):  # over the invite limit of 2/min
        placing = asyncio.create_task(caller.call(albany_fix(), psap=world.psap_did))
        assert await psap.answer_next(timeout=5) is not None
        outcome = await placing
        assert outcome.kind == ANSWERED
        assert outcome.call is not None
        await outcome.call.hangup()
    # seq went up call by call: the PSAP saw three fresh fixes from this caller
    seqs = [pc.assessment.location.seq for pc in psap.board.values() if pc.assessment.location]
    assert len(seqs) == 3
    assert seqs == sorted(set(seqs))


async def test_no_psap_answer_means_native_dialer(world: World) -> None:
    await world.psap()  # on duty, but nobody takes the call
    agent, key, device, creds, resolver = await world.caller()
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
        answer_timeout=1.5,
    )  # fmt: skip
    started = time.monotonic()
    outcome = await caller.call(albany_fix(), psap=world.psap_did)
    assert outcome.kind == USE_NATIVE_DIALER
    assert outcome.reason == "session.timeout"
    assert 1.4 <= time.monotonic() - started < 5
    # a tier-3-only device never tries DSIP: limited mode
    ip_fix = Fix(42.7, -73.7, 10_000, "ip", int(time.time()))
    limited = await caller.call(ip_fix, psap=world.psap_did)
    assert (limited.kind, limited.reason) == (USE_NATIVE_DIALER, "x-emergency.limited-mode")


async def test_unreachable_psap_and_non_emergency_did_fall_back(world: World) -> None:
    agent, key, device, creds, resolver = await world.caller()
    eve_agent, *_ = await world.caller()
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
        answer_timeout=3,
    )  # fmt: skip
    # nobody bound for the PSAP DID: the relay says unknown-recipient
    off_duty = await caller.call(albany_fix(), psap=world.psap_did)
    assert (off_duty.kind, off_duty.reason) == (USE_NATIVE_DIALER, "transport.unknown-recipient")
    # an "emergency call" to an ordinary DID is refused before anything is sent
    eve = eve_agent.client.identity
    before = len(world.relay.wire)
    wrong = await caller.call(albany_fix(), psap=eve)
    assert (wrong.kind, wrong.reason) == (USE_NATIVE_DIALER, "x-emergency.not-emergency-service")
    # extracting precise location towards a non-PSAP peer through the client: refused
    client = agent.client
    assert hasattr(client, "expect_emergency_invite")
    client.expect_emergency_invite(did_key_document(eve), {"geo": {}})
    with pytest.raises(EmergencyError) as err:
        await agent.call(eve)
    assert err.value.reason == "x-emergency.precise-location-refused"
    assert len(world.relay.wire) == before  # nothing left the caller
    assert eve_agent.calls == {}


async def test_strict_policy_refuses_uncertified_device(world: World) -> None:
    strict = PsapPolicy(trusted_certifiers=frozenset({world.certifier.did}), strict=True)
    psap = await world.psap(policy=strict)
    agent, key, device, creds, resolver = await world.caller(level=Level.SILVER)
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
        answer_timeout=5,
    )  # fmt: skip
    outcome = await caller.call(albany_fix(), psap=world.psap_did)
    assert (outcome.kind, outcome.reason) == (USE_NATIVE_DIALER, "x-emergency.device-uncertified")
    assert [a.refusal for a in psap.refused] == ["x-emergency.device-uncertified"]


async def test_default_policy_accepts_uncertified_device_and_flags_it(world: World) -> None:
    psap = await world.psap()
    agent, key, device, _, resolver = await world.caller(level=None)
    caller = EmergencyCaller(agent, identity_key=key, device=device, resolver=resolver)
    placing = asyncio.create_task(caller.call(albany_fix(), psap=world.psap_did))
    taken = await psap.answer_next(timeout=5)
    assert taken is not None
    assert (await placing).kind == ANSWERED
    assert taken.assessment.flags == ("x-emergency.device-uncertified",)
    assert "uncertified" in describe(taken)


async def test_psap_callback_bypasses_first_contact_within_window(world: World) -> None:
    psap = await world.psap()
    agent, key, device, creds, resolver = await world.caller(first_contact=True)
    stranger, *_ = await world.caller(first_contact=True)  # never called the PSAP
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds
    )
    placing = asyncio.create_task(caller.call(albany_fix(), psap=world.psap_did))
    await psap.answer_next(timeout=5)
    outcome = await placing
    assert outcome.call is not None
    await outcome.call.hangup()  # the line drops
    back = await psap.callback(agent.client.identity)
    incoming = await agent.incoming(timeout=5)
    assert incoming.peer == world.psap_did
    await incoming.answer()
    assert (await back.wait_for("answered", 5)).kind == "answered"
    # without a window the caller's first-contact policy holds
    refused = await psap.callback(stranger.client.identity)
    ended = await refused.wait_for("ended", 5)
    assert ended.fields["reason"] == "policy.first-contact-required"
    # and the window closes
    caller.clock = lambda: time.time() + caller.callbacks.window
    assert caller.expire_callbacks() == [world.psap_did]
    assert world.psap_did not in agent.engine.contacts.allow


async def test_relay_puts_emergency_frames_first(world: World) -> None:
    """Triage before verification and head-of-queue delivery (the relay's emergency hooks)."""
    from dsip.core.envelope import make_payload, sign_envelope
    from dsip.core.identity import KeyPair
    from dsip.core.jws import encode_frame
    from dsip.services.relay import _urgent

    await world.psap()
    peer = world.relay.devices[world.psap_did]
    caller = KeyPair.generate()

    def invite(**extra: object) -> str:
        payload = make_payload(
            "invite", sender=caller.did, now=int(time.time()), to=world.psap_did,
            media=[], transports=[], **extra,
        )  # fmt: skip
        return encode_frame(sign_envelope(payload, caller))

    urgent, ordinary = invite(priority="emergency"), invite()
    stranger = type(peer)(peer.conn)  # an unbound connection: triage by content only
    assert _urgent(stranger, urgent)
    assert not _urgent(stranger, ordinary)
    assert _urgent(peer, ordinary)  # anything the PSAP itself sends goes first
    peer.out.extend([ordinary] * 5)  # a backlog for the PSAP, not yet written
    await world.relay._deliver(peer, urgent, urgent=True)
    assert peer.out[0] == urgent
    assert list(peer.out)[1:] == [ordinary] * 5


def test_triage_of_hostile_frames_is_a_quiet_no() -> None:
    from dsip.services.relay import _claims_emergency, _urgent

    class _Conn:
        pass

    from dsip.services.relay import _Peer

    stranger = _Peer(_Conn())  # type: ignore[arg-type]
    for junk in ["", "junk", '{"payload":"', '{"payload":"!!!!"}', "x" * 70_000, b"\x00\x01"]:
        assert not _urgent(stranger, junk)
        assert not _claims_emergency(junk)


def test_cli_psap_refuses_a_non_emergency_did(tmp_path: Path) -> None:
    from dsip.cli import main

    seed = tmp_path / "psap.seed"
    seed.write_bytes(b"\x01" * 32)
    args = ["psap", "--relay", "wss://localhost:1/dsip", "--identity-seed-file", str(seed)]
    assert main([*args, "--did", "did:web:evil.example"]) == 2
    seed.write_bytes(b"short")
    assert main([*args, "--did", "did:web:911.us"]) == 2


async def test_region_from_geofence_picks_the_psap(world: World) -> None:
    from dsip.core.emergency.namespaces import GeofenceSet

    psap = await world.psap(auto_answer=True)
    ring = [[-75.0, 41.0], [-72.0, 41.0], [-72.0, 44.0], [-75.0, 44.0], [-75.0, 41.0]]
    fences = GeofenceSet.from_geojson(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"psap": world.psap_did, "region": "us-ny-albany"},
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            ],
        }
    )
    agent, key, device, creds, resolver = await world.caller()
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
        geofences=fences, answer_timeout=5,
    )  # fmt: skip
    outcome = await caller.call(albany_fix())  # no PSAP named: the geofence decides
    assert (outcome.kind, outcome.psap) == (ANSWERED, world.psap_did)
    assert len(psap.board) == 1
    paris = Fix(48.85, 2.35, 5, "gps", int(time.time()))
    elsewhere = await caller.call(paris)
    assert (elsewhere.kind, elsewhere.reason) == (USE_NATIVE_DIALER, "x-emergency.no-region")


async def test_emergency_priority_to_an_ordinary_did_gets_no_exemption(world: World) -> None:
    """Claiming priority is not enough: the relay exempts only invites to or from an
    emergency namespace DID, so this one meets the first-contact gate like any other."""
    from dsip.agent.calls import DEFAULT_AUDIO_OFFER

    agent, *_ = await world.caller()
    eve, *_ = await world.caller()
    payload = agent.client.build(
        "invite", to=eve.client.identity, media=DEFAULT_AUDIO_OFFER, transports=[{"id": "transport:webrtc"}],
        priority="emergency",
    )  # fmt: skip
    await agent.client.send(payload)
    async with asyncio.timeout(5):
        while not agent.client.errors:  # the relay's signed refusals land here
            await asyncio.sleep(0.05)
    v = agent.client.errors[-1]
    assert v.payload["reason"] == "policy.first-contact-required"
    assert v.payload["in_reply_to"] == payload["id"]
    assert eve.calls == {}


async def test_per_ip_limit_does_not_stop_an_emergency_call(world: World) -> None:
    """Every client here shares 127.0.0.1: once its per-IP bucket is empty, ordinary frames
    are refused, and an emergency call still goes through."""
    from dsip.core.ratelimit import RateLimiter

    psap = await world.psap(auto_answer=True)
    agent, key, device, creds, resolver = await world.caller()
    world.relay._rl_ip = RateLimiter(1, burst=1)  # the next frame empties the bucket
    caller = EmergencyCaller(
        agent, identity_key=key, device=device, resolver=resolver, credentials=creds,
        answer_timeout=5,
    )  # fmt: skip
    ordinary = await agent.call(world.psap_did)  # no priority: this one uses the token
    outcome = await caller.call(albany_fix(), psap=world.psap_did)
    assert outcome.kind == ANSWERED
    limited = await agent.call(world.psap_did)
    ev = await limited.next_event(5)
    assert (ev.kind, ev.fields["reason"]) == ("error", "transport.rate-limited")
    assert ordinary.id != limited.id
    assert len(psap.board) == 1
