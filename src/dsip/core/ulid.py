"""ULID message ids (§10.3): 26 Crockford base32 characters, 48-bit ms time + 80 random bits.

The glare rules (§12.6) order sessions by id, and §20.6 ties the id's time component to the
signed ``issued_at``; so ids are generated from an explicit clock and parsed strictly.
"""

from __future__ import annotations

import os
import re

from dsip.errors import PayloadError

__all__ = ["ULID_PATTERN", "is_ulid", "new_ulid", "ulid_time_ms"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_CROCKFORD)}
# The first character carries only 3 bits (26*5 = 130 > 128), hence [0-7].
ULID_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_MAX_MS = (1 << 48) - 1


def is_ulid(value: object) -> bool:
    return isinstance(value, str) and ULID_PATTERN.fullmatch(value) is not None


def new_ulid(now_ms: int, randomness: bytes | None = None) -> str:
    """A ULID for time ``now_ms`` (milliseconds since the epoch)."""
    if not 0 <= now_ms <= _MAX_MS:
        raise ValueError("ULID time out of range")
    rnd = os.urandom(10) if randomness is None else randomness
    if len(rnd) != 10:
        raise ValueError("ULID randomness must be 10 bytes")
    n = (now_ms << 80) | int.from_bytes(rnd, "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[n & 31])
        n >>= 5
    return "".join(reversed(out))


def ulid_time_ms(value: str) -> int:
    """The 48-bit millisecond timestamp of a ULID."""
    if not is_ulid(value):
        raise PayloadError(f"not a ULID: {value!r}"[:120], code="payload-shape")
    n = 0
    for c in value[:10]:
        n = (n << 5) | _DECODE[c]
    return n
