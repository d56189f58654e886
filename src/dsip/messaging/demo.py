"""The messaging demo: an MLS group through a real relay, one member offline, one removed.

A relay on 127.0.0.1 (TLS from the local CA) is the group's delivery service. Four devices
each keep their MLS state in their own encrypted SQLite store. Alice creates a group and adds
bob, carol and dave (dave is offline: the relay holds the commit with his Welcome); the
group talks; dave comes back and catches up from the relay's store; alice removes bob,
whose next commit the relay refuses with a reason token.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from rich.console import Console

from dsip.agent.messaging import CustodyClient, GroupAgent, GroupEvent
from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.errors import DsipError
from dsip.messaging.session_store import SessionStore
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store

__all__ = ["demo_messaging"]

_DEMO_KEY = b"d" * 32  # demo-only session-store key; the stores are deleted with ``tmp``


async def demo_messaging(
    console: Console,
    ca: LocalCA,
    tmp: pathlib.Path,
    expect: Callable[[bool, str], None],
) -> None:
    """Run the narrated group-messaging demo; ``expect(ok, what)`` records each check."""
    console.print(
        "\n[bold]12. An MLS group through a relay[/bold] (RFC 9420; relay = delivery service)"
    )
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp}/mls-relay.db")
    relay = Relay(
        cfg, KeyPair.generate(), await open_store(cfg.store), server_ssl=ca.server_context()
    )
    await relay.start()
    uri = f"wss://localhost:{relay.ws_port}/dsip"
    names = ("alice", "bob", "carol", "dave")
    keys = {n: KeyPair.generate() for n in names}
    stores = {n: SessionStore.open(tmp / f"mls-{n}.db", key=_DEMO_KEY) for n in names}
    agents: dict[str, GroupAgent] = {}

    async def online(name: str) -> GroupAgent:
        client = CustodyClient(keys[name])
        await client.connect(uri, ssl_context=ca.client_context(), timeout=10)
        agents[name] = GroupAgent(client, stores[name])
        return agents[name]

    try:
        for n in names:
            await (await online(n)).publish_key_packages(2)
        console.print("   Four devices published MLS key packages to the relay.")
        await agents["dave"].client.close()
        console.print("   [dim]dave goes offline.[/dim]")
        alice = agents["alice"]
        group = await alice.create_group()
        for n in ("bob", "carol", "dave"):
            await alice.add(group, keys[n].did)
        console.print(f"   alice created group [cyan]{group}[/cyan] and added bob, carol, dave.")
        expect(alice.member(group).epoch == 3, "three add commits accepted in order")
        for n in ("bob", "carol"):
            event = await agents[n].receive()
            expect(event.kind == "joined", f"{n} joined from the Welcome")
        await alice.send(group, "hello, group")
        for n in ("bob", "carol"):
            while (event := await agents[n].receive()).kind != "application":
                pass
            console.print(f"     {n} reads: [green]{event.text}[/green]")
            expect(event.text == "hello, group", f"{n} decrypted alice's message")

        dave = await online("dave")
        seen: list[GroupEvent] = []
        while not seen or seen[-1].kind != "application":
            seen.append(await dave.receive())
        console.print(
            "   dave reconnects; the relay hands over what it held: "
            + ", ".join(e.kind for e in seen)
        )
        expect(seen[0].kind == "joined", "offline dave joined from the held Welcome")
        expect(seen[-1].text == "hello, group", "dave caught up on the message")

        stale = agents["bob"].member(group).to_bytes()
        await alice.remove(group, keys["bob"].did)
        while (await agents["bob"].receive()).kind != "removed":
            pass
        console.print("   alice removed bob; bob's device saw its removal.")
        from dsip.messaging.mls import MlsMember

        old = MlsMember.from_bytes(stale, keys["bob"])
        bob = agents["bob"]
        try:
            await bob.submit(old.update().message)
            expect(False, "a removed member's commit is refused")
        except DsipError as exc:
            console.print(
                f"   bob's commit from before his removal: refused, [red]{exc.reason}[/red]"
            )
            expect(exc.reason == "policy.blocked", "a removed member's commit is refused")
        assert relay.mls is not None
        expect(
            relay.mls.delivery.members(alice.member(group).group_id)
            == {keys[n].did for n in ("alice", "carol", "dave")},
            "the relay's roster is alice, carol, dave",
        )
    finally:
        for agent in agents.values():
            await agent.client.close()
        for store in stores.values():
            store.close()
        await relay.stop()
