"""Demo: an MLS group outlives a relay restart (``dsip relay --mls-state FILE``).

A relay on 127.0.0.1 (TLS from the local CA) keeps its delivery-service state in a SQLite
file. Alice, bob and carol form a group; the relay is stopped and a new one is started with
the same identity and files; the group talks and commits on, a commit for an epoch that was
taken before the restart is refused, and a state file that is not one is refused at start.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from rich.console import Console

from dsip.agent.messaging import CustodyClient, GroupAgent
from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.errors import ConfigError, DsipError
from dsip.messaging.session_store import SessionStore
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.storage import open_store

__all__ = ["demo_mls_restart"]

_DEMO_KEY = b"r" * 32  # demo-only session-store key; the stores are deleted with ``tmp``


async def demo_mls_restart(
    console: Console,
    ca: LocalCA,
    tmp: pathlib.Path,
    expect: Callable[[bool, str], None],
) -> None:
    """Run the narrated relay-restart demo; ``expect(ok, what)`` records each check."""
    console.print(
        "\n[bold]MLS group state on the relay's disk[/bold] (a relay restart forgets nothing)"
    )
    relay_key, state = KeyPair.generate(), tmp / "mls-state.db"
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp}/mls-state-relay.db")

    async def start() -> Relay:
        store = await open_store(cfg.store)
        relay = Relay(cfg, relay_key, store, server_ssl=ca.server_context(), mls_state=state)
        await relay.start()
        return relay

    names = ("alice", "bob", "carol")
    keys = {n: KeyPair.generate() for n in names}
    stores = {n: SessionStore.open(tmp / f"mls-state-{n}.db", key=_DEMO_KEY) for n in names}
    agents: dict[str, GroupAgent] = {}

    async def online(name: str, relay: Relay) -> GroupAgent:
        client = CustodyClient(keys[name])
        uri = f"wss://localhost:{relay.ws_port}/dsip"
        await client.connect(uri, ssl_context=ca.client_context(), timeout=10)
        agents[name] = GroupAgent(client, stores[name])
        return agents[name]

    relay = await start()
    try:
        for n in names:
            await (await online(n, relay)).publish_key_packages(1)
        alice = agents["alice"]
        group = await alice.create_group()
        await alice.add(group, keys["bob"].did)
        before = alice.member(group).to_bytes()
        await alice.add(group, keys["carol"].did)
        for n in ("bob", "carol"):
            while (await agents[n].receive()).epoch < 2:
                pass
        console.print(f"   alice, bob and carol are in group [cyan]{group}[/cyan], epoch 2.")
        for agent in agents.values():
            await agent.client.close()
        await relay.stop()
        relay = await start()
        gid = alice.member(group).group_id
        console.print(
            f"   The relay was stopped and started again on {state.name}: it knows the group "
            f"at epoch {relay.mls.delivery.epoch(gid)}."
        )
        expect(relay.mls.delivery.epoch(gid) == 2, "the restarted relay knows the group's epoch")
        for n in names:
            await online(n, relay)
        alice, bob, carol = agents["alice"], agents["bob"], agents["carol"]
        await alice.send(group, "still here after the restart")
        while (event := await carol.receive()).kind != "application":
            pass
        console.print(f"     carol reads: [green]{event.text}[/green]")
        expect(event.text == "still here after the restart", "a message after the restart")
        update = await bob.update(group)
        console.print(f"   bob's commit for epoch 2 is accepted: the group is at {update.epoch}.")
        expect(update.epoch == 3, "a commit for the current epoch is accepted")
        from dsip.messaging.mls import MlsMember

        stale = MlsMember.from_bytes(before, keys["alice"])
        try:
            await alice.submit(stale.update().message)
            expect(False, "a commit for an epoch taken before the restart is refused")
        except DsipError as exc:
            console.print(
                f"   a commit for epoch 1 (taken before the restart): [red]{exc.reason}[/red]"
            )
            expect(exc.reason == "session.glare", "a commit for an old epoch is refused")
    finally:
        for agent in agents.values():
            await agent.client.close()
        for store in stores.values():
            store.close()
        await relay.stop()

    bad = tmp / "not-mls-state.db"
    bad.write_bytes(b"this is no database\n" * 64)
    envelopes = await open_store(cfg.store)
    try:
        Relay(cfg, relay_key, envelopes, mls_state=bad)
        expect(False, "a damaged state file is refused")
    except ConfigError as exc:
        console.print(
            f"   A relay given a damaged state file does not start: [red]{exc.code}[/red]"
        )
        expect(bad.read_bytes().startswith(b"this is no"), "a damaged state file is refused")
    finally:
        await envelopes.close()
