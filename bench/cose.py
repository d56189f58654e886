"""DSIP-COSE against DSIP-JOSE: frame sizes and verifications per second, in one run.

Prints one table:

* raw Ed25519 verify/s — ``cryptography`` over the COSE ``Sig_structure`` (the floor);
* JOSE pipeline verify/s — ``Verifier.verify`` on the text frame, stages 1–14;
* COSE pipeline verify/s — ``Verifier.verify_signed(decode_cose(frame))``, stages 1–14;
* stages 1–3 + payload parse alone, per encoding (what the encodings really differ in);
* the COSE payload check done with ``cbor2.dumps(canonical=True)`` instead of the key-order
  walk + plain re-encode that ``loads_cbor_strict`` uses — the figure behind that choice;
* frame and payload sizes for the same invite.

Every envelope is distinct (own ULID), as on a busy relay. The invite is
``dsip.core.examples.example_invite`` (Opus offer with its SDP).
Usage: ``python bench/cose.py [--n 4000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import cbor2

from dsip.core.cose import _loads, _reject_tag, _walk, decode_cose, loads_cbor_strict, sign_cose
from dsip.core.envelope import ReplayStore, Verifier, decode_jose, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair
from dsip.core.jsonwire import MAX_DEPTH, loads_strict
from dsip.core.jws import encode_frame

NOW = 1_760_000_000


def rates(n: int, fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median operations/s per function; rounds interleaved so noise hits all rows alike."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up round, not counted
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            results[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in results.items()}


def _canonical_check(raw: bytes) -> tuple[Any, bool]:
    """The straightforward alternative to ``loads_cbor_strict``'s fast path: the same decode
    and type walk (without the key-order check), then ``cbor2.dumps(canonical=True)``."""
    value = _loads(raw, max_depth=MAX_DEPTH, tag_hook=_reject_tag)
    saw_float = _walk(value, ordered=False)
    if cbor2.dumps(value, canonical=True) != raw:
        raise AssertionError("not canonical")
    return value, saw_float


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n, rounds = args.n, args.rounds

    alice = KeyPair.generate()
    bob = "did:web:example.com:users:bob"
    payloads = [example_invite(alice.did, bob, now=NOW) for _ in range(n)]
    jose_frames = [encode_frame(sign_envelope(p, alice)) for p in payloads]
    cose_frames = [sign_cose(p, alice) for p in payloads]
    cose_signed = [decode_cose(f) for f in cose_frames]
    jose_payloads = [decode_jose(f).payload_bytes for f in jose_frames]
    cose_payloads = [s.payload_bytes for s in cose_signed]
    pub = alice.public_key

    def raw_verify() -> None:
        for s in cose_signed:
            pub.verify(s.signature, s.signing_input)

    def jose_pipeline() -> None:
        v = Verifier(replay=ReplayStore(capacity=n + 1))
        for f in jose_frames:
            v.verify(f, now=NOW)

    def cose_pipeline() -> None:
        v = Verifier(replay=ReplayStore(capacity=n + 1))
        for f in cose_frames:
            v.verify_signed(decode_cose(f), now=NOW)

    def jose_parse() -> None:
        for f in jose_frames:
            s = decode_jose(f)
            loads_strict(s.payload_bytes)

    def cose_parse() -> None:
        for f in cose_frames:
            s = decode_cose(f)
            loads_cbor_strict(s.payload_bytes)

    def cose_payload_fast() -> None:
        for raw in cose_payloads:
            loads_cbor_strict(raw)

    def cose_payload_canonical() -> None:
        for raw in cose_payloads:
            _canonical_check(raw)

    def json_payload() -> None:
        for raw in jose_payloads:
            loads_strict(raw)

    r = rates(
        n,
        {
            "raw": raw_verify,
            "jose": jose_pipeline,
            "cose": cose_pipeline,
            "jparse": jose_parse,
            "cparse": cose_parse,
            "json": json_payload,
            "cfast": cose_payload_fast,
            "ccanon": cose_payload_canonical,
        },
        rounds,
    )
    per_us = {k: 1e6 / v for k, v in r.items()}
    rows = [
        ("raw Ed25519 verify (cryptography)", r["raw"], "reference"),
        ("JOSE pipeline verify, stages 1-14", r["jose"], f"{r['jose'] / r['raw']:.2f}x raw"),
        ("COSE pipeline verify, stages 1-14", r["cose"], f"{r['cose'] / r['raw']:.2f}x raw"),
        ("JOSE stages 1-3 + payload parse", r["jparse"], f"{per_us['jparse']:.1f} us each"),
        ("COSE stages 1-3 + payload parse", r["cparse"], f"{per_us['cparse']:.1f} us each"),
        ("JSON strict payload parse", r["json"], f"{per_us['json']:.1f} us each"),
        ("CBOR strict payload parse (ours)", r["cfast"], f"{per_us['cfast']:.1f} us each"),
        (
            "  same + canonical=True re-encode",
            r["ccanon"],
            f"{per_us['ccanon'] - per_us['cfast']:+.1f} us vs ours (not used)",
        ),
    ]
    jose_size = len(jose_frames[0].encode())
    cose_size = len(cose_frames[0])
    print(
        f"COSE vs JOSE: invite n={n}, median of {rounds} interleaved rounds, "
        f"every envelope distinct"
    )
    print(f"{'operation':<38} {'ops/s':>10}  note")
    print(f"{'-' * 38} {'-' * 10}  {'-' * 26}")
    for name, value, note in rows:
        print(f"{name:<38} {value:>10,.0f}  {note}")
    print(
        f"\nframe bytes:   JOSE {jose_size:>5}  COSE {cose_size:>5}  "
        f"ratio {cose_size / jose_size:.2f}"
    )
    print(
        f"payload bytes: JSON {len(jose_payloads[0]):>5}  CBOR {len(cose_payloads[0]):>5}  "
        f"ratio {len(cose_payloads[0]) / len(jose_payloads[0]):.2f}"
    )
    print(f"COSE / JOSE pipeline = {r['cose'] / r['jose']:.2f}")


if __name__ == "__main__":
    main()
