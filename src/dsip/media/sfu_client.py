"""A group-call participant on a Janus VideoRoom SFU, on aiortc over the Janus HTTP API.

Flow (Janus API over HTTP, every request carrying the stored token the dsip SFU join
service minted — ``request_join`` obtains it with the caller's DID key):

1. ``create`` a Janus session; a long-poll ``GET /janus/{session}`` task receives events
   (and keeps the session alive, with an explicit ``keepalive`` every 25 s besides).
2. ``attach`` ``janus.plugin.videoroom``; ``join`` as publisher (the token doubles as the
   room-ACL token); ``configure`` with aiortc's JSEP offer → Janus' answer. aiortc puts
   its candidates in the SDP (no trickle) and Janus sends its own in the answer
   (half-trickle), so no ``trickle`` requests are needed.
3. For every other publisher (in ``joined`` and later ``publishers`` events): a subscriber
   handle, ``join`` as subscriber with our ``private_id`` and that feed → Janus' offer,
   answered by a receive-only aiortc peer connection, then ``start``. Received tracks are
   collected in ``received_tracks`` (feed id → tracks) for ``ToneDetector``.
4. ``close``: ``leave``, ``detach`` every handle, ``destroy`` the session, close the peer
   connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from dsip.core.identity import KeyPair
from dsip.errors import DsipError
from dsip.services.janus import VIDEOROOM, JanusError
from dsip.services.sfu import JoinGrant, join_request

__all__ = [
    "JanusHandle",
    "JanusSession",
    "SfuGroupClient",
    "SfuRefusedError",
    "request_join",
]

logger = logging.getLogger("dsip.sfu.client")


class SfuRefusedError(DsipError):
    """The SFU join service refused us; ``reason`` is its DSIP reason token."""

    default_code = "sfu-join-refused"
    default_reason = "policy.blocked"

    def __init__(self, message: str, *, status: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status


async def request_join(
    service_url: str,
    key: KeyPair,
    *,
    access_token: str,
    room: str,
    audience: str,
    now: int | None = None,
    http: httpx.AsyncClient | None = None,
) -> JoinGrant:
    """``POST /sfu/join`` with a fresh proof; the grant, or ``SfuRefusedError``."""
    body = join_request(
        key,
        audience=audience,
        room=room,
        access_token=access_token,
        now=int(time.time()) if now is None else now,
    )
    client = http or httpx.AsyncClient(timeout=10, trust_env=False)
    try:
        resp = await client.post(service_url, json=body)
    finally:
        if http is None:
            await client.aclose()
    try:
        data = resp.json()
    except ValueError:
        data = {}
    if resp.status_code != 200 or not isinstance(data, dict):
        data = data if isinstance(data, dict) else {}
        raise SfuRefusedError(
            str(data.get("message", f"HTTP {resp.status_code}")),
            status=resp.status_code,
            code=str(data.get("code", "sfu-join-refused")),
            reason=str(data.get("reason", "session.failed")),
        )
    try:
        return JoinGrant(
            did=key.did,
            room=str(data["room"]),
            janus_url=str(data["janus_url"]),
            token=str(data["token"]),
            expires_at=int(data["expires_at"]),
        )
    except (KeyError, TypeError, ValueError):
        raise DsipError("SFU join service answered without a grant") from None


@dataclass
class JanusEvent:
    """A plugin event: the plugin's ``data`` and an optional JSEP."""

    data: dict[str, Any]
    jsep: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False)


def _plugin_event(msg: Mapping[str, Any]) -> JanusEvent:
    plugindata = msg.get("plugindata")
    data = plugindata.get("data") if isinstance(plugindata, Mapping) else None
    data = dict(data) if isinstance(data, Mapping) else {}
    if "error_code" in data or "error" in data:
        code = data.get("error_code")
        raise JanusError(
            f"videoroom: {data.get('error')}",
            janus_code=code if isinstance(code, int) else None,
            reason="policy.blocked" if code in (428, 433) else "session.failed",
        )
    jsep = msg.get("jsep")
    return JanusEvent(data, dict(jsep) if isinstance(jsep, Mapping) else None, dict(msg))


class JanusSession:
    """A Janus API session over HTTP with a long-poll event loop and keepalives."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        request_timeout: float = 10.0,
        keepalive_interval: float = 25.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.request_timeout = request_timeout
        self.keepalive_interval = keepalive_interval
        self.id: int | None = None
        self.handles: dict[int, JanusHandle] = {}
        self._http = httpx.AsyncClient(timeout=request_timeout, trust_env=False)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        msg = {"transaction": secrets.token_hex(8), "token": self.token, **body}
        try:
            resp = await self._http.post(self.url + path, json=msg)
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise JanusError(f"Janus API {body.get('janus')}: {exc}") from None
        if not isinstance(data, dict):
            raise JanusError("Janus API answer is not an object")
        if data.get("janus") == "error":
            err = data.get("error") or {}
            code = err.get("code")
            raise JanusError(
                f"Janus API {body.get('janus')}: {err.get('reason')}",
                janus_code=code if isinstance(code, int) else None,
                reason="policy.blocked" if code == 403 else "session.failed",
            )
        return data

    async def create(self) -> JanusSession:
        try:
            data = await self.post("", {"janus": "create"})
            self.id = int(data["data"]["id"])
        except (JanusError, KeyError, TypeError, ValueError) as exc:
            await self._http.aclose()
            if isinstance(exc, JanusError):
                raise
            raise JanusError("Janus create answered without a session id") from None
        self._tasks = [
            asyncio.create_task(self._poll(), name=f"janus-poll-{self.id}"),
            asyncio.create_task(self._keepalive(), name=f"janus-keepalive-{self.id}"),
        ]
        return self

    async def attach(self, plugin: str = VIDEOROOM, *, opaque_id: str | None = None) -> JanusHandle:
        body: dict[str, Any] = {"janus": "attach", "plugin": plugin}
        if opaque_id:
            body["opaque_id"] = opaque_id
        data = await self.post(f"/{self.id}", body)
        handle = JanusHandle(self, int(data["data"]["id"]))
        self.handles[handle.id] = handle
        return handle

    async def request(
        self,
        handle: JanusHandle,
        body: Mapping[str, Any],
        *,
        jsep: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> JanusEvent:
        """A plugin ``message``: synchronous answers return at once, async ones via the poll."""
        tx = secrets.token_hex(8)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[tx] = fut
        msg: dict[str, Any] = {"janus": "message", "body": dict(body), "transaction": tx}
        if jsep is not None:
            msg["jsep"] = dict(jsep)
        try:
            data = await self.post(f"/{self.id}/{handle.id}", msg)
            if data.get("janus") == "success":
                return _plugin_event(data)
            async with asyncio.timeout(timeout or self.request_timeout):
                return _plugin_event(await fut)
        finally:
            self._pending.pop(tx, None)

    async def _poll(self) -> None:
        params = {"maxev": "10", "token": self.token}
        while True:
            try:
                resp = await self._http.get(
                    f"{self.url}/{self.id}", params=params, timeout=self.request_timeout + 35
                )
                events = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                logger.debug("janus long poll: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                if isinstance(event, dict):
                    self._dispatch(event)
            if isinstance(events, dict) and events.get("janus") == "error":
                return  # the session is gone (destroyed, timed out, token revoked)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind in ("keepalive", "ack"):
            return
        fut = self._pending.get(str(event.get("transaction")))
        if fut is not None and kind == "event" and not fut.done():
            fut.set_result(event)
            return
        sender = event.get("sender")
        handle = self.handles.get(sender) if isinstance(sender, int) else None
        if handle is not None:
            handle.events.put_nowait(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            with contextlib.suppress(JanusError):
                await self.post(f"/{self.id}", {"janus": "keepalive"})

    async def destroy(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.id is not None:
            with contextlib.suppress(JanusError):
                await self.post(f"/{self.id}", {"janus": "destroy"})
        await self._http.aclose()


class JanusHandle:
    """A plugin handle inside a session; unsolicited events land in ``events``."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.id = handle_id
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def request(
        self,
        body: Mapping[str, Any],
        *,
        jsep: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> JanusEvent:
        return await self.session.request(self, body, jsep=jsep, timeout=timeout)

    async def detach(self) -> None:
        self.session.handles.pop(self.id, None)
        with contextlib.suppress(JanusError):
            await self.session.post(f"/{self.session.id}/{self.id}", {"janus": "detach"})


@dataclass
class _Subscription:
    feed: str
    handle: JanusHandle
    pc: RTCPeerConnection


class SfuGroupClient:
    """One participant of a VideoRoom group: publishes its tracks, subscribes to the others."""

    def __init__(
        self,
        grant: JoinGrant,
        *,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        display: str | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self.grant = grant
        self.audio = audio
        self.video = video
        self.display = display or grant.did
        self.session = JanusSession(grant.janus_url, grant.token, request_timeout=request_timeout)
        self.participant_id: str | None = None
        self.private_id: int | None = None
        self.publisher: JanusHandle | None = None
        self.pc = RTCPeerConnection()
        self.feeds: dict[str, str] = {}  # feed id → display
        self.received_tracks: dict[str, list[MediaStreamTrack]] = {}
        self._subs: dict[str, _Subscription] = {}
        self._changed = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected":
                self._connected.set()

    async def join(self, *, timeout: float = 20.0) -> SfuGroupClient:
        """Join the room, publish, subscribe to who is already there; then follow arrivals."""
        async with asyncio.timeout(timeout):
            await self.session.create()
            self.publisher = await self.session.attach(VIDEOROOM, opaque_id=self.grant.did)
            joined = await self.publisher.request(
                {
                    "request": "join",
                    "ptype": "publisher",
                    "room": self.grant.room,
                    "display": self.display,
                    "token": self.grant.token,
                }
            )
            self.participant_id = str(joined.data.get("id"))
            pvt = joined.data.get("private_id")
            self.private_id = pvt if isinstance(pvt, int) else None
            await self._publish()
            await self._on_publishers(joined.data.get("publishers"))
        self._watcher = asyncio.create_task(self._watch(), name=f"sfu-watch-{self.display}")
        return self

    async def _publish(self) -> None:
        assert self.publisher is not None
        for track in (self.audio, self.video):
            if track is not None:
                self.pc.addTrack(track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        answer = await self.publisher.request(
            {
                "request": "configure",
                "audio": self.audio is not None,
                "video": self.video is not None,
            },
            jsep={"type": offer.type, "sdp": offer.sdp},
        )
        if answer.jsep is None:
            raise JanusError("videoroom configure answered without a JSEP answer")
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer.jsep["sdp"], type=answer.jsep["type"])
        )

    def peer_connections(self) -> list[RTCPeerConnection]:
        """The publishing connection first, then one per subscribed feed."""
        return [self.pc, *(sub.pc for sub in self._subs.values())]

    async def wait_published(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def _watch(self) -> None:
        assert self.publisher is not None
        while True:
            event = await self.publisher.events.get()
            data = event.get("plugindata", {}).get("data", {})
            if not isinstance(data, dict):
                continue
            try:
                if "publishers" in data:
                    await self._on_publishers(data["publishers"])
                for key in ("unpublished", "leaving", "kicked"):
                    if key in data and data[key] not in ("ok", None):
                        await self._drop(str(data[key]))
            except (JanusError, TimeoutError) as exc:
                logger.warning("sfu subscription failed: %s", exc)

    async def _on_publishers(self, publishers: object) -> None:
        if not isinstance(publishers, list):
            return
        for pub in publishers:
            if not isinstance(pub, dict):
                continue
            feed = str(pub.get("id"))
            if feed == self.participant_id or feed in self._subs or not pub.get("streams"):
                continue
            self.feeds[feed] = str(pub.get("display", ""))
            await self._subscribe(feed)

    async def _subscribe(self, feed: str) -> None:
        handle = await self.session.attach(VIDEOROOM, opaque_id=self.grant.did)
        pc = RTCPeerConnection()
        self._subs[feed] = _Subscription(feed, handle, pc)
        tracks = self.received_tracks.setdefault(feed, [])

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            tracks.append(track)
            self._changed.set()

        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.grant.room,
            "streams": [{"feed": feed}],
            "token": self.grant.token,
        }
        if self.private_id is not None:
            body["private_id"] = self.private_id
        attached = await handle.request(body)
        if attached.jsep is None:
            raise JanusError(f"videoroom subscription to {feed} came without an offer")
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=attached.jsep["sdp"], type=attached.jsep["type"])
        )
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription
        await handle.request({"request": "start"}, jsep={"type": answer.type, "sdp": answer.sdp})

    async def _drop(self, feed: str) -> None:
        sub = self._subs.pop(feed, None)
        if sub is None:
            return
        await sub.handle.detach()
        await sub.pc.close()

    async def wait_for_tracks(
        self, count: int, *, kind: str = "audio", timeout: float = 15.0
    ) -> dict[str, MediaStreamTrack]:
        """Wait until ``count`` other feeds each delivered a ``kind`` track; feed → track."""
        async with asyncio.timeout(timeout):
            while True:
                found = {
                    feed: t
                    for feed, tracks in self.received_tracks.items()
                    for t in tracks
                    if t.kind == kind
                }
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for feed in list(self._subs):
            with contextlib.suppress(Exception):
                await self._drop(feed)
        if self.publisher is not None:
            with contextlib.suppress(JanusError, TimeoutError):
                await self.publisher.request({"request": "leave"}, timeout=3)
            await self.publisher.detach()
        with contextlib.suppress(Exception):
            await self.pc.close()
        await self.session.destroy()
