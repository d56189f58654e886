"""DSIP ⇄ SIP gateway core: reason tables both ways, trunk SDP ⇄ descriptors, PSTN caller
claims, the downgrade rule and the B2BUA controller — cases written from the Gateway Profile
(G§n) and the RTP/SRTP binding (R§n) text, not copied from the shared vectors."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dsip.core.gateway.b2bua import (
    TRANSITIONS,
    BridgedCall,
    Downgraded,
    DsipAction,
    DsipAnswer,
    DsipBye,
    DsipCancel,
    DsipInvite,
    DsipLeg,
    DsipLegEnded,
    DsipLocal,
    DsipProgress,
    DsipReject,
    DsipUpdate,
    EarlyMediaPolicy,
    Emission,
    Event,
    Ignored,
    Media,
    MediaAction,
    SendSipRequest,
    SendSipResponse,
    SipInvite,
    SipLeg,
    SipReinvite,
    SipRequest,
    SipResponse,
    TimerC,
    TrunkProfile,
    dsip_event_from_payload,
)
from dsip.core.gateway.claims import (
    Attestation,
    PassportFacts,
    caller_claim,
    canonical_tn,
    verifier_label,
)
from dsip.core.gateway.downgrade import (
    CallDirection,
    CrossingFacts,
    Loss,
    assess,
    downgrade_notice,
)
from dsip.core.gateway.reasons import (
    GatewayMisuseError,
    Phase,
    SipBye,
    SipFinal,
    bye_for,
    final_response_for,
    map_inbound,
    map_outbound,
    parse_reason_header,
    q850_cause_of,
    wire_token,
)
from dsip.core.gateway.sdp import (
    DtlsKeying,
    SdesKey,
    SrtpMode,
    TrunkMLine,
    TrunkSdpError,
    m_lines_for,
    parse_trunk_sdp,
    render_trunk_sdp,
)
from dsip.core.media_binding import CodecEntry, Direction, MediaDescriptor
from dsip.core.registry import REASONS
from dsip.errors import DsipError

GW = "did:web:gw.example"
OUT, IN = CallDirection.OUTBOUND, CallDirection.INBOUND
ACK = SendSipRequest("ACK", in_dialog=True)
BRIDGE, RELEASE = Media(MediaAction.BRIDGE), Media(MediaAction.RELEASE)
FP = "sha-256 " + ":".join(["AB"] * 32)
KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnUnCg=="

# --- reasons, inbound (G§4.1) -----------------------------------------------------------------

# The Q.850 table as the profile prints it.
PROFILE_Q850 = {
    1: "identity.unknown",
    16: "user.hangup",
    17: "endpoint.busy",
    18: "endpoint.unavailable",
    19: "endpoint.unavailable",
    20: "endpoint.unavailable",
    21: "user.declined",
    22: "identity.not-in-service",
    28: "identity.unknown",
    31: "user.hangup",
    34: "gateway.unreachable",
    38: "gateway.unreachable",
    41: "gateway.unreachable",
    42: "gateway.unreachable",
    43: "gateway.unreachable",
    44: "gateway.unreachable",
    47: "media.failed",
    63: "media.unsupported",
    65: "media.unsupported",
    79: "media.unsupported",
    102: "session.timeout",
}
PROFILE_SIP = {
    403: "policy.blocked",
    404: "identity.unknown",
    484: "identity.unknown",
    604: "identity.unknown",
    408: "endpoint.unavailable",
    480: "endpoint.unavailable",
    410: "identity.not-in-service",
    603: "user.declined",
    487: "session.cancelled",
    488: "media.unsupported",
    415: "media.unsupported",
    606: "media.unsupported",
    486: "endpoint.busy",
    600: "endpoint.busy",
    502: "gateway.unreachable",
    503: "gateway.unreachable",
    504: "gateway.unreachable",
}


@pytest.mark.parametrize(("cause", "token"), sorted(PROFILE_Q850.items()))
def test_every_q850_row_maps_before_the_answer(cause: int, token: str) -> None:
    got = map_inbound(Phase.PRE_ANSWER, q850=cause, sip_status=500)
    assert got.reason == token
    assert got.carry == "reject"
    # a normal clearing adds no detail; everything else names the cause that decided
    assert got.detail == (None if token == "user.hangup" else f"Q.850 {cause}")


@pytest.mark.parametrize(("status", "token"), sorted(PROFILE_SIP.items()))
def test_every_sip_status_row_maps_when_no_cause_is_mapped(status: int, token: str) -> None:
    got = map_inbound(Phase.PRE_ANSWER, sip_status=status, q850=127)  # 127: not in the table
    assert (got.reason, got.detail) == (token, f"SIP {status}")


def test_unmapped_codes_are_never_tunnelled_but_named_in_detail() -> None:
    got = map_inbound(Phase.PRE_ANSWER, sip_status=599)
    assert (got.reason, got.detail) == ("gateway.mapped", "SIP 599")
    got = map_inbound(Phase.PRE_ANSWER, sip_status=580, q850=111)
    assert (got.reason, got.detail) == ("gateway.mapped", "SIP 580, Q.850 111")
    # 3xx is not followed (single contact): it maps like any other final
    assert map_inbound(Phase.PRE_ANSWER, sip_status=302).reason == "gateway.mapped"


def test_number_changed_with_a_known_successor_is_moved() -> None:
    moved = map_inbound(Phase.PRE_ANSWER, q850=22, moved_to="tel:+442071234567")
    assert (moved.reason, moved.detail) == ("identity.moved", "tel:+442071234567")
    # a successor changes nothing for codes that do not mean "number changed"
    assert map_inbound(Phase.PRE_ANSWER, sip_status=404, moved_to="x").reason == (
        "identity.unknown"
    )


def test_attempt_tokens_after_the_answer_become_gateway_mapped() -> None:
    busy_bye = map_inbound(Phase.ACTIVE, q850=17)
    assert (busy_bye.reason, busy_bye.carry, busy_bye.detail) == (
        "gateway.mapped",
        "bye",
        "Q.850 17",
    )
    assert map_inbound(Phase.ACTIVE, sip_status=603).reason == "gateway.mapped"
    # clearing conditions survive a mid-call teardown
    assert map_inbound(Phase.ACTIVE, q850=47).reason == "media.failed"
    assert map_inbound(Phase.ACTIVE, q850=38).reason == "gateway.unreachable"
    assert map_inbound(Phase.ACTIVE) == map_inbound(Phase.ACTIVE, q850=31)


def test_transport_phase_is_carried_on_error() -> None:
    assert map_inbound(Phase.TRANSPORT).reason == "gateway.unreachable"
    got = map_inbound(Phase.TRANSPORT, sip_status=404)
    assert (got.reason, got.carry) == ("identity.unknown", "error")


@given(
    st.sampled_from(list(Phase)),
    st.none() | st.integers(),
    st.none() | st.integers(),
    st.none() | st.text(max_size=2000),
)
def test_inbound_mapping_is_total_and_registered(
    phase: Phase, status: int | None, cause: int | None, moved: str | None
) -> None:
    got = map_inbound(phase, sip_status=status, q850=cause, moved_to=moved)
    assert got.reason in REASONS
    assert got.carry == {"pre-answer": "reject", "active": "bye", "transport": "error"}[phase]
    assert got.detail is None or 0 < len(got.detail) <= 1024
    if got.reason == "gateway.mapped" and (status is not None or cause is not None):
        assert got.detail  # the original code is always named


# --- reasons, outbound (G§4.2) ----------------------------------------------------------------

PROFILE_OUTBOUND = [
    ("user.blocked", 603, 21),
    ("user.no-answer", 480, 19),
    ("user.cancelled", 487, None),
    ("endpoint.unavailable", 480, 18),
    ("endpoint.capability", 488, 79),
    ("identity.not-in-service", 410, 22),
    ("identity.moved", 410, 22),
    ("identity.suspended", 403, 21),
    ("identity.unknown", 404, 1),
    ("session.expired", 480, 102),
    ("session.timeout", 480, 102),
    ("media.encryption-required", 488, 65),
    ("media.offer-required", 488, 65),
    ("policy.blocked", 403, 21),
    ("policy.trust-insufficient", 403, 21),
    ("policy.terminated", 480, 31),
    ("transport.unknown-recipient", 404, 1),
    ("transport.hello-rejected", 503, 41),
    ("gateway.unreachable", 503, 38),
    ("gateway.mapped", 500, 41),
    ("session.failed", 500, 41),
]


@pytest.mark.parametrize(("token", "status", "cause"), PROFILE_OUTBOUND)
def test_registered_refusals_map_to_their_row(token: str, status: int, cause: int | None) -> None:
    final = map_outbound(token, Phase.PRE_ANSWER)
    assert isinstance(final, SipFinal)
    assert (final.status, final.q850, final.reason) == (status, cause, token)
    assert final.reason_header[-1] == f'DSIP;text="{token}"'
    assert not final.retry_after


@pytest.mark.parametrize(
    ("token", "status", "cause"),
    [
        ("user.on-a-train", 603, 21),
        ("endpoint.overheated", 480, 18),
        ("identity.archived", 404, 1),
        ("session.confused", 500, 41),
        ("media.too-loud", 488, 65),
        ("policy.quiet-hours", 403, 21),
        ("transport.lost", 503, 41),
        ("gateway.on-fire", 503, 38),
        ("x-acme.queue-full", 500, 41),  # unknown category → session.failed
    ],
)
def test_unregistered_tokens_fall_back_by_category_and_keep_their_text(
    token: str, status: int, cause: int
) -> None:
    final = final_response_for(token)
    assert (final.status, final.q850) == (status, cause)
    assert final.reason_header == (f"Q.850;cause={cause}", f'DSIP;text="{token}"')


def test_rate_limited_asks_for_retry_after() -> None:
    final = final_response_for("policy.rate-limited")
    assert (final.status, final.q850, final.retry_after) == (503, 42, True)


@pytest.mark.parametrize(
    ("token", "cause"),
    [
        ("user.hangup", 16),
        ("session.already-answered", 16),
        ("session.cancelled", 16),
        ("session.made-up", 16),
        ("x-acme.gone", 16),
        ("media.failed", 47),
        ("policy.terminated", 31),
        ("user.declined", 21),
        ("gateway.mapped", 41),
    ],
)
def test_active_teardown_is_a_bye_with_the_cause(token: str, cause: int) -> None:
    bye = map_outbound(token, Phase.ACTIVE)
    assert isinstance(bye, SipBye)
    assert (bye.q850, bye.reason) == (cause, token)
    assert bye_for(token).reason_header == (f"Q.850;cause={cause}", f'DSIP;text="{token}"')


def test_transport_phase_has_no_sip_carrier() -> None:
    with pytest.raises(GatewayMisuseError):
        map_outbound("transport.rate-limited", Phase.TRANSPORT)


def test_a_hostile_token_never_reaches_a_sip_header() -> None:
    evil = 'endpoint.busy"\r\nX-Injected: 1'
    final = final_response_for(evil)
    assert final.reason == "session.failed"
    assert final.reason_header == ("Q.850;cause=41", 'DSIP;text="session.failed"')
    assert wire_token("Endpoint.Busy") == "session.failed"  # not the token grammar


_SAFE_VALUE = re.compile(r'(Q\.850;cause=[0-9]{1,3}|DSIP;text="[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*")')


@given(st.text(max_size=300), st.sampled_from([Phase.PRE_ANSWER, Phase.ACTIVE]))
def test_outbound_mapping_is_total_and_headers_are_safe(token: str, phase: Phase) -> None:
    sip = map_outbound(token, phase)
    if isinstance(sip, SipFinal):
        assert 400 <= sip.status <= 699
    assert all(_SAFE_VALUE.fullmatch(v) for v in sip.reason_header)


def test_reason_headers_parse_per_rfc_3326() -> None:
    values = parse_reason_header(
        'Q.850;cause=16;text="Normal call clearing", SIP ;cause=200;text="Call completed, elsewhere"'
    )
    assert [(v.protocol, v.cause, v.text) for v in values] == [
        ("Q.850", 16, "Normal call clearing"),
        ("SIP", 200, "Call completed, elsewhere"),
    ]
    assert q850_cause_of(["SIP;cause=480", "q.850;cause=17"]) == 17
    assert q850_cause_of(["Q.850;cause=999"]) is None  # causes are 7-bit
    assert q850_cause_of(["Q.850;cause=sixteen", ";;;", '"unterminated']) is None


@given(st.text(max_size=500))
def test_reason_header_parser_never_raises(text: str) -> None:
    for value in parse_reason_header(text):
        assert value.protocol
    q850_cause_of([text])


# --- trunk SDP → descriptors (G§6, R§3–R§5) --------------------------------------------------


def sdp(*media: str, session: str = "c=IN IP4 203.0.113.7\r\n") -> str:
    head = f"v=0\r\no=carrier 7 7 IN IP4 203.0.113.7\r\ns=call\r\n{session}t=0 0\r\n"
    return head + "".join(media)


def test_static_payload_types_need_no_rtpmap() -> None:
    trunk = parse_trunk_sdp(sdp("m=audio 4000 RTP/AVP 8 0 9 18 101\r\na=ptime:20\r\n"))
    assert trunk.srtp is SrtpMode.NONE
    assert trunk.media() == [
        {
            "type": "audio",
            "direction": "sendrecv",
            "codecs": [
                {"id": "codec:audio/pcma"},
                {"id": "codec:audio/pcmu"},
                {"id": "codec:audio/g722"},
            ],
        }
    ]
    (section,) = trunk.sections
    assert (section.address, section.port) == ("203.0.113.7", 4000)


def test_opus_on_a_dynamic_payload_type_and_dtmf_dropped() -> None:
    trunk = parse_trunk_sdp(
        sdp(
            "m=audio 4000 RTP/AVP 109 101 0\r\n"
            "a=rtpmap:109 OPUS/48000/2\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-16\r\n"
            "a=inactive\r\n"
        )
    )
    (descriptor,) = trunk.descriptors
    assert [c.id for c in descriptor.codecs] == ["codec:audio/opus", "codec:audio/pcmu"]
    assert descriptor.direction is Direction.INACTIVE
    assert [(c.id, c.payload_type) for c in trunk.sections[0].codecs] == [
        ("codec:audio/opus", 109),
        ("codec:audio/pcmu", 0),
    ]


def test_bare_lf_line_endings_are_accepted() -> None:
    text = sdp("m=audio 4000 RTP/AVP 0\r\n").replace("\r\n", "\n").rstrip("\n")
    assert parse_trunk_sdp(text).media()[0]["codecs"] == [{"id": "codec:audio/pcmu"}]


def test_old_style_hold_reads_as_sendonly() -> None:
    text = sdp("m=audio 4000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n")
    assert parse_trunk_sdp(text).descriptors[0].direction is Direction.SENDONLY


def test_refused_and_non_rtp_sections_are_omitted() -> None:
    trunk = parse_trunk_sdp(
        sdp(
            "m=audio 0 RTP/SAVP 0\r\n"  # refused: not keyed, and it does not need to be
            "m=image 4002 udptl t38\r\n"
            "m=audio 4000 RTP/AVP 8\r\n"
            "m=video 4004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        )
    )
    assert [d.type for d in trunk.descriptors] == ["audio", "video"]
    assert [s.index for s in trunk.described] == [2, 3]
    assert trunk.srtp is SrtpMode.NONE


def test_dtls_srtp_trunk() -> None:
    trunk = parse_trunk_sdp(
        sdp(f"m=audio 4000 UDP/TLS/RTP/SAVP 0\r\na=fingerprint:{FP}\r\na=setup:actpass\r\n")
    )
    assert trunk.srtp is SrtpMode.DTLS
    assert trunk.sections[0].setup == "actpass"


def test_sdes_trunk_selects_an_acceptable_suite() -> None:
    trunk = parse_trunk_sdp(
        sdp(
            "m=audio 4000 RTP/SAVP 0\r\n"
            "a=crypto:1 F8_128_HMAC_SHA1_80 inline:AAAA\r\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 {KEY}|2^20|1:4\r\n"
        )
    )
    assert trunk.srtp is SrtpMode.SDES
    crypto = trunk.sections[0].accepted_crypto
    assert crypto is not None
    assert (crypto.tag, crypto.suite) == (2, "AES_CM_128_HMAC_SHA1_80")


@pytest.mark.parametrize(
    ("media", "code"),
    [
        ("m=audio 4000 RTP/SAVP 0\r\n", "srtp-keying-missing"),
        ("m=audio 4000 RTP/SAVP 0\r\na=crypto:x y\r\n", "srtp-keying-missing"),
        ("m=audio 4000 UDP/TLS/RTP/SAVP 0\r\n", "srtp-keying-missing"),
        (
            "m=audio 4000 RTP/SAVP 0\r\na=crypto:1 F8_128_HMAC_SHA1_80 inline:AA\r\n",
            "srtp-suite-unsupported",
        ),
        (
            f"m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}\r\n"
            "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
            "srtp-mixed",
        ),
    ],
)
def test_keying_defects_are_verdicts(media: str, code: str) -> None:
    with pytest.raises(TrunkSdpError) as info:
        parse_trunk_sdp(sdp(media))
    assert info.value.code == code
    assert info.value.reason == "media.unsupported"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "v=0\r\n",
        "v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",
        sdp("m=audio 99999 RTP/AVP 0\r\n"),
        sdp("m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n"),
        "v=0\ro=- 1 1 IN IP4 1.2.3.4\rs=-\rt=0 0\r",
        "x" * 70_000,
    ],
)
def test_malformed_sdp_is_unparseable(text: str) -> None:
    with pytest.raises(TrunkSdpError) as info:
        parse_trunk_sdp(text)
    assert info.value.code == "unparseable"


def test_non_text_is_unparseable() -> None:
    with pytest.raises(TrunkSdpError):
        parse_trunk_sdp(b"v=0\r\n")


_SDP_LINES = st.sampled_from(
    [
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.1",
        "s=-",
        "c=IN IP4 10.0.0.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0 8 96",
        "m=audio 4000 RTP/SAVP 0",
        "m=video 0 RTP/AVP 96",
        "a=rtpmap:96 opus/48000/2",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}",
        f"a=fingerprint:{FP}",
        "a=sendonly",
        "a=sendrecv",
        "c=IN IP4 0.0.0.0",
    ]
)


VERDICTS = {"unparseable", "srtp-keying-missing", "srtp-suite-unsupported", "srtp-mixed"}


def _media_or_verdict(text: str) -> str:
    """``ok`` or the verdict code; any other exception fails the test."""
    try:
        trunk = parse_trunk_sdp(text)
    except TrunkSdpError as exc:
        return exc.code
    assert all(d.codecs for d in trunk.descriptors)
    return "ok"


@given(st.lists(_SDP_LINES | st.text(max_size=30), max_size=14), st.sampled_from(["\r\n", "\n"]))
@settings(max_examples=300)
def test_arbitrary_sdp_text_gives_media_or_a_verdict(lines: list[str], eol: str) -> None:
    assert _media_or_verdict(eol.join(lines) + eol) in {"ok", *VERDICTS}


@given(st.text(max_size=400))
def test_any_text_gives_media_or_a_verdict(text: str) -> None:
    assert _media_or_verdict(text) in {"ok", *VERDICTS}


# --- descriptors → trunk m= lines, rendering ---------------------------------------------------


def descriptor(kind: str, direction: str, *ids: str) -> MediaDescriptor:
    return MediaDescriptor(kind, Direction(direction), tuple(CodecEntry(i) for i in ids))


def test_m_lines_drop_what_the_trunk_cannot_name() -> None:
    lines = m_lines_for(
        [
            descriptor("audio", "sendonly", "codec:audio/aac", "codec:audio/pcma"),
            descriptor("audio", "sendrecv", "codec:audio/aac"),
            descriptor("video", "sendrecv", "codec:audio/opus", "codec:video/vp8"),
        ]
    )
    assert [(m.kind, m.encodings, m.direction) for m in lines] == [
        ("audio", ("PCMA",), Direction.SENDONLY),
        ("video", ("VP8",), Direction.SENDRECV),
    ]


def test_m_lines_offer_transcoding_targets() -> None:
    (line,) = m_lines_for(
        [descriptor("audio", "sendrecv", "codec:audio/opus", "codec:audio/pcmu")],
        transcode_to=("codec:audio/pcmu", "codec:audio/pcma"),
    )
    assert line.encodings == ("opus", "PCMU", "PCMA")


AUDIO_IDS = ["codec:audio/opus", "codec:audio/pcmu", "codec:audio/pcma", "codec:audio/g722"]


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(AUDIO_IDS), min_size=1, max_size=4, unique=True),
            st.sampled_from(list(Direction)),
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["none", "sdes", "dtls"]),
)
def test_rendered_offers_read_back_as_the_same_descriptors(
    spec: list[tuple[list[str], Direction]], mode: str
) -> None:
    media = [descriptor("audio", str(d), *ids) for ids, d in spec]
    keying = {"none": None, "sdes": SdesKey(KEY), "dtls": DtlsKeying(FP, "actpass")}[mode]
    text = render_trunk_sdp(
        m_lines_for(media),
        address="2001:db8::7",
        ports=[5000 + 2 * i for i in range(len(media))],
        keying=keying,
    )
    trunk = parse_trunk_sdp(text)
    assert trunk.srtp == mode
    assert [d.to_mapping() for d in trunk.descriptors] == [d.to_mapping() for d in media]


def test_answer_keeps_the_offer_layout_and_payload_types() -> None:
    offer = parse_trunk_sdp(
        sdp("m=image 4002 udptl t38\r\nm=audio 4000 RTP/AVP 109 0\r\na=rtpmap:109 opus/48000/2\r\n")
    )
    answer = render_trunk_sdp(
        [TrunkMLine("audio", ("codec:audio/opus",), Direction.RECVONLY)],
        address="198.51.100.9",
        ports=[7000],
        answer_to=offer,
    )
    assert "m=image 0 udptl t38\r\n" in answer
    assert "m=audio 7000 RTP/AVP 109\r\na=rtpmap:109 opus/48000/2\r\na=recvonly\r\n" in answer
    assert parse_trunk_sdp(answer).descriptors[0].direction is Direction.RECVONLY


@pytest.mark.parametrize(
    "kwargs",
    [
        {"address": "gw.example", "ports": [4000]},
        {"address": "10.0.0.1", "ports": [0]},
        {"address": "10.0.0.1", "ports": [4000, 4002]},
        {"address": "10.0.0.1", "ports": [4000], "keying": SdesKey("inline:a b\r\n")},
        {"address": "10.0.0.1", "ports": [4000], "keying": DtlsKeying(FP, "holdconn")},
    ],
)
def test_rendering_refuses_our_own_bad_values(kwargs: dict[str, object]) -> None:
    line = TrunkMLine("audio", ("codec:audio/pcmu",), Direction.SENDRECV)
    with pytest.raises(GatewayMisuseError):
        render_trunk_sdp([line], **kwargs)  # type: ignore[arg-type]


def test_an_answer_must_match_the_described_sections() -> None:
    offer = parse_trunk_sdp(sdp("m=audio 4000 RTP/AVP 0\r\n"))
    video = TrunkMLine("video", ("codec:video/vp8",), Direction.SENDRECV)
    with pytest.raises(GatewayMisuseError):
        render_trunk_sdp([video], address="10.0.0.1", ports=[4000], answer_to=offer)
    with pytest.raises(GatewayMisuseError):
        render_trunk_sdp([], address="10.0.0.1", ports=[], answer_to=offer)


# --- PSTN caller claims (G§5) -----------------------------------------------------------------


def test_number_forms_compare_in_canonical_form() -> None:
    passport = PassportFacts("C", verified=True, orig_tn="442071234567")  # PASSporT: no '+'
    shown = caller_claim("sip:+44-20-7123-4567@carrier.example;user=phone", passport, verifier=GW)
    assert shown.claim is not None
    assert shown.claim.to_mapping() == {
        "type": "tel",
        "number": "+442071234567",
        "attestation": "C",
        "verified": True,
        "verifier": GW,
    }
    assert shown.trust_basis == "Gateway attested by gw.example · STIR attestation C (verified)"
    assert canonical_tn("tel:+1.555.123.4567") == "15551234567"


def test_a_passport_for_another_number_is_discarded_whole() -> None:
    shown = caller_claim("+15551230000", PassportFacts("A", True, "+15551239999"), verifier=GW)
    assert shown.claim is not None
    assert (shown.claim.attestation, shown.claim.verified) == (Attestation.NONE, False)
    assert shown.trust_basis.endswith("· no attestation")


def test_an_attestation_level_outside_shaken_is_no_attestation() -> None:
    shown = caller_claim("+15551230000", PassportFacts("D", True, "15551230000"), verifier=GW)
    assert shown.claim is not None
    assert (shown.claim.attestation, shown.claim.verified) == (Attestation.NONE, False)


def test_withheld_caller_has_no_claim_but_still_a_basis() -> None:
    shown = caller_claim("anonymous", None, verifier=GW)
    assert shown.claim is None
    assert shown.claims == ()
    assert shown.trust_basis == "Gateway attested by gw.example · no caller number"


def test_cnam_is_display_data_cleaned_and_capped() -> None:
    shown = caller_claim("+15551230000", None, verifier=GW, cnam="ACME\u202e\r\nCorp" + "x" * 99)
    assert shown.claim is not None
    assert shown.claim.cnam is not None
    assert shown.claim.cnam.startswith("ACMECorp")
    assert len(shown.claim.cnam) == 64
    assert "cnam" not in shown.trust_basis
    assert caller_claim("+15551230000", None, verifier=GW, cnam=" \x00 ").claim.cnam is None  # type: ignore[union-attr]


def test_verifier_names_and_misuse() -> None:
    assert verifier_label("did:web:gw.example%3A8443:pstn") == "gw.example:8443"
    assert verifier_label("did:key:z6Mkabc") == "did:key:z6Mkabc"
    with pytest.raises(GatewayMisuseError):
        caller_claim("+15551230000", None, verifier="gw.example")


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=3), st.booleans())
def test_claims_never_raise_and_verified_means_same_number(
    from_tn: str, orig: str, attest: str, ok: bool
) -> None:
    shown = caller_claim(from_tn, PassportFacts(attest, ok, orig), verifier=GW)
    if shown.claim is not None and shown.claim.verified:
        assert canonical_tn(from_tn) == canonical_tn(orig)
        assert shown.claim.attestation in (Attestation.A, Attestation.B, Attestation.C)


# --- trust downgrade (G§7) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "lost"),
    [
        (CrossingFacts(IN, trunk_srtp=False), [Loss.NO_SRTP_ON_TRUNK, Loss.NO_ATTESTATION]),
        (CrossingFacts(IN, trunk_srtp=True, caller_attested=True), []),
        # identity assertion is an outbound concern, attestation an inbound one
        (CrossingFacts(IN, trunk_srtp=True, caller_attested=True, identity_assertable=False), []),
        (CrossingFacts(OUT, trunk_srtp=True, caller_attested=False, identity_assertable=True), []),
        (
            CrossingFacts(OUT, trunk_srtp=True, identity_assertable=True, policy_present=True),
            [Loss.POLICY_UNENFORCEABLE],
        ),
        (CrossingFacts(OUT, trunk_srtp=True), [Loss.IDENTITY_NOT_ASSERTABLE]),
    ],
)
def test_named_losses(facts: CrossingFacts, lost: list[Loss]) -> None:
    assert list(assess(facts).lost) == lost
    notice = downgrade_notice(facts)
    if not lost:
        assert notice is None
    else:
        assert notice is not None
        assert notice.reason == "gateway.downgraded"
        assert notice.detail == "crossing lost: " + ", ".join(lost)


# --- the B2BUA controller (G§3, G§8) ----------------------------------------------------------


def call(direction: CallDirection, **trunk: object) -> BridgedCall:
    return BridgedCall(direction, gateway=GW, trunk=TrunkProfile(**trunk))  # type: ignore[arg-type]


def states(c: BridgedCall) -> tuple[str, str]:
    return (str(c.dsip_state), str(c.sip_state))


def alert() -> DsipLocal:
    return DsipLocal(DsipAction.ALERT)


def answered_by_gateway() -> DsipLocal:
    return DsipLocal(DsipAction.ACCEPT, answered_by="gateway")


def test_sip_side_never_answers_timer_c_maps_to_unreachable() -> None:
    c = call(OUT, timer_c=200)
    assert c.handle(DsipInvite(), now=1000) == [SendSipRequest("INVITE")]
    assert c.next_deadline() == 1200
    assert c.handle(SipResponse(100), now=1001) == []
    assert c.next_deadline() == 1200  # 100 is hop-by-hop: it says nothing of the far end
    assert c.handle(SipResponse(180), now=1100) == [alert()]
    assert c.next_deadline() == 1300  # a provisional resets Timer C (RFC 3261 §16.7)
    assert c.handle_timer(1299) == []
    assert c.handle_timer(1300) == [
        SendSipRequest("CANCEL"),
        DsipLocal(DsipAction.AUTO_REJECT, reason="gateway.unreachable", detail="SIP Timer C"),
    ]
    assert states(c) == ("ended", "terminated")
    assert c.next_deadline() is None
    # the far side wakes up: its 2xx is ACKed and torn down, a retransmission only ACKed
    bye = SendSipRequest("BYE", in_dialog=True, q850=16, reason="session.cancelled")
    assert c.handle(SipResponse(200, sdp=True), now=1301) == [ACK, bye]
    assert c.handle(SipResponse(200, sdp=True), now=1302) == [ACK]
    assert c.finished


def test_timer_c_after_early_media_hangs_up_the_answered_dsip_leg() -> None:
    c = call(OUT, early_media=EarlyMediaPolicy.ALWAYS)
    c.handle(DsipInvite(), now=0)
    assert c.handle(SipResponse(183, sdp=True), now=5) == [
        alert(),
        answered_by_gateway(),
        BRIDGE,
    ]
    deadline = c.next_deadline()
    assert deadline is not None
    assert c.handle_timer(deadline) == [
        SendSipRequest("CANCEL"),
        DsipLocal(DsipAction.HANGUP, reason="gateway.unreachable", detail="SIP Timer C"),
        RELEASE,
    ]
    assert states(c) == ("ended", "terminated")


def test_bye_mid_setup_from_the_pstn_caller_cancels_the_dsip_attempt() -> None:
    c = call(IN)
    c.handle(SipInvite("+15551230000"), now=0)
    c.handle(DsipProgress("ringing"), now=1)
    assert c.handle(SipRequest("BYE"), now=2) == [
        SendSipResponse(200, method="BYE"),
        DsipLocal(DsipAction.CANCEL),
        SendSipResponse(487),
    ]
    assert c.finished


def test_dsip_bye_during_early_media_cancels_the_still_early_sip_leg() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(183, sdp=True), now=1)  # auto, unclassified: answered and bridged
    assert states(c) == ("active", "early")
    assert c.handle(DsipBye("user.hangup"), now=2) == [
        SendSipRequest("CANCEL", reason="user.hangup"),
        RELEASE,
    ]
    assert states(c) == ("ended", "early")
    assert c.handle(SipResponse(487), now=3) == []
    assert c.finished


def test_a_failure_after_early_media_is_a_mapped_bye() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(183, sdp=True), now=1)
    assert c.handle(SipResponse(486), now=2) == [
        DsipLocal(DsipAction.HANGUP, reason="gateway.mapped", detail="SIP 486"),
        RELEASE,
    ]


def test_cancel_crossing_200_is_acked_and_torn_down_never_bridged() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(180), now=1)
    assert c.handle(DsipCancel("user.cancelled"), now=2) == [
        SendSipRequest("CANCEL", reason="user.cancelled")
    ]
    out = c.handle(SipResponse(200, sdp=True), now=3)
    assert out == [ACK, SendSipRequest("BYE", in_dialog=True, q850=16, reason="session.cancelled")]
    assert not any(isinstance(e, Media) for e in out)
    assert c.finished


def test_a_pstn_cancel_after_our_200_changes_nothing() -> None:
    c = call(IN)
    c.handle(SipInvite("+15551230000"), now=0)
    c.handle(DsipAnswer("user"), now=1)
    assert c.handle(SipRequest("CANCEL"), now=2) == [SendSipResponse(200, method="CANCEL")]
    assert states(c) == ("active", "confirmed")


def test_dsip_cancel_crossing_our_answer_after_confirm_tears_down() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(200, sdp=True), now=1)
    assert c.handle(DsipCancel("user.cancelled"), now=2) == [
        SendSipRequest("BYE", in_dialog=True, q850=16, reason="user.cancelled"),
        RELEASE,
    ]


def test_auto_early_media_with_a_classified_announcement_refuses() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    assert c.handle(SipResponse(183, sdp=True, q850=17), now=1) == [
        alert(),
        SendSipRequest("CANCEL", reason="endpoint.busy"),
        DsipLocal(DsipAction.AUTO_REJECT, reason="endpoint.busy", detail="Q.850 17"),
    ]
    assert states(c) == ("ended", "early")
    # `always` passes the same announcement through
    c = call(OUT, early_media=EarlyMediaPolicy.ALWAYS)
    c.handle(DsipInvite(), now=0)
    assert c.handle(SipResponse(183, sdp=True, q850=17), now=1)[-1] == BRIDGE


def test_early_media_on_180_only_rings() -> None:
    c = call(OUT, early_media=EarlyMediaPolicy.ALWAYS)
    c.handle(DsipInvite(), now=0)
    assert c.handle(SipResponse(180, sdp=True), now=1) == [alert()]
    assert c.handle(SipResponse(180), now=2) == []  # ringing is said once


def test_forwarded_and_queued_provisionals() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    assert c.handle(SipResponse(182), now=1) == [DsipLocal(DsipAction.PROGRESS, status="queued")]
    assert c.handle(SipResponse(181), now=2) == [DsipLocal(DsipAction.PROGRESS, status="forwarded")]
    assert c.handle(SipResponse(180), now=3) == [alert()]


def test_inbound_progress_statuses_and_refusals() -> None:
    c = call(IN)
    c.handle(SipInvite("+15551230000"), now=0)
    assert c.handle(DsipProgress("trying"), now=1) == []
    assert c.handle(DsipProgress("queued"), now=2) == [SendSipResponse(182)]
    assert c.handle(DsipProgress("ringing"), now=3) == [SendSipResponse(180)]
    assert c.handle(DsipProgress("ringing"), now=4) == []
    assert c.handle(DsipReject("policy.rate-limited", retry_after=30), now=5) == [
        SendSipResponse(503, q850=42, reason="policy.rate-limited", retry_after=30)
    ]
    c = call(IN, retry_after_default=90)
    c.handle(SipInvite("+15551230000"), now=0)
    assert c.handle(DsipReject("policy.rate-limited"), now=1)[0] == SendSipResponse(
        503, q850=42, reason="policy.rate-limited", retry_after=90
    )


def test_inbound_dsip_timeout_answers_the_invite() -> None:
    c = call(IN)
    c.handle(SipInvite("+15551230000"), now=0)
    assert c.handle(DsipLegEnded("session.timeout"), now=120) == [
        SendSipResponse(480, q850=102, reason="session.timeout")
    ]


def test_hold_and_refresh_across_the_bridge() -> None:
    c = call(IN)
    c.handle(SipInvite("+15551230000"), now=0)
    c.handle(DsipAnswer("user"), now=1)
    hold = c.handle(SipReinvite(Direction.SENDONLY), now=2)
    assert hold == [DsipLocal(DsipAction.UPDATE, direction=Direction.SENDONLY)]
    assert c.view().renegotiating
    assert c.handle(SipReinvite(Direction.SENDRECV), now=3) == [SendSipResponse(491)]
    assert c.handle(DsipAnswer("user", Direction.RECVONLY, "01UPDATE"), now=4) == [
        SendSipResponse(200, direction=Direction.RECVONLY)
    ]
    # RFC 4028 refresh: same SDP, answered without a DSIP update
    assert c.handle(SipReinvite(Direction.SENDONLY, sdp_changed=False), now=5) == [
        SendSipResponse(200, direction=Direction.RECVONLY)
    ]


def test_dsip_update_becomes_a_reinvite_and_its_failures_map() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(200, sdp=True), now=1)
    assert c.handle(DsipUpdate(Direction.SENDONLY), now=2) == [
        SendSipRequest("INVITE", in_dialog=True, direction=Direction.SENDONLY)
    ]
    assert c.handle(DsipUpdate(Direction.SENDRECV), now=3) == [
        DsipLocal(DsipAction.REJECT_UPDATE, reason="session.glare")
    ]
    assert c.handle(SipResponse(488), now=4) == [
        DsipLocal(DsipAction.REJECT_UPDATE, reason="media.unsupported", detail="SIP 488")
    ]
    assert states(c) == ("active", "confirmed")
    c.handle(DsipUpdate(Direction.SENDRECV), now=5)
    assert c.handle(SipResponse(200, sdp=True, direction=Direction.SENDRECV), now=6) == [
        ACK,
        DsipLocal(DsipAction.ANSWER_UPDATE, direction=Direction.SENDRECV),
    ]
    c.handle(DsipUpdate(Direction.SENDONLY), now=7)
    # 481: the dialog is gone (RFC 3261 §14.1); the bye discards the update (§12.8 rule 6)
    assert c.handle(SipResponse(481), now=8) == [
        DsipLocal(DsipAction.HANGUP, reason="gateway.mapped", detail="SIP 481"),
        RELEASE,
    ]
    assert c.finished


def test_a_refused_hold_fails_the_reinvite_and_keeps_the_call() -> None:
    c = call(IN)
    c.handle(SipInvite("+15551230000"), now=0)
    c.handle(DsipAnswer("user"), now=1)
    c.handle(SipReinvite(Direction.SENDONLY), now=2)
    (refusal,) = c.handle(DsipReject("media.unsupported", in_reply_to="01UPDATE"), now=3)
    assert refusal == SendSipResponse(488, q850=65, reason="media.unsupported")
    # what the SIP stack writes: both Reason values, the cause first (RFC 3326)
    assert isinstance(refusal, SendSipResponse)
    assert refusal.reason_header == ("Q.850;cause=65", 'DSIP;text="media.unsupported"')
    assert states(c) == ("active", "confirmed")
    assert not c.view().renegotiating
    (bye, _release) = c.handle(DsipBye("media.failed"), now=4)
    assert isinstance(bye, SendSipRequest)
    assert bye.reason_header == ("Q.850;cause=47", 'DSIP;text="media.failed"')


def test_a_cancelled_leg_that_never_answers_is_given_up_on_timer_c() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(DsipCancel("user.cancelled"), now=1)
    assert c.handle(SipResponse(183), now=2) == []  # a provisional crossing the CANCEL
    assert states(c) == ("ended", "early")
    deadline = c.next_deadline()
    assert deadline is not None
    assert c.handle_timer(deadline) == []  # nothing more to tell the DSIP side
    assert c.finished


def test_no_update_on_an_early_dialog() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(183, sdp=True), now=1)
    assert c.handle(DsipUpdate(Direction.SENDONLY), now=2) == [
        DsipLocal(DsipAction.REJECT_UPDATE, reason="session.invalid-state")
    ]
    assert c.handle(DsipAnswer("user"), now=3) == [Ignored("dsip:answer in active/early")]


def test_refer_is_declined_in_both_directions() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(200, sdp=True), now=1)
    assert c.handle(SipRequest("REFER"), now=2) == [SendSipResponse(603, method="REFER")]


def test_downgrade_notice_once_per_crossing() -> None:
    c = call(IN)
    out = c.handle(SipInvite("+15551230000", srtp=SrtpMode.NONE), now=0)
    assert out[-1] == Downgraded(downgrade_notice(CrossingFacts(IN, trunk_srtp=False)))  # type: ignore[arg-type]
    assert isinstance(out[-1], Downgraded)
    assert list(out[-1].notice.losses) == [Loss.NO_SRTP_ON_TRUNK, Loss.NO_ATTESTATION]
    # an attested caller over SDES loses nothing: no notice at all
    c = call(IN)
    passport = PassportFacts("A", True, "15551230000")
    out = c.handle(SipInvite("+15551230000", passport, srtp=SrtpMode.SDES), now=0)
    assert not any(isinstance(e, Downgraded) for e in out)
    # outbound: known when the trunk's answer SDP is
    c = call(OUT, identity_assertable=True)
    c.handle(DsipInvite(policy_present=True), now=0)
    out = c.handle(SipResponse(200, sdp=True, srtp=SrtpMode.DTLS), now=1)
    assert out[-1] == Downgraded(downgrade_notice(CrossingFacts(OUT, True, True, False, True)))  # type: ignore[arg-type]
    assert not any(
        isinstance(e, Downgraded)
        for e in c.handle(SipResponse(200, sdp=True, srtp=SrtpMode.NONE), now=2)
    )


@pytest.mark.parametrize("status", [0, 99, 700, -486, 10**9])
def test_hostile_statuses_are_ignored(status: int) -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    assert [type(e) for e in c.handle(SipResponse(status), now=1)] == [Ignored]
    assert states(c) == ("inviting", "calling")


def test_requests_without_a_row_still_get_a_final_response() -> None:
    c = call(OUT)
    c.handle(DsipInvite(), now=0)
    c.handle(SipResponse(200, sdp=True), now=1)
    assert c.handle(SipRequest("MESSAGE"), now=2) == [SendSipResponse(500, method="MESSAGE")]
    c.handle(SipRequest("BYE"), now=3)
    assert c.handle(SipRequest("BYE"), now=4) == [SendSipResponse(481, method="BYE")]
    assert c.handle(SipResponse(200, method="BYE"), now=5) == [
        Ignored("BYE response needs no action")
    ]
    assert c.handle(DsipProgress(), now=6) == [Ignored("dsip:progress in ended/terminated")]


def test_dsip_payloads_become_events() -> None:
    media = [{"type": "audio", "direction": "sendonly", "codecs": [{"id": "codec:audio/opus"}]}]
    assert dsip_event_from_payload({"type": "update", "media": media}) == DsipUpdate(
        Direction.SENDONLY
    )
    assert dsip_event_from_payload(
        {"type": "answer", "answered_by": "screening", "media": media, "in_reply_to": "01X"}
    ) == DsipAnswer("screening", Direction.SENDONLY, "01X")
    assert dsip_event_from_payload(
        {"type": "reject", "reason": "endpoint.busy", "retry_after": 10}
    ) == DsipReject("endpoint.busy", 10)
    assert dsip_event_from_payload({"type": "invite", "policy": {"recording": "no"}}) == (
        DsipInvite(policy_present=True)
    )
    assert dsip_event_from_payload({"type": "bye"}) == DsipBye(None)
    assert dsip_event_from_payload({"type": "info"}) is None
    assert dsip_event_from_payload({"type": "update", "media": "junk"}) == DsipUpdate()


def test_the_table_is_shaped_as_the_profile() -> None:
    inbound_only = {DsipLeg.OFFERED, DsipLeg.ALERTING}
    outbound_only = {DsipLeg.INVITING, DsipLeg.PROCEEDING}
    for direction, dsip, _sip, _trigger in TRANSITIONS:
        if direction is OUT:
            assert dsip not in inbound_only
        if direction is IN:
            assert dsip not in outbound_only
        if direction is None:
            assert dsip is DsipLeg.ACTIVE
    with pytest.raises(GatewayMisuseError):
        TrunkProfile(timer_c=180)
    with pytest.raises(GatewayMisuseError):
        BridgedCall(OUT, gateway="gw.example")


# --- hypothesis: any event sequence, both directions ------------------------------------------

_DIRECTIONS = st.sampled_from(list(Direction))
_TOKENS = st.sampled_from([*sorted(REASONS)[:12], "x-acme.odd", "user.made-up"])
_EVENTS: st.SearchStrategy[Event] = st.one_of(
    st.builds(DsipInvite, st.booleans()),
    st.builds(DsipProgress, st.sampled_from(["ringing", "queued", "trying", "weird"])),
    st.builds(DsipAnswer, st.sampled_from(["user", "screening", "gateway"]), _DIRECTIONS),
    st.builds(DsipReject, _TOKENS, st.none() | st.integers(0, 600)),
    st.builds(DsipCancel, st.none() | _TOKENS),
    st.builds(DsipBye, st.none() | _TOKENS),
    st.builds(DsipUpdate, _DIRECTIONS),
    st.builds(DsipLegEnded, _TOKENS),
    st.builds(SipInvite, st.sampled_from(["+15551230000", "anonymous"])),
    st.builds(SipReinvite, _DIRECTIONS, st.booleans()),
    st.builds(
        SipRequest,
        st.sampled_from(["ACK", "BYE", "CANCEL", "REFER", "INFO"]),
        st.none() | st.integers(0, 200),
    ),
    st.builds(
        SipResponse,
        st.integers(-5, 800) | st.sampled_from([100, 180, 183, 200, 486, 487]),
        st.sampled_from(["INVITE", "INVITE", "BYE"]),
        st.booleans(),
        st.none() | _DIRECTIONS,
        st.none() | st.sampled_from(list(SrtpMode)),
        st.none() | st.integers(0, 130),
    ),
    st.just(TimerC()),
)


class BridgeMachine(RuleBasedStateMachine):
    """Whatever arrives, in any order: no exception, media bridged at most once at a time
    and only while the DSIP leg is ACTIVE, ENDED stays ENDED, every SIP request answered."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.direction = OUT
        self.call = call(OUT)
        self.bridges = 0
        self.ended = False

    @rule(direction=st.sampled_from([OUT, IN]), policy=st.sampled_from(list(EarlyMediaPolicy)))
    def restart(self, direction: CallDirection, policy: EarlyMediaPolicy) -> None:
        self.call = call(direction, early_media=policy)
        self.bridges, self.ended = 0, False

    @rule(event=_EVENTS, dt=st.integers(0, 100))
    def feed(self, event: Event, dt: int) -> None:
        self.now += dt
        out = self.call.handle(event, now=self.now)
        self._account(out)
        if isinstance(event, SipRequest) and event.method != "ACK":
            assert any(isinstance(e, SendSipResponse) for e in out)

    @rule(dt=st.integers(0, 400))
    def tick(self, dt: int) -> None:
        self.now += dt
        self._account(self.call.handle_timer(self.now))

    def _account(self, out: Sequence[Emission]) -> None:
        for e in out:
            assert isinstance(
                e, SendSipRequest | SendSipResponse | DsipLocal | Media | Downgraded | Ignored
            )
            if isinstance(e, Media):
                self.bridges += 1 if e.action is MediaAction.BRIDGE else -1
                assert self.bridges in (0, 1)

    @invariant()
    def consistent(self) -> None:
        view = self.call.view()
        assert view.bridged == (self.bridges == 1)
        if view.bridged:
            assert view.dsip is DsipLeg.ACTIVE
        if self.ended:
            assert view.dsip is DsipLeg.ENDED
        self.ended = view.dsip is DsipLeg.ENDED
        if view.sip is SipLeg.TERMINATED:
            assert self.call.next_deadline() is None


TestBridgeMachine = BridgeMachine.TestCase
TestBridgeMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


def test_every_error_is_a_dsip_error() -> None:
    assert issubclass(TrunkSdpError, DsipError)
    assert issubclass(GatewayMisuseError, DsipError)
