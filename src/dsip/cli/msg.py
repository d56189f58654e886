"""``dsip msg``: end-to-end encrypted 1:1 messages between wallet identities, through a relay.

Sessions, prekeys and the message history live in ``<home>/messages/<NAME>.db``, a SQLite
file whose rows are encrypted under a key derived (scrypt) from the wallet passphrase.

    dsip msg publish --id bob --relay wss://…       # put bob's prekey bundle on the relay
    dsip msg send --id alice --relay wss://… DID "hello"
    dsip msg inbox --id bob --relay wss://… --count 1
    dsip msg history --id bob                        # offline: what the store holds

MLS groups (profile mls/1.0; the relay is the delivery service)::

    dsip msg publish --id bob …                      # also puts 5 MLS key packages there
    dsip msg group create --id alice …               # prints the new group's id
    dsip msg group add --id alice … GROUP DID        # every device of DID with a key package
    dsip msg group send --id alice … GROUP "hi all"
    dsip msg group remove --id alice … GROUP DID
    dsip msg group join --id alice … GROUP           # a new device of a member (external commit)
    dsip msg group list --id alice                   # offline: groups, epochs, members
    dsip msg inbox --id bob …                        # 1:1 and group messages, joins, removals

Output is one line per event (``sent``, ``received``, ``group-received``, ``joined``, …),
easy to read and to parse. 1:1 messages need the relay's prekeys/1.0 service
(``dsip relay --prekeys FILE``). A held envelope is acknowledged to the relay only once
its effect is in the store, so a killed ``inbox`` loses nothing and shows nothing twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dsip.agent.messaging import CustodyClient, GroupAgent, GroupEvent, MessagingAgent
from dsip.cli.id import _add_common, _passphrase, _wallet
from dsip.errors import DsipError, WalletError
from dsip.messaging.messages import Messenger
from dsip.messaging.session_store import SessionStore


def register(sub: Any) -> None:
    msg = sub.add_parser(
        "msg",
        help="end-to-end encrypted messages (X3DH + Double Ratchet, MLS groups)",
        description="Send and receive end-to-end encrypted 1:1 and group messages through a relay.",
    )
    cmds = msg.add_subparsers(dest="msg_command", metavar="SUBCOMMAND")
    cmds.required = True

    publish = cmds.add_parser(
        "publish", help="publish this device's prekey bundle and MLS key packages"
    )
    _common(publish, relay=True)
    publish.add_argument(
        "--one-time", type=int, default=100, metavar="N", help="one-time prekeys to keep (100)"
    )
    publish.add_argument(
        "--key-packages",
        type=int,
        default=5,
        metavar="N",
        help="MLS key packages to publish for group invitations (5; 0: none)",
    )
    publish.set_defaults(func=lambda a: _run(_publish(a)))

    send = cmds.add_parser("send", help="send a text message to a DID")
    send.add_argument("did", metavar="DID", help="recipient identity DID")
    send.add_argument("text", metavar="TEXT", help="message body")
    _common(send, relay=True)
    send.set_defaults(func=lambda a: _run(_send(a)))

    inbox = cmds.add_parser("inbox", help="receive 1:1 and group messages (held ones first)")
    _common(inbox, relay=True)
    inbox.add_argument(
        "--count", type=int, default=0, metavar="N", help="exit after N events (lines)"
    )
    inbox.add_argument(
        "--wait", type=float, default=10.0, metavar="S", help="exit after S quiet seconds (10)"
    )
    inbox.set_defaults(func=lambda a: _run(_inbox(a)))

    history = cmds.add_parser("history", help="print stored messages (no network)")
    _common(history, relay=False)
    history.add_argument("--peer", metavar="DID", help="only this conversation")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(func=_history)

    _register_group(cmds)


def _register_group(cmds: Any) -> None:
    group = cmds.add_parser(
        "group",
        help="MLS (RFC 9420) group messages through the relay",
        description="End-to-end encrypted group messaging: MLS groups whose delivery "
        "service is the relay.",
    )
    sub = group.add_subparsers(dest="group_command", metavar="SUBCOMMAND")
    sub.required = True

    create = sub.add_parser("create", help="create a group with this device as its only member")
    _common(create, relay=True)
    create.set_defaults(func=lambda a: _run(_group_create(a)))

    add = sub.add_parser(
        "add", help="add every device of one or more DIDs (uses their key packages)"
    )
    add.add_argument("group", metavar="GROUP", help="group id (as printed by create)")
    add.add_argument("dids", metavar="DID", nargs="+", help="identity or device DID to add")
    _common(add, relay=True)
    add.set_defaults(func=lambda a: _run(_group_commit(a, "add")))

    remove = sub.add_parser("remove", help="remove every device of a DID")
    remove.add_argument("group", metavar="GROUP", help="group id")
    remove.add_argument("did", metavar="DID", help="member DID to remove")
    _common(remove, relay=True)
    remove.set_defaults(func=lambda a: _run(_group_commit(a, "remove")))

    send = sub.add_parser("send", help="send a text message to the group")
    send.add_argument("group", metavar="GROUP", help="group id")
    send.add_argument("text", metavar="TEXT", help="message body")
    _common(send, relay=True)
    send.set_defaults(func=lambda a: _run(_group_send(a)))

    join = sub.add_parser(
        "join", help="join a group by an external commit (a new device of a member)"
    )
    join.add_argument("group", metavar="GROUP", help="group id")
    _common(join, relay=True)
    join.set_defaults(func=lambda a: _run(_group_join(a)))

    listing = sub.add_parser("list", help="print this device's groups (no network)")
    _common(listing, relay=False)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=_group_list)


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
        client = CustodyClient(messenger.device)
        await client.connect(relay, cafile=str(args.ca) if args.ca else None)
        try:
            yield MessagingAgent(client, messenger)
        finally:
            await client.close()
    finally:
        messenger.store.close()


@contextlib.asynccontextmanager
async def _groups(args: argparse.Namespace) -> AsyncIterator[GroupAgent]:
    async with _agent(args) as agent:
        yield GroupAgent(agent.client, agent.messenger.store)


def _print_event(e: GroupEvent) -> None:
    if e.kind == "application":
        print("group-received", e.group, e.sender, json.dumps(e.text), flush=True)
    elif e.kind != "own-echo":
        print(e.kind, e.group, f"epoch={e.epoch}", e.sender or "-", flush=True)


async def _publish(args: argparse.Namespace) -> int:
    async with _agent(args) as agent:
        await agent.publish_prekeys(target=args.one_time)
        if args.key_packages > 0:
            groups = GroupAgent(agent.client, agent.messenger.store)
            await groups.publish_key_packages(args.key_packages)
        print(
            "published",
            agent.messenger.device.did,
            f"one_time={args.one_time}",
            f"key_packages={max(0, args.key_packages)}",
            flush=True,
        )
    return 0


async def _group_create(args: argparse.Namespace) -> int:
    async with _groups(args) as groups:
        print("created", await groups.create_group(), flush=True)
    return 0


async def _group_commit(args: argparse.Namespace, action: str) -> int:
    async with _groups(args) as groups:
        if action == "add":
            event = (await groups.add_members(args.group, list(args.dids)))[-1]
            who = ",".join(args.dids)
        else:
            event = await groups.remove(args.group, args.did)
            who = args.did
        for other in groups.events:
            _print_event(other)
        print(
            "added" if action == "add" else "removed",
            args.group,
            who,
            f"epoch={event.epoch}",
            flush=True,
        )
    return 0


async def _group_send(args: argparse.Namespace) -> int:
    async with _groups(args) as groups:
        envelope_id = await groups.send(args.group, args.text)
        for other in groups.events:
            _print_event(other)
        print("sent", envelope_id, f"group={args.group}", flush=True)
    return 0


async def _group_join(args: argparse.Namespace) -> int:
    async with _groups(args) as groups:
        event = await groups.join_external(args.group)
        print("joined", args.group, f"epoch={event.epoch}", "-", flush=True)
    return 0


def _group_list(args: argparse.Namespace) -> int:
    from dsip.messaging.mls import MlsMember

    messenger, _ = _open(args)
    try:
        local = messenger.device.did
        with messenger.store.transaction(write=False) as tx:
            names = [n for n in tx.mls_names(local) if n.startswith("group:")]
            states = [(n[len("group:") :], tx.load_mls(local, n)) for n in names]
        for group, state in states:
            assert state is not None
            member = MlsMember.from_bytes(state, messenger.device)
            dids = sorted(member.member_dids())
            if args.json:
                print(json.dumps({"group": group, "epoch": member.epoch, "members": dids}))
            else:
                print(group, f"epoch={member.epoch}", ",".join(dids))
    finally:
        messenger.store.close()
    return 0


async def _send(args: argparse.Namespace) -> int:
    async with _agent(args) as agent:
        sent = await agent.send_text(args.did, args.text)
        print("sent", sent.id, f"devices={len(sent.outbound)}", flush=True)
    return 0


async def _inbox(args: argparse.Namespace) -> int:
    got = 0
    async with _agent(args) as agent:
        groups = GroupAgent(agent.client, agent.messenger.store)
        while args.count <= 0 or got < args.count:
            try:
                v = await agent.client.recv(timeout=args.wait)
            except TimeoutError:
                break
            try:
                if v.type == "msg":
                    r = await agent.accept(v)
                    if r is None:
                        continue  # a redelivery of one already shown
                    body = r.message.get("body", "")
                    print(
                        "received",
                        r.sender_identity,
                        r.message["type"],
                        json.dumps(body),
                        flush=True,
                    )
                elif v.type == "mls":
                    event = await groups.handle(v)
                    if event is None or event.kind == "own-echo":
                        continue
                    _print_event(event)
                else:
                    continue
            except DsipError as exc:
                print("refused", v.id, exc.reason, exc.code, flush=True)
                continue
            got += 1
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
