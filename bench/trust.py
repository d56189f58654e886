"""Trust throughput: credential verification per proof type, policy decisions, PoW cost.

Prints one table:

* raw Ed25519 verify/s (libsodium, what every proof ends in) — the reference;
* ``verify_credential`` /s for a ``DisplayNameCredential`` secured as ``eddsa-jcs-2022``
  (two JCS canonicalizations + two SHA-256 + verify) and as ``vc+jwt`` (joserfc), each
  with schema, issuer allowlist, subject and validity checks; and with a Bitstring Status
  List check (the status list credential is verified too, and its 16 KiB list inflated);
* ``TrustPolicy.decide`` /s on facts that run through every rule of a five-rule policy;
* the proof-of-work cost at the default difficulty (mean seconds and hashes to solve;
  verifying is one hash).

Usage: ``python bench/trust.py [--n 2000] [--rounds 5] [--pow-samples 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from dsip.core.identity import KeyPair, StaticDocuments, did_web_document
from dsip.core.trust.first_contact import DEFAULT_POW_DIFFICULTY, measure_pow
from dsip.core.trust.policy import CallerFacts, TrustPolicy
from dsip.core.trust.vc import (
    DATA_INTEGRITY,
    VC_JWT,
    BitstringStatusList,
    issue_credential,
    issue_status_list_credential,
    status_entry,
    verify_credential,
)

NOW = 1_760_000_000
ISSUER = "did:web:voice.net"
LIST_URL = "https://voice.net/status/1"
POLICY = """
version = 1
scope = "user"
[defaults]
action = "ring"
[issuers]
ReputationScore = ["did:web:trustgraph.org"]
RoleCredential = ["did:web:acme.example"]
[[rules]]
id = "blocked-callers"
when = { callers = ["did:key:z6MkBlocked"] }
action = "reject"
reason = "user:blocked"
[[rules]]
id = "support"
when = { roles = ["Support"] }
action = "ring"
[[rules]]
id = "night"
when = { time = { from = "22:00", to = "07:00" } }
action = "voicemail"
[[rules]]
id = "web-only"
when = { methods = ["web"], known_contact = false }
action = "silent"
[[rules]]
id = "low-reputation"
when = { reputation_below = 500, known_contact = false }
action = "reject"
reason = "policy:reputation-too-low"
"""


def rates(n: int, fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median operations/s per function over interleaved rounds (after one warm-up)."""
    results: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            results[name].append(n / (time.perf_counter() - t0))
    return {name: statistics.median(r) for name, r in results.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="operations per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pow-samples", type=int, default=5)
    args = ap.parse_args()
    n, rounds = args.n, args.rounds

    issuer = KeyPair.from_seed(b"\x01" * 32, f"{ISSUER}#key-1")
    docs = StaticDocuments(
        {ISSUER: did_web_document(ISSUER, [("key-1", issuer.public_key_multibase)])}
    )
    caller = KeyPair.generate()
    trusted = {"DisplayNameCredential": [ISSUER]}
    subject = {"id": caller.did, "displayName": "James Ferris"}
    creds: dict[str, Any] = {
        proof: issue_credential(issuer, "DisplayNameCredential", subject, now=NOW, proof=proof)
        for proof in (DATA_INTEGRITY, VC_JWT)
    }
    with_status = issue_credential(
        issuer, "DisplayNameCredential", subject, now=NOW, status=status_entry(LIST_URL, 7)
    )
    status_vc = issue_status_list_credential(issuer, LIST_URL, BitstringStatusList(), now=NOW)
    source = {LIST_URL: status_vc}.get
    signing_input = b"x" * 64
    signature = issuer.sign(signing_input)
    method = docs(ISSUER)
    assert method is not None
    vm = method.methods[issuer.kid]

    def loop(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(n):
                fn()

        return run

    def verify(cred: Any, **kw: Any) -> object:
        return verify_credential(
            cred, documents=docs, now=NOW, trusted_issuers=trusted, subject=caller.did, **kw
        )

    policy = TrustPolicy.from_toml(POLICY)
    facts = CallerFacts(caller=caller.did, message="invite", now=NOW + 12 * 3600)
    assert policy.decide(facts).rule == "low-reputation"  # every rule is tried on the way

    fns = {
        "raw Ed25519 verify (libsodium)": loop(lambda: vm.verify(signature, signing_input)),
        "VC eddsa-jcs-2022": loop(lambda: verify(creds[DATA_INTEGRITY])),
        "VC vc+jwt": loop(lambda: verify(creds[VC_JWT])),
        "VC eddsa-jcs-2022 + status list": loop(lambda: verify(with_status, status_lists=source)),
        "policy decision (5 rules)": loop(lambda: policy.decide(facts)),
    }
    r = rates(n, fns, rounds)
    raw = r["raw Ed25519 verify (libsodium)"]
    print(f"trust bench: n={n} per round, median of {rounds} rounds\n")
    print(f"{'operation':<36} {'ops/s':>10}  ratio")
    print(f"{'-' * 36} {'-' * 10}  {'-' * 24}")
    for name, value in r.items():
        note = "reference" if value is raw else f"{value / raw:.2f} of raw verify"
        print(f"{name:<36} {value:>10,.0f}  {note}")
    seconds, hashes = measure_pow(DEFAULT_POW_DIFFICULTY, samples=args.pow_samples)
    print(
        f"\nproof of work, difficulty {DEFAULT_POW_DIFFICULTY} (expected 2^{DEFAULT_POW_DIFFICULTY}"
        f" = {2**DEFAULT_POW_DIFFICULTY:,} hashes): mean {seconds:.2f} s, {hashes:,.0f} hashes"
        f" over {args.pow_samples} solves; verifying costs one hash"
    )


if __name__ == "__main__":
    main()
