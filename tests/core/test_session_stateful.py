"""Two endpoint engines wired back-to-back, driven by hypothesis (h2-style).

Every ``Send`` one engine emits is put on the wire to the other; the wire may deliver,
lose or duplicate its head message (§12.3 promises order, not that a peer stays reachable),
and both users act at random while the clock jumps. Whatever happens, the §12 invariants
hold and the engines never raise.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dsip.core.session import (
    Emission,
    EndpointEngine,
    Media,
    Role,
    Send,
    SessionState,
    SessionView,
    TimerFire,
    TimerName,
    TimerStart,
    TimerStop,
)

T0 = 1_760_000_000
DEVICES = {"A": "did:key:alice-phone", "B": "did:key:bob-phone"}
IDENTITIES = {"A": "did:key:alice", "B": "did:key:bob"}
DIRECTORY = {DEVICES[k]: IDENTITIES[k] for k in DEVICES}
OTHER = {"A": "B", "B": "A"}

SIDES = st.sampled_from(["A", "B"])
ACTIONS = st.sampled_from(
    [
        "cancel",
        "hangup",
        "alert",
        "auto_reject",
        "accept",
        "decline",
        "update",
        "answer_update",
        "reject_update",
        "info",
    ]
)


def any_live_session(machine: BackToBack) -> bool:
    return any(
        s.state in (SessionState.OFFERED, SessionState.ALERTING, SessionState.ACTIVE)
        for e in machine.engines.values()
        for s in e.sessions.values()
    )


class BackToBack(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.engines = {
            side: EndpointEngine(DEVICES[side], IDENTITIES[side], directory=DIRECTORY)
            for side in DEVICES
        }
        self.wire: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}  # in flight *to* side
        self.ids = itertools.count(1)
        # what the emissions alone say is running / started, per side
        self.timers: dict[str, set[tuple[str, TimerName]]] = {"A": set(), "B": set()}
        self.media: dict[str, set[str]] = {"A": set(), "B": set()}
        self.seen_ended: dict[str, set[str]] = {"A": set(), "B": set()}

    # --- helpers --------------------------------------------------------------------------

    def new_id(self) -> str:
        return f"01K{next(self.ids):023d}"  # ULID-shaped and ordered like ULIDs

    def views(self, side: str) -> dict[str, SessionView]:
        engine = self.engines[side]
        return {sid: s.view() for sid, s in engine.sessions.items()}

    def pick(self, side: str, index: int) -> str | None:
        sessions = sorted(self.engines[side].sessions)
        return sessions[index % len(sessions)] if sessions else None

    def apply(
        self,
        side: str,
        out: list[Emission],
        before: dict[str, SessionView],
        received: dict[str, Any] | None = None,
    ) -> None:
        """Check the emissions against the invariants they must keep, and wire the sends."""
        for em in out:
            if isinstance(em, Send):
                if em.type == "update":
                    # §12.8 rule 2: never a second outstanding update on one session
                    prior = before.get(em.session or "")
                    assert prior is not None
                    assert prior.outstanding_update is None
                self.put_on_wire(side, em)
            elif isinstance(em, TimerStart):
                self.timers[side].add((em.session or "", em.name))
            elif isinstance(em, TimerStop | TimerFire):
                key = (em.session or "", em.name)
                assert key in self.timers[side], f"{em} for a timer that was not running"
                self.timers[side].discard(key)
            elif isinstance(em, Media) and em.action == "start":
                sid = em.session or ""
                assert sid not in self.media[side]
                view = self.engines[side].session_view(sid)
                assert view is not None
                if view.role is Role.INITIATOR:
                    # §14.1: no media without a signed answer the initiator accepted
                    assert received is not None
                    assert received["type"] == "answer"
                    assert "in_reply_to" not in received
                    assert received["session"] == sid
                    assert before[sid].state in (SessionState.INVITING, SessionState.PROCEEDING)
                self.media[side].add(sid)
            elif isinstance(em, Media) and em.action == "stop":
                assert (em.session or "") in self.media[side]
                self.media[side].discard(em.session or "")

    def put_on_wire(self, side: str, em: Send) -> None:
        msg = {**em.to_payload_fields(), "from": DEVICES[side]}
        if em.type == "invite":
            msg["id"] = em.session
            msg["expires_at"] = self.now + 30
        else:
            msg["id"] = em.id or self.new_id()
        self.wire[OTHER[side]].append(msg)

    # --- rules ----------------------------------------------------------------------------

    @precondition(lambda self: sum(len(e.sessions) for e in self.engines.values()) < 8)
    @rule(side=SIDES, to_identity=st.booleans())
    def place_call(self, side: str, to_identity: bool) -> None:
        other = OTHER[side]
        to = IDENTITIES[other] if to_identity else DEVICES[other]
        before = self.views(side)
        self.apply(side, self.engines[side].place_call(self.new_id(), to, now=self.now), before)

    @precondition(lambda self: any(e.sessions for e in self.engines.values()))
    @rule(side=SIDES, action=ACTIONS, index=st.integers(0, 7), knob=st.integers(0, 400))
    def local_action(self, side: str, action: str, index: int, knob: int) -> None:
        sid = self.pick(side, index)
        if sid is None:
            return
        e, now = self.engines[side], self.now
        before = self.views(side)
        pending = before[sid].outstanding_update
        reply_to = pending.id if pending is not None and knob % 5 else self.new_id()
        match action:
            case "cancel":
                out = e.cancel(sid, now=now)
            case "hangup":
                out = e.hangup(sid, now=now, reason="media.failed" if knob % 2 else "user.hangup")
            case "alert":
                out = e.alert(sid, now=now, ring_timeout=knob or None)
            case "auto_reject":
                out = e.auto_reject(sid, "policy.blocked", now=now)
            case "accept":
                out = e.accept(sid, now=now, answered_by=("user", "screening")[knob % 2])
            case "decline":
                out = e.decline(sid, now=now)
            case "update":
                out = e.update(sid, self.new_id(), now=now)
            case "answer_update":
                out = e.answer_update(sid, reply_to, now=now)
            case "reject_update":
                out = e.reject_update(sid, reply_to, "media.unsupported", now=now)
            case _:
                out = e.send_info(sid, now=now, about="transport:webrtc")
        self.apply(side, out, before)

    @precondition(any_live_session)
    @rule(side=SIDES, index=st.integers(0, 7), knob=st.integers(0, 400))
    def play_your_part(self, side: str, index: int, knob: int) -> None:
        """The user does the natural next thing for the session's state, so that walks
        reach ACTIVE and renegotiation instead of dying in INVITING."""
        live = [
            sid
            for sid, s in sorted(self.engines[side].sessions.items())
            if s.state in (SessionState.OFFERED, SessionState.ALERTING, SessionState.ACTIVE)
        ]
        if not live:
            return
        sid = live[index % len(live)]
        e, now = self.engines[side], self.now
        before = self.views(side)
        view = before[sid]
        if view.state is SessionState.OFFERED:
            out = e.alert(sid, now=now, ring_timeout=120)
        elif view.state is SessionState.ALERTING:
            out = e.accept(sid, now=now)
        elif view.outstanding_update is not None and not view.renegotiating:
            pending = view.outstanding_update.id
            out = e.answer_update(sid, pending, now=now)
        elif knob % 4 == 0:
            out = e.update(sid, self.new_id(), now=now)
        elif knob % 4 == 1:
            out = e.send_info(sid, now=now, about="transport:webrtc")
        elif knob % 20 == 2:
            out = e.hangup(sid, now=now)
        else:
            return
        self.apply(side, out, before)

    @precondition(lambda self: self.wire["A"] or self.wire["B"])
    @rule(side=SIDES)
    def deliver(self, side: str) -> None:
        if not self.wire[side]:
            return
        self.deliver_head(side)

    @precondition(lambda self: self.wire["A"] or self.wire["B"])
    @rule()
    def deliver_everything(self) -> None:
        while self.wire["A"] or self.wire["B"]:
            for side in ("A", "B"):
                if self.wire[side]:
                    self.deliver_head(side)

    def deliver_head(self, side: str) -> None:
        msg = self.wire[side].pop(0)
        before = self.views(side)
        self.apply(side, self.engines[side].receive(msg, now=self.now), before, received=msg)

    @precondition(lambda self: self.wire["A"] or self.wire["B"])
    @rule(side=SIDES, duplicate=st.booleans())
    def lose_or_duplicate(self, side: str, duplicate: bool) -> None:
        if not self.wire[side]:
            return
        if duplicate:
            self.wire[side].insert(0, dict(self.wire[side][0]))
        else:
            self.wire[side].pop(0)

    @rule(seconds=st.one_of(st.integers(1, 10), st.integers(1, 2000)))
    def advance(self, seconds: int) -> None:
        self.now += seconds
        for side, engine in self.engines.items():
            before = self.views(side)
            self.apply(side, engine.advance(self.now), before)

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def sessions_keep_the_state_machine_promises(self) -> None:
        for side, engine in self.engines.items():
            running = {(sid, name) for sid, s in engine.sessions.items() for name in s.timers}
            assert running == self.timers[side], "engine timers and emitted timers disagree"
            for sid, s in engine.sessions.items():
                if sid in self.seen_ended[side]:
                    assert s.state is SessionState.ENDED, "a session left ENDED"
                if s.state is SessionState.ENDED:
                    self.seen_ended[side].add(sid)
                    assert not s.timers, "a timer outlived ENDED"
                    assert sid not in self.media[side], "media still running in ENDED"
                    assert s.update is None
                if sid in self.media[side]:
                    assert s.state is SessionState.ACTIVE, "media outside ACTIVE"
                if s.update is not None:
                    assert s.state is SessionState.ACTIVE, "an update outside ACTIVE"


TestBackToBack = BackToBack.TestCase
TestBackToBack.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
