"""The SFU join service: admits a DID to a Janus VideoRoom group, then provisions Janus.

**Admission scheme** — one HTTP request, no server-side challenge state (the shape of
DPoP, RFC 9449). ``POST /sfu/join`` with the JSON body::

    {"token": "<access token>", "room": "<room>", "proof": <flattened JWS>}

1. ``token`` — an access token from a trusted issuer. For now an EdDSA JWT (``joserfc``)
   with ``iss`` (a configured issuer), ``sub`` (the participant's DID), ``room`` and
   ``exp``; the metering work will define the final format, so verification is one
   replaceable function (``AccessTokenVerifier``; ``jwt_access_verifier`` is the default).
2. ``proof`` — the caller's proof of control of ``sub``: a DSIP-JOSE-framed JWS (EdDSA,
   ``kid`` = a DID URL of the caller's key, ``typ`` = ``dsip-sfu-join+jws``) over
   ``{"type": "sfu-join", "aud", "room", "ath", "iat", "nonce"}``. ``aud`` pins it to this
   service, ``room`` to the room, ``ath`` (base64url SHA-256 of the token) to this token,
   ``iat`` must be within ±``proof_window`` s of now, and the (DID, nonce) pair is
   remembered for that window. A captured request cannot be replayed, and a stolen token
   is useless without the subject's key. The ``kid`` resolves like an envelope's (did:key
   built in, did:web through the configured ``DocumentSource``).
3. The proof's signer must be the token's ``sub``; the token's ``room`` the requested room.

Refusals carry a DSIP reason token in ``{"reason", "code", "message"}``: **403**
``policy.trust-insufficient`` when the caller's credentials are not trustworthy (forged or
unreadable token, unknown issuer, proof signature/kid invalid); **403** ``policy.blocked``
when they are genuine but do not admit (expired token, other room, other subject, stale or
replayed proof); **400** ``transport.routing-refused`` for a malformed request; **502**
``session.failed`` when Janus fails. Nothing reaches Janus before admission succeeds.

**Provisioning Janus** (``JanusRooms``, Admin API): a fresh random Janus token per
admission, added with ``add_token`` scoped to ``janus.plugin.videoroom`` (Janus runs with
stored-token auth, so nothing else gets a session); the room is created on first use
through ``message_plugin`` with the VideoRoom ``admin_key``, a per-room ``secret``,
``is_private`` and ``require_pvtid`` (only joined participants may subscribe), and an
``allowed`` ACL holding exactly the admitted tokens — a token admitted to one room cannot
join another. Grants expire at the token's ``exp`` (at most ``max_grant_ttl``): the sweeper
removes the token from Janus and from the ACL and kicks its participant.

``JoinAdmitter`` is the sans-I/O part (``now`` is a parameter); ``SfuJoinService`` is the
aiohttp front end (aiohttp, as ``dsip.services.webfinger`` uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import OKPKey
from joserfc.jws import extract_compact

from dsip.core.b64 import b64url_encode
from dsip.core.envelope import ReplayStore
from dsip.core.identity import DocumentSource, KeyPair, is_did, resolve_kid, split_did_url
from dsip.core.jsonwire import loads_strict
from dsip.core.jws import decode_header, parse_envelope, sign_bytes
from dsip.core.metering import AccessToken, verify_access_token
from dsip.errors import DsipError
from dsip.services.janus import VIDEOROOM, HandleUsage, JanusAdmin, JanusError, participant_stats

__all__ = [
    "PROOF_TYP",
    "AccessGrant",
    "AccessTokenVerifier",
    "Admission",
    "AdmissionError",
    "JanusRooms",
    "JoinAdmitter",
    "JoinGrant",
    "Provisioner",
    "SfuJoinService",
    "issue_access_token",
    "join_request",
    "jwt_access_verifier",
    "make_join_proof",
]

logger = logging.getLogger("dsip.sfu")

PROOF_TYP = "dsip-sfu-join+jws"
MAX_BODY = 16_384
MAX_TOKEN = 8_192
ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")
_TRUST = "policy.trust-insufficient"
_BLOCKED = "policy.blocked"
_ROOM_EXISTS = 427  # JANUS_VIDEOROOM_ERROR_ROOM_EXISTS


class AdmissionError(DsipError):
    """The join request was refused; ``status`` is the HTTP status to answer with."""

    default_code = "sfu-join-refused"
    default_reason = _BLOCKED
    default_remote = True

    def __init__(self, message: str, *, status: int = 403, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status

    def as_json(self) -> dict[str, str]:
        return {"reason": self.reason, "code": self.code, "message": self.message}


def _bad_request(message: str, code: str = "request-invalid") -> AdmissionError:
    return AdmissionError(message, status=400, code=code, reason="transport.routing-refused")


def _untrusted(message: str, code: str) -> AdmissionError:
    return AdmissionError(message, code=code, reason=_TRUST)


def _blocked(message: str, code: str) -> AdmissionError:
    return AdmissionError(message, code=code, reason=_BLOCKED)


# --- access tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class AccessGrant:
    """What a verified access token grants: ``subject`` may join ``room`` until ``expires_at``."""

    subject: str
    room: str
    issuer: str
    expires_at: int
    metered: AccessToken | None = None  # a metering/1.0 prepaid token: spend it while joined


AccessTokenVerifier = Callable[[str, int], AccessGrant]
"""``(token, now) -> AccessGrant``; raises ``AdmissionError`` (403, a ``policy.*`` reason)."""


def jwt_access_verifier(
    issuers: Mapping[str, Ed25519PublicKey], *, leeway: int = 0
) -> AccessTokenVerifier:
    """EdDSA JWTs from ``issuers`` (``iss`` → Ed25519 public key), claims sub/room/exp."""
    keys = {iss: OKPKey.import_key(pub) for iss, pub in issuers.items()}

    def verify(token: str, now: int) -> AccessGrant:
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN or not token.isascii():
            raise _untrusted("access token is not a compact JWT", "token-malformed")
        try:
            # Unverified read of ``iss`` only to pick the key; the signature check decides.
            unverified = json.loads(extract_compact(token.encode("ascii")).payload)
        except (JoseError, ValueError, TypeError):
            raise _untrusted("access token is not a compact JWT", "token-malformed") from None
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        key = keys.get(iss) if isinstance(iss, str) else None
        if key is None:
            raise _untrusted("access token issuer is not trusted here", "token-issuer-unknown")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA" per RFC 9864
                claims = jwt.decode(token, key, algorithms=["EdDSA", "Ed25519"]).claims
        except (JoseError, ValueError, TypeError):
            raise _untrusted(
                "access token signature does not verify", "token-signature-invalid"
            ) from None
        sub, room, exp, nbf = (claims.get(k) for k in ("sub", "room", "exp", "nbf"))
        if not is_did(sub) or not isinstance(room, str) or type(exp) is not int:
            raise _untrusted("access token lacks sub (DID), room or exp", "token-claims-invalid")
        if nbf is not None and (type(nbf) is not int or nbf > now + leeway):
            raise _blocked("access token is not valid yet", "token-not-yet-valid")
        if exp <= now - leeway:
            raise _blocked(f"access token expired at {exp}, now {now}", "token-expired")
        return AccessGrant(subject=str(sub), room=room, issuer=str(iss), expires_at=exp)

    return verify


def metering_access_verifier(
    *, documents: DocumentSource | None = None, trusted_issuers: frozenset[str] | None = None
) -> AccessTokenVerifier:
    """Prepaid metering/1.0 tokens (``dsip.core.metering``) with audience ``sfu`` and a
    ``room`` claim: the grant carries the token so ``SfuMetering`` can spend it."""

    def verify(token: str, now: int) -> AccessGrant:
        try:
            t = verify_access_token(
                token, audience="sfu", now=now, documents=documents, trusted_issuers=trusted_issuers
            )
        except DsipError as exc:
            raise AdmissionError(exc.message, code=exc.code, reason=exc.reason) from None
        if t.room is None:
            raise _blocked("an sfu access token must name its room", "token-room")
        return AccessGrant(
            subject=t.subject, room=t.room, issuer=t.issuer, expires_at=t.expires_at, metered=t
        )

    return verify


def issue_access_token(
    issuer: KeyPair, *, subject: str, room: str, now: int, ttl: int = 600
) -> str:
    """An EdDSA access JWT signed by ``issuer`` (``iss`` = its DID); tests and the demo."""
    claims = {"iss": issuer.did, "sub": subject, "room": room, "iat": now, "exp": now + ttl}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(
            {"alg": "EdDSA", "kid": issuer.kid},
            claims,
            OKPKey.import_key(issuer.private_key),
            algorithms=["EdDSA"],
        )


# --- the proof of key possession ---------------------------------------------------------


def token_hash(token: str) -> str:
    return b64url_encode(hashlib.sha256(token.encode("utf-8")).digest())


def make_join_proof(
    key: KeyPair,
    *,
    audience: str,
    room: str,
    access_token: str,
    now: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The flattened JWS proving ``key.did`` asks to join ``room`` at ``audience`` now."""
    payload = {
        "type": "sfu-join",
        "aud": audience,
        "room": room,
        "ath": token_hash(access_token),
        "iat": now,
        "nonce": nonce or secrets.token_urlsafe(18),
    }
    return sign_bytes(json.dumps(payload, separators=(",", ":")).encode(), key, typ=PROOF_TYP)


def join_request(
    key: KeyPair, *, audience: str, room: str, access_token: str, now: int
) -> dict[str, Any]:
    """The ``POST /sfu/join`` body."""
    proof = make_join_proof(key, audience=audience, room=room, access_token=access_token, now=now)
    return {"token": access_token, "room": room, "proof": proof}


@dataclass(frozen=True)
class Admission:
    """A DID the admitter let into ``room`` until ``expires_at``."""

    did: str
    room: str
    expires_at: int
    issuer: str
    metered: AccessToken | None = None


class JoinAdmitter:
    """Sans-I/O admission: request bytes + ``now`` in, ``Admission`` or ``AdmissionError`` out."""

    def __init__(
        self,
        *,
        audience: str,
        verify_token: AccessTokenVerifier,
        documents: DocumentSource | None = None,
        proof_window: int = 60,
        max_grant_ttl: int = 3600,
    ) -> None:
        self.audience = audience
        self.verify_token = verify_token
        self.documents = documents
        self.proof_window = proof_window
        self.max_grant_ttl = max_grant_ttl
        self.nonces = ReplayStore(capacity=65_536, window=proof_window)

    def admit(self, body: bytes, *, now: int) -> Admission:
        request = self._parse(body)
        token, room, proof = request["token"], request["room"], request["proof"]
        try:
            grant = self.verify_token(token, now)
        except AdmissionError:
            raise
        except DsipError as exc:  # a replacement verifier's own errors keep their reason
            raise AdmissionError(exc.message, code=exc.code, reason=exc.reason) from None
        if grant.room != room:
            raise _blocked(f"the access token is for another room, not {room!r}", "token-room")
        signer, nonce, iat = self._verify_proof(proof, room=room, token=token, now=now)
        if signer != grant.subject:
            raise _blocked("the proof is not signed by the token's subject", "token-subject")
        replay_key = f"{signer} {nonce}"
        try:
            self.nonces.check(replay_key, now)
        except DsipError as exc:
            if exc.code == "duplicate-id":
                raise _blocked("this proof was already used", "proof-replayed") from None
            raise AdmissionError(exc.message, code=exc.code, reason=exc.reason) from None
        # Remember the nonce as long as its iat keeps the proof acceptable (iat + window);
        # nothing is remembered for a refused request.
        self.nonces.add(replay_key, max(iat, now))
        expires = min(grant.expires_at, now + self.max_grant_ttl)
        return Admission(
            did=signer, room=room, expires_at=expires, issuer=grant.issuer, metered=grant.metered
        )

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any]:
        if len(body) > MAX_BODY:
            raise _bad_request(f"request body over {MAX_BODY} bytes", "request-too-large")
        try:
            request, _ = loads_strict(body, what="request")
        except DsipError:
            raise _bad_request("request body is not UTF-8 JSON") from None
        if not isinstance(request, dict):
            raise _bad_request("request body is not a JSON object")
        token, room, proof = request.get("token"), request.get("room"), request.get("proof")
        if not isinstance(token, str) or not token:
            raise _bad_request("request lacks the access token", "request-token-missing")
        if not isinstance(room, str) or not ROOM_RE.fullmatch(room):
            raise _bad_request("request lacks a valid room id", "request-room-invalid")
        if not isinstance(proof, dict):
            raise _bad_request("request lacks the proof JWS object", "request-proof-missing")
        return request

    def _verify_proof(
        self, proof: Mapping[str, Any], *, room: str, token: str, now: int
    ) -> tuple[str, str, int]:
        """(signer DID, nonce, iat) of a valid proof for this request."""
        try:
            raw = parse_envelope(proof)
            header = decode_header(raw)
            kid = header["kid"]
            signer, _ = split_did_url(kid)
            method = resolve_kid(kid, self.documents)
        except DsipError as exc:
            raise _untrusted(f"proof: {exc.message}", "proof-invalid") from None
        if header.get("typ") != PROOF_TYP:
            raise _untrusted(f"proof typ is not {PROOF_TYP}", "proof-invalid")
        if not method.verify(raw.signature_bytes, raw.signing_input):
            raise _untrusted("proof signature does not verify", "proof-signature-invalid")
        try:
            claims, saw_float = loads_strict(raw.payload_bytes, what="proof payload")
        except DsipError:
            raise _untrusted("proof payload is not JSON", "proof-invalid") from None
        if not isinstance(claims, dict) or saw_float or claims.get("type") != "sfu-join":
            raise _untrusted("proof payload is not an sfu-join claim set", "proof-invalid")
        iat, nonce = claims.get("iat"), claims.get("nonce")
        if claims.get("aud") != self.audience:
            raise _blocked("proof is for another service", "proof-audience")
        if claims.get("room") != room:
            raise _blocked("proof is for another room", "proof-room")
        if claims.get("ath") != token_hash(token):
            raise _blocked("proof is bound to another access token", "proof-token")
        if not isinstance(nonce, str) or not NONCE_RE.fullmatch(nonce):
            raise _untrusted("proof nonce is missing or malformed", "proof-invalid")
        if type(iat) is not int or abs(iat - now) > self.proof_window:
            raise _blocked(f"proof iat is outside now ± {self.proof_window} s", "proof-stale")
        return signer, nonce, iat


# --- provisioning Janus ------------------------------------------------------------------


@dataclass(frozen=True)
class JoinGrant:
    """What an admitted participant gets: where Janus is and the token to use there."""

    did: str
    room: str
    janus_url: str
    token: str
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "janus_url": self.janus_url,
            "token": self.token,
            "room": self.room,
            "expires_at": self.expires_at,
        }


class Provisioner(Protocol):
    """What the HTTP front end needs from the SFU side (``JanusRooms``; a stub in tests)."""

    async def provision(self, admission: Admission) -> JoinGrant: ...

    async def expire(self, now: int) -> list[JoinGrant]: ...


@dataclass
class _Room:
    secret: str
    tokens: set[str] = field(default_factory=set)


class JanusRooms:
    """Turns admissions into Janus state through the Admin API (tokens, rooms, ACLs)."""

    def __init__(
        self,
        admin: JanusAdmin,
        *,
        janus_url: str,
        room_admin_key: str,
        max_publishers: int = 16,
    ) -> None:
        self.admin = admin
        self.janus_url = janus_url
        self.room_admin_key = room_admin_key
        self.max_publishers = max_publishers
        self.grants: dict[str, JoinGrant] = {}  # Janus token → grant
        self._rooms: dict[str, _Room] = {}
        self._lock = asyncio.Lock()

    async def provision(self, admission: Admission) -> JoinGrant:
        token = secrets.token_urlsafe(24)
        async with self._lock:
            await self.admin.add_token(token, (VIDEOROOM,))
            try:
                await self._allow(admission.room, token)
            except BaseException:
                with contextlib.suppress(JanusError):
                    await self.admin.remove_token(token)
                raise
            grant = JoinGrant(
                did=admission.did,
                room=admission.room,
                janus_url=self.janus_url,
                token=token,
                expires_at=admission.expires_at,
            )
            self.grants[token] = grant
        logger.info("sfu grant", extra={"did": grant.did, "room": grant.room})
        return grant

    def room_secret(self, room_id: str) -> str:
        """The room's VideoRoom ``secret``: derived from the ``admin_key``, so any instance of
        this service (or a restarted one) can manage rooms an earlier one created."""
        mac = hmac.new(self.room_admin_key.encode(), f"dsip-sfu-room:{room_id}".encode(), "sha256")
        return b64url_encode(mac.digest())

    async def _allow(self, room_id: str, token: str) -> None:
        room = self._rooms.get(room_id)
        if room is None:
            room = _Room(secret=self.room_secret(room_id))
            try:
                await self.admin.message_plugin(
                    VIDEOROOM,
                    {
                        "request": "create",
                        "room": room_id,
                        "admin_key": self.room_admin_key,
                        "secret": room.secret,
                        "description": f"dsip group {room_id}",
                        "is_private": True,
                        "require_pvtid": True,
                        "publishers": self.max_publishers,
                        "audiocodec": "opus",
                        "videocodec": "vp8",
                        "allowed": [token],
                    },
                )
                created = True
            except JanusError as exc:
                if exc.janus_code != _ROOM_EXISTS:
                    raise
                created = False
            self._rooms[room_id] = room
            if created:
                room.tokens.add(token)
                return
        await self.admin.message_plugin(
            VIDEOROOM,
            {
                "request": "allowed",
                "room": room_id,
                "secret": room.secret,
                "action": "add",
                "allowed": [token],
            },
        )
        room.tokens.add(token)

    async def revoke(self, token: str) -> None:
        """Take a grant back: token out of Janus and the room ACL, its participants kicked."""
        async with self._lock:
            grant = self.grants.pop(token, None)
            if grant is None:
                return
            room = self._rooms.get(grant.room)
            with contextlib.suppress(JanusError):
                await self.admin.remove_token(token)
            if room is None:
                return
            room.tokens.discard(token)
            with contextlib.suppress(JanusError):
                await self.admin.message_plugin(
                    VIDEOROOM,
                    {
                        "request": "allowed",
                        "room": grant.room,
                        "secret": room.secret,
                        "action": "remove",
                        "allowed": [token],
                    },
                )
            with contextlib.suppress(JanusError):
                for usage in await participant_stats(self.admin, tokens=[token]):
                    if usage.role == "publisher" and usage.participant is not None:
                        await self.admin.message_plugin(
                            VIDEOROOM,
                            {
                                "request": "kick",
                                "room": grant.room,
                                "secret": room.secret,
                                "id": usage.participant,
                            },
                        )
        logger.info("sfu grant revoked", extra={"did": grant.did, "room": grant.room})

    async def expire(self, now: int) -> list[JoinGrant]:
        gone = [g for g in self.grants.values() if g.expires_at <= now]
        for grant in gone:
            await self.revoke(grant.token)
        return gone

    async def usage(self, *, room: str | None = None) -> dict[str, tuple[int, int]]:
        """Media bytes (in to Janus, out of Janus) per admitted DID, from Janus' counters."""
        out: dict[str, tuple[int, int]] = {}
        handles: list[HandleUsage] = await participant_stats(
            self.admin, room=room, tokens=list(self.grants)
        )
        for h in handles:
            grant = self.grants.get(h.token or "")
            if grant is None:
                continue
            b_in, b_out = out.get(grant.did, (0, 0))
            out[grant.did] = (b_in + h.bytes_in, b_out + h.bytes_out)
        return out


# --- the HTTP front end ------------------------------------------------------------------


class SfuJoinService:
    """``POST /sfu/join`` on aiohttp: ``JoinAdmitter`` decides, ``JanusRooms`` provisions."""

    def __init__(
        self,
        admitter: JoinAdmitter,
        rooms: Provisioner,
        *,
        clock: Callable[[], int] | None = None,
        sweep_interval: float = 5.0,
    ) -> None:
        self.admitter = admitter
        self.rooms = rooms
        self.clock = clock or (lambda: int(time.time()))
        self.sweep_interval = sweep_interval
        self.refused = 0
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sfu/join"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/sfu/join", self._join)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SfuJoinService:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._sweeper = asyncio.create_task(self._sweep())
        return self

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._runner is not None:
            await self._runner.cleanup()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.rooms.expire(self.clock())
            except JanusError as exc:
                logger.warning("sfu grant sweep failed: %s", exc)

    async def _join(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(_bad_request("request body too large", "request-too-large"))
        now = self.clock()
        try:
            admission = self.admitter.admit(body, now=now)
        except AdmissionError as exc:
            return self._refuse(exc)
        try:
            grant = await self.rooms.provision(admission)
        except JanusError as exc:
            logger.warning("janus provisioning failed: %s", exc)
            return web.json_response(
                {"reason": "session.failed", "code": "janus-failed", "message": "SFU unavailable"},
                status=502,
            )
        return web.json_response(grant.as_json())

    def _refuse(self, exc: AdmissionError) -> web.Response:
        self.refused += 1
        logger.info("sfu join refused: %s", exc)
        return web.json_response(exc.as_json(), status=exc.status)
