"""Reason registry: effective interpretation and the seed's numeric error model."""

from __future__ import annotations

import pytest

from dsip.core.registry import (
    REASONS,
    SEED_ERROR_CODES,
    interpret_reason,
    reason_from_seed,
    seed_error_code,
)


def test_every_registered_token_has_a_seed_code() -> None:
    assert set(SEED_ERROR_CODES) == set(REASONS)


@pytest.mark.parametrize(
    ("token", "klass"),
    [
        ("policy.rate-limited", 4),  # caller's fault
        ("transport.hello-rejected", 4),
        ("endpoint.busy", 5),  # callee / relay
        ("gateway.unreachable", 5),
        ("user.declined", 6),  # global
        ("user.blocked", 6),
    ],
)
def test_seed_classes(token: str, klass: int) -> None:
    assert seed_error_code(token) // 100 == klass


def test_unregistered_tokens_fall_back_by_category() -> None:
    assert seed_error_code("policy.needs-a-payment") == 403
    assert seed_error_code("x-contactcenter.queue-full") == 400  # unknown category → session.failed


@pytest.mark.parametrize("code", sorted(set(SEED_ERROR_CODES.values())))
def test_seed_codes_round_trip_to_a_token_of_the_same_class(code: int) -> None:
    token = reason_from_seed(code)
    assert token in REASONS
    assert seed_error_code(token) // 100 == code // 100


def test_reason_from_seed_prefers_a_registered_reason_string() -> None:
    assert reason_from_seed(403, "policy.first-contact-required") == "policy.first-contact-required"
    assert (
        reason_from_seed(403, "policy:reputation-too-low") == "policy.blocked"
    )  # seed-style string
    assert reason_from_seed(599) == "endpoint.unavailable"
    assert reason_from_seed(699) == "user.declined"


def test_interpretation_fallbacks() -> None:
    assert interpret_reason("user.hangup", "reject").valid_on_type is False
    assert interpret_reason("media.nope").fallback == "category"
    assert interpret_reason("nope.nope").reason == "session.failed"


def test_docs_table_matches_the_registry() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "errors.md").read_text()
    rows = {}
    for line in doc.splitlines():
        if line.startswith("| `") and line.count("|") == 4:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[1].isdigit():
                rows[cells[0].strip("`")] = int(cells[1])
    assert rows == dict(SEED_ERROR_CODES)
