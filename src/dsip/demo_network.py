"""``make demo``: a whole local DSIP network on loopback, the seed's flows, then it stays up.

Components (each real, each on 127.0.0.1): a local CA (TLS 1.3 everywhere), three
libp2p Kad-DHT nodes, a relay (wss, SQLite store, prekeys, first-contact policy, Web Push),
a local RFC 8030 push service (the stand-in for a platform push service), a credential
issuer (HTTPS, serving its own did:web document), and three DSIP Agent daemons — alice, bob
and carol —
each with its local API, presence in the DHT and WebRTC audio. Services from other parts
of dsip (PSAP, SIP gateway, web client) add their flows when present.

Flows, narrated (seed §12, §13, first contact):

1. alice scans bob's DID from a QR code (rendered here, read back by a QR decoder) →
   resolves it → finds his presence in the DHT → calls with RCID "Verified by voice.net" →
   audio both ways (tones detected at each end) → bye;
2. bob's agent is offline → alice's message waits at the relay as ciphertext → the relay
   sends a Web Push {relay, envelope_id} → bob's phone wakes, its agent connects,
   decrypts, replies;
3. carol, a stranger, introduces herself to bob: refused by the relay's policy without a
   proof, admitted with a proof of work;
4. an emergency call to ``did:web:911.us`` with a verified location (a PSAP on its own relay);
5. a SIP phone (SIPp) calls a DSIP agent through ``dsip gateway`` and the agent calls out to
   SIP with a STIR/SHAKEN PASSporT;
6. faults: the DHT node the agents bootstrapped from dies — bob is still found; the relay
   is stopped and restarted — the agents reconnect and a message goes through.

Then the network stays up (``--exit`` ends it instead) until Ctrl-C, and everything is shut
down cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from dsip.agent.daemon import AgentDaemon, AgentSettings, ApiClient
from dsip.agent.wallet import Wallet
from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.errors import DsipError
from dsip.services.localca import LocalCA

__all__ = ["run_network_demo"]

PASS = "demo passphrase - not a secret"  # noqa: S105 - demo-only wallets, deleted afterwards
RELAY_POLICY = """
version = 1
scope = "relay"
[defaults]
action = "allow"
[first_contact]
pow_difficulty = 14
[[rules]]
id = "introduction-proof"
when = { messages = ["introduction"], first_contact_proof = false }
action = "reject"
reason = "policy:proof-required"
"""


@dataclass
class _Component:
    what: str
    address: str = ""
    status: str = "starting"


class _Board:
    """The live component table at the top of the demo."""

    def __init__(self) -> None:
        self.rows: dict[str, _Component] = {}
        self.live: Live | None = None

    def set(self, name: str, what: str, address: str = "", status: str = "up") -> None:
        self.rows[name] = _Component(what, address, status)
        self.refresh()

    def table(self) -> Table:
        t = Table(title="local DSIP network (127.0.0.1)", expand=False)
        t.add_column("component")
        t.add_column("what")
        t.add_column("address")
        t.add_column("status")
        for name, c in self.rows.items():
            colour = {"up": "green", "starting": "yellow"}.get(c.status, "red")
            t.add_row(name, c.what, c.address, f"[{colour}]{c.status}[/{colour}]")
        return t

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.table())


async def run_network_demo(
    console: Console, workdir: Path | None = None, *, stay_up: bool = True
) -> int:
    """Bring the network up, run the flows; 0 when every flow behaved as it should."""
    tmp = Path(tempfile.mkdtemp(prefix="dsip-net-")) if workdir is None else workdir
    failures: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)
            console.print(f"   [red]✗ {what}[/red]")

    board = _Board()
    console.rule("[bold]dsip: a local DSIP network[/bold]")
    try:
        async with _network(console, board, tmp) as net:
            await _flow_call(console, net, expect)
            await _flow_offline(console, net, expect)
            await _flow_first_contact(console, net, expect)
            await _flow_emergency(console, net, expect)
            await _flow_gateway(console, net, expect)
            await _flow_faults(console, net, expect)
            if failures:
                console.print(f"[red]flows that did not behave: {failures}[/red]")
                return 1
            console.print(
                "\n[green]All flows behaved.[/green] Agents' APIs: "
                + ", ".join(f"{n} 127.0.0.1:{a.port}" for n, a in net.agents.items())
                + f"; relay {net.relay_uri}"
            )
            web = f"https://localhost:{net.relay.ws_port}/"
            console.print(
                f"Browser client: [link]{web}[/link] (trust the demo CA {net.cafile} or accept "
                "the warning; call any agent's DID from it)"
            )
            if stay_up:
                console.print("The network stays up; Ctrl-C stops it.")
                from dsip.cli.service import until_stopped

                await until_stopped()  # Ctrl-C or SIGTERM: every component stops cleanly
                console.print("Stopping the network…")
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not failures else 1


@dataclass
class _Net:
    ca: LocalCA
    cafile: Path
    relay: Any
    relay_uri: str
    relay_key: KeyPair
    dht: list[Any]
    issuer: Any
    push: Any
    agents: dict[str, AgentDaemon]
    apis: dict[str, ApiClient]
    tmp: Path
    receiver: Any
    relay_box: dict[str, Any]
    start_relay: Callable[[int], Any]
    stop_relay: Callable[[], Any]

    async def restart_relay(self) -> None:
        port = self.relay_box["relay"].ws_port
        await self.stop_relay()
        self.relay = await self.start_relay(port)


@contextlib.asynccontextmanager
async def _network(console: Console, board: _Board, tmp: Path) -> AsyncIterator[_Net]:
    from dsip.agent.push import PushReceiver
    from dsip.agent.resolver import DidResolver
    from dsip.core.trust.issuance import Grant
    from dsip.dht import DhtClient, DhtNodeConfig
    from dsip.media.webrtc import loopback_only
    from dsip.messaging.prekeys import PrekeyStore
    from dsip.services.issuer import IssuerConfig, IssuerService
    from dsip.services.pushservice import PushService

    loopback_only(True)
    stack = contextlib.AsyncExitStack()
    with Live(board.table(), console=console, refresh_per_second=8) as live:
        board.live = live
        try:
            ca = LocalCA.create()
            cafile = tmp / "ca.pem"
            ca.write_ca_pem(cafile)
            board.set("CA", "local certificate authority (TLS 1.3 for every service)")

            dht: list[Any] = []
            first = await DhtClient.start(DhtNodeConfig())
            dht.append(first)
            for _ in range(2):
                dht.append(await DhtClient.start(DhtNodeConfig(bootstrap=(first.addrs[0],))))
            await asyncio.gather(*(n.bootstrap([first.addrs[0]]) for n in dht))
            stack.push_async_callback(_close_all, dht)
            for i, node in enumerate(dht):
                board.set(f"dht-{i}", "libp2p Kad-DHT node (verifying)", node.addrs[0][-24:])

            coturn = _start_coturn(tmp / "coturn", board)
            if coturn is not None:
                stack.callback(coturn.stop)
            push = await PushService().start()
            stack.push_async_callback(push.close)
            board.set("push", "RFC 8030 push service (platform stand-in)", push.origin)

            relay_key = KeyPair.generate()
            relay_box: dict[str, Any] = {}

            async def start_relay(port: int = 0) -> Any:
                from dsip.core.trust.policy import TrustPolicy, relay_first_contact_hook
                from dsip.services.relay import Relay
                from dsip.services.webroot import default_web_root
                from dsip.storage import open_store

                prekeys = PrekeyStore.open(tmp / "prekeys.db")
                relay = Relay(
                    RelayConfig(ws_port=port),
                    relay_key,
                    await open_store(f"sqlite:///{tmp}/relay.db"),
                    server_ssl=ca.server_context(),
                    resolver=DidResolver(verify=ca.client_context()),  # bob's did:web
                    prekeys=prekeys,
                    first_contact=relay_first_contact_hook(TrustPolicy.from_toml(RELAY_POLICY)),
                    web_root=default_web_root(),  # the browser client, on the same port
                    turn=(
                        (lambda did, token: coturn.credentials(did).as_capability())
                        if coturn is not None
                        else None
                    ),
                )
                await relay.start()
                relay_box["relay"], relay_box["prekeys"] = relay, prekeys
                return relay

            async def stop_relay() -> None:
                relay = relay_box.pop("relay", None)
                if relay is not None:
                    await relay.stop()
                    relay_box.pop("prekeys").close()

            relay = await start_relay()
            stack.push_async_callback(stop_relay)
            relay_uri = f"wss://localhost:{relay.ws_port}/dsip"
            board.set("relay", "wss relay: store, prekeys, policy, push", relay_uri)

            wallet_home = tmp / "agents"
            now = int(time.time())
            dids: dict[str, str] = {}
            for name in ("alice", "bob", "carol"):
                # did:key identities: the DHT's storing nodes verify presence offline, and a
                # did:web identity publishes presence through a delegated did:key device
                w = Wallet(wallet_home / name)
                w.create(name, PASS, now=now)
                dids[name] = w.entry(name).did

            issuer = IssuerService(
                IssuerConfig(
                    port=0,
                    grants=(
                        Grant(
                            dids["alice"],
                            "DisplayNameCredential",
                            {"displayName": "Alice Example"},
                        ),
                    ),
                ).validate(),
                resolver=DidResolver(verify=ca.client_context()),
            )
            await issuer.start(ca.server_context())
            stack.push_async_callback(issuer.stop)
            board.set("issuer", "credential issuer (voice.net's stand-in)", issuer.url)
            credential = await _obtain_name_credential(issuer, ca, wallet_home, dids["alice"])

            receiver = PushReceiver(push.origin)
            subscription = await receiver.subscribe()
            stack.push_async_callback(receiver.close)

            agents: dict[str, AgentDaemon] = {}
            bootstrap = (first.addrs[0],)
            for name in ("alice", "bob", "carol"):
                extra: dict[str, Any] = {}
                if name == "alice":
                    extra = {"display_name": "Alice Example", "credentials": (credential,)}
                if name == "bob":
                    extra = {
                        "trusted_issuers": {"DisplayNameCredential": (issuer.did,)},
                        "issuer_names": {issuer.did: "voice.net"},
                        "push_subscription": subscription,
                    }
                if name == "carol":
                    extra = {"display_name": "Carol"}
                agent = AgentDaemon(
                    AgentSettings(
                        home=wallet_home / name,
                        identity=name,
                        relay=relay_uri,
                        cafile=str(cafile),
                        dht_bootstrap=bootstrap,
                        geohash="u4pruydq",
                        **extra,
                    ),
                    PASS,
                )
                await agent.start()
                agents[name] = agent
                board.set(f"agent {name}", agent.did[:40] + "…", f"127.0.0.1:{agent.port}")
            stack.push_async_callback(_stop_agents, agents)

            net = _Net(
                ca=ca,
                cafile=cafile,
                relay=relay,
                relay_uri=relay_uri,
                relay_key=relay_key,
                dht=dht,
                issuer=issuer,
                push=push,
                agents=agents,
                apis={n: ApiClient(a.settings.home, n) for n, a in agents.items()},
                tmp=tmp,
                receiver=receiver,
                relay_box=relay_box,
                start_relay=start_relay,
                stop_relay=stop_relay,
            )
            live.stop()  # the table stays printed above; narration scrolls below it
            board.live = None
            yield net
        finally:
            board.live = None
            await stack.aclose()
            loopback_only(False)


def _start_coturn(workdir: Path, board: _Board) -> Any:
    """coturn for TURN (relay-issued REST credentials in every relay hello), if installed."""
    from dsip.services.coturn import Coturn

    try:
        coturn = Coturn(workdir).start()
    except DsipError as exc:
        board.set("coturn", "TURN server", "", f"not running: {exc.message[:40]}")
        return None
    board.set("coturn", "TURN (REST credentials via the relay hello)", coturn.uri)
    return coturn


async def _close_all(nodes: list[Any]) -> None:
    await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)


async def _stop_agents(agents: dict[str, AgentDaemon]) -> None:
    for agent in agents.values():
        if not agent.stopped.is_set():
            with contextlib.suppress(Exception):
                await agent.stop()


async def _obtain_name_credential(issuer: Any, ca: LocalCA, home: Path, did: str) -> Any:
    """alice proves control of her DID to the issuer and gets a DisplayNameCredential."""
    import httpx

    from dsip.core.trust.issuance import sign_control_proof
    from dsip.core.trust.vc import DATA_INTEGRITY

    key = Wallet(home / "alice").unlock("alice", PASS)
    async with httpx.AsyncClient(verify=ca.client_context(), timeout=10) as http:
        c = (await http.post(issuer.url + "/v1/challenges", json={"did": did})).json()
        proof = sign_control_proof(
            key,
            audience=c["audience"],
            challenge=c["challenge"],
            credential_type="DisplayNameCredential",
            now=int(time.time()),
            fmt=DATA_INTEGRITY,
        )
        r = await http.post(issuer.url + "/v1/credentials", json={"proof": proof})
        r.raise_for_status()
        return r.json()["credential"]


async def _events(api: ApiClient) -> AsyncGenerator[dict[str, Any], None]:
    stream = api.events()
    first = await anext(stream)
    assert first["event"] == "subscribed"
    return stream


async def _next(
    stream: AsyncIterator[dict[str, Any]], kind: str, timeout: float = 20
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        async for event in stream:
            if event["event"] == kind:
                return event
    raise DsipError(f"event stream ended before {kind}", code="demo")


def qr_text(data: str) -> tuple[str, Any]:
    """``data`` as a QR code drawn with half blocks, and the module matrix."""
    import numpy as np
    import segno

    qr = segno.make(data, error="m")
    m = np.pad(np.array([[1 if c else 0 for c in row] for row in qr.matrix], dtype=np.uint8), 2)
    if m.shape[0] % 2:
        m = np.vstack([m, np.zeros((1, m.shape[1]), dtype=np.uint8)])
    glyph = {(0, 0): "█", (1, 0): "▄", (0, 1): "▀", (1, 1): " "}
    lines = [
        "".join(glyph[(int(m[y, x]), int(m[y + 1, x]))] for x in range(m.shape[1]))
        for y in range(0, m.shape[0], 2)
    ]
    return "\n".join(lines), m


def scan(matrix: Any) -> str:
    """Read a QR module matrix back with a real decoder (zxing-cpp), as a camera would."""
    import numpy as np
    import zxingcpp

    image = ((1 - np.kron(np.pad(matrix, 4), np.ones((6, 6), dtype=np.uint8))) * 255).astype(
        np.uint8
    )
    found = zxingcpp.read_barcodes(image)
    if not found:
        raise DsipError("the QR code did not scan", code="demo")
    return str(found[0].text)


async def _flow_call(console: Console, net: _Net, expect: Callable[[bool, str], None]) -> None:
    console.print("\n[bold]1. alice scans bob's DID and calls him[/bold] (seed §12)")
    bob = net.agents["bob"]
    art, matrix = qr_text(bob.did)
    console.print(art, highlight=False, markup=False)
    scanned = scan(matrix)
    console.print(f"   alice's camera reads: [b]{scanned}[/b]")
    expect(scanned == bob.did, "QR code scanned back to bob's DID")
    a_api, b_api = net.apis["alice"], net.apis["bob"]
    route = await a_api.request("GET", "/v1/lookup?target=" + scanned)
    console.print(f"   lookup: {route['steps']}")
    expect(route["path"] == "presence", "bob found through his DHT presence")
    b_events, a_events = await _events(b_api), await _events(a_api)
    placed = await a_api.request("POST", "/v1/calls", {"to": scanned, "tone": 1000})
    incoming = await _next(b_events, "call.incoming")
    rcid = incoming["rcid"] or {}
    console.print(
        f"   bob's phone rings: [green]{rcid.get('name')}[/green] — {rcid.get('name_basis')}"
        f" ({rcid.get('identity_basis')})"
    )
    expect(rcid.get("verified_by") == ["Verified by voice.net"], "RCID verified by voice.net")
    await b_api.request("POST", f"/v1/calls/{incoming['session']}/answer", {"tone": 1500})
    await _next(a_events, "call.audio")
    await _next(b_events, "call.audio")
    heard_b = await _hears(b_api, incoming["session"], 1000)
    heard_a = await _hears(a_api, placed["session"], 1500)
    console.print(
        f"   audio flows (WebRTC, DTLS-SRTP): bob hears {heard_b:.0f} Hz, alice hears "
        f"{heard_a:.0f} Hz"
    )
    expect(abs(heard_b - 1000) <= 30 and abs(heard_a - 1500) <= 30, "tones heard both ways")
    await a_api.request("POST", f"/v1/calls/{placed['session']}/hangup")
    ended = await _next(b_events, "call.ended")
    console.print(f"   alice hangs up; bob's call ends with [b]{ended.get('reason')}[/b]")
    expect(ended.get("reason") == "user.hangup", "call ended with user.hangup")
    await b_events.aclose()
    await a_events.aclose()


async def _hears(api: ApiClient, session: str, hz: float) -> float:
    got: dict[str, Any] = {"frequency": 0.0}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while True:
                got = await api.request("GET", f"/v1/calls/{session}/audio")
                if got["frames"] > 25 and abs(got["frequency"] - hz) <= 30:
                    break
                await asyncio.sleep(0.2)
    return float(got["frequency"])


async def _flow_offline(console: Console, net: _Net, expect: Callable[[bool, str], None]) -> None:
    console.print("\n[bold]2. bob is offline; his phone wakes on a push[/bold] (seed §13)")
    bob = net.agents["bob"]
    settings, bob_did = bob.settings, bob.did
    await bob.stop()
    console.print("   bob's agent stops (phone asleep); it registered a Web Push channel")
    receiver = net.receiver
    woke: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_wake(message: dict[str, Any]) -> None:
        await woke.put(message)

    receiver.start(on_wake)
    sent = await net.apis["alice"].request(
        "POST", "/v1/messages", {"to": bob_did, "text": "Dinner at eight?"}
    )
    async with asyncio.timeout(15):
        wake = await woke.get()
    console.print(
        f"   the relay stored the ciphertext and pushed {{relay, envelope_id}} only: "
        f"{wake.get('envelope_id')}"
    )
    expect(wake.get("relay") == net.relay.did, "push names the relay")
    bob = AgentDaemon(settings, PASS)
    await bob.start()
    net.agents["bob"] = bob
    net.apis["bob"] = ApiClient(settings.home, "bob")
    b_events = await _events(net.apis["bob"])
    history: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while not history:
            history = await net.apis["bob"].request("GET", "/v1/messages")
            await asyncio.sleep(0.2)
    body = history[-1].get("body")
    console.print(f'   bob\'s phone wakes, connects, decrypts: "{body}"')
    expect(history[-1].get("body") == "Dinner at eight?", "offline message decrypted")
    del sent
    a_events = await _events(net.apis["alice"])
    await net.apis["bob"].request(
        "POST", "/v1/messages", {"to": net.agents["alice"].did, "text": "See you there."}
    )
    reply = await _next(a_events, "message")
    console.print(f'   bob replies; alice reads: "{reply.get("body")}"')
    expect(reply.get("body") == "See you there.", "reply delivered")
    await a_events.aclose()
    await b_events.aclose()


async def _flow_first_contact(
    console: Console, net: _Net, expect: Callable[[bool, str], None]
) -> None:
    console.print("\n[bold]3. carol, a stranger, introduces herself[/bold] (first contact)")
    c_api = net.apis["carol"]
    bob_did = net.agents["bob"].did
    b_events = await _events(net.apis["bob"])
    bare = await c_api.request(
        "POST", "/v1/introductions", {"to": bob_did, "purpose": "Hi, it's Carol from the lab"}
    )
    console.print(
        f"   without a proof: refused [b]{bare.get('refused')}[/b] — {bare.get('detail')}"
    )
    expect(bare.get("refused") == "policy.first-contact-required", "bare introduction refused")
    t0 = time.perf_counter()
    proven = await c_api.request(
        "POST",
        "/v1/introductions",
        {"to": bob_did, "purpose": "Hi, it's Carol from the lab", "pow": 14},
    )
    spent = time.perf_counter() - t0
    got = await _next(b_events, "introduction")
    console.print(
        f"   with a 14-bit proof of work ({spent:.1f} s of carol's CPU): delivered; bob sees "
        f'"{got.get("purpose")}"'
    )
    expect(proven.get("refused") is None and got.get("id") == proven.get("id"), "PoW admitted")
    await b_events.aclose()


async def _flow_emergency(console: Console, net: _Net, expect: Callable[[bool, str], None]) -> None:
    from dsip.services.psap import demo_emergency

    console.print(
        "\n[bold]4. an emergency call to did:web:911.us[/bold] (seed §19–§20: a PSAP, signed "
        "location only the PSAP can read, fallback, a public warning)"
    )
    await demo_emergency(console, net.ca, net.tmp, expect)


async def _flow_gateway(console: Console, net: _Net, expect: Callable[[bool, str], None]) -> None:
    from dsip.services.gateway_demo import demo_gateway

    await demo_gateway(console, net.ca, net.tmp, expect)


async def _flow_faults(console: Console, net: _Net, expect: Callable[[bool, str], None]) -> None:
    console.print("\n[bold]6. components die[/bold]")
    first = net.dht[0]
    await first.close()
    bob_did = net.agents["bob"].did
    route = await net.apis["alice"].request("GET", "/v1/lookup?target=" + bob_did)
    console.print(
        f"   the DHT node the agents bootstrapped from is gone; bob is still found: {route['path']}"
    )
    expect(route["path"] == "presence", "presence found after a DHT node died")
    a_events = await _events(net.apis["alice"])
    await net.restart_relay()
    await _next(a_events, "relay.disconnected")
    await _next(a_events, "relay.reconnected")
    console.print("   the relay stops and restarts: alice's agent reconnects (backoff)")
    b_api = net.apis["bob"]
    async with asyncio.timeout(20):
        while not (await b_api.request("GET", "/v1/status"))["connected"]:
            await asyncio.sleep(0.2)
    b_events = await _events(b_api)
    await net.apis["alice"].request("POST", "/v1/messages", {"to": bob_did, "text": "still there?"})
    got = await _next(b_events, "message")
    console.print(f'   and a message goes through: "{got.get("body")}"')
    expect(got.get("body") == "still there?", "message after relay restart")
    await a_events.aclose()
    await b_events.aclose()
