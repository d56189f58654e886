"""Subscriptions (§9.3) and the publication authority (§22), from the spec text.

Each test is what a subscriber, a publisher or an operator would notice: which notifies go
out (to whom, with which ``seq``), which subscribes get the one uniform reject, and what the
subscriber's application is told. The shared vectors run separately (tests/vectors).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dsip.core.session import Drop, EngineMisuseError, Refused, Send, Ui
from dsip.core.subscription import (
    ADMISSION,
    AUTHORITY_TRANSITIONS,
    PUBLICATION_TRANSITIONS,
    SUBSCRIBER_TRANSITIONS,
    AuthorityEngine,
    PolicyMode,
    ProvenanceAttached,
    PublicationChanged,
    RecordState,
    SendNotify,
    SendSubscribe,
    SubscriberEngine,
    SubscriptionEnded,
    SubscriptionPolicy,
    SubscriptionState,
    lifetime_cap,
)

T0 = 1_760_000_000
AUTHORITY = "did:key:z6MkAuthority"
BOB, BOB_PHONE, BOB_LAPTOP = "did:key:bob", "did:key:bob-phone", "did:key:bob-laptop"
ALICE, ALICE_PHONE, ALICE_LAPTOP = "did:key:alice", "did:key:alice-phone", "did:key:alice-laptop"
CAROL, CAROL_PHONE = "did:key:carol", "did:key:carol-phone"
CDN, CDN_NODE = "did:key:cdn", "did:key:cdn-node"
DIRECTORY = {
    BOB_PHONE: BOB,
    BOB_LAPTOP: BOB,
    ALICE_PHONE: ALICE,
    ALICE_LAPTOP: ALICE,
    CAROL_PHONE: CAROL,
    CDN_NODE: CDN,
}
STREAM = f"{BOB}:radio:main"
PUBLIC = SubscriptionPolicy(PolicyMode.PUBLIC)
VARIANTS = [
    {"id": "opus", "media": ["audio"], "codec": "codec:audio/opus", "transport": "transport:webrtc", "uri": "wss://x"},
    {"id": "aac", "media": ["audio"], "codec": "codec:audio/aac", "transport": "transport:hls", "uri": "https://x"},
]  # fmt: skip

_ids = itertools.count(1)


def ulid(t: int = 0) -> str:
    """ULID-shaped ids whose order is creation order (what staleness compares, §22.1)."""
    return f"01K742S{t:03d}{next(_ids):016d}"


def publish(state: str = "live", *, sender: str = BOB_PHONE, **fields: Any) -> dict[str, Any]:
    msg = {
        "type": "publish",
        "id": ulid(),
        "from": sender,
        "publisher": BOB,
        "stream_id": STREAM,
        "state": state,
        "variants": VARIANTS,
    }
    msg.update(fields)
    return msg


def unpublish(publication: str, *, sender: str = BOB_PHONE, **fields: Any) -> dict[str, Any]:
    msg = {
        "type": "unpublish",
        "id": ulid(),
        "from": sender,
        "publisher": BOB,
        "stream_id": STREAM,
        "publication": publication,
    }
    msg.update(fields)
    return msg


def provenance(publication: str, *, sender: str = CDN_NODE, **fields: Any) -> dict[str, Any]:
    msg = {
        "type": "provenance",
        "id": ulid(),
        "from": sender,
        "original_stream": STREAM,
        "original_publication": publication,
        "processor": CDN,
        "operation": "transcode",
        "input_variant": "opus",
        "output_variant": "aac",
    }
    msg.update(fields)
    return msg


def subscribe(
    target: str = STREAM,
    *,
    sender: str = ALICE_PHONE,
    events: tuple[str, ...] = ("publication",),
    expires_in: int = 600,
    **fields: Any,
) -> dict[str, Any]:
    msg = {
        "type": "subscribe",
        "id": ulid(),
        "from": sender,
        "to": AUTHORITY,
        "target": target,
        "events": list(events),
        "expires_in": expires_in,
    }
    msg.update(fields)
    return msg


def authority(*, public: tuple[str, ...] = (STREAM,)) -> AuthorityEngine:
    a = AuthorityEngine(directory=DIRECTORY)
    for target in public:
        a.set_policy(target, PUBLIC, now=T0)
    return a


def notifies(out: list[Any]) -> list[SendNotify]:
    return [em for em in out if isinstance(em, SendNotify)]


def live_stream(a: AuthorityEngine) -> str:
    msg = publish()
    a.receive(msg, now=T0)
    return str(msg["id"])


# --- authority: publication records (§22.1) ------------------------------------------------


def test_the_publishers_device_publishes_and_subscribers_see_current_state_first() -> None:
    a = authority()
    rec = publish()
    assert a.receive(rec, now=T0) == [PublicationChanged(STREAM, "live")]
    sub = subscribe()
    (first,) = a.receive(sub, now=T0 + 1)
    assert first == SendNotify(
        ALICE_PHONE,
        sub["id"],
        1,
        "active",
        {"event": "publication", "state": "live", "publication": rec["id"]},
    )
    assert a.subscriptions_view()[sub["id"]].subscriber == ALICE
    assert a.subscriptions_view()[sub["id"]].expires_at == T0 + 1 + 600


def test_only_the_publisher_may_publish_or_withdraw_and_only_in_its_namespace() -> None:
    a = authority()
    assert a.receive(publish(publisher=ALICE, stream_id=f"{ALICE}:radio"), now=T0) == [
        Drop("publisher-mismatch")
    ]
    assert a.receive(publish(stream_id=f"{BOB}x:radio"), now=T0) == [Drop("stream-id-namespace")]
    held = live_stream(a)
    assert a.receive(unpublish(held, sender=CAROL_PHONE), now=T0) == [Drop("publisher-mismatch")]
    assert a.receive(unpublish(held, sender=BOB_LAPTOP), now=T0) == [
        PublicationChanged(STREAM, "withdrawn")
    ]
    assert a.publications_view()[STREAM].state is RecordState.WITHDRAWN


def test_older_records_never_replace_newer_ones() -> None:
    a = authority()
    older, newer = publish(), publish("ended")
    assert a.receive(newer, now=T0) == [PublicationChanged(STREAM, "ended")]
    assert a.receive(older, now=T0) == [Drop("stale-publication")]
    assert a.receive(newer, now=T0) == [Drop("stale-publication")]  # the same record again
    assert a.publications_view()[STREAM].publication == newer["id"]


def test_unpublish_must_name_the_held_record_and_withdraws_once() -> None:
    a = authority()
    first = live_stream(a)
    second = publish()
    a.receive(second, now=T0)
    assert a.receive(unpublish(first), now=T0) == [Drop("unknown-publication")]
    assert a.receive(unpublish(second["id"]), now=T0) == [PublicationChanged(STREAM, "withdrawn")]
    assert a.receive(unpublish(second["id"]), now=T0) == [Drop("publication-withdrawn")]
    assert a.receive(unpublish(second["id"], stream_id=f"{BOB}:tv"), now=T0) == [
        Drop("unknown-publication")
    ]
    # a newer record re-publishes a withdrawn stream
    assert a.receive(publish(), now=T0) == [PublicationChanged(STREAM, "live")]


def test_state_changes_reach_every_subscriber_in_seq_order() -> None:
    a = authority()
    live_stream(a)
    s1, s2 = subscribe(), subscribe(sender=CAROL_PHONE)
    a.receive(s1, now=T0)
    a.receive(s2, now=T0)
    ended = publish("ended")
    out = a.receive(ended, now=T0 + 5)
    assert out[0] == PublicationChanged(STREAM, "ended")
    assert [(n.to, n.subscription, n.seq, n.body["state"]) for n in notifies(out)] == [
        (ALICE_PHONE, s1["id"], 2, "ended"),
        (CAROL_PHONE, s2["id"], 2, "ended"),
    ]
    out = a.receive(unpublish(ended["id"]), now=T0 + 6)
    assert [(n.seq, n.body["state"]) for n in notifies(out)] == [(3, "withdrawn")] * 2


# --- authority: provenance (§22.3) ---------------------------------------------------------


def test_statements_attach_to_the_record_and_are_listed_in_notifies() -> None:
    a = authority()
    held = live_stream(a)
    sub = subscribe()
    a.receive(sub, now=T0)
    out = a.receive(provenance(held), now=T0 + 1)
    assert out[0] == ProvenanceAttached(STREAM, CDN)
    (n,) = notifies(out)
    assert (n.seq, n.body["provenance"], n.body["publication"]) == (2, (CDN,), held)
    assert n.to_payload_fields()["body"]["provenance"] == [CDN]
    # a processor's newer statement replaces its earlier one: still listed once
    (n2,) = notifies(a.receive(provenance(held), now=T0 + 2))
    assert n2.body["provenance"] == (CDN,)
    assert a.publications_view()[STREAM].publisher == BOB  # never replaced


def test_mismatched_statements_are_dropped() -> None:
    a = authority()
    held = live_stream(a)
    a.receive(publish(stream_id=f"{BOB}:tv"), now=T0)
    tv = a.publications_view()[f"{BOB}:tv"].publication
    cases = [
        (provenance(held, processor=ALICE), "provenance-processor-mismatch"),
        (provenance(ulid()), "provenance-unknown-publication"),
        (provenance(tv), "provenance-stream-mismatch"),  # tv's record, claimed for radio
        (provenance(held, input_variant="flac"), "provenance-variant-unknown"),
    ]
    for msg, reason in cases:
        assert a.receive(msg, now=T0) == [Drop(reason)], reason
    a.receive(unpublish(held), now=T0)
    assert a.receive(provenance(held), now=T0) == [Drop("publication-withdrawn")]


def test_a_replacing_record_starts_without_statements() -> None:
    a = authority()
    held = live_stream(a)
    a.receive(provenance(held), now=T0)
    sub = subscribe()
    (first,) = notifies(a.receive(sub, now=T0))
    assert first.body["provenance"] == (CDN,)
    out = a.receive(publish("ended"), now=T0)
    assert "provenance" not in notifies(out)[0].body
    assert a.publications_view()[STREAM].provenance == ()


# --- authority: authorisation and anti-enumeration (§9.3) ----------------------------------


def _uniform(out: list[Any]) -> list[Any]:
    """An answer with the ids that necessarily differ blanked out."""
    return [
        (type(em).__name__, getattr(em, "type", None), getattr(em, "reason", None)) for em in out
    ]


def test_unauthorised_and_nonexistent_targets_get_the_identical_reject() -> None:
    a = authority(public=())
    a.set_policy(STREAM, SubscriptionPolicy(PolicyMode.ALLOW, frozenset({ALICE})), now=T0)
    live_stream(a)
    not_allowed = subscribe(sender=CAROL_PHONE)
    nonexistent = subscribe(f"{BOB}:radio:nope")
    never_seen = subscribe("did:key:nobody", events=("presence",))
    answers = [a.receive(m, now=T0) for m in (not_allowed, nonexistent, never_seen)]
    assert answers[0] == [
        Send("reject", CAROL_PHONE, session=not_allowed["id"], reason="policy.blocked")
    ]
    assert _uniform(answers[0]) == _uniform(answers[1]) == _uniform(answers[2])
    assert a.subscriptions_view() == {}
    # the allow-listed identity gets in from any of its devices
    assert notifies(a.receive(subscribe(sender=ALICE_LAPTOP), now=T0))[0].to == ALICE_LAPTOP


def test_targets_are_private_by_default() -> None:
    a = AuthorityEngine(directory=DIRECTORY)
    live_stream(a)
    a.bind(BOB_PHONE, BOB, now=T0)
    for msg in (subscribe(), subscribe(BOB, events=("presence",))):
        (answer,) = a.receive(msg, now=T0)
        assert isinstance(answer, Send)
        assert (answer.type, answer.reason) == ("reject", "policy.blocked")


def test_a_capability_token_admits_to_its_own_target_only() -> None:
    a = authority(public=())
    live_stream(a)
    a.receive(publish(stream_id=f"{BOB}:tv"), now=T0)
    a.issue_capability("follow-7f3a", STREAM, now=T0)
    ok = subscribe(sender=CAROL_PHONE, capability="follow-7f3a")
    assert notifies(a.receive(ok, now=T0))[0].seq == 1
    elsewhere = subscribe(f"{BOB}:tv", sender=CAROL_PHONE, capability="follow-7f3a")
    assert _uniform(a.receive(elsewhere, now=T0)) == [("Send", "reject", "policy.blocked")]
    wrong = subscribe(sender=CAROL_PHONE, capability="guess")
    assert _uniform(a.receive(wrong, now=T0)) == [("Send", "reject", "policy.blocked")]


def test_withdrawn_authorisation_terminates_with_policy_terminated() -> None:
    a = authority()
    live_stream(a)
    a.issue_capability("follow", STREAM, now=T0)
    by_policy, by_token = subscribe(), subscribe(sender=CAROL_PHONE, capability="follow")
    a.receive(by_policy, now=T0)
    a.receive(by_token, now=T0)
    out = a.set_policy(STREAM, SubscriptionPolicy(), now=T0 + 1)  # now private
    assert [(n.subscription, n.seq, n.state, n.reason) for n in notifies(out)] == [
        (by_policy["id"], 2, "terminated", "policy.terminated")
    ]
    assert list(a.subscriptions_view()) == [by_token["id"]]  # the token still admits
    out = a.revoke_capability("follow", now=T0 + 2)
    assert [(n.subscription, n.reason) for n in notifies(out)] == [
        (by_token["id"], "policy.terminated")
    ]
    assert a.subscriptions_view() == {}


# --- authority: lifetimes, renewal, termination (§9.3) -------------------------------------


def test_lifetime_caps_are_per_event_class_and_the_tightest_applies() -> None:
    assert lifetime_cap(["presence"]) == 3600
    assert lifetime_cap(["publication"]) == 86_400
    assert lifetime_cap(["publication", "presence"]) == 3600
    assert lifetime_cap(["x-weather"]) is None


def test_an_over_cap_request_is_refused_never_clamped() -> None:
    a = authority(public=(STREAM, BOB))
    live_stream(a)
    over = subscribe(BOB, events=("presence",), expires_in=3601)
    assert a.receive(over, now=T0) == [
        Send("error", ALICE_PHONE, reason="policy.subscription-lifetime", in_reply_to=over["id"])
    ]
    both = subscribe(STREAM, events=("publication", "presence"), expires_in=86_400)
    assert a.receive(both, now=T0)[0].reason == "policy.subscription-lifetime"  # type: ignore[union-attr]
    day = subscribe(expires_in=86_400)
    a.receive(day, now=T0)
    assert a.subscriptions_view()[day["id"]].expires_at == T0 + 86_400


def test_unknown_event_classes_are_refused_whatever_the_target() -> None:
    a = authority()
    for target in (STREAM, "did:key:nobody"):
        msg = subscribe(target, events=("publication", "x-weather"))
        assert _uniform(a.receive(msg, now=T0)) == [("Send", "reject", "endpoint.capability")]


def test_renewal_replaces_and_expires_in_zero_terminates_silently() -> None:
    a = authority()
    live_stream(a)
    first = subscribe()
    a.receive(first, now=T0)
    renewal = subscribe(expires_in=900)
    out = a.receive(renewal, now=T0 + 100)
    assert out[0] == SubscriptionEnded(first["id"], "replaced")
    assert (notifies(out)[0].subscription, notifies(out)[0].seq) == (renewal["id"], 1)
    assert a.subscriptions_view()[renewal["id"]].expires_at == T0 + 1000
    other_device = subscribe(sender=ALICE_LAPTOP)  # a different device: its own subscription
    a.receive(other_device, now=T0 + 100)
    assert len(a.subscriptions_view()) == 2
    assert a.receive(subscribe(expires_in=0), now=T0 + 200) == [
        SubscriptionEnded(renewal["id"], "terminated")
    ]
    assert a.receive(subscribe(expires_in=0), now=T0 + 200) == [Drop("no-matching-subscription")]
    assert list(a.subscriptions_view()) == [other_device["id"]]


def test_a_refused_renewal_leaves_the_prior_subscription_alone() -> None:
    a = authority(public=())
    live_stream(a)
    a.issue_capability("follow", STREAM, now=T0)
    held = subscribe(sender=CAROL_PHONE, capability="follow")
    a.receive(held, now=T0)
    bad = subscribe(sender=CAROL_PHONE, capability="stale-token")
    assert _uniform(a.receive(bad, now=T0 + 1)) == [("Send", "reject", "policy.blocked")]
    assert list(a.subscriptions_view()) == [held["id"]]


def test_lapsed_subscriptions_get_a_final_notify_with_the_last_state() -> None:
    a = authority()
    held = live_stream(a)
    early, late = subscribe(expires_in=60), subscribe(sender=CAROL_PHONE, expires_in=30)
    a.receive(early, now=T0)
    a.receive(late, now=T0 + 10)
    assert a.next_deadline() == T0 + 40
    assert a.advance(T0 + 39) == []
    out = a.advance(T0 + 3600)
    assert [(n.subscription, n.seq, n.state, n.reason) for n in notifies(out)] == [
        (late["id"], 2, "terminated", "session.expired"),  # deadline order
        (early["id"], 2, "terminated", "session.expired"),
    ]
    assert notifies(out)[0].body["publication"] == held
    assert a.subscriptions_view() == {}
    assert a.next_deadline() is None


def test_a_message_after_the_deadline_sees_the_subscription_gone_first() -> None:
    a = authority()
    live_stream(a)
    first = subscribe(expires_in=60)
    a.receive(first, now=T0)
    renewal = subscribe(expires_in=60)
    out = a.receive(renewal, now=T0 + 61)  # too late to renew: expiry, then a fresh one
    assert [type(em) for em in out] == [SendNotify, SendNotify]
    assert (out[0].subscription, out[0].state) == (first["id"], "terminated")  # type: ignore[union-attr]
    assert (out[1].subscription, out[1].seq) == (renewal["id"], 1)  # type: ignore[union-attr]


# --- authority: presence from bindings (spec-gap 19) ----------------------------------------


def test_presence_is_asserted_from_device_bindings() -> None:
    a = authority(public=(BOB,))
    sub = subscribe(BOB, events=("presence",), expires_in=3600)
    (first,) = notifies(a.receive(sub, now=T0))
    assert first.body == {"event": "presence", "state": "offline"}
    out = a.bind(BOB_PHONE, BOB, now=T0 + 1)
    assert [(n.seq, n.body["state"]) for n in notifies(out)] == [(2, "available")]
    assert a.bind(BOB_LAPTOP, BOB, now=T0 + 2) == []  # still available: nothing to say
    assert a.unbind(BOB_PHONE, BOB, now=T0 + 3) == []
    out = a.unbind(BOB_LAPTOP, BOB, now=T0 + 4)
    assert [(n.seq, n.body["state"]) for n in notifies(out)] == [(3, "offline")]


def test_a_target_that_bound_here_exists_for_presence() -> None:
    a = AuthorityEngine(directory=DIRECTORY)
    a.bind(CAROL_PHONE, CAROL, now=T0)
    a.set_policy(CAROL, SubscriptionPolicy(PolicyMode.ALLOW, frozenset({ALICE_PHONE})), now=T0)
    (first,) = a.receive(subscribe(CAROL, events=("presence",)), now=T0)
    assert isinstance(first, SendNotify)
    assert first.body["state"] == "available"


def test_a_subscription_for_both_event_classes_gets_both_current_states() -> None:
    a = authority(public=(BOB,))
    a.receive(publish(stream_id=BOB), now=T0)  # the publisher DID itself is a stream id
    out = a.receive(subscribe(BOB, events=("presence", "publication"), expires_in=3600), now=T0)
    assert [(n.seq, n.body["event"]) for n in notifies(out)] == [
        (1, "presence"),
        (2, "publication"),
    ]


def test_the_authority_never_raises_on_odd_messages() -> None:
    a = authority()
    assert a.receive({"type": "invite"}, now=T0) == [Drop("unsupported-type")]
    assert a.receive({}, now=T0) == [Drop("unsupported-type")]
    assert a.receive({"type": "subscribe", "from": ALICE_PHONE}, now=T0) == [Drop("malformed")]
    assert a.receive(publish(state="paused"), now=T0) == [Drop("malformed")]
    sub = subscribe()
    live_stream(a)
    a.receive(sub, now=T0)
    assert a.receive(sub, now=T0) == [Drop("duplicate-subscription")]
    with pytest.raises(EngineMisuseError):
        a.set_policy("", PUBLIC, now=T0)


# --- the tables -----------------------------------------------------------------------------


def test_the_tables_read_as_the_spec_says() -> None:
    assert {state for state, _ in AUTHORITY_TRANSITIONS} == {SubscriptionState.ACTIVE}
    terminal = {s for s in SubscriptionState if not s.live}
    assert not any(state in terminal for state, _ in SUBSCRIBER_TRANSITIONS)
    assert [(state, ev) for state, ev in PUBLICATION_TRANSITIONS if state is None] == [
        (None, "publish")
    ]
    assert [c.name for c in ADMISSION] == [
        "event-classes",
        "lifetime",
        "authorisation",
        "existence",
    ]
    assert ADMISSION[-1].reason == ADMISSION[-2].reason == "policy.blocked"


# --- subscriber ---------------------------------------------------------------------------


def notify(
    sub_id: str, seq: int, state: str = "active", *, sender: str = AUTHORITY, **fields: Any
) -> dict[str, Any]:
    body = fields.pop("body", {"event": "publication", "state": "live"})
    return {
        "type": "notify",
        "id": ulid(),
        "from": sender,
        "subscription": sub_id,
        "seq": seq,
        "state": state,
        "body": body,
        **fields,
    }


def subscriber() -> tuple[SubscriberEngine, str]:
    s = SubscriberEngine()
    sub_id = ulid()
    s.subscribe(sub_id, AUTHORITY, STREAM, ["publication"], 600, now=T0)
    return s, sub_id


def test_subscribe_sends_the_request_and_waits_for_the_first_notify() -> None:
    s = SubscriberEngine()
    out = s.subscribe("S1", AUTHORITY, STREAM, ["publication"], 600, now=T0, capability="tok")
    assert out == [
        SendSubscribe(AUTHORITY, STREAM, ("publication",), 600, id="S1", capability="tok")
    ]
    assert out[0].to_payload_fields() == {  # type: ignore[union-attr]
        "type": "subscribe",
        "to": AUTHORITY,
        "id": "S1",
        "target": STREAM,
        "events": ["publication"],
        "expires_in": 600,
        "capability": "tok",
    }
    view = s.view("S1")
    assert view is not None
    assert (view.state, view.seq) == (SubscriptionState.PENDING, 0)


def test_notifies_surface_in_seq_order_and_stale_ones_drop() -> None:
    s, sub = subscriber()
    assert s.receive(notify(sub, 1), now=T0) == [
        Ui("notify", {"event": "publication", "state": "live"}, sub)
    ]
    assert s.receive(notify(sub, 1), now=T0) == [Drop("stale-seq", sub)]
    ended = notify(sub, 3, body={"event": "publication", "state": "ended"})
    assert s.receive(ended, now=T0) == [
        Ui("notify", {"event": "publication", "state": "ended"}, sub)
    ]
    assert s.receive(notify(sub, 2), now=T0) == [Drop("stale-seq", sub)]
    view = s.view(sub)
    assert view is not None
    assert (view.state, view.seq) == (SubscriptionState.ACTIVE, 3)
    assert view.last_body == {"event": "publication", "state": "ended"}


def test_terminated_is_final() -> None:
    s, sub = subscriber()
    s.receive(notify(sub, 1), now=T0)
    out = s.receive(notify(sub, 2, "terminated", reason="policy.terminated"), now=T0)
    assert out == [Ui("subscription_terminated", {"reason": "policy.terminated"}, sub)]
    assert s.receive(notify(sub, 3), now=T0) == [Drop("terminated-subscription", sub)]
    assert s.unsubscribe(sub, now=T0) == [Refused("terminated-subscription", sub)]
    assert s.view(sub).state is SubscriptionState.TERMINATED  # type: ignore[union-attr]


def test_rejects_and_lifetime_errors_end_a_pending_subscription() -> None:
    s, sub = subscriber()
    reject = {"type": "reject", "from": AUTHORITY, "session": sub, "reason": "policy.blocked"}
    assert s.receive(reject, now=T0) == [
        Ui("subscription_rejected", {"reason": "policy.blocked"}, sub)
    ]
    s2, sub2 = subscriber()
    error = {
        "type": "error",
        "from": AUTHORITY,
        "in_reply_to": sub2,
        "reason": "policy.subscription-lifetime",
    }
    assert s2.receive(error, now=T0)[0] == Ui(
        "subscription_rejected", {"reason": "policy.subscription-lifetime"}, sub2
    )
    s3, sub3 = subscriber()
    s3.receive(notify(sub3, 1), now=T0)
    assert s3.receive({**reject, "session": sub3}, now=T0) == [Drop("invalid-state", sub3)]


def test_only_the_authority_speaks_for_a_subscription() -> None:
    s, sub = subscriber()
    assert s.receive(notify(sub, 1, sender=CAROL_PHONE), now=T0) == [
        Drop("unknown-subscription", sub)
    ]
    assert s.receive(notify(ulid(), 1), now=T0)[0].reason == "unknown-subscription"  # type: ignore[union-attr]
    assert s.receive({"type": "bye"}, now=T0) == [Drop("unsupported-type")]
    assert s.receive(notify(sub, 1, "paused"), now=T0) == [Drop("malformed", sub)]
    assert s.receive(notify(sub, "1"), now=T0) == [Drop("stale-seq", sub)]  # type: ignore[arg-type]


def test_a_subscription_lapses_when_its_lifetime_runs_out() -> None:
    s, sub = subscriber()
    assert s.next_deadline() == T0 + 600
    assert s.advance(T0 + 599) == []
    assert s.advance(T0 + 600) == [Ui("subscription_lapsed", {"subscription": sub}, sub)]
    assert s.receive(notify(sub, 5, "terminated", reason="session.expired"), now=T0 + 601) == [
        Drop("terminated-subscription", sub)
    ]
    # ended subscriptions are remembered for a while, then forgotten
    s.advance(T0 + 600 + 600)
    assert s.view(sub) is None


def test_unsubscribe_sends_expires_in_zero() -> None:
    s, sub = subscriber()
    assert s.unsubscribe(sub, now=T0) == [SendSubscribe(AUTHORITY, STREAM, ("publication",), 0)]
    assert s.view(sub).state is SubscriptionState.TERMINATED  # type: ignore[union-attr]
    assert s.unsubscribe("nope", now=T0) == [Refused("unknown-subscription", "nope")]


def test_an_accepted_renewal_replaces_the_prior_subscription() -> None:
    s, old = subscriber()
    s.receive(notify(old, 1), now=T0)
    s.subscribe("R1", AUTHORITY, STREAM, ["publication"], 600, now=T0 + 300)
    assert s.receive(notify(old, 2), now=T0 + 301)[0] == Ui(
        "notify", {"event": "publication", "state": "live"}, old
    )  # not yet admitted: the old one still speaks
    s.receive(notify("R1", 1), now=T0 + 302)
    assert s.view(old).state is SubscriptionState.REPLACED  # type: ignore[union-attr]
    assert s.receive(notify(old, 3), now=T0 + 303) == [Drop("terminated-subscription", old)]


def test_the_subscriber_refuses_what_the_authority_would_refuse() -> None:
    s, sub = subscriber()
    assert s.subscribe(sub, AUTHORITY, STREAM, ["publication"], 60, now=T0) == [
        Refused("duplicate-subscription", sub)
    ]
    assert s.subscribe("P", AUTHORITY, BOB, ["presence"], 3601, now=T0) == [
        Refused("subscription-lifetime", "P")
    ]
    with pytest.raises(EngineMisuseError):
        s.subscribe("Z", AUTHORITY, STREAM, ["publication"], 0, now=T0)
    with pytest.raises(EngineMisuseError):
        s.subscribe("Z", AUTHORITY, STREAM, [], 60, now=T0)


# --- stateful: the subscriber under a hostile, reordering wire ------------------------------

SUB_IDS = ["S1", "S2", "S3"]


class SubscriberUnderFire(RuleBasedStateMachine):
    """Notifies with any seq and state, rejects, renewals, unsubscribes and clock jumps:
    a subscription's seq never regresses, nothing is surfaced twice or out of order, and a
    subscription that ended stays ended."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.engine = SubscriberEngine(ended_retention_s=10**9)
        self.seq: dict[str, int] = {}
        self.ended: set[str] = set()
        self.surfaced: dict[str, list[int]] = {}

    def _observe(self, out: list[Any], seq: int | None = None) -> None:
        for em in out:
            if isinstance(em, Ui) and em.session is not None:
                assert em.session not in self.ended, f"{em} after {em.session} ended"
                if em.kind == "notify":
                    self.surfaced.setdefault(em.session, []).append(seq or 0)

    @rule(sub=st.sampled_from(SUB_IDS), expires_in=st.integers(1, 900))
    def subscribe(self, sub: str, expires_in: int) -> None:
        self._observe(
            self.engine.subscribe(sub, AUTHORITY, STREAM, ["publication"], expires_in, now=self.now)
        )

    @rule(
        sub=st.sampled_from([*SUB_IDS, "S-unknown"]),
        seq=st.integers(-2, 12),
        state=st.sampled_from(["active", "active", "active", "terminated", "bogus"]),
        sender=st.sampled_from([AUTHORITY, AUTHORITY, CAROL_PHONE]),
    )
    def notify(self, sub: str, seq: int, state: str, sender: str) -> None:
        self._observe(
            self.engine.receive(notify(sub, seq, state, sender=sender), now=self.now), seq
        )

    @rule(sub=st.sampled_from(SUB_IDS), kind=st.sampled_from(["reject", "error"]))
    def refuse(self, sub: str, kind: str) -> None:
        msg = {"type": kind, "from": AUTHORITY, "session": sub, "reason": "policy.blocked"}
        self._observe(self.engine.receive(msg, now=self.now))

    @rule(sub=st.sampled_from(SUB_IDS))
    def unsubscribe(self, sub: str) -> None:
        self._observe(self.engine.unsubscribe(sub, now=self.now))

    @rule(seconds=st.integers(0, 700))
    def advance(self, seconds: int) -> None:
        self.now += seconds
        self._observe(self.engine.advance(self.now))

    @invariant()
    def seq_never_regresses_and_ended_stays_ended(self) -> None:
        for sub_id, view in self.engine.views().items():
            assert view.seq >= self.seq.get(sub_id, 0)
            self.seq[sub_id] = view.seq
            if sub_id in self.ended:
                assert not view.state.live
            if not view.state.live:
                self.ended.add(sub_id)
        for seqs in self.surfaced.values():
            assert seqs == sorted(set(seqs)), seqs  # strictly increasing: no repeats


SubscriberUnderFire.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
TestSubscriberUnderFire = SubscriberUnderFire.TestCase


@pytest.mark.parametrize("seed", range(20))
def test_authority_to_subscriber_over_a_reordering_wire(seed: int) -> None:
    """Whatever order the notifies arrive in, the subscriber surfaces an increasing run of
    them and, once it sees ``terminated``, nothing more."""
    rng = random.Random(seed)
    a = authority()
    s = SubscriberEngine()
    live_stream(a)
    sub = s.subscribe("S1", AUTHORITY, STREAM, ["publication"], 600, now=T0)[0]
    assert isinstance(sub, SendSubscribe)
    wire = notifies(a.receive({**sub.to_payload_fields(), "from": ALICE_PHONE}, now=T0))
    for i in range(rng.randint(1, 8)):
        wire += notifies(a.receive(publish(rng.choice(["live", "ended"])), now=T0 + i))
    if rng.random() < 0.5:
        wire += notifies(a.advance(T0 + 600))
    rng.shuffle(wire)
    wire += rng.sample(wire, k=min(3, len(wire)))  # and some duplicates
    seen: list[int] = []
    terminated = False
    for n in wire:
        msg = {**n.to_payload_fields(), "from": AUTHORITY}
        for em in s.receive(msg, now=T0 + 10):
            assert not (terminated and isinstance(em, Ui)), em  # later ones only drop
            if isinstance(em, Ui) and em.kind == "notify":
                seen.append(n.seq)
            terminated = terminated or (isinstance(em, Ui) and em.kind == "subscription_terminated")
    assert seen == sorted(set(seen))
