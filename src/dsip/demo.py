"""The foundation demo: two identities, one signed invite, and three attacks that fail.

Everything is real: a passphrase-encrypted wallet on disk, a did:web host speaking TLS 1.3
with a locally minted CA, an HTTPS resolver with certificate validation, Ed25519
signatures, and the full verification pipeline. Only the clock is explicit, so that the
"two minutes later" step is honest about what it shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from dsip.agent.resolver import DidResolver
from dsip.agent.wallet import Wallet
from dsip.core.b64 import b64url_decode, b64url_encode
from dsip.core.delegation import issue_delegation
from dsip.core.envelope import Verifier, make_payload, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame
from dsip.demo_discovery import demo_discovery
from dsip.demo_trust import demo_trust
from dsip.demo_web import demo_web
from dsip.dht.sim_demo import demo_dhtsim
from dsip.errors import DsipError
from dsip.messaging.demo import demo_messaging
from dsip.messaging.demo_mls_state import demo_mls_restart
from dsip.services.didweb_host import DidWebHost
from dsip.services.localca import LocalCA

__all__ = ["run_foundation_demo"]

DEMO_PASSPHRASE = "demo passphrase - not a secret"  # noqa: S105 - demo-only wallet, deleted afterwards


async def run_foundation_demo(console: Console, workdir: Path | None = None) -> int:
    """Run the narrated demo; returns 0 when every step behaved as it should."""
    tmp = Path(tempfile.mkdtemp(prefix="dsip-demo-")) if workdir is None else workdir
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    console.rule("[bold]dsip foundation demo[/bold]")
    console.print(
        "Two people, [cyan]alice[/cyan] (a self-certifying [b]did:key[/b]) and [magenta]bob[/magenta] "
        "(a domain-hosted [b]did:web[/b]), get identities. Alice signs a call invite to Bob; Bob's "
        "device checks it. Then we try to cheat three ways.\n"
    )
    ca = LocalCA.create()
    try:
        with DidWebHost(ca) as host:
            now = int(time.time())
            # 1. wallets -------------------------------------------------------------------
            wallet = Wallet(tmp / "wallet")
            bob_did = host.did("users", "bob")
            alice_entry = wallet.create("alice", DEMO_PASSPHRASE, now=now)
            bob_entry = wallet.create(
                "bob",
                DEMO_PASSPHRASE,
                method="web",
                web_did=bob_did,
                now=now,
                services={"ws": [f"wss://{host.authority}/dsip"]},
            )
            url = host.publish(bob_did, wallet.did_document("bob"))
            table = Table(
                title="1. Two wallets (keys encrypted with scrypt + AES-256-GCM, files 0600)"
            )
            table.add_column("name")
            table.add_column("DID")
            table.add_column("signing key (kid)")
            table.add_row("alice", alice_entry.did, "#" + alice_entry.kid.split("#")[1][:16] + "…")
            table.add_row("bob", bob_entry.did, "#" + bob_entry.kid.split("#")[1])
            console.print(table)
            console.print(
                f"   bob's DID document is published at [link]{url}[/link] (TLS 1.3, local CA)\n"
            )

            # 2. resolve both ----------------------------------------------------------------
            async with DidResolver(verify=ca.client_context()) as resolver:
                alice_doc = await resolver.resolve(alice_entry.did)
                bob_doc = await resolver.resolve(bob_did)
                console.print("[bold]2. Resolve both DIDs[/bold]")
                console.print(
                    f"   alice → did:key decodes locally: Ed25519 key + derived X25519 "
                    f"key-agreement key {alice_doc.key_agreement[0].split('#')[1][:14]}…"
                )
                console.print(
                    f"   bob   → fetched {url} over HTTPS ({host.requests} request), "
                    f"{len(bob_doc.methods)} signing key, endpoints {bob_doc.dsip_endpoints()}\n"
                )
                expect(bob_doc.method(bob_entry.kid) is not None, "bob's key resolves")

                # 3. sign --------------------------------------------------------------------
                alice = wallet.unlock("alice", DEMO_PASSPHRASE)
                invite = example_invite(alice.did, bob_did, now=now)
                envelope = sign_envelope(invite, alice)
                frame = encode_frame(envelope)
                console.print(
                    "[bold]3. Alice signs an invite[/bold] (DSIP-JOSE: JWS flattened JSON, EdDSA)"
                )
                console.print(
                    f"   type=invite id={invite['id']} to=bob, audio offer with SDP, "
                    f"valid {invite['expires_at'] - invite['issued_at']} s, frame {len(frame)} bytes"
                )
                console.print(f"   kid = {alice.kid[:40]}…\n")

                # 4. verify ------------------------------------------------------------------
                bob_device = Verifier(resolver.cached)
                console.print(
                    "[bold]4. Bob's device runs the 14-stage verification pipeline[/bold]"
                )
                _show(
                    console,
                    "original invite",
                    lambda: bob_device.verify(frame, now=now + 1),
                    expect,
                    True,
                )

                # 5. three attacks ------------------------------------------------------------
                console.print(
                    "\n[bold]5. Three ways to cheat, each refused with its reason token[/bold]"
                )
                tampered = _tamper(envelope, b'"display_name":"Alice"', b'"display_name":"Bank!"')
                _show(
                    console,
                    "tampered copy (display name changed in transit)",
                    lambda: bob_device.verify(tampered, now=now + 2),
                    expect,
                    False,
                    "signature-invalid",
                )
                _show(
                    console,
                    "replayed copy (the same envelope again)",
                    lambda: bob_device.verify(frame, now=now + 3),
                    expect,
                    False,
                    "duplicate-id",
                )
                other_device = Verifier(resolver.cached)
                _show(
                    console,
                    "expired copy (delivered 2 minutes late to bob's other device)",
                    lambda: other_device.verify(frame, now=now + 120),
                    expect,
                    False,
                    "expired",
                )

                # 6. delegation (bonus) --------------------------------------------------------
                console.print(
                    "\n[bold]6. Bob answers from his phone[/bold] (a device key delegated by bob's did:web key)"
                )
                bob_key = wallet.unlock("bob", DEMO_PASSPHRASE)
                phone = KeyPair.generate()
                delegation = issue_delegation(
                    bob_key, phone.did, issued_at=now, expires_at=now + 86_400
                )
                ringing = make_payload(
                    "progress",
                    sender=bob_did,
                    now=now + 2,
                    to=alice.did,
                    session=invite["id"],
                    status="ringing",
                    ring_timeout=60,
                )
                signed = sign_envelope(ringing, phone, delegations=[delegation])
                alice_device = Verifier(resolver.cached)
                _show(
                    console,
                    "ringing, signed by bob's phone",
                    lambda: alice_device.verify(signed, now=now + 3),
                    expect,
                    True,
                )
                stranger = KeyPair.generate()
                forged = sign_envelope(
                    dict(ringing, id=make_payload("progress", sender=bob_did, now=now + 2)["id"]),
                    stranger,
                )
                _show(
                    console,
                    "same claim signed by a key bob never delegated",
                    lambda: alice_device.verify(forged, now=now + 3),
                    expect,
                    False,
                    "signer-mismatch",
                )
            await _relay_flows(console, ca, tmp, expect, alice, bob_key)
            await demo_discovery(console, ca, tmp, expect)
            await demo_trust(console, ca, tmp, expect)
            await demo_messaging(console, ca, tmp, expect)
            await demo_mls_restart(console, ca, tmp, expect)
            await demo_web(console, ca, tmp, expect)
            await demo_dhtsim(console, ca, tmp, expect)
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    console.print()
    if failures:
        console.print(Panel(f"[red]demo steps did not behave as expected: {failures}[/red]"))
        return 1
    console.print(
        Panel(
            "[green]Every genuine message was accepted and every forgery was refused: calls, "
            "stored and encrypted messages, DHT lookups, credentials, MLS groups and the "
            "browser client all behaved.[/green]\n"
            "Next: `make test` runs the whole suite; `dsip vectors run "
            "../shared/reference/dsip-v0.7/vectors` the conformance vectors."
        )
    )
    return 0


async def _relay_flows(
    console: Console,
    ca: LocalCA,
    tmp: Path,
    expect: Callable[[bool, str], None],
    alice: KeyPair,
    bob: KeyPair,
) -> None:
    """7–9: a signed call through a relay, a message that waits for an offline bob, and
    end-to-end encrypted messages."""
    from dsip.agent.calls import CallAgent
    from dsip.agent.messaging import MessagingAgent
    from dsip.agent.signaling import SignalingClient
    from dsip.config import RelayConfig
    from dsip.messaging.messages import Messenger
    from dsip.messaging.prekeys import PrekeyStore
    from dsip.messaging.session_store import SessionStore
    from dsip.services.relay import Relay
    from dsip.storage import open_store

    console.print("\n[bold]7. A call through a relay[/bold] (wss, TLS 1.3; every hop verified)")
    store = await open_store(f"sqlite:///{tmp}/relay.db")
    prekeys = PrekeyStore.open(tmp / "prekeys.db")
    from dsip.agent.resolver import DidResolver

    relay = Relay(
        RelayConfig(ws_port=0),
        KeyPair.generate(),
        store,
        server_ssl=ca.server_context(),
        resolver=DidResolver(
            verify=ca.client_context()
        ),  # resolves bob's did:web on the local host
        prekeys=prekeys,
    )
    await relay.start()
    uri = f"wss://localhost:{relay.ws_port}/dsip"
    try:
        async with asyncio.timeout(30):
            resolver = DidResolver(verify=ca.client_context())
            a_client = SignalingClient(alice, resolver=resolver)
            b_client = SignalingClient(bob, resolver=resolver)
            await a_client.connect(uri, ssl_context=ca.client_context())
            await b_client.connect(uri, ssl_context=ca.client_context())
            console.print(
                f"   relay {relay.did[:30]}… bound alice and bob (hello / signed relay hello)"
            )
            caller, callee = CallAgent(a_client), CallAgent(b_client)
            await caller.start()
            await callee.start()
            call = await caller.call(bob.did)
            incoming = await callee.incoming()
            console.print(
                f"   bob's phone rings: invite {incoming.id} from {incoming.peer[:30]}… (verified)"
            )
            await incoming.answer()
            progress = await call.wait_for("progress")
            answered = await call.wait_for("answered")
            console.print(
                f"   alice sees: progress {progress.fields['status']}, answered by {answered.fields['answered_by']}"
            )
            await call.send_ice(
                [
                    {
                        "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
                        "sdp_mid": "0",
                        "sdp_m_line_index": 0,
                    }
                ]
            )
            info = await incoming.wait_for("info")
            console.print(f"   ICE candidate delivered in a signed info ({info.fields['about']})")
            await call.hangup()
            ended = await incoming.wait_for("ended")
            console.print(
                f"   alice hangs up; bob's side ends with [b]{ended.fields['reason']}[/b]"
            )
            expect(ended.fields["reason"] == "user.hangup", "call ended with user.hangup")
            await callee.close()

            console.print("\n[bold]8. Bob is offline: the relay keeps the message on disk[/bold]")
            intro = a_client.build(
                "introduction",
                to=bob.did,
                purpose="Call me back?",
                ttl=3600,
                identity={"display_name": "Alice", "claims": []},
            )
            await a_client.send(intro)
            for _ in range(100):
                if (await store.stats(bob.did)).envelopes:
                    break
                await asyncio.sleep(0.02)
            stats = await store.stats(bob.did)
            console.print(
                f"   stored for bob: {stats.envelopes} envelope, {stats.bytes} bytes (SQLite, WAL, fsync)"
            )
            back = SignalingClient(bob, resolver=resolver)
            await back.connect(uri, ssl_context=ca.client_context())
            v = await back.recv(10)
            console.print(
                f'   bob reconnects and receives: {v.type} "{v.payload.get("purpose")}" (signature verified)'
            )
            expect(v.id == intro["id"], "stored message delivered")
            for _ in range(100):
                if (await store.stats(bob.did)).envelopes == 0:
                    break
                await asyncio.sleep(0.02)
            left = (await store.stats(bob.did)).envelopes
            console.print(f"   bob acknowledged it; the relay deleted its copy ({left} left)")
            expect(left == 0, "acknowledged message deleted")
            await back.close()
            await caller.close()

            console.print("\n[bold]9. End-to-end encrypted messages[/bold] (X3DH + Double Ratchet)")
            a_msg, b_msg = (
                MessagingAgent(
                    SignalingClient(key, resolver=resolver),
                    Messenger(
                        key,
                        SessionStore.open(tmp / f"{name}-msg.db", key=os.urandom(32)),
                        documents=resolver.cached,
                    ),
                )
                for name, key in (("alice", alice), ("bob", bob))
            )
            for agent in (a_msg, b_msg):
                await agent.client.connect(uri, ssl_context=ca.client_context())
            await resolver.resolve(bob.did)  # bob's did:web document verifies his bundle
            await b_msg.publish_prekeys(target=10)
            console.print("   bob's phone publishes a signed prekey bundle (10 one-time prekeys)")
            await a_msg.send_text(bob.did, "Dinner at eight?")
            got = await b_msg.receive()
            console.print(
                f'   alice claims one prekey, sends; bob decrypts: "{got.message["body"]}" '
                f"(new session: {got.new_session})"
            )
            await b_msg.send_text(alice.did, "See you there.")
            back_msg = await a_msg.receive()
            console.print(f'   bob answers on the ratchet: "{back_msg.message["body"]}"')
            expect(
                got.message["body"] == "Dinner at eight?"
                and back_msg.message["body"] == "See you there.",
                "encrypted messages decrypted both ways",
            )
            console.print(
                f"   the relay saw {prekeys.available(bob.did)} unclaimed prekeys and only "
                "ciphertext (`dsip msg` does this between two terminals)"
            )
            for agent in (a_msg, b_msg):
                await agent.client.close()
                agent.messenger.store.close()
    finally:
        await relay.stop()
        prekeys.close()


def _tamper(envelope: dict[str, str], old: bytes, new: bytes) -> dict[str, str]:
    payload = b64url_decode(envelope["payload"])
    assert old in payload
    return dict(envelope, payload=b64url_encode(payload.replace(old, new)))


def _show(
    console: Console,
    label: str,
    action: Callable[[], Any],
    expect: Callable[[bool, str], None],
    should_accept: bool,
    code: str | None = None,
) -> None:
    try:
        v = action()
    except DsipError as exc:
        console.print(
            f"   [red]✗ REJECT[/red] {label}: [b]{exc.code}[/b] → reason [b]{exc.reason}[/b]"
        )
        console.print(f"            {exc.message}", style="dim")
        expect(not should_accept and exc.code == code, f"{label}: got {exc.code}")
        return
    eff = f", effective {json.dumps(v.effective)}" if v.effective else ""
    console.print(
        f"   [green]✓ ACCEPT[/green] {label}: {v.type} signed by {v.signer[:28]}… for {v.identity}{eff}"
    )
    expect(should_accept, f"{label}: accepted")
