"""Trust throughput: credential verification per proof type, policy decisions, PoW cost.

Prints one table:

* raw Ed25519 verify/s (libsodium, what every proof ends in) — the reference;
* ``verify_credential`` /s for a ``DisplayNameCredential`` secured as ``eddsa-jcs-2022``
  (two JCS canonicalizations + two SHA-256 + verify) and as ``vc+jwt`` (joserfc), each
  with schema, issuer allowlist, subject and validity checks; and with a Bitstring Status
  List check (the status list credential is verified too, and its 16 KiB list inflated);
* ``TrustPolicy.decide`` /s on facts that run through every rule of a five-rule policy;
* the proof-of-work cost at the default difficulty (mean seconds and hashes to solve;
  verifying is one hash);
* a second table, per operation in milliseconds against the ``eddsa-jcs-2022`` VC verify of
  the first (the reference): an SD-JWT VC presentation created (one claim of two
  disclosed, key-bound) and verified; an AnonCreds "score ≥ 600" predicate proof created
  and verified; a signed rating accepted by the reputation aggregator.

Usage: ``python bench/trust.py [--n 2000] [--rounds 5] [--pow-samples 5] [--zk 20]``.
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
    ap.add_argument("--zk", type=int, default=20, help="predicate proofs per round")
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
    print_private_proofs(args.zk, rounds, issuer, docs, 1000 / r["VC eddsa-jcs-2022"])
    seconds, hashes = measure_pow(DEFAULT_POW_DIFFICULTY, samples=args.pow_samples)
    print(
        f"\nproof of work, difficulty {DEFAULT_POW_DIFFICULTY} (expected 2^{DEFAULT_POW_DIFFICULTY}"
        f" = {2**DEFAULT_POW_DIFFICULTY:,} hashes): mean {seconds:.2f} s, {hashes:,.0f} hashes"
        f" over {args.pow_samples} solves; verifying costs one hash"
    )


def print_private_proofs(
    n: int, rounds: int, issuer: KeyPair, docs: StaticDocuments, reference_ms: float
) -> None:
    """Milliseconds per SD-JWT VC, AnonCreds predicate and rating operation."""
    from dsip.core.trust.disclosure import issue_sd_jwt_vc, present_sd_jwt_vc, verify_sd_jwt_vc
    from dsip.core.trust.predicates import (
        ScoreHolder,
        ScoreIssuer,
        score_request,
        verify_definition,
        verify_score_proof,
    )
    from dsip.core.trust.reputation import ReputationAggregator, sign_rating

    holder = KeyPair.generate()
    role = {"id": holder.did, "role": "support", "organization": "Acme Bank"}
    issued = issue_sd_jwt_vc(issuer, "RoleCredential", role, holder=holder, now=NOW)
    audience, nonce = "did:web:callee.example", "n-1"

    def present() -> str:
        return present_sd_jwt_vc(
            issued, ["role"], holder=holder, audience=audience, nonce=nonce, now=NOW
        )

    shown = present()
    trusted = {"RoleCredential": [ISSUER]}

    def verify_sd() -> object:
        return verify_sd_jwt_vc(
            shown, documents=docs, now=NOW, audience=audience, nonce=nonce, trusted_issuers=trusted
        )

    t0 = time.perf_counter()
    zk_issuer = ScoreIssuer(issuer)
    keygen_s = time.perf_counter() - t0
    definition = verify_definition(zk_issuer.publish(now=NOW), documents=docs, trusted=[ISSUER])
    zk_holder = ScoreHolder(holder.did)
    offer = zk_issuer.offer()
    req = zk_holder.request(offer, definition)
    zk_holder.store(zk_issuer.issue(offer, req, subject=holder.did, score=812), definition)
    request = score_request(600, nonce="1234567890", issuer_cred_def=definition.cred_def_id)
    proof = zk_holder.prove(request, definition)

    raters = [KeyPair.generate() for _ in range(n * (rounds + 1))]
    ratings = iter([sign_rating(k, holder.did, session="s", stars=4, now=NOW) for k in raters])
    agg = ReputationAggregator(ISSUER)

    fns: dict[str, Callable[[], object]] = {
        "SD-JWT VC present (1 of 2, key-bound)": present,
        "SD-JWT VC verify": verify_sd,
        "predicate proof create (score ≥ 600)": lambda: zk_holder.prove(request, definition),
        "predicate proof verify": lambda: verify_score_proof(
            proof, request, definition, subject=holder.did
        ),
        "rating accepted (verify + record)": lambda: agg.submit(next(ratings), now=NOW),
    }
    per_op: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            per_op[name].append((time.perf_counter() - t0) * 1000 / n)
    print(f"\nprivate proofs: n={n} per round, median of {rounds} rounds\n")
    print(f"{'operation':<40} {'ms/op':>9}  ratio")
    print(f"{'-' * 40} {'-' * 9}  {'-' * 30}")
    print(f"{'VC eddsa-jcs-2022 verify':<40} {reference_ms:>9.3f}  reference")
    for name, values in per_op.items():
        ms = statistics.median(values)
        print(f"{name:<40} {ms:>9.3f}  {ms / reference_ms:,.1f}× the VC verify")
    print(f"{'AnonCreds CL key generation (once)':<40} {keygen_s * 1000:>9.0f}  per issuer key")


if __name__ == "__main__":
    main()
