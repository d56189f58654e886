"""The WebRTC Media Binding 1.0 (``transport:webrtc``) as sans-I/O rules and engines.

What lives here, in the order of the binding document (``B§n``):

* a minimal strict SDP parser (:func:`parse_sdp`) and the SDP ⇄ media-descriptor mapping
  (:func:`descriptors_from_sdp`, :data:`CODEC_RTPMAP`, B§2.1, B§3.4);
* the offer and answer checks (:func:`check_offer`, :func:`check_answer`): descriptor/SDP
  consistency (B§2.1), the SDP profile (B§2.2), DTLS setup (B§3.3), the encryption floor (B§7);
* the DTLS role mapping (:func:`dtls_roles`, B§3.3);
* :class:`CandidateExchange`, trickle ICE through ``info`` (B§4.2–B§4.4);
* :class:`Renegotiation`, re-offers through ``update`` with rollback and the no-ICE-restart
  rule (B§5), as a transition table;
* :class:`AnswerSelector`, one answer per offer across forked legs (B§6.1);
* :func:`map_seed_invite`, the seed's ``cap``/``media.codecs``/``net.hints.sfu`` invite fields
  mapped onto v0.7 descriptors, unknown codecs negotiated away.

Nothing here touches a socket, a peer connection or a clock: engines take events and return
emissions (frozen dataclasses), which an I/O adapter turns into ``info``/``reject``/``bye``
envelopes and peer-connection calls.

Errors. Every refusal is a :class:`MediaBindingError` carrying the vectors' verdict code
(``binding-*``) and the wire reason token. The token depends on *where* the defect is
(B§8): a bad **offer** is refused with ``reject`` — ``media.offer-required`` when ``sdp`` is
missing, ``media.encryption-required`` for plain RTP, ``media.unsupported`` for everything
else; a bad **answer** is a failure of the accepted leg, ``bye media.failed`` (the only
``media.*`` token valid on ``bye``, §15.4), whatever the defect.

Why our own SDP parser. The two candidates were measured against the binding:

* ``aiortc.sdp`` (aiortc 1.16) drops a session-level direction attribute (B§2.1 applies it to
  sections without their own), maps ``a=setup`` straight to a DTLS role and raises
  ``KeyError`` on ``holdconn`` (so "holdconn MUST NOT be used" could not be reported as
  such), validates with ``assert`` (gone under ``python -O``: payload type 300 is then
  accepted), raises six unrelated exception types on junk, and importing it loads PyAV,
  aioice and pylibsrtp (~0.2 s, 400+ modules) into what must stay a sans-I/O core.
* ``sdp-transform`` (PyPI port of the JS library, 1.1.0) is lenient by design: it silently
  discards lines it cannot parse (``"hello world"`` is an empty, valid session), keeps only
  the last ``a=fingerprint``, coerces ``a=mid:0`` and ``a=ice-ufrag:1234`` to ``int``, and
  returns untyped dicts.

So :func:`parse_sdp` is a small strict RFC 8866 reader that only understands the attributes
the binding acts on and keeps every other line verbatim (a parsed description serialises
back to the exact input). aiortc is used by the tests, as the source of real SDP and as a
differential oracle for the fields both parsers extract.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias

from dsip.errors import DsipError, SchemaError

__all__ = [
    "CODEC_RTPMAP",
    "MAX_CANDIDATES_PER_INFO",
    "MAX_SDP_CHARS",
    "RENEGOTIATION_TRANSITIONS",
    "TRANSPORT_ID",
    "AnswerSelection",
    "AnswerSelector",
    "ApplyCandidates",
    "ApplyRemote",
    "BufferedCandidates",
    "CandidateEmission",
    "CandidateExchange",
    "CandidateSide",
    "CodecEntry",
    "Direction",
    "DroppedBuffered",
    "DtlsRole",
    "DtlsRoles",
    "Fingerprint",
    "IceCandidate",
    "IceCredentials",
    "IgnoreReason",
    "Ignored",
    "LegOutcome",
    "LocalDescription",
    "MediaBindingError",
    "MediaDescriptor",
    "RejectUpdate",
    "RemoteEndOfCandidates",
    "Renegotiation",
    "RenegotiationEmission",
    "RenegotiationEvent",
    "RenegotiationMisuseError",
    "RenegotiationState",
    "Rollback",
    "RtpCodec",
    "RtpMap",
    "Sdp",
    "SdpSection",
    "SeedMediaMapping",
    "SendInfo",
    "UpdateOffered",
    "WebRtcDescription",
    "check_answer",
    "check_offer",
    "descriptors_from_sdp",
    "dtls_roles",
    "map_seed_invite",
    "parse_sdp",
    "rtpmap_for",
    "select_answer",
    "webrtc_transport",
]

TRANSPORT_ID: Final = "transport:webrtc"

#: An SDP rides inside one signed envelope, and a ws/1.0 frame is at most 65,536 bytes
#: (§13.2): anything longer cannot have arrived and is refused before any parsing.
MAX_SDP_CHARS: Final = 65_536

#: Appendix A: ``info.data.candidates`` holds at most 64 entries.
MAX_CANDIDATES_PER_INFO: Final = 64


# --- errors -----------------------------------------------------------------------------


class MediaBindingError(DsipError):
    """A WebRTC binding rule was broken. ``code`` is the ``binding-*`` verdict code,
    ``reason`` the wire token (offer → ``reject`` token, answer → ``media.failed``),
    ``detail`` the short text for the wire ``detail`` (B§2.1: which ``m=`` section) and
    ``section`` the 0-based ``m=`` index when one section is at fault."""

    default_code = "binding-sdp-invalid"
    default_reason = "media.unsupported"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        remote: bool | None = None,
        detail: str | None = None,
        section: int | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, remote=remote)
        self.detail: str = detail if detail is not None else message
        self.section: int | None = section


class RenegotiationMisuseError(MediaBindingError):
    """The local side drove :class:`Renegotiation` wrongly (a programming error, never a
    peer's fault): a re-offer that changes the ICE credentials (``binding-ice-restart``,
    B§5.4), or an action the current negotiation state does not allow."""

    default_code = "binding-renegotiation-state"
    default_reason = "x-dsip.engine-misuse"
    default_remote = False


class _Violation(Exception):
    """Internal: one binding rule failed; turned into a MediaBindingError per side."""

    def __init__(self, code: str, detail: str, section: int | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.section = section


# Reason per verdict code on an *offer* (B§8 "offer / update" rows); media.unsupported
# otherwise. Answers always get media.failed.
_OFFER_REASON: Final[Mapping[str, str]] = MappingProxyType(
    {
        "binding-sdp-missing": "media.offer-required",
        "binding-encryption": "media.encryption-required",
    }
)
_ANSWER_REASON: Final = "media.failed"


def _offer_error(v: _Violation) -> MediaBindingError:
    reason = _OFFER_REASON.get(v.code, "media.unsupported")
    return MediaBindingError(
        f"offer: {v.detail}", code=v.code, reason=reason, detail=v.detail, section=v.section
    )


def _answer_error(v: _Violation) -> MediaBindingError:
    return MediaBindingError(
        f"answer: {v.detail}",
        code=v.code,
        reason=_ANSWER_REASON,
        detail=v.detail,
        section=v.section,
    )


def _clip(text: str, limit: int = 40) -> str:
    """A hostile value, shortened for an error message."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# --- SDP model --------------------------------------------------------------------------


class Direction(StrEnum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


# RFC 3264 §6.1: which answer directions are valid for an offered one.
_ANSWER_DIRECTIONS: Final[Mapping[Direction, frozenset[Direction]]] = MappingProxyType(
    {
        Direction.SENDRECV: frozenset(Direction),
        Direction.SENDONLY: frozenset({Direction.RECVONLY, Direction.INACTIVE}),
        Direction.RECVONLY: frozenset({Direction.SENDONLY, Direction.INACTIVE}),
        Direction.INACTIVE: frozenset({Direction.INACTIVE}),
    }
)


@dataclass(frozen=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock>[/<params>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    params: str | None = None


@dataclass(frozen=True)
class Fingerprint:
    """``a=fingerprint:<hash> <hex:hex:...>`` (RFC 8122); ``algorithm`` lower-cased."""

    algorithm: str
    value: str

    @property
    def octets(self) -> int:
        return len(self.value.split(":"))


@dataclass(frozen=True)
class IceCredentials:
    """``a=ice-ufrag`` + ``a=ice-pwd`` (RFC 8839). Changing either is an ICE restart."""

    ufrag: str
    pwd: str


SdpLine: TypeAlias = tuple[str, str]  # (type letter, value)


@dataclass(frozen=True)
class SdpSection:
    """One ``m=`` section. Transport attributes are *resolved*: a section without its own
    ``a=ice-ufrag``/``a=ice-pwd``/``a=fingerprint``/``a=setup``/direction takes the
    session-level one (RFC 8839, RFC 8122, RFC 8866 §6.7)."""

    index: int
    kind: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]
    lines: tuple[SdpLine, ...]  # every line after the m= line, verbatim
    mid: str | None
    direction: Direction
    rtpmaps: tuple[RtpMap, ...]
    ice: IceCredentials | None
    fingerprints: tuple[Fingerprint, ...]
    setup: str | None
    rtcp_mux: bool
    bundle_only: bool
    candidates: tuple[str, ...]
    end_of_candidates: bool

    @property
    def rejected(self) -> bool:
        """Port 0 disables a section (RFC 3264 §5.1) unless it is ``bundle-only``
        (RFC 8843 §6), which rides on the BUNDLE transport and is live."""
        return self.port == 0 and not self.bundle_only

    @property
    def rtp(self) -> bool:
        return "RTP/" in self.proto

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        return next((r for r in self.rtpmaps if r.payload_type == payload_type), None)

    def m_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return f"m={self.kind} {port} {self.proto} {' '.join(self.formats)}"


@dataclass(frozen=True)
class Sdp:
    """A parsed session description. :meth:`serialize` rebuilds the text from the parsed
    parts; for any input :func:`parse_sdp` accepted it equals that input."""

    session_lines: tuple[SdpLine, ...]
    sections: tuple[SdpSection, ...]
    bundle_groups: tuple[tuple[str, ...], ...]
    ice_lite: bool

    @property
    def live_sections(self) -> tuple[SdpSection, ...]:
        """The sections ``media[]`` corresponds to, in order (B§2.1)."""
        return tuple(s for s in self.sections if not s.rejected)

    @property
    def ice_credentials(self) -> IceCredentials | None:
        """The credentials of the BUNDLE transport: the first live section's (B§2.2 puts
        every section in one BUNDLE group; WebRTC stacks repeat them on each section)."""
        live = self.live_sections
        return live[0].ice if live else None

    def serialize(self) -> str:
        out = [f"{t}={v}\r\n" for t, v in self.session_lines]
        for section in self.sections:
            out.append(section.m_line() + "\r\n")
            out.extend(f"{t}={v}\r\n" for t, v in section.lines)
        return "".join(out)

    def __str__(self) -> str:
        return self.serialize()


# --- SDP parser -------------------------------------------------------------------------

# RFC 8866 "token": the characters an attribute name, media kind or mid may use.
_WORD: Final = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_LINE_RE: Final = re.compile(r"([a-z])=(.*)")  # CR, LF and NUL are refused before
_ATTR_RE: Final = re.compile(rf"({_WORD})(?::(.*))?")
_ORIGIN_RE: Final = re.compile(r"\S+ [0-9]{1,20} [0-9]{1,20} IN IP[46] \S+")
_TIMING_RE: Final = re.compile(r"[0-9]{1,20} [0-9]{1,20}")
_CONNECTION_RE: Final = re.compile(r"IN IP[46] \S+")
_BANDWIDTH_RE: Final = re.compile(r"[A-Za-z0-9-]+:[0-9]{1,20}")
_MEDIA_RE: Final = re.compile(
    rf"({_WORD}) ([0-9]{{1,5}})(?:/([0-9]{{1,5}}))? ([A-Za-z0-9]+(?:/[A-Za-z0-9]+)*)( .+)"
)
_RTPMAP_RE: Final = re.compile(r"([0-9]{1,3}) ([A-Za-z0-9_.+-]+)/([0-9]{1,10})(?:/([!-~]+))?")
_FINGERPRINT_RE: Final = re.compile(r"([A-Za-z0-9-]+) ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){0,63})")
_UFRAG_RE: Final = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD_RE: Final = re.compile(r"[A-Za-z0-9+/]{22,256}")
# sdp_mid is at most 64 characters in info.data (Appendix A): a longer mid could never be
# named by a trickled candidate.
_MID_RE: Final = re.compile(_WORD)
_MAX_MID: Final = 64
_GROUP_RE: Final = re.compile(rf"({_WORD})((?: {_WORD})*)")
_CANDIDATE_RE: Final = re.compile(
    r"[A-Za-z0-9+/]{1,32} [0-9]{1,3} [A-Za-z]+ [0-9]{1,10} \S+ [0-9]{1,5} typ [a-z]+(?: \S+ \S+)*"
)
_SETUP_VALUES: Final = frozenset({"actpass", "active", "passive", "holdconn"})
_DIRECTIONS: Final = frozenset(d.value for d in Direction)

# RFC 8866 §5 field order. Session: v o s i u e p c b (t r)+ z k a; media: m i c b k a.
_SESSION_RANK: Final[Mapping[str, int]] = MappingProxyType(
    {"v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8}
    | {"t": 9, "r": 9, "z": 10, "k": 11, "a": 12}
)
_MEDIA_RANK: Final[Mapping[str, int]] = MappingProxyType({"i": 1, "c": 2, "b": 3, "k": 4, "a": 5})
_SESSION_ONCE: Final = frozenset("vosiuczk")
_MEDIA_ONCE: Final = frozenset("ik")

_FLAG_ATTRS: Final = _DIRECTIONS | {"rtcp-mux", "ice-lite", "end-of-candidates", "bundle-only"}
_VALUE_ATTRS: Final = frozenset(
    {"rtpmap", "mid", "group", "ice-ufrag", "ice-pwd", "fingerprint", "setup", "candidate"}
)
_SESSION_ONLY_ATTRS: Final = frozenset({"group", "ice-lite"})
_MEDIA_ONLY_ATTRS: Final = frozenset(
    {"rtpmap", "fmtp", "rtcp-fb", "mid", "rtcp-mux", "bundle-only", "candidate"}
)
# At most once per level (RFC 8839 §5, RFC 8842 §5, RFC 5888 §4, RFC 8866 §6.7); the four
# direction attributes count as one.
_ONCE_ATTRS: Final = frozenset(
    {"ice-ufrag", "ice-pwd", "setup", "mid", "rtcp-mux", "ice-lite", "direction"}
)


def _bad(why: str) -> MediaBindingError:
    return MediaBindingError(f"not SDP: {why}", code="binding-sdp-invalid", detail=why)


@dataclass
class _Level:
    """Attributes the binding reads, collected for one level (session or one section)."""

    direction: Direction | None = None
    ufrag: str | None = None
    pwd: str | None = None
    setup: str | None = None
    mid: str | None = None
    fingerprints: list[Fingerprint] = field(default_factory=list)
    rtpmaps: list[RtpMap] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    groups: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    seen_once: set[str] = field(default_factory=set)


def _read_attribute(value: str, level: _Level, where: str, *, session: bool) -> None:
    m = _ATTR_RE.fullmatch(value)
    if m is None:
        raise _bad(f"{where}: malformed attribute a={_clip(value)}")
    name, arg = m.group(1), m.group(2)
    if session and name in _MEDIA_ONLY_ATTRS:
        raise _bad(f"{where}: a={name} is a media-level attribute")
    if not session and name in _SESSION_ONLY_ATTRS:
        raise _bad(f"{where}: a={name} is a session-level attribute")
    once_key = "direction" if name in _DIRECTIONS else name
    if once_key in _ONCE_ATTRS:
        if once_key in level.seen_once:
            raise _bad(f"{where}: more than one a={once_key}")
        level.seen_once.add(once_key)
    if name in _FLAG_ATTRS:
        if arg is not None:
            raise _bad(f"{where}: a={name} takes no value")
        if name in _DIRECTIONS:
            level.direction = Direction(name)
        level.flags.add(name)
        return
    if name in _VALUE_ATTRS and not arg:
        raise _bad(f"{where}: a={name} needs a value")
    match name:
        case "rtpmap":
            _read_rtpmap(arg or "", level, where)
        case "fingerprint":
            fm = _FINGERPRINT_RE.fullmatch(arg or "")
            if fm is None:
                raise _bad(f"{where}: malformed a=fingerprint")
            level.fingerprints.append(Fingerprint(fm.group(1).lower(), fm.group(2).upper()))
        case "setup":
            if arg not in _SETUP_VALUES:
                raise _bad(f"{where}: a=setup:{_clip(arg or '')} is not an RFC 4145 role")
            level.setup = arg
        case "ice-ufrag":
            if _UFRAG_RE.fullmatch(arg or "") is None:
                raise _bad(f"{where}: a=ice-ufrag is not 4-256 ice-chars (RFC 8839)")
            level.ufrag = arg
        case "ice-pwd":
            if _PWD_RE.fullmatch(arg or "") is None:
                raise _bad(f"{where}: a=ice-pwd is not 22-256 ice-chars (RFC 8839)")
            level.pwd = arg
        case "mid":
            if _MID_RE.fullmatch(arg or "") is None or len(arg or "") > _MAX_MID:
                raise _bad(f"{where}: a=mid is not a token of at most 64 characters")
            level.mid = arg
        case "group":
            gm = _GROUP_RE.fullmatch(arg or "")
            if gm is None:
                raise _bad(f"{where}: malformed a=group")
            level.groups.append((gm.group(1), tuple(gm.group(2).split())))
        case "candidate":
            if _CANDIDATE_RE.fullmatch(arg or "") is None:
                raise _bad(f"{where}: malformed a=candidate")
            level.candidates.append(f"candidate:{arg}")


def _read_rtpmap(arg: str, level: _Level, where: str) -> None:
    rm = _RTPMAP_RE.fullmatch(arg)
    if rm is None:
        raise _bad(f"{where}: malformed a=rtpmap")
    pt = int(rm.group(1))
    if pt > 127:
        raise _bad(f"{where}: RTP payload type {pt} is above 127")
    if any(r.payload_type == pt for r in level.rtpmaps):
        raise _bad(f"{where}: two a=rtpmap for payload type {pt}")
    level.rtpmaps.append(RtpMap(pt, rm.group(2), int(rm.group(3)), rm.group(4)))


def _split_lines(text: str) -> list[SdpLine]:
    if not text.endswith("\r\n"):
        raise _bad("every line must end with CRLF (B§2)")
    out: list[SdpLine] = []
    for number, line in enumerate(text[:-2].split("\r\n"), start=1):
        if "\r" in line or "\n" in line or "\x00" in line:
            raise _bad(f"line {number}: bare CR, LF or NUL")
        m = _LINE_RE.fullmatch(line)
        if m is None:
            raise _bad(f"line {number}: not <type>=<value>: {_clip(line)}")
        out.append((m.group(1), m.group(2)))
    return out


def _check_field_line(kind: str, value: str, number: int) -> None:
    where = f"line {number}"
    match kind:
        case "v" if value != "0":
            raise _bad(f"{where}: only v=0 exists")
        case "o" if _ORIGIN_RE.fullmatch(value) is None:
            raise _bad(f"{where}: malformed o=")
        case "s" if not value:
            raise _bad(f"{where}: s= must not be empty")
        case "t" if _TIMING_RE.fullmatch(value) is None:
            raise _bad(f"{where}: malformed t=")
        case "c" if _CONNECTION_RE.fullmatch(value) is None:
            raise _bad(f"{where}: malformed c=")
        case "b" if _BANDWIDTH_RE.fullmatch(value) is None:
            raise _bad(f"{where}: malformed b=")


@dataclass
class _OpenSection:
    """A section being read: its m= line's fields, its lines so far, its attributes."""

    kind: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]
    lines: list[SdpLine] = field(default_factory=list)
    level: _Level = field(default_factory=_Level)


def _parse_m_line(value: str, index: int) -> _OpenSection:
    m = _MEDIA_RE.fullmatch(value)
    if m is None:
        raise _bad(f"m= section {index}: malformed m= line")
    kind, port, count, proto = m.group(1), int(m.group(2)), m.group(3), m.group(4)
    formats = tuple(m.group(5).split(" ")[1:])
    if port > 65535 or any(not f for f in formats):
        raise _bad(f"m= section {index}: malformed port or format list")
    if "RTP/" in proto:
        for f in formats:
            if not f.isascii() or not f.isdigit() or len(f) > 3 or int(f) > 127:
                raise _bad(f"m= section {index}: RTP format {_clip(f)} is not 0-127")
    return _OpenSection(kind, port, None if count is None else int(count), proto, formats)


def parse_sdp(text: object) -> Sdp:
    """Parse one SDP (RFC 8866) strictly; raise :class:`MediaBindingError`
    ``binding-sdp-invalid`` for anything that is not SDP, and nothing else."""
    if not isinstance(text, str):
        raise _bad(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_SDP_CHARS:
        raise _bad(f"{len(text)} characters, above the {MAX_SDP_CHARS} a frame can carry")
    lines = _split_lines(text)
    if [t for t, _ in lines[:3]] != ["v", "o", "s"]:
        raise _bad("must start with v=, o=, s=")
    session = _Level()
    session_lines: list[SdpLine] = []
    sections: list[_OpenSection] = []
    rank, seen, times, previous = 0, set[str](), 0, ""
    for number, (kind, value) in enumerate(lines, start=1):
        if kind == "m":
            sections.append(_parse_m_line(value, len(sections)))
            rank, seen = 0, set()
            continue
        if not sections:
            new_rank = _SESSION_RANK.get(kind)
            if new_rank is None or new_rank < rank:
                raise _bad(f"line {number}: {kind}= out of place at session level")
            if kind in _SESSION_ONCE and kind in seen:
                raise _bad(f"line {number}: more than one {kind}=")
            if kind == "r" and previous not in ("t", "r"):
                raise _bad(f"line {number}: r= must follow t=")
            _check_field_line(kind, value, number)
            times += kind == "t"
            if kind == "a":
                _read_attribute(value, session, f"line {number}", session=True)
            session_lines.append((kind, value))
        else:
            new_rank = _MEDIA_RANK.get(kind)
            where = f"m= section {len(sections) - 1}"
            if new_rank is None or new_rank < rank:
                raise _bad(f"line {number}: {kind}= out of place in {where}")
            if kind in _MEDIA_ONCE and kind in seen:
                raise _bad(f"line {number}: more than one {kind}= in {where}")
            _check_field_line(kind, value, number)
            if kind == "a":
                _read_attribute(value, sections[-1].level, where, session=False)
            sections[-1].lines.append((kind, value))
        rank, previous = new_rank, kind
        seen.add(kind)
    if times == 0:
        raise _bad("no t= line")
    built = tuple(_build_section(i, raw, session) for i, raw in enumerate(sections))
    return Sdp(
        session_lines=tuple(session_lines),
        sections=built,
        bundle_groups=tuple(items for sem, items in session.groups if sem == "BUNDLE"),
        ice_lite="ice-lite" in session.flags,
    )


def _build_section(index: int, raw: _OpenSection, session: _Level) -> SdpSection:
    level = raw.level
    ufrag = level.ufrag or session.ufrag
    pwd = level.pwd or session.pwd
    return SdpSection(
        index=index,
        kind=raw.kind,
        port=raw.port,
        port_count=raw.port_count,
        proto=raw.proto,
        formats=raw.formats,
        lines=tuple(raw.lines),
        mid=level.mid,
        direction=level.direction or session.direction or Direction.SENDRECV,
        rtpmaps=tuple(level.rtpmaps),
        ice=IceCredentials(ufrag, pwd) if ufrag and pwd else None,
        fingerprints=tuple(level.fingerprints or session.fingerprints),
        setup=level.setup or session.setup,
        rtcp_mux="rtcp-mux" in level.flags,
        bundle_only="bundle-only" in level.flags,
        candidates=tuple(level.candidates),
        end_of_candidates="end-of-candidates" in level.flags | session.flags,
    )


# --- codecs and descriptors -------------------------------------------------------------


@dataclass(frozen=True)
class RtpCodec:
    """What ``a=rtpmap`` must say for a DSIP codec id (B§3.4)."""

    kind: str
    encoding: str
    clock_rate: int
    channels: int | None = None  # the rtpmap encoding parameter, when one is mandatory

    @property
    def rtpmap(self) -> str:
        tail = "" if self.channels is None else f"/{self.channels}"
        return f"{self.encoding}/{self.clock_rate}{tail}"

    def matches(self, rtpmap: RtpMap) -> bool:
        if rtpmap.encoding.lower() != self.encoding.lower():
            return False
        if rtpmap.clock_rate != self.clock_rate:
            return False
        if self.channels is None:
            return rtpmap.params in (None, "1")
        return rtpmap.params == str(self.channels)


#: DSIP codec id → SDP rtpmap. The first four rows are the B§3.4 table; pcmu, pcma, g722
#: and vp9 extend it with the names their RTP payload formats fix (RFC 3551, RFC 7741 and
#: its VP9 sibling), because WebRTC stacks offer them and the descriptors built from such an
#: SDP must stay checkable. An id without a row cannot be shown consistent with an SDP.
CODEC_RTPMAP: Final[Mapping[str, RtpCodec]] = MappingProxyType(
    {
        "codec:audio/opus": RtpCodec("audio", "opus", 48000, 2),
        "codec:video/h264": RtpCodec("video", "H264", 90000),
        "codec:video/vp8": RtpCodec("video", "VP8", 90000),
        "codec:video/av1": RtpCodec("video", "AV1", 90000),
        "codec:audio/pcmu": RtpCodec("audio", "PCMU", 8000),
        "codec:audio/pcma": RtpCodec("audio", "PCMA", 8000),
        "codec:audio/g722": RtpCodec("audio", "G722", 8000),
        "codec:video/vp9": RtpCodec("video", "VP9", 90000),
    }
)


def rtpmap_for(codec_id: str) -> str | None:
    """The ``a=rtpmap`` encoding for a DSIP codec id (``opus/48000/2``), or ``None``."""
    codec = CODEC_RTPMAP.get(codec_id)
    return None if codec is None else codec.rtpmap


def _codec_id_for(kind: str, rtpmap: RtpMap) -> str | None:
    return next(
        (cid for cid, c in CODEC_RTPMAP.items() if c.kind == kind and c.matches(rtpmap)), None
    )


@dataclass(frozen=True)
class CodecEntry:
    """One ``codecs[]`` entry: the registered id plus its parameters, kept verbatim."""

    id: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_mapping(self) -> dict[str, Any]:
        return {"id": self.id, **self.params}


@dataclass(frozen=True)
class MediaDescriptor:
    """One ``media[]`` entry (§16.2). ``extra`` keeps members the binding does not read."""

    type: str
    direction: Direction
    codecs: tuple[CodecEntry, ...]
    purpose: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_mapping(cls, value: object, index: int = 0) -> MediaDescriptor:
        """Read a descriptor the schema stage has passed; anything else is a SchemaError."""
        where = f"media[{index}]"
        if not isinstance(value, Mapping):
            raise SchemaError(f"{where}: not an object")
        kind, direction, codecs = value.get("type"), value.get("direction"), value.get("codecs")
        if not isinstance(kind, str):
            raise SchemaError(f"{where}.type: not a string")
        if direction not in _DIRECTIONS:
            raise SchemaError(f"{where}.direction: not a direction")
        if not isinstance(codecs, Sequence) or isinstance(codecs, str) or not codecs:
            raise SchemaError(f"{where}.codecs: not a non-empty array")
        entries = []
        for j, codec in enumerate(codecs):
            if not isinstance(codec, Mapping) or not isinstance(codec.get("id"), str):
                raise SchemaError(f"{where}.codecs[{j}]: not a codec object with an id")
            params = {str(k): v for k, v in codec.items() if k != "id"}
            entries.append(CodecEntry(codec["id"], MappingProxyType(params)))
        purpose = value.get("purpose")
        if purpose is not None and not isinstance(purpose, str):
            raise SchemaError(f"{where}.purpose: not a string")
        known = {"type", "direction", "codecs", "purpose"}
        extra = {str(k): v for k, v in value.items() if k not in known}
        return cls(kind, Direction(direction), tuple(entries), purpose, MappingProxyType(extra))

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "direction": str(self.direction),
            "codecs": [c.to_mapping() for c in self.codecs],
        }
        if self.purpose is not None:
            out["purpose"] = self.purpose
        out.update(self.extra)
        return out


def _descriptors(value: object) -> tuple[MediaDescriptor, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise SchemaError("media: not an array")
    return tuple(MediaDescriptor.from_mapping(m, i) for i, m in enumerate(value))


def descriptors_from_sdp(
    sdp: Sdp | str, *, supported: Iterable[str] | None = None
) -> tuple[MediaDescriptor, ...]:
    """SDP → descriptors: one per live ``m=`` section, in order (B§2.1), with the codec ids
    of the section's rtpmaps in ``m=`` format order. Payload types DSIP does not describe
    (RTX, RED, telephone-event, ...) and ids outside ``supported`` are left out. A live
    section left with no codec, or a non-audio/video section, cannot be described:
    :class:`MediaBindingError` (``remote=False``: this is our own stack's SDP)."""
    parsed = parse_sdp(sdp) if isinstance(sdp, str) else sdp
    allowed = None if supported is None else frozenset(supported)
    out = []
    for section in parsed.live_sections:
        if section.kind not in ("audio", "video"):
            raise MediaBindingError(
                f"m= section {section.index} is {section.kind}: binding 1.0 has audio/video only",
                code="binding-extra-section",
                remote=False,
                section=section.index,
            )
        ids: list[str] = []
        for fmt in section.formats:
            rtpmap = section.rtpmap(int(fmt)) if fmt.isdigit() else None
            cid = None if rtpmap is None else _codec_id_for(section.kind, rtpmap)
            if cid is not None and cid not in ids and (allowed is None or cid in allowed):
                ids.append(cid)
        if not ids:
            raise MediaBindingError(
                f"m= section {section.index} has no codec DSIP can name",
                code="binding-codec-missing",
                remote=False,
                section=section.index,
            )
        out.append(
            MediaDescriptor(section.kind, section.direction, tuple(CodecEntry(c) for c in ids))
        )
    return tuple(out)


def webrtc_transport(sdp: str, *, offer: bool) -> dict[str, Any]:
    """The ``transports[]`` member carrying ``sdp`` (B§2); ``ice`` is required on offers."""
    return (
        {"id": TRANSPORT_ID, "ice": "trickle", "sdp": sdp}
        if offer
        else {
            "id": TRANSPORT_ID,
            "sdp": sdp,
        }
    )


# --- offer and answer checks (B§2, B§2.1, B§2.2, B§3.3, B§7) -------------------------------

# DTLS-SRTP profiles (RFC 5764 §8, RFC 7850). Anything else on an RTP section — RTP/AVP(F)
# in the clear, or SDES-keyed RTP/SAVP(F) — is not the encryption this binding requires.
_DTLS_SRTP_PROTOS: Final = frozenset(
    {"UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP", "TCP/DTLS/RTP/SAVPF", "TCP/DTLS/RTP/SAVP"}
)
_MEDIA_KINDS: Final = frozenset({"audio", "video"})


@dataclass(frozen=True)
class WebRtcDescription:
    """A checked offer or answer: its descriptors, the transport member and parsed SDP."""

    media: tuple[MediaDescriptor, ...]
    transport: Mapping[str, Any]
    sdp: Sdp


def _webrtc_transport_of(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    transports = payload.get("transports")
    if not isinstance(transports, Sequence) or isinstance(transports, str):
        raise SchemaError("transports: not an array")
    found = [t for t in transports if isinstance(t, Mapping) and t.get("id") == TRANSPORT_ID]
    if len(found) > 1:
        raise _Violation("binding-transport-duplicate", "two transport:webrtc descriptors")
    return found[0] if found else None


def _transport_sdp(transport: Mapping[str, Any], *, offer: bool) -> Sdp:
    ice = transport.get("ice")
    if offer and ice != "trickle":
        raise _Violation("binding-ice-mode", f"ice {_clip(str(ice))} is not trickle (B§2)")
    if not offer and ice is not None and ice != "trickle":
        raise _Violation("binding-ice-mode", f"ice {_clip(str(ice))} is not trickle (B§2)")
    if "sdp" not in transport:
        raise _Violation("binding-sdp-missing", "transport:webrtc without sdp (B§2)")
    try:
        return parse_sdp(transport["sdp"])
    except MediaBindingError as exc:
        raise _Violation("binding-sdp-invalid", exc.detail) from None


def _check_structure(sdp: Sdp) -> None:
    for s in sdp.sections:
        if s.kind not in _MEDIA_KINDS:
            raise _Violation(
                "binding-extra-section",
                f"m= section {s.index} is m={_clip(s.kind, 16)}: binding 1.0 has no other sections",
                s.index,
            )
    for s in sdp.live_sections:
        if s.proto not in _DTLS_SRTP_PROTOS:
            raise _Violation(
                "binding-encryption",
                f"m= section {s.index} uses {_clip(s.proto, 24)}, not DTLS-SRTP (B§7)",
                s.index,
            )


def _check_consistency(media: tuple[MediaDescriptor, ...], sdp: Sdp) -> None:
    live = sdp.live_sections
    if len(live) != len(media):
        raise _Violation(
            "binding-section-count",
            f"{len(media)} media descriptors but {len(live)} live m= sections (B§2.1)",
        )
    for i, (d, s) in enumerate(zip(media, live, strict=True)):
        where = f"m= section {s.index}"
        if d.type != s.kind:
            raise _Violation(
                "binding-kind-mismatch", f"{where} is {s.kind}, media[{i}] is {d.type}", s.index
            )
        if d.direction is not s.direction:
            raise _Violation(
                "binding-direction-mismatch",
                f"{where} is {s.direction}, media[{i}] is {d.direction}",
                s.index,
            )
        for codec in d.codecs:
            want = CODEC_RTPMAP.get(codec.id)
            if want is None:
                raise _Violation(
                    "binding-codec-missing",
                    f"media[{i}] codec {_clip(codec.id)} has no SDP mapping (B§3.4)",
                    s.index,
                )
            offered = (s.rtpmap(int(f)) for f in s.formats if f.isdigit())
            if not any(r is not None and want.matches(r) for r in offered):
                raise _Violation(
                    "binding-codec-missing", f"{where} has no a=rtpmap {want.rtpmap}", s.index
                )


def _check_profile(sdp: Sdp, *, offer: bool) -> None:
    if sdp.ice_lite:
        raise _Violation("binding-ice-mode", "a=ice-lite: endpoints use full ICE (B§2.2)")
    live = sdp.live_sections
    mids = [s.mid for s in live]
    bundled = any(all(m is not None and m in group for m in mids) for group in sdp.bundle_groups)
    if live and not bundled:
        raise _Violation(
            "binding-bundle-missing", "a=group:BUNDLE must cover every live m= section (B§2.2)"
        )
    for s in live:
        where = f"m= section {s.index}"
        if not s.rtcp_mux:
            raise _Violation("binding-rtcp-mux-missing", f"{where} has no a=rtcp-mux", s.index)
        if not any(f.algorithm == "sha-256" and f.octets == 32 for f in s.fingerprints):
            raise _Violation(
                "binding-fingerprint-missing", f"{where} has no a=fingerprint:sha-256", s.index
            )
        if s.ice is None:
            raise _Violation(
                "binding-ice-credentials-missing", f"{where} lacks a=ice-ufrag/a=ice-pwd", s.index
            )
        valid = ("actpass",) if offer else ("active", "passive")
        if s.setup not in valid:
            role = "offer" if offer else "answer"
            raise _Violation(
                "binding-setup-invalid",
                f"{where}: a=setup:{s.setup} in an {role} (B§3.3 wants {'/'.join(valid)})",
                s.index,
            )


def check_offer(payload: Mapping[str, Any]) -> WebRtcDescription | None:
    """Check an ``invite``/``update`` body (``media``, ``transports``) against B§2–B§3.3.

    ``None`` when no ``transport:webrtc`` is offered (another binding's business, B§1).
    A violation raises :class:`MediaBindingError` with the ``reject`` reason token."""
    try:
        transport = _webrtc_transport_of(payload)
        if transport is None:
            return None
        media = _descriptors(payload.get("media"))
        sdp = _transport_sdp(transport, offer=True)
        _check_structure(sdp)
        _check_consistency(media, sdp)
        _check_profile(sdp, offer=True)
    except _Violation as v:
        raise _offer_error(v) from None
    return WebRtcDescription(media, transport, sdp)


def check_answer(offer: WebRtcDescription, payload: Mapping[str, Any]) -> WebRtcDescription | None:
    """Check an ``answer`` body against the (already checked) offer it selects from.

    The SDP must be an RFC 3264 answer to the offer's SDP (B§3.1): the same ``m=`` sections
    in the same order, kinds unchanged, nothing the offer disabled re-enabled, directions
    valid answers to the offered ones; and consistent with the answer's own descriptors
    (B§2.1), in profile (B§2.2), ``a=setup`` active or passive (B§3.3). A violation raises
    :class:`MediaBindingError` with ``media.failed``: the initiator sends ``bye`` (B§8).
    ``None`` when the answer selected another transport than ``transport:webrtc``."""
    try:
        transport = _webrtc_transport_of(payload)
        if transport is None:
            return None
        media = _descriptors(payload.get("media"))
        sdp = _transport_sdp(transport, offer=False)
        _check_structure(sdp)
        _check_mirrors_offer(offer.sdp, sdp)
        _check_consistency(media, sdp)
        _check_profile(sdp, offer=False)
    except _Violation as v:
        raise _answer_error(v) from None
    return WebRtcDescription(media, transport, sdp)


def _check_mirrors_offer(offer: Sdp, answer: Sdp) -> None:
    if len(answer.sections) != len(offer.sections):
        raise _Violation(
            "binding-section-count",
            f"answer has {len(answer.sections)} m= sections, the offer {len(offer.sections)}",
        )
    for o, a in zip(offer.sections, answer.sections, strict=True):
        where = f"m= section {a.index}"
        if o.kind != a.kind:
            raise _Violation(
                "binding-kind-mismatch", f"{where} is {a.kind} in the answer, {o.kind} offered"
            )
        if o.rejected and not a.rejected:
            raise _Violation("binding-section-count", f"{where} was disabled in the offer", a.index)
        if not a.rejected and a.direction not in _ANSWER_DIRECTIONS[o.direction]:
            raise _Violation(
                "binding-direction-mismatch",
                f"{where}: {a.direction} does not answer {o.direction} (RFC 3264 §6.1)",
                a.index,
            )


# --- DTLS roles (B§3.3) ------------------------------------------------------------------


class DtlsRole(StrEnum):
    CLIENT = "client"  # initiates the DTLS handshake
    SERVER = "server"


@dataclass(frozen=True)
class DtlsRoles:
    offerer: DtlsRole
    answerer: DtlsRole


def dtls_roles(offer_setup: str, answer_setup: str) -> DtlsRoles:
    """Who is DTLS client and server, from the ``a=setup`` of offer and answer (B§3.3).

    The offer MUST be ``actpass`` (else ``media.unsupported``: the offer is refused); the
    answer ``active`` (answerer is client) or ``passive`` (answerer is server); ``actpass``
    and ``holdconn`` in an answer are failures of that leg (``media.failed``)."""
    if offer_setup != "actpass":
        raise MediaBindingError(
            f"offer a=setup:{_clip(offer_setup)} is not actpass",
            code="binding-setup-invalid",
            reason="media.unsupported",
        )
    if answer_setup == "active":
        return DtlsRoles(offerer=DtlsRole.SERVER, answerer=DtlsRole.CLIENT)
    if answer_setup == "passive":
        return DtlsRoles(offerer=DtlsRole.CLIENT, answerer=DtlsRole.SERVER)
    raise MediaBindingError(
        f"answer a=setup:{_clip(answer_setup)} is neither active nor passive",
        code="binding-setup-invalid",
        reason=_ANSWER_REASON,
    )


# --- trickle candidates (B§4) ------------------------------------------------------------


@dataclass(frozen=True)
class IceCandidate:
    """One ``info.data.candidates[]`` entry (Appendix A)."""

    candidate: str
    sdp_mid: str
    sdp_m_line_index: int | None = None

    @classmethod
    def from_mapping(cls, value: object) -> IceCandidate:
        """Read an entry; anything off Appendix A (including ``username_fragment``, which
        binding 1.0 forbids, B§4.2) is a SchemaError."""
        if not isinstance(value, Mapping) or not set(value) <= {
            "candidate",
            "sdp_mid",
            "sdp_m_line_index",
        }:
            raise SchemaError("info.data.candidates[]: not a candidate object (Appendix A)")
        cand, mid, index = (
            value.get("candidate"),
            value.get("sdp_mid"),
            value.get("sdp_m_line_index"),
        )
        if not isinstance(cand, str) or not cand.startswith("candidate:") or len(cand) > 512:
            raise SchemaError("info.data.candidates[].candidate: not a candidate attribute")
        if not isinstance(mid, str) or len(mid) > 64:
            raise SchemaError("info.data.candidates[].sdp_mid: required string, at most 64")
        if index is not None and (type(index) is not int or index < 0):
            raise SchemaError("info.data.candidates[].sdp_m_line_index: not an integer >= 0")
        return cls(cand, mid, index)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": self.candidate, "sdp_mid": self.sdp_mid}
        if self.sdp_m_line_index is not None:
            out["sdp_m_line_index"] = self.sdp_m_line_index
        return out


class CandidateSide(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class IgnoreReason(StrEnum):
    AFTER_END = "after-end"  # the sender already said end_of_candidates (B§4.2)
    NOT_PARTY = "not-party"  # not the device party to the media session (B§4.4)
    ENDED = "ended"  # the session is over (B§4.3 rule 3)
    NO_PENDING_OFFER = "no-pending-offer"  # an answer/reject with no re-offer outstanding


@dataclass(frozen=True)
class BufferedCandidates:
    """Held back (local: not ACTIVE yet; remote: description not applied); ``total`` is how
    many that side now holds."""

    side: CandidateSide
    total: int


@dataclass(frozen=True)
class SendInfo:
    """Send one ``info`` with ``about: transport:webrtc`` and :meth:`data` (B§4.2)."""

    candidates: tuple[IceCandidate, ...]
    end_of_candidates: bool

    def data(self) -> dict[str, Any]:
        return {
            "candidates": [c.to_mapping() for c in self.candidates],
            "end_of_candidates": self.end_of_candidates,
        }


@dataclass(frozen=True)
class ApplyCandidates:
    """Add these remote candidates to the peer connection, in this order (B§4.3 rule 4)."""

    candidates: tuple[IceCandidate, ...]


@dataclass(frozen=True)
class RemoteEndOfCandidates:
    """The peer finished gathering: signal end-of-candidates to the ICE agent."""


@dataclass(frozen=True)
class Ignored:
    """An event silently ignored, with why."""

    reason: IgnoreReason


@dataclass(frozen=True)
class DroppedBuffered:
    """Buffered candidates discarded unapplied (session ended or offer superseded)."""

    count: int


CandidateEmission: TypeAlias = (
    BufferedCandidates
    | SendInfo
    | ApplyCandidates
    | RemoteEndOfCandidates
    | Ignored
    | DroppedBuffered
)


class CandidateExchange:
    """Trickle ICE of one session over ``info`` (B§4.2–B§4.4), one local description.

    ``peer`` is the one device whose candidates count: the signer of the accepted
    ``answer`` (initiator) or of the ``invite`` (responder). Local candidates are held
    until :meth:`active` — the ACTIVE transition, the only state ``info`` is valid in
    (§12.12) — then sent in as few ``info`` as Appendix A allows (64 a batch); after it each
    call to :meth:`local_candidates` is one ``info`` (an adapter that coalesces the stack's
    candidates for 50 ms, B§9, passes them in one call). ``end_of_candidates: true`` is sent
    exactly once. Remote candidates are held until :meth:`remote_description_applied` and
    then applied in arrival order; anything after the peer's end marker, from another
    device, or after :meth:`session_end` is ignored."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._active = False
        self._ended = False
        self._local_buffer: list[IceCandidate] = []
        self._local_complete = False  # our stack finished gathering
        self._local_end_sent = False
        self._remote_applied = False
        self._remote_buffer: list[IceCandidate] = []
        self._remote_end = False  # the peer's end marker arrived (buffered or applied)

    @property
    def ended(self) -> bool:
        return self._ended

    # local side
    def local_candidate(self, candidate: IceCandidate) -> list[CandidateEmission]:
        return self.local_candidates([candidate])

    def local_candidates(self, candidates: Sequence[IceCandidate]) -> list[CandidateEmission]:
        if self._ended:
            return [Ignored(IgnoreReason.ENDED)]
        if self._local_complete:
            return [Ignored(IgnoreReason.AFTER_END)]
        if not self._active:
            self._local_buffer.extend(candidates)
            return [BufferedCandidates(CandidateSide.LOCAL, len(self._local_buffer))]
        return self._send(list(candidates), end=False)

    def gathering_complete(self) -> list[CandidateEmission]:
        if self._ended:
            return [Ignored(IgnoreReason.ENDED)]
        if self._local_complete:
            return []  # "true exactly once per local description" (B§4.2)
        self._local_complete = True
        if not self._active:
            return []  # rides with the buffered candidates on ACTIVE
        return self._send([], end=True)

    def active(self) -> list[CandidateEmission]:
        """The session reached ACTIVE: flush what was gathered meanwhile (B§4.3 rules 1, 2)."""
        if self._ended:
            return [Ignored(IgnoreReason.ENDED)]
        if self._active:
            return []
        self._active = True
        held, self._local_buffer = self._local_buffer, []
        if not held and not self._local_complete:
            return []
        return self._send(held, end=self._local_complete)

    def _send(self, candidates: list[IceCandidate], *, end: bool) -> list[CandidateEmission]:
        if not candidates and not end:
            return []
        batches = [
            candidates[i : i + MAX_CANDIDATES_PER_INFO]
            for i in range(0, len(candidates), MAX_CANDIDATES_PER_INFO)
        ] or [[]]
        if end:
            self._local_end_sent = True
        last = len(batches) - 1
        return [SendInfo(tuple(b), end and i == last) for i, b in enumerate(batches)]

    # remote side
    def remote_description_applied(self) -> list[CandidateEmission]:
        if self._ended:
            return [Ignored(IgnoreReason.ENDED)]
        if self._remote_applied:
            return []
        self._remote_applied = True
        held, self._remote_buffer = self._remote_buffer, []
        out: list[CandidateEmission] = [ApplyCandidates(tuple(held))] if held else []
        if self._remote_end:
            out.append(RemoteEndOfCandidates())
        return out

    def remote_info(
        self, sender: str, candidates: Sequence[IceCandidate], end_of_candidates: bool
    ) -> list[CandidateEmission]:
        """A verified ``info`` (``about: transport:webrtc``) from ``sender`` (B§4.2, B§4.4)."""
        if self._ended:
            return [Ignored(IgnoreReason.ENDED)]
        if sender != self.peer:
            return [Ignored(IgnoreReason.NOT_PARTY)]
        if self._remote_end:
            return [Ignored(IgnoreReason.AFTER_END)]  # a repeated true is tolerated, too
        self._remote_end = end_of_candidates
        if not self._remote_applied:
            self._remote_buffer.extend(candidates)
            return [BufferedCandidates(CandidateSide.REMOTE, len(self._remote_buffer))]
        out: list[CandidateEmission] = [ApplyCandidates(tuple(candidates))] if candidates else []
        if end_of_candidates:
            out.append(RemoteEndOfCandidates())
        return out

    def remote_offer_superseded(self) -> list[CandidateEmission]:
        """The remote description buffered candidates belonged to was replaced before it
        was applied: drop them (B§4.3 rule 3) and wait for the new one."""
        if self._ended:
            return [Ignored(IgnoreReason.ENDED)]
        dropped, self._remote_buffer = len(self._remote_buffer), []
        self._remote_applied = False
        self._remote_end = False
        return [DroppedBuffered(dropped)] if dropped else []

    def session_end(self) -> list[CandidateEmission]:
        """The session ended: everything still buffered is dropped, never applied."""
        if self._ended:
            return []
        self._ended = True
        dropped = len(self._local_buffer) + len(self._remote_buffer)
        self._local_buffer, self._remote_buffer = [], []
        return [DroppedBuffered(dropped)] if dropped else []


# --- renegotiation (B§5) -----------------------------------------------------------------


class RenegotiationState(StrEnum):
    """JSEP signalling states, seen from the binding."""

    STABLE = "stable"  # current local and remote descriptions agree
    LOCAL_OFFER = "have-local-offer"  # our re-offer is pending
    REMOTE_OFFER = "have-remote-offer"  # their re-offer awaits our decision


class RenegotiationEvent(StrEnum):
    LOCAL_REOFFER = "local:reoffer"
    ANSWER_UPDATE = "local:answer_update"
    REJECT_UPDATE = "local:reject_update"
    REMOTE_REOFFER = "remote:reoffer"
    REMOTE_ANSWER = "remote:answer"
    REMOTE_REJECT = "remote:reject"  # reject of our update, session.glare included


@dataclass(frozen=True)
class LocalDescription:
    """The local description is now ``pending`` (a re-offer set) or ``current`` again."""

    which: str


@dataclass(frozen=True)
class ApplyRemote:
    """Apply to the peer connection: ``answer`` (their answer to our re-offer) or
    ``remote-offer+answer`` (their re-offer, then our answer to it)."""

    what: str


@dataclass(frozen=True)
class Rollback:
    """Roll the local description back to the last negotiated one (B§5.2)."""


@dataclass(frozen=True)
class RejectUpdate:
    """Send ``reject`` for the peer's ``update``; the session continues (B§8)."""

    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class UpdateOffered:
    """A re-offer awaits the local decision (answer or reject); nothing applied yet."""


RenegotiationEmission: TypeAlias = (
    LocalDescription | ApplyRemote | Rollback | RejectUpdate | UpdateOffered | Ignored
)


@dataclass(frozen=True)
class _Input:
    """What an event carries: the offer's ICE credentials and SDP, or a reject reason."""

    ice: IceCredentials | None = None
    sdp: str | None = None
    reason: str | None = None


_Handler: TypeAlias = Callable[["Renegotiation", _Input], list[RenegotiationEmission]]


class Renegotiation:
    """Re-offers through ``update`` on one peer connection (B§5), as the transition table
    :data:`RENEGOTIATION_TRANSITIONS`: ``(state, event) → handler``.

    A pair with no row is, for a *remote* answer or reject, silently ignored
    (``no-pending-offer``: a late or duplicate message); for anything else it is a
    :class:`RenegotiationMisuseError`, since the session engine (§12.8: one outstanding
    update, glare by smaller id) decides what reaches this object. The ICE credentials of
    both sides are fixed for the session (B§5.4): our own re-offer with other credentials
    raises ``binding-ice-restart``; the peer's is refused ``media.unsupported`` /
    ``ice-restart`` and changes nothing.

    ``current_local``/``pending_local``/``pending_remote`` hold the SDP texts when the
    caller passes them, so an adapter can re-apply the last negotiated description on
    stacks without native rollback (B§5.2)."""

    def __init__(
        self,
        local_ice: IceCredentials,
        remote_ice: IceCredentials,
        *,
        current_local: str | None = None,
    ) -> None:
        self.local_ice = local_ice
        self.remote_ice = remote_ice
        self.state = RenegotiationState.STABLE
        self.current_local = current_local
        self.pending_local: str | None = None
        self.pending_remote: str | None = None

    def _dispatch(
        self, event: RenegotiationEvent, data: _Input = _Input()
    ) -> list[RenegotiationEmission]:
        handler = RENEGOTIATION_TRANSITIONS.get((self.state, event))
        if handler is not None:
            return handler(self, data)
        if event in (RenegotiationEvent.REMOTE_ANSWER, RenegotiationEvent.REMOTE_REJECT):
            return [Ignored(IgnoreReason.NO_PENDING_OFFER)]
        raise RenegotiationMisuseError(f"{event} is not allowed in state {self.state} (§12.8)")

    def local_reoffer(
        self, ice: IceCredentials, sdp: str | None = None
    ) -> list[RenegotiationEmission]:
        """We set a re-offer as our local description, to be sent in ``update`` (B§5.1)."""
        return self._dispatch(RenegotiationEvent.LOCAL_REOFFER, _Input(ice=ice, sdp=sdp))

    def remote_answer(self) -> list[RenegotiationEmission]:
        """The peer's ``answer`` to our ``update`` (already checked with
        :func:`check_answer`) arrived."""
        return self._dispatch(RenegotiationEvent.REMOTE_ANSWER)

    def remote_reject(self) -> list[RenegotiationEmission]:
        """The peer rejected our ``update`` (or it lost glare, ``session.glare``)."""
        return self._dispatch(RenegotiationEvent.REMOTE_REJECT)

    def remote_reoffer(
        self, ice: IceCredentials, sdp: str | None = None
    ) -> list[RenegotiationEmission]:
        """The peer's ``update`` (already checked with :func:`check_offer`) arrived."""
        return self._dispatch(RenegotiationEvent.REMOTE_REOFFER, _Input(ice=ice, sdp=sdp))

    def answer_update(self) -> list[RenegotiationEmission]:
        """We answer the pending re-offer: apply it, then our answer (B§5.2)."""
        return self._dispatch(RenegotiationEvent.ANSWER_UPDATE)

    def reject_update(self, reason: str) -> list[RenegotiationEmission]:
        """We reject the pending re-offer; the peer connection stays untouched (B§5.2)."""
        return self._dispatch(RenegotiationEvent.REJECT_UPDATE, _Input(reason=reason))

    # handlers: each sets the next state and returns the emissions
    def _on_local_reoffer(self, data: _Input) -> list[RenegotiationEmission]:
        if data.ice != self.local_ice:
            raise RenegotiationMisuseError(
                "a re-offer MUST keep the ICE credentials", code="binding-ice-restart"
            )
        self.state, self.pending_local = RenegotiationState.LOCAL_OFFER, data.sdp
        return [LocalDescription("pending")]

    def _on_remote_answer(self, data: _Input) -> list[RenegotiationEmission]:
        self.state = RenegotiationState.STABLE
        self.current_local, self.pending_local = self.pending_local, None
        return [ApplyRemote("answer"), LocalDescription("current")]

    def _on_remote_reject(self, data: _Input) -> list[RenegotiationEmission]:
        self.state, self.pending_local = RenegotiationState.STABLE, None
        return [Rollback(), LocalDescription("current")]

    def _on_remote_reoffer(self, data: _Input) -> list[RenegotiationEmission]:
        if data.ice != self.remote_ice:
            return [RejectUpdate("media.unsupported", "ice-restart")]
        self.state, self.pending_remote = RenegotiationState.REMOTE_OFFER, data.sdp
        return [UpdateOffered()]

    def _on_answer_update(self, data: _Input) -> list[RenegotiationEmission]:
        self.state, self.pending_remote = RenegotiationState.STABLE, None
        return [ApplyRemote("remote-offer+answer")]

    def _on_reject_update(self, data: _Input) -> list[RenegotiationEmission]:
        self.state, self.pending_remote = RenegotiationState.STABLE, None
        return [RejectUpdate(data.reason or "media.unsupported")]


_S, _E = RenegotiationState, RenegotiationEvent

#: ``(state, event) → handler``; see :class:`Renegotiation` for what a missing row means.
RENEGOTIATION_TRANSITIONS: Final[
    Mapping[tuple[RenegotiationState, RenegotiationEvent], _Handler]
] = MappingProxyType(
    {
        (_S.STABLE, _E.LOCAL_REOFFER): Renegotiation._on_local_reoffer,
        (_S.STABLE, _E.REMOTE_REOFFER): Renegotiation._on_remote_reoffer,
        (_S.LOCAL_OFFER, _E.REMOTE_ANSWER): Renegotiation._on_remote_answer,
        (_S.LOCAL_OFFER, _E.REMOTE_REJECT): Renegotiation._on_remote_reject,
        (_S.REMOTE_OFFER, _E.ANSWER_UPDATE): Renegotiation._on_answer_update,
        (_S.REMOTE_OFFER, _E.REJECT_UPDATE): Renegotiation._on_reject_update,
    }
)


# --- one answer per offer (B§6.1) --------------------------------------------------------


@dataclass(frozen=True)
class LegOutcome:
    """What happened to one forked leg's answer: applied, or released with ``bye``."""

    leg: str
    applied: bool = False
    bye: str | None = None  # the bye reason
    code: str | None = None  # why the answer was invalid (bye media.failed only)


@dataclass(frozen=True)
class AnswerSelection:
    applied: str | None
    legs: tuple[LegOutcome, ...]


class AnswerSelector:
    """Apply exactly one answer to an offer across forked legs (B§6.1), in arrival order:
    the first *valid* answer is applied; an invalid one before it is released with
    ``bye media.failed``; every answer after it with ``bye session.already-answered``
    (not even checked: nothing of it will ever be applied)."""

    def __init__(self, offer: WebRtcDescription) -> None:
        self.offer = offer
        self.applied: str | None = None
        self.applied_description: WebRtcDescription | None = None

    def receive(self, answer: Mapping[str, Any]) -> LegOutcome:
        leg = answer.get("from")
        if not isinstance(leg, str):
            raise SchemaError("answer.from: not a string")
        if self.applied is not None:
            return LegOutcome(leg, bye="session.already-answered")
        try:
            description = check_answer(self.offer, answer)
        except MediaBindingError as exc:
            return LegOutcome(leg, bye=exc.reason, code=exc.code)
        if description is None:
            return LegOutcome(leg, bye=_ANSWER_REASON, code="binding-not-webrtc")
        self.applied, self.applied_description = leg, description
        return LegOutcome(leg, applied=True)


def select_answer(
    offer: WebRtcDescription, answers: Iterable[Mapping[str, Any]]
) -> AnswerSelection:
    """Run :class:`AnswerSelector` over answers in arrival order."""
    selector = AnswerSelector(offer)
    legs = tuple(selector.receive(a) for a in answers)
    return AnswerSelection(selector.applied, legs)


# --- the seed's invite fields (seed §6.1) ------------------------------------------------


@dataclass(frozen=True)
class SeedMediaMapping:
    """A seed-format invite's media fields as v0.7 ``media``/``transports``.

    ``dropped_codecs`` lists the seed codec names negotiated away (unknown to the
    registry mapping, or not ``supported``). ``focus_hints`` are the seed's
    ``net.hints.sfu`` URLs: v0.7 has no descriptor for them — a group focus is a DSIP
    endpoint with its own identity that one invites (§17.4) — so they are handed to the
    caller, not put on the wire."""

    media: tuple[MediaDescriptor, ...]
    transports: tuple[Mapping[str, Any], ...]
    dropped_codecs: tuple[str, ...]
    focus_hints: tuple[str, ...]

    def payload_fields(self) -> dict[str, Any]:
        return {
            "media": [m.to_mapping() for m in self.media],
            "transports": [dict(t) for t in self.transports],
        }


def _seed_codec_id(name: object) -> str | None:
    """``opus/48000/2`` (rtpmap form) or an already-registered id → the DSIP id."""
    if not isinstance(name, str):
        return None
    if name in CODEC_RTPMAP:
        return name
    m = re.fullmatch(r"([A-Za-z0-9_.+-]{1,32})/([0-9]{1,10})(?:/([0-9]{1,3}))?", name)
    if m is None:
        return None
    rtpmap = RtpMap(0, m.group(1), int(m.group(2)), m.group(3))
    return next((cid for cid, c in CODEC_RTPMAP.items() if c.matches(rtpmap)), None)


def map_seed_invite(
    invite: Mapping[str, Any], *, supported: Iterable[str] = tuple(CODEC_RTPMAP)
) -> SeedMediaMapping:
    """Map the seed's ``cap``, ``media.{sdp,codecs}`` and ``net.hints.sfu`` onto v0.7.

    Codecs: each seed name is mapped through :data:`CODEC_RTPMAP`; names it does not know,
    ids outside ``supported`` and malformed entries are dropped (reported in
    ``dropped_codecs``) — never an exception. With a parseable ``media.sdp`` the
    descriptors follow its live ``m=`` sections (kind, direction, order, B§2.1), keeping
    the codecs both the seed list (when given) and the section's rtpmaps name; without an
    SDP they are grouped by kind, ``sendrecv``, audio first. ``transport:webrtc`` is
    offered only when ``cap.features`` names ``webrtc`` and an SDP is present.

    Raises :class:`MediaBindingError` ``media.unsupported`` when nothing is left to offer
    (no codec in common, or an SDP section with none), and ``binding-sdp-invalid`` for a
    ``media.sdp`` that is not SDP."""
    allowed = frozenset(supported)
    media_field = invite.get("media")
    media_obj: Mapping[str, Any] = media_field if isinstance(media_field, Mapping) else {}
    raw_codecs = media_obj.get("codecs")
    names = list(raw_codecs) if isinstance(raw_codecs, list) else []
    wanted: list[str] = []
    dropped: list[str] = []
    for name in names:
        cid = _seed_codec_id(name)
        if cid is None or cid not in allowed:
            dropped.append(name if isinstance(name, str) else repr(name)[:40])
        elif cid not in wanted:
            wanted.append(cid)

    sdp_text = media_obj.get("sdp")
    sdp = parse_sdp(sdp_text) if isinstance(sdp_text, str) and sdp_text.strip() else None
    if sdp is not None:
        # The seed list, when present, narrows what the SDP offers; else the SDP decides.
        narrow = frozenset(wanted) if names else allowed
        media = descriptors_from_sdp(sdp, supported=narrow & allowed)
    else:
        media = tuple(
            MediaDescriptor(kind, Direction.SENDRECV, tuple(CodecEntry(c) for c in ids))
            for kind in ("audio", "video")
            if (ids := [c for c in wanted if CODEC_RTPMAP[c].kind == kind])
        )
    if not media:
        raise MediaBindingError(
            "no codec in common with the seed invite",
            code="binding-codec-missing",
            reason="media.unsupported",
        )

    cap = invite.get("cap")
    features = cap.get("features") if isinstance(cap, Mapping) else None
    webrtc = isinstance(features, list) and "webrtc" in features
    transports: tuple[Mapping[str, Any], ...] = ()
    if webrtc and isinstance(sdp_text, str) and sdp is not None:
        transports = (MappingProxyType(webrtc_transport(sdp_text, offer=True)),)

    net = invite.get("net")
    hints = net.get("hints") if isinstance(net, Mapping) else None
    sfu = hints.get("sfu") if isinstance(hints, Mapping) else None
    focus = tuple(u for u in sfu if isinstance(u, str)) if isinstance(sfu, list) else ()
    return SeedMediaMapping(media, transports, tuple(dropped), focus)
