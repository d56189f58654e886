"""The emergency profile's error type and its reason tokens (extension namespace, §15.6).

Every token lives under ``x-emergency.*``: a peer that does not speak emergency/1.0 falls
back to ``session.failed`` as for any unknown category.
"""

from __future__ import annotations

from typing import Final

from dsip.errors import DsipError

__all__ = [
    "ALERT_INVALID",
    "DEVICE_UNCERTIFIED",
    "GEOFENCE_INVALID",
    "LIMITED_MODE",
    "LOCATION_FORGED",
    "LOCATION_INVALID",
    "LOCATION_STALE",
    "LOCATION_UNATTESTED",
    "NOT_EMERGENCY_SERVICE",
    "NO_REGION",
    "PRECISE_LOCATION_REFUSED",
    "EmergencyError",
]

LOCATION_INVALID: Final = "x-emergency.location-invalid"
LOCATION_FORGED: Final = "x-emergency.location-forged"
LOCATION_STALE: Final = "x-emergency.location-stale"
LOCATION_UNATTESTED: Final = "x-emergency.location-unattested"
DEVICE_UNCERTIFIED: Final = "x-emergency.device-uncertified"
NOT_EMERGENCY_SERVICE: Final = "x-emergency.not-emergency-service"
PRECISE_LOCATION_REFUSED: Final = "x-emergency.precise-location-refused"
LIMITED_MODE: Final = "x-emergency.limited-mode"
GEOFENCE_INVALID: Final = "x-emergency.geofence-invalid"
ALERT_INVALID: Final = "x-emergency.alert-invalid"
NO_REGION: Final = "x-emergency.no-region"


class EmergencyError(DsipError):
    """A location, credential, namespace or privacy rule of emergency/1.0 was violated.

    ``reason`` is one of the ``x-emergency.*`` tokens above; ``code`` the same condition
    without the namespace (``location-stale``, ...).
    """

    default_code = "location-invalid"
    default_reason = LOCATION_INVALID

    def __init__(self, message: str, reason: str, *, remote: bool | None = None) -> None:
        super().__init__(
            message, code=reason.removeprefix("x-emergency."), reason=reason, remote=remote
        )
