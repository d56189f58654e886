"""The seed §13 offline flow end to end, and what the relay operator can see.

alice seals a message to offline bob → the relay stores it (size and TTL only) and sends a
Web Push with {relay, envelope_id} → bob's device wakes, connects, opens the sealed
envelope, acknowledges, replies → later messages go straight through while both are online.
The push service is the local RFC 8030 stand-in (``dsip.services.pushservice``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import pytest

from dsip.agent.push import PushReceiver
from dsip.agent.signaling import SignalingClient
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.identity import KeyPair, did_key_document
from dsip.core.sealed import open_sealed, seal
from dsip.services.pushservice import PushService
from dsip.services.relay import Relay
from tests.relayfix import relay_uri

pytestmark = pytest.mark.timeout(60)
SECRET = "the launch code is 0451"
IDENTITY = {"display_name": "Alice", "claims": []}


def _sealed_note(sender: KeyPair, to: KeyPair, text: str) -> tuple[dict[str, str], str]:
    now = int(time.time())
    inner_payload = make_payload(
        "introduction",
        sender=sender.did,
        now=now,
        to=to.did,
        purpose=text,
        identity=IDENTITY,
        ttl=86_400,
    )
    inner = sign_envelope(inner_payload, sender)
    return seal(inner, sender=sender, recipient=did_key_document(to.did), now=now), inner_payload[
        "id"
    ]


async def test_offline_message_push_wake_reply_then_direct(
    relay: Relay, client_ssl: ssl.SSLContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    push = await PushService().start()
    alice_key, bob_key = KeyPair.generate(), KeyPair.generate()
    uri = relay_uri(relay)
    try:
        # bob's phone: bound once (known identity), registered for push, then asleep
        bob = SignalingClient(bob_key)
        await bob.connect(uri, ssl_context=client_ssl)
        receiver = PushReceiver(push.origin)
        sub = await receiver.subscribe()
        await bob.send(
            make_payload(
                "push-subscription",
                sender=bob_key.did,
                now=int(time.time()),
                profiles=[],
                to=bob.relay_did,
                **sub,
            )
        )
        await asyncio.sleep(0.2)
        await bob.close()
        woke = asyncio.Event()
        wake_payloads: list[dict[str, object]] = []

        async def on_wake(message: dict[str, object]) -> None:
            wake_payloads.append(message)
            woke.set()

        receiver.start(on_wake)

        alice = SignalingClient(alice_key)
        await alice.connect(uri, ssl_context=client_ssl)
        outer, inner_id = _sealed_note(alice_key, bob_key, SECRET)
        assert alice._conn is not None
        from dsip.core.jws import encode_frame

        await alice._conn.send(encode_frame(outer))
        await asyncio.wait_for(woke.wait(), 10)
        assert wake_payloads == [{"relay": relay.did, "envelope_id": outer_id(outer)}]

        # The operator's view: database rows and logs hold neither the text nor the inner id.
        db_bytes = b"".join(p.read_bytes() for p in Path(str(tmp_path)).glob("relay-*.db*"))
        assert db_bytes, "the relay's SQLite files exist"
        assert SECRET.encode() not in db_bytes
        assert inner_id.encode() not in db_bytes
        logs = caplog.text
        assert SECRET not in logs
        assert inner_id not in logs

        # bob wakes, connects, opens, acknowledges, replies
        bob = SignalingClient(bob_key)
        await bob.connect(uri, ssl_context=client_ssl)
        v = await bob.recv(10)
        assert v.type == "sealed"
        opened = open_sealed(v, bob_key, Verifier(), now=int(time.time()))
        assert (opened.identity, opened.payload["purpose"]) == (alice_key.did, SECRET)
        for _ in range(100):
            if (await relay.store.stats(bob_key.did)).envelopes == 0:
                break
            await asyncio.sleep(0.05)
        assert (await relay.store.stats(bob_key.did)).envelopes == 0  # acknowledged → deleted
        stored_before = relay.stats["stored"]
        reply, _ = _sealed_note(bob_key, alice_key, "got it, thanks")
        assert bob._conn is not None
        await bob._conn.send(encode_frame(reply))
        got = await alice.recv(10)
        assert (
            open_sealed(got, alice_key, Verifier(), now=int(time.time())).payload["purpose"]
            == "got it, thanks"
        )
        # both online now: the next message goes straight through, nothing stored, no push
        nxt, _ = _sealed_note(alice_key, bob_key, "see you at 5")
        await alice._conn.send(encode_frame(nxt))
        got = await bob.recv(10)
        assert (
            open_sealed(got, bob_key, Verifier(), now=int(time.time())).payload["purpose"]
            == "see you at 5"
        )
        assert relay.stats["stored"] == stored_before
        assert len(receiver.wakes) == 1
        await alice.close()
        await bob.close()
    finally:
        await receiver.close()
        await push.close()


def outer_id(outer: dict[str, str]) -> str:
    import json

    from dsip.core.b64 import b64url_decode

    return str(json.loads(b64url_decode(outer["payload"]))["id"])


async def test_push_service_refuses_unauthenticated_pushes() -> None:
    import httpx

    push = await PushService().start()
    try:
        receiver = PushReceiver(push.origin)
        sub = await receiver.subscribe()
        async with httpx.AsyncClient() as client:
            r = await client.post(
                sub["endpoint"],
                content=b"x",
                headers={"TTL": "60", "Content-Encoding": "aes128gcm"},
            )
            assert r.status_code == 401
            r = await client.post(
                sub["endpoint"],
                content=b"x",
                headers={
                    "TTL": "60",
                    "Content-Encoding": "aes128gcm",
                    "Authorization": "vapid t=a.b.c, k=BBBB",
                },
            )
            assert r.status_code == 403
        with pytest.raises(Exception):  # noqa: B017,PT011 - DsipError: not our ciphertext
            receiver.decrypt(b"\x00" * 100)
    finally:
        await push.close()
