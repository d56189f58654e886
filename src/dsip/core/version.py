"""Version and extension negotiation (§11), pipeline stage 12.

Rules, in the order we apply them:

1. ``core`` major must equal ours (majors are incompatible by default) and ``min_core``
   must not exceed our core version → else ``session.unsupported-core-version``.
2. every ``critical`` extension must be one we implement (same name and major)
   → else ``session.unsupported-critical-extension``. Unknown non-critical extensions
   are ignored.
3. if the message names profiles, at least one must be mutually supported (same name and
   major; a newer minor is backward-compatible) → else
   ``session.unsupported-profile-version``. Transport messages (``hello``) name none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from dsip.errors import VersionError

__all__ = ["CORE_VERSION", "COSE_EXTENSION", "Supported", "check_version"]

CORE_VERSION = "1.0"
COSE_EXTENSION = "cose-envelope/1.0"  # dsip profile: DSIP-COSE envelopes on binary frames
_VERSION = re.compile(r"(\d{1,6})\.(\d{1,6})")
_ID = re.compile(r"([a-z][a-z0-9-]*)/(\d{1,6})\.(\d{1,6})")


@lru_cache(maxsize=256)
def _parse_version_cached(text: str) -> tuple[int, int] | None:
    m = _VERSION.fullmatch(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@lru_cache(maxsize=1024)
def _parse_id_cached(text: str) -> tuple[str, int, int] | None:
    m = _ID.fullmatch(text)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def _parse_version(text: object) -> tuple[int, int] | None:
    return _parse_version_cached(text) if isinstance(text, str) and len(text) < 16 else None


def _parse_id(text: object) -> tuple[str, int, int] | None:
    return _parse_id_cached(text) if isinstance(text, str) and len(text) < 80 else None


@dataclass(frozen=True)
class Supported:
    """What this receiver implements. ``profiles``/``extensions`` are ``name/major.minor``."""

    core: str = CORE_VERSION
    profiles: frozenset[str] = field(
        default_factory=lambda: frozenset({"interactive-media/1.0", "verified-broadcast/1.0"})
    )
    extensions: frozenset[str] = frozenset()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> Supported:
        return cls(
            core=str(m.get("core", CORE_VERSION)),
            profiles=frozenset(m.get("profiles", ())),
            extensions=frozenset(m.get("extensions", ())),
        )

    def as_block(self, *, profiles: Iterable[str] | None = None) -> dict[str, Any]:
        """The ``dsip`` version block we put in payloads we send."""
        return {
            "core": self.core,
            "min_core": self.core,
            "profiles": sorted(self.profiles if profiles is None else profiles),
            "extensions": sorted(self.extensions),
            "critical": [],
        }

    @cached_property
    def profile_majors(self) -> frozenset[tuple[str, int]]:
        return _majors(self.profiles)

    @cached_property
    def extension_majors(self) -> frozenset[tuple[str, int]]:
        return _majors(self.extensions)


def _majors(ids: Iterable[str]) -> frozenset[tuple[str, int]]:
    return frozenset((p[0], p[1]) for i in ids if (p := _parse_id(i)) is not None)


def check_version(block: object, supported: Supported) -> None:
    """Raise ``VersionError`` with the §11.3 token when negotiation fails.

    Only a *well-formed* incompatibility fails here; a malformed block passes through to
    the schema stage (13), which rejects it as ``schema-invalid``.
    """
    if not isinstance(block, Mapping):
        return
    ours = _parse_version(supported.core)
    core = _parse_version(block.get("core"))
    min_core = _parse_version(block.get("min_core"))
    if ours is None or core is None:
        return
    if core[0] != ours[0]:
        raise VersionError(f"core {block.get('core')} is not compatible with our {supported.core}")
    if min_core is not None and min_core > ours:
        raise VersionError(
            f"peer requires core >= {block.get('min_core')}, we implement {supported.core}"
        )
    critical = block.get("critical")
    if isinstance(critical, list):
        ext_majors = supported.extension_majors
        for crit in critical:
            p = _parse_id(crit)
            if p is not None and (p[0], p[1]) not in ext_majors:
                raise VersionError(
                    f"critical extension {crit!r} is not supported",
                    reason="session.unsupported-critical-extension",
                )
    profiles = block.get("profiles")
    if isinstance(profiles, list) and profiles:
        parsed = [p for x in profiles if (p := _parse_id(x)) is not None]
        prof_majors = supported.profile_majors
        if parsed and not any((p[0], p[1]) in prof_majors for p in parsed):
            raise VersionError(
                f"none of the profiles {[f'{p[0]}/{p[1]}.{p[2]}' for p in parsed][:8]} is supported",
                reason="session.unsupported-profile-version",
            )
