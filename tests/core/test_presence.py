"""Presence records and region buckets: keys, §8.3 selection, and what a storing node refuses."""

from __future__ import annotations

import json

import pytest

from dsip.core.delegation import issue_delegation
from dsip.core.identity import KeyPair
from dsip.core.presence import (
    REGION_MAX_ENTRIES,
    RecordValidator,
    hint_key,
    make_presence,
    presence_key,
    region_key,
    region_keys_for,
)
from dsip.errors import DsipError
from tests.conftest import NOW

WS = {"ws": ["wss://relay.example/dsip"]}


def _code(fn: object, *args: object, **kw: object) -> str:
    with pytest.raises(DsipError) as err:
        fn(*args, **kw)  # type: ignore[operator]
    return err.value.code


def test_keys_follow_the_seed_formulas() -> None:
    import hashlib

    did = "did:key:z6MkhzX9qTeXBWkucyMVric1E9JrqUD5LPAkD2BNavakAptf"
    assert presence_key(did) == hashlib.sha256(f"dsip-presence:{did}".encode()).digest()
    assert region_key("dr5r") == hashlib.sha256(b"dsip-presence:geo:dr5r").digest()
    assert hint_key("DID:KEY:z6Mkabc")[:2] == b"\x12\x20"
    assert hint_key("DID:KEY:z6Mkabc") == hint_key("did:key:z6Mkabc")
    assert [p for p, _ in region_keys_for("dr5ru7")] == [
        "d",
        "dr",
        "dr5",
        "dr5r",
        "dr5ru",
        "dr5ru7",
    ]


def test_valid_record_under_its_own_key_only() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    v = RecordValidator()
    frame = make_presence(alice, endpoints=WS, seq=1, now=NOW).encode()
    v.validate(presence_key(alice.did), frame, now=NOW)
    assert _code(v.validate, presence_key(bob.did), frame, now=NOW) == "key-mismatch"


def test_storing_node_refusals() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    v = RecordValidator()
    key = presence_key(alice.did)
    forged = make_presence(mallory, subject=alice.did, endpoints=WS, seq=9, now=NOW).encode()
    assert _code(v.validate, key, forged, now=NOW) == "signer-mismatch"
    stale = make_presence(alice, endpoints=WS, seq=1, now=NOW - 400, ttl=300).encode()
    assert _code(v.validate, key, stale, now=NOW) == "replay-window"
    expired = make_presence(alice, endpoints=WS, seq=1, now=NOW - 100, ttl=60).encode()
    assert _code(v.validate, key, expired, now=NOW) == "expired"
    assert (
        _code(
            v.validate,
            key[:20],
            make_presence(alice, endpoints=WS, seq=1, now=NOW).encode(),
            now=NOW,
        )
        == "key-invalid"
    )
    assert _code(v.validate, key, b"x" * 70_000, now=NOW) == "frame-too-large"
    assert _code(v.validate, key, b"not json", now=NOW) == "envelope-shape"
    with pytest.raises(ValueError, match="TTL"):
        make_presence(alice, endpoints=WS, seq=1, now=NOW, ttl=3600)


def test_delegated_device_may_publish_for_its_identity() -> None:
    alice, phone = KeyPair.generate(), KeyPair.generate()
    deleg = issue_delegation(alice, phone.did, issued_at=NOW - 10, expires_at=NOW + 3600)
    frame = make_presence(
        phone, subject=alice.did, endpoints=WS, seq=3, now=NOW, delegations=[deleg]
    )
    rec = RecordValidator().verify(frame, now=NOW)
    assert (rec.subject, rec.verified.signer) == (alice.did, phone.did)


def test_reader_selects_the_newest_valid_record() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    v = RecordValidator()
    key = presence_key(alice.did)
    old = make_presence(
        alice, endpoints={"ws": ["wss://old.example/dsip"]}, seq=1, now=NOW - 10
    ).encode()
    new = make_presence(
        alice, endpoints={"ws": ["wss://new.example/dsip"]}, seq=2, now=NOW - 5
    ).encode()
    forged = make_presence(mallory, subject=alice.did, endpoints=WS, seq=99, now=NOW).encode()
    best = v.best(key, [old, forged, new, b"garbage"], now=NOW)
    assert best is not None
    assert best.endpoints == {"ws": ["wss://new.example/dsip"]}
    assert v.best(key, [forged, b"garbage"], now=NOW) is None


def test_region_bucket_merges_many_dids_and_rejects_strangers() -> None:
    v = RecordValidator()
    keys = [KeyPair.generate() for _ in range(REGION_MAX_ENTRIES + 10)]
    frames = [
        make_presence(k, endpoints=WS, seq=1, now=NOW - i % 50, geohash="dr5ru7").encode()
        for i, k in enumerate(keys)
    ]
    bucket = region_key("dr5r")
    merged = b""
    for f in frames:  # nodes merge as records arrive
        merged = v.merge_region(bucket, [merged, f] if merged else [f], now=NOW)
    v.validate(bucket, merged, now=NOW)
    members = v.region_members(bucket, [merged], now=NOW)
    assert len(members) == REGION_MAX_ENTRIES
    assert len({m.subject for m in members}) == REGION_MAX_ENTRIES
    elsewhere = make_presence(KeyPair.generate(), endpoints=WS, seq=1, now=NOW, geohash="u4pruy")
    doc = json.loads(merged)
    doc["entries"][0] = elsewhere
    assert (
        _code(v.validate, bucket, json.dumps(doc, separators=(",", ":")).encode(), now=NOW)
        == "key-mismatch"
    )


def test_region_merge_keeps_the_newest_per_subject() -> None:
    v = RecordValidator()
    alice = KeyPair.generate()
    bucket = region_key("dr5")
    r1 = make_presence(
        alice, endpoints={"ws": ["wss://a.example/dsip"]}, seq=1, now=NOW - 9, geohash="dr5ru"
    )
    r2 = make_presence(
        alice, endpoints={"ws": ["wss://b.example/dsip"]}, seq=2, now=NOW - 1, geohash="dr5ru"
    )
    merged = v.merge_region(bucket, [r1.encode(), r2.encode()], now=NOW)
    (only,) = v.region_members(bucket, [merged], now=NOW)
    assert only.seq == 2
