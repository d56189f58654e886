"""Demo step 10: finding someone without a registrar (seed §5; DHT presence on libp2p).

Three real libp2p Kad-DHT nodes on loopback (one trio thread, bridged to asyncio), a
WebFinger server over HTTPS for the ``acct:`` alias, and the §5.2 lookup in the agent. Every
record is a signed presence envelope that the storing nodes and the reader verify.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from dsip.agent.aliases import AliasResolver
from dsip.agent.lookup import Lookup
from dsip.agent.resolver import DidResolver
from dsip.core.identity import KeyPair
from dsip.core.presence import make_presence
from dsip.dht import DhtClient, DhtNodeConfig, LookupSource, PresencePublisher, RecordKey
from dsip.errors import DsipError
from dsip.services.localca import LocalCA
from dsip.services.webfinger import WebFingerResponder, WebFingerServer

__all__ = ["demo_discovery"]

RELAY = {"ws": ["wss://relay.voice.test/dsip"]}


async def demo_discovery(
    console: Console,
    ca: LocalCA,
    tmp: Path,
    expect: Callable[[bool, str], None],
) -> None:
    """Publish carol's presence into a 3-node DHT; alice finds her by ``acct:`` alias."""
    del tmp  # nothing to keep on disk: presence lives in the DHT
    console.print(
        "\n[bold]10. Finding carol with no registrar[/bold] (libp2p Kad-DHT, signed presence)"
    )
    nodes: list[DhtClient] = []
    try:
        async with asyncio.timeout(60):
            first = await DhtClient.start(DhtNodeConfig())
            nodes.append(first)
            for _ in range(2):
                nodes.append(await DhtClient.start(DhtNodeConfig(bootstrap=(first.addrs[0],))))
            await asyncio.gather(*(n.bootstrap([first.addrs[0]]) for n in nodes))
            console.print(f"   3 DHT nodes on loopback; first is {first.peer_id[:20]}…")

            carol = KeyPair.generate()
            publisher = PresencePublisher(
                nodes[1],
                lambda seq, now: make_presence(
                    carol, endpoints=RELAY, seq=seq, now=now, ttl=120, geohash="u4pruy"
                ),
                region_precisions=(4,),
            )
            report = await publisher.publish()
            console.print(
                f"   carol's phone signs presence seq {report.seq} (TTL 120 s, geohash u4pruy) "
                f"and stores it at {report.stored} peers + its region bucket u4pr"
            )

            responder = WebFingerResponder({"acct:carol@voice.test": carol.did})
            async with (
                WebFingerServer(responder, ssl_context=ca.server_context()) as wf,
                AliasResolver(
                    verify=ca.client_context(),
                    webfinger_endpoints={"voice.test": f"https://localhost:{wf.port}"},
                    methods=("webfinger",),
                ) as aliases,
            ):

                async def by_alias(alias: str) -> str:
                    return (await aliases.resolve(alias)).did

                lookup = Lookup(DidResolver(), dht=LookupSource(nodes[2]), aliases=by_alias)
                route = await lookup.locate("acct:carol@voice.test")
            console.print(f"   alice looks up [b]acct:carol@voice.test[/b]: {route.explain()}")
            console.print(f"   → {route.did[:32]}… reachable at {', '.join(route.endpoints)}")
            expect(
                route.did == carol.did and route.path == "presence",
                "carol found by alias through the DHT",
            )
            members = await nodes[0].resolve_region("u4pr")
            console.print(
                f"   region bucket u4pr lists {len(members)} signed entry: "
                f"{', '.join(m.subject[:24] + '…' for m in members)}"
            )
            expect([m.subject for m in members] == [carol.did], "carol in region bucket")

            mallory = KeyPair.generate()
            now = int(time.time())
            forged = make_presence(
                mallory,
                subject=carol.did,
                endpoints={"ws": ["wss://evil.example/dsip"]},
                seq=now + 10,
                now=now,
                ttl=120,
            )
            try:
                await nodes[0].put(RecordKey.presence(carol.did), forged.encode())
            except DsipError as exc:
                console.print(
                    f"   [red]✗ REJECT[/red] mallory's presence claiming carol's DID: "
                    f"[b]{exc.code}[/b] → reason [b]{exc.reason}[/b]"
                )
                expect(True, "forged presence refused")
            else:
                expect(False, "forged presence refused")
            again = await nodes[2].resolve(carol.did)
            expect(
                again is not None and again.endpoints == RELAY,
                "carol's record unchanged after the forgery",
            )
            console.print(
                "   carol's record is unchanged; `dsip dht-node` runs a node as a service"
            )
    finally:
        await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)
