"""Verified broadcast on the receiving side (§22), from the spec text.

Each test is what a listener would notice: whether a stream is shown at all, who it says
published, delivered and transcoded it, which variant plays, and which integrity claim is
displayed. The shared vectors run separately (tests/vectors).
"""

from __future__ import annotations

from typing import Any

import pytest

from dsip.core.broadcast import (
    DERIVATIVE_BOUND,
    METADATA_ONLY,
    Capabilities,
    ProvenanceStatement,
    Publication,
    effective_integrity,
    in_namespace,
    provenance_problem,
    verify_broadcast,
)
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair
from dsip.errors import DsipError
from tests.conftest import NOW, vector_key

PUBLISHER = vector_key("broadcast-publisher")
CDN = vector_key("broadcast-cdn")
TRANSCODER = vector_key("broadcast-transcoder")
MALLORY = vector_key("mallory")
STREAM = f"{PUBLISHER.did}:radio:main"
PROFILE = ["verified-broadcast/1.0"]
OPUS = {
    "id": "main-opus",
    "media": ["audio"],
    "codec": "codec:audio/opus",
    "transport": "transport:webrtc",
    "uri": "wss://live.example/main",
}
AAC = {
    "id": "main-aac-hls",
    "media": ["audio"],
    "codec": "codec:audio/aac",
    "transport": "transport:hls",
    "uri": "https://live.example/main.m3u8",
}
EVERYTHING = Capabilities(
    frozenset({"codec:audio/opus", "codec:audio/aac"}),
    frozenset({"transport:webrtc", "transport:hls"}),
)


def record(key: KeyPair = PUBLISHER, *, now: int = NOW, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "publisher": key.did,
        "stream_id": f"{key.did}:radio:main",
        "state": "live",
        "variants": [OPUS, AAC],
    }
    body.update(fields)
    return make_payload("publish", sender=key.did, now=now, ttl=300, profiles=PROFILE, **body)


def statement(
    key: KeyPair, publication: dict[str, Any], *, ttl: int = 3600, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "original_stream": publication["stream_id"],
        "original_publication": publication["id"],
        "processor": key.did,
        "operation": "transcode",
        "input_variant": "main-opus",
        "output_variant": "main-aac-hls",
    }
    body.update(fields)
    return make_payload(
        "provenance", sender=key.did, now=NOW + 5, ttl=ttl, profiles=PROFILE, **body
    )


def receive(
    pub: dict[str, Any],
    *statements: dict[str, Any],
    caps: Capabilities = EVERYTHING,
    signer: KeyPair = PUBLISHER,
) -> Any:
    return verify_broadcast(
        Verifier(),
        sign_envelope(pub, signer),
        [sign_envelope(s, key) for s, key in statements_with_keys(statements)],
        capabilities=caps,
        now=NOW + 10,
    )


def statements_with_keys(statements: tuple[dict[str, Any], ...]) -> list[tuple[Any, KeyPair]]:
    keys = {k.did: k for k in (CDN, TRANSCODER, MALLORY, PUBLISHER)}
    return [(s, keys[s["from"]]) for s in statements]


def reject_code(pub: dict[str, Any], signer: KeyPair = PUBLISHER) -> str:
    with pytest.raises(DsipError) as err:
        receive(pub, signer=signer)
    return err.value.code


# --- the record (§22.1) ---------------------------------------------------------------------


def test_a_record_signed_by_its_publisher_is_shown_with_its_publisher() -> None:
    view = receive(record())
    assert view.verified.type == "publish"
    assert view.publication.publisher == PUBLISHER.did
    assert view.selected_variant is not None
    assert view.selected_variant.id == "main-opus"
    assert view.provenance == ()
    assert (view.display.original_publisher, view.display.delivered_by) == (PUBLISHER.did, ())
    assert view.display.integrity_mode == METADATA_ONLY


def test_a_record_naming_someone_else_as_publisher_is_rejected() -> None:
    forged = record(publisher=CDN.did, stream_id=f"{CDN.did}:radio")
    assert reject_code(forged) == "publisher-mismatch"


def test_a_delegated_device_publishes_for_its_identity() -> None:
    phone = KeyPair.generate()
    deleg = issue_delegation(PUBLISHER, phone.did, issued_at=NOW - 10, expires_at=NOW + 3600)
    env = sign_envelope(record(), phone, delegations=[deleg])
    view = verify_broadcast(Verifier(), env, capabilities=EVERYTHING, now=NOW)
    assert (view.verified.signer, view.publication.publisher) == (phone.did, PUBLISHER.did)


@pytest.mark.parametrize(
    ("stream_id", "ok"),
    [
        (f"{PUBLISHER.did}", True),  # the DID itself
        (f"{PUBLISHER.did}:radio:main", True),
        (f"{PUBLISHER.did}x:radio", False),  # a longer DID sharing the prefix is someone else
        ("did:web:wxyz.com:radio:main", False),
    ],
)
def test_stream_ids_live_in_the_publishers_namespace(stream_id: str, ok: bool) -> None:
    assert in_namespace(stream_id, PUBLISHER.did) is ok
    if ok:
        assert receive(record(stream_id=stream_id)).publication.stream_id == stream_id
    else:
        assert reject_code(record(stream_id=stream_id)) == "stream-id-namespace"


def test_the_envelope_pipeline_runs_first_with_its_own_codes() -> None:
    assert reject_code(record(), signer=MALLORY) == "signer-mismatch"
    assert reject_code(record(now=NOW - 1000)) == "replay-window"
    bad_variant = record(variants=[{k: v for k, v in OPUS.items() if k != "uri"}])
    assert reject_code(bad_variant) == "schema-invalid"


def test_a_statement_handed_in_as_the_record_is_rejected() -> None:
    st = statement(CDN, record())
    with pytest.raises(DsipError) as err:
        verify_broadcast(Verifier(), sign_envelope(st, CDN), capabilities=EVERYTHING, now=NOW)
    assert err.value.code == "unexpected-type"


# --- variant selection (§22.1) --------------------------------------------------------------


def test_the_first_variant_the_receiver_can_play_wins_in_publisher_order() -> None:
    hls_only = Capabilities(frozenset({"codec:audio/aac"}), frozenset({"transport:hls"}))
    assert receive(record(), caps=hls_only).selected_variant.id == "main-aac-hls"
    swapped = record(variants=[AAC, OPUS])
    assert receive(swapped).selected_variant.id == "main-aac-hls"


def test_codec_and_transport_must_both_be_supported() -> None:
    mixed = Capabilities(frozenset({"codec:audio/opus"}), frozenset({"transport:hls"}))
    view = receive(record(), caps=mixed)
    assert view.selected_variant is None
    assert view.display.integrity_mode == METADATA_ONLY


# --- integrity modes (§22.2) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("record_mode", "variant_mode", "shown"),
    [
        (None, None, METADATA_ONLY),  # absent means metadata-only
        ("derivative-bound", None, DERIVATIVE_BOUND),
        ("segment-bound", None, METADATA_ONLY),  # reserved, unspecified: the weaker claim
        ("x-future-mode", None, METADATA_ONLY),
        ("metadata-only", "derivative-bound", DERIVATIVE_BOUND),  # the variant overrides
        ("derivative-bound", "metadata-only", METADATA_ONLY),
        ("derivative-bound", "frame-bound", METADATA_ONLY),  # an unknown override still wins
    ],
)
def test_integrity_display_follows_the_selected_variant_then_the_record(
    record_mode: str | None, variant_mode: str | None, shown: str
) -> None:
    variant = dict(OPUS) if variant_mode is None else {**OPUS, "integrity": variant_mode}
    fields: dict[str, Any] = {"variants": [variant, AAC]}
    if record_mode is not None:
        fields["integrity"] = record_mode
    assert receive(record(**fields)).display.integrity_mode == shown


def test_unknown_integrity_tokens_never_reject() -> None:
    assert effective_integrity("manifest-bound") == METADATA_ONLY
    assert effective_integrity(None) == METADATA_ONLY
    assert effective_integrity(7) == METADATA_ONLY


# --- provenance (§22.3) ---------------------------------------------------------------------


def test_a_transcode_statement_lists_the_transcoder_and_binds_the_derivative() -> None:
    pub = record()
    view = receive(pub, statement(TRANSCODER, pub))
    (verdict,) = view.provenance
    assert verdict.accepted
    assert verdict.statement is not None
    assert (verdict.statement.processor, verdict.statement.operation) == (
        TRANSCODER.did,
        "transcode",
    )
    assert verdict.integrity_mode == DERIVATIVE_BOUND
    assert view.display.original_publisher == PUBLISHER.did  # never overwritten
    assert view.display.transcoded_by == (TRANSCODER.did,)
    assert view.display.delivered_by == ()
    assert view.display.integrity_mode == DERIVATIVE_BOUND


@pytest.mark.parametrize("operation", ["relay", "repackage", "x-edge-cache"])
def test_other_operations_are_delivered_by_and_leave_the_integrity_claim(operation: str) -> None:
    pub = record()
    view = receive(pub, statement(CDN, pub, operation=operation, output_variant="main-opus"))
    assert view.provenance[0].accepted
    assert view.display.delivered_by == (CDN.did,)
    assert view.display.transcoded_by == ()
    assert view.display.integrity_mode == METADATA_ONLY


def test_a_chain_shows_each_processor_once_in_its_role() -> None:
    pub = record()
    relay = statement(CDN, pub, operation="relay", output_variant="main-opus")
    relay_again = statement(CDN, pub, operation="relay", output_variant="main-opus")
    view = receive(pub, relay, statement(TRANSCODER, pub), relay_again)
    assert [v.accepted for v in view.provenance] == [True, True, True]
    assert view.display.delivered_by == (CDN.did,)
    assert view.display.transcoded_by == (TRANSCODER.did,)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"processor": "did:key:z6MkSomeoneElse"}, "provenance-processor-mismatch"),
        ({"original_publication": "01K742SG00B51Y7ZAZNENNQ75M"}, "provenance-unknown-publication"),
        ({"original_stream": "did:web:other.example:radio"}, "provenance-stream-mismatch"),
        ({"input_variant": "main-flac"}, "provenance-variant-unknown"),
    ],
)
def test_a_bad_statement_is_rejected_and_the_publication_stands(
    fields: dict[str, Any], code: str
) -> None:
    pub = record()
    view = receive(pub, statement(TRANSCODER, pub, **fields))
    (verdict,) = view.provenance
    assert (verdict.accepted, verdict.code) == (False, code)
    assert view.publication.id == pub["id"]
    assert view.display.transcoded_by == ()
    assert view.display.integrity_mode == METADATA_ONLY  # an unverified transcode binds nothing


def test_statements_go_through_the_same_envelope_pipeline() -> None:
    pub = record()
    forged = statement(TRANSCODER, pub)
    forged["from"] = CDN.did  # signed by the transcoder's key, claiming to be the CDN
    forged["processor"] = CDN.did
    pub_env = sign_envelope(pub, PUBLISHER)
    stale = statement(TRANSCODER, pub, ttl=1)
    view = verify_broadcast(
        Verifier(),
        pub_env,
        [sign_envelope(forged, TRANSCODER), sign_envelope(stale, TRANSCODER), pub_env],
        capabilities=EVERYTHING,
        now=NOW + 10,
    )
    assert [v.code for v in view.provenance] == ["signer-mismatch", "expired", "duplicate-id"]


def test_a_record_handed_in_as_a_statement_is_not_provenance() -> None:
    pub = record()
    other = record(now=NOW + 1)
    view = verify_broadcast(
        Verifier(),
        sign_envelope(pub, PUBLISHER),
        [sign_envelope(other, PUBLISHER)],
        capabilities=EVERYTHING,
        now=NOW + 10,
    )
    assert view.provenance[0].code == "unexpected-type"


def test_policy_violations_are_surfaced_not_rejected() -> None:
    no_transcoding = record(policy={"transcoding": "forbidden"})
    view = receive(no_transcoding, statement(TRANSCODER, no_transcoding))
    assert view.provenance[0].accepted
    assert view.provenance[0].policy_violation == "transcoding-forbidden"
    assert view.display.transcoded_by == (TRANSCODER.did,)

    no_redistribution = record(policy={"redistribution": "denied", "transcoding": "allowed"})
    relay = statement(CDN, no_redistribution, operation="relay", output_variant="main-opus")
    view = receive(no_redistribution, relay)
    assert view.provenance[0].policy_violation == "redistribution-forbidden"

    allowed = record(policy={"redistribution": "allowed-with-attribution"})
    view = receive(allowed, statement(TRANSCODER, allowed))
    assert view.provenance[0].policy_violation is None


# --- hostile input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"variants": "nope", "policy": [], "integrity": 3, "title": 4},
        {"variants": [1, None, {"id": 5, "media": "audio"}], "policy": {"a": 1, 2: "b"}},
    ],
)
def test_decoding_tolerates_any_shape(payload: dict[str, Any]) -> None:
    pub = Publication.from_payload(payload)
    assert pub.integrity_of(pub.select_variant(EVERYTHING)) == METADATA_ONLY
    st = ProvenanceStatement.from_payload(payload)
    assert provenance_problem(st, "did:key:zX", pub) == "provenance-processor-mismatch"
