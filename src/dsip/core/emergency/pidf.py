"""PIDF-LO location by value and the NG911 SIP headers (seed §16, §19.3; RFC 4119, 5491, 6442).

When an emergency call leaves DSIP through the SIP gateway toward an ESInet, the verified
location travels *by value*: a PIDF-LO document (``application/pidf+xml``, RFC 4119) in a
``multipart/mixed`` INVITE body next to the SDP, referenced by a ``Geolocation:
<cid:...>`` header (RFC 6442), with ``Geolocation-Routing: no`` and a ``Resource-Priority``
in the ``esnet`` namespace (RFC 7135).

Shapes are the RFC 5491 ones for a device fix: a ``gs:Circle`` (EPSG 4326 centre, radius =
the fix's accuracy in metres) when the accuracy is known, else a ``gml:Point`` (EPSG 4326, or
EPSG 4979 with altitude). Numbers are written from the attestation's integer 1e-7-degree
values, so nothing is lost to float formatting.

XML is built and parsed with ``lxml``; :func:`parse_pidf_lo` validates against the XML
Schemas in ``xsd/`` (written for dsip from the RFC text: PIDF as PIDF-LO uses it, the
GEOPRIV object, its basic policy, the GML Point subset and the PIDF-LO Circle). The parser
refuses DTDs, entities and network access, so hostile XML cannot expand or fetch anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Final

from lxml import etree

from dsip.core.emergency.errors import LOCATION_INVALID, EmergencyError
from dsip.core.emergency.geo import VerifiedLocation

__all__ = [
    "CONTENT_TYPE",
    "NS",
    "PidfLocation",
    "build_pidf_lo",
    "ng911_headers",
    "parse_pidf_lo",
]

CONTENT_TYPE: Final = "application/pidf+xml"
NS: Final = {
    "pidf": "urn:ietf:params:xml:ns:pidf",
    "gp": "urn:ietf:params:xml:ns:pidf:geopriv10",
    "gbp": "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy",
    "gml": "http://www.opengis.net/gml",
    "gs": "http://www.opengis.net/pidflo/1.0",
}
EPSG_2D: Final = "urn:ogc:def:crs:EPSG::4326"
EPSG_3D: Final = "urn:ogc:def:crs:EPSG::4979"
METRE: Final = "urn:ogc:def:uom:EPSG::9001"
MAX_PIDF_BYTES: Final = 64 * 1024
_METHODS: Final = {"gps": "GPS", "gnss": "GPS", "wifi": "Wiremap", "cell": "Cell", "ip": "DHCP"}

_schema: list[etree.XMLSchema] = []


def _xsd() -> etree.XMLSchema:
    if not _schema:
        root = resources.files("dsip.core.emergency").joinpath("xsd")
        with resources.as_file(root) as folder:
            doc = etree.parse(str(folder / "pidf.xsd"), _parser())
            _schema.append(etree.XMLSchema(doc))
    return _schema[0]


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, dtd_validation=False, load_dtd=False,
        huge_tree=False, remove_comments=True,
    )  # fmt: skip


def _e7(value: int) -> str:
    return str((Decimal(value) / Decimal(10_000_000)).quantize(Decimal("0.0000001")))


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_pidf_lo(
    location: VerifiedLocation,
    *,
    entity: str,
    shape: str = "circle",
    retention_expiry: int | None = None,
    note_well: str | None = None,
) -> bytes:
    """A PIDF-LO document (UTF-8 bytes) for a verified location; ``shape`` is ``circle``
    (centre + accuracy radius) or ``point``. Retransmission is never allowed (RFC 4119
    §2.2.2 default for emergency use is the recipient's policy; we say no explicitly)."""
    if shape not in ("circle", "point"):
        raise EmergencyError(f"unknown PIDF-LO shape {shape!r}", LOCATION_INVALID, remote=False)
    nsmap: dict[str | None, str] = {None: NS["pidf"]}
    nsmap.update({k: v for k, v in NS.items() if k != "pidf"})
    presence = etree.Element(_q("pidf", "presence"), nsmap=nsmap, entity=entity)
    tup = etree.SubElement(presence, _q("pidf", "tuple"), id="dsip-location")
    status = etree.SubElement(tup, _q("pidf", "status"))
    geopriv = etree.SubElement(status, _q("gp", "geopriv"))
    info = etree.SubElement(geopriv, _q("gp", "location-info"))
    lat, lon = _e7(location.lat_e7), _e7(location.lon_e7)
    if shape == "circle":
        circle = etree.SubElement(info, _q("gs", "Circle"), srsName=EPSG_2D)
        etree.SubElement(circle, _q("gml", "pos")).text = f"{lat} {lon}"
        radius = etree.SubElement(circle, _q("gs", "radius"), uom=METRE)
        radius.text = str(location.accuracy)
    elif location.alt is not None:
        point = etree.SubElement(info, _q("gml", "Point"), srsName=EPSG_3D)
        etree.SubElement(point, _q("gml", "pos")).text = f"{lat} {lon} {location.alt}"
    else:
        point = etree.SubElement(info, _q("gml", "Point"), srsName=EPSG_2D)
        etree.SubElement(point, _q("gml", "pos")).text = f"{lat} {lon}"
    rules = etree.SubElement(geopriv, _q("gp", "usage-rules"))
    etree.SubElement(rules, _q("gbp", "retransmission-allowed")).text = "false"
    if retention_expiry is not None:
        etree.SubElement(rules, _q("gbp", "retention-expiry")).text = _iso(retention_expiry)
    if note_well:
        etree.SubElement(rules, _q("gbp", "note-well")).text = note_well[:500]
    etree.SubElement(geopriv, _q("gp", "method")).text = _METHODS.get(location.method, "Manual")
    etree.SubElement(tup, _q("pidf", "timestamp")).text = _iso(location.timestamp)
    out: bytes = etree.tostring(presence, xml_declaration=True, encoding="UTF-8")
    return out


@dataclass(frozen=True)
class PidfLocation:
    """What an ESInet reads from a PIDF-LO."""

    entity: str
    shape: str  # "circle" | "point"
    lat: Decimal
    lon: Decimal
    alt: Decimal | None
    radius: Decimal | None
    method: str | None


def parse_pidf_lo(document: bytes) -> PidfLocation:
    """Parse and schema-validate a PIDF-LO; ``x-emergency.location-invalid`` otherwise."""
    if not isinstance(document, bytes) or len(document) > MAX_PIDF_BYTES:
        raise EmergencyError("PIDF-LO is not bytes or too large", LOCATION_INVALID)
    if b"<!DOCTYPE" in document or b"<!ENTITY" in document:
        raise EmergencyError("PIDF-LO with a DTD is refused", LOCATION_INVALID)
    try:
        root = etree.fromstring(document, _parser())
    except etree.XMLSyntaxError as exc:
        raise EmergencyError(f"PIDF-LO is not XML: {str(exc)[:120]}", LOCATION_INVALID) from None
    schema = _xsd()
    if not schema.validate(root):
        err = schema.error_log.last_error
        detail = f"line {err.line}: {err.message[:160]}" if err is not None else "invalid"
        raise EmergencyError(f"PIDF-LO fails its schema: {detail}", LOCATION_INVALID)
    pos = root.find(".//gml:pos", NS)
    radius_el = root.find(".//gs:radius", NS)
    try:  # the schema guarantees a pos of 2–3 xs:double; xs:double admits NaN and INF
        assert pos is not None
        assert pos.text is not None
        numbers = [Decimal(x) for x in pos.text.split()]
        radius = Decimal(radius_el.text or "") if radius_el is not None else None
    except (AssertionError, ArithmeticError, ValueError):
        raise EmergencyError("PIDF-LO numbers do not parse", LOCATION_INVALID) from None
    lat, lon = numbers[0], numbers[1]
    if not all(n.is_finite() for n in [*numbers, *([radius] if radius is not None else [])]):
        raise EmergencyError("PIDF-LO numbers must be finite", LOCATION_INVALID)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (radius is not None and radius < 0):
        raise EmergencyError("PIDF-LO coordinates out of range", LOCATION_INVALID)
    circle = root.find(".//gs:Circle", NS)
    method = root.find(".//gp:method", NS)
    return PidfLocation(
        entity=str(root.get("entity")),
        shape="circle" if circle is not None else "point",
        lat=lat,
        lon=lon,
        alt=numbers[2] if len(numbers) == 3 else None,
        radius=radius,
        method=method.text if method is not None else None,
    )


def ng911_headers(content_id: str, *, resource_priority: str = "esnet.1") -> list[tuple[str, str]]:
    """The INVITE header fields that go with a PIDF-LO part whose Content-ID is
    ``content_id``: Geolocation by ``cid:`` reference (RFC 6442 §4.1), no routing on it by
    intermediaries, and the emergency resource priority (RFC 7135 ``esnet``)."""
    return [
        ("Geolocation", f"<cid:{content_id}>"),
        ("Geolocation-Routing", "no"),
        ("Resource-Priority", resource_priority),
    ]
