"""Gated introductions: reputation VC, proof of work, single-use payment receipts; signed,
versioned community block/allow lists."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.envelope import make_payload
from dsip.core.payloads.schema import validate_payload
from dsip.core.trust.first_contact import (
    CommunityLists,
    FirstContactConfig,
    FirstContactError,
    FirstContactGate,
    Listing,
    ReceiptLedger,
    check_pow,
    issue_payment_receipt,
    measure_pow,
    pow_challenge,
    pow_claim,
    publish_list,
    solve_pow,
    verify_payment_receipt,
)
from dsip.core.trust.rcid import IssuerTrust, identity_with_rcid, make_rcid, render_caller
from dsip.core.trust.vc import VerifiedCredential, issue_credential
from dsip.core.ulid import new_ulid
from tests.trust.trustfix import DAY, LISTS, NOW, PAYER, TRUSTGRAPH, World

EASY = 10  # difficulty for tests: ~1k hashes


@pytest.fixture
def world() -> World:
    return World()


def introduction(
    w: World, claims: list[dict[str, Any]] | None = None, *, n: int = 0, **kw: Any
) -> dict[str, Any]:
    # Fixed ids (``n`` picks one): a proof of work checked against the wrong introduction
    # then fails on every run, rather than hold by chance once in 2**difficulty runs.
    msg_id = new_ulid(NOW * 1000, n.to_bytes(10, "big"))
    return make_payload(
        "introduction",
        msg_id=msg_id,
        sender=kw.pop("sender", w.caller.did),
        now=NOW,
        ttl=DAY,
        to=kw.pop("to", w.callee.did),
        purpose="We met at the meetup",
        identity={"display_name": "Carol", "claims": list(claims or [])},
    )


def with_claim(payload: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any]:
    payload["identity"]["claims"].append(claim)
    validate_payload(payload)
    return payload


def gate(w: World, **cfg: Any) -> FirstContactGate:
    return FirstContactGate(FirstContactConfig(**cfg), documents=w.documents)


# --- proof of work -------------------------------------------------------------------------


def test_pow_solves_and_checks_and_binds_to_the_introduction() -> None:
    ch = pow_challenge("01J5Y0QJ1NT00AAAAAAAAAAAAF", "did:key:a", "did:key:b", NOW)
    nonce = solve_pow(ch, 12)
    assert check_pow(ch, nonce, 12)
    assert not check_pow(ch, nonce, 40) or nonce == 0  # far harder target: almost surely fails
    other = pow_challenge("01J5Y0QJ1NT00AAAAAAAAAAAAF", "did:key:a", "did:key:c", NOW)
    assert not all(check_pow(other, n, 12) for n in (nonce,))  # another recipient: no reuse
    assert not check_pow(ch, -1, 12)
    assert not check_pow(ch, nonce, 0)
    with pytest.raises(ValueError, match="difficulty"):
        solve_pow(ch, 41)


def test_gate_admits_pow_and_refuses_its_absence_or_misuse(world: World) -> None:
    g = gate(world, pow_difficulty=EASY)
    intro = introduction(world)
    refused = g.evaluate(intro, world.caller.did, now=NOW)
    assert not refused.admitted
    assert refused.failures == (("pow", "pow-missing", "no proof of work"),)
    good = with_claim(introduction(world, n=1), pow_claim(introduction(world, n=2), EASY))
    # the claim was solved for another introduction id: it does not hold for this one
    assert g.evaluate(good, world.caller.did, now=NOW).failures[0][1] == "pow-invalid"
    intro = introduction(world)
    intro = with_claim(intro, pow_claim(intro, EASY))
    result = g.evaluate(intro, world.caller.did, now=NOW)
    assert (result.via, result.proofs) == ("pow", frozenset({"pow"}))
    assert result.explain() == "first contact admitted by pow"
    # the same work addressed to someone else does not hold
    redirected = copy.deepcopy(intro)
    redirected["to"] = world.mallory.did
    assert not g.evaluate(redirected, world.caller.did, now=NOW).admitted


def test_pow_difficulty_below_the_policy_is_refused(world: World) -> None:
    intro = introduction(world)
    intro = with_claim(intro, pow_claim(intro, 8))
    result = gate(world, pow_difficulty=EASY).evaluate(intro, world.caller.did, now=NOW)
    assert result.failures == (("pow", "pow-too-easy", f"difficulty 8 < {EASY}"),)


@pytest.mark.parametrize(
    "claim",
    [
        {"type": "pow", "alg": "md5", "difficulty": 12, "nonce": 1},
        {"type": "pow", "alg": "sha256", "difficulty": "12", "nonce": 1},
        {"type": "pow", "alg": "sha256", "difficulty": 12, "nonce": "1"},
        {"type": "pow", "alg": "sha256", "difficulty": 99, "nonce": 1},
    ],
)
def test_malformed_pow(world: World, claim: dict[str, Any]) -> None:
    intro = with_claim(introduction(world), claim)
    result = gate(world, pow_difficulty=EASY).evaluate(intro, world.caller.did, now=NOW)
    assert not result.admitted
    assert result.failures[0][1] == "pow-invalid"


def test_measure_pow_reports_cost() -> None:
    seconds, hashes = measure_pow(8, samples=3)
    assert seconds > 0
    assert hashes >= 1


# --- payment receipts ------------------------------------------------------------------------


def receipt(w: World, **kw: Any) -> str:
    kw.setdefault("payer", w.caller.did)
    kw.setdefault("payee", w.callee.did)
    kw.setdefault("amount_msat", 1000)
    kw.setdefault("now", NOW)
    return issue_payment_receipt(kw.pop("issuer", w.payer), **kw)


def test_payment_admits_once_and_a_replay_is_refused(world: World) -> None:
    g = gate(world, payment_issuers=frozenset({PAYER}), min_payment_msat=500)
    token = receipt(world)
    first = with_claim(introduction(world), {"type": "payment", "receipt": token})
    result = g.evaluate(first, world.caller.did, now=NOW)
    assert result.via == "payment"
    assert result.receipt is not None
    assert len(g.ledger) == 1
    again = with_claim(introduction(world), {"type": "payment", "receipt": token})
    replay = g.evaluate(again, world.caller.did, now=NOW + 1)
    assert not replay.admitted
    assert replay.failures == (("payment", "receipt-replayed", "payment receipt was already used"),)


def test_dry_run_does_not_spend(world: World) -> None:
    g = gate(world, payment_issuers=frozenset({PAYER}))
    intro = with_claim(introduction(world), {"type": "payment", "receipt": receipt(world)})
    assert g.evaluate(intro, world.caller.did, now=NOW, spend=False).admitted
    assert len(g.ledger) == 0


def tamper(token: str, **claims: Any) -> str:
    head, body, sig = token.split(".")
    payload = json.loads(b64url_decode(body))
    payload.update(claims)
    return ".".join([head, b64url_encode(json.dumps(payload).encode()), sig])


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda w: receipt(w, issuer=w.acme), "receipt-issuer"),
        (lambda w: receipt(w, payee=w.mallory.did), "receipt-parties"),
        (lambda w: receipt(w, payer=w.mallory.did), "receipt-parties"),
        (lambda w: receipt(w, now=NOW - 2 * DAY), "receipt-expired"),
        (lambda w: receipt(w, amount_msat=10), "receipt-amount"),
        (lambda w: tamper(receipt(w), amount_msat=10**6), "receipt-signature"),
        (lambda w: "not.a.receipt", "receipt-invalid"),
        (lambda w: 42, "receipt-invalid"),
    ],
)
def test_bad_receipts(world: World, make: Any, code: str) -> None:
    with pytest.raises(FirstContactError) as err:
        verify_payment_receipt(
            make(world),
            payer=world.caller.did,
            payee=world.callee.did,
            now=NOW,
            documents=world.documents,
            trusted_issuers={PAYER},
            min_amount_msat=100,
        )
    assert err.value.code == code
    assert err.value.reason == "policy.first-contact-required"


def test_ledger_forgets_expired_receipts_and_bounds_memory(world: World) -> None:
    token = receipt(world, ttl=60)
    r = verify_payment_receipt(
        token, payer=world.caller.did, payee=world.callee.did, now=NOW,
        documents=world.documents, trusted_issuers={PAYER},
    )  # fmt: skip
    ledger = ReceiptLedger(capacity=1)
    ledger.spend(r, NOW)
    assert ledger.is_spent(r, NOW + 59)
    assert not ledger.is_spent(r, NOW + 60)  # expired: it cannot verify any more anyway
    other = verify_payment_receipt(
        receipt(world), payer=world.caller.did, payee=world.callee.did, now=NOW + 60,
        documents=world.documents, trusted_issuers={PAYER},
    )  # fmt: skip
    ledger.spend(other, NOW + 60)  # the expired one made room
    third = verify_payment_receipt(
        receipt(world), payer=world.caller.did, payee=world.callee.did, now=NOW + 60,
        documents=world.documents, trusted_issuers={PAYER},
    )  # fmt: skip
    with pytest.raises(FirstContactError) as err:  # full of live ids: refuse, never forget
        ledger.spend(third, NOW + 61)
    assert err.value.code == "receipt-ledger-full"


# --- reputation ----------------------------------------------------------------------------


def reputation(w: World, score: int, issuer: Any = None) -> tuple[VerifiedCredential, ...]:
    cred = issue_credential(
        issuer or w.trustgraph, "ReputationScore", {"id": w.caller.did, "score": score}, now=NOW
    )
    intro = introduction(w)
    intro["identity"] = identity_with_rcid(make_rcid([cred]))
    shown = render_caller(
        intro,
        w.caller.did,
        now=NOW,
        documents=w.documents,
        trust=IssuerTrust.of({"ReputationScore": [TRUSTGRAPH, w.acme.did]}),
    )
    return shown.credentials


def test_reputation_threshold(world: World) -> None:
    g = gate(world, min_reputation=600, reputation_issuers=frozenset({TRUSTGRAPH}))
    intro = introduction(world)
    assert (
        g.evaluate(intro, world.caller.did, now=NOW, credentials=reputation(world, 812)).via
        == "reputation"
    )
    low = g.evaluate(intro, world.caller.did, now=NOW, credentials=reputation(world, 312))
    assert low.failures == (("reputation", "reputation-too-low", "score 312 < 600"),)
    # A score from an issuer the gate does not trust for reputation counts for nothing.
    other = g.evaluate(
        intro, world.caller.did, now=NOW, credentials=reputation(world, 999, world.acme)
    )
    assert other.failures[0][1] == "reputation-missing"


def test_cheapest_proof_admits_and_the_receipt_is_kept(world: World) -> None:
    g = gate(
        world,
        min_reputation=600,
        reputation_issuers=frozenset({TRUSTGRAPH}),
        payment_issuers=frozenset({PAYER}),
    )
    intro = with_claim(introduction(world), {"type": "payment", "receipt": receipt(world)})
    result = g.evaluate(intro, world.caller.did, now=NOW, credentials=reputation(world, 900))
    assert result.via == "reputation"
    assert result.proofs == {"reputation", "payment"}
    assert len(g.ledger) == 0  # nobody pays when reputation suffices


def test_no_mechanism_configured(world: World) -> None:
    result = gate(world).evaluate(introduction(world), world.caller.did, now=NOW)
    assert not result.admitted
    assert result.explain() == "no first-contact proof is accepted here"


# --- community lists ----------------------------------------------------------------------


ENTRIES = [{"did": "did:key:z6MkSpammer", "reason": "412 robocall reports", "added_at": NOW}]


def test_publish_add_lookup_and_explain(world: World) -> None:
    store = CommunityLists(world.documents)
    doc = publish_list(world.lists, "robocallers", "block", ENTRIES, version=3, now=NOW)
    held = store.add(doc, now=NOW)
    assert (held.version, held.kind, len(store)) == (3, "block", 1)
    hits = store.lookup("did:key:z6MkSpammer", [(LISTS, "robocallers")], now=NOW)
    assert hits == (
        Listing("block", "robocallers", LISTS, 3, "did:key:z6MkSpammer", "412 robocall reports"),
    )
    assert hits[0].explain() == (
        "blocked by list 'robocallers' v3 published by lists.example: 412 robocall reports"
    )
    assert store.lookup("did:key:z6MkSpammer", [(LISTS, "other")], now=NOW) == ()
    assert store.lookup("did:key:z6MkSpammer", [(LISTS, "robocallers")], now=NOW + 8 * DAY) == ()


def test_versions_only_move_forward(world: World) -> None:
    store = CommunityLists(world.documents)
    store.add(publish_list(world.lists, "spam", "block", ENTRIES, version=5, now=NOW), now=NOW)
    for version in (5, 4):
        older = publish_list(world.lists, "spam", "block", [], version=version, now=NOW)
        with pytest.raises(FirstContactError) as err:
            store.add(older, now=NOW)
        assert err.value.code == "list-rollback"
    newer = publish_list(world.lists, "spam", "block", [], version=6, now=NOW)
    assert store.add(newer, now=NOW).version == 6
    assert store.lookup("did:key:z6MkSpammer", [(LISTS, "spam")], now=NOW) == ()


@pytest.mark.parametrize("case", ["tampered", "foreign-signer", "expired", "malformed"])
def test_bad_lists_are_refused(world: World, case: str) -> None:
    store = CommunityLists(world.documents)
    doc: dict[str, Any] = publish_list(world.lists, "spam", "block", ENTRIES, version=1, now=NOW)
    code = "list-signature"
    if case == "tampered":
        doc["entries"].append({"did": "did:key:z6MkInnocent", "reason": "framed"})
    elif case == "foreign-signer":
        doc = publish_list(world.mallory, "spam", "block", ENTRIES, version=1, now=NOW)
        doc["publisher"] = LISTS  # claims the lists publisher, signed by mallory
    elif case == "expired":
        doc = publish_list(world.lists, "spam", "block", ENTRIES, version=1, now=NOW - 8 * DAY)
        code = "list-expired"
    else:
        doc["kind"] = "maybe"
        code = "list-invalid"
    with pytest.raises(FirstContactError) as err:
        store.add(doc, now=NOW)
    assert err.value.code == code
    assert len(store) == 0
