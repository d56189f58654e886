"""The TOML policy engine: refuses to load anything doubtful, decides deterministically and
says which rule fired and why; the relay first-contact hook built from it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.payloads.schema import validate_payload
from dsip.core.registry import REASONS
from dsip.core.trust.first_contact import CommunityLists, pow_claim, publish_list
from dsip.core.trust.policy import (
    SEED_REASONS,
    CallerFacts,
    TrustPolicy,
    gather_facts,
    relay_first_contact_hook,
    tier_of,
)
from dsip.core.trust.rcid import IssuerTrust, identity_with_rcid, make_rcid, verify_rcid
from dsip.core.trust.vc import issue_credential
from dsip.errors import ConfigError
from tests.trust.trustfix import ACME, DAY, LISTS, NOW, TRUSTGRAPH, VOICE, World

USER_POLICY = f"""
version = 1
scope = "user"
name = "bob"

[defaults]
action = "ring"
timezone = "Europe/Paris"

[issuers]
DisplayNameCredential = ["{VOICE}"]
ReputationScore = ["{TRUSTGRAPH}"]
RoleCredential = ["{ACME}"]

[issuer_names]
"{TRUSTGRAPH}" = "TrustGraph"

[first_contact]
min_reputation = 600
pow_difficulty = 10

[[lists]]
publisher = "{LISTS}"
id = "robocallers"

[[rules]]
id = "community-block"
when = {{ listed = "block" }}
action = "reject"
reason = "policy:blocked"

[[rules]]
id = "support-line"
when = {{ roles = ["Support", "Legal"] }}
action = "ring"

[[rules]]
id = "low-reputation"
when = {{ known_contact = false, reputation_below = 500 }}
action = "reject"
reason = "policy:reputation-too-low"

[[rules]]
id = "night"
when = {{ time = {{ from = "22:00", to = "07:00" }} }}
action = "voicemail"

[[rules]]
id = "introductions-need-proof"
when = {{ messages = ["introduction"], first_contact_proof = false }}
action = "reject"
reason = "policy.first-contact-required"
"""


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def policy() -> TrustPolicy:
    return TrustPolicy.from_toml(USER_POLICY, source="bob.toml")


def paris(hour: int, minute: int = 0) -> int:
    return int(datetime(2025, 10, 9, hour, minute, tzinfo=ZoneInfo("Europe/Paris")).timestamp())


def facts(world: World, **kw: Any) -> CallerFacts:
    kw.setdefault("caller", world.caller.did)
    kw.setdefault("message", "invite")
    kw.setdefault("now", paris(12))
    return CallerFacts(**kw)


def rep(world: World, score: int) -> Any:
    cred = issue_credential(
        world.trustgraph, "ReputationScore", {"id": world.caller.did, "score": score}, now=NOW
    )
    shown = verify_rcid(
        make_rcid([cred]),
        caller=world.caller.did,
        now=NOW,
        documents=world.documents,
        trust=IssuerTrust.of(world.issuers),
    )
    return shown.credentials


def test_low_reputation_rejects_with_the_mapped_token_and_explains(
    world: World, policy: TrustPolicy
) -> None:
    d = policy.decide(facts(world, credentials=rep(world, 312)))
    assert (d.action, d.rule) == ("reject", "low-reputation")
    assert (d.reason, d.detail) == ("policy.trust-insufficient", "policy:reputation-too-low")
    assert d.reject_fields() == {
        "reason": "policy.trust-insufficient",
        "detail": "policy:reputation-too-low",
    }
    assert d.because == ("caller is not a known contact", "reputation 312 < 500")
    assert d.explain() == (
        "reject by rule 'low-reputation' (policy.trust-insufficient, policy:reputation-too-low): "
        "caller is not a known contact; reputation 312 < 500"
    )


def test_no_score_counts_as_below(world: World, policy: TrustPolicy) -> None:
    d = policy.decide(facts(world))
    assert d.rule == "low-reputation"
    assert d.because[1] == "no trusted reputation score (threshold 500)"


def test_good_reputation_rings_by_default(world: World, policy: TrustPolicy) -> None:
    d = policy.decide(facts(world, credentials=rep(world, 812)))
    assert (d.action, d.rule, d.reason, d.because) == (
        "ring",
        "defaults",
        None,
        ("no rule matched",),
    )
    with pytest.raises(ValueError, match="reject"):
        d.reject_fields()


def test_known_contacts_skip_the_reputation_rule(world: World, policy: TrustPolicy) -> None:
    assert policy.decide(facts(world, known_contact=True)).rule == "defaults"


def test_time_window_wraps_midnight(world: World, policy: TrustPolicy) -> None:
    good = rep(world, 812)
    for hour, rule in ((21, "defaults"), (22, "night"), (3, "night"), (7, "defaults")):
        d = policy.decide(facts(world, credentials=good, now=paris(hour)))
        assert d.rule == rule, hour
    assert policy.decide(facts(world, credentials=good, now=paris(23, 30))).because == (
        "local time Thu 23:30 is within 22:00–07:00",
    )


def test_days_of_the_week() -> None:
    p = TrustPolicy.from_toml(
        """
        version = 1
        scope = "user"
        [defaults]
        action = "ring"
        [[rules]]
        id = "weekend-nights"
        when = { time = { from = "23:00", to = "06:00", days = ["sat"] } }
        action = "silent"
        """
    )
    utc = ZoneInfo("UTC")

    def at(day: int, hour: int) -> str:  # 2025-10-11 is a Saturday
        ts = int(datetime(2025, 10, day, hour, tzinfo=utc).timestamp())
        return p.decide(CallerFacts(caller="did:key:z6Mk1", message="invite", now=ts)).rule

    assert at(11, 23) == "weekend-nights"  # Saturday night
    assert at(12, 2) == "weekend-nights"  # Sunday small hours belong to Saturday's window
    assert at(12, 23) == "defaults"  # Sunday night
    assert at(11, 2) == "defaults"  # Saturday small hours belong to Friday's window


def test_roles_and_community_blocks(world: World, policy: TrustPolicy) -> None:
    support = issue_credential(
        world.acme, "RoleCredential", {"id": world.caller.did, "role": "Support"}, now=NOW
    )
    creds = verify_rcid(
        make_rcid([support]), caller=world.caller.did, now=NOW, documents=world.documents,
        trust=IssuerTrust.of(world.issuers),
    ).credentials  # fmt: skip
    assert policy.decide(facts(world, credentials=creds)).because == ("verified role Support",)
    lists = CommunityLists(world.documents)
    lists.add(
        publish_list(
            world.lists,
            "robocallers",
            "block",
            [{"did": world.caller.did, "reason": "412 robocall reports"}],
            version=7,
            now=NOW,
        ),
        now=NOW,
    )
    hits = lists.lookup(world.caller.did, policy.lists, now=NOW)
    d = policy.decide(facts(world, credentials=creds, listings=hits))
    assert (d.rule, d.reason, d.detail) == ("community-block", "policy.blocked", "policy:blocked")
    line = "blocked by list 'robocallers' v7 published by lists.example: 412 robocall reports"
    assert d.because == (line,)
    assert d.audit == (line,)


def test_introductions_need_a_proof(world: World, policy: TrustPolicy) -> None:
    # Reputation 550 passes the invite threshold (500) but not the introduction gate (600).
    cred = issue_credential(
        world.trustgraph, "ReputationScore", {"id": world.caller.did, "score": 550}, now=NOW
    )
    intro = make_payload(
        "introduction",
        sender=world.caller.did,
        now=NOW,
        ttl=DAY,
        to=world.callee.did,
        identity=identity_with_rcid(make_rcid([cred])),
    )
    gate = policy.gate(documents=world.documents)
    assert gate is not None

    def decide() -> Any:
        f = gather_facts(
            intro, world.caller.did, policy, now=paris(12), documents=world.documents, gate=gate
        )
        return policy.decide(f)

    d = decide()
    assert (d.rule, d.reason) == ("introductions-need-proof", "policy.first-contact-required")
    assert d.because[1] == (
        "no first-contact proof held: reputation: score 550 < 600; pow: no proof of work"
    )
    intro["identity"]["claims"].append(pow_claim(intro, 10))
    validate_payload(intro)
    assert decide().rule == "defaults"
    # a known contact needs no first-contact proof at all
    known = gather_facts(
        intro, world.caller.did, policy, now=paris(12), gate=gate, known_contact=True
    )
    assert known.gate is None


def test_tiers(world: World) -> None:
    assert tier_of(facts(world, caller="did:example:x")) == 0
    assert tier_of(facts(world)) == 1
    assert tier_of(facts(world, known_contact=True)) == 2
    assert tier_of(facts(world, caller="did:web:example.com")) == 3
    assert tier_of(facts(world, credentials=rep(world, 10))) == 4


@settings(max_examples=50, deadline=None)
@given(
    hour=st.integers(0, 23),
    known=st.booleans(),
    score=st.none() | st.integers(0, 1000),
    message=st.sampled_from(["invite", "introduction"]),
)
def test_decisions_are_deterministic(
    hour: int, known: bool, score: int | None, message: str
) -> None:
    world = World()
    p = TrustPolicy.from_toml(USER_POLICY)
    creds = rep(world, score) if score is not None else ()
    f = facts(world, known_contact=known, credentials=creds, now=paris(hour), message=message)
    first = p.decide(f)
    again = TrustPolicy.from_toml(USER_POLICY).decide(f)
    assert first == again
    assert first.rule in {r.id for r in p.rules} | {"defaults"}
    assert first.explain().startswith(f"{first.action} by rule '{first.rule}'")


# --- refusing to load ---------------------------------------------------------------------

BASE = 'version = 1\nscope = "user"\n[defaults]\naction = "ring"\n'
BAD_POLICIES = {
    "not toml": "version = = 1",
    "empty": "",
    "unknown top-level key": BASE + "allow_all = true\n",
    "misspelt condition": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\nwhen = { reputation_belw = 5 }\n',
    "float threshold": BASE
    + f'[issuers]\nReputationScore = ["{TRUSTGRAPH}"]\n[[rules]]\nid = "a"\naction = "ring"\nwhen = {{ reputation_below = 5.5 }}\n',
    "relay action in user policy": BASE + '[[rules]]\nid = "a"\naction = "allow"\n',
    "reject without reason": BASE + '[[rules]]\nid = "a"\naction = "reject"\n',
    "unmapped seed token": BASE
    + '[[rules]]\nid = "a"\naction = "reject"\nreason = "policy:vibes"\n',
    "unregistered v0.7 token": BASE
    + '[[rules]]\nid = "a"\naction = "reject"\nreason = "policy.vibes"\n',
    "unknown time zone": 'version = 1\nscope = "user"\n[defaults]\naction = "ring"\ntimezone = "Mars/Olympus"\n',
    "duplicate rule id": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\n[[rules]]\nid = "a"\naction = "silent"\n',
    "rule needs an untrusted type": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\nwhen = { roles = ["Support"] }\n',
    "listed without lists": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\nwhen = { listed = "block" }\n',
    "proof without first_contact": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\nwhen = { proofs = ["pow"] }\n',
    "min_reputation without issuer": BASE + "[first_contact]\nmin_reputation = 5\n",
    "TOML time literal": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\nwhen = { time = { from = 22:00:00, to = "07:00" } }\n',
    "empty window": BASE
    + '[[rules]]\nid = "a"\naction = "ring"\nwhen = { time = { from = "07:00", to = "07:00" } }\n',
    "wrong version": BASE.replace("version = 1", "version = 2"),
    "issuer not a DID": BASE + '[issuers]\nReputationScore = ["trustgraph.org"]\n',
    "default reject without reason": 'version = 1\nscope = "relay"\n[defaults]\naction = "reject"\n',
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_doubtful_policies_refuse_to_load(case: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrustPolicy.from_toml(BAD_POLICIES[case], source="p.toml")
    assert err.value.reason == "x-dsip.config-invalid"
    assert "p.toml" in err.value.message


def test_load_from_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(USER_POLICY, encoding="utf-8")
    assert len(TrustPolicy.load(path).rules) == 5
    with pytest.raises(ConfigError, match="cannot read"):
        TrustPolicy.load(tmp_path / "absent.toml")


def test_seed_tokens_map_to_registered_reasons() -> None:
    assert all(token in REASONS for token in SEED_REASONS.values())


# --- the relay hook ----------------------------------------------------------------------

RELAY_POLICY = f"""
version = 1
scope = "relay"
[defaults]
action = "allow"
[issuers]
ReputationScore = ["{TRUSTGRAPH}"]
[first_contact]
min_reputation = 600
pow_difficulty = 10
[[lists]]
publisher = "{LISTS}"
id = "robocallers"
[[rules]]
id = "blocked"
when = {{ listed = "block" }}
action = "reject"
reason = "policy:community-blocked"
[[rules]]
id = "introduction-proof"
when = {{ messages = ["introduction"], first_contact_proof = false }}
action = "reject"
reason = "policy:proof-required"
"""


def test_relay_hook_decides_invites_and_introductions(world: World) -> None:
    policy = TrustPolicy.from_toml(RELAY_POLICY)
    lists = CommunityLists(world.documents)
    hook = relay_first_contact_hook(
        policy, documents=world.documents, lists=lists, clock=lambda: float(NOW)
    )
    verifier = Verifier()

    def verified(payload: dict[str, Any]) -> Any:
        return verifier.verify(sign_envelope(payload, world.caller), now=NOW)

    intro = make_payload(
        "introduction", sender=world.caller.did, now=NOW, ttl=DAY, to=world.callee.did,
        identity={"claims": []},
    )  # fmt: skip
    assert hook(verified(intro)) == "policy.first-contact-required"
    proven = make_payload(
        "introduction", sender=world.caller.did, now=NOW, ttl=DAY, to=world.callee.did,
        identity={"claims": []},
    )  # fmt: skip
    proven["identity"]["claims"].append(pow_claim(proven, 10))
    assert hook(verified(proven)) is None
    cred = issue_credential(
        world.trustgraph, "ReputationScore", {"id": world.caller.did, "score": 900}, now=NOW
    )
    reputable = make_payload(
        "introduction", sender=world.caller.did, now=NOW, ttl=DAY, to=world.callee.did,
        identity=identity_with_rcid(make_rcid([cred])),
    )  # fmt: skip
    assert hook(verified(reputable)) is None
    invite = example_invite(world.caller.did, world.callee.did, now=NOW)
    assert hook(verified(invite)) is None
    lists.add(
        publish_list(
            world.lists, "robocallers", "block", [{"did": world.caller.did}], version=1, now=NOW
        ),
        now=NOW,
    )
    invite2 = example_invite(world.caller.did, world.callee.did, now=NOW)
    assert hook(verified(invite2)) == "policy.blocked"
    bye = make_payload(
        "bye",
        sender=world.caller.did,
        now=NOW,
        to=world.callee.did,
        session=invite["id"],
        reason="user.hangup",
    )
    assert hook(verified(bye)) is None  # only first contact is this hook's business


def test_relay_hook_needs_a_relay_policy() -> None:
    with pytest.raises(ConfigError, match="scope"):
        relay_first_contact_hook(TrustPolicy.from_toml(USER_POLICY))
