"""Rich Caller ID: an invite carries rcid.v1 in identity.claims; the callee verifies every
credential and renders names, avatars and bases — or why each credential is unverified."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from dsip.core.envelope import Verifier, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.payloads.schema import validate_payload
from dsip.core.trust.rcid import (
    FAILURE_TEXT,
    IssuerTrust,
    RcidDisplay,
    identity_with_rcid,
    make_rcid,
    rcid_of,
    render_caller,
    verify_rcid,
)
from dsip.core.trust.vc import (
    DATA_INTEGRITY,
    VC_JWT,
    issue_credential,
    issue_status_list_credential,
    status_entry,
)
from dsip.errors import SchemaError
from tests.trust.trustfix import DAY, NOW, STATUS_URL, World


@pytest.fixture
def world() -> World:
    return World()


def trust(w: World) -> IssuerTrust:
    return IssuerTrust.of(w.issuers, {"did:web:trustgraph.org": "TrustGraph"})


def name_vc(w: World, proof: str = DATA_INTEGRITY, **kw: Any) -> Any:
    kw.setdefault("now", NOW)
    kw.setdefault("valid_until", NOW + DAY)
    issuer = kw.pop("issuer", w.voice)
    subject = kw.pop("subject", w.caller.did)
    return issue_credential(
        issuer,
        "DisplayNameCredential",
        {"id": subject, "displayName": "James Ferris", "avatar": "ipfs://bafy/avatar.png"},
        proof=proof,
        **kw,
    )


def reputation_vc(w: World, score: int = 812) -> Any:
    return issue_credential(
        w.trustgraph, "ReputationScore", {"id": w.caller.did, "score": score}, now=NOW
    )


def render(w: World, rcid: dict[str, Any] | None, **kw: Any) -> RcidDisplay:
    kw.setdefault("status_lists", w.status_source())
    return verify_rcid(
        rcid, caller=w.caller.did, now=NOW, documents=w.documents, trust=trust(w), **kw
    )


def test_invite_carries_rcid_and_callee_renders_verified_by(world: World) -> None:
    rcid = make_rcid(
        [name_vc(world), reputation_vc(world)],
        display_name="James Ferris",
        avatar="ipfs://bafy/avatar.png",
    )
    invite = example_invite(world.caller.did, world.callee.did, now=NOW)
    invite["identity"] = identity_with_rcid(rcid)
    validate_payload(invite)  # the v0.7 invite schema accepts it where claims go
    envelope = sign_envelope(invite, world.caller)
    verified = Verifier().verify(envelope, now=NOW)
    assert rcid_of(verified.payload) == rcid
    shown = render_caller(
        verified.payload,
        verified.identity,
        now=NOW,
        documents=world.documents,
        trust=trust(world),
    )
    assert shown.name == "James Ferris"
    assert shown.name_verified
    assert shown.name_basis == "Verified by voice.net"  # seed §12 step 4
    assert shown.verified_by == ("Verified by voice.net", "Verified by TrustGraph")
    assert shown.basis_lines == (
        "Display name credential issued by voice.net",
        "Reputation score issued by TrustGraph",
    )
    assert shown.avatar == "ipfs://bafy/avatar.png"
    assert shown.avatar_verified
    assert shown.reputation == ((812, 1000, "did:web:trustgraph.org"),)
    assert shown.identity_basis == "Self-issued identity"
    assert shown.unverified == ()


def test_jwt_credentials_render_the_same(world: World) -> None:
    shown = render(world, make_rcid([name_vc(world, VC_JWT)]))
    assert shown.name_verified
    assert shown.verified_by == ("Verified by voice.net",)


def test_no_generic_badge_exists_on_the_record(world: World) -> None:
    shown = render(world, make_rcid([name_vc(world)]))
    assert not hasattr(shown, "verified")
    assert not hasattr(shown, "badge")


# Every bad-credential case: a distinct reason, nothing shown as verified.
def _expired(w: World) -> Any:
    return name_vc(w, now=NOW - 2 * DAY, valid_until=NOW - DAY)


def _not_yet(w: World) -> Any:
    return name_vc(w, valid_from=NOW + DAY, valid_until=NOW + 2 * DAY)


def _revoked(w: World) -> Any:
    w.status.set(5)
    return name_vc(w, status=status_entry(STATUS_URL, 5))


def _suspended(w: World) -> Any:
    return name_vc(w, status=status_entry(STATUS_URL, 5, "suspension"))


def _wrong_subject(w: World) -> Any:
    return name_vc(w, subject=w.mallory.did)


def _wrong_issuer(w: World) -> Any:
    return name_vc(w, issuer=w.acme)


def _tampered(w: World) -> Any:
    bad = copy.deepcopy(name_vc(w))
    bad["credentialSubject"]["displayName"] = "Your Bank"
    return bad


def _unsigned(w: World) -> Any:
    cred = name_vc(w)
    del cred["proof"]
    return cred


def _ed25519_2020(w: World) -> Any:
    cred = name_vc(w)
    cred["proof"] = {"type": "Ed25519Signature2020", "proofValue": "z1"}
    return cred


def _status_unknown(w: World) -> Any:
    return name_vc(w, status=status_entry("https://voice.net/status/unpublished", 1))


def _malformed(w: World) -> Any:
    return {"type": ["VerifiableCredential", "DisplayNameCredential"], "proof": {}}


BAD: dict[str, tuple[Callable[[World], Any], str]] = {
    "expired": (_expired, "expired"),
    "not-yet-valid": (_not_yet, "not valid yet"),
    "revoked": (_revoked, "revoked by its issuer"),
    "wrong-subject": (_wrong_subject, "issued to a different identity"),
    "wrong-issuer": (_wrong_issuer, "issuer not trusted for this claim"),
    "tampered": (_tampered, "signature does not verify (altered or forged)"),
    "unsigned": (_unsigned, "unsigned"),
    "unsupported-proof": (_ed25519_2020, "unsupported proof type"),
    "status-unknown": (_status_unknown, "revocation status could not be checked"),
    "malformed": (_malformed, "malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_credential_renders_its_own_reason_and_no_verification(
    world: World, case: str
) -> None:
    make, text = BAD[case]
    shown = render(world, make_rcid([make(world)], display_name="James Ferris"))
    assert shown.name == "James Ferris"  # still shown, as the caller's claim
    assert not shown.name_verified
    assert shown.name_basis == "Name claimed by the caller; not verified"
    assert shown.verified_by == ()
    assert shown.basis_lines == ()
    assert not shown.avatar_verified
    assert len(shown.unverified) == 1
    assert shown.unverified[0].endswith(": " + text)
    assert shown.checks[0].reason == text


def test_suspended_reason(world: World) -> None:
    cred = _suspended(world)
    world.status.set(5)
    listed = issue_status_list_credential(
        world.voice, STATUS_URL, world.status, now=NOW, purpose="suspension"
    )
    shown = render(world, make_rcid([cred]), status_lists={STATUS_URL: listed}.get)
    assert shown.unverified == ("DisplayNameCredential from voice.net: suspended by its issuer",)


def test_bad_reasons_are_distinct() -> None:
    texts = [text for _, text in BAD.values()]
    assert len(set(texts)) == len(texts)
    assert len(set(FAILURE_TEXT.values())) == len(FAILURE_TEXT)


def test_one_good_one_bad(world: World) -> None:
    shown = render(world, make_rcid([_tampered(world), reputation_vc(world)]))
    assert not shown.name_verified
    assert shown.verified_by == ("Verified by TrustGraph",)
    assert shown.unverified == (
        "DisplayNameCredential from voice.net: signature does not verify (altered or forged)",
    )


def test_claimed_name_and_avatar_without_credentials(world: World) -> None:
    shown = render(world, make_rcid([], display_name="Totally Your Bank", avatar="https://x/logo"))
    assert (shown.name, shown.name_verified) == ("Totally Your Bank", False)
    assert (shown.avatar, shown.avatar_verified) == ("https://x/logo", False)


def test_credential_name_wins_over_the_claim(world: World) -> None:
    shown = render(world, make_rcid([name_vc(world)], display_name="Someone Else"))
    assert shown.name == "James Ferris"
    assert shown.name_verified


def test_organization_logo_is_verified_only_inside_the_credential(world: World) -> None:
    org = issue_credential(
        world.registry,
        "OrganizationCredential",
        {"id": world.caller.did, "organization": "ACME Corp", "logo": "https://acme.example/l.png"},
        now=NOW,
    )
    shown = render(world, make_rcid([org], avatar="https://evil/l.png"))
    assert shown.organization == "ACME Corp"
    assert (shown.avatar, shown.avatar_verified) == ("https://acme.example/l.png", True)
    assert shown.basis_lines == ("Organization credential issued by registry.example",)


def test_no_rcid_and_malformed_rcid(world: World) -> None:
    nothing = render(world, None, display_name="Carol")
    assert (nothing.name, nothing.name_verified, nothing.problem) == ("Carol", False, None)
    broken = render(world, {"type": "rcid.v1", "credentials": "not a list"})
    assert broken.problem is not None
    assert broken.checks == ()
    assert render(world, None).name_basis == "No name presented"


def test_make_rcid_is_schema_checked(world: World) -> None:
    with pytest.raises(SchemaError):
        make_rcid([name_vc(world)] * 9)  # at most 8 credentials
    with pytest.raises(SchemaError):
        make_rcid([], avatar="not a uri")


def test_gateway_tel_claim_shapes_the_identity_basis(world: World) -> None:
    gw = "did:web:gw.example"
    payload = {
        "type": "invite",
        "identity": {
            "claims": [
                {
                    "type": "tel",
                    "number": "+15551234567",
                    "attestation": "A",
                    "verified": True,
                    "verifier": gw,
                },
                make_rcid([]),
            ]
        },
    }
    shown = render_caller(payload, gw, now=NOW, documents=world.documents, trust=trust(world))
    assert shown.identity_basis == "Gateway attested by gw.example · STIR attestation A (verified)"


def test_credentials_are_checked_for_the_identity_not_the_device(world: World) -> None:
    # A credential for the caller's identity, presented by the caller, verifies; the same
    # credential shown for another identity (a device acting for someone else) does not.
    rcid = make_rcid([name_vc(world)])
    other = verify_rcid(
        rcid, caller=world.mallory.did, now=NOW, documents=world.documents, trust=trust(world)
    )
    assert other.unverified == (
        "DisplayNameCredential from voice.net: issued to a different identity",
    )
