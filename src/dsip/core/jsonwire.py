"""Strict JSON for signed data (§10.3, RFC 7493 I-JSON).

The standard library parser is permissive in ways that matter under a signature:

* duplicate member names: ``{"to":"bob","to":"mallory"}`` means bob to one parser and
  mallory to another — a signature-confusion attack. Rejected.
* ``NaN``/``Infinity``: not JSON. Rejected.
* integers beyond ±(2**53 − 1): other implementations round them. Rejected.
* lone UTF-16 surrogates in ``\\u`` escapes: not Unicode text. Rejected.
* unbounded nesting: bounded by ``MAX_DEPTH``.

Floats are *reported*, not rejected, so the caller can put the failure at the right
pipeline stage (``payload-float`` comes after ``payload-not-json``).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from dsip.errors import PayloadError

__all__ = ["MAX_DEPTH", "MAX_SAFE_INT", "compact_dumps", "loads_strict"]

MAX_DEPTH = 64
MAX_SAFE_INT = (1 << 53) - 1

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]|\\u[dD][c-fC-F]")
_ESCAPE_PAIR = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})(\\u[dD][c-fC-F][0-9a-fA-F]{2})?")
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class _DuplicateKey(ValueError):
    pass


class _Nan(ValueError):
    pass


class _BigInt(ValueError):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return obj


def _reject_constant(name: str) -> Any:
    raise _Nan(name)


def _parse_int(text: str) -> int:
    # int() itself refuses > 4300 digits (CPython's DoS guard) with ValueError.
    value = int(text)
    if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        return value
    raise _BigInt(text[:40])


def _depth(text: str) -> int:
    depth = best = 0
    for m in _STRING_OR_BRACKET.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            best = max(best, depth)
        elif tok in "]}":
            depth -= 1
    return best


def _check_surrogates(text: str) -> None:
    # A high surrogate must be followed by a low one, and a low one must follow a high one.
    paired_lows: set[int] = set()
    for m in _ESCAPE_PAIR.finditer(text):
        if m.group(2) is None:
            raise ValueError("lone high surrogate escape")
        paired_lows.add(m.start(2))
    for m in re.finditer(r"\\u[dD][c-fC-F]", text):
        if m.start() not in paired_lows:
            raise ValueError("lone low surrogate escape")


class _Decoder(threading.local):
    """One reusable strict decoder per thread; ``saw_float`` is reset on every parse."""

    def __init__(self) -> None:
        self.saw_float = False
        self.decoder = json.JSONDecoder(
            object_pairs_hook=_pairs_hook,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=self._parse_float,
        )

    def _parse_float(self, text: str) -> float:
        self.saw_float = True
        return float(text)


_DECODER = _Decoder()


def loads_strict(
    raw: bytes | str, *, what: str = "payload", code_prefix: str = "payload"
) -> tuple[Any, bool]:
    """Parse ``raw`` strictly. Returns ``(value, saw_float)``.

    Raises ``PayloadError`` with code ``{code_prefix}-not-utf8`` or ``{code_prefix}-not-json``.
    Callers that need other codes (header, envelope) catch and re-raise.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(
                f"{what} is not valid UTF-8", code=f"{code_prefix}-not-utf8"
            ) from None
    else:
        text = raw
    not_json = f"{code_prefix}-not-json"
    # Cheap bound first: depth can't exceed the number of opening brackets.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise PayloadError(f"{what} nests deeper than {MAX_DEPTH}", code=not_json)
    dec = _DECODER
    dec.saw_float = False
    try:
        value = dec.decoder.decode(text)
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            _check_surrogates(text)
    except _DuplicateKey as exc:
        raise PayloadError(f"{what} repeats member name {str(exc)[:60]!r}", code=not_json) from None
    except _Nan as exc:
        raise PayloadError(f"{what} contains {exc} (not JSON)", code=not_json) from None
    except _BigInt as exc:
        raise PayloadError(
            f"{what} integer {exc}… is outside ±(2**53-1) (I-JSON)", code=not_json
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"{what} is not JSON: {str(exc)[:120]}", code=not_json) from None
    return value, dec.saw_float


def compact_dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON in insertion order, no NaN: how *we* serialize a payload to sign.

    Signatures cover the exact bytes sent (§10.2); receivers never re-serialize.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )
