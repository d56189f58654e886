"""b64url, strict JSON and ULID codecs against hostile input."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.jsonwire import MAX_DEPTH, loads_strict
from dsip.core.ulid import is_ulid, new_ulid, ulid_time_ms
from dsip.errors import DsipError, EnvelopeError, PayloadError


@given(st.binary(max_size=200))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize(
    "text",
    ["AB=", "AB==", "A", "AB+C", "AB/C", "AB C", "ABC\n", "AF", "AAB", "é", "ABCDE"],
)
def test_b64url_rejects_padding_alphabet_and_non_canonical(text: str) -> None:
    # "AF" and "AAB" decode leniently but carry non-zero trailing bits; "ABCDE" has length ≡ 1 mod 4.
    with pytest.raises(EnvelopeError):
        b64url_decode(text)


@given(st.text(max_size=40))
def test_b64url_decode_never_raises_other_errors(text: str) -> None:
    with contextlib.suppress(EnvelopeError):
        b64url_decode(text)


def test_strict_json_rejects_duplicate_members() -> None:
    with pytest.raises(PayloadError, match="repeats member"):
        loads_strict(b'{"to":"did:key:a","to":"did:key:b"}')
    with pytest.raises(PayloadError):
        loads_strict(b'{"a":{"x":1,"x":1}}')


@pytest.mark.parametrize(
    "raw",
    [b"NaN", b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":1', b"", b"{}x"],
)
def test_strict_json_rejects_non_json(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        loads_strict(raw)


def test_strict_json_reports_floats() -> None:
    assert loads_strict(b'{"a":[1,{"b":2.5}]}')[1] is True
    assert loads_strict(b'{"a":[1,{"b":2}]}')[1] is False
    assert loads_strict(b'{"a":1E3}')[1] is True
    # Overflowing exponents are still JSON numbers with a fraction/exponent: reported as floats.
    assert loads_strict(b'{"a":1e999999}')[1] is True


def test_strict_json_invalid_utf8() -> None:
    with pytest.raises(PayloadError) as err:
        loads_strict(b'{"a":"\xff"}')
    assert err.value.code == "payload-not-utf8"


@pytest.mark.parametrize("raw", [rb'{"a":"\ud800"}', rb'{"a":"\udc00"}', rb'{"a":"\ud800\u0041"}'])
def test_strict_json_rejects_lone_surrogates(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        loads_strict(raw)


def test_strict_json_accepts_surrogate_pairs() -> None:
    assert loads_strict(rb'{"a":"\ud83d\ude00"}')[0] == {"a": "\U0001f600"}


def test_strict_json_depth_and_huge_integers() -> None:
    with pytest.raises(PayloadError, match="deeper"):
        loads_strict(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    with pytest.raises(PayloadError):
        loads_strict(b"[" * 100_000)
    assert loads_strict(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)[0] is not None
    with pytest.raises(PayloadError, match="I-JSON"):
        loads_strict(b'{"t":9007199254740992}')
    with pytest.raises(PayloadError):
        loads_strict(b'{"t":' + b"9" * 5000 + b"}")
    assert loads_strict(b'{"t":9007199254740991}')[0] == {"t": 9007199254740991}


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"s": "[" * 500})
    assert loads_strict(text)[0] == {"s": "[" * 500}


@given(st.binary(max_size=300))
def test_strict_json_only_raises_dsip_errors(raw: bytes) -> None:
    with contextlib.suppress(DsipError):
        loads_strict(raw)


def test_ulid_time_round_trip() -> None:
    u = new_ulid(1_760_000_000_123)
    assert is_ulid(u)
    assert len(u) == 26
    assert ulid_time_ms(u) == 1_760_000_000_123


@pytest.mark.parametrize("bad", ["01HZINVITEABC", "8" + "0" * 25, "0" * 25 + "I", "0" * 27, 5])
def test_ulid_rejects(bad: object) -> None:
    assert not is_ulid(bad)
