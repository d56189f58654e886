"""Every example envelope in docs/profiles.md is real: it verifies with the pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dsip.core.envelope import Verifier
from dsip.core.metering import verify_access_token

DOC = Path(__file__).resolve().parents[1] / "docs" / "profiles.md"


def _json_blocks(text: str) -> list[object]:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


def test_profile_examples_verify() -> None:
    text = DOC.read_text()
    envelopes = [
        b
        for b in _json_blocks(text)
        if isinstance(b, dict) and set(b) == {"protected", "payload", "signature"}
    ]
    assert len(envelopes) >= 5
    for env in envelopes:
        issued = json.loads(__import__("base64").urlsafe_b64decode(env["payload"] + "==="))[
            "issued_at"
        ]
        v = Verifier().verify(env, now=issued)
        assert v.type in {"presence", "ack", "sealed", "push-subscription", "usage-record"}
    (jwt,) = re.findall(r"```\n(ey[^\n]+)\n```", text)
    token = verify_access_token(jwt, audience="turn", now=1_795_500_000)
    assert token.balance_msat == 60_000
