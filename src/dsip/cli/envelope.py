"""``dsip envelope inspect|verify``: look inside and check signed envelopes from files."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from dsip.core.envelope import Verifier
from dsip.core.identity import StaticDocuments
from dsip.core.jsonwire import loads_strict
from dsip.core.jws import decode_header, parse_envelope, parse_frame
from dsip.errors import DsipError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "envelope",
        help="inspect or verify signed envelopes",
        description="Inspect or verify DSIP-JOSE envelopes stored in files.",
    )
    esub = p.add_subparsers(dest="envelope_command", metavar="SUBCOMMAND")
    esub.required = True
    ins = esub.add_parser(
        "inspect",
        help="decode header and payload without verifying",
        description="Decode an envelope's header and payload. Nothing is verified.",
    )
    ins.add_argument("file", type=Path, help="file holding the envelope JSON ('-' for stdin)")
    ins.set_defaults(func=_inspect)
    ver = esub.add_parser(
        "verify",
        help="run the full verification pipeline",
        description="Run all pipeline stages on an envelope and print the verdict with its reason token.",
    )
    ver.add_argument("file", type=Path, help="file holding the envelope JSON ('-' for stdin)")
    ver.add_argument(
        "--now", type=int, default=None, help="receiver clock, Unix seconds (default: now)"
    )
    ver.add_argument(
        "--did-doc",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a DID document to trust for its id (repeatable); did:key needs none",
    )
    ver.add_argument(
        "--delegation",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a delegation envelope the receiver holds (repeatable)",
    )
    ver.set_defaults(func=_verify)


def _read(path: Path) -> bytes:
    return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()


def _inspect(args: argparse.Namespace) -> int:
    raw = parse_envelope(parse_frame(_read(args.file)))
    header = decode_header(raw)
    payload, _ = loads_strict(raw.payload_bytes)
    print(
        json.dumps(
            {"protected": header, "payload": payload, "signature_bytes": len(raw.signature_bytes)},
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    docs = StaticDocuments()
    for path in args.did_doc:
        doc, _ = loads_strict(path.read_bytes(), what=str(path))
        docs.add(str(doc.get("id")) if isinstance(doc, dict) else "", doc)
    delegations = [loads_strict(p.read_bytes(), what=str(p))[0] for p in args.delegation]
    verifier = Verifier(docs, delegations=delegations)
    now = args.now if args.now is not None else int(time.time())
    try:
        v = verifier.verify(_read(args.file), now=now)
    except DsipError as exc:
        print(f"REJECT {exc.code} reason={exc.reason}: {exc.message}")
        return 1
    extra = f" effective={v.effective}" if v.effective else ""
    print(f"ACCEPT {v.type} id={v.id} signer={v.signer} identity={v.identity}{extra}")
    return 0
