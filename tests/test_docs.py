"""Every example in docs/profiles/ is real: envelopes verify with the pipeline, the access
token, the credential in the RCID page and the geo-attestation with their own verifiers."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from dsip.core.emergency.geo import verify_attestation
from dsip.core.envelope import Verifier
from dsip.core.metering import verify_access_token
from dsip.core.trust.rcid import IssuerTrust, render_caller

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted((DOCS / "profiles").glob("*.md"))


def _json_blocks(text: str) -> list[object]:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


def _envelopes(text: str) -> list[dict[str, str]]:
    return [
        b
        for b in _json_blocks(text)
        if isinstance(b, dict) and set(b) == {"protected", "payload", "signature"}
    ]


def _issued_at(env: dict[str, str]) -> int:
    return int(json.loads(base64.urlsafe_b64decode(env["payload"] + "==="))["issued_at"])


def test_one_page_per_profile_and_the_index_links_each() -> None:
    names = {p.stem for p in PAGES}
    assert {"presence", "msg", "sealed", "rcid", "geo-attestation", "access-token"} <= names
    index = (DOCS / "profiles.md").read_text()
    for name in names:
        assert f"(profiles/{name}.md)" in index


def test_every_example_envelope_verifies() -> None:
    seen = set()
    for page in PAGES:
        for env in _envelopes(page.read_text()):
            v = Verifier().verify(env, now=_issued_at(env))
            seen.add(v.type)
    assert seen >= {"presence", "ack", "sealed", "push-subscription", "usage-record", "msg"}
    assert "invite" in seen


def test_access_token_example_verifies() -> None:
    (jwt,) = re.findall(
        r"```\n(ey[^\n]+)\n```", (DOCS / "profiles" / "access-token.md").read_text()
    )
    token = verify_access_token(jwt, audience="turn", now=1_795_500_000)
    assert token.balance_msat == 60_000


def test_rcid_example_shows_verified_by_its_issuer() -> None:
    (env,) = _envelopes((DOCS / "profiles" / "rcid.md").read_text())
    v = Verifier().verify(env, now=_issued_at(env))
    rcid = v.payload["identity"]["claims"][0]
    issuer = rcid["credentials"][0]["issuer"]
    shown = render_caller(
        v.payload,
        v.identity,
        now=_issued_at(env),
        documents=None,
        trust=IssuerTrust.of({"DisplayNameCredential": [issuer]}, {issuer: "voice.net"}),
    )
    assert shown.name == "Alice Example"
    assert shown.verified_by == ("Verified by voice.net",)


def test_geo_attestation_example_verifies() -> None:
    (record,) = _json_blocks((DOCS / "profiles" / "geo-attestation.md").read_text())
    assert isinstance(record, dict)
    located = verify_attestation(record, documents=None, now=1_795_500_000)
    assert located.did == record["did"]
