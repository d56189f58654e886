"""``dsip issuer`` on loopback HTTPS: issue → verify → revoke → verifier says revoked;
hostile requests get their reason and change nothing; the reputation loop over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsip.agent.resolver import DidResolver
from dsip.core.identity import KeyPair
from dsip.core.trust.issuance import (
    CONTROL_TYP,
    Grant,
    IssuerState,
    sign_admin_request,
    sign_control_proof,
    sign_did_jws,
)
from dsip.core.trust.reputation import sign_rating
from dsip.core.trust.vc import DATA_INTEGRITY, VC_JWT, CredentialError, verify_credential
from dsip.errors import ConfigError
from dsip.services.issuer import IssuerConfig, IssuerService, load_issuer_config
from dsip.services.localca import LocalCA

pytestmark = [pytest.mark.timeout(60), pytest.mark.network]

ALICE = KeyPair.from_seed(bytes(range(32)))
ADMIN = KeyPair.from_seed(bytes(range(1, 33)))
MALLORY = KeyPair.from_seed(bytes(range(2, 34)))


def _seed_file(directory: Path) -> Path:
    path = directory / "issuer.seed"
    path.write_bytes(os.urandom(32))
    return path


@pytest.fixture
async def issuer(
    local_ca: LocalCA, client_ssl: ssl.SSLContext, tmp_path: Path
) -> AsyncIterator[IssuerService]:
    cfg = IssuerConfig(
        port=0,
        admins=(ADMIN.did,),
        state_file=str(tmp_path / "state.json"),
        key_seed_file=str(_seed_file(tmp_path)),
        grants=(
            Grant(ALICE.did, "DisplayNameCredential", {"displayName": "Alice Example"}),
            Grant(ALICE.did, "RoleCredential", {"role": "support", "organization": "Acme"}),
        ),
        reputation=True,
    ).validate()
    service = IssuerService(cfg, resolver=DidResolver(verify=client_ssl))
    await service.start(local_ca.server_context())
    yield service
    await service.stop()
    await service.resolver.aclose()


@pytest.fixture
async def http(client_ssl: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=client_ssl, timeout=5) as client:
        yield client


async def _request_credential(
    http: httpx.AsyncClient, issuer: IssuerService, key: KeyPair, ctype: str, fmt: str
) -> dict[str, Any]:
    r = await http.post(issuer.url + "/v1/challenges", json={"did": key.did})
    assert r.status_code == 201, r.text
    challenge = r.json()
    assert challenge["audience"] == issuer.did
    proof = sign_control_proof(
        key,
        audience=challenge["audience"],
        challenge=challenge["challenge"],
        credential_type=ctype,
        now=int(time.time()),
        fmt=fmt,
    )
    r = await http.post(issuer.url + "/v1/credentials", json={"proof": proof})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def _verifier_view(
    http: httpx.AsyncClient, issuer: IssuerService, client_ssl: ssl.SSLContext
) -> tuple[DidResolver, Any]:
    """What a relying party has: the issuer's DID document over did:web HTTPS resolution and
    the status list as it fetched it."""
    resolver = DidResolver(verify=client_ssl)
    await resolver.resolve(issuer.did)
    r = await http.get(issuer.url + "/status/1")
    assert r.status_code == 200
    status = r.json()
    return resolver, {issuer.url + "/status/1": status}.get


@pytest.mark.parametrize("fmt", [DATA_INTEGRITY, VC_JWT])
async def test_issue_verify_revoke(
    issuer: IssuerService, http: httpx.AsyncClient, client_ssl: ssl.SSLContext, fmt: str
) -> None:
    async with asyncio.timeout(30):
        issued = await _request_credential(http, issuer, ALICE, "DisplayNameCredential", fmt)
        credential = issued["credential"]
        assert isinstance(credential, str) == (fmt == VC_JWT)
        trusted = {"DisplayNameCredential": [issuer.did]}
        resolver, status = await _verifier_view(http, issuer, client_ssl)
        vc = verify_credential(
            credential,
            documents=resolver.cached,
            now=int(time.time()),
            trusted_issuers=trusted,
            subject=ALICE.did,
            status_lists=status,
            max_status_age=600,
        )
        assert (vc.issuer, vc.subject["displayName"], vc.status) == (
            issuer.did,
            "Alice Example",
            "valid",
        )
        assert vc.proof == fmt

        revoke = sign_admin_request(
            ADMIN, audience=issuer.did, credential_id=issued["id"], now=int(time.time())
        )
        r = await http.post(issuer.url + "/v1/revocations", json={"proof": revoke})
        assert r.status_code == 200, r.text
        # The administrator's request is single use.
        r = await http.post(issuer.url + "/v1/revocations", json={"proof": revoke})
        assert (r.status_code, r.json()["error"]) == (409, "issuance-challenge-unknown")

        _, status = await _verifier_view(http, issuer, client_ssl)
        with pytest.raises(CredentialError) as err:
            verify_credential(
                credential,
                documents=resolver.cached,
                now=int(time.time()),
                trusted_issuers=trusted,
                subject=ALICE.did,
                status_lists=status,
            )
        assert err.value.code == "credential-revoked"
        await resolver.aclose()
        # The state file carries the revocation across a restart.
        saved = json.loads(Path(str(issuer.config.state_file)).read_text())
        assert IssuerState.from_json(saved).bits.get(issued["statusListIndex"])


async def test_hostile_requests_get_reasons_and_change_nothing(
    issuer: IssuerService, http: httpx.AsyncClient
) -> None:
    core = issuer.core
    assert core is not None
    url = issuer.url

    async def post(path: str, **kw: Any) -> tuple[int, str]:
        r = await http.post(url + path, **kw)
        return r.status_code, r.json()["error"]

    async def challenge_for(key: KeyPair) -> str:
        r = await http.post(url + "/v1/challenges", json={"did": key.did})
        return str(r.json()["challenge"])

    def proof(key: KeyPair, nonce: str, **over: Any) -> str:
        claims = {
            "aud": issuer.did,
            "sub": key.did,
            "challenge": nonce,
            "credentialType": "DisplayNameCredential",
            "format": DATA_INTEGRITY,
            "iat": int(time.time()),
            **over,
        }
        return sign_did_jws(key, CONTROL_TYP, claims)

    async with asyncio.timeout(30):
        nonce = await challenge_for(ALICE)
        pending = core.pending
        good = proof(ALICE, nonce)
        head, body, sig = good.split(".")
        tampered_sig = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA")
        cases: list[tuple[str, dict[str, Any], tuple[int, str]]] = [
            ("malformed JSON", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, (400, "issuance-malformed")),
            ("duplicate keys", {"content": b'{"proof":"a","proof":"b"}', "headers": {"Content-Type": "application/json"}}, (400, "issuance-malformed")),
            ("not JSON content", {"content": b"proof=x", "headers": {"Content-Type": "text/plain"}}, (400, "issuance-malformed")),
            ("extra member", {"json": {"proof": good, "admin": True}}, (400, "issuance-malformed")),
            ("not a JWS", {"json": {"proof": "abc"}}, (400, "issuance-malformed")),
            ("oversized", {"json": {"proof": "x" * 20_000}}, (400, "issuance-malformed")),
            ("bad signature", {"json": {"proof": f"{head}.{body}.{tampered_sig}"}}, (401, "issuance-proof-invalid")),
            ("alg none", {"json": {"proof": f"{head}.{body}."}}, (401, "issuance-proof-invalid")),
            ("other issuer", {"json": {"proof": proof(ALICE, nonce, aud="did:web:other.example")}}, (401, "issuance-proof-invalid")),
            ("stale iat", {"json": {"proof": proof(ALICE, nonce, iat=int(time.time()) - 3600)}}, (401, "issuance-proof-invalid")),
            ("wrong DID", {"json": {"proof": proof(MALLORY, nonce)}}, (403, "issuance-wrong-did")),
            ("sub not signer", {"json": {"proof": proof(MALLORY, nonce, sub=ALICE.did)}}, (403, "issuance-wrong-did")),
            ("unknown challenge", {"json": {"proof": proof(ALICE, "never-issued")}}, (409, "issuance-challenge-unknown")),
            ("not granted", {"json": {"proof": proof(ALICE, nonce, credentialType="OrganizationCredential")}}, (403, "issuance-not-granted")),
            ("unknown type", {"json": {"proof": proof(ALICE, nonce, credentialType="Diploma")}}, (400, "issuance-malformed")),
            ("unknown format", {"json": {"proof": proof(ALICE, nonce, format="ldp_vc")}}, (400, "issuance-malformed")),
        ]  # fmt: skip
        for what, kw, expected in cases:
            assert await post("/v1/credentials", **kw) == expected, what
            assert (len(core.state.issued), core.pending) == (0, pending), what
        # Mallory, with a challenge of her own, is still not granted Alice's name.
        assert await post(
            "/v1/credentials", json={"proof": proof(MALLORY, await challenge_for(MALLORY))}
        ) == (403, "issuance-not-granted")

        # The good proof works once; replaying it is refused and issues nothing more.
        assert (await http.post(url + "/v1/credentials", json={"proof": good})).status_code == 201
        assert await post("/v1/credentials", json={"proof": good}) == (
            409,
            "issuance-challenge-unknown",
        )
        assert len(core.state.issued) == 1
        (cid,) = core.state.issued

        now = int(time.time())
        bits_before = core.state.bits.encode()
        bad_revocations = [
            (
                sign_admin_request(MALLORY, audience=issuer.did, credential_id=cid, now=now),
                (403, "issuance-unauthorized"),
            ),
            (
                sign_admin_request(ADMIN, audience=issuer.did, credential_id="urn:x", now=now),
                (404, "issuance-unknown-credential"),
            ),
            (
                sign_admin_request(ADMIN, audience="did:web:x.example", credential_id=cid, now=now),
                (401, "issuance-proof-invalid"),
            ),
            (
                sign_control_proof(
                    ADMIN, audience=issuer.did, challenge="c", credential_type="x", now=now
                ),
                (401, "issuance-proof-invalid"),
            ),
        ]
        for token, expected in bad_revocations:
            assert await post("/v1/revocations", json={"proof": token}) == expected
        assert core.state.bits.encode() == bits_before
        assert not core.is_revoked(cid)
        assert await post("/v1/challenges", json={"did": "not-a-did"}) == (
            400,
            "issuance-malformed",
        )


async def test_reputation_loop_over_http(issuer: IssuerService, http: httpx.AsyncClient) -> None:
    """A callee rates a caller; the issuer then issues the caller a ReputationScore."""
    assert issuer.reputation is not None
    callee = KeyPair.from_seed(bytes(range(3, 35)))
    issuer.reputation.attest(callee.did, 900)  # an established rater
    async with asyncio.timeout(30):
        now = int(time.time())
        rating = sign_rating(callee, ALICE.did, session="01JCALL", stars=5, now=now)
        r = await http.post(issuer.url + "/v1/ratings", json={"rating": rating})
        assert r.status_code == 201, r.text
        r = await http.post(issuer.url + "/v1/ratings", json={"rating": rating})
        assert (r.status_code, r.json()["error"]) == (409, "rating-duplicate")
        forged = sign_rating(MALLORY, ALICE.did, session="x", stars=1, now=now)
        head, _, sig = forged.split(".")
        body = rating.split(".")[1]
        r = await http.post(issuer.url + "/v1/ratings", json={"rating": f"{head}.{body}.{sig}"})
        assert (r.status_code, r.json()["error"]) == (400, "rating-signature")
        issued = await _request_credential(http, issuer, ALICE, "ReputationScore", VC_JWT)
        assert issued["credential"].count(".") == 2
        # a fresh score supersedes (revokes) the earlier one
        core = issuer.core
        assert core is not None
        assert not core.is_revoked(issued["id"])
        again = await _request_credential(http, issuer, ALICE, "ReputationScore", DATA_INTEGRITY)
        assert core.is_revoked(issued["id"])
        assert not core.is_revoked(again["id"])
        # (10·500 + 0.9·1000) / 10.9 = 541.28…
        score = issuer.reputation.score(ALICE.did)
        assert score is not None
        assert score[0] == 541


def test_config_file(tmp_path: Path) -> None:
    good = tmp_path / "issuer.toml"
    good.write_text(
        f"""
[issuer]
port = 0
admins = ["{ADMIN.did}"]
[[issuer.grants]]
subject = "{ALICE.did}"
type = "DisplayNameCredential"
claims = {{ displayName = "Alice" }}
[issuer.reputation]
period_s = 3600
"""
    )
    cfg = load_issuer_config(good)
    assert cfg.grants[0].claims == {"displayName": "Alice"}
    assert (cfg.reputation, cfg.reputation_period_s) == (True, 3600)
    bad = {
        "unknown key": "[issuer]\nprot = 1\n",
        "bad TOML": "[issuer\n",
        "wrong type": '[issuer]\nport = "80"\n',
        "admin not a DID": '[issuer]\nadmins = ["bob"]\n',
        "state without a key": '[issuer]\nstate_file = "s.json"\n',
        "grant type": '[issuer]\n[[issuer.grants]]\nsubject = "did:key:z"\ntype = "X"\nclaims = {}\n',
        "grant shape": '[issuer]\n[[issuer.grants]]\nsubject = "did:key:z"\n',
        "no table": "x = 1\n",
    }
    for what, text in bad.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(ConfigError):
            load_issuer_config(path)
        del what


async def test_bad_grant_claims_refuse_to_start(local_ca: LocalCA) -> None:
    cfg = IssuerConfig(
        port=0, grants=(Grant(ALICE.did, "DisplayNameCredential", {"displayName": 7}),)
    )
    service = IssuerService(cfg)
    with pytest.raises(ConfigError):
        await service.start(local_ca.server_context())
    await service.resolver.aclose()


def test_dsip_issuer_process(tmp_path: Path) -> None:
    """The real ``dsip issuer`` process: --help, then serve its DID document over TLS."""
    exe = Path(sys.executable).parent / "dsip"
    out = subprocess.run([exe, "issuer", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "/v1/credentials" in out.stdout
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [exe, "issuer", "--listen", "127.0.0.1:0", "--local-ca", str(tmp_path / "tls"),
         "--ready-file", str(ready)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
        doc = httpx.get(info["url"] + "/.well-known/did.json", verify=ctx, timeout=5).json()
        assert doc["id"] == info["did"] == f"did:web:localhost%3A{info['port']}"
        assert doc["assertionMethod"] == [info["did"] + "#key-1"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


async def test_rater_weight_from_a_presented_reputation_credential(
    local_ca: LocalCA, client_ssl: ssl.SSLContext, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A rater's rating weighs what its ReputationScore from a trusted issuer says; that
    credential is verified over did:web and its status list fetched over HTTPS."""
    callee = KeyPair.from_seed(bytes(range(4, 36)))
    graph = IssuerService(
        IssuerConfig(
            port=0,
            admins=(ADMIN.did,),
            grants=(Grant(callee.did, "ReputationScore", {"score": 90, "scale": 100}),),
        ).validate(),
        resolver=DidResolver(verify=client_ssl),
    )
    await graph.start(local_ca.server_context())
    aggregator = IssuerService(
        IssuerConfig(port=0, reputation=True, reputation_issuers=(graph.did,)).validate(),
        resolver=DidResolver(verify=client_ssl),
        http_verify=client_ssl,
    )
    await aggregator.start(local_ca.server_context())
    try:
        async with asyncio.timeout(30):
            assert aggregator.reputation is not None
            vc = await _request_credential(http, graph, callee, "ReputationScore", VC_JWT)
            url = aggregator.url + "/v1/ratings"
            now = int(time.time())

            def rating(rater: KeyPair, ratee: str) -> str:
                return sign_rating(rater, ratee, session="01JCALL", stars=5, now=now)

            # Mallory presents the callee's credential as her own: refused, nothing counted.
            r = await http.post(
                url, json={"rating": rating(MALLORY, ALICE.did), "credential": vc["credential"]}
            )
            assert (r.status_code, r.json()["error"]) == (400, "credential-subject")
            assert len(aggregator.reputation) == 0

            r = await http.post(
                url, json={"rating": rating(callee, ALICE.did), "credential": vc["credential"]}
            )
            assert r.status_code == 201, r.text
            assert aggregator.reputation.standing(callee.did) == 900
            # (10·500 + 0.9·1000) / 10.9 = 541.28…
            assert aggregator.reputation.score(ALICE.did) == (
                541,
                "1 ratings, 1 from established raters",
            )

            # Once the issuer revokes it, the credential no longer gives weight.
            revoke = sign_admin_request(ADMIN, audience=graph.did, credential_id=vc["id"], now=now)
            assert (
                await http.post(graph.url + "/v1/revocations", json={"proof": revoke})
            ).status_code == 200
            other = KeyPair.from_seed(bytes(range(5, 37)))
            r = await http.post(
                url, json={"rating": rating(callee, other.did), "credential": vc["credential"]}
            )
            assert (r.status_code, r.json()["error"]) == (400, "credential-revoked")
            assert aggregator.reputation.score(other.did) is None
            assert aggregator.reputation.standing(callee.did) is None
    finally:
        await aggregator.stop()
        await graph.stop()
        await aggregator.resolver.aclose()
        await graph.resolver.aclose()


async def test_revocations_survive_a_restart(
    local_ca: LocalCA, client_ssl: ssl.SSLContext, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    from dsip.services.ports import free_port

    cfg = IssuerConfig(
        port=free_port(),
        admins=(ADMIN.did,),
        state_file=str(tmp_path / "state.json"),
        key_seed_file=str(_seed_file(tmp_path)),
        grants=(Grant(ALICE.did, "DisplayNameCredential", {"displayName": "Alice Example"}),),
    ).validate()
    first = IssuerService(cfg, resolver=DidResolver(verify=client_ssl))
    await first.start(local_ca.server_context())
    try:
        async with asyncio.timeout(30):
            issued = await _request_credential(
                http, first, ALICE, "DisplayNameCredential", DATA_INTEGRITY
            )
            kept = await _request_credential(http, first, ALICE, "DisplayNameCredential", VC_JWT)
            revoke = sign_admin_request(
                ADMIN, audience=first.did, credential_id=issued["id"], now=int(time.time())
            )
            assert (
                await http.post(first.url + "/v1/revocations", json={"proof": revoke})
            ).status_code == 200
    finally:
        await first.stop()
        await first.resolver.aclose()
    second = IssuerService(cfg, resolver=DidResolver(verify=client_ssl))
    await second.start(local_ca.server_context())
    try:
        async with asyncio.timeout(30):
            assert second.did == first.did
            resolver, status = await _verifier_view(http, second, client_ssl)
            args: dict[str, Any] = {
                "documents": resolver.cached,
                "now": int(time.time()),
                "trusted_issuers": {"DisplayNameCredential": [second.did]},
                "status_lists": status,
            }
            assert verify_credential(kept["credential"], **args).status == "valid"
            with pytest.raises(CredentialError) as err:
                verify_credential(issued["credential"], **args)
            assert err.value.code == "credential-revoked"
            await resolver.aclose()
    finally:
        await second.stop()
        await second.resolver.aclose()
