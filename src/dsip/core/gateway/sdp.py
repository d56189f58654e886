"""Trunk SDP ⇄ DSIP media descriptors (Gateway Profile G§6, RTP/SRTP Media Binding R§2–R§5).

No SDP crosses the gateway: each side's SDP is authoritative for its own transport, and the
descriptors are re-derived per side (G§6).

* :func:`parse_trunk_sdp` — trunk SDP → :class:`TrunkMedia`: one media descriptor per live
  ``m=audio``/``m=video`` RTP section with a codec DSIP has an id for (codec ids from
  ``a=rtpmap``, or the RFC 3551 static payload types 0/8/9 when a trunk leaves the rtpmap
  out); encodings DSIP has no id for are dropped and a section with none left is omitted;
  the section direction carries (a hold's ``sendonly``/``inactive`` included). The keying
  mode (:class:`SrtpMode`) is ``none`` for ``RTP/AVP``, ``sdes`` for ``RTP/SAVP`` with
  ``a=crypto``, ``dtls`` for ``UDP/TLS/RTP/SAVP`` with ``a=fingerprint``.
* :func:`m_lines_for` — the DSIP selection → the SIP leg's m= lines (:class:`TrunkMLine`:
  kind, encodings, direction); :func:`render_trunk_sdp` writes them out as an offer, or as
  the answer to a trunk offer (same section order, the offer's payload types, port 0 for
  sections DSIP did not describe, RFC 3264 §6).

Errors are verdicts: :class:`TrunkSdpError` with ``code`` ``unparseable`` (not SDP),
``srtp-keying-missing`` (an SRTP profile with no usable ``a=crypto`` / ``a=fingerprint``),
``srtp-suite-unsupported`` (SDES, but no offered suite we accept) or ``srtp-mixed`` (live
sections keyed differently). Nothing else escapes on hostile text.

Parsing reuses the strict RFC 8866 reader of the WebRTC binding
(:func:`dsip.core.media_binding.parse_sdp`) and its codec table
(:data:`~dsip.core.media_binding.CODEC_RTPMAP`); the one leniency added for trunks is the
line ending: RFC 8866 §5 asks parsers to accept a bare LF, and older SIP stacks send one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from dsip.core.gateway.reasons import GatewayError, GatewayMisuseError
from dsip.core.media_binding import (
    CODEC_RTPMAP,
    MAX_SDP_CHARS,
    CodecEntry,
    Direction,
    MediaBindingError,
    MediaDescriptor,
    RtpMap,
    SdpSection,
    parse_sdp,
)

__all__ = [
    "DEFAULT_SRTP_SUITES",
    "STATIC_PAYLOAD_TYPES",
    "DtlsKeying",
    "SdesCrypto",
    "SdesKey",
    "SrtpMode",
    "TrunkCodec",
    "TrunkMLine",
    "TrunkMedia",
    "TrunkSdpError",
    "TrunkSection",
    "m_lines_for",
    "parse_trunk_sdp",
    "render_trunk_sdp",
]


class TrunkSdpError(GatewayError):
    """The trunk's SDP cannot be used. ``code`` is the verdict; ``reason`` what a DSIP peer
    would be told were the SDP its concern (``media.unsupported``)."""

    default_code = "unparseable"
    default_reason = "media.unsupported"


class SrtpMode(StrEnum):
    """The trunk leg's keying (R§2): SDES, DTLS-SRTP, or plain RTP (R§4 exception only)."""

    NONE = "none"
    SDES = "sdes"
    DTLS = "dtls"


_PROTO_MODE: Final = MappingProxyType(
    {
        "RTP/AVP": SrtpMode.NONE,
        "RTP/AVPF": SrtpMode.NONE,
        "RTP/SAVP": SrtpMode.SDES,
        "RTP/SAVPF": SrtpMode.SDES,
        "UDP/TLS/RTP/SAVP": SrtpMode.DTLS,
        "UDP/TLS/RTP/SAVPF": SrtpMode.DTLS,
        "TCP/DTLS/RTP/SAVP": SrtpMode.DTLS,
        "TCP/DTLS/RTP/SAVPF": SrtpMode.DTLS,
    }
)
_MODE_PROTO: Final = MappingProxyType(
    {SrtpMode.NONE: "RTP/AVP", SrtpMode.SDES: "RTP/SAVP", SrtpMode.DTLS: "UDP/TLS/RTP/SAVP"}
)

#: SDES suites accepted by default: the R§3 mandatory one, its 32-bit-tag sibling, and the
#: AEAD suites R§3 asks to be offered where supported (RFC 4568, RFC 7714).
DEFAULT_SRTP_SUITES: Final = frozenset(
    {
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
        "AEAD_AES_128_GCM",
        "AEAD_AES_256_GCM",
    }
)

#: RFC 3551 static payload types of the R§5 codecs: a trunk may list them on the m= line
#: without an ``a=rtpmap``.
STATIC_PAYLOAD_TYPES: Final = MappingProxyType(
    {0: "codec:audio/pcmu", 8: "codec:audio/pcma", 9: "codec:audio/g722"}
)
_STATIC_BY_ID: Final = MappingProxyType({v: k for k, v in STATIC_PAYLOAD_TYPES.items()})
_FIRST_DYNAMIC_PT: Final = 96

_MEDIA_KINDS: Final = frozenset({"audio", "video"})
_CRYPTO_RE: Final = re.compile(r"([0-9]{1,9}) ([A-Za-z0-9_]{1,64}) (inline:[!-~]{1,512})(?: .*)?")


@dataclass(frozen=True)
class SdesCrypto:
    """One ``a=crypto`` line (RFC 4568 §9.1): tag, suite, key parameters."""

    tag: int
    suite: str
    key_params: str


@dataclass(frozen=True)
class TrunkCodec:
    """A codec DSIP can name, with the payload type this SDP gave it."""

    id: str
    payload_type: int

    @property
    def encoding(self) -> str:
        return CODEC_RTPMAP[self.id].encoding


@dataclass(frozen=True)
class TrunkSection:
    """One ``m=`` section of a trunk SDP, as far as the gateway needs it."""

    index: int
    kind: str
    address: str | None
    port: int
    proto: str
    formats: tuple[str, ...]
    direction: Direction
    srtp: SrtpMode | None  # None: not an RTP audio/video section
    codecs: tuple[TrunkCodec, ...]
    accepted_crypto: SdesCrypto | None  # SDES: the first offered line with a suite we accept
    fingerprints: tuple[str, ...]  # DTLS: "sha-256 AB:CD:…"
    setup: str | None

    @property
    def descriptor(self) -> MediaDescriptor | None:
        """This section as a DSIP media descriptor, or ``None`` when it is omitted (G§6)."""
        if self.port == 0 or self.srtp is None or not self.codecs:
            return None
        return MediaDescriptor(
            self.kind, self.direction, tuple(CodecEntry(c.id) for c in self.codecs)
        )


@dataclass(frozen=True)
class TrunkMedia:
    """A trunk SDP read for the gateway: every section, the descriptors, the keying mode."""

    sections: tuple[TrunkSection, ...]
    srtp: SrtpMode

    @property
    def described(self) -> tuple[TrunkSection, ...]:
        return tuple(s for s in self.sections if s.descriptor is not None)

    @property
    def descriptors(self) -> tuple[MediaDescriptor, ...]:
        return tuple(d for s in self.sections if (d := s.descriptor) is not None)

    def media(self) -> list[dict[str, object]]:
        """The descriptors as the DSIP ``media`` array."""
        return [d.to_mapping() for d in self.descriptors]


# --- trunk SDP → descriptors ----------------------------------------------------------------


def _normalise_line_endings(text: str) -> str:
    """CRLF everywhere, a final one included (RFC 8866 §5: accept a bare LF)."""
    body = text.replace("\r\n", "\n")
    if "\r" in body:
        raise TrunkSdpError("not SDP: a bare CR")
    body = body.replace("\n", "\r\n")
    return body if body.endswith("\r\n") else body + "\r\n"


def _connection(lines: Iterable[tuple[str, str]]) -> str | None:
    for kind, value in lines:
        if kind == "c":
            return value.split(" ")[2].split("/")[0]
    return None


def _codecs(section: SdpSection) -> tuple[TrunkCodec, ...]:
    """Known codecs in m= format order; unknown encodings (GSM, telephone-event, ...) drop."""
    out: list[TrunkCodec] = []
    for fmt in section.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        rtpmap = section.rtpmap(pt)
        cid = _codec_id(section.kind, rtpmap) if rtpmap else STATIC_PAYLOAD_TYPES.get(pt)
        known = cid is not None and CODEC_RTPMAP[cid].kind == section.kind
        if cid is not None and known and all(c.id != cid for c in out):
            out.append(TrunkCodec(cid, pt))
    return tuple(out)


def _codec_id(kind: str, rtpmap: RtpMap) -> str | None:
    return next(
        (cid for cid, c in CODEC_RTPMAP.items() if c.kind == kind and c.matches(rtpmap)), None
    )


def _crypto_lines(section: SdpSection) -> list[SdesCrypto]:
    out = []
    for kind, value in section.lines:
        if kind == "a" and value.startswith("crypto:"):
            m = _CRYPTO_RE.fullmatch(value[len("crypto:") :])
            if m is not None:
                out.append(SdesCrypto(int(m.group(1)), m.group(2), m.group(3)))
    return out


def _old_style_hold(direction: Direction, address: str | None) -> Direction:
    """RFC 3264 §8.4: ``c=IN IP4 0.0.0.0`` is the RFC 2543 hold ("do not send to me")."""
    if address != "0.0.0.0":  # noqa: S104 - compared, never bound
        return direction
    if direction is Direction.SENDRECV:
        return Direction.SENDONLY
    if direction is Direction.RECVONLY:
        return Direction.INACTIVE
    return direction


def _section(raw: SdpSection, session_address: str | None, suites: frozenset[str]) -> TrunkSection:
    address = _connection(raw.lines) or session_address
    mode = _PROTO_MODE.get(raw.proto.upper()) if raw.kind in _MEDIA_KINDS else None
    accepted = None
    if mode is SrtpMode.SDES and raw.port != 0:
        offered = _crypto_lines(raw)
        if not offered:
            raise TrunkSdpError(
                f"m= section {raw.index}: {raw.proto} without a usable a=crypto",
                code="srtp-keying-missing",
            )
        accepted = next((c for c in offered if c.suite in suites), None)
        if accepted is None:
            names = ", ".join(sorted({c.suite for c in offered}))[:200]
            raise TrunkSdpError(
                f"m= section {raw.index}: no acceptable SDES suite among {names}",
                code="srtp-suite-unsupported",
            )
    if mode is SrtpMode.DTLS and raw.port != 0 and not raw.fingerprints:
        raise TrunkSdpError(
            f"m= section {raw.index}: {raw.proto} without a=fingerprint",
            code="srtp-keying-missing",
        )
    return TrunkSection(
        index=raw.index,
        kind=raw.kind,
        address=address,
        port=raw.port,
        proto=raw.proto,
        formats=raw.formats,
        direction=_old_style_hold(raw.direction, address),
        srtp=mode,
        codecs=_codecs(raw) if mode is not None else (),
        accepted_crypto=accepted,
        fingerprints=tuple(f"{f.algorithm} {f.value}" for f in raw.fingerprints),
        setup=raw.setup,
    )


def parse_trunk_sdp(
    text: object, *, srtp_suites: Iterable[str] = DEFAULT_SRTP_SUITES
) -> TrunkMedia:
    """Read a trunk's SDP (G§6, R§3). Raises :class:`TrunkSdpError` and nothing else."""
    if not isinstance(text, str):
        raise TrunkSdpError(f"not SDP: expected text, got {type(text).__name__}")
    if len(text) > MAX_SDP_CHARS:
        raise TrunkSdpError(f"not SDP: {len(text)} characters, above {MAX_SDP_CHARS}")
    try:
        parsed = parse_sdp(_normalise_line_endings(text))
    except MediaBindingError as exc:
        raise TrunkSdpError(exc.message) from None
    suites = frozenset(srtp_suites)
    session_address = _connection(parsed.session_lines)
    sections = tuple(_section(s, session_address, suites) for s in parsed.sections)
    modes = {s.srtp for s in sections if s.srtp is not None and s.port != 0}
    if len(modes) > 1:
        raise TrunkSdpError(
            "live sections are keyed differently: " + ", ".join(sorted(modes)),
            code="srtp-mixed",
        )
    return TrunkMedia(sections, modes.pop() if modes else SrtpMode.NONE)


# --- descriptors → trunk m= lines -----------------------------------------------------------


@dataclass(frozen=True)
class TrunkMLine:
    """One m= line for the SIP leg: kind, codec ids (in preference order), direction."""

    kind: str
    codecs: tuple[str, ...]
    direction: Direction

    @property
    def encodings(self) -> tuple[str, ...]:
        """The ``a=rtpmap`` encoding names (``opus``, ``G722``, ``PCMU``)."""
        return tuple(CODEC_RTPMAP[c].encoding for c in self.codecs)


def m_lines_for(
    media: Iterable[MediaDescriptor], *, transcode_to: Sequence[str] = ()
) -> tuple[TrunkMLine, ...]:
    """The SIP leg's m= lines for a DSIP selection (G§6): codec ids with an rtpmap of the
    descriptor's kind keep their order, others are dropped. ``transcode_to`` appends the
    codecs the gateway can transcode into (G§6: Opus ⇄ G.711/G.722) to every audio line that
    lacks them. A descriptor left with no codec has no m= line."""
    out = []
    for descriptor in media:
        ids: list[str] = []
        extra = transcode_to if descriptor.type == "audio" else ()
        for cid in [*(c.id for c in descriptor.codecs), *extra]:
            codec = CODEC_RTPMAP.get(cid)
            if codec is not None and codec.kind == descriptor.type and cid not in ids:
                ids.append(cid)
        if ids:
            out.append(TrunkMLine(descriptor.type, tuple(ids), descriptor.direction))
    return tuple(out)


@dataclass(frozen=True)
class SdesKey:
    """Our SDES key for one direction: ``inline:<base64 key||salt>`` (RFC 4568 §6.1)."""

    key_params: str
    suite: str = "AES_CM_128_HMAC_SHA1_80"
    tag: int = 1


@dataclass(frozen=True)
class DtlsKeying:
    """Our DTLS-SRTP identity (RFC 5763): certificate fingerprint and ``a=setup`` role."""

    fingerprint: str  # "sha-256 AB:CD:…"
    setup: str  # actpass (offer) | active | passive (answer)


_KEY_PARAMS_RE: Final = re.compile(
    r"inline:[A-Za-z0-9+/=]{1,256}(?:\|[0-9^]{1,16}){0,2}(?::[0-9]{1,3})?"
)
_SUITE_RE: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_FINGERPRINT_RE: Final = re.compile(r"[a-z0-9-]{1,16} [0-9A-F]{2}(?::[0-9A-F]{2}){15,63}")
_SETUP_ROLES: Final = frozenset({"actpass", "active", "passive"})


def _misuse(why: str) -> GatewayMisuseError:
    return GatewayMisuseError(why, code="sdp-render-invalid")


def _keying_lines(keying: SdesKey | DtlsKeying | None) -> list[str]:
    if keying is None:
        return []
    if isinstance(keying, SdesKey):
        if not _KEY_PARAMS_RE.fullmatch(keying.key_params) or not _SUITE_RE.fullmatch(keying.suite):
            raise _misuse("SDES key parameters are not inline:<base64>")
        if not 0 <= keying.tag <= 999_999_999:
            raise _misuse("SDES tag outside 0-999999999")
        return [f"a=crypto:{keying.tag} {keying.suite} {keying.key_params}"]
    if not _FINGERPRINT_RE.fullmatch(keying.fingerprint) or keying.setup not in _SETUP_ROLES:
        raise _misuse("DTLS keying needs 'sha-256 AB:CD:…' and a=setup actpass|active|passive")
    return [f"a=fingerprint:{keying.fingerprint}", f"a=setup:{keying.setup}"]


def _mode_of(keying: SdesKey | DtlsKeying | None) -> SrtpMode:
    if keying is None:
        return SrtpMode.NONE
    return SrtpMode.SDES if isinstance(keying, SdesKey) else SrtpMode.DTLS


def _payload_types(line: TrunkMLine, offered: TrunkSection | None) -> list[tuple[int, str]]:
    """(payload type, codec id): the offer's numbers in an answer (RFC 3264 §6.1), else the
    static RFC 3551 ones, else dynamic from 96."""
    from_offer = {c.id: c.payload_type for c in offered.codecs} if offered else {}
    used = set(from_offer.values()) | set(STATIC_PAYLOAD_TYPES)
    out = []
    next_dynamic = _FIRST_DYNAMIC_PT
    for cid in line.codecs:
        if cid in from_offer:
            pt = from_offer[cid]
        elif cid in _STATIC_BY_ID:
            pt = _STATIC_BY_ID[cid]
        else:
            while next_dynamic in used:
                next_dynamic += 1
            pt = next_dynamic
            used.add(pt)
        out.append((pt, cid))
    return out


def _m_section(
    line: TrunkMLine,
    port: int,
    proto: str,
    keying: list[str],
    offered: TrunkSection | None,
) -> list[str]:
    pts = _payload_types(line, offered)
    out = [f"m={line.kind} {port} {proto} {' '.join(str(pt) for pt, _ in pts)}"]
    out += [f"a=rtpmap:{pt} {CODEC_RTPMAP[cid].rtpmap}" for pt, cid in pts]
    out += keying
    out.append(f"a={line.direction}")
    return out


def render_trunk_sdp(
    lines: Sequence[TrunkMLine],
    *,
    address: str,
    ports: Sequence[int],
    keying: SdesKey | DtlsKeying | None = None,
    session_id: int = 1,
    session_version: int = 1,
    answer_to: TrunkMedia | None = None,
) -> str:
    """Write the SIP leg's SDP (R§3). As an offer: one section per line. As the answer to
    ``answer_to``: ``lines[i]``/``ports[i]`` answer the offer's i-th described section, with
    the offer's proto and payload types; every other offered section is refused with port 0
    (RFC 3264 §6). Only our own values are checked here (:class:`GatewayMisuseError`)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise _misuse(f"{address!r} is not an IP address") from None
    if len(ports) != len(lines) or any(not 1 <= p <= 65535 for p in ports):
        raise _misuse("one port in 1-65535 per m= line")
    if not (0 <= session_id < 2**63 and 0 <= session_version < 2**63):
        raise _misuse("o= session id and version are 63-bit unsigned")
    family = f"IN IP{ip.version} {ip.compressed}"
    key_lines = _keying_lines(keying)
    out = [
        "v=0",
        f"o=dsip-gateway {session_id} {session_version} {family}",
        "s=-",
        f"c={family}",
        "t=0 0",
    ]
    if answer_to is None:
        proto = _MODE_PROTO[_mode_of(keying)]
        for line, port in zip(lines, ports, strict=True):
            out += _m_section(line, port, proto, key_lines, None)
    else:
        described = answer_to.described
        if len(described) != len(lines):
            raise _misuse(f"{len(lines)} m= lines answer {len(described)} described sections")
        answers = {
            s.index: (line, port) for s, line, port in zip(described, lines, ports, strict=True)
        }
        for section in answer_to.sections:
            if section.index in answers:
                line, port = answers[section.index]
                if line.kind != section.kind:
                    raise _misuse(f"a {line.kind} m= line cannot answer {section.kind} section")
                out += _m_section(line, port, section.proto, key_lines, section)
            else:
                out.append(f"m={section.kind} 0 {section.proto} {section.formats[0]}")
    return "".join(f"{line}\r\n" for line in out)
