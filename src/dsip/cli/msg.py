"""``dsip msg``: end-to-end encrypted 1:1 messages between wallet identities, through a relay.

Sessions, prekeys and the message history live in ``<home>/messages/<NAME>.db``, a SQLite
file whose rows are encrypted under a key derived (scrypt) from the wallet passphrase.

    dsip msg publish --id bob --relay wss://…       # put bob's prekey bundle on the relay
    dsip msg send --id alice --relay wss://… DID "hello"
    dsip msg inbox --id bob --relay wss://… --count 1
    dsip msg history --id bob                        # offline: what the store holds

Output is one line per event (``sent``, ``received``), easy to read and to parse. The relay
must offer the prekeys/1.0 service (``dsip relay --prekeys FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dsip.agent.messaging import MessagingAgent
from dsip.agent.signaling import SignalingClient
from dsip.cli.id import _add_common, _passphrase, _wallet
from dsip.errors import WalletError
from dsip.messaging.messages import Messenger
from dsip.messaging.session_store import SessionStore


def register(sub: Any) -> None:
    msg = sub.add_parser(
        "msg",
        help="end-to-end encrypted messages (X3DH + Double Ratchet)",
        description="Send and receive end-to-end encrypted 1:1 messages through a relay.",
    )
    cmds = msg.add_subparsers(dest="msg_command", metavar="SUBCOMMAND")
    cmds.required = True

    publish = cmds.add_parser("publish", help="publish this device's prekey bundle")
    _common(publish, relay=True)
    publish.add_argument(
        "--one-time", type=int, default=100, metavar="N", help="one-time prekeys to keep (100)"
    )
    publish.set_defaults(func=lambda a: _run(_publish(a)))

    send = cmds.add_parser("send", help="send a text message to a DID")
    send.add_argument("did", metavar="DID", help="recipient identity DID")
    send.add_argument("text", metavar="TEXT", help="message body")
    _common(send, relay=True)
    send.set_defaults(func=lambda a: _run(_send(a)))

    inbox = cmds.add_parser("inbox", help="receive messages (held ones first)")
    _common(inbox, relay=True)
    inbox.add_argument("--count", type=int, default=0, metavar="N", help="exit after N messages")
    inbox.add_argument(
        "--wait", type=float, default=10.0, metavar="S", help="exit after S quiet seconds (10)"
    )
    inbox.set_defaults(func=lambda a: _run(_inbox(a)))

    history = cmds.add_parser("history", help="print stored messages (no network)")
    _common(history, relay=False)
    history.add_argument("--peer", metavar="DID", help="only this conversation")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(func=_history)


def _common(p: argparse.ArgumentParser, *, relay: bool) -> None:
    p.add_argument(
        "--id", required=True, metavar="NAME", dest="identity", help="wallet identity to use"
    )
    if relay:
        p.add_argument(
            "--relay", metavar="URI", help="relay URI (default: the identity's own ws endpoint)"
        )
        p.add_argument(
            "--ca", type=Path, metavar="FILE", help="trust this CA certificate (PEM) for the relay"
        )
    _add_common(p, top_level=True)


def _run(coro: Any) -> int:
    return int(asyncio.run(coro))


def _open(args: argparse.Namespace) -> tuple[Messenger, str | None]:
    wallet = _wallet(args)
    entry = wallet.entry(args.identity)
    passphrase = _passphrase(args)
    key = wallet.unlock(args.identity, passphrase)
    path = wallet.home / "messages" / f"{args.identity}.db"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SessionStore.open(path, passphrase=passphrase)
    relay = getattr(args, "relay", None) or next(iter(entry.services.get("ws", [])), None)
    return Messenger(key, store), relay


@contextlib.asynccontextmanager
async def _agent(args: argparse.Namespace) -> AsyncIterator[MessagingAgent]:
    """A bound messaging agent; the connection and the store are closed on the way out."""
    messenger, relay = _open(args)
    try:
        if relay is None:
            raise WalletError(
                f"{args.identity} advertises no ws endpoint: pass --relay URI", code="no-relay"
            )
        client = SignalingClient(messenger.device)
        await client.connect(relay, cafile=str(args.ca) if args.ca else None)
        try:
            yield MessagingAgent(client, messenger)
        finally:
            await client.close()
    finally:
        messenger.store.close()


async def _publish(args: argparse.Namespace) -> int:
    async with _agent(args) as agent:
        await agent.publish_prekeys(target=args.one_time)
        print("published", agent.messenger.device.did, f"one_time={args.one_time}", flush=True)
    return 0


async def _send(args: argparse.Namespace) -> int:
    async with _agent(args) as agent:
        sent = await agent.send_text(args.did, args.text)
        print("sent", sent.id, f"devices={len(sent.outbound)}", flush=True)
    return 0


async def _inbox(args: argparse.Namespace) -> int:
    got = 0
    async with _agent(args) as agent:
        while args.count <= 0 or got < args.count:
            try:
                r = await agent.receive(timeout=args.wait)
            except TimeoutError:
                break
            got += 1
            body = r.message.get("body", "")
            print("received", r.sender_identity, r.message["type"], json.dumps(body), flush=True)
    return 0 if args.count <= 0 or got >= args.count else 1


def _history(args: argparse.Namespace) -> int:
    messenger, _ = _open(args)
    try:
        for m in messenger.history(args.peer):
            if args.json:
                print(json.dumps({"peer": m.peer_identity, **m.body}))
            else:
                print(m.sent_at, m.author, json.dumps(m.body.get("body", "")))
    finally:
        messenger.store.close()
    return 0
