"""``dsip agent``: run the DSIP Agent daemon, and talk to it (dsip.agent.daemon)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

from dsip.cli.id import _add_common, _passphrase
from dsip.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run the DSIP Agent daemon and control it (calls, messages, lookups, events)",
        description=(
            "`dsip agent run` keeps one identity online: its wallet key, resolver cache, relay "
            "connection, call and messaging engines and RCID rendering, behind a local API on "
            "127.0.0.1 (bearer token in <home>/agent/<id>.token, mode 0600). The other "
            "subcommands talk to that running agent."
        ),
    )
    cmds = p.add_subparsers(dest="agent_command", metavar="ACTION")
    cmds.required = True

    run = cmds.add_parser("run", help="start the agent (foreground; Ctrl-C stops it)")
    _common(run)
    run.add_argument(
        "--relay", metavar="URI", help="relay URI (default: the identity's ws endpoint)"
    )
    run.add_argument(
        "--ca", type=Path, metavar="FILE", help="trust this CA (PEM) for relay/did:web"
    )
    run.add_argument("--api-port", type=int, default=0, help="local API port (default: any free)")
    run.add_argument(
        "--trust-issuer",
        action="append",
        default=[],
        metavar="TYPE=DID",
        help="trust DID to issue credentials of TYPE for caller ID (repeatable)",
    )
    run.add_argument("--name", help="display name offered to callees (a claim unless vouched)")
    run.add_argument(
        "--credential",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="present this credential (JSON object or vc+jwt) as caller ID (repeatable)",
    )
    run.add_argument(
        "--policy", type=Path, metavar="FILE", help="trust policy (TOML, scope = 'user')"
    )
    run.add_argument(
        "--dht-bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="publish presence in the DHT and look up through it (repeatable)",
    )
    run.add_argument("--geohash", help="coarse location for presence region buckets")
    run.set_defaults(func=_run)

    for name, help_text in (
        ("status", "show the agent's identity, relay and connection"),
        ("calls", "list calls"),
        ("events", "print events as JSON lines (incoming calls with caller ID, messages, ...)"),
        ("stop", "stop the running agent"),
    ):
        c = cmds.add_parser(name, help=help_text)
        _common(c)
        if name == "events":
            c.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
        c.set_defaults(func=_client)

    call = cmds.add_parser("call", help="call a DID")
    _common(call)
    call.add_argument("did", metavar="DID")
    call.add_argument("--tone", type=float, metavar="HZ", help="send real audio: a sine at HZ")
    call.set_defaults(func=_client)
    for name in ("answer", "decline", "hangup", "audio"):
        c = cmds.add_parser(
            name, help="what the call's audio sounds like" if name == "audio" else f"{name} a call"
        )
        _common(c)
        c.add_argument("session", metavar="SESSION")
        if name == "answer":
            c.add_argument("--tone", type=float, metavar="HZ", help="answer with audio at HZ")
        c.set_defaults(func=_client)

    send = cmds.add_parser("send", help="send an end-to-end encrypted message")
    _common(send)
    send.add_argument("did", metavar="DID")
    send.add_argument("text")
    send.set_defaults(func=_client)
    messages = cmds.add_parser("messages", help="print stored messages")
    _common(messages)
    messages.add_argument("--peer", metavar="DID")
    messages.set_defaults(func=_client)
    lookup = cmds.add_parser("lookup", help="locate a DID or acct: alias (§5.2), every step named")
    _common(lookup)
    lookup.add_argument("target", metavar="DID|acct:user@domain")
    lookup.set_defaults(func=_client)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--id", required=True, metavar="NAME", dest="identity", help="wallet identity to use"
    )
    _add_common(p, top_level=True)


def _home(args: argparse.Namespace) -> Path:
    from dsip.agent.wallet import default_home

    home = getattr(args, "home", None)
    return Path(home) if home is not None else default_home()


def _run(args: argparse.Namespace) -> int:
    from dsip.agent.daemon import AgentDaemon, AgentSettings

    issuers: dict[str, list[str]] = {}
    for item in args.trust_issuer:
        kind, sep, did = item.partition("=")
        if not sep or not did.startswith("did:"):
            raise ConfigError(f"--trust-issuer wants TYPE=DID, got {item!r}")
        issuers.setdefault(kind, []).append(did)
    credentials: list[Any] = []
    for path in args.credential:
        try:
            text = path.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read credential {path}: {exc}") from None
        try:
            credentials.append(json.loads(text) if text.startswith("{") else text)
        except ValueError:
            raise ConfigError(f"{path} is neither a JSON credential nor a vc+jwt") from None
    settings = AgentSettings(
        display_name=args.name,
        credentials=tuple(credentials),
        policy_file=args.policy,
        dht_bootstrap=tuple(args.dht_bootstrap),
        geohash=args.geohash,
        home=_home(args),
        identity=args.identity,
        relay=args.relay,
        cafile=str(args.ca) if args.ca else None,
        api_port=args.api_port,
        trusted_issuers={k: tuple(v) for k, v in issuers.items()},
    )
    passphrase = _passphrase(args)

    async def main() -> int:
        daemon = AgentDaemon(settings, passphrase)
        await daemon.start()
        print(f"agent {daemon.did} listening on 127.0.0.1:{daemon.port}", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, daemon._spawn_stop)
        await daemon.stopped.wait()
        return 0

    return asyncio.run(main())


def _client(args: argparse.Namespace) -> int:
    from dsip.agent.daemon import ApiClient

    api = ApiClient(_home(args), args.identity)
    cmd = args.agent_command

    async def main() -> Any:
        if cmd == "events":
            n = 0
            async for event in api.events():
                print(json.dumps(event), flush=True)
                n += 1
                if args.count and n >= args.count:
                    break
            return None
        if cmd == "status":
            return await api.request("GET", "/v1/status")
        if cmd == "calls":
            return await api.request("GET", "/v1/calls")
        if cmd == "stop":
            return await api.request("POST", "/v1/shutdown")
        if cmd == "call":
            body: dict[str, Any] = {"to": args.did}
            if args.tone is not None:
                body["tone"] = args.tone
            return await api.request("POST", "/v1/calls", body)
        if cmd == "answer" and args.tone is not None:
            return await api.request(
                "POST", f"/v1/calls/{args.session}/answer", {"tone": args.tone}
            )
        if cmd in ("answer", "decline", "hangup"):
            return await api.request("POST", f"/v1/calls/{args.session}/{cmd}")
        if cmd == "audio":
            return await api.request("GET", f"/v1/calls/{args.session}/audio")
        if cmd == "send":
            return await api.request("POST", "/v1/messages", {"to": args.did, "text": args.text})
        if cmd == "messages":
            query = f"?peer={args.peer}" if args.peer else ""
            return await api.request("GET", "/v1/messages" + query)
        if cmd == "lookup":
            from urllib.parse import quote

            return await api.request("GET", "/v1/lookup?target=" + quote(args.target, safe=""))
        raise ConfigError(f"unknown agent action {cmd}")  # pragma: no cover - argparse guards

    result = asyncio.run(main())
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0
