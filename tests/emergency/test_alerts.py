"""Public warnings: a PSAP publishes to a region bucket; agents there get a signed alert."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from dsip.agent.emergency import AlertListener, EmergencySignalingClient
from dsip.core.emergency.alerts import alert_payload, baseline_payload, read_alert
from dsip.core.emergency.errors import EmergencyError
from dsip.core.envelope import Verifier, sign_envelope
from dsip.core.identity import KeyPair
from tests.emergency.emfix import World

pytestmark = pytest.mark.timeout(60)
NOW = 1_795_500_000


async def test_agents_in_the_bucket_receive_the_signed_alert(world: World) -> None:
    psap = await world.psap()
    psap.serve_regions(["dr", "dre", "9q"])
    inside, *_ = await world.caller()
    outside, *_ = await world.caller()
    assert isinstance(inside.client, EmergencySignalingClient)
    assert isinstance(outside.client, EmergencySignalingClient)
    albany = AlertListener(inside.client, geohash="dree1t")
    san_francisco = AlertListener(outside.client, geohash="9q8yyk")
    await albany.subscribe(world.psap_did)
    await san_francisco.subscribe(world.psap_did)
    states = await albany.wait_settled()
    assert states[f"{world.psap_did}:alerts:dre"] == "active"  # first notify: the baseline
    assert states[f"{world.psap_did}:alerts:dree"] != "active"  # a bucket not served here
    await san_francisco.wait_settled()
    assert albany.alerts.empty()
    await psap.publish_alert(
        "dre", severity="severe", headline="Flash flood warning", instruction="Move uphill"
    )
    async with asyncio.timeout(5):
        alert = await albany.alerts.get()
    assert (alert.authority, alert.region, alert.severity) == (world.psap_did, "dre", "severe")
    assert alert.headline == "Flash flood warning"
    assert alert.instruction == "Move uphill"
    await asyncio.sleep(0.3)
    assert san_francisco.alerts.empty()  # another bucket: nothing
    assert albany.refused == san_francisco.refused == []


def _verified(key: KeyPair, payload: dict[str, Any]) -> Any:
    return Verifier().verify(sign_envelope(payload, key), now=NOW)


def test_read_alert_rules() -> None:
    authority = KeyPair.generate()  # a did:key authority: only when trusted
    ok = alert_payload(authority.did, "dre", severity="extreme", headline="Evacuate", now=NOW)
    alert = read_alert(
        _verified(authority, ok),
        agent_geohash="dree1t",
        now=NOW,
        trusted_authorities={authority.did},
    )
    assert alert is not None
    assert alert.severity == "extreme"
    # an authority the agent does not trust (not an emergency namespace DID)
    with pytest.raises(EmergencyError) as err:
        read_alert(_verified(authority, ok), agent_geohash="dree1t", now=NOW)
    assert err.value.reason == "x-emergency.alert-invalid"
    trusted = {authority.did}
    # outside the bucket, expired, or a baseline: nothing to show
    assert (
        read_alert(
            _verified(
                authority,
                alert_payload(authority.did, "9q", severity="minor", headline="x", now=NOW),
            ),
            agent_geohash="dree1t",
            now=NOW,
            trusted_authorities=trusted,
        )
        is None
    )
    assert (
        read_alert(
            _verified(
                authority,
                alert_payload(
                    authority.did, "dre", severity="minor", headline="x", now=NOW, ttl=60
                ),
            ),
            agent_geohash="dree1t",
            now=NOW + 60,
            trusted_authorities=trusted,
        )
        is None
    )
    assert (
        read_alert(
            _verified(authority, baseline_payload(authority.did, "dre", now=NOW)),
            agent_geohash="dree1t",
            now=NOW,
            trusted_authorities=trusted,
        )
        is None
    )


def _with_content(base: dict[str, Any], content: Any) -> dict[str, Any]:
    raw = json.dumps(content).encode() if not isinstance(content, bytes) else content
    variant = dict(
        base["variants"][0], uri="data:application/json;base64," + base64.b64encode(raw).decode()
    )
    return dict(base, variants=[variant])


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        {"region": "9q8", "severity": "minor", "headline": "x", "issued": NOW, "expires": NOW + 60},
        {
            "region": "dre",
            "severity": "apocalyptic",
            "headline": "x",
            "issued": NOW,
            "expires": NOW + 60,
        },
        {"region": "dre", "severity": "minor", "headline": "", "issued": NOW, "expires": NOW + 60},
        {"region": "dre"},
        [],
        b"A" * 5000,
    ],
)
def test_hostile_alert_content_is_refused(content: Any) -> None:
    authority = KeyPair.generate()
    base = alert_payload(authority.did, "dre", severity="minor", headline="x", now=NOW)
    with pytest.raises(EmergencyError) as err:
        read_alert(
            _verified(authority, _with_content(base, content)),
            agent_geohash="dree1t",
            now=NOW,
            trusted_authorities={authority.did},
        )
    assert err.value.reason == "x-emergency.alert-invalid"


def test_alert_on_a_stream_outside_the_publisher_namespace_is_refused() -> None:
    authority, other = KeyPair.generate(), KeyPair.generate()
    payload = alert_payload(authority.did, "dre", severity="minor", headline="x", now=NOW)
    payload["stream_id"] = f"{other.did}:alerts:dre"
    with pytest.raises(EmergencyError):
        read_alert(
            _verified(authority, payload),
            agent_geohash="dree1t",
            now=NOW,
            trusted_authorities={authority.did},
        )


def test_a_replacing_record_is_always_ulid_newer() -> None:
    authority = KeyPair.generate()
    base = baseline_payload(authority.did, "dre", now=NOW)
    for _ in range(50):  # same second: the random part alone would lose half the time
        alert = alert_payload(
            authority.did, "dre", severity="minor", headline="x", now=NOW, after=base["id"]
        )
        assert alert["id"] > base["id"]
