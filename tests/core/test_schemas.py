"""Stage 13: dsip's JSON Schemas for every v0.7 payload type and the validator module."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import pytest
import referencing
from hypothesis import given, settings
from hypothesis import strategies as st

import dsip.core.payloads
from dsip.core.payloads import (
    MESSAGE_TYPES,
    SCHEMA_NAMES,
    schema_document,
    validate_named,
    validate_payload,
)
from dsip.core.payloads.schema import SCHEMA_BASE_URI
from dsip.errors import SchemaError

VECTORS = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "dsip-v0.7" / "vectors"
)
SCHEMA_DIR = Path(dsip.core.payloads.__file__).parent / "schemas"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
CORE_FIELDS = ["dsip", "type", "id", "from", "issued_at", "expires_at"]
UNADDRESSED = {
    "hello",
    "publish",
    "unpublish",
    "provenance",
    "key-rotation",
    "reachability-hint",
    "presence",
    "prekey-bundle",
}

# -- example payloads, written from the spec text --------------------------------------------

DSIP = {
    "core": "1.0",
    "min_core": "1.0",
    "profiles": ["interactive-media/1.0"],
    "extensions": [],
    "critical": [],
}
ALICE_PHONE = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
BOB = "did:web:example.com:users:bob"
RELAY = "did:web:relay.example.com"
NOW = 1_760_000_000


def ulid(n: int) -> str:
    return f"01JC3Z3WS1H6V7Q8X9Y0Z1A2{n:02d}"


SESSION = ulid(1)
AUDIO = {
    "type": "audio",
    "direction": "sendrecv",
    "codecs": [{"id": "codec:audio/opus", "sample_rates": [48000], "channels": [1, 2]}],
}
WEBRTC = {"id": "transport:webrtc", "ice": "trickle", "sdp": "v=0\r\ns=-\r\n"}


def message(mtype: str, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "dsip": copy.deepcopy(DSIP),
        "type": mtype,
        "id": ulid(10),
        "from": ALICE_PHONE,
        "issued_at": NOW,
        "expires_at": NOW + 30,
    }
    if mtype not in UNADDRESSED:
        payload["to"] = BOB
    payload.update(copy.deepcopy(fields))
    return payload


EXAMPLES: dict[str, dict[str, Any]] = {
    "invite": message("invite", media=[AUDIO], transports=[WEBRTC], intent="interactive"),
    "progress": message("progress", session=SESSION, status="ringing", ring_timeout=120),
    "answer": message(
        "answer", session=SESSION, answered_by="user", media=[AUDIO], transports=[WEBRTC]
    ),
    "reject": message("reject", session=SESSION, reason="user.declined"),
    "cancel": message("cancel", session=SESSION, reason="user.cancelled"),
    "update": message("update", session=SESSION, media=[AUDIO], answered_by="user"),
    "info": message(
        "info",
        session=SESSION,
        about="transport:webrtc",
        data={"candidates": [], "end_of_candidates": True},
    ),
    "bye": message("bye", session=SESSION, reason="user.hangup"),
    "error": message("error", reason="transport.routing-refused"),
    "hello": message("hello", bindings=["ws/1.0"], on_behalf_of=BOB),
    "subscribe": message("subscribe", target=BOB, events=["presence"], expires_in=600),
    "notify": message(
        "notify", subscription=ulid(2), seq=1, state="active", body={"state": "available"}
    ),
    "publish": message(
        "publish",
        publisher="did:web:wxyz.com",
        stream_id="did:web:wxyz.com:radio:main",
        state="live",
        variants=[
            {
                "id": "main",
                "media": ["audio"],
                "codec": "codec:audio/opus",
                "transport": "transport:webrtc",
                "uri": "wss://live.wxyz.com/dsip",
            }
        ],
    ),
    "unpublish": message(
        "unpublish",
        publisher="did:web:wxyz.com",
        stream_id="did:web:wxyz.com:radio:main",
        publication=ulid(3),
    ),
    "provenance": message(
        "provenance",
        original_stream="did:web:wxyz.com:radio:main",
        original_publication=ulid(3),
        processor="did:web:cdn.example",
        operation="transcode",
        input_variant="main",
        output_variant="main-hls",
    ),
    "introduction": message("introduction", identity={"display_name": "Carol"}, purpose="hi"),
    "grant": message("grant", session=ulid(4), scope=["dsip.invite"], valid_until=NOW + 86400),
    "key-rotation": message(
        "key-rotation",
        subject=BOB,
        previous=BOB + "#key-1",
        next=BOB + "#key-2",
        next_public_key_multibase="z6MkrgXgMcSfqUQ6bhMEL1dhqvPYU4YaueY56Mw8aee9YN4R",
        reason="scheduled",
    ),
    "reachability-hint": message(
        "reachability-hint",
        subject=ALICE_PHONE,
        endpoints=[{"uri": "wss://relay.example/dsip", "bindings": ["ws/1.0"]}],
        seq=NOW,
    ),
    "ack": message("ack", acks=[ulid(11), ulid(12)]),
    "mls": message(
        "mls",
        to=RELAY,
        group="q83vEjRWeJA",
        epoch=3,
        content_type="application",
        data="AAEAAgAIq83vEjRWeJA",
    ),
    "msg": message(
        "msg",
        to=ALICE_PHONE,
        content={"enc": "dr-v1", "ciphertext": "q83vEjRWeJA", "aad": "e30"},
        header={"ratchet_key": "A" * 43, "previous_chain_length": 0, "message_number": 0},
        x3dh={"identity_key": "A" * 43, "ephemeral_key": "A" * 43, "signed_prekey_id": 1},
    ),
    "prekey-bundle": message(
        "prekey-bundle",
        device=ALICE_PHONE,
        identity_key="A" * 43,
        signed_prekey={"id": 1, "key": "A" * 43, "signature": "A" * 86},
        one_time_prekeys=[{"id": 1, "key": "A" * 43}, {"id": 2, "key": "E" * 43}],
    ),
    "prekey-claim": message("prekey-claim", target=BOB),
    "prekey-claimed": message("prekey-claimed", in_reply_to=ulid(14), bundles=[]),
    "mls-fetch": message("mls-fetch", target=BOB),
    "mls-fetched": message(
        "mls-fetched", in_reply_to=ulid(14), key_packages=[], group_info="AAAA", epoch=3
    ),
    "push-subscription": message(
        "push-subscription",
        endpoint="http://127.0.0.1:9999/push/abc",
        keys={"p256dh": "BAAA", "auth": "AAAA"},
    ),
    "sealed": message(
        "sealed", suite="x25519-hkdf-sha256-aes128gcm", payload_enc="AAAA", kid=BOB + "#x25519"
    ),
    "usage-record": message(
        "usage-record",
        token=ulid(13),
        service="turn",
        started_at=NOW - 60,
        seconds=60,
        bytes=120_000,
        debited_msat=60_000,
        balance_msat=0,
        state="cut",
    ),
    "presence": message(
        "presence",
        subject=ALICE_PHONE,
        endpoints={"ws": ["wss://relay.example/dsip"]},
        geo={"geohash": "dr5r", "method": "gps"},
        seq=1,
    ),
}
RELAY_HELLO = message(
    "hello",
    **{"from": RELAY},
    in_reply_to=EXAMPLES["hello"]["id"],
    capabilities={"max_envelope_bytes": 65536, "store_and_forward": True},
)


def example(mtype: str, **changes: Any) -> dict[str, Any]:
    """A valid example of ``mtype`` with fields replaced (or removed, with ``...``)."""
    payload = copy.deepcopy(EXAMPLES[mtype])
    for key, value in changes.items():
        if value is ...:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def rejected(payload: Any) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        validate_payload(payload)
    return info.value


def outcome(payload: Any) -> SchemaError | None:
    """None when accepted, else the SchemaError; any other exception propagates."""
    try:
        validate_payload(payload)
    except SchemaError as exc:
        return exc
    return None


def assert_schema_invalid(payload: Any, *, mentions: str | None = None) -> None:
    exc = rejected(payload)
    assert exc.code == "schema-invalid", exc
    if mentions is not None:
        assert mentions in exc.message, exc.message


# -- the shared conformance vectors ---------------------------------------------------------


def vector_params() -> list[Any]:
    folder = VECTORS / "payload"
    if not folder.is_dir():
        reason = f"shared payload vectors not found at {folder}"
        return [pytest.param(None, id="no-vectors", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(path, id=path.stem) for path in sorted(folder.glob("*.json"))]


@pytest.mark.parametrize("path", vector_params())
def test_payload_vector(path: Path) -> None:
    vector = json.loads(path.read_text("utf-8"))
    schema, payload = vector["input"]["schema"], vector["input"]["payload"]
    expect = vector["expect"]
    if expect["verdict"] == "accept":
        validate_named(schema, payload)
    else:
        with pytest.raises(SchemaError) as info:
            validate_named(schema, payload)
        assert info.value.code == expect["code"] == "schema-invalid"


# -- the schema files themselves ------------------------------------------------------------


def schema_files() -> dict[str, dict[str, Any]]:
    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text("utf-8"))
        for path in sorted(SCHEMA_DIR.glob("*.schema.json"))
    }


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_schema_set_is_complete() -> None:
    assert set(schema_files()) == SCHEMA_NAMES | {"common"}
    # The 19 v0.7 types (§12.1, hello, reachability-hint) plus dsip's profile types.
    v07 = {
        "invite",
        "progress",
        "answer",
        "reject",
        "cancel",
        "update",
        "info",
        "bye",
        "error",
        "hello",
        "subscribe",
        "notify",
        "publish",
        "unpublish",
        "provenance",
        "introduction",
        "grant",
        "key-rotation",
        "reachability-hint",
    }
    assert v07 <= MESSAGE_TYPES
    assert {
        "ack",
        "presence",
        "usage-record",
        "sealed",
        "msg",
        "prekey-bundle",
        "mls",
    } <= MESSAGE_TYPES - v07


@pytest.mark.parametrize("name", sorted(SCHEMA_NAMES | {"common"}))
def test_schema_file_is_valid_draft_2020_12(name: str) -> None:
    document = schema_files()[name]
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$schema"] == DRAFT_2020_12
    assert document["$id"] == f"{SCHEMA_BASE_URI}{name}.schema.json"
    assert document["description"]


def test_every_ref_resolves() -> None:
    documents = schema_files()
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (doc["$id"], referencing.Resource.from_contents(doc)) for doc in documents.values()
    )
    seen = 0
    for name, document in documents.items():
        resolver = registry.resolver(base_uri=document["$id"])
        for ref in refs(document):
            resolved = resolver.lookup(ref).contents
            assert isinstance(resolved, dict), (name, ref)
            seen += 1
            # One shared definitions file: messages reach shared shapes only through it.
            if name != "common":
                assert ref.startswith("common.schema.json#/$defs/"), (name, ref)
    assert seen > 100


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_message_schema_is_closed_and_names_its_type(mtype: str) -> None:
    document = schema_document(mtype)
    assert document["additionalProperties"] is False
    assert document["properties"]["type"] == {"const": mtype}
    required = document["required"]
    assert set(CORE_FIELDS) <= set(required)
    assert ("to" in required) is (mtype not in UNADDRESSED)


def test_schema_document_returns_a_copy() -> None:
    schema_document("invite")["properties"].clear()
    assert "media" in schema_document("invite")["properties"]
    assert "ulid" in schema_document("common")["$defs"]
    with pytest.raises(SchemaError) as info:
        schema_document("roster")
    assert info.value.code == "unknown-type"


def test_schemas_ship_in_the_package() -> None:
    assert (SCHEMA_DIR / "common.schema.json").is_file()


# -- our own examples, one per type -----------------------------------------------------------


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_example_of_every_type_is_accepted(mtype: str) -> None:
    validate_payload(EXAMPLES[mtype])
    validate_named(mtype, EXAMPLES[mtype])


@pytest.mark.parametrize("mtype", sorted(MESSAGE_TYPES))
def test_missing_core_field_is_rejected(mtype: str) -> None:
    for field in ["dsip", "id", "from", "issued_at", "expires_at"]:
        assert_schema_invalid(example(mtype, **{field: ...}), mentions=field)


def test_type_must_match_the_schema() -> None:
    with pytest.raises(SchemaError) as info:
        validate_named("answer", EXAMPLES["invite"])
    assert info.value.code == "schema-invalid"


def test_non_dict_mapping_is_accepted() -> None:
    validate_payload(MappingProxyType(EXAMPLES["invite"]))


# -- key rules, from the spec text ------------------------------------------------------------


def test_invite_is_closed_at_top_level() -> None:
    exc = rejected(example("invite", x_vendor_hint="fast"))
    assert "invite: (root):" in exc.message
    assert "x_vendor_hint" in exc.message


def test_invite_open_inside_media_codec_and_transport() -> None:
    media = dict(AUDIO, language="en", resolution_min="720p")
    transport = dict(WEBRTC, vendor_param=1)
    validate_payload(example("invite", media=[media], transports=[transport]))


def test_invite_requires_an_offer() -> None:
    assert_schema_invalid(example("invite", media=...), mentions="media")
    assert_schema_invalid(example("invite", media=[]), mentions="/media")
    assert_schema_invalid(example("invite", transports=[]), mentions="/transports")


def test_codec_must_be_an_object() -> None:
    bare = dict(AUDIO, codecs=["codec:audio/opus"])
    assert_schema_invalid(example("invite", media=[bare]), mentions="/media/0/codecs/0")
    no_id = dict(AUDIO, codecs=[{"sample_rates": [48000]}])
    assert_schema_invalid(example("invite", media=[no_id]), mentions="/media/0/codecs/0")
    bad_id = dict(AUDIO, codecs=[{"id": "opus"}])
    assert_schema_invalid(example("invite", media=[bad_id]), mentions="/media/0/codecs/0/id")


def test_bad_direction_names_the_field() -> None:
    sideways = dict(AUDIO, direction="sideways")
    exc = rejected(example("invite", media=[sideways]))
    assert exc.message.startswith("invite: /media/0/direction: ")
    assert "sideways" in exc.message


@pytest.mark.parametrize("count", [0, 2])
def test_answer_selects_exactly_one_transport(count: int) -> None:
    transports = [WEBRTC, {"id": "transport:rtp-sdes"}][:count]
    assert_schema_invalid(example("answer", transports=transports), mentions="/transports")


def test_answer_replying_to_an_update() -> None:
    validate_payload(example("answer", in_reply_to=ulid(5)))
    assert_schema_invalid(example("answer", answered_by=...), mentions="answered_by")


def test_hello_client_and_relay_forms() -> None:
    validate_payload(EXAMPLES["hello"])
    validate_payload(RELAY_HELLO)
    unknown_capability = copy.deepcopy(RELAY_HELLO)
    unknown_capability["capabilities"]["quic_upgrade"] = {"port": 443}
    validate_payload(unknown_capability)


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"bindings": ...}, "bindings"),  # client form names its bindings
        ({"bindings": []}, "/bindings"),
        ({"bindings": ["ws"]}, "/bindings/0"),
        ({"in_reply_to": ulid(11)}, "capabilities"),  # in_reply_to => capabilities
        ({"capabilities": {"max_envelope_bytes": 65536}}, "in_reply_to"),  # and back
        ({"session": SESSION}, "'session'"),  # session-scoped to nothing
        ({"to": BOB}, "'to'"),
    ],
)
def test_hello_client_form_violations(changes: dict[str, Any], mentions: str) -> None:
    assert_schema_invalid(example("hello", **changes), mentions=mentions)


@pytest.mark.parametrize("limit", [65535, 131072, "65536", None])
def test_hello_max_envelope_bytes_is_the_binding_constant(limit: Any) -> None:
    hello = copy.deepcopy(RELAY_HELLO)
    hello["capabilities"]["max_envelope_bytes"] = limit
    assert_schema_invalid(hello, mentions="/capabilities/max_envelope_bytes")
    del hello["capabilities"]["max_envelope_bytes"]
    assert_schema_invalid(hello, mentions="/capabilities")


@pytest.mark.parametrize(
    "token",
    ["user.declined", "session.unsupported-core-version", "x-contactcenter.queue-full", "a.b"],
)
@pytest.mark.parametrize("mtype", ["reject", "cancel", "bye", "error"])
def test_reason_token_shape_accepts(mtype: str, token: str) -> None:
    validate_payload(example(mtype, reason=token))


@pytest.mark.parametrize(
    "token",
    ["declined", "User.declined", "user.Declined", "user.", ".declined", "user.declined.x",
     "user declined", "1user.declined", "", 7],
)  # fmt: skip
@pytest.mark.parametrize("mtype", ["reject", "cancel", "bye", "error"])
def test_reason_token_shape_rejects(mtype: str, token: Any) -> None:
    assert_schema_invalid(example(mtype, reason=token), mentions="/reason")


@pytest.mark.parametrize("mtype", ["reject", "cancel", "bye", "error"])
def test_reason_is_required(mtype: str) -> None:
    assert_schema_invalid(example(mtype, reason=...), mentions="reason")


@pytest.mark.parametrize("mtype", ["cancel", "reject"])
def test_detail_at_most_1024_characters(mtype: str) -> None:
    validate_payload(example(mtype, detail="é" * 1024, retry_after=0))
    assert_schema_invalid(example(mtype, detail="x" * 1025), mentions="/detail")
    assert_schema_invalid(example(mtype, retry_after=-1), mentions="/retry_after")


@pytest.mark.parametrize("expires_in", [0, 1, 3600, 86400])
def test_subscribe_expires_in_accepts(expires_in: int) -> None:
    validate_payload(example("subscribe", expires_in=expires_in))


@pytest.mark.parametrize("expires_in", [-1, 86401, "600", 600.5, None])
def test_subscribe_expires_in_rejects(expires_in: Any) -> None:
    assert_schema_invalid(example("subscribe", expires_in=expires_in), mentions="/expires_in")


def test_subscribe_needs_events() -> None:
    assert_schema_invalid(example("subscribe", events=[]), mentions="/events")
    assert_schema_invalid(example("subscribe", events=...), mentions="events")
    validate_payload(example("subscribe", events=["presence", "publication"]))


@pytest.mark.parametrize(("seq", "ok"), [(1, True), (2**31, True), (0, False), (-1, False)])
def test_notify_seq_starts_at_one(seq: int, ok: bool) -> None:
    payload = example("notify", seq=seq)
    if ok:
        validate_payload(payload)
    else:
        assert_schema_invalid(payload, mentions="/seq")


def test_notify_state_and_terminal_reason() -> None:
    validate_payload(example("notify", state="terminated", reason="policy.terminated"))
    assert_schema_invalid(example("notify", state="paused"), mentions="/state")


@pytest.mark.parametrize(
    ("ring_timeout", "ok"), [(30, True), (300, True), (29, False), (301, False)]
)
def test_progress_ring_timeout_bounds(ring_timeout: int, ok: bool) -> None:
    payload = example("progress", ring_timeout=ring_timeout)
    if ok:
        validate_payload(payload)
    else:
        assert_schema_invalid(payload, mentions="/ring_timeout")


def test_progress_queued_needs_queue_timeout() -> None:
    queued = example("progress", status="queued", ring_timeout=...)
    assert_schema_invalid(queued, mentions="queue_timeout")
    validate_payload(example("progress", status="queued", queue_timeout=1800))
    assert_schema_invalid(
        example("progress", status="queued", queue_timeout=1801), mentions="/queue_timeout"
    )
    validate_payload(example("progress", status="x-position-update"))  # shape only


def test_introduction_purpose_at_most_280_characters() -> None:
    validate_payload(example("introduction", purpose="ü" * 280))  # characters, not bytes
    assert_schema_invalid(example("introduction", purpose="x" * 281), mentions="/purpose")
    assert_schema_invalid(example("introduction", media=[AUDIO]), mentions="media")
    assert_schema_invalid(example("introduction", session=SESSION), mentions="session")


@pytest.mark.parametrize("about", ["transport:webrtc", "transport:rtp-srtp", "x-dtmf:1.0"])
def test_info_about_shape_accepts(about: str) -> None:
    validate_payload(example("info", about=about))


@pytest.mark.parametrize(
    "about", ["webrtc", "Transport:webrtc", "transport:", ":webrtc", "transport:WebRTC", 1]
)
def test_info_about_shape_rejects(about: Any) -> None:
    assert_schema_invalid(example("info", about=about), mentions="/about")


def test_info_webrtc_data_is_checked() -> None:
    candidate = {"candidate": "candidate:1 1 udp 1 203.0.113.7 61481 typ host", "sdp_mid": "0"}
    validate_payload(example("info", data={"candidates": [candidate], "end_of_candidates": False}))
    no_mid = {"candidates": [{"candidate": candidate["candidate"]}], "end_of_candidates": False}
    exc = rejected(example("info", data=no_mid))
    assert exc.code == "schema-invalid"
    assert exc.message.startswith("info: /data/candidates/0: ")
    ufrag = dict(candidate, username_fragment="abcd")
    assert_schema_invalid(
        example("info", data={"candidates": [ufrag], "end_of_candidates": True}),
        mentions="/data/candidates/0",
    )
    too_many = {"candidates": [candidate] * 65, "end_of_candidates": True}
    assert_schema_invalid(example("info", data=too_many), mentions="/data/candidates")
    assert_schema_invalid(example("info", data={"candidates": []}), mentions="/data")


def test_info_data_of_other_bindings_is_not_inspected() -> None:
    validate_payload(example("info", about="transport:other", data={"anything": [1, 2]}))
    assert_schema_invalid(example("info", about="transport:other", data=[1]), mentions="/data")


def test_grant_scope_and_key_rotation_shapes() -> None:
    assert_schema_invalid(example("grant", scope=[]), mentions="/scope")
    assert_schema_invalid(example("grant", scope=["invite"]), mentions="/scope/0")
    assert_schema_invalid(example("key-rotation", previous=BOB), mentions="/previous")
    assert_schema_invalid(
        example("key-rotation", next_public_key_multibase="f00"),
        mentions="/next_public_key_multibase",
    )


def test_reachability_hint_endpoints_are_wss() -> None:
    plain = [{"uri": "ws://relay.example/dsip", "bindings": ["ws/1.0"]}]
    assert_schema_invalid(
        example("reachability-hint", endpoints=plain), mentions="/endpoints/0/uri"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "01HZINVITEABC"),  # illustrative prose ids are not ULIDs
        ("id", "81JC3Z3WS1H6V7Q8X9Y0Z1A2B3"),  # first character above 7 overflows 128 bits
        ("id", "01JC3Z3WS1H6V7Q8X9Y0Z1A2BU"),  # U is not Crockford base32
        ("from", "did:key:"),
        ("from", "did:Key:z6Mk"),
        ("from", "did:web:example.com:"),
        ("from", "did:web:example.com%zz"),
        ("issued_at", -1),
        ("issued_at", 2**53),
        ("issued_at", True),
        ("dsip", {"core": "1.0"}),
        ("dsip", dict(DSIP, critical=["relay-basic"])),
        ("dsip", dict(DSIP, extra=[])),
    ],
)
def test_core_field_shapes(field: str, value: Any) -> None:
    assert_schema_invalid(example("invite", **{field: value}), mentions=field)


# -- hostile input ------------------------------------------------------------------------------


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "payload", [None, [], [EXAMPLES["invite"]], "invite", 42, 1.5, True, b"{}"]
)
def test_non_object_payload(payload: Any) -> None:
    exc = rejected(payload)
    assert exc.code == "schema-invalid"


@pytest.mark.parametrize(
    "mtype", [None, 1, True, ["invite"], {"invite": 1}, nested_list(10_000), b"invite"]
)
def test_type_not_a_string_is_unknown_type(mtype: Any) -> None:
    payload = example("invite", type=mtype) if mtype is not None else example("invite", type=...)
    exc = rejected(payload)
    assert exc.code == "unknown-type"
    assert len(exc.message) < 200


@pytest.mark.parametrize("mtype", ["roster", "INVITE", "", "invite ", "x" * 1_000_000])
def test_unknown_type(mtype: str) -> None:
    exc = rejected(example("invite", type=mtype))
    assert exc.code == "unknown-type"
    assert len(exc.message) < 200


@pytest.mark.parametrize("name", ["roster", "common", "message", ""])
def test_validate_named_unknown_schema(name: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate_named(name, {})
    assert info.value.code == "unknown-type"


def in_open_codec(value: Any) -> dict[str, Any]:
    return example("invite", media=[dict(AUDIO, codecs=[{"id": "codec:audio/opus", "x": value}])])


# Hostile values where a schema looks: each must come back as schema-invalid.
HOSTILE: dict[str, Callable[[], Any]] = {
    "deep-list-as-media": lambda: example("invite", media=nested_list(10_000)),
    "deep-list-as-media-item": lambda: example("invite", media=[nested_list(10_000)]),
    "deep-dict-as-identity": lambda: example("invite", identity=nested_dict(10_000)),
    "deep-list-in-webrtc-data": lambda: example(
        "info", data={"candidates": nested_list(10_000), "end_of_candidates": True}
    ),
    "deep-list-as-body": lambda: example("notify", body=nested_list(10_000)),
    "1mb-string-detail": lambda: example("cancel", detail="x" * 1_000_000),
    "1mb-string-did": lambda: example("invite", to="did:web:" + "a" * 1_000_000 + "!"),
    "1mb-unknown-key": lambda: example("invite", **{"k" * 1_000_000: 1}),
    "1mb-key-in-policy": lambda: example("invite", policy={"k" * 1_000_000: "Denied"}),
    "nan-timestamp": lambda: example("invite", issued_at=float("nan")),
    "inf-timestamp": lambda: example("invite", expires_at=float("inf")),
    "nan-seq": lambda: example("notify", seq=float("nan")),
    "nan-in-webrtc-data": lambda: example(
        "info", data={"candidates": [], "end_of_candidates": float("nan")}
    ),
    "int-keys-top-level": lambda: {**example("invite"), 1: "x"},
    "int-keys-in-policy": lambda: example("invite", policy={1: "x"}),
    "int-keys-in-identity": lambda: example("invite", identity={1: "x"}),
    "int-keys-in-webrtc-data": lambda: example(
        "info", data={"candidates": [], "end_of_candidates": True, 1: 2}
    ),
    "tuple-key-top-level": lambda: {**example("invite"), ("a",): 1},
    "set-as-media": lambda: example("invite", media=[{1, 2}]),
    "bytes-as-did": lambda: example("invite", to=b"did:web:example.com"),
    "object-as-session": lambda: example("bye", session=object()),
    "self-referencing-media": lambda: example("invite", media=self_referencing_list()),
    "huge-int-timestamp": lambda: example("invite", issued_at=10**400),
}

# Open members (codec parameters, notify body, data of other bindings) are not inspected, so
# values there are not converted: the parser (jsonwire: depth 64, no NaN, str keys) is the
# guard for JSON-ness. Here only "no exception but SchemaError" is promised.
UNINSPECTED: dict[str, Callable[[], Any]] = {
    "deep-list-in-codec": lambda: in_open_codec(nested_list(10_000)),
    "deep-dict-in-codec": lambda: in_open_codec(nested_dict(10_000)),
    "deep-list-in-other-data": lambda: example(
        "info", about="x:y", data={"a": nested_list(10_000)}
    ),
    "int-keys-in-codec": lambda: in_open_codec({1: "x"}),
    "set-in-codec": lambda: in_open_codec({1, 2}),
    "object-in-body": lambda: example("notify", body={"o": object()}),
    "self-referencing-in-codec": lambda: in_open_codec(self_referencing_list()),
    "nan-in-codec": lambda: in_open_codec(float("nan")),
}


def self_referencing_list() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("build", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_is_schema_invalid(build: Callable[[], Any]) -> None:
    exc = rejected(build())
    assert exc.code == "schema-invalid"
    assert len(exc.message) < 500


@pytest.mark.parametrize("build", UNINSPECTED.values(), ids=UNINSPECTED.keys())
def test_hostile_value_in_open_member_raises_nothing_else(build: Callable[[], Any]) -> None:
    exc = outcome(build())
    assert exc is None or exc.code == "schema-invalid"


def test_error_message_is_clipped_but_keeps_the_rule() -> None:
    exc = rejected(example("cancel", detail="x" * 1_000_000))
    assert exc.message.startswith("cancel: /detail: ")
    assert exc.message.endswith("is longer than 1024 characters")
    assert len(exc.message) < 300


def test_hostile_envelope() -> None:
    for instance in [[], "x", {"protected": "a", "payload": "b"}, {"protected": "a=", "payload": "b", "signature": "c"}]:  # fmt: skip
        with pytest.raises(SchemaError):
            validate_named("envelope", instance)
    validate_named("envelope", {"protected": "eyJ", "payload": "e30", "signature": "AA-_"})


# -- property: nothing but None or SchemaError ---------------------------------------------------

FIELD_NAMES = sorted(
    {field for name in MESSAGE_TYPES for field in schema_document(name)["properties"]}
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
PAYLOADS = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda mtype, extra: {**extra, "type": mtype},
        st.sampled_from(sorted(MESSAGE_TYPES)),
        st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES, max_size=8),
    ),
    st.builds(
        lambda mtype, field, value: {**EXAMPLES[mtype], field: value},
        st.sampled_from(sorted(MESSAGE_TYPES)),
        st.sampled_from([*FIELD_NAMES, "data", "capabilities", "media", "dsip"]),
        JSON_VALUES,
    ),
)


@settings(max_examples=400, deadline=None)
@given(PAYLOADS)
def test_any_json_value_yields_none_or_schema_error(payload: Any) -> None:
    exc = outcome(payload)
    if exc is not None:
        assert exc.code in {"schema-invalid", "unknown-type"}
        assert len(exc.message) < 500
