"""The §12 session engines, from the spec text (the shared vectors run separately).

Each test is a behaviour a caller or callee would notice: what goes on the wire, what the
media layer is told, what the user sees, and which timers run.
"""

from __future__ import annotations

from typing import Any

import pytest

from dsip.core.forking import Deliver, Dequeue, Forward, LegState, Queue, RelayEngine
from dsip.core.session import (
    TRANSITIONS,
    Drop,
    Emission,
    EndpointEngine,
    EngineMisuseError,
    FirstContactPolicy,
    Info,
    Media,
    Refused,
    Role,
    Send,
    SessionState,
    TimerConfig,
    TimerFire,
    TimerName,
    TimerStart,
    TimerStop,
    Ui,
    UpdateDirection,
)
from dsip.errors import ConfigError

T0 = 1_760_000_000
ALICE, ALICE_PHONE = "did:key:alice", "did:key:alice-phone"
BOB, BOB_PHONE, BOB_LAPTOP = "did:key:bob", "did:key:bob-phone", "did:key:bob-laptop"
BOB_WEB = "did:web:example.com:users:bob"
CAROL, CAROL_PHONE = "did:key:carol", "did:key:carol-phone"
DIRECTORY = {
    ALICE_PHONE: ALICE,
    BOB_PHONE: BOB,
    BOB_LAPTOP: BOB,
    CAROL_PHONE: CAROL,
}

# ULID-shaped ids: lexicographic order is what glare compares (§12.6).
S1 = "01K742SG00AAAAAAAAAAAAAAA1"
S2 = "01K742SG00AAAAAAAAAAAAAAA2"
S0 = "01K742SG00AAAAAAAAAAAAAAA0"
U1 = "01K742SH00AAAAAAAAAAAAAAU1"
U2 = "01K742SH00AAAAAAAAAAAAAAU2"

T = TimerName


def caller(**kwargs: Any) -> EndpointEngine:
    return EndpointEngine(ALICE_PHONE, ALICE, directory=DIRECTORY, **kwargs)


def callee(device: str = BOB_PHONE, **kwargs: Any) -> EndpointEngine:
    return EndpointEngine(device, BOB, directory=DIRECTORY, **kwargs)


_ids = iter(f"01K742SJ00AAAAAAAAAAAA{n:04d}" for n in range(10_000))


def recv(
    engine: EndpointEngine, kind: str, sender: str, *, now: int = T0, **fields: Any
) -> list[Emission]:
    msg = {"type": kind, "from": sender, "id": fields.pop("id", None) or next(_ids), **fields}
    return engine.receive(msg, now=now)


def state(engine: EndpointEngine, session: str = S1) -> SessionState:
    view = engine.session_view(session)
    assert view is not None
    return view.state


def ringing_call(to: str = BOB_WEB, ring_timeout: int | None = None) -> EndpointEngine:
    """An initiator in PROCEEDING with T-Ring running."""
    e = caller()
    e.place_call(S1, to, now=T0)
    extra = {} if ring_timeout is None else {"ring_timeout": ring_timeout}
    recv(e, "progress", BOB_PHONE, session=S1, status="ringing", **extra)
    return e


def active_call(to: str = BOB_WEB) -> EndpointEngine:
    e = ringing_call(to)
    recv(e, "answer", BOB_PHONE, session=S1, answered_by="user")
    assert state(e) is SessionState.ACTIVE
    return e


def offered(engine: EndpointEngine | None = None, *, expires_at: int = T0 + 30) -> EndpointEngine:
    e = engine or callee()
    recv(e, "invite", ALICE_PHONE, id=S1, to=BOB_WEB, expires_at=expires_at)
    return e


def alerting(ring_timeout: int | None = 120) -> EndpointEngine:
    e = offered()
    e.alert(S1, now=T0, ring_timeout=ring_timeout)
    return e


def answered() -> EndpointEngine:
    e = alerting()
    e.accept(S1, now=T0 + 3)
    return e


# --- happy paths (§12.4) --------------------------------------------------------------------


def test_initiator_happy_path() -> None:
    e = caller()
    assert e.place_call(S1, BOB_WEB, now=T0) == [
        Send("invite", BOB_WEB, session=S1),
        TimerStart(T.T_ESTABLISH, 15, S1),
    ]
    assert state(e) is SessionState.INVITING
    out = recv(e, "progress", BOB_PHONE, session=S1, status="ringing")
    assert out == [
        TimerStop(T.T_ESTABLISH, S1),
        Ui("progress", {"status": "ringing"}, S1),
        TimerStart(T.T_RING, 120, S1),
    ]
    assert state(e) is SessionState.PROCEEDING
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="user")
    assert out == [
        TimerStop(T.T_RING, S1),
        Media("start", S1),
        Ui("answered", {"answered_by": "user"}, S1),
        # §12.7 rule 3: the invite was identity-addressed; other legs are released
        Send("cancel", BOB_WEB, session=S1, reason="session.answered-elsewhere"),
    ]
    assert state(e) is SessionState.ACTIVE
    assert e.hangup(S1, now=T0 + 60) == [
        Send("bye", BOB_PHONE, session=S1, reason="user.hangup"),
        Media("stop", S1),
    ]
    assert state(e) is SessionState.ENDED
    assert e.next_deadline() is None


def test_responder_happy_path() -> None:
    e = callee()
    assert recv(e, "invite", ALICE_PHONE, id=S1, to=BOB_WEB, expires_at=T0 + 30) == [
        Ui("offered", {}, S1)
    ]
    assert state(e) is SessionState.OFFERED
    assert e.alert(S1, now=T0 + 1, ring_timeout=60) == [
        Send("progress", ALICE_PHONE, session=S1, status="ringing", ring_timeout=60),
        TimerStart(T.T_RING_LOCAL, 60, S1),
    ]
    assert e.accept(S1, now=T0 + 5, answered_by="user") == [
        TimerStop(T.T_RING_LOCAL, S1),
        Send("answer", ALICE_PHONE, session=S1, answered_by="user"),
        Media("start", S1),
    ]
    assert state(e) is SessionState.ACTIVE
    assert recv(e, "bye", ALICE_PHONE, session=S1, reason="user.hangup") == [
        Media("stop", S1),
        Ui("ended", {"reason": "user.hangup"}, S1),
    ]
    assert state(e) is SessionState.ENDED


def test_device_addressed_invite_needs_no_answered_elsewhere_cancel() -> None:
    e = ringing_call(to=BOB_PHONE)
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="user")
    assert [m for m in out if isinstance(m, Send)] == []


def test_unknown_answered_by_renders_as_service() -> None:
    e = ringing_call()
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="robot-butler")
    assert Ui("answered", {"answered_by": "service"}, S1) in out


def test_answer_straight_from_inviting() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="screening")
    assert out[:3] == [
        TimerStop(T.T_ESTABLISH, S1),
        Media("start", S1),
        Ui("answered", {"answered_by": "screening"}, S1),
    ]


# --- the cancel/answer race (§12.5) ---------------------------------------------------------


def test_answer_crossing_our_cancel_is_released_with_bye_cancelled() -> None:
    e = ringing_call()
    assert e.cancel(S1, now=T0 + 4) == [
        TimerStop(T.T_RING, S1),
        Send("cancel", BOB_WEB, session=S1, reason="user.cancelled"),
    ]
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="user")
    assert out == [Send("bye", BOB_PHONE, session=S1, reason="session.cancelled")]
    assert state(e) is SessionState.ENDED  # never resurrected, no media


def test_answer_after_timeout_cancel_is_released_too() -> None:
    e = ringing_call()
    e.advance(T0 + 120)
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="user", now=T0 + 121)
    assert out == [Send("bye", BOB_PHONE, session=S1, reason="session.cancelled")]


def test_answer_after_rejected_attempt_gets_bye_session_failed() -> None:
    e = ringing_call()
    assert recv(e, "reject", BOB_LAPTOP, session=S1, reason="user.declined") == [
        TimerStop(T.T_RING, S1),
        Ui("ended", {"reason": "user.declined"}, S1),
    ]
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="user")
    assert out == [Send("bye", BOB_PHONE, session=S1, reason="session.failed")]


def test_crossed_cancel_tears_down_without_error() -> None:
    e = answered()
    out = recv(e, "cancel", ALICE_PHONE, session=S1, reason="user.cancelled")
    assert out == [Media("stop", S1), Ui("ended", {"reason": "user.cancelled"}, S1)]
    assert state(e) is SessionState.ENDED


def test_cancel_after_initiator_spoke_post_answer_is_late() -> None:
    e = answered()
    recv(e, "info", ALICE_PHONE, session=S1, about="transport:webrtc")
    out = recv(e, "cancel", ALICE_PHONE, session=S1, reason="user.cancelled", id="X1")
    assert out == [
        Send("error", ALICE_PHONE, session=S1, reason="session.invalid-state", in_reply_to="X1")
    ]
    assert state(e) is SessionState.ACTIVE


def test_answered_elsewhere_reaching_the_answering_leg_is_not_a_crossed_cancel() -> None:
    e = answered()
    out = recv(e, "cancel", ALICE_PHONE, session=S1, reason="session.answered-elsewhere")
    assert [type(m) for m in out] == [Send]
    assert state(e) is SessionState.ACTIVE


@pytest.mark.parametrize(
    ("reason", "missed"),
    [
        ("user.cancelled", True),
        ("session.timeout", True),
        ("session.answered-elsewhere", False),
    ],
)
def test_cancel_while_alerting_surfaces_a_missed_call_unless_answered_elsewhere(
    reason: str, missed: bool
) -> None:
    e = alerting()
    out = recv(e, "cancel", ALICE_PHONE, session=S1, reason=reason)
    assert out[0] == TimerStop(T.T_RING_LOCAL, S1)
    assert (Ui("missed_call", {}, S1) in out) is missed
    assert out[-1] == Ui("ended", {"reason": reason}, S1)


def test_cancel_before_alerting_is_discarded_quietly() -> None:
    e = offered()
    out = recv(e, "cancel", ALICE_PHONE, session=S1, reason="user.cancelled")
    assert out == [Ui("ended", {"reason": "user.cancelled"}, S1)]


def test_cancel_from_another_identity_is_ignored() -> None:
    """§12.11: only the identity that signed the invite may withdraw it."""
    e = alerting()
    assert recv(e, "cancel", CAROL_PHONE, session=S1, reason="user.cancelled") == [
        Drop("not-party", S1)
    ]
    assert state(e) is SessionState.ALERTING


# --- glare (§12.6) ----------------------------------------------------------------------------


def test_glare_our_smaller_id_wins() -> None:
    e = caller()
    e.place_call(S1, BOB, now=T0)
    out = recv(e, "invite", BOB_PHONE, id=S2, to=ALICE, expires_at=T0 + 30)
    assert out == [Send("reject", BOB_PHONE, session=S2, reason="session.glare")]
    assert state(e, S1) is SessionState.INVITING
    assert state(e, S2) is SessionState.ENDED


def test_glare_their_smaller_id_wins() -> None:
    e = caller()
    e.place_call(S1, BOB, now=T0)
    out = recv(e, "invite", BOB_PHONE, id=S0, to=ALICE, expires_at=T0 + 30)
    assert out == [
        TimerStop(T.T_ESTABLISH, S1),
        Send("cancel", BOB, session=S1, reason="session.glare"),
        Ui("ended", {"reason": "session.glare"}, S1),
        Ui("offered", {}, S0),
    ]
    view = e.session_view(S0)
    assert view is not None
    assert (view.role, view.state) == (Role.RESPONDER, SessionState.OFFERED)


def test_glare_equal_ids_fails_both_and_hints_a_retry() -> None:
    e = caller()
    e.place_call(S1, BOB, now=T0)
    out = recv(e, "invite", BOB_PHONE, id=S1, to=ALICE, expires_at=T0 + 30)
    assert Send("cancel", BOB, session=S1, reason="session.glare") in out
    assert Send("reject", BOB_PHONE, session=S1, reason="session.glare") in out
    assert out[-1] == Ui("glare_retry", {}, S1)
    assert state(e) is SessionState.ENDED


def test_invite_from_an_unrelated_identity_is_not_glare() -> None:
    e = caller()
    e.place_call(S1, BOB, now=T0)
    assert recv(e, "invite", CAROL_PHONE, id=S0, to=ALICE, expires_at=T0 + 30) == [
        Ui("offered", {}, S0)
    ]
    assert state(e, S1) is SessionState.INVITING


def test_glare_resolves_to_one_call_on_both_sides() -> None:
    """Alice and Bob call each other at once; wiring their messages back-to-back leaves
    exactly the smaller-id call alive, with Alice calling and Bob being called."""
    alice, bob = caller(), callee()
    a_out = alice.place_call(S1, BOB, now=T0)
    b_out = bob.place_call(S2, ALICE, now=T0)
    invite_a = _wire(a_out, ALICE_PHONE)[0]
    invite_b = _wire(b_out, BOB_PHONE)[0]
    # the invites cross; each side then sees the other's glare withdrawal/rejection
    to_alice = _wire(alice.receive(invite_b, now=T0 + 1), ALICE_PHONE)
    to_bob = _wire(bob.receive(invite_a, now=T0 + 1), BOB_PHONE)
    for m in to_alice:
        bob.receive(m, now=T0 + 2)
    for m in to_bob:
        alice.receive(m, now=T0 + 2)
    assert state(alice, S1) is SessionState.INVITING
    assert state(bob, S1) is SessionState.OFFERED
    assert state(bob, S2) is SessionState.ENDED
    assert state(alice, S2) is SessionState.ENDED


def _wire(out: list[Emission], sender: str) -> list[dict[str, Any]]:
    msgs = []
    for m in out:
        if isinstance(m, Send):
            body = {**m.to_payload_fields(), "from": sender}
            body["id"] = m.id or (m.session if m.type == "invite" else next(_ids))
            if m.type == "invite":
                body["expires_at"] = T0 + 30
            msgs.append(body)
    return msgs


# --- forking (§12.7) --------------------------------------------------------------------------


def test_first_answer_wins_and_a_late_leg_is_released() -> None:
    e = ringing_call()
    recv(e, "progress", BOB_LAPTOP, session=S1, status="ringing")
    recv(e, "answer", BOB_PHONE, session=S1, answered_by="user")
    assert recv(e, "answer", BOB_LAPTOP, session=S1, answered_by="user") == [
        Send("bye", BOB_LAPTOP, session=S1, reason="session.already-answered")
    ]
    out = recv(e, "answer", BOB_PHONE, session=S1, answered_by="user", id="X2")
    assert out == [
        Send("error", BOB_PHONE, session=S1, reason="session.invalid-state", in_reply_to="X2")
    ]
    assert state(e) is SessionState.ACTIVE


def test_progress_from_several_legs_keeps_proceeding() -> None:
    e = ringing_call()
    out = recv(e, "progress", BOB_LAPTOP, session=S1, status="ringing")
    assert out == [Ui("progress", {"status": "ringing"}, S1)]  # T-Ring is not extended


def _forked(relay: RelayEngine) -> None:
    relay.fork_invite(S1, ALICE_PHONE, BOB_WEB, [BOB_PHONE, BOB_LAPTOP, "did:key:bob-tab"], now=T0)


@pytest.mark.parametrize(
    ("rejects", "outcome"),
    [
        (["endpoint.busy", "user.declined", "endpoint.unavailable"], "user.declined"),
        (["endpoint.unavailable", "endpoint.busy", "user.no-answer"], "user.no-answer"),
        (["endpoint.unavailable", "endpoint.busy", "endpoint.unavailable"], "endpoint.busy"),
        (["policy.blocked", "media.unsupported", "policy.blocked"], "policy.blocked"),
        (["media.unsupported", "endpoint.unavailable", "policy.blocked"], "endpoint.unavailable"),
    ],
)
def test_relay_forwards_the_most_informative_reject_once(rejects: list[str], outcome: str) -> None:
    relay = RelayEngine()
    _forked(relay)
    legs = [BOB_PHONE, BOB_LAPTOP, "did:key:bob-tab"]
    outs = [
        relay.receive({"type": "reject", "from": leg, "session": S1, "reason": r}, now=T0)
        for leg, r in zip(legs, rejects, strict=True)
    ]
    assert outs[0] == outs[1] == []  # not the attempt outcome while a leg is live
    assert len(outs[2]) == 1
    forwarded = outs[2][0]
    assert isinstance(forwarded, Forward)
    assert (forwarded.type, forwarded.reason) == ("reject", outcome)


def test_relay_cancel_reaches_only_live_legs_and_a_cancelled_leg_stays_quiet() -> None:
    relay = RelayEngine()
    _forked(relay)
    relay.receive({"type": "answer", "from": BOB_PHONE, "session": S1}, now=T0)
    relay.leg_expired(S1, "did:key:bob-tab", now=T0)
    out = relay.receive(
        {
            "type": "cancel",
            "from": ALICE_PHONE,
            "session": S1,
            "reason": "session.answered-elsewhere",
        },
        now=T0,
    )
    assert out == [Deliver(BOB_LAPTOP, "cancel", reason="session.answered-elsewhere")]
    late = relay.receive({"type": "progress", "from": BOB_LAPTOP, "session": S1}, now=T0)
    assert late == [Drop("leg-terminated", S1)]
    view = relay.attempt_view(S1)
    assert view is not None
    assert view.legs[BOB_LAPTOP] is LegState.CANCELLED


def test_relay_holds_for_known_identities_and_drops_a_cancelled_invite() -> None:
    relay = RelayEngine()
    relay.bind(BOB_PHONE, BOB, now=T0)
    relay.unbind(BOB_PHONE, BOB, now=T0)
    invite = {"type": "invite", "id": S1, "from": ALICE_PHONE, "to": BOB, "expires_at": T0 + 30}
    assert relay.receive(invite, now=T0) == [Queue(BOB, "invite")]
    cancel = {"type": "cancel", "from": ALICE_PHONE, "session": S1, "reason": "user.cancelled"}
    assert relay.receive(cancel, now=T0 + 1) == [Dequeue(BOB, "invite", "cancelled")]
    assert relay.bind(BOB_PHONE, BOB, now=T0 + 2) == []
    assert relay.attempt_view(S1) is None


# --- renegotiation (§12.8) --------------------------------------------------------------------


def test_one_outstanding_update_across_both_directions() -> None:
    e = active_call()
    assert e.update(S1, U1, now=T0) == [Send("update", BOB_PHONE, session=S1, id=U1)]
    view = e.session_view(S1)
    assert view is not None
    assert view.renegotiating
    assert e.update(S1, U2, now=T0) == [Refused("update-pending", S1)]

    e2 = answered()
    recv(e2, "update", ALICE_PHONE, session=S1, id=U1)
    assert e2.update(S1, U2, now=T0) == [Refused("update-pending", S1)]


def test_update_glare_smaller_id_proceeds_either_way() -> None:
    ours_wins = active_call()
    ours_wins.update(S1, U1, now=T0)
    assert recv(ours_wins, "update", BOB_PHONE, session=S1, id=U2) == [
        Send("reject", BOB_PHONE, session=S1, reason="session.glare", in_reply_to=U2)
    ]
    theirs_wins = active_call()
    theirs_wins.update(S1, U2, now=T0)
    assert recv(theirs_wins, "update", BOB_PHONE, session=S1, id=U1) == [
        Ui("update_rejected", {"reason": "session.glare"}, S1),
        Ui("update_offered", {}, S1),
    ]
    view = theirs_wins.session_view(S1)
    assert view is not None
    assert view.outstanding_update is not None
    assert view.outstanding_update.direction is UpdateDirection.INBOUND
    # the peer's glare reject of our losing update is stale by now
    stale = recv(
        theirs_wins, "reject", BOB_PHONE, session=S1, reason="session.glare", in_reply_to=U2
    )
    assert stale == [Drop("stale-update-reply", S1)]


def test_second_update_from_the_same_sender_discards_both() -> None:
    e = answered()
    recv(e, "update", ALICE_PHONE, session=S1, id=U1)
    out = recv(e, "update", ALICE_PHONE, session=S1, id=U2)
    assert out == [
        Send("error", ALICE_PHONE, session=S1, reason="session.update-pending", in_reply_to=U2)
    ]
    assert e.answer_update(S1, U1, now=T0) == [Refused("no-pending-update", S1)]


def test_update_answer_applies_and_reject_keeps_the_session() -> None:
    e = active_call()
    e.update(S1, U1, now=T0)
    assert recv(e, "answer", BOB_PHONE, session=S1, answered_by="user", in_reply_to=U1) == [
        Media("apply_update", S1)
    ]
    e.update(S1, U2, now=T0)
    out = recv(e, "reject", BOB_PHONE, session=S1, reason="media.unsupported", in_reply_to=U2)
    assert out == [Ui("update_rejected", {"reason": "media.unsupported"}, S1)]
    assert state(e) is SessionState.ACTIVE


def test_answering_an_inbound_update() -> None:
    e = answered()
    assert recv(e, "update", ALICE_PHONE, session=S1, id=U1) == [Ui("update_offered", {}, S1)]
    assert e.answer_update(S1, U1, now=T0) == [
        Send("answer", ALICE_PHONE, session=S1, answered_by="user", in_reply_to=U1),
        Media("apply_update", S1),
    ]
    recv(e, "update", ALICE_PHONE, session=S1, id=U2)
    assert e.reject_update(S1, U2, "media.unsupported", now=T0) == [
        Send("reject", ALICE_PHONE, session=S1, reason="media.unsupported", in_reply_to=U2)
    ]


def test_bye_wins_over_a_pending_update() -> None:
    e = active_call()
    e.update(S1, U1, now=T0)
    recv(e, "bye", BOB_PHONE, session=S1, reason="user.hangup")
    view = e.session_view(S1)
    assert view is not None
    assert (view.state, view.outstanding_update) == (SessionState.ENDED, None)


def test_screening_escalation_carries_answered_by_in_the_update() -> None:
    e = alerting()
    e.accept(S1, now=T0, answered_by="screening")
    assert e.update(S1, U1, now=T0, answered_by="user") == [
        Send("update", ALICE_PHONE, session=S1, id=U1, answered_by="user")
    ]


# --- timers (§12.9, §12.10) -------------------------------------------------------------------


def test_t_establish_cancels_with_session_timeout() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    assert e.next_deadline() == T0 + 15
    assert e.advance(T0 + 14) == []
    assert e.advance(T0 + 15) == [
        TimerFire(T.T_ESTABLISH, S1),
        Send("cancel", BOB_WEB, session=S1, reason="session.timeout"),
        Ui("ended", {"reason": "session.timeout"}, S1),
    ]


@pytest.mark.parametrize(("ring_timeout", "seconds"), [(10, 30), (200, 200), (1000, 300)])
def test_t_ring_honours_ring_timeout_within_bounds(ring_timeout: int, seconds: int) -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    out = recv(e, "progress", BOB_PHONE, session=S1, status="ringing", ring_timeout=ring_timeout)
    assert out[-1] == TimerStart(T.T_RING, seconds, S1)


def test_repeated_ringing_restarts_t_ring_only_with_a_ring_timeout() -> None:
    e = ringing_call()
    assert recv(e, "progress", BOB_PHONE, session=S1, status="ringing") == [
        Ui("progress", {"status": "ringing"}, S1)
    ]
    out = recv(e, "progress", BOB_PHONE, session=S1, status="ringing", ring_timeout=240)
    assert out == [Ui("progress", {"status": "ringing"}, S1), TimerStart(T.T_RING, 240, S1)]


def test_trying_bounds_proceeding_with_t_ring() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    out = recv(e, "progress", BOB_PHONE, session=S1, status="forwarded")
    assert out[-1] == TimerStart(T.T_RING, 120, S1)
    assert recv(e, "progress", BOB_PHONE, session=S1, status="mulling") == [
        Ui("progress", {"status": "trying"}, S1)
    ]


def test_t_queue_replaces_t_ring_and_is_capped() -> None:
    e = ringing_call()
    out = recv(e, "progress", BOB_PHONE, session=S1, status="queued", queue_timeout=7200)
    assert out == [
        Ui("progress", {"status": "queued"}, S1),
        TimerStop(T.T_RING, S1),
        TimerStart(T.T_QUEUE, 1800, S1),
    ]
    out = recv(e, "progress", BOB_PHONE, session=S1, status="ringing")
    assert out[1:] == [TimerStop(T.T_QUEUE, S1), TimerStart(T.T_RING, 120, S1)]


def test_t_queue_expiry_cancels() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    recv(e, "progress", BOB_PHONE, session=S1, status="queued", queue_timeout=90)
    assert e.advance(T0 + 90)[:2] == [
        TimerFire(T.T_QUEUE, S1),
        Send("cancel", BOB_WEB, session=S1, reason="session.timeout"),
    ]


def test_fourth_consecutive_queued_is_treated_as_t_queue_expiry() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    for _ in range(3):
        out = recv(e, "progress", BOB_PHONE, session=S1, status="queued", queue_timeout=60)
        assert out[-1] == TimerStart(T.T_QUEUE, 60, S1)
    out = recv(e, "progress", BOB_PHONE, session=S1, status="queued", queue_timeout=60)
    assert out[1:] == [
        TimerStop(T.T_QUEUE, S1),
        Send("cancel", BOB_WEB, session=S1, reason="session.timeout"),
        Ui("ended", {"reason": "session.timeout"}, S1),
    ]


def test_ringing_ends_a_run_of_queued() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    for status in ("queued", "queued", "queued", "ringing", "queued"):
        recv(e, "progress", BOB_PHONE, session=S1, status=status, queue_timeout=60)
    assert state(e) is SessionState.PROCEEDING


def test_user_abandons_a_queued_call() -> None:
    e = caller()
    e.place_call(S1, BOB_WEB, now=T0)
    recv(e, "progress", BOB_PHONE, session=S1, status="queued", queue_timeout=900)
    assert e.cancel(S1, now=T0 + 5) == [
        TimerStop(T.T_QUEUE, S1),
        Send("cancel", BOB_WEB, session=S1, reason="user.cancelled"),
    ]


def test_t_ring_local_rejects_with_no_answer() -> None:
    e = alerting(ring_timeout=None)
    assert e.advance(T0 + 119) == []
    assert e.advance(T0 + 120) == [
        TimerFire(T.T_RING_LOCAL, S1),
        Send("reject", ALICE_PHONE, session=S1, reason="user.no-answer"),
        Ui("ended", {"reason": "user.no-answer"}, S1),
    ]


def test_local_ring_timeout_is_clamped_and_advertised_as_clamped() -> None:
    e = offered()
    assert e.alert(S1, now=T0, ring_timeout=5) == [
        Send("progress", ALICE_PHONE, session=S1, status="ringing", ring_timeout=30),
        TimerStart(T.T_RING_LOCAL, 30, S1),
    ]


def test_invite_validity_bounds_delivery_until_alerting() -> None:
    late = offered(expires_at=T0 + 30)
    assert late.alert(S1, now=T0 + 31) == [
        Send("reject", ALICE_PHONE, session=S1, reason="session.expired")
    ]
    in_time = alerting()
    in_time.advance(T0 + 60)  # past expires_at, but T-Ring-Local governs now
    assert state(in_time) is SessionState.ALERTING


def test_timers_fire_in_deadline_order_ties_by_start_order() -> None:
    e = caller()
    e.place_call(S2, BOB_WEB, now=T0)
    e.place_call(S1, "did:key:dave", now=T0)
    fired = [m for m in e.advance(T0 + 100) if isinstance(m, TimerFire)]
    assert [m.session for m in fired] == [S2, S1]


def test_timer_config_rejects_out_of_bounds_values() -> None:
    with pytest.raises(ConfigError):
        TimerConfig(t_establish=90)
    assert TimerConfig.from_mapping({"t_ring": 60, "unrelated": 1}).t_ring == 60


# --- invalid for state (§12.2, §12.4, §12.12) -------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("bye", {"reason": "user.hangup"}),
        ("update", {}),
        ("info", {"about": "transport:webrtc"}),
        ("cancel", {"reason": "user.cancelled"}),
    ],
)
def test_messages_invalid_before_active_get_invalid_state(
    kind: str, fields: dict[str, Any]
) -> None:
    e = ringing_call()
    out = recv(e, kind, BOB_PHONE, session=S1, id="X3", **fields)
    assert out == [
        Send("error", BOB_PHONE, session=S1, reason="session.invalid-state", in_reply_to="X3")
    ]
    assert state(e) is SessionState.PROCEEDING


def test_answer_at_a_responder_is_invalid() -> None:
    e = alerting()
    out = recv(e, "answer", ALICE_PHONE, session=S1, answered_by="user")
    assert [m.reason for m in out if isinstance(m, Send)] == ["session.invalid-state"]


def test_unknown_session_is_rejected() -> None:
    e = caller()
    out = recv(e, "bye", BOB_PHONE, session=S2, reason="user.hangup", id="X4")
    assert out == [
        Send("error", BOB_PHONE, session=S2, reason="session.unknown-session", in_reply_to="X4")
    ]


def test_ended_session_drops_traffic() -> None:
    e = active_call()
    e.hangup(S1, now=T0)
    assert recv(e, "info", BOB_PHONE, session=S1, about="transport:webrtc") == [
        Drop("ended-session", S1)
    ]


def test_received_errors_are_surfaced_never_answered() -> None:
    e = ringing_call()
    assert recv(e, "error", BOB_PHONE, session=S1, reason="policy.rate-limited") == [
        Ui("error", {"reason": "policy.rate-limited"}, S1)
    ]
    assert recv(e, "error", BOB_PHONE, session=S2, reason="session.failed") == [
        Ui("error", {"reason": "session.failed"}, S2)
    ]
    assert state(e) is SessionState.PROCEEDING


def test_info_is_handed_to_known_bindings_only() -> None:
    e = active_call()
    assert recv(e, "info", BOB_PHONE, session=S1, about="transport:webrtc") == [
        Info("transport:webrtc", S1)
    ]
    assert recv(e, "info", BOB_PHONE, session=S1, about="x-future:thing") == [
        Drop("unknown-about", S1)
    ]


def test_local_actions_in_the_wrong_state_are_refused() -> None:
    e = ringing_call()
    assert e.hangup(S1, now=T0) == [Refused("invalid-state", S1)]
    assert e.accept(S2, now=T0) == [Refused("unknown-session", S2)]
    assert e.place_call(S1, BOB_WEB, now=T0) == [Refused("duplicate-session", S1)]
    e.cancel(S1, now=T0)
    assert e.cancel(S1, now=T0) == [Refused("ended-session", S1)]


def test_programmer_misuse_raises() -> None:
    with pytest.raises(EngineMisuseError):
        caller().place_call("", BOB_WEB, now=T0)


def test_every_table_row_is_reachable_from_its_state() -> None:
    """Rows name real handlers for states the role actually has."""
    initiator = {SessionState.IDLE, SessionState.INVITING, SessionState.PROCEEDING}
    responder = {SessionState.IDLE, SessionState.OFFERED, SessionState.ALERTING}
    for role, st, _trigger in TRANSITIONS:
        if role is Role.INITIATOR:
            assert st not in responder - initiator
        if role is Role.RESPONDER:
            assert st not in initiator - responder


def test_send_maps_to_payload_fields() -> None:
    grant = Send("grant", CAROL, session=S1, id=U1, scope=("dsip.invite",), valid_until=T0)
    assert grant.to_payload_fields() == {
        "type": "grant",
        "to": CAROL,
        "session": S1,
        "id": U1,
        "scope": ["dsip.invite"],
        "valid_until": T0,
    }


# --- first contact (§19.4) --------------------------------------------------------------------

GUARDED = FirstContactPolicy(first_contact_required=True)


def test_first_contact_required_refuses_without_ringing() -> None:
    e = callee(policy=GUARDED)
    out = recv(e, "invite", CAROL_PHONE, id=S1, to=BOB, expires_at=T0 + 30)
    assert out == [Send("reject", CAROL_PHONE, session=S1, reason="policy.first-contact-required")]


def test_introduction_grant_admits_until_revoked() -> None:
    e = callee(policy=GUARDED)
    intro = "01K742SG00AAAAAAAAAAAAINT1"
    assert recv(e, "introduction", CAROL_PHONE, id=intro, to=BOB, purpose="hi") == [
        Ui("introduction_received", {"from": CAROL})
    ]
    assert e.contacts_view().requests == (intro,)
    assert e.grant(intro, U1, ["dsip.invite"], T0 + 3600, now=T0) == [
        Send("grant", CAROL, session=intro, id=U1, scope=("dsip.invite",), valid_until=T0 + 3600)
    ]
    assert recv(e, "invite", CAROL_PHONE, id=S1, to=BOB, expires_at=T0 + 30) == [
        Ui("offered", {}, S1)
    ]
    e.revoke(U1, now=T0)
    out = recv(e, "invite", CAROL_PHONE, id=S2, to=BOB, expires_at=T0 + 30, grant=U1)
    assert [m.reason for m in out if isinstance(m, Send)] == ["policy.first-contact-required"]


def test_a_grant_without_invite_scope_admits_nothing() -> None:
    e = callee(policy=GUARDED)
    recv(e, "introduction", CAROL_PHONE, id="I2", to=BOB)
    e.grant("I2", U1, ["dsip.subscribe"], T0 + 3600, now=T0)
    out = recv(e, "invite", CAROL_PHONE, id=S1, to=BOB, expires_at=T0 + 30, grant=U1)
    assert state(e) is SessionState.ENDED
    assert isinstance(out[0], Send)


def test_contact_token_auto_grants_once() -> None:
    e = callee(policy=GUARDED)
    e.issue_token("tok", U1, now=T0)
    out = recv(e, "introduction", CAROL_PHONE, id="I3", to=BOB, contact_token="tok")
    assert out[0] == Ui("introduction_received", {"from": CAROL, "token": True})
    assert isinstance(out[1], Send)
    assert out[1].type == "grant"
    again = recv(e, "introduction", CAROL_PHONE, id="I4", to=BOB, contact_token="tok")
    assert again == [Ui("introduction_received", {"from": CAROL})]


def test_duplicate_introduction_and_unknown_grant_targets() -> None:
    e = callee(policy=GUARDED)
    recv(e, "introduction", CAROL_PHONE, id="I5", to=BOB)
    assert recv(e, "introduction", CAROL_PHONE, id="I5", to=BOB) == [Drop("duplicate-introduction")]
    assert e.grant("I-unknown", U1, ["dsip.invite"], T0, now=T0) == [
        Refused("unknown-introduction")
    ]
    assert e.revoke("G-unknown", now=T0) == [Refused("unknown-grant")]


def test_sender_side_of_first_contact() -> None:
    e = caller()
    assert e.introduce("I6", BOB, "hello", now=T0) == [
        Send("introduction", BOB, id="I6", purpose="hello")
    ]
    assert e.contacts_view().pending_sent == ("I6",)
    out = recv(e, "grant", BOB_PHONE, session="I6", id=U1, scope=["dsip.invite"], valid_until=T0)
    assert out == [Ui("granted", {"by": BOB})]
    assert e.contacts_view().grants_held == (U1,)
    e.introduce("I7", CAROL, "hello", now=T0)
    out = recv(e, "reject", CAROL_PHONE, session="I7", reason="user.declined")
    assert out == [Ui("introduction_rejected", {"reason": "user.declined"})]
    assert e.contacts_view().pending_sent == ()
