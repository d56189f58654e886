"""Human-friendly aliases → DIDs: WebFinger and DNS TXT, cross-checked (seed §4.3, §21.D).

An alias (``acct:alice@voice.example`` or ``alice@voice.example``) is a *pointer* to a DID,
never an identity of its own: v0.7 §8.2 — "the DID, not the alias resolver, becomes the
cryptographic identity for the session". Everything here answers one question, "which DID
does this name point to, and how sure are we", and then gets out of the way; the DID
document (resolved by :class:`~dsip.agent.resolver.DidResolver`) is what is authoritative
(§8.1 step 4, §8.3 "DID resolution wins over alias cache").

**Normalization** (§8.1 step 1, :func:`normalize_alias`). ``acct:`` is stripped and put
back, the domain is lower-cased and converted to IDNA A-labels (UTS #46), and the user part
is restricted to RFC 3986 unreserved characters plus ``+``. Anything else — over-long
input, percent-escapes, non-ASCII user parts, a domain that is not a host name, an IP
literal — is a :class:`~dsip.errors.ResolutionError` (``alias-invalid``/``alias-too-long``),
never another exception.

**WebFinger** (RFC 7033). ``GET https://<domain>/.well-known/webfinger?resource=acct:…``
with ``rel=`` :data:`DSIP_DID_REL`. The DID is taken from a ``links`` entry whose ``rel``
is :data:`DSIP_DID_REL` (``href`` = the DID) or from a DID listed in ``aliases``; two
different DIDs in one JRD are refused (``jrd-ambiguous``). The fetch follows
``DidResolver``'s discipline and for the same reason — the TLS certificate of the domain
is the whole of WebFinger's authority: HTTPS only, redirects only to the same origin
(``redirect-refused``), a body cap counted while streaming (``jrd-too-large``), identity
encoding, one deadline (``webfinger-timeout``), strict JSON (``jrd-invalid``), and an
``application/jrd+json`` (or ``application/json``) content type (``jrd-content-type``).
404/410 mean "no such alias here".

**DNS TXT**. ``_did.<user>.<domain>`` with a TXT value ``did=<DID>``, via dnspython's
asyncio resolver against configurable name servers (the system's by default). The name is
built label by label, so a user part can never add labels; a user part with a ``.`` has
no unambiguous DNS form and skips the DNS path (``alias-dns-unrepresentable``).

**DNSSEC states.** Queries carry the DO bit and every answer is validated *here*, against
trust anchors configured on the resolver (DS or DNSKEY records, :func:`parse_trust_anchors`)
— the AD bit of whatever resolver sits in between is never believed:

``secure``
    The TXT RRset's RRSIG verifies (``dns.dnssec.validate``, inception/expiry checked
    against our clock) under a DNSKEY RRset that is itself signed by a key matching a
    configured anchor, or matching a DS record validated the same way one zone up — the
    chain is walked from the signer zone towards the anchor.
``insecure``
    The name lies under no configured anchor. The answer is taken, but unauthenticated:
    anyone on the path to the name server could have written it.
``bogus``
    The name lies under an anchor and the chain does not hold: no RRSIG (signatures
    stripped), a bad or expired signature, a DNSKEY no anchor/DS vouches for, a
    delegation without DS. A bogus answer is evidence of tampering (or of a broken zone),
    so the *whole* alias resolution is refused (``dnssec-bogus``), whatever WebFinger says.

Deliberate limits, each failing in the safe direction: authenticated denial (NSEC/NSEC3)
is not checked, so NXDOMAIN/NODATA only ever mean "DNS has no opinion" — an attacker can
suppress the DNS path, never forge it; an insecure delegation below an anchor (which only
an NSEC proof can establish) is therefore ``bogus``; CNAMEs at ``_did.`` names are refused
(``dns-cname-unsupported``).

**When both paths exist** (v0.7 §8.3 "WebFinger says one DID, DNS says another"). With
``cross_check=True`` (default) every configured method is tried, concurrently, and reported
in ``methods`` order. Agreement → one DID, with every path that said it in
``answered_by``. Disagreement → ``alias-conflict``, unless
``prefer_webfinger_over_insecure_dns`` is set *and* the DNS answer is not ``secure``: a
TLS-authenticated WebFinger answer then outranks an unauthenticated TXT record (the DNS
path is listed in ``overruled``). Two authenticated sources disagreeing (WebFinger vs
DNSSEC-``secure`` DNS) is always a conflict: there is no principled winner. A path that
fails (unreachable, malformed) has no opinion; if no path answers, the first failure (in
``methods`` order) is raised, or ``alias-not-found`` when they merely found nothing. With
``cross_check=False`` the methods are tried in order and the first answer wins — faster,
but a conflict goes unnoticed.

**Cache.** Results live for the smallest TTL of the paths that answered (HTTP
``Cache-Control: max-age``, DNS TTL), clamped to ``[min_ttl, max_ttl]`` like
``DidResolver``; failures for ``negative_ttl``; concurrent lookups of one alias share one
resolution. Validated DNSKEY RRsets are cached per zone the same way.

**ENS and Handshake are not supported.** ENS lives on Ethereum: an answer is only as good
as the JSON-RPC endpoint asked, so either every agent runs (or trusts) an Ethereum node or
light client, or it trusts a third-party provider — a registrar by another name — and the
Python route (web3.py plus CCIP-Read for off-chain resolvers) is a large dependency for
that. Handshake has no maintained Python client; its names are served as DNS by ``hnsd``,
so pointing ``dns_nameservers`` at a local ``hnsd`` with the Handshake root's DNSKEY as a
trust anchor already reaches them through the DNS path above. Neither is cheap enough to
carry for an optional alias method (seed §4.3 marks it optional).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import dns.asyncresolver
import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.dsbase
import dns.resolver
import dns.rrset
import httpx
import idna

from dsip.agent.fetchcache import FetchCache
from dsip.agent.resolver import MAX_REDIRECTS, _max_age, _ssl_context
from dsip.core.identity import is_did
from dsip.core.jsonwire import loads_strict
from dsip.errors import ConfigError, DsipError, PayloadError, ResolutionError

__all__ = [
    "DSIP_DID_REL",
    "MAX_ALIAS_LEN",
    "Alias",
    "AliasAnswer",
    "AliasMethod",
    "AliasResolver",
    "AliasResult",
    "DnssecState",
    "TrustAnchor",
    "decide",
    "did_from_jrd",
    "did_from_txt",
    "normalize_alias",
    "parse_trust_anchors",
]

AliasMethod = Literal["webfinger", "dns"]
DnssecState = Literal["secure", "insecure", "bogus"]

DSIP_DID_REL = "https://dsip.dev/rel/did"
"""The JRD link relation whose ``href`` is the alias's DID (our own, RFC 7033 §4.4.4.1
allows URI relation types)."""

MAX_ALIAS_LEN = 320  # 64-octet local part + "@" + 255-octet domain, rounded generously
MAX_CHAIN_DEPTH = 8  # zones walked from a signer up to its trust anchor
JRD_CONTENT_TYPES = frozenset({"application/jrd+json", "application/json"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_USER = re.compile(r"[A-Za-z0-9._~+-]{1,64}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ZONE_FLAG = 0x0100  # DNSKEY flags (RFC 4034 §2.1.1)
_REVOKE_FLAG = 0x0080  # RFC 5011

logger = logging.getLogger("dsip.aliases")


# --- normalization (pure) ------------------------------------------------------------------


def _invalid(message: str, code: str = "alias-invalid") -> ResolutionError:
    return ResolutionError(message, code=code, remote=False)


@dataclass(frozen=True, slots=True)
class Alias:
    """A normalized alias: ``user`` as given (unreserved ASCII), ``domain`` lower-case A-labels."""

    user: str
    domain: str

    @property
    def acct(self) -> str:
        return f"acct:{self.user}@{self.domain}"

    def __str__(self) -> str:
        return self.acct

    def dns_name(self) -> dns.name.Name:
        """``_did.<user>.<domain>.``, built from labels so the user part stays one label."""
        if "." in self.user:
            raise _invalid(
                f"{self.acct} has a '.' in its user part; _did.<user>.<domain> would be ambiguous",
                "alias-dns-unrepresentable",
            )
        labels = [b"_did", self.user.encode("ascii"), *(x.encode() for x in self.domain.split("."))]
        try:
            return dns.name.Name([*labels, b""])
        except dns.exception.DNSException:  # label or name too long
            raise _invalid(
                f"_did name of {self.acct} is longer than DNS allows", "alias-dns-unrepresentable"
            ) from None


def _normalize_domain(domain: str) -> str:
    if domain.endswith("."):
        domain = domain[:-1]
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
        raise _invalid(f"domain {domain[:80]!r} is not a valid (IDNA) host name") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        raise _invalid(f"domain {domain[:80]!r} is not a host name")
    if labels[-1].isdigit():
        raise _invalid(f"domain {domain[:80]!r} is an IP address, not a host name")
    return ascii_domain


def normalize_alias(alias: object) -> Alias:
    """``[acct:]user@domain`` → :class:`Alias`; raises ``ResolutionError`` on anything else."""
    if not isinstance(alias, str):
        raise _invalid("an alias must be a string")
    if len(alias) > MAX_ALIAS_LEN:
        raise _invalid(f"alias is longer than {MAX_ALIAS_LEN} characters", "alias-too-long")
    text = alias.strip(" \t\r\n")
    if text[:5].lower() == "acct:":
        text = text[5:]
    user, at, domain = text.rpartition("@")
    if not at or not user or not domain:
        raise _invalid(f"alias {text[:80]!r} is not of the form user@domain")
    if not user.isascii():
        raise _invalid(f"non-ASCII user part {user[:40]!r} is not supported")
    if not _USER.fullmatch(user):
        raise _invalid(
            f"user part {user[:40]!r} must be 1-64 of A-Z a-z 0-9 . _ ~ + - "
            "(no spaces, '@', '%' or other punctuation)"
        )
    return Alias(user, _normalize_domain(domain))


# --- record parsing (pure) -----------------------------------------------------------------


def _did_value(value: object, where: str) -> str:
    if not is_did(value):
        raise ResolutionError(f"{where} {str(value)[:80]!r} is not a DID", code="alias-did-invalid")
    assert isinstance(value, str)
    return value


def did_from_jrd(body: bytes | str) -> str | None:
    """The DID a JRD names (``links[rel=DSIP_DID_REL].href`` or a DID in ``aliases``), or
    ``None`` when it names none. Malformed JRDs raise ``jrd-invalid``, invalid DIDs
    ``alias-did-invalid``, two different DIDs ``jrd-ambiguous``."""
    try:
        value, _ = loads_strict(body, what="JRD", code_prefix="jrd")
    except PayloadError as exc:
        raise ResolutionError(
            f"WebFinger JRD is not strict JSON: {exc.message}", code="jrd-invalid"
        ) from None
    if not isinstance(value, dict):
        raise ResolutionError("WebFinger JRD is not a JSON object", code="jrd-invalid")
    links = value.get("links", [])
    aliases = value.get("aliases", [])
    if not isinstance(links, list) or not isinstance(aliases, list):
        raise ResolutionError("JRD links/aliases are not arrays", code="jrd-invalid")
    found: list[str] = []
    for link in links:
        if not isinstance(link, dict):
            raise ResolutionError("a JRD link is not an object", code="jrd-invalid")
        if link.get("rel") == DSIP_DID_REL:
            found.append(_did_value(link.get("href"), "JRD link href"))
    for item in aliases:
        if not isinstance(item, str):
            raise ResolutionError("a JRD alias is not a string", code="jrd-invalid")
        if item.startswith("did:"):
            found.append(_did_value(item, "JRD alias"))
    distinct = list(dict.fromkeys(found))
    if len(distinct) > 1:
        raise ResolutionError(
            f"JRD names {len(distinct)} different DIDs: {', '.join(d[:80] for d in distinct[:3])}",
            code="jrd-ambiguous",
        )
    return distinct[0] if distinct else None


def did_from_txt(records: Iterable[Sequence[bytes]]) -> str | None:
    """The DID of ``did=<DID>`` TXT records (each record's strings concatenated, RFC 7208
    style); other TXT records are ignored, two different DIDs raise ``dns-ambiguous``."""
    found: list[str] = []
    for strings in records:
        value = b"".join(strings)
        if not value.startswith(b"did="):
            continue
        try:
            text = value[4:].decode("ascii")
        except UnicodeDecodeError:
            raise ResolutionError("TXT did= value is not ASCII", code="alias-did-invalid") from None
        found.append(_did_value(text, "TXT did= value"))
    distinct = list(dict.fromkeys(found))
    if len(distinct) > 1:
        raise ResolutionError(
            f"DNS names {len(distinct)} different DIDs: {', '.join(d[:80] for d in distinct[:3])}",
            code="dns-ambiguous",
        )
    return distinct[0] if distinct else None


# --- trust anchors -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """DS and/or DNSKEY records that vouch for one zone's key-signing key(s)."""

    zone: dns.name.Name
    ds: tuple[dns.rdata.Rdata, ...] = ()
    dnskeys: tuple[dns.rdata.Rdata, ...] = ()


_ANCHOR_LINE = re.compile(r"(\S+)\s+(?:\d+\s+)?(?:IN\s+)?(DS|DNSKEY)\s+(.+)", re.IGNORECASE)


def parse_trust_anchors(text: str) -> tuple[TrustAnchor, ...]:
    """DS or DNSKEY records in zone-file form, one per line, owner names absolute (the
    ``.ds``/``.key`` files of ``ldns-keygen``/``dnssec-keygen``); ``;`` starts a comment."""
    by_zone: dict[dns.name.Name, tuple[list[dns.rdata.Rdata], list[dns.rdata.Rdata]]] = {}
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.split(";", 1)[0].strip()
        if not line:
            continue
        m = _ANCHOR_LINE.fullmatch(line)
        if m is None or not m.group(1).endswith("."):
            raise ConfigError(
                f"trust anchor line {number} is not '<zone>. [ttl] [IN] DS|DNSKEY <rdata>'"
            )
        try:
            zone = dns.name.from_text(m.group(1))
            rdtype = dns.rdatatype.from_text(m.group(2).upper())
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, m.group(3))
        except (dns.exception.DNSException, ValueError) as exc:
            raise ConfigError(f"trust anchor line {number}: {exc}") from None
        ds, keys = by_zone.setdefault(zone, ([], []))
        (ds if rdtype == dns.rdatatype.DS else keys).append(rdata)
    return tuple(TrustAnchor(z, tuple(ds), tuple(k)) for z, (ds, k) in by_zone.items())


# --- results and the decision (pure) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AliasAnswer:
    """What one path said. ``did is None``: no answer — not found, or ``error`` says why."""

    method: AliasMethod
    source: str  # the URL or DNS name asked
    did: str | None = None
    error: str | None = None  # ResolutionError code when the path failed
    message: str = ""
    dnssec: DnssecState | None = None  # DNS path only
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class AliasResult:
    """The DID an alias points to and how it was learned."""

    alias: str  # normalized, acct:user@domain
    did: str
    answered_by: tuple[AliasMethod, ...]  # the paths that said ``did``
    answers: tuple[AliasAnswer, ...]  # every path tried, in ``methods`` order
    dnssec: DnssecState | None  # of the DNS answer, when DNS answered
    ttl: int
    overruled: tuple[AliasMethod, ...] = ()  # paths that said another DID and lost by policy
    cached: bool = False


def decide(
    alias: Alias,
    answers: Sequence[AliasAnswer],
    *,
    prefer_webfinger_over_insecure_dns: bool = False,
    min_ttl: int = 30,
    max_ttl: int = 86_400,
) -> AliasResult:
    """Combine the paths' answers per the policy of the module docstring (v0.7 §8.3)."""
    for a in answers:
        if a.dnssec == "bogus":
            raise ResolutionError(
                f"DNSSEC validation of {a.source} failed: {a.message}", code="dnssec-bogus"
            )
    answered = [a for a in answers if a.did is not None]
    if not answered:
        failed = [a for a in answers if a.error is not None]
        if failed:
            first = failed[0]
            raise ResolutionError(f"{alias}: {first.method}: {first.message}", code=first.error)
        tried = ", ".join(a.method for a in answers) or "no method"
        raise ResolutionError(f"no DID for {alias} ({tried} tried)", code="alias-not-found")
    overruled: tuple[AliasMethod, ...] = ()
    dids = list(dict.fromkeys(a.did for a in answered))
    if len(dids) > 1:
        wf = next((a for a in answered if a.method == "webfinger"), None)
        dns_ = next((a for a in answered if a.method == "dns"), None)
        if (
            prefer_webfinger_over_insecure_dns
            and wf is not None
            and dns_ is not None
            and dns_.dnssec != "secure"
            and len(dids) == 2
        ):
            overruled = ("dns",)
            answered = [wf]
            logger.warning(
                "alias %s: WebFinger (%s) overrules DNS without DNSSEC (%s)",
                alias,
                wf.did,
                dns_.did,
            )
        else:
            said = "; ".join(f"{a.method} says {a.did}" for a in answered)
            raise ResolutionError(f"alias {alias} is contested: {said}", code="alias-conflict")
    dns_answer = next((a for a in answered if a.method == "dns"), None)
    ttl = max(min_ttl, min(max_ttl, min(a.ttl for a in answered)))
    did = answered[0].did
    assert did is not None
    return AliasResult(
        alias=alias.acct,
        did=did,
        answered_by=tuple(a.method for a in answered),
        answers=tuple(answers),
        dnssec=dns_answer.dnssec if dns_answer is not None else None,
        ttl=ttl,
        overruled=overruled,
    )


# --- the resolver (I/O edge) ---------------------------------------------------------------


class _Bogus(Exception):
    """Internal: the DNSSEC chain does not hold (becomes ``dnssec: "bogus"``)."""


class AliasResolver(FetchCache[AliasResult]):
    """Resolve aliases to DIDs over WebFinger and DNS; see the module docstring for policy.

    ``webfinger_endpoints`` maps a domain to the ``https://host[:port][/prefix]`` that
    answers its WebFinger queries instead of ``https://<domain>`` (local networks, tests).
    ``dns_nameservers``/``dns_port`` select the DNS server (default: the system's).
    ``trust_anchors`` is a sequence of :class:`TrustAnchor` or the text
    :func:`parse_trust_anchors` reads.
    """

    def __init__(
        self,
        *,
        methods: Sequence[AliasMethod] = ("webfinger", "dns"),
        cross_check: bool = True,
        prefer_webfinger_over_insecure_dns: bool = False,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | str | bool = True,
        timeout: float = 5.0,
        max_jrd_bytes: int = 64 * 1024,
        webfinger_endpoints: Mapping[str, str] | None = None,
        dns_nameservers: Sequence[str] | None = None,
        dns_port: int = 53,
        trust_anchors: Iterable[TrustAnchor] | str = (),
        default_ttl: int = 300,
        min_ttl: int = 30,
        max_ttl: int = 86_400,
        negative_ttl: int = 30,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
    ) -> None:
        if not methods or len(set(methods)) != len(methods):
            raise ConfigError("methods must name webfinger and/or dns, each once")
        for m in methods:
            if m not in ("webfinger", "dns"):
                raise ConfigError(f"unknown alias method {m!r}")
        if not 0 <= min_ttl <= max_ttl:
            raise ConfigError("need 0 <= min_ttl <= max_ttl")
        if timeout <= 0 or max_jrd_bytes <= 0 or max_entries <= 0:
            raise ConfigError("timeout, max_jrd_bytes and max_entries must be positive")
        self._methods: tuple[AliasMethod, ...] = tuple(methods)
        self._cross_check = cross_check
        self._prefer_wf = prefer_webfinger_over_insecure_dns
        super().__init__(
            client=client,
            verify=_ssl_context(verify),
            timeout=timeout,
            negative_ttl=negative_ttl,
            clock=clock,
            max_entries=max_entries,
        )
        self._max_bytes = max_jrd_bytes
        self._wf_endpoints: dict[str, httpx.URL] = {}
        for domain, base in (webfinger_endpoints or {}).items():
            url = httpx.URL(base)
            if url.scheme != "https" or not url.host:
                raise ConfigError(f"WebFinger endpoint for {domain} must be an https URL")
            try:
                self._wf_endpoints[_normalize_domain(domain)] = url
            except ResolutionError as exc:
                raise ConfigError(f"WebFinger endpoint domain: {exc.message}") from None
        self._nameservers = list(dns_nameservers) if dns_nameservers else None
        self._dns_port = dns_port
        self._dns: dns.asyncresolver.Resolver | None = None
        if isinstance(trust_anchors, str):
            trust_anchors = parse_trust_anchors(trust_anchors)
        self._anchors: dict[dns.name.Name, TrustAnchor] = {a.zone: a for a in trust_anchors}
        self._default_ttl = default_ttl
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._keys: dict[dns.name.Name, tuple[dns.rrset.RRset, float]] = {}

    # --- public API -----------------------------------------------------------------------

    async def resolve(self, alias: str) -> AliasResult:
        """Resolve ``alias`` to a DID (cached); raises ``ResolutionError`` on any failure."""
        parsed = normalize_alias(alias)
        key = parsed.acct
        hit = self._fresh(key)
        if hit is not None:
            return replace(hit, cached=True)
        return await self._single_flight(key, lambda: self._resolve(parsed), f"dsip-alias {key}")

    def invalidate(self, alias: str) -> None:
        """Forget what is cached for ``alias`` (e.g. after its DID document disowned it)."""
        self._forget(normalize_alias(alias).acct)

    # --- orchestration --------------------------------------------------------------------

    async def _resolve(self, alias: Alias) -> AliasResult:
        try:
            if self._cross_check:
                answers = list(await asyncio.gather(*(self._path(m, alias) for m in self._methods)))
            else:
                answers = []
                for m in self._methods:
                    answers.append(await self._path(m, alias))
                    if answers[-1].did is not None or answers[-1].dnssec == "bogus":
                        break
            result = decide(
                alias,
                answers,
                prefer_webfinger_over_insecure_dns=self._prefer_wf,
                min_ttl=self._min_ttl,
                max_ttl=self._max_ttl,
            )
        except ResolutionError as err:
            logger.warning("alias %s not resolved: %s", alias, err)
            self._store_failure(alias.acct, err)
            raise
        self._store(alias.acct, result, self._clock() + result.ttl)
        logger.info("alias %s -> %s via %s", alias, result.did, "+".join(result.answered_by))
        return result

    async def _path(self, method: AliasMethod, alias: Alias) -> AliasAnswer:
        """One path's answer; never raises (failures become ``error`` fields)."""
        source = (
            self._webfinger_url(alias)
            if method == "webfinger"
            else f"_did.{alias.user}.{alias.domain}."
        )
        try:
            async with asyncio.timeout(self._timeout):
                if method == "webfinger":
                    return await self._webfinger(alias)
                return await self._txt(alias)
        except TimeoutError:
            code = "webfinger-timeout" if method == "webfinger" else "dns-timeout"
            msg = f"no answer within {self._timeout:g}s"
            return AliasAnswer(method, str(source), error=code, message=msg)
        except _Bogus as exc:
            return AliasAnswer(method, str(source), message=str(exc), dnssec="bogus")
        except DsipError as exc:
            return AliasAnswer(method, str(source), error=exc.code, message=exc.message)

    # --- WebFinger ------------------------------------------------------------------------

    def _webfinger_url(self, alias: Alias) -> httpx.URL:
        base = self._wf_endpoints.get(alias.domain) or httpx.URL(f"https://{alias.domain}")
        path = base.path.rstrip("/") + "/.well-known/webfinger"
        return base.copy_with(
            path=path, params={"resource": alias.acct, "rel": DSIP_DID_REL}, fragment=None
        )

    async def _webfinger(self, alias: Alias) -> AliasAnswer:
        url = self._webfinger_url(alias)
        origin = (url.host, url.port or 443)
        target = url
        client = self._http()
        for hop in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream(
                    "GET",
                    target,
                    headers={"Accept": "application/jrd+json", "Accept-Encoding": "identity"},
                    follow_redirects=False,
                    timeout=httpx.Timeout(self._timeout),
                ) as response:
                    status = response.status_code
                    if status in _REDIRECT_STATUSES:
                        target = self._redirect(alias, target, response, origin, hop)
                        continue
                    if status in (404, 410):
                        return AliasAnswer("webfinger", str(url), ttl=self._default_ttl)
                    if status != 200:
                        raise ResolutionError(
                            f"WebFinger at {target.host} answered HTTP {status}",
                            code="webfinger-status",
                        )
                    body = await self._read_jrd(response)
                    age = _max_age(response.headers.get_list("cache-control"))
            except httpx.TimeoutException:
                raise ResolutionError(
                    f"WebFinger at {target.host} timed out", code="webfinger-timeout"
                ) from None
            except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, OSError) as exc:
                raise ResolutionError(
                    f"cannot reach WebFinger at {target.host}: {type(exc).__name__}: "
                    f"{str(exc)[:200]}",
                    code="webfinger-unreachable",
                ) from None
            ttl = self._default_ttl if age is None else age
            return AliasAnswer("webfinger", str(url), did=did_from_jrd(body), ttl=ttl)
        raise AssertionError("unreachable")  # pragma: no cover

    def _redirect(
        self,
        alias: Alias,
        current: httpx.URL,
        response: httpx.Response,
        origin: tuple[str, int],
        hop: int,
    ) -> httpx.URL:
        if hop >= MAX_REDIRECTS:
            raise ResolutionError(
                f"more than {MAX_REDIRECTS} WebFinger redirects for {alias}",
                code="redirect-refused",
            )
        location = response.headers.get("location")
        try:
            nxt = current.join(location) if location else None
        except (httpx.InvalidURL, ValueError):
            nxt = None
        if nxt is None:
            raise ResolutionError(
                f"WebFinger redirect without a usable Location for {alias}",
                code="redirect-refused",
            )
        if nxt.scheme != "https" or (nxt.host, nxt.port or 443) != origin:
            raise ResolutionError(
                f"WebFinger redirect from {origin[0]}:{origin[1]} to {nxt.scheme}://{nxt.host}"
                f"{':' + str(nxt.port) if nxt.port else ''} refused for {alias} "
                "(only same-origin https redirects are followed)",
                code="redirect-refused",
            )
        return nxt

    async def _read_jrd(self, response: httpx.Response) -> bytes:
        ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype not in JRD_CONTENT_TYPES:
            raise ResolutionError(
                f"WebFinger answered Content-Type {ctype[:60]!r}, not application/jrd+json",
                code="jrd-content-type",
            )
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ResolutionError(
                f"WebFinger JRD sent with Content-Encoding {encoding[:40]!r}", code="jrd-invalid"
            )
        declared = (response.headers.get("content-length") or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared[:20]) > self._max_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self._max_bytes:
                raise self._too_large()
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> ResolutionError:
        return ResolutionError(
            f"WebFinger JRD exceeds {self._max_bytes} bytes", code="jrd-too-large"
        )

    # --- DNS ------------------------------------------------------------------------------

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            try:
                res = dns.asyncresolver.Resolver(configure=self._nameservers is None)
            except dns.exception.DNSException as exc:
                raise ResolutionError(
                    f"no DNS resolver configuration: {exc}", code="dns-unreachable", remote=False
                ) from None
            if self._nameservers is not None:
                res.nameservers = self._nameservers
            res.port = self._dns_port
            res.use_edns(0, dns.flags.DO, 1232)
            res.timeout = res.lifetime = self._timeout
            self._dns = res
        return self._dns

    async def _query(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message | None:
        """The response to ``name``/``rdtype`` with DNSSEC records; ``None`` for NXDOMAIN."""
        try:
            answer = await self._resolver().resolve(
                name, rdtype, raise_on_no_answer=False, lifetime=self._timeout
            )
        except dns.resolver.NXDOMAIN:
            return None
        except dns.resolver.LifetimeTimeout:
            raise ResolutionError(f"DNS query for {name} timed out", code="dns-timeout") from None
        except dns.exception.DNSException as exc:
            raise ResolutionError(
                f"DNS query for {name} failed: {type(exc).__name__}: {str(exc)[:200]}",
                code="dns-unreachable",
            ) from None
        return answer.response

    async def _txt(self, alias: Alias) -> AliasAnswer:
        qname = alias.dns_name()
        source = qname.to_text()
        response = await self._query(qname, dns.rdatatype.TXT)
        insecure: DnssecState = "insecure"
        if response is None:
            return AliasAnswer("dns", source, dnssec=insecure)
        txt = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.TXT)
        if txt is None:
            if any(r.rdtype == dns.rdatatype.CNAME for r in response.answer):
                raise ResolutionError(
                    f"{source} is a CNAME; _did names must hold their TXT record directly",
                    code="dns-cname-unsupported",
                )
            return AliasAnswer("dns", source, dnssec=insecure)
        state = await self._validate(qname, txt, response)
        did = did_from_txt(rd.strings for rd in txt)
        return AliasAnswer("dns", source, did=did, dnssec=state, ttl=txt.ttl)

    # --- DNSSEC ---------------------------------------------------------------------------

    def _anchor_for(self, name: dns.name.Name) -> dns.name.Name | None:
        """The closest configured anchor zone at or above ``name``."""
        best: dns.name.Name | None = None
        for zone in self._anchors:
            if name.is_subdomain(zone) and (best is None or zone.is_subdomain(best)):
                best = zone
        return best

    async def _validate(
        self, qname: dns.name.Name, rrset: dns.rrset.RRset, response: dns.message.Message
    ) -> DnssecState:
        anchor = self._anchor_for(qname)
        if anchor is None:
            return "insecure"
        sigs = response.get_rrset(
            response.answer, qname, dns.rdataclass.IN, dns.rdatatype.RRSIG, rrset.rdtype
        )
        if sigs is None:
            raise _Bogus(f"{qname} is under the trust anchor {anchor} but its answer is unsigned")
        failure = "no signature by a zone between the name and its trust anchor"
        for signer in dict.fromkeys(sig.signer for sig in sigs):
            if not (qname.is_subdomain(signer) and signer.is_subdomain(anchor)):
                continue
            keys = await self._zone_keys(signer, anchor, 0)
            try:
                dns.dnssec.validate(rrset, sigs, {signer: keys}, now=self._clock())
            except (dns.exception.DNSException, ValueError) as exc:
                failure = f"RRSIG over {qname} by {signer}: {exc}"
                continue
            return "secure"
        raise _Bogus(failure)

    async def _zone_keys(
        self, zone: dns.name.Name, anchor: dns.name.Name, depth: int
    ) -> dns.rrset.RRset:
        """The DNSKEY RRset of ``zone``, validated up to ``anchor``; raises ``_Bogus``."""
        hit = self._keys.get(zone)
        if hit is not None and self._clock() < hit[1]:
            return hit[0]
        if depth > MAX_CHAIN_DEPTH:
            raise _Bogus(f"chain from {zone} to {anchor} is longer than {MAX_CHAIN_DEPTH}")
        response = await self._query(zone, dns.rdatatype.DNSKEY)
        keys = sigs = None
        if response is not None:
            keys = response.get_rrset(
                response.answer, zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY
            )
            sigs = response.get_rrset(
                response.answer, zone, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY
            )
        if keys is None or sigs is None:
            raise _Bogus(f"{zone} has no signed DNSKEY RRset")
        trusted = self._anchors.get(zone)
        if trusted is not None:
            ds: Sequence[dns.rdata.Rdata] = trusted.ds
            pinned: Sequence[dns.rdata.Rdata] = trusted.dnskeys
        else:
            ds, pinned = await self._delegation(zone, anchor, depth), ()
        entry = [
            k
            for k in keys
            if k.flags & _ZONE_FLAG
            and not k.flags & _REVOKE_FLAG
            and (k in pinned or any(_ds_matches(zone, k, d) for d in ds))
        ]
        if not entry:
            raise _Bogus(f"no DNSKEY of {zone} matches its trust anchor or DS records")
        entry_set = dns.rrset.from_rdata_list(zone, keys.ttl, entry)
        try:
            dns.dnssec.validate(keys, sigs, {zone: entry_set}, now=self._clock())
        except (dns.exception.DNSException, ValueError) as exc:
            raise _Bogus(f"DNSKEY RRset of {zone}: {exc}") from None
        ttl = max(self._min_ttl, min(self._max_ttl, keys.ttl))
        self._keys[zone] = (keys, self._clock() + ttl)
        return keys

    async def _delegation(
        self, zone: dns.name.Name, anchor: dns.name.Name, depth: int
    ) -> list[dns.rdata.Rdata]:
        """The DS RRset of ``zone``, validated by its parent's keys."""
        if zone == anchor or not zone.is_subdomain(anchor):
            raise _Bogus(f"{zone} is not below the trust anchor {anchor}")
        response = await self._query(zone, dns.rdatatype.DS)
        ds = sigs = None
        if response is not None:
            ds = response.get_rrset(response.answer, zone, dns.rdataclass.IN, dns.rdatatype.DS)
            sigs = response.get_rrset(
                response.answer, zone, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.DS
            )
        if ds is None or sigs is None:
            raise _Bogus(
                f"no signed DS for {zone}: insecure delegations below a trust anchor "
                "are not accepted"
            )
        failure = f"DS of {zone} is not signed by its parent"
        for signer in dict.fromkeys(sig.signer for sig in sigs):
            if signer == zone or not zone.is_subdomain(signer) or not signer.is_subdomain(anchor):
                continue
            parent_keys = await self._zone_keys(signer, anchor, depth + 1)
            try:
                dns.dnssec.validate(ds, sigs, {signer: parent_keys}, now=self._clock())
            except (dns.exception.DNSException, ValueError) as exc:
                failure = f"DS of {zone}: {exc}"
                continue
            return list(ds)
        raise _Bogus(failure)


def _ds_matches(zone: dns.name.Name, key: dns.rdata.Rdata, ds: dns.rdata.Rdata) -> bool:
    if not isinstance(ds, dns.rdtypes.dsbase.DSBase):
        return False
    try:
        digest = dns.dnssectypes.DSDigest(ds.digest_type)
        return bool(dns.dnssec.make_ds(zone, key, digest, validating=True) == ds)
    except (dns.exception.DNSException, ValueError):
        return False
