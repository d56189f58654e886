"""SD-JWT VC selective disclosure: only the chosen claims reach the verifier, and every gap
of the underlying library that the module docstring lists is closed."""

from __future__ import annotations

import json

import pytest

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.trust.disclosure import (
    issue_sd_jwt_vc,
    present_sd_jwt_vc,
    verify_sd_jwt_vc,
)
from dsip.core.trust.vc import CredentialError
from tests.trust.trustfix import ACME, DAY, NOW, World

VERIFIER = "did:web:callee.example"


@pytest.fixture(scope="module")
def world() -> World:
    return World()


def _issued(world: World, **kw: object) -> str:
    return issue_sd_jwt_vc(
        world.acme,
        "RoleCredential",
        {"id": world.caller.did, "role": "support", "organization": "Acme Bank"},
        holder=world.caller,
        now=kw.pop("now", NOW),  # type: ignore[arg-type]
        valid_until=kw.pop("valid_until", NOW + DAY),  # type: ignore[arg-type]
    )


def _verify(world: World, presentation: object, **kw: object) -> object:
    args: dict[str, object] = {
        "documents": world.documents,
        "now": NOW,
        "audience": VERIFIER,
        "nonce": "n-1",
        "trusted_issuers": {"RoleCredential": [ACME]},
        "subject": world.caller.did,
    }
    args.update(kw)
    return verify_sd_jwt_vc(presentation, **args)  # type: ignore[arg-type]


def _present(world: World, issued: str, disclose: list[str], **kw: str) -> str:
    return present_sd_jwt_vc(
        issued,
        disclose,
        holder=kw.get("holder", world.caller),  # type: ignore[arg-type]
        audience=kw.get("audience", VERIFIER),
        nonce=kw.get("nonce", "n-1"),
        now=NOW,
    )


def test_only_chosen_claims_are_disclosed(world: World) -> None:
    issued = _issued(world)
    shown = _present(world, issued, ["role"])
    assert "Acme Bank" not in json.dumps(
        [b64url_decode(p.split(".")[1] if "." in p else p).decode(errors="replace")
         for p in shown.split("~") if p]
    )  # fmt: skip
    result = _verify(world, shown)
    assert result.claims == {"role": "support"}  # type: ignore[attr-defined]
    assert result.withheld == 1  # type: ignore[attr-defined]
    both = _verify(world, _present(world, issued, ["role", "organization"]))
    assert both.claims == {"role": "support", "organization": "Acme Bank"}  # type: ignore[attr-defined]
    assert both.issuer == ACME  # type: ignore[attr-defined]


def _bad(world: World, presentation: object, code: str, **kw: object) -> None:
    with pytest.raises(CredentialError) as err:
        _verify(world, presentation, **kw)
    assert err.value.code == code


def test_bad_presentations_each_get_their_reason(world: World) -> None:
    issued = _issued(world)
    good = _present(world, issued, ["role"])
    jwt, disclosure, kb = good.split("~")
    head, body, sig = jwt.split(".")
    payload = json.loads(b64url_decode(body))
    # a disclosure the issuer never signed, for a claim it did not attest
    forged = b64url_encode(json.dumps(["salt", "organization", "Your Bank"]).encode())
    _bad(world, f"{jwt}~{disclosure}~{forged}~{kb}", "credential-signature")
    # the signed payload altered
    payload["vct"] = "RoleCredential"
    payload["sub"] = world.mallory.did
    altered = b64url_encode(json.dumps(payload).encode())
    _bad(world, f"{head}.{altered}.{sig}~{disclosure}~{kb}", "credential-signature", subject=None)
    _bad(world, f"{head}.{body}.~{disclosure}~{kb}", "credential-unsigned")
    _bad(
        world, good, "credential-issuer", trusted_issuers={"RoleCredential": ["did:web:x.example"]}
    )
    _bad(world, good, "credential-expired", now=NOW + 2 * DAY)
    _bad(world, good, "credential-not-yet-valid", now=NOW - DAY)
    _bad(world, good, "credential-holder", audience="did:web:someone.else")
    _bad(world, good, "credential-holder", nonce="n-2")
    _bad(world, f"{jwt}~{disclosure}~", "credential-holder")  # no key binding
    _bad(world, good, "credential-holder", now=NOW + 3600)  # a replayed, stale key binding
    # presented by mallory, who holds the issuance but not the subject's key
    _bad(world, _present(world, issued, ["role"], holder=world.mallory), "credential-holder")
    _bad(world, good, "credential-subject", subject=world.mallory.did)
    for hostile in ("", "~", "a.b.c~", 42, "x" * 20_000, f"{jwt}~!!~{kb}", f"{head}.{body}"):
        with pytest.raises(CredentialError):
            _verify(world, hostile)


def test_issued_to_someone_else_cannot_name_the_presenter(world: World) -> None:
    """A credential whose ``cnf`` is not a key of its ``sub`` is refused."""
    with pytest.raises(CredentialError):
        issue_sd_jwt_vc(
            world.acme,
            "RoleCredential",
            {"id": world.caller.did, "role": "x"},
            holder=world.mallory,
            now=NOW,
        )
