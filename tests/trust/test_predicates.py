"""AnonCreds predicate proofs: "score ≥ X" proven without the score, bound to the caller."""

from __future__ import annotations

import json
import re

import pytest

from dsip.core.trust.predicates import (
    ScoreHolder,
    ScoreIssuer,
    nonce_for,
    score_request,
    verify_definition,
    verify_score_proof,
)
from dsip.core.trust.vc import CredentialError
from tests.trust.trustfix import NOW, TRUSTGRAPH, World

SCORE = 812


@pytest.fixture(scope="module")
def setup() -> tuple[World, ScoreIssuer, ScoreHolder, str]:
    world = World()
    issuer = ScoreIssuer(world.trustgraph)  # CL key generation: about 1.5 s, once
    published = issuer.publish(now=NOW)
    definition = verify_definition(published, documents=world.documents, trusted=[TRUSTGRAPH])
    holder = ScoreHolder(world.caller.did)
    offer = issuer.offer()
    request = holder.request(offer, definition)
    holder.store(issuer.issue(offer, request, subject=world.caller.did, score=SCORE), definition)
    return world, issuer, holder, published


def test_score_at_least_proven_without_revealing_it(
    setup: tuple[World, ScoreIssuer, ScoreHolder, str],
) -> None:
    world, _issuer, holder, published = setup
    definition = verify_definition(published, documents=world.documents, trusted=[TRUSTGRAPH])
    nonce = nonce_for("01JINVITE", "did:key:callee")
    request = score_request(600, nonce=nonce, issuer_cred_def=definition.cred_def_id)
    proof = holder.prove(request, definition)
    # The score appears nowhere as a value in what the verifier receives.
    values = re.findall(r'"(?:raw|encoded)"\s*:\s*"([^"]*)"', proof)
    assert str(SCORE) not in values
    assert values.count(world.caller.did) == 1
    assert verify_score_proof(proof, request, definition, subject=world.caller.did) == 600

    # Replayed against another invite's request (another nonce): refused.
    other = score_request(
        600, nonce=nonce_for("01JOTHER", "did:key:callee"), issuer_cred_def=definition.cred_def_id
    )
    with pytest.raises(CredentialError) as err:
        verify_score_proof(proof, other, definition, subject=world.caller.did)
    assert err.value.code == "credential-signature"
    # Presented as someone else's proof: refused.
    with pytest.raises(CredentialError) as err:
        verify_score_proof(proof, request, definition, subject=world.mallory.did)
    assert err.value.code == "credential-subject"
    # A threshold above the score cannot be proven at all.
    high = score_request(900, nonce=nonce, issuer_cred_def=definition.cred_def_id)
    with pytest.raises(CredentialError) as err:
        holder.prove(high, definition)
    assert err.value.code == "credential-predicate"
    # Nor can the proof for 600 be passed off as one for 900.
    with pytest.raises(CredentialError) as err:
        verify_score_proof(proof, high, definition, subject=world.caller.did)
    assert err.value.code == "credential-signature"


def test_tampered_and_hostile_proofs(setup: tuple[World, ScoreIssuer, ScoreHolder, str]) -> None:
    world, _issuer, holder, published = setup
    definition = verify_definition(published, documents=world.documents, trusted=[TRUSTGRAPH])
    request = score_request(600, nonce="123456789", issuer_cred_def=definition.cred_def_id)
    proof = json.loads(holder.prove(request, definition))
    eq = proof["proof"]["proofs"][0]["primary_proof"]["eq_proof"]
    key = next(iter(eq["m"]))
    eq["m"][key] = str(int(eq["m"][key]) + 1)
    with pytest.raises(CredentialError) as err:
        verify_score_proof(json.dumps(proof), request, definition, subject=world.caller.did)
    assert err.value.code == "credential-signature"
    # Mallory swaps the revealed subject for her own DID (encoded value untouched).
    swapped = json.loads(holder.prove(request, definition))
    swapped["requested_proof"]["revealed_attrs"]["subject"]["raw"] = world.mallory.did
    with pytest.raises(CredentialError) as err:
        verify_score_proof(json.dumps(swapped), request, definition, subject=world.mallory.did)
    assert err.value.code == "credential-subject"
    for hostile in ("", "[]", "{", '{"requested_proof": 1}', "x" * 70_000, 5, '{"a":1,"a":2}'):
        with pytest.raises(CredentialError):
            verify_score_proof(hostile, request, definition, subject=world.caller.did)


def test_definition_must_come_from_a_trusted_issuer(
    setup: tuple[World, ScoreIssuer, ScoreHolder, str],
) -> None:
    world, _issuer, _holder, published = setup
    with pytest.raises(CredentialError) as err:
        verify_definition(published, documents=world.documents, trusted=["did:web:other.example"])
    assert err.value.code == "credential-issuer"
    head, body, sig = published.split(".")
    with pytest.raises(CredentialError) as err:
        verify_definition(
            f"{head}.{body[:-4]}AAAA.{sig}", documents=world.documents, trusted=[TRUSTGRAPH]
        )
    assert err.value.code in ("credential-signature", "credential-malformed")
    for hostile in ("", "a.b.c", None, "x" * 70_000):
        with pytest.raises(CredentialError):
            verify_definition(hostile, documents=world.documents, trusted=[TRUSTGRAPH])


POLICY = f"""
version = 1
scope = "user"
[defaults]
action = "ring"
[issuers]
ReputationScore = ["{TRUSTGRAPH}"]
[first_contact]
min_reputation = 600
[[rules]]
id = "low-reputation"
when = {{ messages = ["invite"], reputation_below = 500 }}
action = "reject"
reason = "policy:reputation-too-low"
[[rules]]
id = "unproven-introduction"
when = {{ messages = ["introduction"], first_contact_proof = false }}
action = "reject"
reason = "policy:proof-required"
"""


def test_policy_accepts_a_reputation_proof_in_the_invite(
    setup: tuple[World, ScoreIssuer, ScoreHolder, str],
) -> None:
    """The policy's reputation threshold and the first-contact gate are met by a proof
    that the score is high enough, the score itself never disclosed."""
    from dsip.core.envelope import make_payload
    from dsip.core.trust.policy import TrustPolicy, gather_facts
    from dsip.core.trust.predicates import reputation_claim

    world, _issuer, holder, published = setup
    definition = verify_definition(published, documents=world.documents, trusted=[TRUSTGRAPH])
    policy = TrustPolicy.from_toml(POLICY)
    callee = world.callee.did

    def message(kind: str, minimum: int, *, bound_to: str = callee) -> dict[str, object]:
        fields: dict[str, object] = {"to": callee, "identity": {"claims": []}}
        if kind == "invite":
            fields |= {"media": [{"type": "audio", "direction": "sendrecv", "codecs": [{"id": "codec:audio/opus"}]}],
                       "transports": [{"id": "transport:webrtc"}]}  # fmt: skip
        payload = make_payload(kind, sender=world.caller.did, now=NOW, **fields)
        claim = reputation_claim(
            holder, published, definition, minimum=minimum,
            message_id=str(payload["id"]), recipient=bound_to,
        )  # fmt: skip
        payload["identity"]["claims"].append(claim)  # type: ignore[index]
        return payload

    def decide(payload: dict[str, object]) -> tuple[str, str]:
        facts = gather_facts(
            payload, world.caller.did, policy, now=NOW, documents=world.documents,
            gate=policy.gate(documents=world.documents),
        )  # fmt: skip
        d = policy.decide(facts)
        return d.action, d.explain()

    invite = message("invite", 600)
    assert len(json.dumps(invite)) < 48_000  # fits a 64 KiB frame once signed (base64url)
    action, why = decide(invite)
    assert action == "ring"
    assert "812" not in why
    # a proof of ≥ 400 does not clear a threshold of 500
    action, why = decide(message("invite", 400))
    assert action == "reject"
    assert "low-reputation" in why
    # bound to another callee: the proof does not verify here, so it counts for nothing
    action, _ = decide(message("invite", 600, bound_to="did:key:someone-else"))
    assert action == "reject"
    # an introduction is admitted by the first-contact gate on the proof alone
    action, why = decide(message("introduction", 600))
    assert action == "ring"
    action, why = decide(message("introduction", 500))
    assert (action, "unproven-introduction" in why) == ("reject", True)
