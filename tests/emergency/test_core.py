"""emergency/1.0 sans-I/O core: geo-attestation, certification, namespaces, privacy, policy."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.core.emergency.certification import Level, issue_certification, verify_certification
from dsip.core.emergency.errors import EmergencyError
from dsip.core.emergency.geo import (
    FileKeyStore,
    Fix,
    Tier,
    attest,
    emergency_capable,
    require_emergency_capable,
    verify_attestation,
)
from dsip.core.emergency.namespaces import GeofenceSet, is_emergency_did, require_emergency_did
from dsip.core.emergency.privacy import (
    PrivacyMode,
    check_precise_recipient,
    coarse_geohash,
    commit_regions,
    open_precise,
    prove_region,
    seal_precise,
    verify_region_proof,
)
from dsip.core.emergency.psap_policy import (
    CallbackWindow,
    CallQueue,
    PsapPolicy,
    assess_emergency_call,
)
from dsip.core.identity import KeyPair, StaticDocuments, did_web_document, parse_did_document
from dsip.errors import DsipError

NOW = 1_795_500_000
ALBANY = Fix(lat=42.7460000, lon=-73.7590000, accuracy=5, method="gps", timestamp=NOW - 2, alt=72)
PSAP_DID = "did:web:911.us"


@pytest.fixture
def caller() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture
def device() -> FileKeyStore:
    return FileKeyStore.generate()


def record(caller: KeyPair, device: FileKeyStore, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"seq": 84, "now": NOW}
    args.update(kw)
    fix = args.pop("fix", ALBANY)
    return attest(fix, identity_key=caller, device=device, **args)


# --- geo-attestation ---------------------------------------------------------------------


def test_dual_signed_location_verifies(caller: KeyPair, device: FileKeyStore) -> None:
    rec = record(caller, device)
    loc = verify_attestation(rec, documents=None, now=NOW, expected_did=caller.did)
    assert (loc.lat_e7, loc.lon_e7, loc.alt, loc.accuracy) == (427460000, -737590000, 72, 5)
    assert loc.tier is Tier.GNSS
    assert loc.device == device.did != caller.did
    assert loc.keystore == "file"
    assert (loc.seq, loc.exp) == (84, NOW + 120)


def test_did_web_identity_signs_the_outer_record(device: FileKeyStore) -> None:
    key = KeyPair.generate()
    did = "did:web:example.org:users:ann"
    web_key = KeyPair(key.private_key, f"{did}#key-1")
    docs = StaticDocuments({did: did_web_document(did, [("key-1", key.public_key_multibase)])})
    rec = attest(ALBANY, identity_key=web_key, device=device, seq=1, now=NOW)
    assert verify_attestation(rec, documents=docs, now=NOW).did == did


def _tamper_location(rec: dict[str, Any]) -> None:
    rec["location"]["lat_e7"] += 1000


def _tamper_outer(rec: dict[str, Any]) -> None:
    rec["seq"] += 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_tamper_location, "x-emergency.location-forged"),
        (_tamper_outer, "x-emergency.location-forged"),
        (lambda r: r.update(sig="A" * 86), "x-emergency.location-forged"),
        (lambda r: r["location"].update(signature="A" * 86), "x-emergency.location-forged"),
        (lambda r: r["location"].update(lat_e7=1.5), "x-emergency.location-invalid"),
        (lambda r: r["location"].update(tier=2), "x-emergency.location-invalid"),
        (lambda r: r.pop("sig"), "x-emergency.location-invalid"),
        (lambda r: r.update(extra=1), "x-emergency.location-invalid"),
        (lambda r: r.update(kid="did:key:z6Mkother#z6Mkother"), "x-emergency.location-forged"),
    ],
)
def test_forged_or_malformed_location_is_refused(
    caller: KeyPair, device: FileKeyStore, mutate: Any, reason: str
) -> None:
    rec = record(caller, device)
    mutate(rec)
    with pytest.raises(EmergencyError) as err:
        verify_attestation(rec, documents=None, now=NOW)
    assert err.value.reason == reason


def test_outer_record_signed_by_another_identity_is_forged(
    caller: KeyPair, device: FileKeyStore
) -> None:
    mallory = KeyPair.generate()
    rec = record(mallory, device, identity=caller.did)  # claims caller, signed by mallory
    with pytest.raises(EmergencyError) as err:
        verify_attestation(rec, documents=None, now=NOW)
    assert err.value.reason == "x-emergency.location-forged"


def test_location_signed_only_by_the_did_key_is_unattested(caller: KeyPair) -> None:
    same_key = FileKeyStore(caller)  # the "device" key is the DID key itself
    rec = record(caller, same_key)
    with pytest.raises(EmergencyError) as err:
        verify_attestation(rec, documents=None, now=NOW)
    assert err.value.reason == "x-emergency.location-unattested"


@pytest.mark.parametrize(
    ("kw", "now", "last_seq"),
    [
        ({}, NOW + 121, 0),  # exp passed
        ({"fix": Fix(42.7, -73.7, 5, "gps", NOW - 400)}, NOW, 0),  # fix too old
        ({"fix": Fix(42.7, -73.7, 5, "gps", NOW + 120)}, NOW, 0),  # fix from the future
        ({}, NOW, 84),  # replayed seq
        ({}, NOW, 90),  # older seq
    ],
)
def test_stale_location_is_refused(
    caller: KeyPair, device: FileKeyStore, kw: dict[str, Any], now: int, last_seq: int
) -> None:
    rec = record(caller, device, **kw)
    with pytest.raises(EmergencyError) as err:
        verify_attestation(rec, documents=None, now=now, last_seq=last_seq)
    assert err.value.reason == "x-emergency.location-stale"


def test_tiers_and_limited_mode() -> None:
    assert [Fix(0, 0, 1, m, NOW).tier for m in ("gps", "wifi", "cell", "ip")] == [
        Tier.GNSS,
        Tier.RADIO,
        Tier.RADIO,
        Tier.IP,
    ]
    assert [t.nominal_accuracy for t in Tier] == [5, 50, 10_000]
    assert emergency_capable(["ip", "wifi"])
    assert not emergency_capable(["ip"])
    with pytest.raises(EmergencyError) as err:
        require_emergency_capable(Fix(42.7, -73.7, 10_000, "ip", NOW))
    assert err.value.reason == "x-emergency.limited-mode"
    require_emergency_capable(ALBANY)


def test_file_keystore_is_a_separate_0600_file(tmp_path: Any) -> None:
    path = tmp_path / "device.key"
    ks = FileKeyStore.open(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert FileKeyStore.open(path).did == ks.did
    path.write_bytes(b"short")
    with pytest.raises(EmergencyError):
        FileKeyStore.open(path)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["did", "location", "seq", "exp", "kid", "sig", "lat_e7", "method"]), JSONISH
)
def test_hostile_attestation_raises_only_emergency_error(field: str, value: Any) -> None:
    caller, device = KeyPair.from_seed(b"c" * 32), FileKeyStore(KeyPair.from_seed(b"d" * 32))
    rec = record(caller, device)
    target = rec["location"] if field in ("lat_e7", "method") else rec
    target[field] = value
    outcome: EmergencyError | None = None
    try:
        verify_attestation(rec, documents=None, now=NOW)
    except EmergencyError as exc:  # nothing but EmergencyError may escape
        outcome = exc
    assert outcome is None or outcome.reason.startswith("x-emergency.")


# --- certification ------------------------------------------------------------------------


def test_certification_levels(device: FileKeyStore) -> None:
    certifier = KeyPair.generate()
    vc = issue_certification(certifier, device.did, Level.GOLD, now=NOW, valid_until=NOW + 86400)
    cert = verify_certification(
        vc, documents=None, now=NOW, trusted_certifiers={certifier.did}, device=device.did
    )
    assert cert.level is Level.GOLD > Level.SILVER > Level.BRONZE
    assert cert.certifier == certifier.did
    bad = copy.deepcopy(vc)
    bad["credentialSubject"]["level"] = "silver"
    cases: list[tuple[Any, dict[str, Any]]] = [
        (bad, {}),  # tampered level
        (vc, {"trusted_certifiers": {KeyPair.generate().did}}),  # untrusted certifier
        (vc, {"device": KeyPair.generate().did}),  # about another device
        (vc, {"now": NOW + 86401}),  # expired
        ({"type": ["VerifiableCredential"]}, {}),
        ("not a credential", {}),
    ]
    for credential, kw in cases:
        args: dict[str, Any] = {
            "documents": None,
            "now": NOW,
            "trusted_certifiers": {certifier.did},
        }
        args.update(kw)
        with pytest.raises(EmergencyError) as err:
            verify_certification(credential, **args)
        assert err.value.reason == "x-emergency.device-uncertified"


# --- namespaces and geofences ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("did", "expected"),
    [
        ("did:web:911.us", True),
        ("did:web:112.eu", True),
        ("did:web:911.us%3A8443", True),
        ("did:web:911.us:ny:albany", True),
        ("did:web:999.uk", True),
        ("did:web:911", False),
        ("did:web:evil911.us", False),
        ("did:web:us.911", False),
        ("did:key:z6Mk911", False),
        ("did:web:localhost%3A8443:911:us", False),
        (911, False),
        ("", False),
    ],
)
def test_emergency_namespace(did: object, expected: bool) -> None:
    assert is_emergency_did(did) is expected
    if not expected:
        with pytest.raises(EmergencyError) as err:
            require_emergency_did(did)
        assert err.value.reason == "x-emergency.not-emergency-service"


def _square(psap: str, region: str, x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {
        "type": "Feature",
        "properties": {"psap": psap, "region": region},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


FENCES = {
    "type": "FeatureCollection",
    "features": [
        _square("did:web:911.us", "us", -125, 24, -66, 50),
        _square("did:web:112.eu", "eu", -10, 35, 30, 70),
    ],
}


def test_region_selection_by_geofence_and_user_setting() -> None:
    fences = GeofenceSet.from_geojson(FENCES)
    us = fences.select(42.746, -73.759)
    eu = fences.select(48.85, 2.35)
    assert us is not None
    assert us.psap == "did:web:911.us"
    assert eu is not None
    assert eu.psap == "did:web:112.eu"
    assert fences.select(-33.9, 151.2) is None  # Sydney: no fence, native dialer
    chosen = fences.select(42.746, -73.759, user_setting="eu")
    assert chosen is not None
    assert chosen.psap == "did:web:112.eu"


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        {"type": "Feature"},
        {"type": "FeatureCollection", "features": "x"},
        {"type": "FeatureCollection", "features": [1]},
        {"type": "FeatureCollection", "features": [_square("did:web:evil.com", "x", 0, 0, 1, 1)]},
        {"type": "FeatureCollection", "features": [_square("did:web:911.us", "x", 0, 0, 0, 0)]},
        {"type": "FeatureCollection", "features": [_square("did:web:911.us", "x", 0, 0, 500, 1)]},
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"psap": "did:web:911.us", "region": "r"},
                    "geometry": {"type": "Polygon", "coordinates": [[[0, "a"]]]},
                }
            ],
        },
        {  # bow-tie: self-intersecting
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"psap": "did:web:911.us", "region": "r"},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                    },
                }
            ],
        },
    ],
)
def test_hostile_geofences_are_refused(document: Any) -> None:
    with pytest.raises(EmergencyError) as err:
        GeofenceSet.from_geojson(document)
    assert err.value.reason == "x-emergency.geofence-invalid"


# --- privacy modes ------------------------------------------------------------------------------


def test_precise_location_goes_only_to_emergency_dids_in_emergency_mode() -> None:
    check_precise_recipient(PrivacyMode.EMERGENCY, "did:web:911.us")
    check_precise_recipient(PrivacyMode.EMERGENCY, "did:web:112.eu")
    check_precise_recipient(
        PrivacyMode.TRUSTED_CALL, "did:key:z6Mkfriend", trusted={"did:key:z6Mkfriend"}
    )
    for mode, peer in [
        (PrivacyMode.EMERGENCY, "did:web:evil.example"),
        (PrivacyMode.EMERGENCY, "did:key:z6Mkfriend"),
        (PrivacyMode.TRUSTED_CALL, "did:key:z6Mkstranger"),
        (PrivacyMode.NORMAL, "did:web:911.us"),
        (PrivacyMode.REGION_PROOF, "did:web:911.us"),
    ]:
        with pytest.raises(EmergencyError) as err:
            check_precise_recipient(mode, peer, trusted={"did:key:z6Mkfriend"})
        assert err.value.reason == "x-emergency.precise-location-refused"
        assert err.value.remote is False


def test_normal_mode_publishes_at_most_a_six_character_geohash() -> None:
    assert coarse_geohash(42.746, -73.759) == "dree1"
    assert coarse_geohash(42.746, -73.759, 12) == "dree1t"


def _psap_doc(key: KeyPair, did: str = PSAP_DID) -> Any:
    return parse_did_document(did_web_document(did, [("key-1", key.public_key_multibase)]), did)


def test_sealed_content_opens_only_for_its_psap_and_envelope(
    caller: KeyPair, device: FileKeyStore
) -> None:
    psap = KeyPair.generate()
    content = {"geo": record(caller, device)}
    sealed = seal_precise(
        content, recipient=_psap_doc(psap), envelope_id="01A", mode=PrivacyMode.EMERGENCY
    )
    assert "427460000" not in sealed["enc"]
    assert open_precise(sealed, key=psap, recipient=PSAP_DID, envelope_id="01A") == content
    for key, env in [(KeyPair.generate(), "01A"), (psap, "01B")]:
        with pytest.raises(EmergencyError) as err:
            open_precise(sealed, key=key, recipient=PSAP_DID, envelope_id=env)
        assert err.value.reason == "x-emergency.location-invalid"
    for hostile in [{}, {"enc": "!!"}, {"enc": "A" * 20000}, {"enc": sealed["enc"][:-4]}]:
        with pytest.raises(EmergencyError):
            open_precise(hostile, key=psap, recipient=PSAP_DID, envelope_id="01A")
    # the gate runs before anything is encrypted
    evil = "did:web:evil.example"
    with pytest.raises(EmergencyError) as err:
        seal_precise(
            content, recipient=_psap_doc(psap, evil), envelope_id="01A", mode=PrivacyMode.EMERGENCY
        )
    assert err.value.reason == "x-emergency.precise-location-refused"


def test_region_proof_discloses_one_prefix_only(device: FileKeyStore) -> None:
    commitment, secrets_ = commit_regions(42.746, -73.759, device=device, now=NOW)
    proof = prove_region(commitment, secrets_, 3)
    assert verify_region_proof(proof, now=NOW) == ("dre", device.did)
    assert "dree1" not in str(proof)
    lie = dict(proof, region="9q8")  # claims San Francisco
    with pytest.raises(EmergencyError) as err:
        verify_region_proof(lie, now=NOW)
    assert err.value.reason == "x-emergency.location-forged"
    with pytest.raises(EmergencyError) as err:
        verify_region_proof(proof, now=NOW + 7200)
    assert err.value.reason == "x-emergency.location-stale"
    for hostile in [
        None,
        {},
        {"commitment": 1, "region": "d", "salt": "AA"},
        dict(proof, salt="!"),
    ]:
        with pytest.raises(EmergencyError):
            verify_region_proof(hostile, now=NOW)


# --- PSAP policy, queue, callback window -------------------------------------------------------------


def test_default_policy_accepts_and_flags_strict_policy_refuses(
    caller: KeyPair, device: FileKeyStore
) -> None:
    certifier = KeyPair.generate()
    gold = issue_certification(certifier, device.did, Level.GOLD, now=NOW)
    bronze = issue_certification(certifier, device.did, Level.BRONZE, now=NOW)
    lenient = PsapPolicy(trusted_certifiers=frozenset({certifier.did}))
    strict = PsapPolicy(trusted_certifiers=frozenset({certifier.did}), strict=True)
    good = {"geo": record(caller, device), "credentials": [bronze, gold]}
    a = assess_emergency_call(good, caller=caller.did, documents=None, now=NOW, policy=strict)
    assert a.accept
    assert a.verified
    assert a.certification is not None
    assert a.certification.level is Level.GOLD
    forged = copy.deepcopy(good)
    forged["geo"]["location"]["lat_e7"] += 1
    cases = [
        (good | {"credentials": [bronze]}, "x-emergency.device-uncertified"),
        (good | {"credentials": []}, "x-emergency.device-uncertified"),
        (forged, "x-emergency.location-forged"),
        (None, "x-emergency.location-invalid"),
        ({"geo": record(caller, FileKeyStore(caller))}, "x-emergency.location-unattested"),
    ]
    for content, reason in cases:
        soft = assess_emergency_call(
            content, caller=caller.did, documents=None, now=NOW, policy=lenient
        )
        assert soft.accept
        assert not soft.verified
        assert reason in soft.flags
        hard = assess_emergency_call(
            content, caller=caller.did, documents=None, now=NOW, policy=strict
        )
        assert not hard.accept
        assert hard.refusal == reason
    # someone else's location in my call: forged
    other = assess_emergency_call(
        good, caller=KeyPair.generate().did, documents=None, now=NOW, policy=lenient
    )
    assert "x-emergency.location-forged" in other.flags


def test_queue_serves_emergency_first_then_arrival_order() -> None:
    q = CallQueue()
    q.push("admin-1", emergency=False)
    q.push("em-1", emergency=True)
    q.push("admin-2", emergency=False)
    q.push("em-2", emergency=True)
    q.push("em-3", emergency=True)
    q.remove("em-2")  # hung up while waiting
    assert len(q) == 4
    assert [q.pop() for _ in range(5)] == ["em-1", "em-3", "admin-1", "admin-2", None]


def test_callback_window_opens_and_closes() -> None:
    w = CallbackWindow(window=600)
    w.open(PSAP_DID, now=NOW)
    assert w.allows(PSAP_DID, now=NOW + 599)
    assert not w.allows("did:web:112.eu", now=NOW)
    assert w.expire(now=NOW + 599) == []
    assert w.expire(now=NOW + 600) == [PSAP_DID]
    assert not w.allows(PSAP_DID, now=NOW + 600)


def test_dsip_errors_only(caller: KeyPair) -> None:
    with pytest.raises(DsipError):
        verify_attestation("x" * 10, documents=None, now=NOW)


def test_trusted_call_shares_precise_location_with_a_trusted_peer_only(
    caller: KeyPair, device: FileKeyStore
) -> None:
    from dsip.core.identity import did_key_document

    friend = KeyPair.generate()
    content = {"geo": record(caller, device)}
    sealed = seal_precise(
        content,
        recipient=did_key_document(friend.did),
        envelope_id="01T",
        mode=PrivacyMode.TRUSTED_CALL,
        trusted={friend.did},
    )
    assert open_precise(sealed, key=friend, recipient=friend.did, envelope_id="01T") == content
    with pytest.raises(EmergencyError) as err:
        seal_precise(
            content,
            recipient=did_key_document(KeyPair.generate().did),
            envelope_id="01T",
            mode=PrivacyMode.TRUSTED_CALL,
            trusted={friend.did},
        )
    assert err.value.reason == "x-emergency.precise-location-refused"
