"""Public warnings to region buckets (beyond the seed; profile emergency/1.0).

A PSAP or authority publishes a warning as a §22.1 publication record — a signed ``publish``
— on a *region stream* ``<authority DID>:alerts:<geohash prefix>`` (the stream namespace
rule keeps it under the authority's DID). The warning itself is the record's one variant,
carried by value as a ``data:application/json;base64,...`` URI (RFC 2397) whose JSON follows
``alert.schema.json`` (region, severity, headline, instruction, issued, expires). The
authority keeps a baseline record (``scheduled``: no warning in force) for each region it
serves, so agents can subscribe before anything happens.

Distribution reuses the subscription machinery (:mod:`dsip.core.subscription`): the
authority runs an ``AuthorityEngine`` with a public policy on its region streams; an agent
subscribes (``events: ["publication"]``) to the streams of the buckets its own coarse
geohash falls in (:func:`region_streams`), and each notify from the engine carries the
signed ``publish`` envelope in its open ``body`` (member ``alert``), so the agent checks the
authority's signature end to end, not the relay's word.

:func:`read_alert` is the agent's check: the ``publish`` verified by the ordinary pipeline,
publisher = signer, publisher an emergency namespace DID or an authority the agent trusts,
stream in the publisher's namespace and naming the same region as the content, content valid
and unexpired, and the agent inside the region bucket.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dsip.core.emergency.errors import ALERT_INVALID, EmergencyError
from dsip.core.emergency.namespaces import is_emergency_did
from dsip.core.envelope import Verified, make_payload
from dsip.core.payloads.schema import validate_named
from dsip.core.ulid import new_ulid, ulid_time_ms
from dsip.errors import DsipError

__all__ = [
    "ALERT_INVALID",
    "Alert",
    "alert_from_notify",
    "alert_payload",
    "alert_stream",
    "baseline_payload",
    "read_alert",
    "region_streams",
]

_DATA_PREFIX: Final = "data:application/json;base64,"
_MAX_ALERT: Final = 4096


def alert_stream(authority: str, region: str) -> str:
    """The region stream of ``authority`` for geohash prefix ``region``."""
    return f"{authority}:alerts:{region}"


def region_streams(
    authority: str, geohash: str, *, levels: Collection[int] = (2, 3, 4)
) -> list[str]:
    """The region streams an agent at ``geohash`` subscribes to (one per bucket level)."""
    return [alert_stream(authority, geohash[:n]) for n in sorted(levels) if len(geohash) >= n]


def _publish(
    authority: str, region: str, *, state: str, title: str, variants: list[dict[str, Any]],
    now: int, ttl: int, after: str | None,
) -> dict[str, Any]:  # fmt: skip
    # §22.1: a record replaces the held one only with a ULID-newer id; two records in the
    # same second would otherwise race on the ULID's random part.
    msg_id = new_ulid(now * 1000)
    if after is not None and msg_id <= after:
        msg_id = new_ulid(ulid_time_ms(after) + 1)
    return make_payload(
        "publish",
        sender=authority,
        now=now,
        ttl=ttl,
        profiles=[],
        publisher=authority,
        stream_id=alert_stream(authority, region),
        state=state,
        title=title,
        variants=variants,
        msg_id=msg_id,
    )


def baseline_payload(
    authority: str, region: str, *, now: int, ttl: int = 86_400, after: str | None = None
) -> dict[str, Any]:
    """The "no warning in force" record of a region stream (``scheduled``)."""
    variant = {
        "id": "alert",
        "media": ["text"],
        "codec": "codec:application/json",
        "transport": "transport:dsip-notify",
        "uri": _DATA_PREFIX + base64.b64encode(b"{}").decode(),
    }
    return _publish(
        authority, region, state="scheduled", title="no warning in force", variants=[variant],
        now=now, ttl=ttl, after=after,
    )  # fmt: skip


def alert_payload(
    authority: str,
    region: str,
    *,
    severity: str,
    headline: str,
    instruction: str = "",
    now: int,
    ttl: int = 3600,
    after: str | None = None,
) -> dict[str, Any]:
    """A warning for ``region`` as a ``publish`` payload, to be signed by the authority;
    ``after``: the id of the record it replaces (the new id is made ULID-newer)."""
    content: dict[str, Any] = {
        "region": region,
        "severity": severity,
        "headline": headline,
        "issued": now,
        "expires": now + ttl,
    }
    if instruction:
        content["instruction"] = instruction
    validate_named("alert", content)
    encoded = base64.b64encode(json.dumps(content, separators=(",", ":")).encode()).decode()
    variant = {
        "id": "alert",
        "media": ["text"],
        "codec": "codec:application/json",
        "transport": "transport:dsip-notify",
        "uri": _DATA_PREFIX + encoded,
    }
    return _publish(
        authority, region, state="live", title=headline[:512], variants=[variant], now=now,
        ttl=ttl, after=after,
    )  # fmt: skip


@dataclass(frozen=True)
class Alert:
    """A verified public warning."""

    authority: str
    publication: str
    region: str
    severity: str
    headline: str
    instruction: str
    issued: int
    expires: int


def _bad(message: str) -> EmergencyError:
    return EmergencyError(message, ALERT_INVALID)


def read_alert(
    publish: Verified,
    *,
    agent_geohash: str,
    now: int,
    trusted_authorities: Collection[str] = (),
) -> Alert | None:
    """Check a verified ``publish`` as a warning for an agent at ``agent_geohash``.

    ``None``: a valid record that is not a warning in force here (a baseline, or another
    bucket). ``x-emergency.alert-invalid``: not from an emergency or trusted authority, not
    signed by its publisher, outside the publisher's namespace, or malformed content.
    """
    payload = publish.payload
    authority = str(payload.get("publisher", ""))
    if publish.type != "publish" or authority != publish.identity:
        raise _bad("not a publication signed by its publisher")
    if not (is_emergency_did(authority) or authority in trusted_authorities):
        raise _bad(f"{authority[:80]} is not an emergency or trusted authority")
    stream = str(payload.get("stream_id", ""))
    prefix = f"{authority}:alerts:"
    if not stream.startswith(prefix):
        raise _bad("stream is not a region stream of the publisher")
    region = stream[len(prefix) :]
    if payload.get("state") != "live":
        return None
    try:
        uri = str(payload["variants"][0]["uri"])
        if not uri.startswith(_DATA_PREFIX) or len(uri) > _MAX_ALERT:
            raise ValueError
        content: Any = json.loads(base64.b64decode(uri[len(_DATA_PREFIX) :], validate=True))
        validate_named("alert", content)
    except (KeyError, IndexError, TypeError, ValueError, DsipError):
        raise _bad("warning content is not a valid alert") from None
    if content["region"] != region:
        raise _bad("warning content names another region than its stream")
    if content["expires"] <= now or not agent_geohash.startswith(region):
        return None
    return Alert(
        authority=authority,
        publication=publish.id,
        region=region,
        severity=str(content["severity"]),
        headline=str(content["headline"]),
        instruction=str(content.get("instruction", "")),
        issued=int(content["issued"]),
        expires=int(content["expires"]),
    )


def alert_from_notify(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The signed ``publish`` envelope a PSAP put in a notify body, if any (unverified)."""
    env = body.get("alert")
    if isinstance(env, Mapping) and set(env) == {"protected", "payload", "signature"}:
        return env
    return None
