"""The callee's agent acts on its trust policy through a real relay: ring, silent,
voicemail (stored) and reject, each naming the rule that fired."""

from __future__ import annotations

import asyncio

import pytest

from dsip.agent.calls import CallAgent
from dsip.core.session import SessionState
from dsip.core.trust.policy import TrustPolicy, endpoint_screen
from dsip.errors import ConfigError
from tests.relayfix import ClientFactory

pytestmark = [pytest.mark.timeout(60), pytest.mark.network]


def _policy(blocked: str, after_hours: str, quiet: str) -> TrustPolicy:
    return TrustPolicy.from_toml(f"""
version = 1
scope = "user"
[defaults]
action = "ring"
[[rules]]
id = "blocked"
when = {{ callers = ["{blocked}"] }}
action = "reject"
reason = "policy:blocked"
[[rules]]
id = "after-hours"
when = {{ callers = ["{after_hours}"] }}
action = "voicemail"
[[rules]]
id = "quiet"
when = {{ callers = ["{quiet}"] }}
action = "silent"
""")


async def test_ring_silent_voicemail_reject(connect: ClientFactory) -> None:
    callers = [CallAgent(await connect()) for _ in range(4)]
    ringer, blocked, after_hours, quiet = callers
    policy = _policy(blocked.client.identity, after_hours.client.identity, quiet.client.identity)
    bob = CallAgent(await connect(), screen=endpoint_screen(policy))
    for agent in (*callers, bob):
        await agent.start()
    try:
        async with asyncio.timeout(30):
            # reject: the caller learns the wire reason, the callee never sees the call
            call = await blocked.call(bob.client.identity)
            ended = await call.wait_for("ended", 5)
            assert ended.fields["reason"] == "policy.blocked"

            # voicemail: rejected as unavailable, stored on the callee's side
            call = await after_hours.call(bob.client.identity)
            ended = await call.wait_for("ended", 5)
            assert ended.fields["reason"] == "endpoint.unavailable"
            assert [c.peer for c in bob.voicemail] == [after_hours.client.identity]
            stored = bob.voicemail[0]
            assert stored.decision is not None
            assert stored.decision.rule == "after-hours"

            # silent: offered to the application, but the caller hears no ringing
            call = await quiet.call(bob.client.identity)
            incoming = await bob.incoming(timeout=5)
            assert incoming.peer == quiet.client.identity
            assert incoming.decision is not None
            assert incoming.decision.action == "silent"
            assert incoming.state is SessionState.OFFERED
            screened = await incoming.wait_for("screened", 5)
            assert screened.fields["rule"] == "quiet"
            with pytest.raises(TimeoutError):
                await call.wait_for("progress", 0.5)
            await call.cancel()

            # ring (the defaults): progress ringing reaches the caller
            call = await ringer.call(bob.client.identity)
            incoming = await bob.incoming(timeout=5)
            assert incoming.peer == ringer.client.identity
            assert incoming.decision is not None
            assert (incoming.decision.action, incoming.decision.rule) == ("ring", "defaults")
            assert (await call.wait_for("progress", 5)).fields["status"] == "ringing"
            assert incoming.state is SessionState.ALERTING
            await incoming.answer()
            await call.wait_for("answered", 5)
            await call.hangup()
            # the blocked and voicemail calls never reached the application
            assert bob._incoming.empty()
    finally:
        for agent in (*callers, bob):
            await agent.close()


def test_endpoint_screen_needs_a_user_policy() -> None:
    relay_policy = TrustPolicy.from_toml(
        'version = 1\nscope = "relay"\n[defaults]\naction = "allow"\n'
    )
    with pytest.raises(ConfigError):
        endpoint_screen(relay_policy)
