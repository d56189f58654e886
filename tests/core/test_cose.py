"""DSIP-COSE: round trips, the same verdicts as DSIP-JOSE, hostile CBOR, size, interop."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.cose import (
    ALG_EDDSA,
    CONTENT_TYPE,
    COSE_EXTENSION,
    decode_cose,
    decode_frame,
    loads_cbor_strict,
    negotiated_cose,
    sig_structure,
    sign_cose,
    sign_cose_bytes,
)
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair
from dsip.core.jws import MAX_FRAME_BYTES, encode_frame
from dsip.errors import DsipError
from tests.conftest import NOW, vector_key

BOB = "did:web:example.com:users:bob"
_KEY = vector_key("alice")


def _invite(key: KeyPair = _KEY, **over: Any) -> dict[str, Any]:
    p = example_invite(key.did, BOB, now=NOW)
    p.update(over)
    return p


def _code(env: Any, *, now: int = NOW, verifier: Verifier | None = None) -> str:
    """The verdict code of one envelope: JOSE (dict/str) or COSE (bytes)."""
    with pytest.raises(DsipError) as err:
        _verify(env, now=now, verifier=verifier or Verifier())
    return err.value.code


def _verify(env: Any, *, now: int, verifier: Verifier) -> None:
    if isinstance(env, bytes):
        verifier.verify_signed(decode_cose(env), now=now)
    else:
        verifier.verify(env, now=now)


def _jose(payload_bytes: bytes, header: dict[str, Any] | None = None, key: KeyPair = _KEY) -> str:
    h = header or {"alg": "EdDSA", "kid": key.kid}
    protected = b64url_encode(json.dumps(h).encode())
    body = b64url_encode(payload_bytes)
    sig = b64url_encode(key.sign(f"{protected}.{body}".encode()))
    return encode_frame({"protected": protected, "payload": body, "signature": sig})


def _cose(
    payload_bytes: bytes,
    header: dict[Any, Any] | None = None,
    key: KeyPair = _KEY,
    *,
    unprotected: dict[Any, Any] | None = None,
) -> bytes:
    h = header if header is not None else {1: -8, 3: CONTENT_TYPE, 4: key.kid.encode()}
    protected = cbor2.dumps(h, canonical=True)
    sig = key.sign(sig_structure(protected, payload_bytes))
    item = cbor2.CBORTag(18, [protected, unprotected or {}, payload_bytes, sig])
    return cbor2.dumps(item, canonical=True)


def _cbor(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


def _cbor_with_duplicate(payload: dict[str, Any], key: str, value: Any) -> bytes:
    """A deterministic map plus one more entry repeating ``key`` (a hostile encoding)."""
    raw = _cbor(payload)
    assert 0xA0 <= raw[0] < 0xB7, "small map header expected"
    return bytes([raw[0] + 1]) + raw[1:] + _cbor(key) + _cbor(value)


# --- round trips ------------------------------------------------------------------------


def test_sign_verify_round_trip(alice: KeyPair) -> None:
    frame = sign_cose(_invite(alice), alice)
    v = Verifier().verify_signed(decode_cose(frame), now=NOW)
    assert (v.type, v.signer, v.identity, v.payload["to"]) == ("invite", alice.did, alice.did, BOB)
    assert v.wire == frame
    assert v.signed.encoding == "cose"
    assert v.signed.encoded_size == len(frame)
    assert v.header["kid"] == alice.kid
    assert v.header["alg"] == "EdDSA"


def test_the_payload_survives_unchanged_and_the_frame_is_deterministic(alice: KeyPair) -> None:
    p = _invite(alice)
    frames = {sign_cose(p, alice) for _ in range(3)}  # Ed25519 and deterministic CBOR
    assert len(frames) == 1
    v = Verifier().verify_signed(decode_frame(frames.pop()), now=NOW)
    assert v.payload == p


def test_device_signs_for_identity_with_header_delegation(alice: KeyPair) -> None:
    phone = KeyPair.generate()
    deleg = issue_delegation(alice, phone.did, issued_at=NOW - 10, expires_at=NOW + 3600)
    frame = sign_cose(_invite(phone, **{"from": alice.did}), phone, delegations=[deleg])
    v = Verifier().verify_signed(decode_cose(frame), now=NOW)
    assert (v.signer, v.identity) == (phone.did, alice.did)
    assert v.header["delegations"] == [deleg]
    assert _code(sign_cose(_invite(phone, **{"from": alice.did}), phone)) == "signer-mismatch"


def test_hello_gate_and_reasons_are_the_same_as_jose(alice: KeyPair) -> None:
    invite = sign_cose(_invite(alice), alice)
    with pytest.raises(DsipError) as err:
        Verifier().verify_signed(decode_cose(invite), now=NOW, hello_verified=False)
    assert err.value.reason == "transport.hello-required"
    with pytest.raises(DsipError) as err:
        Verifier().verify_signed(decode_cose(invite), now=NOW + 31)
    assert (err.value.code, err.value.reason) == ("expired", "session.expired")


def test_rejected_frames_leave_the_replay_store_untouched(alice: KeyPair) -> None:
    verifier = Verifier()
    good = _invite(alice)
    assert _code(sign_cose(dict(good, media=[]), alice), verifier=verifier) == "schema-invalid"
    assert len(verifier.replay) == 0
    assert verifier.verify_signed(decode_cose(sign_cose(good, alice)), now=NOW).id == good["id"]


def test_decode_frame_dispatches_text_to_jose_and_binary_to_cose(alice: KeyPair) -> None:
    p = _invite(alice)
    assert decode_frame(encode_frame(sign_envelope(p, alice))).encoding == "jose"
    assert decode_frame(sign_cose(p, alice)).encoding == "cose"
    with pytest.raises(DsipError) as err:
        decode_cose("text is never COSE")  # type: ignore[arg-type]
    assert err.value.code == "envelope-shape"


def test_cose_frames_are_smaller_than_jose_frames(alice: KeyPair) -> None:
    p = _invite(alice)
    jose = encode_frame(sign_envelope(p, alice)).encode()
    cose = sign_cose(p, alice)
    ratio = len(cose) / len(jose)
    print(f"\ninvite frame: JOSE {len(jose)} B, COSE {len(cose)} B, ratio {ratio:.2f}")
    assert ratio < 0.75


def test_signing_refuses_values_outside_the_json_model(alice: KeyPair) -> None:
    bad_values: list[Any] = [
        {"blob": b"\x00"},
        {1: "int key"},
        {"n": 2**60},
        {"x": float("nan")},
        {"s": {1}},
        _nested(70),
    ]
    for bad in bad_values:
        with pytest.raises(DsipError) as err:
            sign_cose(_invite(alice, **{"policy": bad}), alice)
        assert (err.value.code, err.value.remote) == ("payload-not-json", False)


# --- the same verdicts as DSIP-JOSE ------------------------------------------------------

# Each case builds the same mistake twice: as a DSIP-JOSE frame and as a DSIP-COSE frame.
# ``replay`` verifies the envelope once before the checked verification.
_SAME: list[tuple[str, Callable[[], tuple[Any, bytes]], str, dict[str, Any]]] = [
    (
        "tampered payload",
        lambda: (_tampered_jose(), sign_cose(_invite(), _KEY).replace(b"Alice", b"Alicf")),
        "signature-invalid",
        {},
    ),
    (
        "wrong alg",
        lambda: (
            _jose(json.dumps(_invite()).encode(), {"alg": "ES256", "kid": _KEY.kid}),
            _cose(_cbor(_invite()), {1: -7, 3: CONTENT_TYPE, 4: _KEY.kid.encode()}),
        ),
        "alg-unsupported",
        {},
    ),
    (
        "alg none",
        lambda: (
            _jose(json.dumps(_invite()).encode(), {"alg": "none", "kid": _KEY.kid}),
            _cose(_cbor(_invite()), {1: 0, 3: CONTENT_TYPE, 4: _KEY.kid.encode()}),
        ),
        "alg-unsupported",
        {},
    ),
    (
        "missing kid",
        lambda: (
            _jose(json.dumps(_invite()).encode(), {"alg": "EdDSA"}),
            _cose(_cbor(_invite()), {1: -8, 3: CONTENT_TYPE}),
        ),
        "header-invalid",
        {},
    ),
    (
        "unknown crit",
        lambda: (
            _jose(json.dumps(_invite()).encode(), {"alg": "EdDSA", "kid": _KEY.kid, "crit": ["x"]}),
            _cose(_cbor(_invite()), {1: -8, 2: ["x"], 3: CONTENT_TYPE, 4: _KEY.kid.encode()}),
        ),
        "header-invalid",
        {},
    ),
    (
        "kid not a DID URL",
        lambda: (
            _jose(json.dumps(_invite()).encode(), {"alg": "EdDSA", "kid": "did:key:abc"}),
            _cose(_cbor(_invite()), {1: -8, 3: CONTENT_TYPE, 4: b"did:key:abc"}),
        ),
        "kid-invalid",
        {},
    ),
    (
        "unknown did:web kid",
        lambda: (
            _jose(
                json.dumps(_invite()).encode(),
                {"alg": "EdDSA", "kid": "did:web:nowhere.example#key-1"},
            ),
            _cose(_cbor(_invite()), {1: -8, 3: CONTENT_TYPE, 4: b"did:web:nowhere.example#key-1"}),
        ),
        "kid-unresolvable",
        {},
    ),
    (
        "signed by someone else",
        lambda: (
            encode_frame(sign_envelope(_invite(), vector_key("mallory"))),
            sign_cose(_invite(), vector_key("mallory")),
        ),
        "signer-mismatch",
        {},
    ),
    (
        "float in payload",
        lambda: (
            _jose(json.dumps(_invite()).encode().replace(b"48000", b"48000.5")),
            _cose(_cbor(_float_invite())),
        ),
        "payload-float",
        {},
    ),
    (
        "duplicate keys",
        lambda: (
            _jose(json.dumps(_invite()).encode().replace(b'"to": "did', b'"to": "x", "to": "did')),
            _cose(_cbor_with_duplicate(_invite(), "to", "did:web:mallory.example")),
        ),
        "payload-not-json",
        {},
    ),
    (
        "integer beyond 2**53",
        lambda: (
            _jose(json.dumps(_invite(issued_at=2**60)).encode()),
            _cose(_cbor(_invite(issued_at=2**60))),
        ),
        "payload-not-json",
        {},
    ),
    (
        "nesting deeper than 64",
        lambda: (
            _jose(json.dumps(_invite(policy=_nested(70))).encode()),
            _cose(_cbor(_invite(policy=_nested(70)))),
        ),
        "payload-not-json",
        {},
    ),
    (
        "payload is an array",
        lambda: (_jose(b"[1,2]"), _cose(_cbor([1, 2]))),
        "payload-not-json",
        {},
    ),
    (
        "issued_at is text",
        lambda: (
            _jose(json.dumps(_invite(issued_at=str(NOW))).encode()),
            _cose(_cbor(_invite(issued_at=str(NOW)))),
        ),
        "payload-shape",
        {},
    ),
    (
        "expires before issued",
        lambda: (
            _jose(json.dumps(_invite(expires_at=NOW - 1)).encode()),
            _cose(_cbor(_invite(expires_at=NOW - 1))),
        ),
        "expiry-order",
        {},
    ),
    ("expired", lambda: _both(_invite()), "expired", {"now": NOW + 31}),
    ("outside replay window", lambda: _both(_invite()), "replay-window", {"now": NOW - 301}),
    ("replay", lambda: _both(_invite()), "duplicate-id", {"replay": True}),
    ("schema", lambda: _both(_invite(media=[])), "schema-invalid", {}),
    (
        "oversize",
        lambda: ("{" + " " * MAX_FRAME_BYTES, b"\xd2" + b"\x00" * MAX_FRAME_BYTES),
        "frame-too-large",
        {},
    ),
    (
        "truncated",
        lambda: (
            encode_frame(sign_envelope(_invite(), _KEY))[:-10],
            sign_cose(_invite(), _KEY)[:-10],
        ),
        "envelope-shape",
        {},
    ),
]


def _both(payload: dict[str, Any]) -> tuple[str, bytes]:
    return encode_frame(sign_envelope(payload, _KEY)), sign_cose(payload, _KEY)


def _tampered_jose() -> dict[str, str]:
    env = sign_envelope(_invite(), _KEY)
    forged = b64url_decode(env["payload"]).replace(b"Alice", b"Alicf")
    return dict(env, payload=b64url_encode(forged))


def _float_invite() -> dict[str, Any]:
    p = _invite()
    p["media"][0]["codecs"][0]["sample_rates"] = [48000.5]
    return p


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("build", "code", "opts"),
    [pytest.param(b, c, o, id=name) for name, b, c, o in _SAME],
)
def test_same_mistake_same_verdict_in_both_encodings(
    build: Callable[[], tuple[Any, bytes]], code: str, opts: dict[str, Any]
) -> None:
    jose, cose = build()
    verdicts = []
    for env in (jose, cose):
        verifier = Verifier()
        if opts.get("replay"):
            _verify(env, now=NOW, verifier=verifier)
        verdicts.append(_code(env, now=opts.get("now", NOW), verifier=verifier))
        if not opts.get("replay"):
            assert len(verifier.replay) == 0
    assert verdicts == [code, code]


# --- COSE-specific hostile input --------------------------------------------------------

_HDR = {1: -8, 3: CONTENT_TYPE, 4: _KEY.kid.encode()}


def _payload_with(**over: Any) -> bytes:
    return _cbor(_invite(**over))


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (_payload_with(policy={"blob": b"\x00\x01"}), "byte string"),
        (_payload_with(policy={"t": cbor2.CBORTag(0, "2025-01-01T00:00:00Z")}), "tag 0"),
        (_payload_with(policy={"t": cbor2.CBORTag(2, b"\x01")}), "bignum tag"),
        (_payload_with(policy={"t": cbor2.CBORTag(9999, 1)}), "unknown tag"),
        (_payload_with(policy={"u": cbor2.undefined}), "undefined"),
        (_payload_with(policy={"s": cbor2.CBORSimpleValue(16)}), "simple value"),
        (_cbor({**_invite(), 7: "int key"}), "integer key"),
        (_cbor({**_invite(), b"k": "bytes key"}), "bytes key"),
        (_payload_with(issued_at=float("nan")), "NaN"),
        (_payload_with(issued_at=float("inf")), "infinity"),
        (_payload_with(issued_at=-(2**53)), "integer below -(2**53-1)"),
        (cbor2.dumps(_invite()), "keys in insertion order"),
        (cbor2.dumps(_invite(), canonical=True, indefinite_containers=True), "indefinite"),
        (
            _payload_with().replace(_cbor(NOW), b"\x1b" + NOW.to_bytes(8, "big")),
            "over-long integer",
        ),
        (_payload_with() + b"\x00", "trailing byte"),
        (b"\xd9\xd9\xf7" + _payload_with(), "self-describe tag"),
        (b"\xff", "not CBOR"),
        (b"\xa1\x61a\xd8\x1c\x81\xd8\x1d\x00", "value sharing (cyclic)"),
        (cbor2.dumps(_invite(), canonical=True).replace(b"\x65Alice", b"\x65Al\xffce"), "utf-8"),
    ],
)
def test_hostile_cbor_payloads_are_not_json(payload: bytes, why: str) -> None:
    verifier = Verifier()
    assert _code(_cose(payload), verifier=verifier) == "payload-not-json", why
    assert len(verifier.replay) == 0


def test_a_shortest_form_float_is_a_float_but_a_long_one_is_malformed() -> None:
    short = _cbor(_float_invite())
    assert _code(_cose(short)) == "payload-float"
    long_form = short.replace(_cbor(48000.5), b"\xfb" + cbor2.dumps(48000.5)[1:].rjust(8, b"\0"))
    assert long_form != short
    assert _code(_cose(long_form)) == "payload-not-json"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (lambda: cbor2.dumps(cbor2.CBORTag(17, _parts())), "envelope-shape"),
        (lambda: cbor2.dumps(_parts()), "envelope-shape"),
        (lambda: cbor2.dumps(cbor2.CBORTag(18, _parts()[:3])), "envelope-shape"),
        (lambda: cbor2.dumps(cbor2.CBORTag(18, [*_parts(), b""])), "envelope-shape"),
        (lambda: cbor2.dumps(cbor2.CBORTag(18, _parts(payload=None))), "envelope-shape"),
        (lambda: cbor2.dumps(cbor2.CBORTag(18, _parts(payload="text"))), "envelope-shape"),
        (lambda: cbor2.dumps(cbor2.CBORTag(18, _parts(unprotected=[]))), "envelope-shape"),
        (lambda: cbor2.dumps(cbor2.CBORTag(18, _parts(signature=b""))), "envelope-shape"),
        (lambda: sign_cose(_invite(), _KEY) + b"\x00", "envelope-shape"),
        (
            lambda: cbor2.dumps(cbor2.CBORTag(18, _parts()), indefinite_containers=True),
            "envelope-shape",
        ),
        (lambda: b"\xd8\x12" + sign_cose(_invite(), _KEY)[1:], "envelope-shape"),  # long tag
        (lambda: b"", "envelope-shape"),
        (lambda: b"\xd2", "envelope-shape"),
        (lambda: _cose(_payload_with(), unprotected={4: b"x"}), "header-invalid"),
        (lambda: _cose(_payload_with(), {1: -8, 3: CONTENT_TYPE, 4: _KEY.kid}), "header-invalid"),
        (lambda: _cose(_payload_with(), {1: -8, 4: _KEY.kid.encode()}), "header-invalid"),
        (
            lambda: _cose(_payload_with(), {1: -8, 3: "application/json", 4: _KEY.kid.encode()}),
            "header-invalid",
        ),
        (lambda: _cose(_payload_with(), {**_HDR, 1: True}), "header-invalid"),
        (lambda: _cose(_payload_with(), {**_HDR, 1: b"\xf8"}), "header-invalid"),
        (lambda: _cose(_payload_with(), {**_HDR, "delegations": "nope"}), "header-invalid"),
        (lambda: _cose(_payload_with(), {**_HDR, "delegations": [{"a": "b"}]}), "header-invalid"),
        (
            lambda: _cose(_payload_with(), {1.0: -8, 3: CONTENT_TYPE, 4: _KEY.kid.encode()}),
            "header-invalid",
        ),
        (lambda: _cose_raw_header(cbor2.dumps(_HDR)[:-3]), "header-invalid"),
        (lambda: _cose_raw_header(cbor2.dumps([1, 2])), "header-invalid"),
        (lambda: _cose_raw_header(cbor2.dumps(dict(reversed(_HDR.items())))), "header-invalid"),
        (lambda: _cose_raw_header(cbor2.dumps(cbor2.CBORTag(5, _HDR))), "header-invalid"),
        (lambda: _cose(_payload_with(), {**_HDR, 1: "EdDSA"}), "alg-unsupported"),
        (lambda: _cose(_payload_with(), {**_HDR, 1: -19}), "alg-unsupported"),
        (lambda: _cose(_payload_with(), {**_HDR, 4: b"did:key:\xff#x"}), "kid-invalid"),
        (lambda: _cose(_payload_with(), {**_HDR, 4: b""}), "kid-invalid"),
    ],
)
def test_hostile_frames_and_headers(frame: Callable[[], bytes], code: str) -> None:
    assert _code(frame()) == code


def _parts(**over: Any) -> list[Any]:
    tagged = cbor2.loads(sign_cose(_invite(), _KEY))
    protected, unprotected, payload, signature = tagged.value
    parts = {
        "protected": protected,
        "unprotected": dict(unprotected),
        "payload": payload,
        "signature": signature,
    }
    parts.update(over)
    return list(parts.values())


def _cose_raw_header(protected: bytes) -> bytes:
    payload = _payload_with()
    sig = _KEY.sign(sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def test_every_cbor_tag_is_refused_in_a_payload() -> None:
    # cbor2 decodes about twenty tags natively; a new cbor2 release adding one must not
    # open a hole. The low range holds all registered "native" tags.
    for tag in [*range(0, 1200), 43000, 55799, 55800, 2**16 - 1, 2**32, 2**63]:
        inners: tuple[object, ...] = (0, "x", b"x", [0], {})
        for inner in inners:
            raw = _cbor({"t": cbor2.CBORTag(tag, inner)})
            with pytest.raises(DsipError) as err:
                loads_cbor_strict(raw)
            assert err.value.code == "payload-not-json", tag


def test_strict_loader_returns_floats_flag() -> None:
    assert loads_cbor_strict(_cbor({"a": [1, 2.5]})) == ({"a": [1, 2.5]}, True)
    assert loads_cbor_strict(_cbor({"a": [1, None, True, "x"]})) == (
        {"a": [1, None, True, "x"]},
        False,
    )


# --- negotiation ------------------------------------------------------------------------


def _hello(*extensions: str) -> dict[str, Any]:
    hello = make_payload("hello", sender=_KEY.did, now=NOW, bindings=["quic/1.0"])
    hello["dsip"]["extensions"] = list(extensions)
    return hello


def test_cose_is_used_only_when_both_hellos_list_the_extension() -> None:
    assert COSE_EXTENSION == "cose-envelope/1.0"
    assert negotiated_cose(_hello(COSE_EXTENSION), _hello("x-other/1.0", COSE_EXTENSION))
    assert negotiated_cose(_hello(COSE_EXTENSION), _hello("cose-envelope/1.3"))  # newer minor
    assert not negotiated_cose(_hello(COSE_EXTENSION), _hello())
    assert not negotiated_cose(_hello(), _hello(COSE_EXTENSION))
    assert not negotiated_cose(_hello(COSE_EXTENSION), _hello("cose-envelope/2.0"))
    for junk in ({}, {"dsip": None}, {"dsip": {"extensions": "cose-envelope/1.0"}}, {"dsip": 5}):
        assert not negotiated_cose(_hello(COSE_EXTENSION), junk)


# --- interop: the COSE working group's Ed25519 COSE_Sign1 example -------------------------

# cose-wg/Examples eddsa-examples/eddsa-sig-01.json (Unlicense): "EdDSA-01: EdDSA - 25519 -
# sign0", key = RFC 8032 §7.1 test 1. Their protected header is {1: -8, 3: 0}, their kid is
# unprotected; what we check is the Sig_structure and the Ed25519 signature over it.
_WG_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
_WG_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
_WG_FRAME = bytes.fromhex(
    "D28445A201270300A10442313154546869732069732074686520636F6E74656E742E5840"
    "7142FD2FF96D56DB85BEE905A76BA1D0B7321A95C8C4D3607C5781932B7AFB8711497DFA75"
    "1BF40B58B3BCC32300B1487F3DB34085EEF013BF08F4A44D6FEF0D"
)


def test_sig_structure_matches_the_cose_wg_ed25519_example() -> None:
    tagged = cbor2.loads(_WG_FRAME)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    assert cbor2.loads(protected) == {1: ALG_EDDSA, 3: 0}
    assert dict(unprotected) == {4: b"11"}
    sk = Ed25519PrivateKey.from_private_bytes(_WG_SEED)
    assert sk.public_key().public_bytes_raw() == _WG_PUB
    sk.public_key().verify(signature, sig_structure(protected, payload))  # raises if wrong
    assert sk.sign(sig_structure(protected, payload)) == signature  # Ed25519 is deterministic
    # Our own signer, same key and payload bytes: the signature covers *our* header.
    ours = cbor2.loads(sign_cose_bytes(payload, KeyPair.from_seed(_WG_SEED)))
    sk.public_key().verify(ours.value[3], sig_structure(ours.value[0], payload))


# --- properties -------------------------------------------------------------------------

_FRAME = sign_cose(_invite(), _KEY)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_property_any_flipped_bit_is_rejected(data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(_FRAME) - 1))
    bit = data.draw(st.integers(0, 7))
    forged = bytearray(_FRAME)
    forged[i] ^= 1 << bit
    with pytest.raises(DsipError):
        Verifier().verify_signed(decode_cose(bytes(forged)), now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256) | st.binary(max_size=64).map(lambda b: b"\xd2\x84" + b))
def test_property_arbitrary_bytes_raise_only_dsip_errors(raw: bytes) -> None:
    with contextlib.suppress(DsipError):
        Verifier().verify_signed(decode_cose(raw), now=NOW)
    with contextlib.suppress(DsipError):
        loads_cbor_strict(raw)


_ANY_CBOR = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=8)
    | st.sampled_from([cbor2.undefined, cbor2.CBORSimpleValue(99)]),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(), c, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 18, 28, 29, 258, 1000]), c)
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ANY_CBOR, st.booleans())
def test_property_arbitrary_cbor_payloads_and_headers_raise_only_dsip_errors(
    value: Any, canonical: bool
) -> None:
    try:
        raw = cbor2.dumps(value, canonical=canonical)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return  # cbor2 refuses to *encode* some generated values (e.g. NaN map keys)
    for frame in (_cose(raw), _cose(_payload_with(), unprotected={"x": value})):
        with contextlib.suppress(DsipError):
            Verifier().verify_signed(decode_cose(frame), now=NOW)
    with contextlib.suppress(DsipError):
        decode_cose(_cose_raw_header(raw))


_JSON_MODEL = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_MODEL)
def test_property_strict_loader_accepts_exactly_the_deterministic_encoding(value: Any) -> None:
    canonical = cbor2.dumps(value, canonical=True)
    decoded, _saw_float = loads_cbor_strict(canonical)
    assert decoded == value
    # The fast path (key-order walk + plain re-encode) agrees with cbor2's canonical mode
    # on every other encoding of the same value.
    plain = cbor2.dumps(value)
    if plain != canonical:
        with pytest.raises(DsipError):
            loads_cbor_strict(plain)
