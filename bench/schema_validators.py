"""Which JSON Schema library should stage 13 use? Measure, and check they agree.

Runs the three candidate validators over dsip's own schema set (package data of
``dsip.core.payloads``):

* ``jsonschema-rs`` (Rust, ``jsonschema_rs``), fast path ``is_valid``;
* ``fastjsonschema`` (generates and ``exec``s Python code per schema);
* ``jsonschema`` (the pure-Python reference implementation, ``referencing`` registry).

and prints validations per second on a realistic ~800-byte ``invite`` (an SDP offer in
``transports[0].sdp``) and on the same invite with one bad ``direction``, plus the ratio
to the fastest library and whether each library reproduces every verdict of the shared
payload vectors. A last row times the production entry point,
``dsip.core.payloads.schema.validate_payload``, whose failure path also builds the error
message.

Usage: ``.venv/bin/python bench/schema_validators.py [--quick]``
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema_rs
import referencing

from dsip.core.payloads.schema import (
    INFO_DATA_SCHEMAS,
    SCHEMA_NAMES,
    schema_document,
    validate_payload,
)
from dsip.errors import SchemaError

VECTORS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "dsip-v0.7" / "vectors"
)

Check = Callable[[str, Any], bool]

SDP_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:Hb2x\r\na=ice-pwd:0n9Wl7ywQpVdH1bG4Ckv2aZs\r\n"
    "a=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
)

INVITE: dict[str, Any] = {
    "dsip": {
        "core": "1.0",
        "min_core": "1.0",
        "profiles": ["interactive-media/1.0"],
        "extensions": [],
        "critical": [],
    },
    "type": "invite",
    "id": "01K742SG001QG79X9HH56TS8SW",
    "from": "did:key:z6Mkg9oRSg6APtrMJP8iekQm8yPc9ore3E4SJ5bF7Cw1qFCu",
    "to": "did:web:example.com:users:bob",
    "issued_at": 1760000000,
    "expires_at": 1760000030,
    "intent": "interactive",
    "identity": {"display_name": "Alice", "claims": []},
    "media": [
        {
            "type": "audio",
            "direction": "sendrecv",
            "codecs": [
                {"id": "codec:audio/opus", "sample_rates": [48000], "channels": [1, 2]},
            ],
        }
    ],
    "transports": [{"id": "transport:webrtc", "ice": "trickle", "sdp": SDP_OFFER}],
    "policy": {"recording": "consent-required", "ai_processing": "denied"},
}


def bad_invite() -> dict[str, Any]:
    bad = copy.deepcopy(INVITE)
    bad["media"][0]["direction"] = "sideways"
    return bad


# -- the three libraries, each compiled once per schema over the same documents --------


def documents() -> dict[str, dict[str, Any]]:
    return {name: schema_document(name) for name in [*sorted(SCHEMA_NAMES), "common"]}


def build_jsonschema_rs(docs: dict[str, dict[str, Any]]) -> dict[str, jsonschema_rs.Validator]:
    registry = jsonschema_rs.Registry([(doc["$id"], doc) for doc in docs.values()])
    return {
        name: jsonschema_rs.validator_for(
            docs[name], registry=registry, pattern_options=jsonschema_rs.RegexOptions()
        )
        for name in SCHEMA_NAMES
    }


def build_fastjsonschema(docs: dict[str, dict[str, Any]]) -> dict[str, Callable[[Any], Any]]:
    by_uri = {doc["$id"]: doc for doc in docs.values()}

    def fetch(uri: str) -> dict[str, Any]:
        return by_uri[uri.split("#", 1)[0]]  # in memory only: never touch the network

    return {
        name: fastjsonschema.compile(docs[name], handlers={"https": fetch}) for name in SCHEMA_NAMES
    }


def build_jsonschema(docs: dict[str, dict[str, Any]]) -> dict[str, jsonschema.Validator]:
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        (doc["$id"], referencing.Resource.from_contents(doc)) for doc in docs.values()
    )
    return {
        name: jsonschema.Draft202012Validator(docs[name], registry=registry)
        for name in SCHEMA_NAMES
    }


def checks(docs: dict[str, dict[str, Any]]) -> dict[str, Check]:
    rs = build_jsonschema_rs(docs)
    fast = build_fastjsonschema(docs)
    ref = build_jsonschema(docs)

    def fast_ok(name: str, instance: Any) -> bool:
        try:
            fast[name](instance)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return {
        "jsonschema-rs": lambda name, instance: rs[name].is_valid(instance),
        "fastjsonschema": fast_ok,
        "jsonschema": lambda name, instance: ref[name].is_valid(instance),
    }


# -- agreement on the conformance vectors -----------------------------------------------


def verdict(check: Check, name: str, instance: Any) -> str:
    """The stage-13 verdict, including the §12.12 info.data binding check."""
    if not check(name, instance):
        return "reject"
    if name == "info":
        binding = INFO_DATA_SCHEMAS.get(instance["about"])
        if binding is not None and not check(binding, instance["data"]):
            return "reject"
    return "accept"


def vector_results(libraries: dict[str, Check]) -> dict[str, list[str]]:
    """For each library, the vectors whose expected verdict it fails to reproduce."""
    files = sorted((VECTORS / "payload").glob("*.json"))
    misses: dict[str, list[str]] = {name: [] for name in libraries}
    for path in files:
        vector = json.loads(path.read_text("utf-8"))
        expected = vector["expect"]["verdict"]
        schema, payload = vector["input"]["schema"], vector["input"]["payload"]
        for name, check in libraries.items():
            if verdict(check, schema, payload) != expected:
                misses[name].append(path.stem)
    return misses


# -- timing -------------------------------------------------------------------------------


def per_second(call: Callable[[], object], repeats: int) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=repeats, number=number))
    return number / best


def dsip_call(instance: dict[str, Any]) -> Callable[[], object]:
    def call() -> object:
        try:
            validate_payload(instance)
        except SchemaError as exc:
            return exc
        return None

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timing repeat instead of five")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 5

    docs = documents()
    libraries = checks(docs)
    good, bad = INVITE, bad_invite()
    size = len(json.dumps(good, separators=(",", ":")).encode())

    for name, check in libraries.items():
        if not check("invite", good) or check("invite", bad):
            print(f"{name}: wrong verdict on the benchmark invites", file=sys.stderr)
            return 1

    rows = [
        (
            name,
            per_second(functools.partial(check, "invite", good), repeats),
            per_second(functools.partial(check, "invite", bad), repeats),
        )
        for name, check in libraries.items()
    ]
    fastest_valid = max(r[1] for r in rows)
    fastest_invalid = max(r[2] for r in rows)
    rows.append(
        (
            "dsip validate_payload",
            per_second(dsip_call(good), repeats),
            per_second(dsip_call(bad), repeats),
        )
    )

    misses = vector_results(libraries) if VECTORS.is_dir() else None
    total = len(list((VECTORS / "payload").glob("*.json"))) if misses is not None else 0

    print(f"invite: {size} bytes compact JSON; invalid = media[0].direction 'sideways'")
    header = (
        f"{'validator':<22} {'valid/s':>11} {'invalid/s':>11} "
        f"{'x slower (valid)':>17} {'x slower (invalid)':>19} {'vectors':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, valid, invalid in rows:
        if misses is None:
            agreed = "n/a"
        elif name in misses:
            agreed = f"{total - len(misses[name])}/{total}"
        else:
            agreed = "-"
        print(
            f"{name:<22} {valid:>11,.0f} {invalid:>11,.0f} "
            f"{fastest_valid / valid:>17.2f} {fastest_invalid / invalid:>19.2f} {agreed:>8}"
        )
    if misses is None:
        print(f"(vectors not found under {VECTORS}: agreement not checked)")
    else:
        for name, missed in misses.items():
            if missed:
                print(f"{name} disagrees with the vectors on: {', '.join(missed)}")
        if not any(misses.values()):
            print(f"all three libraries reproduce all {total} payload vector verdicts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
