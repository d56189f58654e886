"""WebRTC Media Binding 1.0: SDP parsing, offer/answer checks, roles, trickle candidates,
renegotiation, one answer per offer, and the seed's media fields — from the binding text."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dsip.core.media_binding import (
    MAX_CANDIDATES_PER_INFO,
    MAX_SDP_CHARS,
    RENEGOTIATION_TRANSITIONS,
    ApplyCandidates,
    ApplyRemote,
    BufferedCandidates,
    CandidateExchange,
    CandidateSide,
    Direction,
    DroppedBuffered,
    DtlsRole,
    IceCandidate,
    IceCredentials,
    Ignored,
    IgnoreReason,
    LocalDescription,
    MediaBindingError,
    RejectUpdate,
    RemoteEndOfCandidates,
    Renegotiation,
    RenegotiationEvent,
    RenegotiationState,
    Rollback,
    SendInfo,
    UpdateOffered,
    WebRtcDescription,
    check_answer,
    check_offer,
    descriptors_from_sdp,
    dtls_roles,
    map_seed_invite,
    parse_sdp,
    rtpmap_for,
    select_answer,
    webrtc_transport,
)
from dsip.core.payloads.schema import validate_named
from dsip.errors import DsipError, SchemaError

UFRAG = "0123456789abcdef0123456789abcdef"
PWD = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
FP = ":".join(["AA", "BB", "CC", "DD", "EE", "FF", "00", "11"] * 4)
PEER = "did:key:z6Mks11tjMeRnE1JceWhyT7zEToX4z3L6BuKaM13PbTEdApn"
OTHER = "did:key:z6Mkj2BxyZQc1YnUdPNkRDAd1GP2ZigPPhh6ZfYwf5HRMrtJ"
DEFAULT_RTPMAP = {"audio": ("111", "opus/48000/2"), "video": ("96", "H264/90000")}


# --- builders -----------------------------------------------------------------------------


def section(
    kind: str = "audio",
    *,
    mid: str | None = "0",
    port: int = 9,
    proto: str = "UDP/TLS/RTP/SAVPF",
    direction: str | None = "sendrecv",
    setup: str | None = "actpass",
    rtpmaps: Sequence[tuple[str, str]] | None = None,
    fmts: str | None = None,
    ufrag: str | None = UFRAG,
    pwd: str | None = PWD,
    fingerprint: str | None = f"sha-256 {FP}",
    rtcp_mux: bool = True,
    extra: Sequence[str] = (),
) -> list[str]:
    maps = list(rtpmaps) if rtpmaps is not None else [DEFAULT_RTPMAP.get(kind, ("96", "x/1"))]
    formats = fmts if fmts is not None else " ".join(pt for pt, _ in maps)
    lines = [f"m={kind} {port} {proto} {formats}", "c=IN IP4 0.0.0.0"]
    lines += [f"a=ice-ufrag:{ufrag}"] if ufrag else []
    lines += [f"a=ice-pwd:{pwd}"] if pwd else []
    lines += [f"a=fingerprint:{fingerprint}"] if fingerprint else []
    lines += [f"a=setup:{setup}"] if setup else []
    lines += [f"a=mid:{mid}"] if mid is not None else []
    lines += [f"a={direction}"] if direction else []
    lines += ["a=rtcp-mux"] if rtcp_mux else []
    lines += [f"a=rtpmap:{pt} {enc}" for pt, enc in maps]
    return lines + list(extra)


def sdp(*sections: list[str], bundle: str | None = None, session: Sequence[str] = ()) -> str:
    if bundle is None:
        mids = [ln[6:] for s in sections for ln in s if ln.startswith("a=mid:")]
        bundle = "BUNDLE " + " ".join(mids)
    head = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    head += [f"a=group:{bundle}"] if bundle else []
    head += list(session)
    return "".join(f"{ln}\r\n" for ln in head + [ln for s in sections for ln in s])


def media(kind: str = "audio", direction: str = "sendrecv", *codecs: str) -> dict[str, Any]:
    ids = list(codecs) or [{"audio": "codec:audio/opus", "video": "codec:video/h264"}[kind]]
    return {"type": kind, "direction": direction, "codecs": [{"id": c} for c in ids]}


def offer_body(text: str, *descs: dict[str, Any], ice: str | None = "trickle") -> dict[str, Any]:
    transport: dict[str, Any] = {"id": "transport:webrtc", "sdp": text}
    if ice is not None:
        transport["ice"] = ice
    return {"media": list(descs) or [media()], "transports": [transport]}


def answer_body(text: str, *descs: dict[str, Any], sender: str = PEER) -> dict[str, Any]:
    return {
        "from": sender,
        "media": list(descs) or [media()],
        "transports": [{"id": "transport:webrtc", "sdp": text}],
    }


AUDIO_OFFER = sdp(section())
AUDIO_ANSWER = sdp(section(setup="active"))
AV_OFFER = sdp(section(), section("video", mid="1"))


def offer_of(text: str = AUDIO_OFFER, *descs: dict[str, Any]) -> WebRtcDescription:
    checked = check_offer(offer_body(text, *descs))
    assert checked is not None
    return checked


def verdict(fn: Callable[..., object], *args: object) -> tuple[str, str]:
    with pytest.raises(MediaBindingError) as err:
        fn(*args)
    return err.value.code, err.value.reason


def offer_verdict(payload: Mapping[str, Any]) -> tuple[str, str]:
    return verdict(check_offer, payload)


def answer_verdict(payload: Mapping[str, Any], offer: str = AUDIO_OFFER) -> tuple[str, str]:
    return verdict(check_answer, offer_of(offer), payload)


def cand(n: int, mid: str = "0") -> IceCandidate:
    return IceCandidate(
        f"candidate:{n} 1 udp 2130706431 192.0.2.{n % 250} {50000 + n} typ host", mid, 0
    )


# --- the SDP parser -----------------------------------------------------------------------


def test_valid_offer_parses_with_resolved_transport_attributes() -> None:
    text = sdp(section(), section("video", mid="1"))
    parsed = parse_sdp(text)
    assert parsed.serialize() == text
    audio, video = parsed.sections
    assert (audio.kind, audio.mid, audio.direction, audio.setup) == (
        "audio",
        "0",
        "sendrecv",
        "actpass",
    )
    assert audio.ice == IceCredentials(UFRAG, PWD)
    assert [(r.payload_type, r.encoding, r.clock_rate, r.params) for r in audio.rtpmaps] == [
        (111, "opus", 48000, "2")
    ]
    assert video.rtpmaps[0].encoding == "H264"
    assert parsed.bundle_groups == (("0", "1"),)
    assert parsed.ice_credentials == IceCredentials(UFRAG, PWD)


def test_session_level_attributes_apply_to_sections_without_their_own() -> None:
    # RFC 8839/8122/8866: ufrag, pwd, fingerprint, setup and direction may sit at session level.
    text = sdp(
        section(ufrag=None, pwd=None, fingerprint=None, setup=None, direction=None),
        section(
            "video",
            mid="1",
            direction="sendonly",
            ufrag=None,
            pwd=None,
            fingerprint=None,
            setup=None,
        ),
        session=[
            f"a=ice-ufrag:{UFRAG}",
            f"a=ice-pwd:{PWD}",
            f"a=fingerprint:sha-256 {FP}",
            "a=setup:actpass",
            "a=recvonly",
        ],
    )
    audio, video = parse_sdp(text).sections
    assert audio.direction is Direction.RECVONLY
    assert video.direction is Direction.SENDONLY  # the section's own wins
    assert audio.ice == video.ice == IceCredentials(UFRAG, PWD)
    assert audio.setup == "actpass"
    assert audio.fingerprints[0].algorithm == "sha-256"
    no_direction = parse_sdp(sdp(section(direction=None))).sections[0]
    assert no_direction.direction is Direction.SENDRECV  # RFC 8866 §6.7 default


_GOOD = sdp(section())

MALFORMED: list[tuple[str, object]] = [
    ("not a string", b"v=0\r\n"),
    ("None", None),
    ("empty", ""),
    ("LF line endings", _GOOD.replace("\r\n", "\n")),
    ("no final CRLF", _GOOD[:-2]),
    ("bare CR inside a line", _GOOD.replace("s=-", "s=-\rx")),
    ("NUL inside a line", _GOOD.replace("s=-", "s=-\x00")),
    ("empty line", _GOOD.replace("t=0 0\r\n", "t=0 0\r\n\r\n")),
    ("no = sign", _GOOD + "garbage\r\n"),
    ("upper-case type", _GOOD.replace("s=-", "S=-")),
    ("v=1", _GOOD.replace("v=0", "v=1")),
    ("starts with o=", _GOOD.replace("v=0\r\n", "")),
    ("malformed o=", _GOOD.replace("o=- 1 1 IN IP4 127.0.0.1", "o=alice")),
    ("empty s=", _GOOD.replace("s=-", "s=")),
    ("no t=", _GOOD.replace("t=0 0\r\n", "")),
    ("a= before t=", _GOOD.replace("s=-\r\nt=0 0\r\n", "s=-\r\na=ice-lite\r\nt=0 0\r\n")),
    ("unknown line type", _GOOD.replace("t=0 0", "t=0 0\r\nx=1")),
    ("two s=", _GOOD.replace("s=-", "s=-\r\ns=again")),
    ("malformed m=", _GOOD.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=audio nine RTP")),
    ("m= without formats", _GOOD.replace("UDP/TLS/RTP/SAVPF 111", "UDP/TLS/RTP/SAVPF")),
    ("port above 65535", _GOOD.replace("m=audio 9 ", "m=audio 70000 ")),
    ("RTP format above 127", _GOOD.replace("SAVPF 111", "SAVPF 300")),
    ("RTP format not a number", _GOOD.replace("SAVPF 111", "SAVPF opus")),
    ("rtpmap pt above 127", _GOOD.replace("a=rtpmap:111", "a=rtpmap:200")),
    ("malformed rtpmap", _GOOD.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus")),
    ("duplicate rtpmap", _GOOD + "a=rtpmap:111 PCMU/8000\r\n"),
    ("two ice-ufrag", _GOOD + f"a=ice-ufrag:{UFRAG}\r\n"),
    ("two directions", _GOOD + "a=recvonly\r\n"),
    ("flag with a value", _GOOD.replace("a=rtcp-mux", "a=rtcp-mux:yes")),
    ("setup not an RFC 4145 role", _GOOD.replace("a=setup:actpass", "a=setup:whatever")),
    ("ufrag too short", _GOOD.replace(f"a=ice-ufrag:{UFRAG}", "a=ice-ufrag:ab")),
    ("pwd too short", _GOOD.replace(f"a=ice-pwd:{PWD}", "a=ice-pwd:short")),
    ("malformed fingerprint", _GOOD.replace(f"sha-256 {FP}", "sha-256 not-hex")),
    ("mid longer than 64", _GOOD.replace("a=mid:0", "a=mid:" + "m" * 65)),
    ("rtpmap at session level", _GOOD.replace("t=0 0", "t=0 0\r\na=rtpmap:0 PCMU/8000")),
    ("group at media level", _GOOD + "a=group:BUNDLE 0\r\n"),
    ("malformed candidate", _GOOD + "a=candidate:nope\r\n"),
    ("attribute name with a space", _GOOD + "a=bad name\r\n"),
    ("media-level line out of order", _GOOD + "c=IN IP4 0.0.0.0\r\n"),
    ("too long", _GOOD + "a=x-pad:" + "p" * MAX_SDP_CHARS + "\r\n"),
]


@pytest.mark.parametrize(("why", "text"), MALFORMED, ids=[w for w, _ in MALFORMED])
def test_malformed_sdp_is_binding_sdp_invalid(why: str, text: object) -> None:
    with pytest.raises(MediaBindingError) as err:
        parse_sdp(text)
    assert err.value.code == "binding-sdp-invalid"
    # as an offer it is refused media.unsupported; as an answer the leg fails, media.failed
    if isinstance(text, str):
        assert offer_verdict(offer_body(text)) == ("binding-sdp-invalid", "media.unsupported")
        assert answer_verdict(answer_body(text)) == ("binding-sdp-invalid", "media.failed")


def test_error_messages_never_echo_hostile_input_at_length() -> None:
    with pytest.raises(MediaBindingError) as err:
        parse_sdp(_GOOD + "z" * 5000 + "\r\n")
    assert len(str(err.value)) < 300


def test_hostile_long_lines_are_refused_fast() -> None:
    long_candidate = _GOOD + "a=candidate:1 1 udp 1 192.0.2.1 9 typ host" + " x" * 30_001 + "\r\n"
    long_group = _GOOD.replace("a=group:BUNDLE 0", "a=group:BUNDLE" + " 0" * 30_000 + " @")
    for text in (long_candidate, long_group, "v=0\r\n" + "a" * 65_000 + "\r\n"):
        start = time.perf_counter()
        with pytest.raises(DsipError):
            parse_sdp(text)
        assert time.perf_counter() - start < 1.0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises_anything_but_dsip_error(text: str) -> None:
    with contextlib.suppress(DsipError):
        parse_sdp(text)


_SDP_LINES = st.sampled_from(
    [
        *_GOOD.split("\r\n")[:-1],
        "a=sendonly",
        "a=setup:holdconn",
        "a=ice-lite",
        "a=bundle-only",
        "m=video 0 UDP/TLS/RTP/SAVPF 96",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=rtpmap:96 VP8/90000",
        "a=candidate:1 1 udp 2130706431 192.0.2.1 50001 typ host",
        "a=end-of-candidates",
        "b=AS:30",
        "c=IN IP6 ::1",
        "r=1 2",
        "a=fmtp:111 minptime=10",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_SDP_LINES | st.text(max_size=20), max_size=30), st.sampled_from(["\r\n", "\n"]))
def test_sdp_shaped_text_never_raises_anything_but_dsip_error(lines: list[str], eol: str) -> None:
    text = "".join(ln + eol for ln in lines)
    try:
        parsed = parse_sdp(text)
    except DsipError:
        return
    assert parsed.serialize() == text  # whatever parses serialises back to itself
    checks: list[Callable[[], object]] = [
        lambda: check_offer(offer_body(text)),
        lambda: check_answer(offer_of(), answer_body(text)),
    ]
    for check in checks:
        with contextlib.suppress(DsipError):
            check()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["media", "transports", "from"]), _JSON, max_size=3),
    st.lists(
        st.dictionaries(st.sampled_from(["id", "ice", "sdp"]), _JSON | st.just("transport:webrtc"))
    ),
)
def test_arbitrary_payloads_never_raise_anything_but_dsip_error(
    payload: dict[str, Any], transports: list[dict[str, Any]]
) -> None:
    for body in (payload, {**payload, "transports": transports}):
        with contextlib.suppress(DsipError):
            check_offer(body)
        with contextlib.suppress(DsipError):
            check_answer(offer_of(), body)


# --- offers: descriptors vs sections (B§2, B§2.1) -----------------------------------------


def test_valid_offers_are_accepted() -> None:
    assert offer_of(AV_OFFER, media(), media("video")).sdp.sections[1].kind == "video"
    # port-0 sections are not described; bundle-only port-0 sections are (RFC 8843 §6)
    disabled = sdp(section(), section("video", mid="1", port=0))
    assert check_offer(offer_body(disabled, media())) is not None
    bundle_only = sdp(section(), section("video", mid="1", port=0, extra=["a=bundle-only"]))
    assert check_offer(offer_body(bundle_only, media(), media("video"))) is not None
    # extra payload types the descriptor does not name are fine (B§2.1)
    extra = sdp(
        section(
            rtpmaps=[("111", "opus/48000/2"), ("0", "PCMU/8000"), ("126", "telephone-event/8000")]
        )
    )
    assert check_offer(offer_body(extra)) is not None


def test_a_non_webrtc_offer_is_not_this_bindings_business() -> None:
    assert (
        check_offer({"media": [media()], "transports": [{"id": "transport:rtp", "sdp": "v=0"}]})
        is None
    )


DISAGREEMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("kind", offer_body(AV_OFFER, media("video"), media()), "binding-kind-mismatch"),
    ("direction", offer_body(sdp(section(direction="sendonly"))), "binding-direction-mismatch"),
    (
        "session-level direction",
        offer_body(sdp(section(direction=None), session=["a=inactive"])),
        "binding-direction-mismatch",
    ),
    (
        "codec absent",
        offer_body(sdp(section(rtpmaps=[("0", "PCMU/8000")]))),
        "binding-codec-missing",
    ),
    (
        "codec's payload type not on the m= line",
        offer_body(sdp(section(fmts="0", rtpmaps=[("0", "PCMU/8000"), ("111", "opus/48000/2")]))),
        "binding-codec-missing",
    ),
    (
        "opus must be stereo rtpmap",
        offer_body(sdp(section(rtpmaps=[("111", "opus/48000")]))),
        "binding-codec-missing",
    ),
    (
        "codec id with no SDP mapping",
        offer_body(AUDIO_OFFER, media("audio", "sendrecv", "codec:audio/x-new")),
        "binding-codec-missing",
    ),
    (
        "more descriptors than sections",
        offer_body(AUDIO_OFFER, media(), media("video")),
        "binding-section-count",
    ),
    ("fewer descriptors than sections", offer_body(AV_OFFER, media()), "binding-section-count"),
    (
        "data channel",
        offer_body(sdp(section(), ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=mid:1"])),
        "binding-extra-section",
    ),
    (
        "text section",
        offer_body(sdp(section(), section("text", mid="1", rtpmaps=[("98", "t140/1000")]))),
        "binding-extra-section",
    ),
]


@pytest.mark.parametrize(
    ("why", "payload", "code"), DISAGREEMENTS, ids=[w for w, _, _ in DISAGREEMENTS]
)
def test_sections_that_disagree_with_descriptors_are_refused(
    why: str, payload: dict[str, Any], code: str
) -> None:
    assert offer_verdict(payload) == (code, "media.unsupported")


def test_refusal_says_which_section() -> None:
    with pytest.raises(MediaBindingError) as err:
        check_offer(offer_body(AV_OFFER, media(), media("video", "recvonly")))
    assert err.value.section == 1
    assert "m= section 1" in err.value.detail


PROFILE: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "plain RTP",
        offer_body(sdp(section(proto="RTP/AVP"))),
        "binding-encryption",
        "media.encryption-required",
    ),
    (
        "plain RTP with feedback",
        offer_body(sdp(section(proto="RTP/AVPF"))),
        "binding-encryption",
        "media.encryption-required",
    ),
    (
        "SDES-keyed SRTP",
        offer_body(sdp(section(proto="RTP/SAVPF"))),
        "binding-encryption",
        "media.encryption-required",
    ),
    (
        "no fingerprint",
        offer_body(sdp(section(fingerprint=None))),
        "binding-fingerprint-missing",
        "media.unsupported",
    ),
    (
        "sha-1 fingerprint only",
        offer_body(sdp(section(fingerprint="sha-1 " + ":".join(["AB"] * 20)))),
        "binding-fingerprint-missing",
        "media.unsupported",
    ),
    (
        "short sha-256 fingerprint",
        offer_body(sdp(section(fingerprint="sha-256 AB:CD"))),
        "binding-fingerprint-missing",
        "media.unsupported",
    ),
    (
        "no ICE credentials",
        offer_body(sdp(section(ufrag=None, pwd=None))),
        "binding-ice-credentials-missing",
        "media.unsupported",
    ),
    (
        "ufrag without pwd",
        offer_body(sdp(section(pwd=None))),
        "binding-ice-credentials-missing",
        "media.unsupported",
    ),
    (
        "no rtcp-mux",
        offer_body(sdp(section(rtcp_mux=False))),
        "binding-rtcp-mux-missing",
        "media.unsupported",
    ),
    (
        "ice-lite",
        offer_body(sdp(section(), session=["a=ice-lite"])),
        "binding-ice-mode",
        "media.unsupported",
    ),
    (
        "no BUNDLE",
        offer_body(sdp(section(), bundle="")),
        "binding-bundle-missing",
        "media.unsupported",
    ),
    (
        "BUNDLE misses a section",
        offer_body(AV_OFFER.replace("BUNDLE 0 1", "BUNDLE 0"), media(), media("video")),
        "binding-bundle-missing",
        "media.unsupported",
    ),
    (
        "no mid",
        offer_body(sdp(section(mid=None), bundle="BUNDLE 0")),
        "binding-bundle-missing",
        "media.unsupported",
    ),
    (
        "setup active in an offer",
        offer_body(sdp(section(setup="active"))),
        "binding-setup-invalid",
        "media.unsupported",
    ),
    (
        "no setup",
        offer_body(sdp(section(setup=None))),
        "binding-setup-invalid",
        "media.unsupported",
    ),
    ("ice mode absent", offer_body(AUDIO_OFFER, ice=None), "binding-ice-mode", "media.unsupported"),
    ("ice mode full", offer_body(AUDIO_OFFER, ice="full"), "binding-ice-mode", "media.unsupported"),
    (
        "no sdp",
        {"media": [media()], "transports": [{"id": "transport:webrtc", "ice": "trickle"}]},
        "binding-sdp-missing",
        "media.offer-required",
    ),
    (
        "sdp not a string",
        offer_body(AUDIO_OFFER)
        | {"transports": [{"id": "transport:webrtc", "ice": "trickle", "sdp": 7}]},
        "binding-sdp-invalid",
        "media.unsupported",
    ),
    (
        "two webrtc transports",
        {"media": [media()], "transports": [webrtc_transport(AUDIO_OFFER, offer=True)] * 2},
        "binding-transport-duplicate",
        "media.unsupported",
    ),
]


@pytest.mark.parametrize(
    ("why", "payload", "code", "reason"), PROFILE, ids=[w for w, *_ in PROFILE]
)
def test_sdp_profile_violations_in_offers(
    why: str, payload: dict[str, Any], code: str, reason: str
) -> None:
    assert offer_verdict(payload) == (code, reason)


def test_session_level_profile_attributes_satisfy_the_profile() -> None:
    text = sdp(
        section(ufrag=None, pwd=None, fingerprint=None),
        session=[f"a=ice-ufrag:{UFRAG}", f"a=ice-pwd:{PWD}", f"a=fingerprint:sha-256 {FP}"],
    )
    assert check_offer(offer_body(text)) is not None


def test_malformed_descriptors_are_schema_errors() -> None:
    for bad in (
        "audio",
        [{"type": "audio"}],
        [{"type": 1, "direction": "sendrecv", "codecs": [{"id": "c"}]}],
        [{"type": "audio", "direction": "sideways", "codecs": [{"id": "c"}]}],
        [{"type": "audio", "direction": "sendrecv", "codecs": []}],
        [{"type": "audio", "direction": "sendrecv", "codecs": ["codec:audio/opus"]}],
    ):
        with pytest.raises(SchemaError):
            check_offer({"media": bad, "transports": [webrtc_transport(AUDIO_OFFER, offer=True)]})
    with pytest.raises(SchemaError):
        check_offer({"media": [media()], "transports": "transport:webrtc"})


# --- answers (B§2.1, B§3.1, B§3.3, B§8) ---------------------------------------------------


def test_valid_answers_are_accepted() -> None:
    assert check_answer(offer_of(), answer_body(AUDIO_ANSWER)) is not None
    passive = sdp(section(setup="passive"))
    assert check_answer(offer_of(), answer_body(passive)) is not None
    screening = sdp(section(setup="active", direction="recvonly"))
    assert check_answer(offer_of(), answer_body(screening, media("audio", "recvonly"))) is not None
    with_ice = answer_body(AUDIO_ANSWER)
    with_ice["transports"][0]["ice"] = "trickle"
    assert check_answer(offer_of(), with_ice) is not None
    rejected_video = sdp(
        section(setup="active"),
        section("video", mid="1", port=0, setup="active", direction="inactive"),
    )
    assert (
        check_answer(offer_of(AV_OFFER, media(), media("video")), answer_body(rejected_video))
        is not None
    )


ANSWERS: list[tuple[str, dict[str, Any], str]] = [
    (
        "sdp missing",
        {"from": PEER, "media": [media()], "transports": [{"id": "transport:webrtc"}]},
        "binding-sdp-missing",
    ),
    (
        "ice not trickle",
        {
            "from": PEER,
            "media": [media()],
            "transports": [{"id": "transport:webrtc", "ice": "full", "sdp": AUDIO_ANSWER}],
        },
        "binding-ice-mode",
    ),
    ("setup actpass", answer_body(AUDIO_OFFER), "binding-setup-invalid"),
    ("setup holdconn", answer_body(sdp(section(setup="holdconn"))), "binding-setup-invalid"),
    ("plain RTP", answer_body(sdp(section(setup="active", proto="RTP/AVP"))), "binding-encryption"),
    (
        "no fingerprint",
        answer_body(sdp(section(setup="active", fingerprint=None))),
        "binding-fingerprint-missing",
    ),
    (
        "no ICE credentials",
        answer_body(sdp(section(setup="active", ufrag=None, pwd=None))),
        "binding-ice-credentials-missing",
    ),
    (
        "no rtcp-mux",
        answer_body(sdp(section(setup="active", rtcp_mux=False))),
        "binding-rtcp-mux-missing",
    ),
    (
        "direction disagrees with descriptor",
        answer_body(sdp(section(setup="active", direction="recvonly"))),
        "binding-direction-mismatch",
    ),
    (
        "more sections than the offer",
        answer_body(
            sdp(section(setup="active"), section("video", mid="1", setup="active")),
            media(),
            media("video"),
        ),
        "binding-section-count",
    ),
    (
        "codec missing",
        answer_body(sdp(section(setup="active", rtpmaps=[("0", "PCMU/8000")]))),
        "binding-codec-missing",
    ),
]


@pytest.mark.parametrize(("why", "payload", "code"), ANSWERS, ids=[w for w, *_ in ANSWERS])
def test_a_bad_answer_fails_the_leg_with_media_failed(
    why: str, payload: dict[str, Any], code: str
) -> None:
    assert answer_verdict(payload) == (code, "media.failed")


def test_an_answer_must_be_an_rfc3264_answer_to_the_offer() -> None:
    av = offer_of(AV_OFFER, media(), media("video"))
    swapped = sdp(
        section("video", mid="0", setup="active"), section("audio", mid="1", setup="active")
    )
    assert verdict(check_answer, av, answer_body(swapped, media("video"), media())) == (
        "binding-kind-mismatch",
        "media.failed",
    )
    # a section the offer disabled stays disabled
    disabled = offer_of(sdp(section(), section("video", mid="1", port=0)), media())
    revived = sdp(section(setup="active"), section("video", mid="1", setup="active"))
    assert verdict(check_answer, disabled, answer_body(revived, media(), media("video"))) == (
        "binding-section-count",
        "media.failed",
    )
    # sendonly offered: sendrecv is no valid answer
    sendonly = offer_of(sdp(section(direction="sendonly")), media("audio", "sendonly"))
    assert verdict(check_answer, sendonly, answer_body(AUDIO_ANSWER)) == (
        "binding-direction-mismatch",
        "media.failed",
    )
    recv = sdp(section(setup="active", direction="recvonly"))
    assert check_answer(sendonly, answer_body(recv, media("audio", "recvonly"))) is not None


# --- DTLS roles (B§3.3) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer", "expect"),
    [
        ("actpass", "active", (DtlsRole.SERVER, DtlsRole.CLIENT)),
        ("actpass", "passive", (DtlsRole.CLIENT, DtlsRole.SERVER)),
        ("active", "passive", ("binding-setup-invalid", "media.unsupported")),
        ("passive", "active", ("binding-setup-invalid", "media.unsupported")),
        ("holdconn", "active", ("binding-setup-invalid", "media.unsupported")),
        ("actpass", "holdconn", ("binding-setup-invalid", "media.failed")),
        ("actpass", "actpass", ("binding-setup-invalid", "media.failed")),
        ("actpass", "", ("binding-setup-invalid", "media.failed")),
    ],
)
def test_role_mapping(offer: str, answer: str, expect: tuple[str, str]) -> None:
    if expect[0] in (DtlsRole.CLIENT, DtlsRole.SERVER):
        roles = dtls_roles(offer, answer)
        assert (roles.offerer, roles.answerer) == expect
    else:
        assert verdict(dtls_roles, offer, answer) == expect


# --- trickle candidates (B§4) -------------------------------------------------------------


def test_local_candidates_wait_for_active_then_go_in_one_info() -> None:
    ex = CandidateExchange(PEER)
    assert ex.local_candidate(cand(1)) == [BufferedCandidates(CandidateSide.LOCAL, 1)]
    assert ex.local_candidate(cand(2)) == [BufferedCandidates(CandidateSide.LOCAL, 2)]
    assert ex.active() == [SendInfo((cand(1), cand(2)), False)]
    assert ex.active() == []
    assert ex.local_candidates([cand(3), cand(4)]) == [SendInfo((cand(3), cand(4)), False)]
    assert ex.local_candidates([]) == []
    assert ex.gathering_complete() == [SendInfo((), True)]
    assert ex.gathering_complete() == []  # true exactly once (B§4.2)
    assert ex.local_candidate(cand(5)) == [Ignored(IgnoreReason.AFTER_END)]


def test_gathering_done_before_active_sends_candidates_and_end_together() -> None:
    ex = CandidateExchange(PEER)
    ex.local_candidate(cand(1))
    assert ex.gathering_complete() == []
    assert ex.active() == [SendInfo((cand(1),), True)]
    # finished before sending anything still sends one info with the end marker (B§4.1)
    lone = CandidateExchange(PEER)
    assert lone.gathering_complete() == []
    assert lone.active() == [SendInfo((), True)]


def test_buffered_batches_respect_the_appendix_a_cap() -> None:
    ex = CandidateExchange(PEER)
    ex.local_candidates([cand(n) for n in range(MAX_CANDIDATES_PER_INFO + 6)])
    ex.gathering_complete()
    sent = ex.active()
    assert [(len(s.candidates), s.end_of_candidates) for s in sent if isinstance(s, SendInfo)] == [
        (64, False),
        (6, True),
    ]
    for info in sent:
        assert isinstance(info, SendInfo)
        validate_named("webrtc-info-data", info.data())  # the wire shape is Appendix A's


def test_remote_candidates_wait_for_the_description_and_keep_their_order() -> None:
    ex = CandidateExchange(PEER)
    assert ex.remote_info(PEER, [cand(1), cand(2)], False) == [
        BufferedCandidates(CandidateSide.REMOTE, 2)
    ]
    assert ex.remote_info(PEER, [cand(3)], True) == [BufferedCandidates(CandidateSide.REMOTE, 3)]
    assert ex.remote_info(PEER, [cand(4)], False) == [Ignored(IgnoreReason.AFTER_END)]
    assert ex.remote_description_applied() == [
        ApplyCandidates((cand(1), cand(2), cand(3))),
        RemoteEndOfCandidates(),
    ]
    assert ex.remote_info(PEER, [], True) == [
        Ignored(IgnoreReason.AFTER_END)
    ]  # a repeated true is tolerated


def test_candidates_only_from_the_party_to_the_session() -> None:
    ex = CandidateExchange(PEER)
    ex.remote_description_applied()
    assert ex.remote_info(OTHER, [cand(1)], True) == [Ignored(IgnoreReason.NOT_PARTY)]
    assert ex.remote_info(PEER, [cand(1)], False) == [ApplyCandidates((cand(1),))]
    assert ex.remote_info(PEER, [], True) == [RemoteEndOfCandidates()]


def test_session_end_drops_what_is_buffered_and_ignores_the_rest() -> None:
    ex = CandidateExchange(PEER)
    ex.remote_info(PEER, [cand(1)], False)
    ex.local_candidate(cand(2))
    assert ex.session_end() == [DroppedBuffered(2)]
    assert ex.session_end() == []
    for late in (
        ex.remote_description_applied,
        ex.active,
        ex.gathering_complete,
        lambda: ex.local_candidate(cand(3)),
        lambda: ex.remote_info(PEER, [cand(4)], True),
        ex.remote_offer_superseded,
    ):
        assert late() == [Ignored(IgnoreReason.ENDED)]


def test_a_superseded_offer_drops_its_buffered_candidates() -> None:
    ex = CandidateExchange(PEER)
    ex.remote_info(PEER, [cand(1), cand(2)], True)
    assert ex.remote_offer_superseded() == [DroppedBuffered(2)]
    assert ex.remote_info(PEER, [cand(3)], False) == [BufferedCandidates(CandidateSide.REMOTE, 1)]
    assert ex.remote_description_applied() == [ApplyCandidates((cand(3),))]


def test_candidate_entries_follow_appendix_a() -> None:
    good = {
        "candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host",
        "sdp_mid": "0",
        "sdp_m_line_index": 0,
    }
    assert IceCandidate.from_mapping(good).to_mapping() == good
    for bad in (
        good | {"username_fragment": "abcd"},  # no ICE restart, so no ufrag (B§4.2)
        {"candidate": good["candidate"]},
        good | {"candidate": "1 1 udp"},
        good | {"sdp_m_line_index": -1},
        good | {"sdp_m_line_index": True},
        good | {"sdp_mid": "m" * 65},
        "candidate:1",
    ):
        with pytest.raises(SchemaError):
            IceCandidate.from_mapping(bad)


class CandidateTraffic(RuleBasedStateMachine):
    """Whatever the order of events: every local candidate is sent exactly once and in
    order unless the session ended first; the end marker goes out at most once and last;
    only the peer's candidates are applied, in order, none after its end marker."""

    def __init__(self) -> None:
        super().__init__()
        self.ex = CandidateExchange(PEER)
        self.n = 0
        self.gathered: list[IceCandidate] = []
        self.sent: list[IceCandidate] = []
        self.ends_sent = 0
        self.offered: list[IceCandidate] = []  # from the peer, before its end marker
        self.peer_done = False
        self.applied: list[IceCandidate] = []

    def _take(self, emissions: Sequence[object]) -> None:
        for em in emissions:
            if isinstance(em, SendInfo):
                assert self.ends_sent == 0, "nothing after the end marker"
                self.sent += em.candidates
                self.ends_sent += em.end_of_candidates
            elif isinstance(em, ApplyCandidates):
                self.applied += em.candidates

    @rule(k=st.integers(0, 3))
    def local(self, k: int) -> None:
        batch = [cand(self.n + i) for i in range(k)]
        self.n += k
        out = self.ex.local_candidates(batch)
        if (
            not self.ex.ended
            and self.ends_sent == 0
            and not any(isinstance(e, Ignored) for e in out)
        ):
            self.gathered += batch
        self._take(out)

    @rule()
    def complete(self) -> None:
        self._take(self.ex.gathering_complete())

    @rule()
    def active(self) -> None:
        self._take(self.ex.active())

    @rule()
    def described(self) -> None:
        self._take(self.ex.remote_description_applied())

    @rule(k=st.integers(0, 2), end=st.booleans(), party=st.booleans())
    def remote(self, k: int, end: bool, party: bool) -> None:
        batch = [cand(1000 + self.n + i) for i in range(k)]
        self.n += k
        if party and not self.peer_done and not self.ex.ended:
            self.offered += batch
            self.peer_done = end
        self._take(self.ex.remote_info(PEER if party else OTHER, batch, end))

    @rule()
    def end(self) -> None:
        self._take(self.ex.session_end())

    @invariant()
    def ordered_and_once(self) -> None:
        assert self.sent == self.gathered[: len(self.sent)]
        assert self.ends_sent <= 1
        assert self.applied == self.offered[: len(self.applied)]
        if self.ends_sent and not self.ex.ended:
            assert self.sent == self.gathered


test_candidate_traffic = CandidateTraffic.TestCase
test_candidate_traffic.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)


# --- renegotiation (B§5) ------------------------------------------------------------------

ICE = IceCredentials("abcd", "0123456789012345678901")
PEER_ICE = IceCredentials("wxyz", "abcdefghijklmnopqrstuv")


def test_reoffer_becomes_current_when_answered() -> None:
    r = Renegotiation(ICE, PEER_ICE, current_local="v1")
    assert r.local_reoffer(ICE, "v2") == [LocalDescription("pending")]
    assert (r.state, r.pending_local, r.current_local) == (
        RenegotiationState.LOCAL_OFFER,
        "v2",
        "v1",
    )
    assert r.remote_answer() == [ApplyRemote("answer"), LocalDescription("current")]
    assert (r.state, r.pending_local, r.current_local) == (RenegotiationState.STABLE, None, "v2")


def test_rejected_reoffer_rolls_back_and_late_answers_are_ignored() -> None:
    r = Renegotiation(ICE, PEER_ICE, current_local="v1")
    r.local_reoffer(ICE, "v2")
    assert r.remote_reject() == [Rollback(), LocalDescription("current")]
    assert r.current_local == "v1"
    assert r.remote_answer() == [Ignored(IgnoreReason.NO_PENDING_OFFER)]
    assert r.remote_reject() == [Ignored(IgnoreReason.NO_PENDING_OFFER)]


def test_changing_our_own_ice_credentials_is_a_programming_error() -> None:
    r = Renegotiation(ICE, PEER_ICE)
    for restart in (IceCredentials("zzzz", ICE.pwd), IceCredentials(ICE.ufrag, "x" * 22)):
        with pytest.raises(MediaBindingError) as err:
            r.local_reoffer(restart)
        assert err.value.code == "binding-ice-restart"
        assert err.value.remote is False
        assert err.value.message == "a re-offer MUST keep the ICE credentials"
    assert r.state is RenegotiationState.STABLE  # nothing was set


def test_a_peers_ice_restart_is_refused_and_the_session_continues() -> None:
    r = Renegotiation(ICE, PEER_ICE)
    assert r.remote_reoffer(IceCredentials("zzzz", PEER_ICE.pwd)) == [
        RejectUpdate("media.unsupported", "ice-restart")
    ]
    assert r.state is RenegotiationState.STABLE
    assert r.remote_reoffer(PEER_ICE, "theirs") == [UpdateOffered()]
    assert r.answer_update() == [ApplyRemote("remote-offer+answer")]
    assert r.remote_reoffer(PEER_ICE) == [UpdateOffered()]
    assert r.reject_update("media.unsupported") == [RejectUpdate("media.unsupported")]
    assert r.state is RenegotiationState.STABLE


def test_actions_the_state_does_not_allow_are_misuse() -> None:
    r = Renegotiation(ICE, PEER_ICE)
    with pytest.raises(MediaBindingError, match="not allowed"):
        r.answer_update()
    r.local_reoffer(ICE)
    with pytest.raises(MediaBindingError, match="not allowed"):
        r.local_reoffer(ICE)  # one outstanding update (§12.8)
    with pytest.raises(MediaBindingError, match="not allowed"):
        r.remote_reoffer(PEER_ICE)  # glare is the session engine's to resolve first


def test_the_transition_table_is_the_documented_one() -> None:
    s, e = RenegotiationState, RenegotiationEvent
    assert set(RENEGOTIATION_TRANSITIONS) == {
        (s.STABLE, e.LOCAL_REOFFER),
        (s.STABLE, e.REMOTE_REOFFER),
        (s.LOCAL_OFFER, e.REMOTE_ANSWER),
        (s.LOCAL_OFFER, e.REMOTE_REJECT),
        (s.REMOTE_OFFER, e.ANSWER_UPDATE),
        (s.REMOTE_OFFER, e.REJECT_UPDATE),
    }


# --- one answer per offer (B§6.1) ---------------------------------------------------------


def test_first_valid_answer_wins_across_forked_legs() -> None:
    bad = answer_body(AUDIO_OFFER, sender="did:key:early-bad")  # actpass: not an answer
    good = answer_body(AUDIO_ANSWER, sender=PEER)
    late_bad = answer_body(AUDIO_OFFER, sender="did:key:late-bad")
    late_good = answer_body(AUDIO_ANSWER, sender=OTHER)
    selection = select_answer(offer_of(), [bad, good, late_bad, late_good])
    assert selection.applied == PEER
    assert [(leg.leg, leg.applied, leg.bye, leg.code) for leg in selection.legs] == [
        ("did:key:early-bad", False, "media.failed", "binding-setup-invalid"),
        (PEER, True, None, None),
        ("did:key:late-bad", False, "session.already-answered", None),
        (OTHER, False, "session.already-answered", None),
    ]


def test_no_valid_answer_applies_nothing() -> None:
    selection = select_answer(offer_of(), [answer_body(AUDIO_OFFER)])
    assert selection.applied is None
    assert selection.legs[0].bye == "media.failed"
    with pytest.raises(SchemaError):
        select_answer(offer_of(), [{"media": [], "transports": []}])


# --- SDP ⇄ descriptors --------------------------------------------------------------------


def test_descriptors_from_sdp_follow_the_live_sections() -> None:
    text = sdp(
        section(
            rtpmaps=[("111", "opus/48000/2"), ("0", "PCMU/8000"), ("126", "telephone-event/8000")]
        ),
        section("video", mid="1", port=0),
        section(
            "video",
            mid="2",
            direction="recvonly",
            rtpmaps=[("96", "VP8/90000"), ("97", "rtx/90000")],
        ),
    )
    assert [d.to_mapping() for d in descriptors_from_sdp(text)] == [
        media("audio", "sendrecv", "codec:audio/opus", "codec:audio/pcmu"),
        media("video", "recvonly", "codec:video/vp8"),
    ]
    assert [
        c.id
        for c in descriptors_from_sdp(text, supported=["codec:audio/pcmu", "codec:video/vp8"])[
            0
        ].codecs
    ] == ["codec:audio/pcmu"]
    with pytest.raises(MediaBindingError) as err:
        descriptors_from_sdp(sdp(section(rtpmaps=[("126", "telephone-event/8000")])))
    assert err.value.code == "binding-codec-missing"
    assert err.value.remote is False
    assert rtpmap_for("codec:audio/opus") == "opus/48000/2"
    assert rtpmap_for("codec:audio/x") is None


# --- the seed's invite fields (seed §6.1) -------------------------------------------------


def test_seed_codecs_map_to_descriptors_and_unknown_ones_are_negotiated_away() -> None:
    seed = {
        "cap": {"ver": "1.0", "features": ["webrtc", "payments", "e2ee"]},
        "media": {
            "sdp": "v=0...",
            "codecs": [
                "opus/48000/2",
                "PCMU/8000",
                "speex/16000",
                42,
                "VP8/90000",
                "codec:video/h264",
            ],
        },
        "net": {
            "ice": {"ufrag": "...", "pwd": "..."},
            "candidates": [],
            "hints": {"sfu": ["wss://sfu.voice.example", 7]},
        },
    }
    # The seed example's "v=0..." is a placeholder, not SDP: never carried into a v0.7 offer.
    with pytest.raises(MediaBindingError) as placeholder:
        map_seed_invite(seed)
    assert placeholder.value.code == "binding-sdp-invalid"
    del seed["media"]["sdp"]  # type: ignore[attr-defined]
    mapped = map_seed_invite(seed)
    assert [d.to_mapping() for d in mapped.media] == [
        media("audio", "sendrecv", "codec:audio/opus", "codec:audio/pcmu"),
        media("video", "sendrecv", "codec:video/vp8", "codec:video/h264"),
    ]
    assert mapped.dropped_codecs == ("speex/16000", "42")
    assert mapped.focus_hints == ("wss://sfu.voice.example",)
    assert mapped.transports == ()  # no SDP, so no transport:webrtc to offer yet
    narrowed = map_seed_invite(seed, supported=["codec:audio/opus"])
    assert [c.id for d in narrowed.media for c in d.codecs] == ["codec:audio/opus"]
    assert "VP8/90000" in narrowed.dropped_codecs


def test_seed_invite_with_a_real_sdp_yields_a_consistent_v07_offer() -> None:
    text = sdp(
        section(rtpmaps=[("111", "opus/48000/2"), ("0", "PCMU/8000")]), section("video", mid="1")
    )
    seed = {
        "cap": {"features": ["webrtc"]},
        "media": {"sdp": text, "codecs": ["opus/48000/2", "H264/90000", "G729/8000"]},
    }
    mapped = map_seed_invite(seed)
    assert mapped.dropped_codecs == ("G729/8000",)
    assert [[c.id for c in d.codecs] for d in mapped.media] == [
        ["codec:audio/opus"],
        ["codec:video/h264"],
    ]
    assert check_offer(mapped.payload_fields()) is not None
    without_webrtc = map_seed_invite({**seed, "cap": {"features": ["payments"]}})
    assert without_webrtc.transports == ()


def test_seed_mapping_never_crashes_on_odd_fields() -> None:
    odd: dict[str, Any]
    for odd in (
        {},
        {"media": "opus"},
        {"media": {"codecs": "opus/48000/2"}},
        {"cap": [], "net": "x"},
        {"media": {"codecs": [None, {}, "opus/x", "/"]}},
    ):
        with pytest.raises(MediaBindingError) as err:
            map_seed_invite(odd)
        assert err.value.reason == "media.unsupported"  # nothing left to offer
    with pytest.raises(MediaBindingError) as bad_sdp:
        map_seed_invite({"media": {"sdp": "not sdp", "codecs": ["opus/48000/2"]}})
    assert bad_sdp.value.code == "binding-sdp-invalid"


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["cap", "media", "net"]),
        _JSON
        | st.fixed_dictionaries(
            {"codecs": st.lists(_JSON | st.sampled_from(["opus/48000/2", "VP8/90000", "x/1"]))}
        ),
    )
)
def test_seed_mapping_raises_only_dsip_errors(invite: dict[str, Any]) -> None:
    with contextlib.suppress(DsipError):
        map_seed_invite(invite)


# --- real SDP from aiortc -----------------------------------------------------------------


def _aiortc_offer_and_answer(kinds: Sequence[str]) -> tuple[str, str]:
    aiortc = pytest.importorskip("aiortc")

    async def run() -> tuple[str, str]:
        # No ICE servers: createOffer/createAnswer never gather, so nothing leaves the host.
        config = aiortc.RTCConfiguration(iceServers=[])
        caller, callee = aiortc.RTCPeerConnection(config), aiortc.RTCPeerConnection(config)
        try:
            for kind in kinds:
                caller.addTransceiver(kind)
            offer = await caller.createOffer()
            await callee.setRemoteDescription(offer)
            answer = await callee.createAnswer()
            return offer.sdp, answer.sdp
        finally:
            await caller.close()
            await callee.close()

    return asyncio.run(run())


@pytest.mark.parametrize("kinds", [("audio",), ("audio", "video")])
def test_aiortc_sdp_round_trips_and_passes_the_binding(kinds: tuple[str, ...]) -> None:
    from aiortc.sdp import SessionDescription

    offer_text, answer_text = _aiortc_offer_and_answer(kinds)
    for text in (offer_text, answer_text):
        parsed = parse_sdp(text)
        assert parsed.serialize() == text
        assert parse_sdp(parsed.serialize()) == parsed
        # differential: the fields both parsers extract agree
        oracle = SessionDescription.parse(text)
        assert [s.kind for s in parsed.sections] == [m.kind for m in oracle.media]
        for ours, theirs in zip(parsed.sections, oracle.media, strict=True):
            assert theirs.ice is not None
            assert theirs.dtls is not None
            assert ours.mid == theirs.rtp.muxId
            assert ours.direction == theirs.direction
            assert ours.ice is not None
            assert (ours.ice.ufrag, ours.ice.pwd) == (
                theirs.ice.usernameFragment,
                theirs.ice.password,
            )
            assert ours.rtcp_mux == theirs.rtcp_mux
            assert [f.value for f in ours.fingerprints] == [
                f.value for f in theirs.dtls.fingerprints
            ]
            assert [(r.payload_type, r.clock_rate) for r in ours.rtpmaps] == [
                (c.payloadType, c.clockRate) for c in theirs.rtp.codecs
            ]
    offer = check_offer(
        {
            "media": [d.to_mapping() for d in descriptors_from_sdp(offer_text)],
            "transports": [webrtc_transport(offer_text, offer=True)],
        }
    )
    assert offer is not None
    assert [s.setup for s in offer.sdp.sections] == ["actpass"] * len(kinds)
    answer_media = [d.to_mapping() for d in descriptors_from_sdp(answer_text)]
    answered = check_answer(
        offer,
        {
            "from": PEER,
            "media": answer_media,
            "transports": [webrtc_transport(answer_text, offer=False)],
        },
    )
    assert answered is not None
    roles = dtls_roles(offer.sdp.sections[0].setup or "", answered.sdp.sections[0].setup or "")
    assert (roles.offerer, roles.answerer) == (DtlsRole.SERVER, DtlsRole.CLIENT)
