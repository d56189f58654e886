"""The verification pipeline: round trips, interop with joserfc, hostile input, no side effects."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import ReplayStore, Verifier, make_payload, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair, StaticDocuments, did_web_document
from dsip.core.jws import MAX_FRAME_BYTES, encode_frame, sign_bytes
from dsip.errors import DsipError
from tests.conftest import NOW, vector_key

BOB = "did:web:example.com:users:bob"


def _invite(key: KeyPair, now: int = NOW, **over: Any) -> dict[str, Any]:
    p = example_invite(key.did, BOB, now=now)
    p.update(over)
    return p


def _code(verifier: Verifier, env: Any, now: int = NOW, **kw: Any) -> str:
    with pytest.raises(DsipError) as err:
        verifier.verify(env, now=now, **kw)
    return err.value.code


def test_sign_verify_round_trip(alice: KeyPair) -> None:
    env = sign_envelope(_invite(alice), alice)
    v = Verifier().verify(env, now=NOW)
    assert (v.type, v.signer, v.identity) == ("invite", alice.did, alice.did)
    assert v.payload["to"] == BOB


def test_frame_round_trip_is_within_cap(alice: KeyPair) -> None:
    frame = encode_frame(sign_envelope(_invite(alice), alice))
    assert 800 < len(frame) < MAX_FRAME_BYTES
    assert Verifier().verify(frame, now=NOW).type == "invite"


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # RFC 9864; DSIP v0.7 names "EdDSA"
def test_joserfc_verifies_our_envelopes_and_we_verify_its(alice: KeyPair) -> None:
    from joserfc import jws
    from joserfc.jwk import OKPKey

    jwk = OKPKey.import_key(
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(alice.public_key.public_bytes_raw()),
            "d": b64url_encode(alice.seed()),
        }
    )
    ours = sign_envelope(_invite(alice), alice)
    obj = jws.deserialize_json(ours, jwk, algorithms=["EdDSA"])
    assert json.loads(obj.payload)["from"] == alice.did
    payload = json.dumps(_invite(alice)).encode()
    theirs = jws.serialize_json(
        {"protected": {"alg": "EdDSA", "kid": alice.kid}}, payload, jwk, algorithms=["EdDSA"]
    )
    assert Verifier().verify(theirs, now=NOW).identity == alice.did


def test_rejected_envelopes_leave_the_replay_store_untouched(alice: KeyPair) -> None:
    verifier = Verifier()
    good = _invite(alice)
    bad_schema = dict(good, media=[])  # signed fine, fails stage 13 after stages 1–11 passed
    assert _code(verifier, sign_envelope(bad_schema, alice)) == "schema-invalid"
    assert len(verifier.replay) == 0
    # The same id, now valid, is still accepted: the rejected copy did not burn it.
    assert verifier.verify(sign_envelope(good, alice), now=NOW).id == good["id"]
    assert _code(verifier, sign_envelope(good, alice)) == "duplicate-id"
    assert len(verifier.replay) == 1


def test_tamper_replay_expiry_and_future(alice: KeyPair) -> None:
    verifier = Verifier()
    env = sign_envelope(_invite(alice), alice)
    tampered = dict(
        env, payload=b64url_encode(b64url_decode(env["payload"]).replace(b"Alice", b"Alicf"))
    )
    assert _code(verifier, tampered) == "signature-invalid"
    verifier.verify(env, now=NOW)
    assert _code(verifier, env) == "duplicate-id"
    with pytest.raises(DsipError) as err:
        verifier.verify(sign_envelope(_invite(alice), alice), now=NOW + 31)
    assert (err.value.code, err.value.reason) == ("expired", "session.expired")
    assert _code(verifier, sign_envelope(_invite(alice, now=NOW + 301), alice)) == "replay-window"


def test_replay_store_evicts_by_time_and_refuses_when_full() -> None:
    store = ReplayStore(capacity=2, window=300)
    store.add("A", NOW)
    store.add("B", NOW + 10)
    with pytest.raises(DsipError) as err:
        store.check("C", NOW)
    assert (err.value.code, err.value.reason) == ("replay-store-full", "transport.rate-limited")
    store.check("C", NOW + 301)  # A left the window: evicted, room again
    assert "A" not in store
    assert "B" in store
    store.purge(NOW + 311)
    assert len(store) == 0


def test_device_signs_for_identity_with_header_delegation(alice: KeyPair) -> None:
    phone = KeyPair.generate()
    deleg = issue_delegation(alice, phone.did, issued_at=NOW - 10, expires_at=NOW + 3600)
    env = sign_envelope(_invite(phone, **{"from": alice.did}), phone, delegations=[deleg])
    v = Verifier().verify(env, now=NOW)
    assert (v.signer, v.identity) == (phone.did, alice.did)
    # Without the delegation the same device cannot speak for alice.
    env2 = sign_envelope(_invite(phone, **{"from": alice.did}), phone)
    assert _code(Verifier(), env2) == "signer-mismatch"
    # A delegation without dsip.signaling does not bind.
    weak = issue_delegation(
        alice,
        phone.did,
        issued_at=NOW - 10,
        expires_at=NOW + 3600,
        capabilities=["dsip.media.interactive"],
    )
    env3 = sign_envelope(_invite(phone, **{"from": alice.did}), phone, delegations=[weak])
    assert _code(Verifier(), env3) == "delegation-capability"


def test_rotation_revokes_delegations_of_the_retired_key(bob: KeyPair) -> None:
    phone, key2 = KeyPair.generate(), KeyPair.generate()
    old_doc = did_web_document(BOB, [("key-1", bob.public_key_multibase)])
    new_doc = did_web_document(BOB, [("key-2", key2.public_key_multibase)])
    bob1 = KeyPair(bob.private_key, f"{BOB}#key-1")
    deleg = issue_delegation(
        bob1, phone.did, issued_at=NOW - 10, expires_at=NOW + 3600, subject=BOB
    )
    progress = make_payload(
        "progress",
        sender=BOB,
        now=NOW,
        to=vector_key("alice").did,
        session="01K742SG001QG79X9HH56TS8SW",
        status="ringing",
    )
    env = sign_envelope(progress, phone, delegations=[deleg])
    assert Verifier(StaticDocuments({BOB: old_doc})).verify(env, now=NOW).identity == BOB
    assert _code(Verifier(StaticDocuments({BOB: new_doc})), env) == "delegation-invalid"


def test_hello_traffic_gate(alice: KeyPair) -> None:
    invite = sign_envelope(_invite(alice), alice)
    with pytest.raises(DsipError) as err:
        Verifier().verify(invite, now=NOW, hello_verified=False)
    assert err.value.reason == "transport.hello-required"
    hello = sign_envelope(
        make_payload("hello", sender=alice.did, now=NOW, bindings=["ws/1.0"]), alice
    )
    assert Verifier().verify(hello, now=NOW, hello_verified=False).type == "hello"


def test_hello_on_behalf_without_delegation_is_hello_rejected(alice: KeyPair) -> None:
    phone = KeyPair.generate()
    hello = make_payload(
        "hello", sender=phone.did, now=NOW, bindings=["ws/1.0"], on_behalf_of=alice.did
    )
    with pytest.raises(DsipError) as err:
        Verifier().verify(sign_envelope(hello, phone), now=NOW)
    assert (err.value.code, err.value.reason) == ("signer-mismatch", "transport.hello-rejected")


# --- hostile input ---------------------------------------------------------------------


def _resign(
    key: KeyPair, payload_bytes: bytes, header: dict[str, Any] | None = None
) -> dict[str, str]:
    h = header or {"alg": "EdDSA", "kid": key.kid}
    protected = b64url_encode(json.dumps(h).encode())
    body = b64url_encode(payload_bytes)
    return {
        "protected": protected,
        "payload": body,
        "signature": b64url_encode(key.sign(f"{protected}.{body}".encode())),
    }


def _payload_bytes(key: KeyPair) -> bytes:
    return json.dumps(_invite(key)).encode()


def test_oversize_frame_rejected_before_parsing() -> None:
    frame = "{" + " " * (MAX_FRAME_BYTES + 1)  # not even JSON: the cap comes first
    with pytest.raises(DsipError) as err:
        Verifier().verify(frame, now=NOW)
    assert (err.value.code, err.value.reason) == ("frame-too-large", "transport.envelope-too-large")


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda k, b: b.replace(b'"to": "did', b'"to": "x", "to": "did'), "payload-not-json"),
        (lambda k, b: b'{"a":' * 200 + b"1" + b"}" * 200, "payload-not-json"),
        (lambda k, b: b.replace(b"Alice", b"Al\xffce"), "payload-not-utf8"),
        (
            lambda k, b: b.replace(b'"issued_at": 1760000000', b'"issued_at": NaN'),
            "payload-not-json",
        ),
        (
            lambda k, b: b.replace(b'"issued_at": 1760000000', b'"issued_at": Infinity'),
            "payload-not-json",
        ),
        (
            lambda k, b: b.replace(b'"issued_at": 1760000000', b'"issued_at": 1760000000.0'),
            "payload-float",
        ),
        (lambda k, b: b.replace(b"48000", b"48000.5"), "payload-float"),
        (
            lambda k, b: b.replace(
                b'"issued_at": 1760000000', b'"issued_at": 99999999999999999999'
            ),
            "payload-not-json",
        ),
        (
            lambda k, b: b.replace(b'"issued_at": 1760000000', b'"issued_at": "1760000000"'),
            "payload-shape",
        ),
        (lambda k, b: b.replace(b'"issued_at": 1760000000', b'"issued_at": true'), "payload-shape"),
        (lambda k, b: b.replace(b'"type": "invite"', b'"type": 7'), "payload-shape"),
        (
            lambda k, b: b.replace(b'"dsip": {', b'"dsip": [{').replace(
                b'"critical": []}', b'"critical": []}]'
            ),
            "payload-shape",
        ),
        (lambda k, b: b"[1,2]", "payload-not-json"),
        (lambda k, b: b'"just a string"', "payload-not-json"),
        (lambda k, b: b.replace(b'"media": [', b'"media": 5, "x": ['), "schema-invalid"),
        (lambda k, b: b.replace(b'"to": "did:web', b'"to": 12, "y": "did:web'), "schema-invalid"),
    ],
)
def test_hostile_payloads(alice: KeyPair, mutate: Any, code: str) -> None:
    env = _resign(alice, mutate(alice, _payload_bytes(alice)))
    verifier = Verifier()
    assert _code(verifier, env) == code
    assert len(verifier.replay) == 0


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ({"alg": "EdDSA"}, "header-invalid"),
        ({"kid": "x"}, "header-invalid"),
        ({"alg": "none", "kid": "did:key:z#z"}, "alg-unsupported"),
        ({"alg": "ES256", "kid": "did:key:z#z"}, "alg-unsupported"),
        ({"alg": "EdDSA", "kid": 5}, "header-invalid"),
        ({"alg": "EdDSA", "kid": "did:key:abc"}, "kid-invalid"),
        ({"alg": "EdDSA", "kid": "did:key:z6Mkabc#z6Mkabc"}, "kid-unresolvable"),
        ({"alg": "EdDSA", "kid": "did:web:nowhere.example#key-1"}, "kid-unresolvable"),
        ({"alg": "EdDSA", "kid": "K", "crit": ["exp"]}, "header-invalid"),
        ({"alg": "EdDSA", "kid": "K", "b64": False}, "header-invalid"),
        ({"alg": "EdDSA", "kid": "K", "delegations": "nope"}, "header-invalid"),
    ],
)
def test_hostile_headers(alice: KeyPair, header: dict[str, Any], code: str) -> None:
    if header.get("kid") == "K":
        header = dict(header, kid=alice.kid)
    assert _code(Verifier(), _resign(alice, _payload_bytes(alice), header)) == code


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "x",
        None,
        {"protected": "a", "payload": "b"},
        {"protected": "a", "payload": "b", "signature": "c", "extra": "d"},
        {"protected": 1, "payload": "b", "signature": "c"},
        {"protected": "", "payload": "", "signature": ""},
        {"protected": "eyJ=", "payload": "e30", "signature": "AA"},
        {"protected": "eyJhbGciOiJFZERTQSJ9", "payload": "e30", "signature": "AF"},
    ],
)
def test_hostile_envelope_shapes(obj: Any) -> None:
    assert _code(Verifier(), obj) == "envelope-shape"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"protected":"a","protected":"b","payload":"c","signature":"d"}',
        b"\xff\xfe",
        b'{"protected":"a"',
        "[" * 5000,
    ],
)
def test_hostile_frames(frame: bytes | str) -> None:
    assert _code(Verifier(), frame) == "envelope-shape"


def test_truncated_signature_is_invalid(alice: KeyPair) -> None:
    env = sign_envelope(_invite(alice), alice)
    short = b64url_encode(b64url_decode(env["signature"])[:-3])  # canonical base64url, 61 bytes
    assert _code(Verifier(), dict(env, signature=short)) == "signature-invalid"


# --- properties ------------------------------------------------------------------------

_KEY = vector_key("alice")


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    name=st.text(max_size=60),
    extra=st.dictionaries(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True),
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        max_size=3,
    ),
)
def test_property_sign_verify_round_trip(name: str, extra: dict[str, str]) -> None:
    p = example_invite(_KEY.did, BOB, now=NOW, display_name=name[:256])
    p["policy"] = extra
    v = Verifier().verify(encode_frame(sign_envelope(p, _KEY)), now=NOW)
    assert v.payload == p


_ENV = sign_envelope(example_invite(_KEY.did, BOB, now=NOW), _KEY)


@settings(max_examples=150, deadline=None)
@given(member=st.sampled_from(["protected", "payload", "signature"]), data=st.data())
def test_property_any_flipped_byte_is_rejected(member: str, data: st.DataObject) -> None:
    raw = bytearray(b64url_decode(_ENV[member]))
    i = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[i] ^= 1 << bit
    forged = dict(_ENV, **{member: b64url_encode(bytes(raw))})
    with pytest.raises(DsipError):
        Verifier().verify(forged, now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_property_arbitrary_json_never_crashes(value: Any) -> None:
    for candidate in (
        value,
        {
            "protected": "eyJhbGciOiJFZERTQSJ9",
            "payload": b64url_encode(json.dumps(value).encode()),
            "signature": "AA",
        },
    ):
        with contextlib.suppress(DsipError):
            Verifier().verify(candidate, now=NOW)


def test_sign_bytes_carries_delegations_in_header(alice: KeyPair) -> None:
    env = sign_bytes(
        b"{}", alice, delegations=[{"protected": "a", "payload": "b", "signature": "c"}]
    )
    header = json.loads(b64url_decode(env["protected"]))
    assert header["delegations"][0]["payload"] == "b"


def test_recovery_rotation_needs_a_designated_recovery_key(bob: KeyPair) -> None:
    from dsip.core.delegation import make_key_rotation

    recovery, other, key2 = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    doc = did_web_document(
        BOB,
        [("key-1", bob.public_key_multibase), ("key-9", other.public_key_multibase)],
        recovery=[("recovery-1", recovery.public_key_multibase)],
    )
    docs = StaticDocuments({BOB: doc})
    nxt = KeyPair(key2.private_key, f"{BOB}#key-2")
    common = {
        "subject": BOB,
        "previous": f"{BOB}#key-1",
        "next_key": nxt,
        "reason": "lost",
        "now": NOW,
    }
    good = make_key_rotation(
        KeyPair(recovery.private_key, f"{BOB}#recovery-1"), recovery=True, **common
    )
    assert Verifier(docs).verify(good, now=NOW).payload["recovery"] is True
    # key-9 is a key of bob's, but not one the document designates for recovery.
    bad = make_key_rotation(KeyPair(other.private_key, f"{BOB}#key-9"), recovery=True, **common)
    assert _code(Verifier(docs), bad) == "rotation-signer-not-previous"
    # Without recovery, only the retiring key may sign.
    plain = make_key_rotation(KeyPair(other.private_key, f"{BOB}#key-9"), **common)
    assert _code(Verifier(docs), plain) == "rotation-signer-not-previous"
