"""SFU groups: a real Janus VideoRoom, admitted by the dsip SFU join service, aiortc clients.

Janus runs in a network namespace this module creates (Janus never gathers ICE on loopback;
see ``dsip.services.janus``); every client runs in a thread inside that namespace and
gathers on 127.0.0.1 only. Nothing leaves the namespace.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiortc import VideoStreamTrack
from av import VideoFrame

from dsip.core.identity import KeyPair
from dsip.media.sfu_client import JanusSession, SfuGroupClient, SfuRefusedError, request_join
from dsip.media.tone import ToneDetector, ToneTrack
from dsip.media.webrtc import loopback_only
from dsip.services.janus import VIDEOROOM, IsolatedNetwork, Janus, JanusError, participant_stats
from dsip.services.sfu import (
    JanusRooms,
    JoinAdmitter,
    JoinGrant,
    SfuJoinService,
    issue_access_token,
    jwt_access_verifier,
)

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.timeout(240)]

AUDIENCE = "dsip-sfu:test"
ROOM = "standup"
TONES = (600.0, 1000.0, 1400.0)


@pytest.fixture(autouse=True)
def _loopback() -> Iterator[None]:
    loopback_only(True)
    yield
    loopback_only(False)


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Janus]:
    why = IsolatedNetwork.available()
    if why is None and shutil.which("janus") is None:
        why = "Janus is not installed (Debian package 'janus')"
    if why is not None:
        pytest.skip(why)
    net = IsolatedNetwork().create()
    server = Janus(Path(tmp_path_factory.mktemp("janus")), network=net)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        net.delete()


@dataclass
class Sfu:
    janus: Janus
    issuer: KeyPair
    service: SfuJoinService
    rooms: JanusRooms

    def token(
        self, subject: str, *, room: str = ROOM, ttl: int = 600, now: int | None = None
    ) -> str:
        now = int(time.time()) if now is None else now
        return issue_access_token(self.issuer, subject=subject, room=room, now=now, ttl=ttl)

    async def join(self, key: KeyPair, token: str, room: str = ROOM) -> JoinGrant:
        return await request_join(
            self.service.url, key, access_token=token, room=room, audience=AUDIENCE
        )


async def _start_sfu(janus: Janus) -> Sfu:
    issuer = KeyPair.generate()
    admitter = JoinAdmitter(
        audience=AUDIENCE, verify_token=jwt_access_verifier({issuer.did: issuer.public_key})
    )
    rooms = JanusRooms(janus.admin(), janus_url=janus.url, room_admin_key=janus.room_admin_key)
    service = await SfuJoinService(admitter, rooms).start()
    return Sfu(janus, issuer, service, rooms)


def _candidate_hosts(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def _stop_sfu(sfu: Sfu) -> None:
    await sfu.service.stop()
    await sfu.rooms.admin.aclose()


async def test_three_party_group_call_each_hears_the_other_two(janus: Janus) -> None:
    async def scenario() -> None:
        sfu = await _start_sfu(janus)
        keys = [KeyPair.generate() for _ in TONES]
        clients: list[SfuGroupClient] = []
        detectors: list[ToneDetector] = []
        try:
            for key, tone in zip(keys, TONES, strict=True):
                grant = await sfu.join(key, sfu.token(key.did))
                clients.append(SfuGroupClient(grant, audio=ToneTrack(tone)))
            await asyncio.gather(*(c.join() for c in clients))
            tone_of = {c.grant.did: tone for c, tone in zip(clients, TONES, strict=True)}
            for client in clients:
                tracks = await client.wait_for_tracks(2, timeout=20)
                assert client.participant_id not in tracks  # never our own feed back
                heard = []
                for feed, track in tracks.items():
                    detector = ToneDetector(track)
                    detectors.append(detector)
                    heard.append(await detector.wait_for_tone(tone_of[client.feeds[feed]]))
                others = [t for did, t in tone_of.items() if did != client.grant.did]
                assert sorted(heard) == pytest.approx(sorted(others), abs=30)
            listed = await sfu.rooms.admin.message_plugin(
                VIDEOROOM, {"request": "listparticipants", "room": ROOM}
            )
            assert {p["display"] for p in listed["participants"]} == set(tone_of)
            for client in clients:  # ICE stayed where it must: 127.0.0.1 ↔ Janus' veth end
                for pc in client.peer_connections():
                    assert _candidate_hosts(pc.localDescription.sdp) == {"127.0.0.1"}
                    assert _candidate_hosts(pc.remoteDescription.sdp) == {IsolatedNetwork.address}

            handles = await participant_stats(sfu.rooms.admin, room=ROOM)
            roles = sorted(str(h.role) for h in handles)
            assert roles == ["publisher"] * 3 + ["subscriber"] * 6  # one handle per feed
            assert {h.token for h in handles} == set(sfu.rooms.grants)

            # usage for metering: Janus' per-participant byte counters grow while media flows
            first = await sfu.rooms.usage(room=ROOM)
            await asyncio.sleep(1.5)
            second = await sfu.rooms.usage(room=ROOM)
            assert set(second) == set(tone_of)  # every admitted DID is metered
            for did, (b_in, b_out) in second.items():
                assert b_in > first[did][0] > 0  # its published audio keeps reaching Janus
                assert b_out > first[did][1] > 0  # the two other feeds keep going out to it
        finally:
            for d in detectors:
                d.stop()
            for c in clients:
                await c.close()
            await _stop_sfu(sfu)

    assert janus.network is not None
    await janus.network.run(scenario, timeout=150)


async def test_refused_tokens_never_reach_janus(janus: Janus) -> None:
    """Expired, forged, other-room and other-subject tokens: 403 + reason, Janus untouched."""

    async def scenario() -> None:
        sfu = await _start_sfu(janus)
        admin = sfu.rooms.admin
        try:
            tokens_before = set(await admin.list_tokens())
            sessions_before = set(await admin.list_sessions())
            mallory, alice = KeyPair.generate(), KeyPair.generate()
            now = int(time.time())
            forger = KeyPair.generate()  # signs exactly like the issuer, but is not trusted
            cases = {
                "expired": (sfu.token(mallory.did, ttl=60, now=now - 120), "policy.blocked"),
                "forged": (
                    issue_access_token(forger, subject=mallory.did, room=ROOM, now=now),
                    "policy.trust-insufficient",
                ),
                "other-room": (sfu.token(mallory.did, room="elsewhere"), "policy.blocked"),
                "other-subject": (sfu.token(alice.did), "policy.blocked"),
            }
            for name, (token, reason) in cases.items():
                with pytest.raises(SfuRefusedError) as info:
                    await sfu.join(mallory, token)
                assert (name, info.value.status, info.value.reason) == (name, 403, reason)
            assert set(await admin.list_tokens()) == tokens_before
            assert set(await admin.list_sessions()) == sessions_before
            assert sfu.service.refused == len(cases)
        finally:
            await _stop_sfu(sfu)

    assert janus.network is not None
    await janus.network.run(scenario, timeout=60)


async def test_janus_enforces_the_grant_room_and_token(janus: Janus) -> None:
    """A grant for one room cannot join another; unknown or revoked tokens get no session."""

    async def scenario() -> None:
        sfu = await _start_sfu(janus)
        key, other = KeyPair.generate(), KeyPair.generate()
        try:
            await sfu.join(other, sfu.token(other.did))  # ROOM exists, with an ACL
            grant = await sfu.join(key, sfu.token(key.did, room="side-room"), "side-room")
            session = await JanusSession(janus.url, grant.token).create()
            try:
                handle = await session.attach(VIDEOROOM)
                with pytest.raises(JanusError) as info:
                    await handle.request(
                        {
                            "request": "join",
                            "ptype": "publisher",
                            "room": ROOM,
                            "token": grant.token,
                        }
                    )
                # JANUS_VIDEOROOM_ERROR_UNAUTHORIZED: the token is not in ROOM's ACL
                assert (info.value.janus_code, info.value.reason) == (433, "policy.blocked")
            finally:
                await session.destroy()
            with pytest.raises(JanusError) as no_token:
                await JanusSession(janus.url, "not-a-minted-token").create()
            assert no_token.value.janus_code == 403
            await sfu.rooms.revoke(grant.token)
            assert grant.token not in await sfu.rooms.admin.list_tokens()
            with pytest.raises(JanusError) as revoked:
                await JanusSession(janus.url, grant.token).create()
            assert revoked.value.janus_code == 403
        finally:
            await _stop_sfu(sfu)

    assert janus.network is not None
    await janus.network.run(scenario, timeout=60)


async def test_expired_grant_is_swept_and_its_participant_kicked(janus: Janus) -> None:
    async def scenario() -> None:
        sfu = await _start_sfu(janus)
        key = KeyPair.generate()
        client: SfuGroupClient | None = None
        try:
            grant = await sfu.join(key, sfu.token(key.did, room="short", ttl=30), "short")
            client = await SfuGroupClient(grant, audio=ToneTrack(800.0)).join()
            await client.wait_published()
            assert await sfu.rooms.expire(int(time.time())) == []  # not yet
            gone = await sfu.rooms.expire(grant.expires_at)
            assert [g.did for g in gone] == [key.did]
            assert grant.token not in await sfu.rooms.admin.list_tokens()
            listed = await sfu.rooms.admin.message_plugin(
                VIDEOROOM, {"request": "listparticipants", "room": "short"}
            )
            assert listed["participants"] == []
        finally:
            if client is not None:
                await client.close()
            await _stop_sfu(sfu)

    assert janus.network is not None
    await janus.network.run(scenario, timeout=60)


async def test_video_is_forwarded_too(janus: Janus) -> None:
    """Publishing audio + VP8 video: the other participant receives both, decodable."""

    async def scenario() -> None:
        sfu = await _start_sfu(janus)
        keys = [KeyPair.generate(), KeyPair.generate()]
        clients: list[SfuGroupClient] = []
        try:
            for key, tone in zip(keys, (500.0, 900.0), strict=True):
                grant = await sfu.join(key, sfu.token(key.did, room="video"), "video")
                clients.append(
                    SfuGroupClient(grant, audio=ToneTrack(tone), video=VideoStreamTrack())
                )
            await asyncio.gather(*(c.join() for c in clients))
            for client in clients:
                (video,) = (await client.wait_for_tracks(1, kind="video", timeout=20)).values()
                async with asyncio.timeout(15):
                    frame = await video.recv()
                assert isinstance(frame, VideoFrame)
                assert (frame.width, frame.height) == (640, 480)  # decoded VP8 at the far end
        finally:
            for c in clients:
                await c.close()
            await _stop_sfu(sfu)

    assert janus.network is not None
    await janus.network.run(scenario, timeout=90)


async def test_metered_sfu_grant_is_cut_when_the_balance_is_spent(janus: Janus) -> None:
    """A metering/1.0 token with 3 s of balance: the participant is kicked ~3 s after joining,
    and a signed usage record says so."""
    from dsip.core.envelope import Verifier
    from dsip.core.metering import issue_access_token as issue_metered
    from dsip.services.sfu import metering_access_verifier
    from dsip.services.sfu_metering import MeteredRooms

    async def scenario() -> None:
        issuer = KeyPair.generate()
        admitter = JoinAdmitter(
            audience=AUDIENCE,
            verify_token=metering_access_verifier(trusted_issuers=frozenset({issuer.did})),
        )
        rooms = MeteredRooms(
            janus.admin(),
            janus_url=janus.url,
            room_admin_key=janus.room_admin_key,
            signer=issuer,
            interval=0.5,
            throttle_window=1,
        )
        service = await SfuJoinService(admitter, rooms).start()
        key = KeyPair.generate()
        now = int(time.time())
        token = issue_metered(
            issuer,
            subject=key.did,
            balance_msat=3000,
            msat_per_second=1000,
            now=now,
            audience=("sfu",),
            room=ROOM,
        )
        client = None
        try:
            grant = await request_join(
                service.url, key, access_token=token, room=ROOM, audience=AUDIENCE
            )
            joined = time.monotonic()
            client = SfuGroupClient(grant, audio=ToneTrack(800.0))
            await client.join()
            for _ in range(100):
                if grant.token not in rooms.metered:
                    break
                await asyncio.sleep(0.1)
            elapsed = time.monotonic() - joined
            assert grant.token not in rooms.metered
            assert 2.0 <= elapsed <= 3.0 + 0.5 + 1.5  # 3 s of balance, ± one interval and a tick
            final = Verifier().verify(rooms.records[-1], now=int(time.time()))
            assert (final.payload["state"], final.payload["service"], final.payload["to"]) == (
                "cut",
                "sfu",
                key.did,
            )
            assert grant.token not in rooms.grants  # the Janus token is gone from the room ACL
        finally:
            if client is not None:
                await client.close()
            await rooms.close_metering()
            await service.stop()
            await rooms.admin.aclose()

    assert janus.network is not None
    await janus.network.run(scenario, timeout=90)
