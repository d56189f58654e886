"""Connection binding with ``hello`` (§13.2), shared by clients and relays.

The client's hello names the device (``from``) and, for a delegated device, the identity it
speaks for (``on_behalf_of``), with the delegation in the protected header. The relay
answers with its own signed hello whose ``in_reply_to`` is the client hello's id — the
anti-splicing binding (§20.5) the verifier checks through ``SemanticContext.sent_hello_id``
— and whose ``capabilities.max_envelope_bytes`` is the binding constant.

Extensions negotiated here (listed in each side's ``dsip.extensions``, never critical):

* ``cose-envelope/1.0`` — binary frames carry DSIP-COSE envelopes;
* ``store-and-forward/1.0`` — the client acknowledges custody with ``ack`` messages and the
  relay deletes stored envelopes only then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dsip.core.envelope import make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.core.version import CORE_VERSION
from dsip.transport.base import MAX_FRAME_BYTES

__all__ = [
    "ACK_EXTENSION",
    "client_hello",
    "extensions_of",
    "relay_hello",
]

ACK_EXTENSION = "store-and-forward/1.0"
HELLO_TTL = 30


def _block(extensions: Sequence[str]) -> dict[str, Any]:
    return {
        "core": CORE_VERSION,
        "min_core": CORE_VERSION,
        "profiles": [],
        "extensions": sorted(extensions),
        "critical": [],
    }


def client_hello(
    device: KeyPair,
    *,
    now: int,
    identity: str | None = None,
    delegations: Sequence[Mapping[str, str]] = (),
    extensions: Sequence[str] = (ACK_EXTENSION,),
    bindings: Sequence[str] = ("ws/1.0",),
    access_token: str | None = None,
) -> tuple[dict[str, Any], str]:
    """(payload, frame) of a client hello for ``device``, optionally on behalf of ``identity``."""
    fields: dict[str, Any] = {"bindings": list(bindings)}
    if identity is not None and identity != device.did:
        fields["on_behalf_of"] = identity
    payload = make_payload(
        "hello", sender=device.did, now=now, ttl=HELLO_TTL, profiles=[], **fields
    )
    payload["dsip"] = _block(extensions)
    header = {"access_token": access_token} if access_token else None
    return payload, encode_frame(
        sign_envelope(payload, device, delegations=delegations, extra_header=header)
    )


def relay_hello(
    relay: KeyPair,
    *,
    relay_did: str,
    in_reply_to: str,
    now: int,
    offline_retention_s: int,
    rate_limit: Mapping[str, int],
    extensions: Sequence[str] = (),
    extra_capabilities: Mapping[str, Any] | None = None,
) -> str:
    """The relay's signed answer to a verified client hello (frame). ``extra_capabilities``
    adds members clients that do not know them ignore (§13.2), e.g. ``turn`` credentials."""
    capabilities: dict[str, Any] = {
        "max_envelope_bytes": MAX_FRAME_BYTES,
        "store_and_forward": True,
        "offline_retention_s": offline_retention_s,
        "rate_limit": dict(rate_limit),
        **(extra_capabilities or {}),
    }
    payload = make_payload(
        "hello",
        sender=relay_did,
        now=now,
        ttl=HELLO_TTL,
        profiles=[],
        in_reply_to=in_reply_to,
        capabilities=capabilities,
    )
    payload["dsip"] = _block(extensions)
    return encode_frame(sign_envelope(payload, relay))


def extensions_of(payload: Mapping[str, Any]) -> frozenset[str]:
    block = payload.get("dsip")
    exts = block.get("extensions") if isinstance(block, Mapping) else None
    return (
        frozenset(e for e in exts if isinstance(e, str)) if isinstance(exts, list) else frozenset()
    )
