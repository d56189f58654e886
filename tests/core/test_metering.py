"""Access tokens (JWT via joserfc), the meter, and signed usage records."""

from __future__ import annotations

import pytest

from dsip.core.envelope import Verifier
from dsip.core.identity import KeyPair
from dsip.core.metering import (
    Meter,
    MeterState,
    issue_access_token,
    usage_record,
    verify_access_token,
)
from dsip.errors import DsipError
from tests.conftest import NOW


def _code(**kw: object) -> str:
    with pytest.raises(DsipError) as err:
        verify_access_token(**kw)  # type: ignore[arg-type]
    return err.value.code


def test_token_round_trip_and_refusals() -> None:
    issuer, alice, mallory = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    tok = issue_access_token(
        issuer,
        subject=alice.did,
        balance_msat=5000,
        msat_per_second=1000,
        now=NOW,
        audience=("turn",),
        reputation={"score": 812},
    )
    t = verify_access_token(tok, audience="turn", now=NOW + 1, subject=alice.did)
    assert (t.subject, t.balance_msat, t.msat_per_second, t.reputation) == (
        alice.did,
        5000,
        1000,
        {"score": 812},
    )
    assert _code(token=tok, audience="sfu", now=NOW) == "token-audience"
    assert _code(token=tok, audience="turn", now=NOW + 3601) == "token-expired"
    assert _code(token=tok, audience="turn", now=NOW, subject=mallory.did) == "token-subject"
    assert (
        _code(token=tok, audience="turn", now=NOW, trusted_issuers=frozenset({mallory.did}))
        == "token-issuer"
    )
    head, body, sig = tok.split(".")
    assert _code(token=f"{head}.{body}.{sig[::-1]}", audience="turn", now=NOW) in (
        "token-signature",
        "token-invalid",
    )
    forged = issue_access_token(
        mallory, subject=alice.did, balance_msat=10**9, msat_per_second=1, now=NOW
    )
    # mallory's token claims mallory's kid: only an issuer allow-list stops it
    assert (
        _code(token=forged, audience="turn", now=NOW, trusted_issuers=frozenset({issuer.did}))
        == "token-issuer"
    )
    # a token whose body was swapped for a richer one fails the signature
    rich = issue_access_token(
        issuer, subject=alice.did, balance_msat=10**9, msat_per_second=1, now=NOW
    )
    assert (
        _code(token=f"{head}.{rich.split('.')[1]}.{sig}", audience="turn", now=NOW)
        == "token-signature"
    )
    for junk in ["", "a.b", "a.b.c", "x" * 9000]:
        assert _code(token=junk, audience="turn", now=NOW) == "token-invalid"


def test_meter_throttles_then_cuts_and_never_recovers() -> None:
    issuer, alice = KeyPair.generate(), KeyPair.generate()
    tok = verify_access_token(
        issue_access_token(
            issuer, subject=alice.did, balance_msat=10_000, msat_per_second=1000, now=NOW
        ),
        audience="turn",
        now=NOW,
    )
    m = Meter(tok, "turn", started_at=NOW, throttle_window=3)
    assert m.update(now=NOW + 2) is MeterState.ACTIVE
    assert m.update(now=NOW + 7) is MeterState.THROTTLED  # 3 s left
    assert m.update(now=NOW + 10) is MeterState.CUT
    assert m.balance_msat == 0
    assert m.update(now=NOW + 11) is MeterState.CUT


def test_per_mb_rate() -> None:
    issuer, alice = KeyPair.generate(), KeyPair.generate()
    tok = verify_access_token(
        issue_access_token(issuer, subject=alice.did, balance_msat=2000, msat_per_mb=1000, now=NOW),
        audience="sfu",
        now=NOW,
    )
    m = Meter(tok, "sfu", started_at=NOW)
    assert m.update(now=NOW + 100, total_bytes=1_500_000) is MeterState.ACTIVE
    assert m.debited_msat == 1500
    assert m.update(now=NOW + 101, total_bytes=2_000_001) is MeterState.CUT


def test_usage_record_is_a_verifiable_signed_envelope() -> None:
    issuer, alice, service = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    tok = verify_access_token(
        issue_access_token(
            issuer, subject=alice.did, balance_msat=3000, msat_per_second=1000, now=NOW
        ),
        audience="turn",
        now=NOW,
    )
    m = Meter(tok, "turn", started_at=NOW)
    m.update(now=NOW + 5, total_bytes=42_000)
    rec = Verifier().verify(usage_record(m, service, now=NOW + 5), now=NOW + 5)
    assert rec.type == "usage-record"
    assert (rec.payload["state"], rec.payload["debited_msat"], rec.payload["to"]) == (
        "cut",
        3000,
        alice.did,
    )
