"""The SFU join service's admission on hostile input: the sans-I/O admitter table-driven, then
the HTTP front end (with a stub provisioner standing in for Janus)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.identity import KeyPair
from dsip.core.jws import sign_bytes
from dsip.errors import DsipError
from dsip.services.sfu import (
    PROOF_TYP,
    AccessGrant,
    Admission,
    AdmissionError,
    JoinAdmitter,
    JoinGrant,
    SfuJoinService,
    issue_access_token,
    join_request,
    jwt_access_verifier,
    make_join_proof,
)
from tests.conftest import NOW, vector_key

AUD = "dsip-sfu:unit"
ROOM = "standup"
ISSUER = vector_key("sfu-issuer")
ALICE = vector_key("alice")
MALLORY = vector_key("mallory")


def admitter(**kw: Any) -> JoinAdmitter:
    return JoinAdmitter(
        audience=AUD, verify_token=jwt_access_verifier({ISSUER.did: ISSUER.public_key}), **kw
    )


def token(sub: str = ALICE.did, *, room: str = ROOM, now: int = NOW, ttl: int = 600) -> str:
    return issue_access_token(ISSUER, subject=sub, room=room, now=now, ttl=ttl)


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def valid(key: KeyPair = ALICE, **kw: Any) -> dict[str, Any]:
    return join_request(
        key,
        audience=kw.pop("audience", AUD),
        room=kw.pop("room", ROOM),
        access_token=kw.pop("access_token", None) or token(key.did),
        now=kw.pop("now", NOW),
    )


def refused(req: bytes, *, now: int = NOW, adm: JoinAdmitter | None = None) -> AdmissionError:
    with pytest.raises(AdmissionError) as info:
        (adm or admitter()).admit(req, now=now)
    return info.value


def test_a_valid_request_admits_the_signer() -> None:
    admission = admitter().admit(body(valid()), now=NOW)
    assert admission == Admission(did=ALICE.did, room=ROOM, expires_at=NOW + 600, issuer=ISSUER.did)


def test_grant_lifetime_is_capped() -> None:
    req = valid(access_token=token(ttl=86_400))
    assert admitter(max_grant_ttl=900).admit(body(req), now=NOW).expires_at == NOW + 900


MALFORMED: list[tuple[str, bytes, str]] = [
    ("not json", b"{nope", "request-invalid"),
    ("not utf-8", b'{"token": "\xff"}', "request-invalid"),
    ("array", b"[]", "request-invalid"),
    ("string", b'"x"', "request-invalid"),
    ("empty object", b"{}", "request-token-missing"),
    ("token not a string", body({**valid(), "token": 5}), "request-token-missing"),
    ("no room", body({k: v for k, v in valid().items() if k != "room"}), "request-room-invalid"),
    ("room with a slash", body({**valid(), "room": "a/b"}), "request-room-invalid"),
    ("room with a newline", body({**valid(), "room": "standup\n"}), "request-room-invalid"),
    ("room too long", body({**valid(), "room": "r" * 65}), "request-room-invalid"),
    ("no proof", body({**valid(), "proof": None}), "request-proof-missing"),
    ("proof is a string", body({**valid(), "proof": "a.b.c"}), "request-proof-missing"),
    ("too large", b" " * 20_000, "request-too-large"),
]


@pytest.mark.parametrize(("name", "raw", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_are_400(name: str, raw: bytes, code: str) -> None:
    err = refused(raw)
    assert (err.status, err.reason, err.code) == (400, "transport.routing-refused", code)


def _resign(req: dict[str, Any], key: KeyPair, *, typ: str = PROOF_TYP, **claims: Any) -> None:
    """Replace the proof with one over altered claims, signed by ``key``."""
    payload = json.loads(b64url_decode(req["proof"]["payload"]))
    payload.update(claims)
    req["proof"] = sign_bytes(json.dumps(payload).encode(), key, typ=typ)


def _swap_signature(req: dict[str, Any]) -> None:
    # Mallory signs the same protected+payload, but the kid still names Alice.
    other = make_join_proof(MALLORY, audience=AUD, room=ROOM, access_token="x", now=NOW)
    req["proof"]["signature"] = other["signature"]


def _extra_member(req: dict[str, Any]) -> None:
    req["proof"]["header"] = {}


def _alg_none(req: dict[str, Any]) -> None:
    req["proof"]["protected"] = b64url_encode(b'{"alg":"none","kid":"x"}')


def _bad_base64(req: dict[str, Any]) -> None:
    req["proof"]["payload"] = "***"


def _wrong_typ(req: dict[str, Any]) -> None:
    _resign(req, ALICE, typ="dsip+json")


def _wrong_type_claim(req: dict[str, Any]) -> None:
    _resign(req, ALICE, type="invite")


def _float_iat(req: dict[str, Any]) -> None:
    _resign(req, ALICE, iat=NOW + 0.5)


def _short_nonce(req: dict[str, Any]) -> None:
    _resign(req, ALICE, nonce="abc")


def _other_audience(req: dict[str, Any]) -> None:
    _resign(req, ALICE, aud="dsip-sfu:elsewhere")


def _other_room_in_proof(req: dict[str, Any]) -> None:
    _resign(req, ALICE, room="elsewhere")


def _other_token_hash(req: dict[str, Any]) -> None:
    _resign(req, ALICE, ath=b64url_encode(b"\0" * 32))


def _stale(req: dict[str, Any]) -> None:
    _resign(req, ALICE, iat=NOW - 120)


def _future(req: dict[str, Any]) -> None:
    _resign(req, ALICE, iat=NOW + 120)


def _signed_by_mallory(req: dict[str, Any]) -> None:
    # A perfectly valid proof — by Mallory, presenting Alice's (stolen) token.
    _resign(req, MALLORY)


BAD_PROOFS: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    (_swap_signature, "policy.trust-insufficient", "proof-signature-invalid"),
    (_extra_member, "policy.trust-insufficient", "proof-invalid"),
    (_alg_none, "policy.trust-insufficient", "proof-invalid"),
    (_bad_base64, "policy.trust-insufficient", "proof-invalid"),
    (_wrong_typ, "policy.trust-insufficient", "proof-invalid"),
    (_wrong_type_claim, "policy.trust-insufficient", "proof-invalid"),
    (_float_iat, "policy.trust-insufficient", "proof-invalid"),
    (_short_nonce, "policy.trust-insufficient", "proof-invalid"),
    (_other_audience, "policy.blocked", "proof-audience"),
    (_other_room_in_proof, "policy.blocked", "proof-room"),
    (_other_token_hash, "policy.blocked", "proof-token"),
    (_stale, "policy.blocked", "proof-stale"),
    (_future, "policy.blocked", "proof-stale"),
    (_signed_by_mallory, "policy.blocked", "token-subject"),
]


@pytest.mark.parametrize(
    ("tamper", "reason", "code"), BAD_PROOFS, ids=[b[0].__name__.strip("_") for b in BAD_PROOFS]
)
def test_bad_proofs_are_403(
    tamper: Callable[[dict[str, Any]], None], reason: str, code: str
) -> None:
    req = valid()
    tamper(req)
    err = refused(body(req))
    assert (err.status, err.reason, err.code) == (403, reason, code)


def _forged_token() -> str:
    # Signed by Mallory while claiming the trusted issuer: the signature check must catch it.
    header, claims, _ = token().split(".")
    forged = issue_access_token(MALLORY, subject=ALICE.did, room=ROOM, now=NOW)
    return f"{header}.{claims}.{forged.split('.')[2]}"


def _claims_token(claims: dict[str, Any]) -> str:
    from joserfc import jwt
    from joserfc.jwk import OKPKey

    return jwt.encode(
        {"alg": "Ed25519"}, claims, OKPKey.import_key(ISSUER.private_key), algorithms=["Ed25519"]
    )


BAD_TOKENS: list[tuple[str, Callable[[], str], str, str]] = [
    ("garbage", lambda: "not-a-jwt", "policy.trust-insufficient", "token-malformed"),
    ("non-ascii", lambda: "é.é.é", "policy.trust-insufficient", "token-malformed"),
    ("huge", lambda: "a" * 9000, "policy.trust-insufficient", "token-malformed"),
    (
        "unknown issuer",
        lambda: issue_access_token(MALLORY, subject=ALICE.did, room=ROOM, now=NOW),
        "policy.trust-insufficient",
        "token-issuer-unknown",
    ),
    ("forged signature", _forged_token, "policy.trust-insufficient", "token-signature-invalid"),
    ("expired", lambda: token(now=NOW - 700), "policy.blocked", "token-expired"),
    ("other room", lambda: token(room="elsewhere"), "policy.blocked", "token-room"),
    (
        "not yet valid",
        lambda: _claims_token(
            {"iss": ISSUER.did, "sub": ALICE.did, "room": ROOM, "exp": NOW + 60, "nbf": NOW + 30}
        ),
        "policy.blocked",
        "token-not-yet-valid",
    ),
    (
        "no sub",
        lambda: _claims_token({"iss": ISSUER.did, "room": ROOM, "exp": NOW + 60}),
        "policy.trust-insufficient",
        "token-claims-invalid",
    ),
    (
        "sub not a DID",
        lambda: _claims_token({"iss": ISSUER.did, "sub": "alice", "room": ROOM, "exp": NOW + 60}),
        "policy.trust-insufficient",
        "token-claims-invalid",
    ),
    (
        "string exp",
        lambda: _claims_token({"iss": ISSUER.did, "sub": ALICE.did, "room": ROOM, "exp": "never"}),
        "policy.trust-insufficient",
        "token-claims-invalid",
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "reason", "code"), BAD_TOKENS, ids=[b[0] for b in BAD_TOKENS]
)
def test_bad_access_tokens_are_403(
    name: str, make: Callable[[], str], reason: str, code: str
) -> None:
    err = refused(body(valid(access_token=make())))
    assert (err.status, err.reason, err.code) == (403, reason, code)


def test_a_replacement_verifier_keeps_its_reason() -> None:
    def verify(token: str, now: int) -> AccessGrant:
        raise DsipError("balance exhausted", code="token-balance", reason="policy.rate-limited")

    adm = JoinAdmitter(audience=AUD, verify_token=verify)
    err = refused(body(valid()), adm=adm)
    assert (err.status, err.reason, err.code) == (403, "policy.rate-limited", "token-balance")


def test_a_replayed_request_is_refused_and_a_fresh_one_admitted() -> None:
    adm = admitter()
    req = body(valid())
    adm.admit(req, now=NOW)
    err = refused(req, now=NOW + 5, adm=adm)
    assert (err.reason, err.code) == ("policy.blocked", "proof-replayed")
    assert adm.admit(body(valid(now=NOW + 5)), now=NOW + 5).did == ALICE.did


def test_a_future_dated_proof_is_remembered_for_its_whole_validity() -> None:
    adm = admitter()
    req = body(valid(now=NOW + 60))  # iat at the edge of the window, still acceptable
    adm.admit(req, now=NOW)
    err = refused(req, now=NOW + 100, adm=adm)  # iat still within ±60 s: must be a replay
    assert err.code == "proof-replayed"


def test_a_refused_request_does_not_burn_its_nonce() -> None:
    adm = admitter()
    req = valid()
    refused(body(req), now=NOW + 61, adm=adm)  # stale: refused, nonce not remembered
    assert adm.admit(body(req), now=NOW).did == ALICE.did


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_ever_raise_admission_error(raw: bytes) -> None:
    with pytest.raises(AdmissionError):
        admitter().admit(raw, now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["token", "room", "proof", "x"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=30),
            st.dictionaries(st.sampled_from(["protected", "payload", "signature"]), st.text()),
        ),
    )
)
def test_arbitrary_shapes_only_ever_raise_admission_error(obj: dict[str, Any]) -> None:
    with pytest.raises(AdmissionError):
        admitter().admit(body(obj), now=NOW)


# --- the HTTP front end ------------------------------------------------------------------


@dataclass
class StubRooms:
    provisioned: list[Admission] = field(default_factory=list)

    async def provision(self, admission: Admission) -> JoinGrant:
        self.provisioned.append(admission)
        return JoinGrant(
            did=admission.did,
            room=admission.room,
            janus_url="http://127.0.0.1:1/janus",
            token="janus-token",
            expires_at=admission.expires_at,
        )

    async def expire(self, now: int) -> list[JoinGrant]:
        return []


@pytest.fixture
async def service() -> AsyncIterator[tuple[SfuJoinService, StubRooms]]:
    rooms = StubRooms()
    svc = await SfuJoinService(admitter(), rooms, clock=lambda: NOW).start()
    yield svc, rooms
    await svc.stop()


@pytest.mark.network
async def test_http_join_returns_the_grant(service: tuple[SfuJoinService, StubRooms]) -> None:
    svc, rooms = service
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.post(svc.url, json=valid())
    assert resp.status_code == 200
    assert resp.json() == {
        "janus_url": "http://127.0.0.1:1/janus",
        "token": "janus-token",
        "room": ROOM,
        "expires_at": NOW + 600,
    }
    assert [a.did for a in rooms.provisioned] == [ALICE.did]


@pytest.mark.network
@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        (b"{nope", 400, "transport.routing-refused"),
        (b"x" * 40_000, 400, "transport.routing-refused"),
        (body(valid(access_token=token(now=NOW - 700))), 403, "policy.blocked"),
        (body(valid(access_token=_forged_token())), 403, "policy.trust-insufficient"),
    ],
    ids=["bad json", "oversized", "expired token", "forged token"],
)
async def test_http_refusals_carry_a_reason_and_provision_nothing(
    service: tuple[SfuJoinService, StubRooms], content: bytes, status: int, reason: str
) -> None:
    svc, rooms = service
    async with httpx.AsyncClient(trust_env=False) as http:
        resp = await http.post(svc.url, content=content)
    assert resp.status_code == status
    assert resp.json()["reason"] == reason
    assert rooms.provisioned == []
    assert svc.refused == 1


@pytest.mark.network
async def test_http_replay_is_refused(service: tuple[SfuJoinService, StubRooms]) -> None:
    svc, rooms = service
    req = valid()
    async with httpx.AsyncClient(trust_env=False) as http:
        first = await http.post(svc.url, json=req)
        second = await http.post(svc.url, json=req)
    assert first.status_code == 200
    assert (second.status_code, second.json()["code"]) == (403, "proof-replayed")
    assert len(rooms.provisioned) == 1
