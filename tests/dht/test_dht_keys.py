"""Record keys: seed §21.C digests, encoded into py-libp2p's key namespace (≤ 50 bytes)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsip.core.presence import hint_key, presence_key, region_key
from dsip.dht import DhtKeyError, RecordKey
from dsip.dht.node import MAX_KEY_BYTES

DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"


def test_digests_are_the_seed_formulas() -> None:
    assert (
        RecordKey.presence(DID).digest == hashlib.sha256(b"dsip-presence:" + DID.encode()).digest()
    )
    assert RecordKey.region("u4pr").digest == hashlib.sha256(b"dsip-presence:geo:u4pr").digest()
    assert RecordKey.presence(DID).digest == presence_key(DID)
    assert RecordKey.region("u4pr").digest == region_key("u4pr")
    assert RecordKey.hint(DID).validator_key == hint_key(DID)


@pytest.mark.parametrize(
    ("key", "namespace", "length"),
    [
        (RecordKey.presence(DID), b"/dsip/", 49),
        (RecordKey.region("u"), b"/dsipg/", 50),
        (RecordKey.hint(DID), b"/dsiph/", 50),
    ],
)
def test_wire_form_fits_the_find_node_limit(key: RecordKey, namespace: bytes, length: int) -> None:
    assert key.wire.startswith(namespace)
    assert len(key.wire) == length <= MAX_KEY_BYTES
    assert RecordKey.parse(key.wire) == key
    assert RecordKey.parse(key.wire.decode()) == key
    assert len(key.provider_key) == 34
    assert key.provider_key[:2] == b"\x12\x20"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"/",
        b"dsip/" + _b64(bytes(32)).encode(),
        b"/dsip/" + _b64(bytes(31)).encode(),  # wrong digest length
        b"/dsip/" + _b64(bytes(33)).encode(),
        b"/pk/" + _b64(bytes(32)).encode(),  # not ours
        b"/dsip/" + _b64(bytes(32)).encode() + b"/x",
        b"/dsip/" + _b64(bytes(32)).encode()[:-1] + b"B",  # non-canonical trailing bits
        b"/dsip/" + b"!" * 43,
        b"/dsip/\xff\xfe",
        b"/DSIP/" + _b64(bytes(32)).encode(),
    ],
)
def test_hostile_keys_are_refused(wire: bytes) -> None:
    with pytest.raises(DhtKeyError):
        RecordKey.parse(wire)


def test_digest_length_is_enforced_on_construction() -> None:
    with pytest.raises(DhtKeyError):
        RecordKey("presence", bytes(31))


@given(st.binary(max_size=80))
def test_parse_raises_only_dht_key_error(data: bytes) -> None:
    try:
        key = RecordKey.parse(data)
    except DhtKeyError:
        return
    assert key.wire == data
