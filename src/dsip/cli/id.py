"""``dsip id``: manage the identities in the local DID wallet (:mod:`dsip.agent.wallet`).

Subcommands: ``new``, ``list``, ``show``, ``export-doc``, ``rotate`` (prints the signed
``key-rotation`` record), ``delegate`` (prints a signed device delegation). ``--home`` and
``--passphrase-file`` are accepted both before and after the subcommand
(``dsip id --home X list`` and ``dsip id list --home X``).

Passphrase sources, first match wins: ``--passphrase-file FILE`` (``-`` reads stdin; one
trailing newline is stripped), ``$DSIP_PASSPHRASE``, then an interactive prompt (asked
twice on ``new`` so a typo cannot lock the new key away). Passphrases never appear in
arguments — process listings are world-readable.

Handlers return an exit status; a :class:`~dsip.errors.DsipError` is printed as
``error: <code> (<reason>): <message>`` on stderr and gives status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsip.agent.wallet import SERVICE_KINDS, Wallet, WalletEntry, default_home
from dsip.core.delegation import (
    CAP_MEDIA_INTERACTIVE,
    CAP_SIGNALING,
    issue_delegation,
    make_key_rotation,
)
from dsip.core.registry import ROTATION_REASONS
from dsip.errors import DsipError, WalletError

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``id`` command and its subcommands to a ``dsip`` argument parser."""
    parser = subparsers.add_parser(
        "id",
        help="manage DSIP identities (DID wallet)",
        description="Create, list, inspect, publish and rotate the DSIP identities "
        "(did:key / did:web) kept encrypted in the local wallet.",
    )
    _add_common(parser, top_level=True)
    parser.set_defaults(func=_usage(parser))
    sub = parser.add_subparsers(title="subcommands", metavar="COMMAND")

    new = sub.add_parser(
        "new",
        help="create a new identity",
        description="Generate an Ed25519 key and store it encrypted under NAME. Without "
        "--web the identity is a did:key; with --web it is the given did:web DID, whose "
        "document you publish with 'dsip id export-doc'.",
    )
    new.add_argument("name", metavar="NAME", help="wallet name: a-z 0-9 _ -, up to 64 chars")
    new.add_argument(
        "--web", metavar="DID", help="make a did:web identity, e.g. did:web:example.com:users:bob"
    )
    new.add_argument(
        "--service",
        metavar="KIND=URL",
        action="append",
        default=[],
        help=f"advertise an endpoint in the DID document; KIND is one of "
        f"{', '.join(SERVICE_KINDS)}; repeatable",
    )
    new.add_argument(
        "--recovery",
        action="store_true",
        help="also generate a recovery key (did:web only) that can rotate a lost key",
    )
    _add_common(new, top_level=False)
    new.set_defaults(func=_guard(_cmd_new))

    lst = sub.add_parser(
        "list", help="list identities", description="List the identities in the wallet."
    )
    _add_common(lst, top_level=False)
    lst.set_defaults(func=_guard(_cmd_list))

    show = sub.add_parser(
        "show",
        help="show an identity's public details",
        description="Show the public details of NAME (no passphrase needed).",
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_common(show, top_level=False)
    show.set_defaults(func=_guard(_cmd_show))

    export = sub.add_parser(
        "export-doc",
        help="write the identity's DID document",
        description="Print the DID document of NAME as JSON. For did:web, publish it at "
        "the document URL of the DID (https://HOST/PATH/did.json or "
        "https://HOST/.well-known/did.json).",
    )
    export.add_argument("name", metavar="NAME")
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    _add_common(export, top_level=False)
    export.set_defaults(func=_guard(_cmd_export_doc))

    rotate = sub.add_parser(
        "rotate",
        help="rotate a did:web identity to a new key",
        description="Replace the signing key of a did:web identity with a new key-N "
        "(did:key identities cannot rotate). Publish the new document afterwards.",
    )
    rotate.add_argument("name", metavar="NAME")
    rotate.add_argument(
        "--recovery",
        action="store_true",
        help="authorize the rotation with the recovery key (when the signing key is lost)",
    )
    rotate.add_argument(
        "--reason",
        choices=sorted(ROTATION_REASONS),
        default=None,
        help="registered rotation reason (default: scheduled, or lost with --recovery)",
    )
    rotate.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="DID",
        help="device DID whose delegation is re-issued under the new key (repeatable)",
    )
    rotate.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the signed key-rotation record here (default: stdout)",
    )
    _add_common(rotate, top_level=False)
    rotate.set_defaults(func=_guard(_cmd_rotate))

    delegate = sub.add_parser(
        "delegate",
        help="authorize a device key to sign for an identity",
        description="Sign a DeviceDelegation (§7.4) that lets DEVICE (a did:key) sign DSIP "
        "messages for identity NAME. Devices present it in the 'delegations' header.",
    )
    delegate.add_argument("name", metavar="NAME")
    delegate.add_argument("device", metavar="DEVICE_DID")
    delegate.add_argument("--days", type=float, default=30.0, help="validity in days (default 30)")
    delegate.add_argument(
        "--capability",
        action="append",
        default=[],
        metavar="CAP",
        help="capability to grant (repeatable; default dsip.signaling + dsip.media.interactive)",
    )
    delegate.add_argument("-o", "--output", type=Path, default=None, metavar="FILE")
    _add_common(delegate, top_level=False)
    delegate.set_defaults(func=_guard(_cmd_delegate))


def _add_common(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # On subcommands the default is SUPPRESS, so an option given before the subcommand
    # is not overwritten by the subcommand's default.
    home_default: Any = None if top_level else argparse.SUPPRESS
    file_default: Any = None if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--home",
        metavar="DIR",
        type=Path,
        default=home_default,
        help="wallet directory (default: $DSIP_HOME or ~/.dsip)",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        default=file_default,
        help="read the passphrase from FILE ('-' for stdin); else $DSIP_PASSPHRASE, else prompt",
    )


def _usage(parser: argparse.ArgumentParser) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


def _guard(fn: Handler) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except DsipError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


def _wallet(args: argparse.Namespace) -> Wallet:
    home = getattr(args, "home", None)
    return Wallet(home if home is not None else default_home())


def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    path = getattr(args, "passphrase_file", None)
    if path is not None:
        try:
            text = sys.stdin.readline() if path == "-" else Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WalletError(
                f"cannot read passphrase file {path}: {exc}", code="passphrase-unavailable"
            ) from None
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
        return text
    env = os.environ.get("DSIP_PASSPHRASE")
    if env is not None:
        return env
    try:
        first = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("passphrase (again): ") != first:
            raise WalletError("the passphrases do not match", code="passphrase-mismatch")
    except EOFError:
        raise WalletError(
            "no passphrase: use --passphrase-file, $DSIP_PASSPHRASE or a terminal",
            code="passphrase-unavailable",
        ) from None
    return first


def _parse_services(items: list[str]) -> dict[str, list[str]]:
    services: dict[str, list[str]] = {}
    for item in items:
        kind, sep, url = item.partition("=")
        if not sep or not kind or not url:
            raise WalletError(
                f"--service expects KIND=URL, got {item[:80]!r}", code="wallet-service-invalid"
            )
        services.setdefault(kind.strip(), []).append(url.strip())
    return services


def _print_entry(entry: WalletEntry) -> None:
    print(f"name:        {entry.name}")
    print(f"did:         {entry.did}")
    print(f"method:      did:{entry.method}")
    print(f"kid:         {entry.kid}")
    print(f"public key:  {entry.public_key_multibase}")
    print(f"created:     {_iso(entry.created_at)}")
    for kind, urls in entry.services.items():
        for url in urls:
            print(f"service:     {kind} {url}")
    if entry.recovery_kid is not None:
        print(f"recovery:    {entry.recovery_kid}")
    for prev in entry.previous_keys:
        print(f"retired:     {prev.kid} ({_iso(prev.retired_at)})")


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# --- handlers ------------------------------------------------------------------------------


def _cmd_new(args: argparse.Namespace) -> int:
    wallet = _wallet(args)
    services = _parse_services(args.service)
    # Validate what needs no passphrase first, so a typo doesn't cost a prompt.
    if args.name in wallet.names():
        raise WalletError(f"identity {args.name!r} already exists", code="wallet-exists")
    passphrase = _passphrase(args, confirm=True)
    entry = wallet.create(
        args.name,
        passphrase,
        method="web" if args.web else "key",
        web_did=args.web,
        services=services,
        with_recovery_key=args.recovery,
        now=int(time.time()),
    )
    print(f"created {entry.name}: {entry.did}")
    print(f"signing key: {entry.kid}")
    if entry.method == "web":
        print(f"publish its document: dsip id export-doc {entry.name} -o did.json")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    wallet = _wallet(args)
    names = wallet.names()
    if not names:
        print(f"no identities in {wallet.home}", file=sys.stderr)
        return 0
    width = max(len(n) for n in names)
    for name in names:
        try:
            entry = wallet.entry(name)
        except DsipError as exc:
            print(f"{name:<{width}}  (unreadable: {exc.code})")
            continue
        print(f"{name:<{width}}  did:{entry.method:<3}  {entry.did}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    entry = _wallet(args).entry(args.name)
    if args.json:
        print(json.dumps(entry.to_json(), indent=2))
    else:
        _print_entry(entry)
    return 0


def _cmd_export_doc(args: argparse.Namespace) -> int:
    doc = _wallet(args).did_document(args.name)
    text = json.dumps(doc, indent=2) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise WalletError(
            f"cannot write {args.output}: {exc.strerror}", code="output-unwritable"
        ) from None
    print(f"wrote the DID document of {doc['id']} to {args.output}", file=sys.stderr)
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    wallet = _wallet(args)
    entry = wallet.entry(args.name)  # unknown name / did:key fail before the prompt
    if entry.method != "web":
        raise WalletError(
            "did:key identities cannot rotate: the DID is the key (§7.5); "
            "create a new identity instead",
            code="rotation-unsupported",
        )
    passphrase = _passphrase(args)
    signer, new = wallet.rotate(
        args.name, passphrase, now=int(time.time()), use_recovery=args.recovery
    )
    reason = args.reason or ("lost" if args.recovery else "scheduled")
    record = make_key_rotation(
        signer,
        subject=entry.did,
        previous=entry.kid,
        next_key=new,
        reason=reason,
        now=int(time.time()),
        devices=args.device,
        recovery=args.recovery,
    )
    _emit(json.dumps(record, indent=2) + "\n", args.output)
    print(
        f"rotated {args.name}: {entry.kid} -> {new.kid} (record signed by {signer.kid})",
        file=sys.stderr,
    )
    print(f"publish the new document: dsip id export-doc {args.name} -o did.json", file=sys.stderr)
    return 0


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _cmd_delegate(args: argparse.Namespace) -> int:
    wallet = _wallet(args)
    wallet.entry(args.name)  # fail on an unknown name before prompting
    key = wallet.unlock(args.name, _passphrase(args))
    now = int(time.time())
    envelope = issue_delegation(
        key,
        args.device,
        issued_at=now,
        expires_at=now + int(args.days * 86_400),
        capabilities=args.capability or [CAP_SIGNALING, CAP_MEDIA_INTERACTIVE],
    )
    _emit(json.dumps(envelope, indent=2) + "\n", args.output)
    print(f"{args.device} may now sign for {key.did} for {args.days:g} days", file=sys.stderr)
    return 0
