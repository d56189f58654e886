"""Emergency DID namespaces and region selection by geofence (seed §19.1, §19.2 step 1).

PSAP operators publish ``did:web:<number>.<region>`` documents — ``did:web:911.us``,
``did:web:112.eu``, ``did:web:999.uk`` — listing their verified endpoints and keys. A DID is
an *emergency namespace DID* when it is a did:web whose host starts with a known emergency
number label followed by at least one more label; a port (``911.us%3A8443``, loopback
deployments and tests) or a path (``did:web:911.us:ny:albany``, one PSAP of the namespace) do
not change that.

Region selection: a client holds geofences — GeoJSON polygons, each naming the PSAP DID that
serves it — and picks the one containing its position (GEOS via ``shapely``: prepared
polygons, exact point-in-polygon, holes and multipolygons handled). A user setting wins
over the geofences (§19.2: "GPS geofence or user setting"); no match and no setting is
:data:`None` — the caller falls back to the native dialer (§19.3).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

import shapely
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from dsip.core.emergency.errors import GEOFENCE_INVALID, NOT_EMERGENCY_SERVICE, EmergencyError
from dsip.core.identity import is_did

__all__ = [
    "EMERGENCY_NUMBERS",
    "Geofence",
    "GeofenceSet",
    "is_emergency_did",
    "require_emergency_did",
]

#: Emergency numbers used as the first host label of an emergency namespace.
EMERGENCY_NUMBERS: Final[frozenset[str]] = frozenset(
    {"911", "112", "999", "000", "110", "111", "119", "100", "101", "102", "108", "117", "190"}
)
_MAX_FEATURES: Final = 1000
_MAX_VERTICES: Final = 200_000


def is_emergency_did(did: object) -> bool:
    """Whether ``did`` names an emergency service (``did:web:911.us``, ``did:web:112.eu``...)."""
    if not isinstance(did, str) or not did.startswith("did:web:") or not is_did(did):
        return False
    host = unquote(did[len("did:web:") :].split(":", 1)[0]).split(":", 1)[0].lower()
    labels = host.split(".")
    return len(labels) >= 2 and labels[0] in EMERGENCY_NUMBERS and all(labels[1:])


def require_emergency_did(did: object) -> str:
    """``did`` itself, or ``x-emergency.not-emergency-service``."""
    if not is_emergency_did(did):
        shown = str(did)[:80]
        raise EmergencyError(f"{shown} is not an emergency namespace DID", NOT_EMERGENCY_SERVICE)
    assert isinstance(did, str)
    return did


@dataclass(frozen=True)
class Geofence:
    """One service area: the PSAP DID and its polygon (lon/lat, WGS 84, as GeoJSON)."""

    region: str
    psap: str
    geometry: BaseGeometry = field(repr=False, compare=False)


def _bad(message: str) -> EmergencyError:
    return EmergencyError(message, GEOFENCE_INVALID, remote=False)


def _fence(feature: object, index: int) -> Geofence:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise _bad(f"feature {index} is not a GeoJSON Feature")
    props = feature.get("properties")
    geom = feature.get("geometry")
    if not isinstance(props, Mapping) or not isinstance(geom, Mapping):
        raise _bad(f"feature {index} lacks properties or geometry")
    psap, region = props.get("psap"), props.get("region")
    if not is_emergency_did(psap):
        raise _bad(f"feature {index}: psap is not an emergency namespace DID")
    if not isinstance(region, str) or not 0 < len(region) <= 64:
        raise _bad(f"feature {index}: region must be a short string")
    if geom.get("type") not in ("Polygon", "MultiPolygon"):
        raise _bad(f"feature {index}: geometry must be a Polygon or MultiPolygon")
    try:
        polygon = shape(geom)
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        shapely.errors.ShapelyError,
    ):
        raise _bad(f"feature {index}: geometry does not parse") from None
    if polygon.is_empty or not polygon.is_valid:
        raise _bad(f"feature {index}: polygon is empty or self-intersecting")
    if shapely.get_num_coordinates(polygon) > _MAX_VERTICES:
        raise _bad(f"feature {index}: too many vertices")
    minx, miny, maxx, maxy = polygon.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise _bad(f"feature {index}: coordinates outside lon/lat range")
    shapely.prepare(polygon)
    assert isinstance(psap, str)
    return Geofence(region, psap, polygon)


class GeofenceSet:
    """The geofences a client knows, and the selection rule."""

    def __init__(self, fences: Iterable[Geofence] = ()) -> None:
        self.fences: tuple[Geofence, ...] = tuple(fences)

    @classmethod
    def from_geojson(cls, document: str | bytes | Mapping[str, Any]) -> GeofenceSet:
        """Parse a GeoJSON FeatureCollection; each Feature's ``properties`` name ``region``
        and ``psap``. Anything else raises ``x-emergency.geofence-invalid``."""
        if isinstance(document, str | bytes):
            if len(document) > 8 * 1024 * 1024:
                raise _bad("geofence document too large")
            try:
                document = json.loads(document)
            except (ValueError, RecursionError):
                raise _bad("geofence document is not JSON") from None
        if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
            raise _bad("not a GeoJSON FeatureCollection")
        features = document.get("features")
        if not isinstance(features, Sequence) or isinstance(features, str):
            raise _bad("FeatureCollection without a features list")
        if len(features) > _MAX_FEATURES:
            raise _bad("too many features")
        return cls(_fence(f, i) for i, f in enumerate(features))

    def select(
        self, lat: float | None, lon: float | None, *, user_setting: str | None = None
    ) -> Geofence | None:
        """The geofence for a position: the user's chosen region (by region name or PSAP
        DID) when set, else the first fence containing the point, else ``None``."""
        if user_setting is not None:
            for fence in self.fences:
                if user_setting in (fence.region, fence.psap):
                    return fence
            if is_emergency_did(user_setting):
                return Geofence("user-setting", user_setting, Point())
        if lat is None or lon is None:
            return None
        point = Point(lon, lat)  # GeoJSON order: x = longitude
        for fence in self.fences:
            if fence.geometry.covers(point):
                return fence
        return None
