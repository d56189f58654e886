"""Device delegation (§7.4) and key-rotation records (§7.5).

A delegation lets an identity authorize a device key to sign for it.

A delegation is itself a DSIP-JOSE envelope whose payload is::

    {"type": "DeviceDelegation", "subject": IDENTITY, "device": DEVICE_DID,
     "capabilities": ["dsip.signaling", ...], "issued_at": T0, "expires_at": T1}

signed *directly* by a verification key of the subject, as the subject's DID document
lists it now — so a key rotation (§7.5) silently revokes delegations signed by the retired
key. Chains (device → device) are not valid in Core v1.0.

Verdicts (pipeline stage 7), in the order a verifier meets them:

* no presented or stored delegation names (subject, device) → ``signer-mismatch``;
* the ones that do all fail: the most advanced failure wins —
  ``delegation-capability`` > ``delegation-expired`` > ``delegation-invalid``.

Signature checks are cached per delegation (bounded LRU) together with the key that
verified them; a cached entry counts only while the subject's document still lists that key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsip.core.b64 import b64url_decode
from dsip.core.identity import DocumentSource, KeyPair, is_did, resolve_kid, split_did_url
from dsip.core.jsonwire import compact_dumps, loads_strict
from dsip.core.jws import decode_header, parse_envelope, sign_bytes
from dsip.errors import DsipError, EnvelopeError

__all__ = [
    "CAP_MEDIA_INTERACTIVE",
    "CAP_SIGNALING",
    "Delegation",
    "DelegationVerifier",
    "issue_delegation",
    "make_key_rotation",
]

CAP_SIGNALING = "dsip.signaling"
CAP_MEDIA_INTERACTIVE = "dsip.media.interactive"
_RANK = {"delegation-invalid": 0, "delegation-expired": 1, "delegation-capability": 2}


@dataclass(frozen=True, slots=True)
class Delegation:
    subject: str
    device: str
    capabilities: frozenset[str]
    issued_at: int
    expires_at: int
    signer_kid: str
    signer_key: str  # multibase of the key that verified the signature

    def valid_at(self, now: int) -> bool:
        return self.issued_at <= now < self.expires_at


def issue_delegation(
    subject_key: KeyPair,
    device: str,
    *,
    issued_at: int,
    expires_at: int,
    capabilities: Sequence[str] = (CAP_SIGNALING, CAP_MEDIA_INTERACTIVE),
    subject: str | None = None,
) -> dict[str, str]:
    """Sign a delegation of ``device`` by the subject's controller key."""
    if expires_at <= issued_at:
        raise ValueError("delegation must expire after it is issued")
    payload = {
        "type": "DeviceDelegation",
        "subject": subject or subject_key.did,
        "device": device,
        "capabilities": list(capabilities),
        "issued_at": issued_at,
        "expires_at": expires_at,
    }
    return sign_bytes(compact_dumps(payload), subject_key)


def _peek(envelope: Mapping[str, object]) -> tuple[str, str] | None:
    """(subject, device) named by a delegation's payload, without verifying anything."""
    try:
        payload = envelope.get("payload")
        if not isinstance(payload, str):
            return None
        body, _ = loads_strict(b64url_decode(payload))
    except DsipError:
        return None
    if not isinstance(body, dict) or body.get("type") != "DeviceDelegation":
        return None
    subject, device = body.get("subject"), body.get("device")
    if isinstance(subject, str) and isinstance(device, str):
        return subject, device
    return None


class DelegationVerifier:
    """Verifies and caches delegations; resolves subjects through a ``DocumentSource``."""

    def __init__(self, source: DocumentSource | None, *, cache_size: int = 4096) -> None:
        self._source = source
        self._cache: OrderedDict[tuple[str, str, str], Delegation | str] = OrderedDict()
        self._cache_size = cache_size

    def verify(self, envelope: Mapping[str, object]) -> Delegation:
        """Signature and shape of one delegation envelope (time and capability not checked)."""
        key = (
            str(envelope.get("protected")),
            str(envelope.get("payload")),
            str(envelope.get("signature")),
        )
        hit = self._cache.get(key)
        if isinstance(hit, Delegation) and self._still_listed(hit):
            self._cache.move_to_end(key)
            return hit
        if isinstance(hit, str):
            raise EnvelopeError(hit, code="delegation-invalid")
        try:
            d = self._verify_uncached(envelope)
        except DsipError as exc:
            self._remember(key, exc.message)
            raise EnvelopeError(exc.message, code="delegation-invalid") from None
        self._remember(key, d)
        return d

    def _remember(self, key: tuple[str, str, str], value: Delegation | str) -> None:
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _still_listed(self, d: Delegation) -> bool:
        try:
            vm = resolve_kid(d.signer_kid, self._source)
        except DsipError:
            return False
        return vm.public_key_multibase == d.signer_key

    def _verify_uncached(self, envelope: Mapping[str, object]) -> Delegation:
        raw = parse_envelope(envelope)
        header = decode_header(raw)
        kid = header["kid"]
        kid_did, _ = split_did_url(kid)
        body, saw_float = loads_strict(raw.payload_bytes, what="delegation payload")
        if not isinstance(body, dict) or body.get("type") != "DeviceDelegation" or saw_float:
            raise EnvelopeError("not a DeviceDelegation payload", code="delegation-invalid")
        subject, device, caps = body.get("subject"), body.get("device"), body.get("capabilities")
        iat, exp = body.get("issued_at"), body.get("expires_at")
        if not (is_did(subject) and is_did(device)):
            raise EnvelopeError("delegation subject/device are not DIDs", code="delegation-invalid")
        if not (isinstance(caps, list) and all(isinstance(c, str) for c in caps)):
            raise EnvelopeError(
                "delegation capabilities must be a list of strings", code="delegation-invalid"
            )
        if type(iat) is not int or type(exp) is not int:
            raise EnvelopeError("delegation times must be integers", code="delegation-invalid")
        if kid_did != subject:
            raise EnvelopeError(
                f"delegation for {subject} is signed by {kid_did}, not by the subject",
                code="delegation-invalid",
            )
        vm = resolve_kid(kid, self._source)  # raises if the subject's document no longer lists kid
        if not vm.verify(raw.signature_bytes, raw.signing_input):
            raise EnvelopeError("delegation signature does not verify", code="delegation-invalid")
        return Delegation(
            subject=str(subject),
            device=str(device),
            capabilities=frozenset(caps),
            issued_at=iat,
            expires_at=exp,
            signer_kid=kid,
            signer_key=vm.public_key_multibase,
        )

    def bind(
        self,
        device: str,
        identity: str,
        candidates: Iterable[Mapping[str, object]],
        *,
        now: int,
        capability: str = CAP_SIGNALING,
    ) -> Delegation:
        """Find a delegation that lets ``device`` act for ``identity`` at ``now`` (stage 7)."""
        best: EnvelopeError | None = None
        matched = False
        for env in candidates:
            if _peek(env) != (identity, device):
                continue
            matched = True
            try:
                d = self.verify(env)
                if not d.valid_at(now):
                    raise EnvelopeError(
                        f"delegation valid {d.issued_at}..{d.expires_at}, now {now}",
                        code="delegation-expired",
                    )
                if capability not in d.capabilities:
                    raise EnvelopeError(
                        f"delegation lacks {capability}", code="delegation-capability"
                    )
            except EnvelopeError as exc:
                if best is None or _RANK.get(exc.code, 0) > _RANK.get(best.code, 0):
                    best = exc
                continue
            return d
        if not matched:
            raise EnvelopeError(
                f"{device} signed for {identity} without a delegation", code="signer-mismatch"
            )
        assert best is not None
        raise best


def make_key_rotation(
    signer: KeyPair,
    *,
    subject: str,
    previous: str,
    next_key: KeyPair,
    reason: str,
    now: int,
    devices: Sequence[str] = (),
    recovery: bool = False,
    ttl: int = 86_400,
) -> dict[str, str]:
    """The signed ``key-rotation`` record (§7.5) announcing ``previous`` → ``next_key``.

    ``signer`` is the retiring key, or a recovery key of the subject with ``recovery=True``.
    The record is self-contained (it carries the next public key) so that logs and caches
    can act on it before they re-resolve the document.
    """
    from dsip.core.envelope import make_payload, sign_envelope

    fields: dict[str, Any] = {
        "subject": subject,
        "previous": previous,
        "next": next_key.kid,
        "next_public_key_multibase": next_key.public_key_multibase,
        "reason": reason,
        "devices": list(devices),
    }
    if recovery:
        fields["recovery"] = True
    payload = make_payload("key-rotation", sender=subject, now=now, ttl=ttl, profiles=[], **fields)
    return sign_envelope(payload, signer)
