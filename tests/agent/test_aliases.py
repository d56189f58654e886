"""AliasResolver against real servers on loopback: WebFinger over HTTPS (trustme CA, aiohttp)
and DNS from NSD with zones signed by ldns-signzone (tests/dnsserver.py). No mocked I/O."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.agent.aliases import (
    DSIP_DID_REL,
    Alias,
    AliasAnswer,
    AliasResolver,
    decide,
    did_from_jrd,
    did_from_txt,
    normalize_alias,
    parse_trust_anchors,
)
from dsip.errors import ConfigError, ResolutionError
from dsip.services.localca import LocalCA
from dsip.services.webfinger import WebFingerResponder, WebFingerServer
from tests.dnsserver import (
    ALICE,
    BOB_DNS,
    CAROL_DNS,
    LONG_DID,
    DnsServer,
    dns_server_fixture,  # noqa: F401 - the dns_server fixture
)

pytestmark = [pytest.mark.network, pytest.mark.timeout(30)]

BOB_WF = "did:web:voice.example:users:bob-per-webfinger"
CAROL_WF = "did:web:voice.example:users:carol-per-webfinger"


# --- normalization (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "user", "domain"),
    [
        ("acct:alice@example.com", "alice", "example.com"),
        ("ACCT:Alice@Example.COM", "Alice", "example.com"),
        ("alice@example.com.", "alice", "example.com"),
        ("  alice@example.com\n", "alice", "example.com"),
        ("first.last+tag@example.com", "first.last+tag", "example.com"),
        ("alice@bücher.example", "alice", "xn--bcher-kva.example"),
        ("alice@BÜCHER.example", "alice", "xn--bcher-kva.example"),
        ("alice@localhost", "alice", "localhost"),
    ],
)
def test_normalize_accepts(raw: str, user: str, domain: str) -> None:
    alias = normalize_alias(raw)
    assert (alias.user, alias.domain) == (user, domain)
    assert alias.acct == f"acct:{user}@{domain}"
    assert normalize_alias(alias.acct) == alias  # idempotent


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "alias-invalid"),
        ("alice", "alias-invalid"),
        ("@example.com", "alias-invalid"),
        ("alice@", "alias-invalid"),
        ("acct:", "alias-invalid"),
        ("a@b@example.com", "alias-invalid"),
        ("al ice@example.com", "alias-invalid"),
        ("alice@exa mple.com", "alias-invalid"),
        ("alice%40home@example.com", "alias-invalid"),
        ("álvaro@example.com", "alias-invalid"),
        ("alice\x00@example.com", "alias-invalid"),
        ("alice@example.com\n_did.evil.com", "alias-invalid"),
        ("alice@-bad.example", "alias-invalid"),
        ("alice@x..example", "alias-invalid"),
        ("alice@127.0.0.1", "alias-invalid"),
        ("alice@" + "a" * 64 + ".example", "alias-invalid"),
        ("alice@under_score.example", "alias-invalid"),
        ("alice@exa%2emple.com", "alias-invalid"),
        ("alice@example.com/path", "alias-invalid"),
        ("a" * 65 + "@example.com", "alias-invalid"),
        ("a" * 400 + "@example.com", "alias-too-long"),
    ],
)
def test_normalize_refuses_hostile_input(raw: str, code: str) -> None:
    with pytest.raises(ResolutionError) as info:
        normalize_alias(raw)
    assert info.value.code == code
    assert info.value.remote is False


def test_normalize_refuses_non_strings() -> None:
    for value in (None, 42, b"alice@example.com", ["alice@example.com"]):
        with pytest.raises(ResolutionError, match="alias-invalid"):
            normalize_alias(value)


def test_dns_name_is_built_from_labels() -> None:
    name = normalize_alias("alice@voice.example").dns_name()
    assert name.to_text() == "_did.alice.voice.example."
    # A '.' in the user part would change which zone answers: refused for DNS only.
    with pytest.raises(ResolutionError) as info:
        normalize_alias("alice.evil@voice.example").dns_name()
    assert info.value.code == "alias-dns-unrepresentable"
    long = Alias("u" * 63, ".".join(["d" * 63] * 3) + ".example")
    with pytest.raises(ResolutionError, match="alias-dns-unrepresentable"):
        long.dns_name()


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400) | st.from_regex(r"(acct:)?[a-zA-Z0-9.+~_-]{0,70}@[^@]{0,80}"))
def test_normalize_never_raises_anything_else(raw: str) -> None:
    try:
        alias = normalize_alias(raw)
    except ResolutionError:
        return
    assert normalize_alias(alias.acct) == alias
    assert alias.domain.isascii()
    assert alias.domain == alias.domain.lower()
    if "." not in alias.user and len(alias.user) + len(alias.domain) < 180:
        name = alias.dns_name()
        assert len(name.labels) == 2 + len(alias.domain.split(".")) + 1


# --- JRD / TXT parsing (pure) --------------------------------------------------------------


def _jrd(**members: Any) -> bytes:
    return json.dumps(members).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_jrd(links=[{"rel": DSIP_DID_REL, "href": ALICE}]), ALICE),
        (_jrd(aliases=[ALICE, "https://voice.example/alice"]), ALICE),
        (_jrd(aliases=[ALICE], links=[{"rel": DSIP_DID_REL, "href": ALICE}]), ALICE),
        (_jrd(subject="acct:a@b.c", links=[{"rel": "self", "href": "https://x"}]), None),
        (_jrd(), None),
    ],
)
def test_did_from_jrd(body: bytes, expected: str | None) -> None:
    assert did_from_jrd(body) == expected


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"<html>not json</html>", "jrd-invalid"),
        (b"\xff\xfe", "jrd-invalid"),
        (b"[]", "jrd-invalid"),
        (b'{"links": {}}', "jrd-invalid"),
        (b'{"links": ["x"]}', "jrd-invalid"),
        (b'{"aliases": [1]}', "jrd-invalid"),
        (b'{"links": [], "links": []}', "jrd-invalid"),  # duplicate member
        (b"[" * 200 + b"]" * 200, "jrd-invalid"),
        (_jrd(links=[{"rel": DSIP_DID_REL, "href": "did:web:"}]), "alias-did-invalid"),
        (_jrd(links=[{"rel": DSIP_DID_REL}]), "alias-did-invalid"),
        (_jrd(aliases=["did:not valid"]), "alias-did-invalid"),
        (_jrd(aliases=[ALICE], links=[{"rel": DSIP_DID_REL, "href": BOB_WF}]), "jrd-ambiguous"),
    ],
)
def test_did_from_jrd_refuses(body: bytes, code: str) -> None:
    with pytest.raises(ResolutionError) as info:
        did_from_jrd(body)
    assert info.value.code == code


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_did_from_jrd_fuzz(body: bytes) -> None:
    try:
        did = did_from_jrd(body)
    except ResolutionError:
        return
    assert did is None or did.startswith("did:")


def test_did_from_txt() -> None:
    assert did_from_txt([[b"v=spf1 -all"], [b"did=", ALICE.encode()]]) == ALICE
    assert did_from_txt([[b"other"]]) is None
    assert did_from_txt([[f"did={ALICE}".encode()], [f"did={ALICE}".encode()]]) == ALICE
    with pytest.raises(ResolutionError, match="dns-ambiguous"):
        did_from_txt([[f"did={ALICE}".encode()], [f"did={BOB_DNS}".encode()]])
    with pytest.raises(ResolutionError, match="alias-did-invalid"):
        did_from_txt([[b"did=\xff"]])
    with pytest.raises(ResolutionError, match="alias-did-invalid"):
        did_from_txt([[b"did=did:web:a b"]])


def test_trust_anchor_parsing() -> None:
    text = (
        "; comment\n"
        "signed.test.\tIN\tDS\t46023 15 2 "
        "064e90e0d06418170fde6c59c793092e61231f4e4f556af92ac0a67d4acb3405\n"
        "other.test. 3600 IN DNSKEY 257 3 15 25nMynee2BtdYvezh/h2Xg2bJIybtVQU+dg2eLJmQVA= ;{id}\n"
    )
    anchors = parse_trust_anchors(text)
    assert [(a.zone.to_text(), len(a.ds), len(a.dnskeys)) for a in anchors] == [
        ("signed.test.", 1, 0),
        ("other.test.", 0, 1),
    ]
    for bad in ("signed.test IN DS 1 15 2 00", "x. IN A 127.0.0.1", "x. IN DS nonsense"):
        with pytest.raises(ConfigError):
            parse_trust_anchors(bad)


# --- the decision (pure, v0.7 §8.3) --------------------------------------------------------

ALIAS = Alias("carol", "plain.test")


def _wf(did: str | None, **kw: Any) -> AliasAnswer:
    return AliasAnswer("webfinger", "https://x/.well-known/webfinger", did=did, ttl=600, **kw)


def _dns(did: str | None, dnssec: Any = "insecure", **kw: Any) -> AliasAnswer:
    return AliasAnswer("dns", "_did.carol.plain.test.", did=did, dnssec=dnssec, ttl=120, **kw)


def test_decide_agreement_and_single_paths() -> None:
    both = decide(ALIAS, [_wf(ALICE), _dns(ALICE, "secure")])
    assert (both.did, both.answered_by, both.dnssec, both.ttl) == (
        ALICE,
        ("webfinger", "dns"),
        "secure",
        120,
    )
    only_dns = decide(ALIAS, [_wf(None), _dns(ALICE)])
    assert only_dns.answered_by == ("dns",)
    only_wf = decide(ALIAS, [_wf(ALICE), _dns(None, error="dns-timeout", message="slow")])
    assert (only_wf.answered_by, only_wf.dnssec) == (("webfinger",), None)


@pytest.mark.parametrize("prefer", [False, True])
def test_decide_conflicts(prefer: bool) -> None:
    # Both authenticated and disagreeing: no principled winner, whatever the policy.
    with pytest.raises(ResolutionError, match="alias-conflict"):
        decide(ALIAS, [_wf(CAROL_WF), _dns(CAROL_DNS, "secure")], **_policy(prefer))
    answers = [_wf(CAROL_WF), _dns(CAROL_DNS, "insecure")]
    if not prefer:
        with pytest.raises(ResolutionError, match="alias-conflict"):
            decide(ALIAS, answers)
    else:
        result = decide(ALIAS, answers, prefer_webfinger_over_insecure_dns=True)
        assert (result.did, result.answered_by, result.overruled) == (
            CAROL_WF,
            ("webfinger",),
            ("dns",),
        )


def _policy(prefer: bool) -> dict[str, bool]:
    return {"prefer_webfinger_over_insecure_dns": prefer}


def test_decide_failures() -> None:
    with pytest.raises(ResolutionError, match="dnssec-bogus"):
        decide(ALIAS, [_wf(ALICE), _dns(None, "bogus", message="stale RRSIG")])
    with pytest.raises(ResolutionError, match="alias-not-found"):
        decide(ALIAS, [_wf(None), _dns(None)])
    with pytest.raises(ResolutionError) as info:
        decide(ALIAS, [_wf(None, error="jrd-too-large", message="big"), _dns(None)])
    assert info.value.code == "jrd-too-large"


# --- WebFinger over HTTPS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ca() -> LocalCA:
    return LocalCA.create()


@pytest.fixture
async def webfinger(local_ca: LocalCA) -> AsyncIterator[WebFingerServer]:
    responder = WebFingerResponder(
        {
            "acct:alice@wf.test": LONG_DID,
            "acct:alice@signed.test": ALICE,
            "acct:bob@signed.test": BOB_WF,
            "acct:carol@plain.test": CAROL_WF,
            "acct:alice@tampered.test": ALICE,
            "acct:first.last@signed.test": ALICE,
        },
        max_age=120,
    )
    async with WebFingerServer(responder, ssl_context=local_ca.server_context()) as server:
        yield server


class Hostile:
    """An HTTPS server misbehaving in one way per path prefix; counts requests."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.port = 0
        self.runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{case}/.well-known/webfinger", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        case = request.match_info["case"]
        self.hits[case] += 1
        ok = json.dumps({"links": [{"rel": DSIP_DID_REL, "href": ALICE}]})
        query = request.rel_url.raw_query_string
        if case == "ok":
            return web.Response(body=ok.encode(), content_type="application/jrd+json")
        if case == "json":  # application/json is tolerated
            return web.Response(body=ok.encode(), content_type="application/json")
        if case == "ctype":
            return web.Response(body=ok.encode(), content_type="text/html")
        if case == "big":
            pad = "x" * 100_000
            body = json.dumps({"links": [{"rel": DSIP_DID_REL, "href": ALICE}], "p": pad})
            return web.Response(body=body.encode(), content_type="application/jrd+json")
        if case == "chunked":  # no Content-Length: the cap must hold while streaming
            resp = web.StreamResponse(headers={"Content-Type": "application/jrd+json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(50):
                await resp.write(b" " * 4096)
            await resp.write_eof()
            return resp
        if case == "elsewhere":  # same port, another host name: another origin
            raise web.HTTPFound(f"https://127.0.0.1:{self.port}/ok/.well-known/webfinger?{query}")
        if case == "downgrade":
            raise web.HTTPFound(f"http://localhost:{self.port}/ok/.well-known/webfinger?{query}")
        if case == "same":
            raise web.HTTPFound(f"/ok/.well-known/webfinger?{query}")
        if case == "loop":
            raise web.HTTPFound(f"/loop/.well-known/webfinger?{query}")
        if case == "baddid":
            body = json.dumps({"links": [{"rel": DSIP_DID_REL, "href": "did:web:"}]})
            return web.Response(body=body.encode(), content_type="application/jrd+json")
        if case == "notjson":
            return web.Response(body=b"{links:", content_type="application/jrd+json")
        if case == "gzip":
            return web.Response(
                body=b"\x1f\x8b",
                headers={"Content-Type": "application/jrd+json", "Content-Encoding": "gzip"},
            )
        if case == "slow":
            await asyncio.sleep(3)
            return web.Response(body=ok.encode(), content_type="application/jrd+json")
        if case == "error":
            return web.Response(status=500, text="oops")
        return web.Response(status=404, text="unknown")


@pytest.fixture
async def hostile(local_ca: LocalCA) -> AsyncIterator[Hostile]:
    server = Hostile()
    server.runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=0.2)
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0, ssl_context=local_ca.server_context())
    await site.start()
    server.port = int(server.runner.addresses[0][1])
    yield server
    await server.runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


Factory = Callable[..., AliasResolver]


@pytest.fixture
async def make_resolver(
    local_ca: LocalCA, webfinger: WebFingerServer, hostile: Hostile
) -> AsyncIterator[Factory]:
    made: list[AliasResolver] = []
    wf = f"https://localhost:{webfinger.port}"
    endpoints = dict.fromkeys(("wf.test", "signed.test", "plain.test", "tampered.test"), wf)
    for case in (*HOSTILE_CASES, "ok", "json", "same"):
        endpoints[f"{case}.test"] = f"https://localhost:{hostile.port}/{case}"

    def factory(**kw: Any) -> AliasResolver:
        options: dict[str, Any] = {
            "verify": local_ca.client_context(),
            "webfinger_endpoints": endpoints,
            "timeout": 2.0,
            "methods": ("webfinger",),
        }
        options.update(kw)
        resolver = AliasResolver(**options)
        made.append(resolver)
        return resolver

    yield factory
    for r in made:
        await r.aclose()


HOSTILE_CASES = {
    "ctype": "jrd-content-type",
    "big": "jrd-too-large",
    "chunked": "jrd-too-large",
    "elsewhere": "redirect-refused",
    "downgrade": "redirect-refused",
    "loop": "redirect-refused",
    "baddid": "alias-did-invalid",
    "notjson": "jrd-invalid",
    "gzip": "jrd-invalid",
    "error": "webfinger-status",
}


async def test_webfinger_found_and_cached(
    make_resolver: Factory, webfinger: WebFingerServer
) -> None:
    clock = Clock()
    resolver = make_resolver(clock=clock)
    result = await resolver.resolve("acct:alice@WF.test")
    assert (result.did, result.answered_by, result.alias) == (
        LONG_DID,
        ("webfinger",),
        "acct:alice@wf.test",
    )
    assert result.ttl == 120  # Cache-Control: max-age=120
    assert result.answers[0].source.startswith(f"https://localhost:{webfinger.port}/")
    assert not result.cached
    again = await resolver.resolve("alice@wf.test")
    assert again.cached
    assert again.did == LONG_DID
    # After the TTL it is asked again; a changed mapping is then seen.
    webfinger.responder.set("acct:alice@wf.test", ALICE)
    clock.now += 121
    fresh = await resolver.resolve("alice@wf.test")
    assert (fresh.did, fresh.cached) == (ALICE, False)


async def test_webfinger_unknown_is_not_found(make_resolver: Factory) -> None:
    resolver = make_resolver()
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("nobody@wf.test")
    assert info.value.code == "alias-not-found"


@pytest.mark.parametrize(("case", "code"), sorted(HOSTILE_CASES.items()))
async def test_webfinger_hostile_server(
    make_resolver: Factory, hostile: Hostile, case: str, code: str
) -> None:
    with pytest.raises(ResolutionError) as info:
        await make_resolver().resolve(f"alice@{case}.test")
    assert info.value.code == code
    assert hostile.hits["ok"] == 0  # a refused redirect is never followed


@pytest.mark.parametrize("case", ["ok", "json", "same"])
async def test_webfinger_tolerated(make_resolver: Factory, hostile: Hostile, case: str) -> None:
    result = await make_resolver().resolve(f"alice@{case}.test")
    assert result.did == ALICE


async def test_webfinger_timeout(
    make_resolver: Factory, local_ca: LocalCA, hostile: Hostile
) -> None:
    resolver = make_resolver(
        timeout=0.5, webfinger_endpoints={"slow.test": f"https://localhost:{hostile.port}/slow"}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("alice@slow.test")
    assert info.value.code == "webfinger-timeout"
    assert loop.time() - started < 2


async def test_webfinger_tls_is_verified(make_resolver: Factory) -> None:
    resolver = make_resolver(verify=LocalCA.create().client_context())  # some other CA
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("alice@wf.test")
    assert info.value.code == "webfinger-unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message


async def test_concurrent_lookups_share_one_fetch(make_resolver: Factory, hostile: Hostile) -> None:
    resolver = make_resolver()
    results = await asyncio.gather(*(resolver.resolve("alice@ok.test") for _ in range(5)))
    assert {r.did for r in results} == {ALICE}
    assert hostile.hits["ok"] == 1


async def test_failures_are_cached_briefly(make_resolver: Factory, hostile: Hostile) -> None:
    clock = Clock()
    resolver = make_resolver(clock=clock, negative_ttl=10)
    for _ in range(3):
        with pytest.raises(ResolutionError, match="webfinger-status"):
            await resolver.resolve("alice@error.test")
    assert hostile.hits["error"] == 1
    clock.now += 11
    with pytest.raises(ResolutionError, match="webfinger-status"):
        await resolver.resolve("alice@error.test")
    assert hostile.hits["error"] == 2


def test_configuration_is_validated() -> None:
    with pytest.raises(ConfigError):
        AliasResolver(methods=())
    with pytest.raises(ConfigError):
        AliasResolver(methods=("ens",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        AliasResolver(webfinger_endpoints={"a.test": "http://localhost:80"})
    with pytest.raises(ConfigError):
        AliasResolver(webfinger_endpoints={"not a domain": "https://localhost:80"})
    with pytest.raises(ConfigError):
        AliasResolver(trust_anchors="signed.test. IN DS 1 15 2 zz")


# --- DNS TXT from a real authoritative server ----------------------------------------------


def _dns_options(server: DnsServer) -> dict[str, Any]:
    return {
        "methods": ("dns",),
        "dns_nameservers": [server.host],
        "dns_port": server.port,
        "trust_anchors": server.trust_anchors,
    }


@pytest.mark.parametrize(
    ("alias", "did", "dnssec"),
    [
        ("alice@signed.test", ALICE, "secure"),
        ("split@signed.test", LONG_DID, "secure"),  # TXT strings concatenated
        ("alice@child.parent.test", ALICE, "secure"),  # anchor at parent.test, DS chain
        ("alice@plain.test", ALICE, "insecure"),  # no anchor covers it
    ],
)
async def test_dns_answers(
    make_resolver: Factory, dns_server: DnsServer, alias: str, did: str, dnssec: str
) -> None:
    result = await make_resolver(**_dns_options(dns_server)).resolve(alias)
    assert (result.did, result.dnssec, result.answered_by) == (did, dnssec, ("dns",))
    assert result.ttl == 300
    assert result.answers[0].source == f"_did.{normalize_alias(alias).user}.{alias.split('@')[1]}."


@pytest.mark.parametrize(
    ("alias", "why"),
    [
        ("alice@expired.test", "no RRSIGs validated"),  # signatures expired yesterday
        ("alice@tampered.test", "RRSIG over _did.alice.tampered.test."),  # value rewritten
        ("alice@stripped.test", "unsigned"),  # anchor exists, signatures stripped
        ("alice@rogue.parent.test", "matches its trust anchor or DS"),  # key not in parent DS
    ],
)
async def test_dnssec_bogus_is_refused(
    make_resolver: Factory, dns_server: DnsServer, alias: str, why: str
) -> None:
    with pytest.raises(ResolutionError) as info:
        await make_resolver(**_dns_options(dns_server)).resolve(alias)
    assert info.value.code == "dnssec-bogus"
    assert why in info.value.message


async def test_dnssec_secure_zone_without_anchor_is_insecure(
    make_resolver: Factory, dns_server: DnsServer
) -> None:
    options = _dns_options(dns_server) | {"trust_anchors": ""}
    result = await make_resolver(**options).resolve("alice@signed.test")
    assert result.dnssec == "insecure"
    # Without anchors even tampered data is merely "insecure": the anchor is the trust.
    tampered = await make_resolver(**options).resolve("alice@tampered.test")
    assert tampered.dnssec == "insecure"


async def test_dnssec_uses_the_clock(make_resolver: Factory, dns_server: DnsServer) -> None:
    clock = Clock()
    clock.now = 4_000_000_000  # year 2096: every signature has long expired
    with pytest.raises(ResolutionError, match="dnssec-bogus"):
        await make_resolver(clock=clock, **_dns_options(dns_server)).resolve("alice@signed.test")


@pytest.mark.parametrize(
    ("alias", "code"),
    [
        ("nobody@signed.test", "alias-not-found"),  # NXDOMAIN
        ("other@signed.test", "alias-not-found"),  # TXT without did=
        ("multi@signed.test", "dns-ambiguous"),
        ("junk@signed.test", "alias-did-invalid"),
        ("cname@signed.test", "dns-cname-unsupported"),
        ("first.last@signed.test", "alias-dns-unrepresentable"),
    ],
)
async def test_dns_refusals(
    make_resolver: Factory, dns_server: DnsServer, alias: str, code: str
) -> None:
    with pytest.raises(ResolutionError) as info:
        await make_resolver(**_dns_options(dns_server)).resolve(alias)
    assert info.value.code == code


@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_dns_timeout(make_resolver: Factory, silent_udp: int) -> None:
    resolver = make_resolver(
        methods=("dns",), dns_nameservers=["127.0.0.1"], dns_port=silent_udp, timeout=0.5
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("alice@signed.test")
    assert info.value.code == "dns-timeout"
    assert loop.time() - started < 2


# --- both paths: agreement, conflict, policy (v0.7 §8.3) -----------------------------------


def _both(server: DnsServer, **kw: Any) -> dict[str, Any]:
    return _dns_options(server) | {"methods": ("webfinger", "dns")} | kw


async def test_agreement_reports_both_paths(make_resolver: Factory, dns_server: DnsServer) -> None:
    result = await make_resolver(**_both(dns_server)).resolve("acct:alice@signed.test")
    assert result.did == ALICE
    assert result.answered_by == ("webfinger", "dns")
    assert result.dnssec == "secure"
    assert [a.method for a in result.answers] == ["webfinger", "dns"]
    reordered = await make_resolver(**_both(dns_server, methods=("dns", "webfinger"))).resolve(
        "alice@signed.test"
    )
    assert reordered.answered_by == ("dns", "webfinger")


@pytest.mark.parametrize("prefer", [False, True])
async def test_disagreement_with_dnssec_is_a_conflict(
    make_resolver: Factory, dns_server: DnsServer, prefer: bool
) -> None:
    resolver = make_resolver(**_both(dns_server, prefer_webfinger_over_insecure_dns=prefer))
    with pytest.raises(ResolutionError) as info:
        await resolver.resolve("bob@signed.test")
    assert info.value.code == "alias-conflict"
    assert BOB_WF in info.value.message
    assert BOB_DNS in info.value.message


async def test_webfinger_may_overrule_insecure_dns(
    make_resolver: Factory, dns_server: DnsServer
) -> None:
    with pytest.raises(ResolutionError, match="alias-conflict"):
        await make_resolver(**_both(dns_server)).resolve("carol@plain.test")
    policy = _both(dns_server, prefer_webfinger_over_insecure_dns=True)
    result = await make_resolver(**policy).resolve("carol@plain.test")
    assert (result.did, result.answered_by, result.overruled) == (
        CAROL_WF,
        ("webfinger",),
        ("dns",),
    )
    assert result.dnssec is None  # the DNS answer that counted: none
    assert [a.did for a in result.answers] == [CAROL_WF, CAROL_DNS]


async def test_bogus_dns_refuses_even_when_webfinger_answers(
    make_resolver: Factory, dns_server: DnsServer
) -> None:
    with pytest.raises(ResolutionError) as info:
        await make_resolver(**_both(dns_server)).resolve("alice@tampered.test")
    assert info.value.code == "dnssec-bogus"


async def test_one_path_suffices(make_resolver: Factory, dns_server: DnsServer) -> None:
    # The WebFinger responder does not know alice@plain.test (404); DNS does.
    result = await make_resolver(**_both(dns_server)).resolve("alice@plain.test")
    assert (result.did, result.answered_by, result.dnssec) == (ALICE, ("dns",), "insecure")
    # A user part with '.' has no DNS form: WebFinger alone answers.
    dotted = await make_resolver(**_both(dns_server)).resolve("first.last@signed.test")
    assert dotted.answered_by == ("webfinger",)
    assert dotted.answers[1].error == "alias-dns-unrepresentable"


async def test_first_answer_wins_without_cross_check(
    make_resolver: Factory, dns_server: DnsServer, hostile: Hostile
) -> None:
    resolver = make_resolver(
        **_both(dns_server, methods=("dns", "webfinger"), cross_check=False),
    )
    result = await resolver.resolve("carol@plain.test")  # a conflict nobody looks at
    assert (result.did, result.answered_by) == (CAROL_DNS, ("dns",))
    assert [a.method for a in result.answers] == ["dns"]
