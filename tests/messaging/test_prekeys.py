"""Prekey bundles: signing, verification, the relay's at-most-once store, replenishment."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import sign_envelope
from dsip.core.identity import KeyPair, parse_did_document
from dsip.core.jsonwire import loads_strict
from dsip.core.payloads.schema import validate_payload
from dsip.errors import SchemaError
from dsip.messaging.prekeys import (
    MAX_ONE_TIME_PREKEYS,
    ClaimedBundle,
    PrekeyBundle,
    PrekeyStore,
    bundles_from_document,
    make_prekey_bundle,
    prekey_service,
    refresh_prekeys,
    verify_prekey_bundle,
)
from dsip.messaging.ratchet import (
    MessagingError,
    generate_one_time_prekeys,
    generate_signed_prekey,
)
from dsip.messaging.session_store import SessionStore

NOW = 1_760_000_000


def bundle_env(
    device: KeyPair, count: int = 5, *, now: int = NOW, first_id: int = 1, **kw: Any
) -> dict[str, str]:
    spk = generate_signed_prekey(device, 1, now=now)
    return make_prekey_bundle(
        device,
        signed_prekey=spk,
        one_time_prekeys=generate_one_time_prekeys(first_id, count),
        now=now,
        **kw,
    )


def payload_of(env: dict[str, str]) -> dict[str, Any]:
    body, _ = loads_strict(b64url_decode(env["payload"]))
    assert isinstance(body, dict)
    return body


def resigned(env: dict[str, str], key: KeyPair, **changes: Any) -> dict[str, str]:
    payload = payload_of(env)
    payload.update(changes)
    return sign_envelope(payload, key)


def invalid(frame: Any, *, now: int = NOW, **kw: Any) -> MessagingError:
    with pytest.raises(MessagingError) as info:
        verify_prekey_bundle(frame, now=now, **kw)
    assert info.value.code == "prekey-invalid"
    assert info.value.reason == "policy.trust-insufficient"
    return info.value


# -- bundles ---------------------------------------------------------------------------------


def test_bundle_round_trip_and_schema() -> None:
    device = KeyPair.generate()
    env = bundle_env(device)
    validate_payload(payload_of(env))
    b = verify_prekey_bundle(env, now=NOW + 86_400)  # a record: valid long after issue
    assert b.device == b.identity == device.did
    assert b.identity_key == device.public_key.public_bytes_raw()
    assert [i for i, _ in b.one_time_prekeys] == [1, 2, 3, 4, 5]
    remote = b.remote(3)
    assert remote.one_time_prekey == dict(b.one_time_prekeys)[3]
    with pytest.raises(MessagingError):
        b.remote(42)


def test_delegated_device_publishes_for_its_identity() -> None:
    identity, device = KeyPair.generate(), KeyPair.generate()
    deleg = issue_delegation(identity, device.did, issued_at=NOW - 10, expires_at=NOW + 1000)
    env = bundle_env(device, identity=identity.did, delegations=[deleg])
    b = verify_prekey_bundle(env, now=NOW + 10)
    assert (b.identity, b.device) == (identity.did, device.did)
    # The delegation must still hold when the bundle is used, not only when it was issued.
    err = invalid(env, now=NOW + 2000)
    assert "delegation" in err.message or "expired" in err.message


def test_bundle_binding_failures_are_prekey_invalid() -> None:
    device, other = KeyPair.generate(), KeyPair.generate()
    env = bundle_env(device)
    # identity key of another key, signed by the device
    invalid(resigned(env, device, identity_key=b64url_encode(other.public_key.public_bytes_raw())))
    # names another device than its signer
    invalid(resigned(env, device, device=other.did))
    # a signed prekey signature that is not the device's
    spk = payload_of(env)["signed_prekey"]
    forged = dict(
        spk, signature=b64url_encode(other.sign(b"dsip/x25519:" + b64url_decode(spk["key"])))
    )
    invalid(resigned(env, device, signed_prekey=forged))
    # repeated one-time prekey ids
    otks = payload_of(env)["one_time_prekeys"]
    invalid(resigned(env, device, one_time_prekeys=[otks[0], dict(otks[1], id=otks[0]["id"])]))
    # expired, issued in the future, tampered in transit, not a bundle
    invalid(env, now=NOW + 31 * 86_400)
    invalid(bundle_env(device, now=NOW + 3600))
    tampered = dict(env, payload=env["payload"][:-4] + "AAAA")
    invalid(tampered)
    invalid(resigned(env, device, type="presence"))


def test_schema_bounds_the_bundle() -> None:
    device = KeyPair.generate()
    payload = payload_of(bundle_env(device, count=1))
    payload["one_time_prekeys"] = [
        {"id": i, "key": payload["one_time_prekeys"][0]["key"]}
        for i in range(MAX_ONE_TIME_PREKEYS + 1)
    ]
    with pytest.raises(SchemaError):
        validate_payload(payload)
    with pytest.raises(ValueError, match="at most"):
        bundle_env(device, count=MAX_ONE_TIME_PREKEYS + 1)
    short = copy.deepcopy(payload_of(bundle_env(device)))
    short["identity_key"] = short["identity_key"][:-1]
    with pytest.raises(SchemaError):
        validate_payload(short)


def test_did_document_carries_signed_prekey_only_bundles() -> None:
    identity = KeyPair.generate()
    env = bundle_env(identity, count=0)
    doc = {
        "id": "did:web:example.com:alice",
        "verificationMethod": [],
        "service": [
            prekey_service("did:web:example.com:alice", [env], relay="wss://relay.example/dsip")
        ],
    }
    parsed = parse_did_document(doc, "did:web:example.com:alice")
    frames = bundles_from_document(parsed)
    assert len(frames) == 1
    b = verify_prekey_bundle(frames[0], now=NOW)
    assert b.one_time_prekeys == ()
    assert b.remote().one_time_prekey is None


# -- the relay's store -----------------------------------------------------------------------


def published(store: PrekeyStore, device: KeyPair, count: int, **kw: Any) -> PrekeyBundle:
    b = verify_prekey_bundle(bundle_env(device, count, **kw), now=kw.get("now", NOW))
    store.publish(b, now=NOW)
    return b


def test_each_one_time_prekey_is_handed_out_once_then_the_signed_prekey_alone(
    tmp_path: Path,
) -> None:
    store = PrekeyStore.open(tmp_path / "relay.db")
    device = KeyPair.generate()
    published(store, device, 3)
    got = [store.claim(device.did, now=NOW) for _ in range(5)]
    assert [c.one_time_prekey_id for c in got if c] == [1, 2, 3, None, None]
    assert store.available(device.did) == 0
    remote = got[4].verify(now=NOW) if got[4] else None
    assert remote is not None
    assert remote.one_time_prekey is None
    assert store.claim("did:key:z6MkUnknown", now=NOW) is None
    assert store.claim(device.did, now=NOW + 40 * 86_400) is None  # expired bundle


def test_replenishment_never_unclaims(tmp_path: Path) -> None:
    store = PrekeyStore.open(tmp_path / "relay.db")
    device = KeyPair.generate()
    published(store, device, 3)
    assert store.claim(device.did, now=NOW).one_time_prekey_id == 1  # type: ignore[union-attr]
    # The device republishes ids 1..6 (it does not know 1 was claimed): 1 stays claimed.
    newer = verify_prekey_bundle(bundle_env(device, 6, now=NOW + 5), now=NOW + 5)
    assert store.publish(newer, now=NOW + 5) == 3
    ids = [store.claim(device.did, now=NOW + 5) for _ in range(6)]
    assert [c.one_time_prekey_id for c in ids if c] == [2, 3, 4, 5, 6, None]
    # An older bundle than the one held is ignored.
    assert store.publish(verify_prekey_bundle(bundle_env(device, 9), now=NOW), now=NOW) == 0
    # Unclaimed ids a newer bundle no longer lists are dropped.
    trimmed = verify_prekey_bundle(bundle_env(device, 2, now=NOW + 9, first_id=10), now=NOW + 9)
    store.publish(trimmed, now=NOW + 9)
    assert store.available(device.did) == 2
    store.close()
    reopened = PrekeyStore.open(tmp_path / "relay.db")
    assert reopened.available(device.did) == 2


def test_claim_identity_returns_one_bundle_per_device(tmp_path: Path) -> None:
    store = PrekeyStore.open(tmp_path / "relay.db")
    identity = KeyPair.generate()
    devices = [KeyPair.generate() for _ in range(3)]
    for d in devices:
        deleg = issue_delegation(identity, d.did, issued_at=NOW - 1, expires_at=NOW + 10**6)
        published(store, d, 2, identity=identity.did, delegations=[deleg])
    claimed = store.claim_identity(identity.did, now=NOW)
    assert sorted(c.device for c in claimed) == sorted(d.did for d in devices)
    assert all(c.one_time_prekey_id == 1 for c in claimed)


def test_concurrent_claims_hand_out_each_prekey_once(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    device = KeyPair.generate()
    first = PrekeyStore.open(path)
    published(first, device, 50)
    stores = [first, *(PrekeyStore.open(path) for _ in range(3))]  # four connections

    async def main() -> list[ClaimedBundle | None]:
        tasks = [
            asyncio.to_thread(stores[i % len(stores)].claim, device.did, now=NOW) for i in range(80)
        ]
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    ids = [c.one_time_prekey_id for c in results if c and c.one_time_prekey_id is not None]
    assert sorted(ids) == list(range(1, 51))  # every one handed out, none twice
    assert sum(1 for c in results if c and c.one_time_prekey_id is None) == 30
    for s in stores:
        s.close()


def test_claimed_bundle_must_match_its_device(tmp_path: Path) -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    env = bundle_env(a, 2)
    frame = verify_prekey_bundle(env, now=NOW).frame
    with pytest.raises(MessagingError) as info:
        ClaimedBundle(b.did, frame, 1).verify(now=NOW)
    assert info.value.code == "prekey-invalid"
    with pytest.raises(MessagingError):
        ClaimedBundle(a.did, frame, 99).verify(now=NOW)  # id not in the signed bundle


# -- the device side ---------------------------------------------------------------------------


def test_refresh_tops_up_and_rotates(tmp_path: Path) -> None:
    device = KeyPair.generate()
    store = SessionStore.open(tmp_path / "device.db", key=bytes(32))
    b1 = verify_prekey_bundle(refresh_prekeys(store, device, now=NOW, target=4), now=NOW)
    assert [i for i, _ in b1.one_time_prekeys] == [1, 2, 3, 4]
    with store.transaction() as tx:
        tx.consume_one_time_prekey(device.did, 2, now=NOW)
    b2 = verify_prekey_bundle(refresh_prekeys(store, device, now=NOW + 1, target=4), now=NOW + 1)
    assert [i for i, _ in b2.one_time_prekeys] == [1, 3, 4, 5]
    assert b2.signed_prekey_id == b1.signed_prekey_id
    week = 7 * 86_400
    b3 = verify_prekey_bundle(
        refresh_prekeys(store, device, now=NOW + week, target=4), now=NOW + week
    )
    assert b3.signed_prekey_id == b1.signed_prekey_id + 1
    refresh_prekeys(store, device, now=NOW + 2 * week, target=4)
    with store.transaction(write=False) as tx:
        live = [s.id for s in tx.signed_prekeys(device.did)]
    assert live == [3, 2]  # the previous one stays for messages in flight; older ones retire
