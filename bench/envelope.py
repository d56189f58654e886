"""Envelope throughput: the full verification pipeline against raw Ed25519, in one run.

Prints one table:

* raw Ed25519 verify/s — ``cryptography`` (OpenSSL) verifying the same signing input: the
  reference the issue names; and libsodium's raw verify, which the pipeline uses;
* pipeline verify/s — ``Verifier.verify`` on the wire frame: stages 1–14 (size cap, strict
  JSON, header, kid resolution, signature, payload rules, identity binding, replay window,
  duplicate-id store, ULID check, version, JSON Schema, semantics), each envelope distinct;
* joserfc verify/s — the same envelopes through ``joserfc.jws.deserialize_json`` (signature
  only), to justify verifying with ``cryptography`` directly;
* raw Ed25519 sign/s and ``sign_envelope`` sign/s (serialization included).

The invite is realistic: audio+video offer with an SDP, ~1.3 kB on the wire.
Usage: ``python bench/envelope.py [--n 4000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dsip.core.b64 import b64url_encode
from dsip.core.envelope import ReplayStore, Verifier, sign_envelope
from dsip.core.examples import example_invite
from dsip.core.identity import KeyPair
from dsip.core.jws import encode_frame

NOW = 1_760_000_000


def rates(n: int, fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median operations/s per function; rounds are interleaved (raw, pipeline, raw, ...) so
    that a noisy neighbour slows the figure and its reference alike."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up round, not counted (caches, allocator, branch predictors)
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            results[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in results.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n, rounds = args.n, args.rounds

    alice = KeyPair.generate()
    bob = "did:web:example.com:users:bob"
    envs = [sign_envelope(example_invite(alice.did, bob, now=NOW), alice) for _ in range(n)]
    frames = [encode_frame(e) for e in envs]
    frame_bytes = len(frames[0])
    signing_inputs = [f"{e['protected']}.{e['payload']}".encode() for e in envs]
    from dsip.core.b64 import b64url_decode

    sigs = [b64url_decode(e["signature"]) for e in envs]
    pub = alice.public_key

    def raw_verify() -> None:
        for s, m in zip(sigs, signing_inputs, strict=True):
            pub.verify(s, m)

    import nacl.bindings

    raw_pk = pub.public_bytes_raw()

    def sodium_verify() -> None:
        for s, m in zip(sigs, signing_inputs, strict=True):
            nacl.bindings.crypto_sign_open(s + m, raw_pk)

    def pipeline() -> None:
        v = Verifier(replay=ReplayStore(capacity=n + 1))
        for f in frames:
            v.verify(f, now=NOW)

    from joserfc import jws
    from joserfc.jwk import OKPKey

    jwk = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(pub.public_bytes_raw())}
    )

    def joserfc_verify() -> None:
        for e in envs:
            jws.deserialize_json(e, jwk, algorithms=["EdDSA"])

    sk = Ed25519PrivateKey.generate()
    payload = example_invite(alice.did, bob, now=NOW)

    def raw_sign() -> None:
        for m in signing_inputs:
            sk.sign(m)

    def envelope_sign() -> None:
        for _ in range(n):
            sign_envelope(payload, alice)

    r = rates(
        n,
        {
            "raw": raw_verify,
            "sodium": sodium_verify,
            "pipe": pipeline,
            "jose": joserfc_verify,
            "rsign": raw_sign,
            "esign": envelope_sign,
        },
        rounds,
    )
    r_sodium = r["sodium"]
    r_raw, r_pipe, r_jose, r_rsign, r_esign = (
        r[k] for k in ("raw", "pipe", "jose", "rsign", "esign")
    )

    rows = [
        ("raw Ed25519 verify (cryptography)", r_raw, "reference"),
        ("raw Ed25519 verify (libsodium)", r_sodium, f"{r_sodium / r_raw:.2f}x raw verify"),
        ("pipeline verify, stages 1-14", r_pipe, f"{r_pipe / r_raw:.2f}x raw verify"),
        ("joserfc deserialize_json verify", r_jose, f"{r_jose / r_raw:.2f}x raw verify"),
        ("raw Ed25519 sign (cryptography)", r_rsign, "reference"),
        ("sign_envelope (serialize + sign)", r_esign, f"{r_esign / r_rsign:.2f}x raw sign"),
    ]
    print(
        f"envelope benchmark: invite frame {frame_bytes} bytes, n={n}, median of {rounds} interleaved rounds"
    )
    print(f"{'operation':<38} {'ops/s':>10}  ratio")
    print(f"{'-' * 38} {'-' * 10}  {'-' * 22}")
    for name, value, note in rows:
        print(f"{name:<38} {value:>10,.0f}  {note}")
    print(f"\npipeline / raw verify = {r_pipe / r_raw:.2f} (goal >= 0.60)")


if __name__ == "__main__":
    main()
