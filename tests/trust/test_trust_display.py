"""Basis lines, never badges (§18.1, Gateway Profile G§5/G§7) and the trust vector kind."""

from __future__ import annotations

import pytest

from dsip.conformance import run_directory
from dsip.core.trust.display import (
    credential_basis,
    did_label,
    downgrade_sentence,
    identity_basis,
    run_trust,
    tel_caller_headline,
    verified_by,
)
from tests.conftest import VECTORS

GW = "did:web:gw.example"


def tel(**over: object) -> dict[str, object]:
    claim: dict[str, object] = {
        "type": "tel",
        "number": "+15551234567",
        "attestation": "A",
        "verified": True,
        "verifier": GW,
    }
    claim.update(over)
    return claim


@pytest.mark.parametrize(
    ("identity", "claims", "line"),
    [
        ("did:key:z6MkAlicePhone", [], "Self-issued identity"),
        ("did:web:example.com:users:bob", [], "Domain verified (did:web:example.com:users:bob)"),
        ("did:example:xyz", [], "Unrecognized identity method"),
        ("did:plc:abc", [], "Unrecognized identity method"),
        ("not-a-did", [], "Unrecognized identity method"),
        (GW, [tel()], "Gateway attested by gw.example · STIR attestation A (verified)"),
        (
            GW,
            [tel(attestation="B", verified=False)],
            "Gateway attested by gw.example · STIR attestation B (unverified)",
        ),
        (
            GW,
            [tel(attestation="none", verified=False)],
            "Gateway attested by gw.example · no attestation",
        ),
        (GW, [tel(attestation="Z")], "Gateway attested by gw.example · no attestation"),
        (GW, [tel(attestation=None)], "Gateway attested by gw.example · no attestation"),
        # Another party's "verified" attestation relayed by the signer is not the signer's:
        (
            "did:web:other.example",
            [tel()],
            "Gateway attested by gw.example · STIR attestation A (unverified)",
        ),
        (
            GW,
            [tel(verified="yes")],
            "Gateway attested by gw.example · STIR attestation A (unverified)",
        ),
    ],
)
def test_identity_basis(identity: str, claims: list[object], line: str) -> None:
    assert identity_basis(identity, claims) == line


def test_basis_is_never_a_generic_badge() -> None:
    for identity in ("did:key:z6Mk1", "did:web:a.example", "did:x:y"):
        assert identity_basis(identity).lower() not in ("verified", "✓", "verified caller")


def test_tel_caller_headline() -> None:
    assert tel_caller_headline(tel(cnam="ACME Corp")) == "PSTN caller +15551234567 · ACME Corp"
    assert tel_caller_headline(tel()) == "PSTN caller +15551234567"
    assert tel_caller_headline(tel(cnam="  ")) == "PSTN caller +15551234567"


def test_hostile_claim_text_is_cleaned_and_clipped() -> None:
    line = tel_caller_headline(tel(cnam="Bank\u202e\x07" + "x" * 500))
    assert "\u202e" not in line
    assert "\x07" not in line
    assert len(line) < 260


def test_downgrade_sentences() -> None:
    assert downgrade_sentence([]) is None
    assert downgrade_sentence(["no-attestation"]) == (
        "Trust downgraded crossing the gateway (§6.3): the caller carried no verified attestation"
    )
    odd = downgrade_sentence(["made-up"])
    assert odd is not None
    assert "made-up" in odd


def test_credential_lines() -> None:
    assert (
        credential_basis("OrganizationCredential", "Example Trust Registry")
        == "Organization credential issued by Example Trust Registry"
    )
    assert verified_by("voice.net") == "Verified by voice.net"
    assert did_label("did:web:voice.net") == "voice.net"
    assert did_label("did:web:localhost%3A8443:users:bob") == "localhost:8443/users/bob"
    assert did_label("did:key:z6Mk1") == "did:key:z6Mk1"


def test_run_trust_refuses_unknown_check() -> None:
    with pytest.raises(ValueError, match="unknown trust check"):
        run_trust({}, {"check": "badge"})


@pytest.mark.skipif(not (VECTORS / "fixtures.json").is_file(), reason="shared vectors absent")
def test_trust_vectors_all_pass() -> None:
    report = run_directory(VECTORS, {"trust"})
    assert (report.count("passed"), report.count("failed"), report.count("skipped")) == (7, 0, 0)
