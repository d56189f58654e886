"""PIDF-LO (RFC 4119/5491) building, schema validation and hostile XML; NG911 headers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree

from dsip.core.emergency.errors import EmergencyError
from dsip.core.emergency.geo import Tier, VerifiedLocation
from dsip.core.emergency.pidf import NS, build_pidf_lo, ng911_headers, parse_pidf_lo

LOC = VerifiedLocation(
    did="did:key:z6MkCaller",
    lat_e7=427460000,
    lon_e7=-737590000,
    accuracy=5,
    method="gps",
    tier=Tier.GNSS,
    timestamp=1_795_500_000,
    device="did:key:z6MkDevice",
    keystore="file",
    seq=1,
    exp=1_795_500_120,
    alt=72,
)


def test_circle_carries_centre_and_accuracy_radius() -> None:
    doc = build_pidf_lo(LOC, entity=LOC.did, retention_expiry=1_795_503_600)
    root = etree.fromstring(doc)
    circle = root.find(".//gs:Circle", NS)
    assert circle is not None
    assert circle.get("srsName") == "urn:ogc:def:crs:EPSG::4326"
    assert root.findtext(".//gs:Circle/gml:pos", namespaces=NS) == "42.7460000 -73.7590000"
    assert root.findtext(".//gs:radius", namespaces=NS) == "5"
    assert root.findtext(".//gbp:retransmission-allowed", namespaces=NS) == "false"
    assert root.findtext(".//gbp:retention-expiry", namespaces=NS) == "2026-11-24T07:00:00Z"
    parsed = parse_pidf_lo(doc)
    assert (parsed.shape, parsed.lat, parsed.lon, parsed.radius) == (
        "circle",
        Decimal("42.746"),
        Decimal("-73.759"),
        Decimal(5),
    )
    assert parsed.method == "GPS"
    assert parsed.entity == LOC.did


def test_point_is_3d_with_altitude() -> None:
    parsed = parse_pidf_lo(build_pidf_lo(LOC, entity=LOC.did, shape="point"))
    assert (parsed.shape, parsed.alt, parsed.radius) == ("point", Decimal(72), None)
    root = etree.fromstring(build_pidf_lo(LOC, entity=LOC.did, shape="point"))
    point = root.find(".//gml:Point", NS)
    assert point is not None
    assert point.get("srsName") == "urn:ogc:def:crs:EPSG::4979"


def _swap(old: str, new: str) -> bytes:
    return build_pidf_lo(LOC, entity=LOC.did).decode().replace(old, new, 1).encode()


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not xml",
        b"<presence/>",
        _swap("EPSG::4326", "EPSG::3857"),  # not WGS 84
        _swap("42.7460000 -73.7590000", "42.746"),  # one coordinate
        _swap("42.7460000 -73.7590000", "NaN -73.759"),
        _swap("42.7460000 -73.7590000", "91 -73.759"),
        _swap(">5<", ">INF<"),
        _swap(">5<", ">-5<"),
        _swap('uom="urn:ogc:def:uom:EPSG::9001"', 'uom="feet"'),
        _swap("<gp:method>", "<gp:bogus/><gp:method>"),
        _swap('entity="did:key:z6MkCaller"', ""),
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><presence>&a;</presence>',
        b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><x/>',
        b"<a>" * 100_000,
    ],
)
def test_hostile_or_invalid_pidf_lo_is_refused(document: bytes) -> None:
    with pytest.raises(EmergencyError) as err:
        parse_pidf_lo(document)
    assert err.value.reason == "x-emergency.location-invalid"


def test_ng911_headers_reference_the_body_part() -> None:
    assert ng911_headers("loc-1@dsip") == [
        ("Geolocation", "<cid:loc-1@dsip>"),
        ("Geolocation-Routing", "no"),
        ("Resource-Priority", "esnet.1"),
    ]
