"""The trust part of ``dsip demo``: an issuer on loopback HTTPS, a Rich Caller ID that
verifies and then does not (revoked), the reputation loop, selective disclosure and a
"score ≥ X" proof that hides the score.

Everything is real: the issuer is :class:`~dsip.services.issuer.IssuerService` over TLS
(certificates from the demo's local CA), its did:web document is fetched over HTTPS by
:class:`~dsip.agent.resolver.DidResolver`, credentials and proofs are Ed25519 / CL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from dsip.agent.resolver import DidResolver
from dsip.core.envelope import make_payload
from dsip.core.identity import KeyPair
from dsip.core.trust.disclosure import issue_sd_jwt_vc, present_sd_jwt_vc, verify_sd_jwt_vc
from dsip.core.trust.issuance import Grant, sign_admin_request, sign_control_proof
from dsip.core.trust.predicates import (
    ScoreHolder,
    ScoreIssuer,
    nonce_for,
    score_request,
    verify_definition,
    verify_score_proof,
)
from dsip.core.trust.rcid import IssuerTrust, identity_with_rcid, make_rcid, render_caller
from dsip.core.trust.reputation import sign_rating
from dsip.core.trust.vc import DATA_INTEGRITY
from dsip.errors import DsipError
from dsip.services.issuer import IssuerConfig, IssuerService
from dsip.services.localca import LocalCA

__all__ = ["demo_trust"]


async def demo_trust(
    console: Any, ca: LocalCA, tmp: Path, expect: Callable[[bool, str], None]
) -> None:
    """Issue → verify → revoke a display name; rate → ReputationScore; disclose one claim;
    prove a reputation threshold without the score."""
    console.print(
        "\n[bold]11. Credentials and reputation[/bold] (a local issuer over HTTPS; "
        "SD-JWT VC and AnonCreds predicates)"
    )
    alice, admin, bob = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    cfg = IssuerConfig(
        port=0,
        admins=(admin.did,),
        grants=(Grant(alice.did, "DisplayNameCredential", {"displayName": "Alice Example"}),),
        reputation=True,
    ).validate()
    resolver = DidResolver(verify=ca.client_context())
    issuer = IssuerService(cfg, resolver=resolver)
    await issuer.start(ca.server_context())
    try:
        async with httpx.AsyncClient(verify=ca.client_context(), timeout=5) as http:
            console.print(f"   issuer [bold]{issuer.did}[/] listening on {issuer.url}")

            async def obtain(key: KeyPair, ctype: str) -> dict[str, Any]:
                r = await http.post(issuer.url + "/v1/challenges", json={"did": key.did})
                c = r.json()
                proof = sign_control_proof(
                    key,
                    audience=c["audience"],
                    challenge=c["challenge"],
                    credential_type=ctype,
                    now=int(time.time()),
                    fmt=DATA_INTEGRITY,
                )
                r = await http.post(issuer.url + "/v1/credentials", json={"proof": proof})
                body: dict[str, Any] = r.json()
                expect(r.status_code == 201, f"issuer issued {ctype}")
                return body

            issued = await obtain(alice, "DisplayNameCredential")
            console.print("   alice proved control of her DID and got a DisplayNameCredential")

            await resolver.resolve(issuer.did)  # did:web over HTTPS, as any verifier does

            async def caller_display() -> Any:
                status = (await http.get(issuer.url + "/status/1")).json()
                invite = make_payload(
                    "invite",
                    sender=alice.did,
                    now=int(time.time()),
                    to=bob.did,
                    media=[{"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]}],
                    transports=[{"id": "transport:webrtc"}],
                    identity=identity_with_rcid(
                        make_rcid([issued["credential"]], display_name="Alice Example")
                    ),
                )  # fmt: skip
                return render_caller(
                    invite,
                    alice.did,
                    now=int(time.time()),
                    documents=resolver.cached,
                    trust=IssuerTrust.of({"DisplayNameCredential": [issuer.did]}),
                    status_lists={issuer.url + "/status/1": status}.get,
                )

            shown = await caller_display()
            console.print(f"   bob's phone: [green]{shown.name}[/] — {shown.name_basis}")
            expect(shown.name_verified, "RCID name verified before revocation")

            revoke = sign_admin_request(
                admin, audience=issuer.did, credential_id=issued["id"], now=int(time.time())
            )
            r = await http.post(issuer.url + "/v1/revocations", json={"proof": revoke})
            expect(r.status_code == 200, "administrator revoked the credential")
            shown = await caller_display()
            console.print(f"   after revocation: {shown.name} — {'; '.join(shown.unverified)}")
            expect(
                not shown.name_verified and any("revoked" in u for u in shown.unverified),
                "RCID shows unverified (revoked) after revocation",
            )

            assert issuer.reputation is not None
            issuer.reputation.attest(bob.did, 900)  # bob is an established rater
            rating = sign_rating(bob, alice.did, session="demo", stars=5, now=int(time.time()))
            r = await http.post(issuer.url + "/v1/ratings", json={"rating": rating})
            expect(r.status_code == 201, "bob's signed rating accepted")
            for _ in range(50):  # a swarm of fresh DIDs trying to sink alice
                swarm = sign_rating(
                    KeyPair.generate(), alice.did, session="x", stars=1, now=int(time.time())
                )
                await http.post(issuer.url + "/v1/ratings", json={"rating": swarm})
            rep = await obtain(alice, "ReputationScore")
            score = issuer.reputation.score(alice.did)
            console.print(
                f"   alice's ReputationScore after 1 good + 50 fresh bad ratings: {score}"
            )
            expect(score is not None and score[0] >= 450, "fresh DIDs moved the score by < 91")
            del rep

        assert issuer.core is not None
        signer = issuer.core.key  # the same issuer DID signs SD-JWT VCs and AnonCreds
        role = {"id": alice.did, "role": "support", "organization": "Acme Bank"}
        now = int(time.time())
        sd = issue_sd_jwt_vc(signer, "RoleCredential", role, holder=alice, now=now)
        shown_sd = present_sd_jwt_vc(
            sd, ["role"], holder=alice, audience=bob.did, nonce="n", now=now
        )
        disclosed = verify_sd_jwt_vc(
            shown_sd, documents=resolver.cached, now=now, audience=bob.did, nonce="n",
            trusted_issuers={"RoleCredential": [issuer.did]}, subject=alice.did,
        )  # fmt: skip
        console.print(
            f"   selective disclosure: bob sees {dict(disclosed.claims)}, not the employer"
        )
        expect(dict(disclosed.claims) == {"role": "support"}, "SD-JWT VC disclosed one claim")

        zk = ScoreIssuer(signer)
        definition = verify_definition(
            zk.publish(now=now), documents=resolver.cached, trusted=[issuer.did]
        )
        holder = ScoreHolder(alice.did)
        offer = zk.offer()
        request = holder.request(offer, definition)
        holder.store(zk.issue(offer, request, subject=alice.did, score=812), definition)
        ask = score_request(
            600, nonce=nonce_for("01JDEMO", bob.did), issuer_cred_def=definition.cred_def_id
        )
        proof = holder.prove(ask, definition)
        try:
            proven = verify_score_proof(proof, ask, definition, subject=alice.did)
        except DsipError:
            proven = 0
        console.print(f"   predicate: alice proves reputation ≥ {proven}; '812' is not revealed")
        expect(proven == 600 and '"812"' not in proof, "score ≥ 600 proven without the score")
    finally:
        await issuer.stop()
        await resolver.aclose()
