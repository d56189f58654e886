"""PASSporT/SHAKEN (RFC 8224/8225/8588/9795): signing and verification, sans-I/O."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from dsip.core.gateway.stir import (
    PassportClaims,
    StirError,
    identity_header,
    parse_identity_header,
    sign_passport,
    verify_passport,
)
from dsip.services.gateway_stir import LocalStiCa

NOW = 1_790_000_000
X5U = "https://localhost:1/sti/gw.pem"


@pytest.fixture(scope="module")
def ca() -> LocalStiCa:
    return LocalStiCa.create(now=NOW)


def _claims(**over: object) -> PassportClaims:
    base: dict[str, object] = {
        "attest": "A",
        "orig_tn": "15551230001",
        "dest_tns": ("15551230002",),
        "iat": NOW,
        "origid": "123e4567-e89b-12d3-a456-426655440000",
        "rcd_name": "Alice Example",
    }
    base.update(over)
    return PassportClaims(**base)  # type: ignore[arg-type]


def _verify(ca: LocalStiCa, passport: str, **over: object) -> PassportClaims:
    kw: dict[str, object] = {
        "chain": (ca.cert, ca.root),
        "anchors": (ca.root,),
        "now": NOW + 5,
        "from_tn": "+1 555 123 0001",
        "to_tn": "15551230002",
    }
    kw.update(over)
    return verify_passport(passport, **kw)  # type: ignore[arg-type]


def test_round_trip_with_rcd(ca: LocalStiCa) -> None:
    passport = sign_passport(_claims(), key=ca.key, x5u=X5U)
    header = parse_identity_header(identity_header(passport, X5U))
    assert (header.info, header.alg, header.ppt) == (X5U, "ES256", "shaken")
    got = _verify(ca, header.passport)
    assert (got.attest, got.orig_tn, got.rcd_name) == ("A", "15551230001", "Alice Example")


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"now": NOW + 61}, "iat"),
        ({"now": NOW - 61}, "iat"),
        ({"from_tn": "15559999999"}, "orig.tn"),
        ({"to_tn": "15559999999"}, "dest.tn"),
    ],
)
def test_stale_or_mismatched_is_refused(ca: LocalStiCa, over: dict[str, object], why: str) -> None:
    passport = sign_passport(_claims(), key=ca.key, x5u=X5U)
    with pytest.raises(StirError, match=why):
        _verify(ca, passport, **over)


def test_signature_by_another_key_is_refused(ca: LocalStiCa) -> None:
    forged = sign_passport(_claims(), key=ec.generate_private_key(ec.SECP256R1()), x5u=X5U)
    with pytest.raises(StirError, match="signature"):
        _verify(ca, forged)


def test_altered_payload_is_refused(ca: LocalStiCa) -> None:
    head, _, sig = sign_passport(_claims(), key=ca.key, x5u=X5U).split(".")
    other = sign_passport(_claims(attest="C"), key=ca.key, x5u=X5U).split(".")[1]
    with pytest.raises(StirError, match="signature"):
        _verify(ca, f"{head}.{other}.{sig}")


def test_untrusted_or_expired_certificate_is_refused(ca: LocalStiCa) -> None:
    passport = sign_passport(_claims(), key=ca.key, x5u=X5U)
    stranger = LocalStiCa.create(now=NOW)
    with pytest.raises(StirError, match="trusted STI-CA"):
        _verify(ca, passport, anchors=(stranger.root,))
    later = NOW + int(dt.timedelta(days=30).total_seconds())
    late = sign_passport(_claims(iat=later), key=ca.key, x5u=X5U)
    with pytest.raises(StirError, match="not valid now"):
        _verify(ca, late, now=later)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "a.b",
        "a.b.c",  # no info parameter
        "a.b.c;info=https://x",  # info without angle brackets
        "a b.c.d;info=<https://x>",
        "x" * 9000,
        "a.b.c;info",
    ],
)
def test_hostile_identity_headers(value: object) -> None:
    with pytest.raises(StirError):
        parse_identity_header(value)


@given(st.text(max_size=300))
def test_any_text_parses_or_raises_stir_error(value: str) -> None:
    with contextlib.suppress(StirError):
        parse_identity_header(value)


@given(st.text(max_size=200))
def test_any_passport_text_verifies_or_raises_stir_error(value: str) -> None:
    ca = _CA
    with contextlib.suppress(StirError):
        _verify(ca, value)


_CA = LocalStiCa.create(now=NOW)
