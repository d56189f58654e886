"""The caller side of an emergency call (seed §19.2–§19.3; profile emergency/1.0).

:class:`EmergencyCaller` runs the seed's flow on top of an ordinary :class:`CallAgent`:

1. select the region — geofence or user setting (:class:`GeofenceSet`); refuse in limited
   mode (tier-3-only fix);
2. resolve ``did:web:911.<region>`` and check it is an emergency namespace DID;
3. send ``invite`` with ``priority: "emergency"`` and ``emergency``: the dual-signed
   geo-attestation plus the device's certification credentials, HPKE-sealed to the PSAP
   (:func:`~dsip.core.emergency.privacy.seal_precise`, which is where the privacy gate
   refuses any non-emergency DID);
4. wait ``answer_timeout`` seconds for an answer; otherwise cancel and report
   :data:`USE_NATIVE_DIALER` (§19.3) — the CLI turns it into exit status
   :data:`NATIVE_DIALER_EXIT`.

After the call a :class:`CallbackWindow` lets the PSAP's identity past this device's
first-contact policy (§19.4), so the call taker can ring back.

The emergency fields are added as the invite leaves, by :class:`EmergencySignalingClient`
(a :class:`SignalingClient` that knows which invite ids are emergency calls): the seal binds
to the invite id, which exists only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from dsip.agent.calls import Call, CallAgent
from dsip.agent.resolver import DidResolver
from dsip.agent.signaling import SignalingClient
from dsip.core.emergency.alerts import Alert, alert_from_notify, read_alert, region_streams
from dsip.core.emergency.errors import (
    NO_REGION,
    NOT_EMERGENCY_SERVICE,
    EmergencyError,
)
from dsip.core.emergency.geo import (
    DeviceKeyStore,
    Fix,
    attest,
    p256_did_key,
    require_emergency_capable,
)
from dsip.core.emergency.namespaces import GeofenceSet, is_emergency_did, require_emergency_did
from dsip.core.emergency.privacy import PrivacyMode, check_precise_recipient, seal_precise
from dsip.core.emergency.psap_policy import CallbackWindow
from dsip.core.envelope import Verified
from dsip.core.identity import DidDocument, KeyPair
from dsip.core.subscription import SendSubscribe, SubscriberEngine, SubscriptionState
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError

__all__ = [
    "ANSWERED",
    "NATIVE_DIALER_EXIT",
    "USE_NATIVE_DIALER",
    "AlertListener",
    "EmergencyCaller",
    "EmergencyOutcome",
    "EmergencySignalingClient",
    "PinnedHosts",
    "TpmKeyStore",
]

logger = logging.getLogger("dsip.emergency")

ANSWERED: Final = "answered"
USE_NATIVE_DIALER: Final = "use-native-dialer"
NATIVE_DIALER_EXIT: Final = 3  # exit status: DSIP could not reach a PSAP, dial natively


class TpmKeyStore:
    """The device key inside a TPM 2.0 — a real one, or ``swtpm`` (Debian ``swtpm``) for
    tests — through ``tpm2-pytss`` (the TSS2 ESAPI bindings; the ``tpm`` extra, needs
    ``libtss2-dev``). The key is the owner hierarchy's primary ECC P-256 signing key for a
    fixed template: the TPM derives it from its seed, so it is the same key on every start,
    and its private part never leaves the TPM. Signatures are ECDSA-SHA256 over the data,
    hashed here and signed by the TPM (``TPM2_Sign``), returned as 64-byte r||s; objects it
    signs say ``keystore: "tpm"``."""

    keystore = "tpm"

    def __init__(self, tcti: str = "swtpm:host=127.0.0.1,port=2321") -> None:
        from tpm2_pytss import ESAPI, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TCTILdr
        from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT

        name, _, conf = tcti.partition(":")
        self._esapi = ESAPI(TCTILdr(name, conf))
        attrs = (
            TPMA_OBJECT.SIGN_ENCRYPT
            | TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH
        )
        template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attrs)
        self._handle, public, *_ = self._esapi.create_primary(
            TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER
        )
        ecc = public.publicArea.unique.ecc
        self._did = p256_did_key(bytes(ecc.x.buffer), bytes(ecc.y.buffer))

    @property
    def did(self) -> str:
        return self._did

    def sign(self, data: bytes) -> bytes:
        from tpm2_pytss import TPM2B_DIGEST, TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK
        from tpm2_pytss.constants import TPM2_ALG, TPM2_RH, TPM2_ST

        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA)
        scheme.details.any.hashAlg = TPM2_ALG.SHA256
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        digest = TPM2B_DIGEST(hashlib.sha256(data).digest())
        sig = self._esapi.sign(self._handle, digest, scheme, ticket)
        r = bytes(sig.signature.ecdsa.signatureR.buffer).rjust(32, b"\0")
        s = bytes(sig.signature.ecdsa.signatureS.buffer).rjust(32, b"\0")
        return r + s

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._esapi.flush_context(self._handle)
        self._esapi.close()


class PinnedHosts(httpx.AsyncBaseTransport):
    """Resolve chosen host names to fixed addresses, like ``/etc/hosts`` (TLS still checks
    the certificate against the *name*, via SNI). For deployments and tests where
    ``911.us`` is served on loopback."""

    def __init__(self, hosts: Mapping[str, str], *, verify: ssl.SSLContext | bool = True) -> None:
        self.hosts = dict(hosts)
        self._inner = httpx.AsyncHTTPTransport(verify=verify)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.hosts:
            request.url = request.url.copy_with(host=self.hosts[host])
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True)
class _Pending:
    psap: DidDocument
    content: dict[str, Any]


class EmergencySignalingClient(SignalingClient):
    """A signaling client that turns the invites it was told about into emergency invites,
    and hands ``notify`` envelopes to an :class:`AlertListener` when one is attached."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._emergency_to: dict[str, _Pending] = {}  # recipient DID → what to seal
        self.on_notify: Callable[[Verified], None] | None = None
        self.subscriptions: set[str] = set()  # ids of subscribes an AlertListener sent

    async def recv(self, timeout: float | None = None) -> Verified:
        while True:
            v = await super().recv(timeout)
            if self.on_notify is not None and (
                v.type == "notify"
                or (
                    v.type in ("reject", "error")
                    and (v.payload.get("session") or v.payload.get("in_reply_to"))
                    in self.subscriptions
                )
            ):
                self.on_notify(v)
                continue
            return v

    def expect_emergency_invite(self, psap: DidDocument, content: dict[str, Any]) -> None:
        self._emergency_to[psap.id] = _Pending(psap, content)

    async def send(self, payload: Mapping[str, Any]) -> None:
        if payload.get("type") == "invite" and payload.get("to") in self._emergency_to:
            pending = self._emergency_to.pop(str(payload["to"]))
            assert isinstance(payload, dict)
            payload["priority"] = "emergency"
            payload["emergency"] = seal_precise(
                pending.content,
                recipient=pending.psap,
                envelope_id=str(payload["id"]),
                mode=PrivacyMode.EMERGENCY,
            )
        elif "emergency" in payload and not is_emergency_did(payload.get("to")):
            # never let sealed precise content reach a non-emergency DID by another path
            check_precise_recipient(PrivacyMode.EMERGENCY, str(payload.get("to")))
        await super().send(payload)


@dataclass(frozen=True)
class EmergencyOutcome:
    """``kind`` is :data:`ANSWERED` (``call`` is live) or :data:`USE_NATIVE_DIALER`."""

    kind: str
    psap: str | None
    call: Call | None = None
    reason: str | None = None
    events: tuple[str, ...] = field(default=())


class EmergencyCaller:
    """Places emergency calls for one device (identity key + separate device key)."""

    def __init__(
        self,
        agent: CallAgent,
        *,
        identity_key: KeyPair,
        device: DeviceKeyStore,
        resolver: DidResolver,
        credentials: Sequence[Mapping[str, Any]] = (),
        geofences: GeofenceSet | None = None,
        user_setting: str | None = None,
        answer_timeout: float = 20.0,
        callbacks: CallbackWindow | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(agent.client, EmergencySignalingClient):
            raise EmergencyError(
                "EmergencyCaller needs an EmergencySignalingClient",
                NOT_EMERGENCY_SERVICE,
                remote=False,
            )
        self.agent = agent
        self.client: EmergencySignalingClient = agent.client
        self.identity_key = identity_key
        self.device = device
        self.resolver = resolver
        self.credentials = [dict(c) for c in credentials]
        self.geofences = geofences or GeofenceSet()
        self.user_setting = user_setting
        self.answer_timeout = answer_timeout
        self.callbacks = callbacks or CallbackWindow()
        self.clock = clock or agent.clock
        self.seq = 0

    async def call(
        self,
        fix: Fix,
        *,
        media: Sequence[Mapping[str, Any]] | None = None,
        transports: Sequence[Mapping[str, Any]] | None = None,
        psap: str | None = None,
    ) -> EmergencyOutcome:
        """Run §19.2 and return the outcome; never raises for "no PSAP": that is the
        native-dialer outcome with the reason why."""
        try:
            require_emergency_capable(fix)
            if psap is None:
                fence = self.geofences.select(fix.lat, fix.lon, user_setting=self.user_setting)
                if fence is None:
                    return EmergencyOutcome(USE_NATIVE_DIALER, None, reason=NO_REGION)
                psap = fence.psap
            require_emergency_did(psap)
            document = await self.resolver.resolve(psap)
        except DsipError as exc:
            return EmergencyOutcome(USE_NATIVE_DIALER, psap, reason=exc.reason)
        now = int(self.clock())
        self.seq = max(self.seq + 1, now)  # strictly increasing across restarts too
        record = attest(
            fix,
            identity_key=self.identity_key,
            identity=self.agent.client.identity,
            device=self.device,
            seq=self.seq,
            now=now,
        )
        content: dict[str, Any] = {"geo": record}
        if self.credentials:
            content["credentials"] = self.credentials
        self.client.expect_emergency_invite(document, content)
        self.callbacks.open(psap, now=now)
        self.agent.engine.contacts.allow.add(psap)  # callback window (§19.4 bypass)
        call = await self.agent.call(psap, media=media, transports=transports)
        seen: list[str] = []
        try:
            async with asyncio.timeout(self.answer_timeout):
                while True:
                    ev = await call.next_event()
                    seen.append(ev.kind)
                    if ev.kind == "answered":
                        return EmergencyOutcome(ANSWERED, psap, call, events=tuple(seen))
                    if ev.kind in ("ended", "error"):
                        reason = str(ev.fields.get("reason", "session.failed"))
                        return EmergencyOutcome(
                            USE_NATIVE_DIALER, psap, reason=reason, events=tuple(seen)
                        )
        except TimeoutError:
            with contextlib.suppress(DsipError):
                await call.cancel()
            logger.warning(
                "no PSAP answered within %ss: use the native dialer", self.answer_timeout
            )
            return EmergencyOutcome(
                USE_NATIVE_DIALER, psap, reason="session.timeout", events=tuple(seen)
            )

    def expire_callbacks(self) -> list[str]:
        """Close callback windows that ran out (the PSAP needs first contact again)."""
        gone = self.callbacks.expire(now=int(self.clock()))
        for did in gone:
            self.agent.engine.contacts.allow.discard(did)
        return gone


class AlertListener:
    """Receives public warnings for the agent's region buckets (profile emergency/1.0).

    Subscribes, at an authority, to the region streams its coarse geohash falls in (normal
    privacy mode: at most 6 characters ever leave the device, here only the prefixes the
    stream names carry), and queues each verified warning in force here on :attr:`alerts`.
    The signed ``publish`` inside each notify is verified end to end with the client's
    verifier; anything that fails is logged and dropped.
    """

    def __init__(
        self,
        client: EmergencySignalingClient,
        *,
        geohash: str,
        trusted_authorities: Sequence[str] = (),
        lifetime: int = 3600,
    ) -> None:
        self.client = client
        self.geohash = geohash[:6]
        self.trusted = tuple(trusted_authorities)
        self.lifetime = lifetime
        self.engine = SubscriberEngine()
        self.alerts: asyncio.Queue[Alert] = asyncio.Queue()
        self.refused: list[str] = []
        client.on_notify = self._on_notify

    async def subscribe(self, authority: str) -> list[str]:
        """Subscribe to ``authority``'s streams for this agent's buckets; returns their ids."""
        now = int(self.client.clock())
        ids = []
        for stream in region_streams(authority, self.geohash):
            sub_id = new_ulid(int(self.client.clock() * 1000))
            for em in self.engine.subscribe(
                sub_id, authority, stream, ["publication"], self.lifetime, now=now
            ):
                if isinstance(em, SendSubscribe):
                    fields = em.to_payload_fields()
                    fields.pop("type")
                    fields.pop("id", None)
                    payload = self.client.build("subscribe", **fields)
                    payload["id"] = sub_id
                    self.client.subscriptions.add(sub_id)
                    await self.client.send(payload)
            ids.append(sub_id)
        return ids

    async def wait_settled(self, timeout: float = 10.0) -> dict[str, str]:
        """Wait until the authority answered every subscription (admitted or refused);
        returns stream → state (``active``, or how it ended)."""
        async with asyncio.timeout(timeout):
            while True:
                views = self.engine.views()
                if all(v.state is not SubscriptionState.PENDING for v in views.values()):
                    return {v.target: str(v.state) for v in views.values()}
                await asyncio.sleep(0.02)

    def _on_notify(self, v: Verified) -> None:
        now = int(self.client.clock())
        self.engine.receive({**v.payload, "from": v.signer}, now=now)
        body = v.payload.get("body")
        envelope = alert_from_notify(body) if isinstance(body, Mapping) else None
        if envelope is None:
            return
        try:
            publish = self.client.verifier.verify(dict(envelope), now=now)
            alert = read_alert(
                publish,
                agent_geohash=self.geohash,
                now=now,
                trusted_authorities=self.trusted,
            )
        except DsipError as exc:
            if exc.code != "duplicate-id":
                self.refused.append(exc.reason)
                logger.info("warning refused: %s", exc)
            return
        if alert is not None:
            self.alerts.put_nowait(alert)
