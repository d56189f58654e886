"""Write docs/profiles/*.md: one page per DSIP profile dsip defines beyond v0.7, with
examples made by the code (presence record, message profile, sealed envelope, RCID,
geo-attestation, access token, custody ack, push subscription, usage record).

Run: ``.venv/bin/python scripts/gen_profiles_doc.py``. ``tests/test_docs.py`` re-verifies every
example envelope, credential and attestation in the pages with the real verifiers, so the
pages cannot drift into fiction. Keys are deterministic test-fixture keys (sha256 of a label)
— never real keys; the message example's ratchet keys are fresh on every run.
``docs/profiles.md`` is the hand-written index and design notes that link here.
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
OUT = Path(__file__).resolve().parents[1] / "docs" / "profiles"


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
    parts: list[tuple[str, str]] = []
    presence = json.loads(
        make_presence(
            alice, endpoints={"ws": ["wss://relay.example/dsip"]}, seq=1, now=NOW, geohash="dr5ru7"
        )
    )
    parts.append(
        (
            "presence",
            section(
                "presence/1.0 — `presence`",
                "presence",
                "Where a DID is reachable now (seed §5.1), stored in the DHT under "
                '`sha256("dsip-presence:" + DID)` and merged into region buckets by geohash prefix. '
                "60–300 s lifetime, strictly increasing `seq`, signed by the DID or a delegated device.",
                presence,
            ),
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
        (
            "ack",
            section(
                "store-and-forward/1.0 — `ack`",
                "ack",
                "A device takes custody of envelopes its relay delivered from storage; the relay deletes "
                "its copies only then. Negotiated in `hello` (`dsip.extensions`).",
                ack,
            ),
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
        (
            "sealed",
            section(
                "sealed-envelope/1.0 — `sealed` (the seed's `dsip.envelope.v1`)",
                "sealed",
                "HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) of a complete "
                "inner signed envelope, sealed to the recipient's X25519 key-agreement key. The relay "
                "sees sender connection, recipient, size and expiry only.",
                sealed,
            ),
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
        (
            "push-subscription",
            section(
                "push-wake/1.0 — `push-subscription`",
                "push-subscription",
                "A device registers a Web Push subscription (RFC 8030/8291) with its relay; pushes carry "
                "only `{relay, envelope_id}`, VAPID-signed (RFC 8292).",
                push,
            ),
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
        (
            "access-token",
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
            ),
        )
    )
    meter = Meter(verify_access_token(token, audience="turn", now=NOW), "turn", started_at=NOW)
    meter.update(now=NOW + 42, total_bytes=1_337_000)
    parts.append(
        (
            "usage-record",
            section(
                "metering/1.0 — `usage-record`",
                "usage-record",
                "What a metered service charged against a token, signed by the service, addressed to the "
                "token's subject.",
                usage_record(meter, relay, now=NOW + 42),
            ),
        )
    )
    parts += more_pages(alice, bob, relay)
    OUT.mkdir(exist_ok=True)
    for stem, text in parts:
        path = OUT / f"{stem}.md"
        path.write_text(PAGE_HEAD + "\n\n" + text.replace("## ", "# ", 1))
        print(f"wrote {path}")
    return 0


PAGE_HEAD = "<!-- generated by scripts/gen_profiles_doc.py; tests/test_docs.py re-verifies it -->"


def more_pages(alice: KeyPair, bob: KeyPair, relay: KeyPair) -> list[tuple[str, str]]:
    """The message profile, RCID and geo-attestation pages."""
    import os
    import tempfile

    from dsip.core.emergency.geo import FileKeyStore, Fix, attest
    from dsip.core.trust.rcid import identity_with_rcid, make_rcid
    from dsip.core.trust.vc import issue_credential
    from dsip.messaging.messages import Messenger
    from dsip.messaging.prekeys import PrekeyStore, verify_prekey_bundle
    from dsip.messaging.session_store import SessionStore

    pages: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        a = Messenger(alice, SessionStore.open(Path(tmp) / "a.db", key=os.urandom(32)))
        b = Messenger(bob, SessionStore.open(Path(tmp) / "b.db", key=os.urandom(32)))
        store = PrekeyStore.open(Path(tmp) / "prekeys.db")
        store.publish(verify_prekey_bundle(b.prekey_bundle(now=NOW, target=2), now=NOW), now=NOW)
        for claimed in store.claim_identity(bob.did, now=NOW):
            a.learn_claimed(claimed, now=NOW)
        sent = a.conversation(bob.did).send_text("Dinner at eight?", now=NOW)
        msg = dict(sent.outbound[0].envelope)
        store.close()
        a.store.close()
        b.store.close()
    pages.append(
        (
            "msg",
            section(
                "message profile — `msg` (seed §8; X3DH + Double Ratchet)",
                "msg",
                "An end-to-end encrypted message to one device of a peer: `content` holds the "
                "Double Ratchet header and ciphertext (`enc`, `ciphertext`, `aad`); the first "
                "message of a session also carries the X3DH initiation (which one-time prekey "
                "was used). Receipts, typing and edits (`receipt`, `typing`, `msgUpdate`) travel "
                "inside the ciphertext (schema `msg-inner`), so the relay sees only sender, "
                "recipient device, size and time. This example is a real first message from "
                "alice to bob's device; its ratchet keys are fresh on every generation.",
                msg,
            ),
        )
    )
    voice = key("voice.net")
    credential = issue_credential(
        voice,
        "DisplayNameCredential",
        {"id": alice.did, "displayName": "Alice Example"},
        now=NOW,
        valid_until=NOW + 86_400,
    )
    rcid = make_rcid([credential], display_name="Alice Example")
    invite = sign_envelope(
        make_payload(
            "invite",
            sender=alice.did,
            now=NOW,
            to=bob.did,
            media=[{"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]}],
            transports=[{"id": "transport:webrtc"}],
            identity=identity_with_rcid(rcid),
        ),
        alice,
    )  # fmt: skip
    pages.append(
        (
            "rcid",
            section(
                "RCID — `rcid.v1` in `identity.claims` (seed §6.2)",
                "rcid",
                "Rich Caller ID rides in an invite's (or introduction's) `identity.claims`: a "
                "claimed display name and avatar plus verifiable credentials. The callee verifies "
                "every credential (signature, issuer trusted for that type, subject = the "
                "caller, validity, status) and shows *Verified by <issuer>* only for what "
                "verified (`dsip.core.trust.rcid`). Here alice presents a DisplayNameCredential "
                "(eddsa-jcs-2022) issued by `voice.net`'s key.",
                invite,
            ),
        )
    )
    device = FileKeyStore(key("alice-phone-secure-element"))
    geo = attest(
        Fix(lat=42.6526, lon=-73.7562, accuracy=5, method="gnss", timestamp=NOW - 2),
        identity_key=alice,
        device=device,
        seq=1,
        now=NOW,
    )
    pages.append(
        (
            "geo-attestation",
            section(
                "geo-attestation — emergency/1.0 (seed §20.2)",
                "geo-attestation",
                "A location signed twice: the `location` object by a device key kept apart from "
                "the DID key (here a file key store; a TPM 2.0 where available), the outer "
                "record (`did`, `location`, `seq`, `exp`) by the DID key. Coordinates are integers "
                "in 1e-7 degree. It travels only inside an emergency invite's `emergency` member, "
                "HPKE-sealed to the PSAP, never in clear (`dsip.core.emergency.geo`).",
                None,
                "Example (verifies with `dsip.core.emergency.geo.verify_attestation`):\n\n"
                "```json\n" + json.dumps(geo, indent=2) + "\n```",
            ),
        )
    )
    return pages


if __name__ == "__main__":
    sys.exit(main())
