"""Write docs/profiles.md: every DSIP profile dsip defines beyond v0.7, with examples made by the code.

Run: ``.venv/bin/python scripts/gen_profiles_doc.py``. ``tests/test_docs.py`` re-verifies every
example envelope in the page with the real pipeline, so the page cannot drift into fiction.
Keys are deterministic test-fixture keys (sha256 of a label) — never real keys.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from dsip.core.b64 import b64url_decode
from dsip.core.envelope import make_payload, sign_envelope
from dsip.core.identity import KeyPair, did_key_document
from dsip.core.metering import Meter, issue_access_token, usage_record, verify_access_token
from dsip.core.payloads.schema import schema_document
from dsip.core.presence import make_presence
from dsip.core.sealed import seal

NOW = 1_795_500_000
OUT = Path(__file__).resolve().parents[1] / "docs" / "profiles.md"


def key(label: str) -> KeyPair:
    """Deterministic documentation key (TEST FIXTURE ONLY)."""
    return KeyPair.from_seed(hashlib.sha256(f"dsip-docs:{label}".encode()).digest())


def decoded(envelope: dict[str, str]) -> dict[str, Any]:
    return {
        "protected": json.loads(b64url_decode(envelope["protected"])),
        "payload": json.loads(b64url_decode(envelope["payload"])),
    }


def section(
    title: str, schema: str, intro: str, envelope: dict[str, str] | None, extra: str = ""
) -> str:
    doc = schema_document(schema)
    out = [
        f"## {title}",
        "",
        intro,
        "",
        f"Schema: `src/dsip/core/payloads/schemas/{schema}.schema.json` — {doc.get('title')}.",
        "",
    ]
    if envelope is not None:
        out += [
            "Decoded (protected header and payload):",
            "",
            "```json",
            json.dumps(decoded(envelope), indent=2),
            "```",
            "",
        ]
        out += [
            "On the wire (verifies with `dsip envelope verify`):",
            "",
            "```json",
            json.dumps(envelope, indent=2),
            "```",
            "",
        ]
    if extra:
        out += [extra, ""]
    return "\n".join(out)


def main() -> int:
    alice, bob, relay = key("alice"), key("bob"), key("relay")
    parts = [
        "# dsip profiles beyond DSIP v0.7",
        "",
        "Everything here rides in ordinary DSIP-JOSE envelopes (v0.7 §10) and passes the same",
        "verification pipeline; each profile has its own JSON Schema. Examples are produced by",
        "`scripts/gen_profiles_doc.py` with deterministic documentation keys, and",
        "`tests/test_docs.py` re-verifies them.",
        "",
    ]
    presence = json.loads(
        make_presence(
            alice, endpoints={"ws": ["wss://relay.example/dsip"]}, seq=1, now=NOW, geohash="dr5ru7"
        )
    )
    parts.append(
        section(
            "presence/1.0 — `presence`",
            "presence",
            "Where a DID is reachable now (seed §5.1), stored in the DHT under "
            '`sha256("dsip-presence:" + DID)` and merged into region buckets by geohash prefix. '
            "60–300 s lifetime, strictly increasing `seq`, signed by the DID or a delegated device.",
            presence,
        )
    )
    ack = sign_envelope(
        make_payload(
            "ack",
            sender=bob.did,
            now=NOW,
            profiles=[],
            to=relay.did,
            acks=["01M86CB0A0JCTNZBKGF459RA3Q"],
        ),
        bob,
    )
    parts.append(
        section(
            "store-and-forward/1.0 — `ack`",
            "ack",
            "A device takes custody of envelopes its relay delivered from storage; the relay deletes "
            "its copies only then. Negotiated in `hello` (`dsip.extensions`).",
            ack,
        )
    )
    inner = sign_envelope(
        make_payload(
            "introduction",
            sender=alice.did,
            now=NOW,
            to=bob.did,
            purpose="Hello Bob",
            identity={"display_name": "Alice", "claims": []},
            ttl=86_400,
        ),
        alice,
    )
    sealed = seal(inner, sender=alice, recipient=did_key_document(bob.did), now=NOW)
    parts.append(
        section(
            "sealed-envelope/1.0 — `sealed` (the seed's `dsip.envelope.v1`)",
            "sealed",
            "HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) of a complete "
            "inner signed envelope, sealed to the recipient's X25519 key-agreement key. The relay "
            "sees sender connection, recipient, size and expiry only.",
            sealed,
        )
    )
    push = sign_envelope(
        make_payload(
            "push-subscription",
            sender=bob.did,
            now=NOW,
            profiles=[],
            to=relay.did,
            endpoint="https://push.example/push/abc",
            keys={
                "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                "auth": "tBHItJI5svbpez7KI4CCXg",
            },
        ),
        bob,
    )
    parts.append(
        section(
            "push-wake/1.0 — `push-subscription`",
            "push-subscription",
            "A device registers a Web Push subscription (RFC 8030/8291) with its relay; pushes carry "
            "only `{relay, envelope_id}`, VAPID-signed (RFC 8292).",
            push,
        )
    )
    token = issue_access_token(
        relay,
        subject=alice.did,
        balance_msat=60_000,
        msat_per_second=100,
        now=NOW,
        ttl=3600,
        audience=("turn", "sfu"),
    )
    parts.append(
        section(
            "metering/1.0 — access token (JWT)",
            "access-token",
            "A prepaid token for TURN and SFU (seed §7, §17): a JWT signed EdDSA by a relay or payment "
            "issuer; `kid` resolves through the issuer's DID document.",
            None,
            "Example (compact JWT):\n\n```\n"
            + token
            + "\n```\n\nClaims:\n\n```json\n"
            + json.dumps(json.loads(b64url_decode(token.split(".")[1])), indent=2)
            + "\n```",
        )
    )
    meter = Meter(verify_access_token(token, audience="turn", now=NOW), "turn", started_at=NOW)
    meter.update(now=NOW + 42, total_bytes=1_337_000)
    parts.append(
        section(
            "metering/1.0 — `usage-record`",
            "usage-record",
            "What a metered service charged against a token, signed by the service, addressed to the "
            "token's subject.",
            usage_record(meter, relay, now=NOW + 42),
        )
    )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(parts))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
