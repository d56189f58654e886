"""Gated first contact (seed §8 "first-contact policy requiring Reputation VC or
micro-payment/PoW … community signed block/allow lists"; v0.7 §19.2, §19.4).

An ``introduction`` (§19.4) from an unknown identity is admitted by a :class:`FirstContactGate`
when it carries *any one* of the proofs the recipient's policy accepts, each as an element
of the introduction's ``identity.claims``:

* **Reputation**: an ``rcid.v1`` claim (:mod:`dsip.core.trust.rcid`) whose verified
  ``ReputationScore`` credential, from an issuer trusted for reputation, reaches
  ``min_reputation`` — compared on a 0–1000 scale (``score * 1000 // scale``).
* **Proof of work** (hashcash-style): ``{"type": "pow", "alg": "sha256", "difficulty": d,
  "nonce": n}``. SHA-256 over ``dsip-pow/1`` and the introduction's ``id``, ``from``,
  ``to`` and ``issued_at`` (one per line) then the decimal nonce must start with ``d`` zero
  bits. Binding to the id and both parties makes a solution single-use: the id is a
  replay-window-protected ULID, and a solution for one recipient is worthless for another.
  Expected cost ``2**d`` hashes; :func:`measure_pow` times it (``bench/trust.py``).
* **Micro-payment receipt**: ``{"type": "payment", "receipt": "<JWT>"}``, an EdDSA JWT
  (``typ`` ``dsip-payment-receipt+jwt``, claims ``payment-receipt.schema.json``) signed by
  a payment issuer DID the policy trusts, saying ``sub`` (the introducer) paid
  ``amount_msat`` towards ``aud`` (the recipient). Single use: a :class:`ReceiptLedger`
  remembers each spent ``jti`` until the receipt's ``exp``; a replayed receipt is refused.
  A receipt is spent only when it is the proof that admits (reputation and work are
  tried first, so nobody pays twice).

**Community lists**: versioned block/allow lists, signed by their publisher DID with an
``eddsa-jcs-2022`` Data Integrity proof (``community-list.schema.json``). A
:class:`CommunityLists` store accepts a list only if the proof verifies with a key of the
publisher and its version is higher than the one held (no rollback); :meth:`lookup` returns
each :class:`Listing` with the list, version, publisher and the entry's reason, which the
policy engine quotes in its audit line.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from joserfc import jws
from joserfc.errors import JoseError

from dsip.core.b64 import b64url_decode
from dsip.core.identity import DocumentSource, KeyPair, split_did_url
from dsip.core.jsonwire import loads_strict
from dsip.core.payloads.schema import validate_named
from dsip.core.trust.display import did_label
from dsip.core.trust.vc import (
    CredentialError,
    VerifiedCredential,
    assertion_method,
    eddsa_jose,
    okp_jwk,
    sign_data_integrity,
    verify_data_integrity,
)
from dsip.core.ulid import new_ulid
from dsip.errors import DsipError

__all__ = [
    "DEFAULT_POW_DIFFICULTY",
    "PAYMENT_RECEIPT_TYP",
    "CommunityList",
    "CommunityLists",
    "FirstContactConfig",
    "FirstContactError",
    "FirstContactGate",
    "GateResult",
    "Listing",
    "PaymentReceipt",
    "ReceiptLedger",
    "check_pow",
    "issue_payment_receipt",
    "measure_pow",
    "pow_challenge",
    "pow_claim",
    "publish_list",
    "solve_pow",
    "verify_payment_receipt",
]

DEFAULT_POW_DIFFICULTY: Final = (
    20  # 2**20 SHA-256 expected: ~1–3 s of one core here (bench/trust.py)
)
MAX_POW_DIFFICULTY: Final = 40
PAYMENT_RECEIPT_TYP: Final = "dsip-payment-receipt+jwt"
_MAX_RECEIPT = 4096
_ALGS = ["EdDSA"]


class FirstContactError(DsipError):
    """A first-contact proof that does not admit; ``code`` names which and why."""

    default_code = "first-contact-proof"
    default_reason = "policy.first-contact-required"


# --- proof of work ---------------------------------------------------------------------


def pow_challenge(intro_id: str, sender: str, recipient: str, issued_at: int) -> bytes:
    """The bytes a proof of work commits to: the introduction's identity, not its content
    (the proof travels inside the introduction, so it cannot hash itself)."""
    return "\n".join(["dsip-pow/1", intro_id, sender, recipient, str(issued_at), ""]).encode()


def _zero_bits_ok(digest: bytes, difficulty: int) -> bool:
    return int.from_bytes(digest[:8], "big") >> (64 - difficulty) == 0


def solve_pow(challenge: bytes, difficulty: int, *, start: int = 0) -> int:
    """The first nonce ≥ ``start`` meeting ``difficulty`` (expected ``2**difficulty`` tries)."""
    if not 1 <= difficulty <= MAX_POW_DIFFICULTY:
        raise ValueError(f"difficulty must be 1..{MAX_POW_DIFFICULTY}")
    base = hashlib.sha256(challenge)
    nonce = start
    while True:
        h = base.copy()
        h.update(str(nonce).encode())
        if _zero_bits_ok(h.digest(), difficulty):
            return nonce
        nonce += 1


def check_pow(challenge: bytes, nonce: int, difficulty: int) -> bool:
    """One hash: does ``nonce`` meet ``difficulty`` for ``challenge``?"""
    if not 1 <= difficulty <= MAX_POW_DIFFICULTY or not 0 <= nonce < 1 << 53:
        return False
    digest = hashlib.sha256(challenge + str(nonce).encode()).digest()
    return _zero_bits_ok(digest, difficulty)


def pow_claim(
    payload: Mapping[str, Any], difficulty: int = DEFAULT_POW_DIFFICULTY
) -> dict[str, Any]:
    """Solve the proof of work for an unsigned introduction payload; return its claim
    (append it to ``identity.claims`` before signing)."""
    challenge = pow_challenge(
        str(payload["id"]), str(payload["from"]), str(payload["to"]), int(payload["issued_at"])
    )
    nonce = solve_pow(challenge, difficulty)
    return {"type": "pow", "alg": "sha256", "difficulty": difficulty, "nonce": nonce}


def measure_pow(difficulty: int, *, samples: int = 5) -> tuple[float, float]:
    """(mean seconds, mean hashes) to solve ``difficulty`` over ``samples`` fresh challenges
    — the caller's cost; the verifier's is one hash."""
    total_s, total_n = 0.0, 0
    for i in range(samples):
        challenge = pow_challenge(new_ulid(i * 1000), f"did:example:{i}", "did:example:to", i)
        t0 = time.perf_counter()
        total_n += solve_pow(challenge, difficulty) + 1
        total_s += time.perf_counter() - t0
    return total_s / samples, total_n / samples


# --- payment receipts -------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentReceipt:
    issuer: str
    payer: str
    payee: str
    amount_msat: int
    issued_at: int
    expires_at: int
    jti: str


def issue_payment_receipt(
    issuer: KeyPair, *, payer: str, payee: str, amount_msat: int, now: int, ttl: int = 86_400
) -> str:
    """A payment issuer's signed receipt: ``payer`` paid ``amount_msat`` to reach ``payee``."""
    claims = {
        "iss": issuer.did,
        "sub": payer,
        "aud": payee,
        "iat": now,
        "exp": now + ttl,
        "jti": new_ulid(now * 1000),
        "amount_msat": amount_msat,
    }
    validate_named("payment-receipt", claims)
    payload = json.dumps(claims, separators=(",", ":")).encode()
    header = {"alg": "EdDSA", "kid": issuer.kid, "typ": PAYMENT_RECEIPT_TYP}
    with eddsa_jose():
        return jws.serialize_compact(header, payload, okp_jwk(issuer), algorithms=_ALGS)


def verify_payment_receipt(
    token: object,
    *,
    payer: str,
    payee: str,
    now: int,
    documents: DocumentSource | None,
    trusted_issuers: Collection[str],
    min_amount_msat: int = 1,
) -> PaymentReceipt:
    """Verify a receipt's issuer, signature, parties, amount and time (not its spending:
    that is the :class:`ReceiptLedger`'s)."""
    if not isinstance(token, str) or len(token) > _MAX_RECEIPT or token.count(".") != 2:
        raise FirstContactError("payment receipt is not a compact JWS", code="receipt-invalid")
    head, body, _sig = token.split(".")
    try:
        header, _ = loads_strict(b64url_decode(head, code="receipt-invalid"))
        claims, saw_float = loads_strict(b64url_decode(body, code="receipt-invalid"))
        validate_named("payment-receipt", claims)
    except DsipError:
        raise FirstContactError("payment receipt is malformed", code="receipt-invalid") from None
    if not isinstance(header, dict) or saw_float:
        raise FirstContactError("payment receipt header is malformed", code="receipt-invalid")
    kid = header.get("kid")
    if header.get("alg") != "EdDSA" or header.get("typ") != PAYMENT_RECEIPT_TYP:
        raise FirstContactError(
            "payment receipt must be an EdDSA receipt JWT", code="receipt-invalid"
        )
    if not isinstance(kid, str) or split_did_url(kid)[0] != claims["iss"]:
        raise FirstContactError("receipt kid is not a key of its issuer", code="receipt-invalid")
    if claims["iss"] not in trusted_issuers:
        raise FirstContactError(
            f"{claims['iss'][:80]} is not a trusted payment issuer", code="receipt-issuer"
        )
    try:
        method = assertion_method(kid, documents)
        with eddsa_jose():
            jws.deserialize_compact(token, okp_jwk(method), algorithms=_ALGS)
    except (CredentialError, JoseError, ValueError):
        raise FirstContactError(
            "payment receipt signature does not verify", code="receipt-signature"
        ) from None
    if claims["sub"] != payer or claims["aud"] != payee:
        raise FirstContactError("receipt is for other parties", code="receipt-parties")
    if not claims["iat"] - 300 <= now < claims["exp"]:
        raise FirstContactError(
            "payment receipt is expired or not yet valid", code="receipt-expired"
        )
    if claims["amount_msat"] < min_amount_msat:
        raise FirstContactError(
            f"receipt pays {claims['amount_msat']} msat, {min_amount_msat} required",
            code="receipt-amount",
        )
    return PaymentReceipt(
        claims["iss"],
        claims["sub"],
        claims["aud"],
        claims["amount_msat"],
        claims["iat"],
        claims["exp"],
        claims["jti"],
    )


class ReceiptLedger:
    """Spent receipt ids, each kept until its receipt expires (then it cannot verify
    anyway). Full of live ids, it refuses new ones rather than forget one early."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._spent: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._spent)

    def _purge(self, now: int) -> None:
        while self._heap and self._heap[0][0] <= now:
            exp, jti = heapq.heappop(self._heap)
            if self._spent.get(jti) == exp:
                del self._spent[jti]

    def is_spent(self, receipt: PaymentReceipt, now: int) -> bool:
        self._purge(now)
        return receipt.jti in self._spent

    def spend(self, receipt: PaymentReceipt, now: int) -> None:
        self._purge(now)
        if receipt.jti in self._spent:
            raise FirstContactError("payment receipt was already used", code="receipt-replayed")
        if len(self._spent) >= self.capacity:
            raise FirstContactError(
                "receipt ledger is full; retry later",
                code="receipt-ledger-full",
                reason="policy.rate-limited",
            )
        self._spent[receipt.jti] = receipt.expires_at
        heapq.heappush(self._heap, (receipt.expires_at, receipt.jti))


# --- the gate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstContactConfig:
    """Which proofs admit an introduction. A mechanism left unset is not offered."""

    min_reputation: int | None = None  # on the 0–1000 scale
    reputation_issuers: frozenset[str] = frozenset()
    pow_difficulty: int | None = None
    payment_issuers: frozenset[str] = frozenset()
    min_payment_msat: int = 1

    @property
    def mechanisms(self) -> tuple[str, ...]:
        out = []
        if self.min_reputation is not None:
            out.append("reputation")
        if self.pow_difficulty is not None:
            out.append("pow")
        if self.payment_issuers:
            out.append("payment")
        return tuple(out)


@dataclass(frozen=True)
class GateResult:
    """``via`` is the proof that admitted (``None``: refused); ``proofs`` every proof that
    held; ``failures`` (mechanism, code, why) for each one offered that did not."""

    via: str | None
    proofs: frozenset[str]
    failures: tuple[tuple[str, str, str], ...]
    receipt: PaymentReceipt | None = None

    @property
    def admitted(self) -> bool:
        return self.via is not None

    def explain(self) -> str:
        if self.via is not None:
            return f"first contact admitted by {self.via}"
        if not self.failures:
            return "no first-contact proof is accepted here"
        return "no first-contact proof held: " + "; ".join(
            f"{m}: {why}" for m, _code, why in self.failures
        )


def reputation_of(
    credentials: Sequence[VerifiedCredential], issuers: Collection[str]
) -> int | None:
    """The best verified ``ReputationScore`` from ``issuers`` on the 0–1000 scale."""
    scores = [
        int(v.subject["score"]) * 1000 // int(v.subject.get("scale", 1000))
        for v in credentials
        if v.type == "ReputationScore" and v.issuer in issuers
    ]
    return max(scores) if scores else None


def _claims(payload: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    identity = payload.get("identity")
    claims = identity.get("claims") if isinstance(identity, Mapping) else None
    if not isinstance(claims, list):
        return []
    return [c for c in claims if isinstance(c, Mapping) and c.get("type") == kind]


class FirstContactGate:
    """Decides whether an introduction carries an accepted first-contact proof (sans-I/O)."""

    def __init__(
        self,
        config: FirstContactConfig,
        *,
        documents: DocumentSource | None = None,
        ledger: ReceiptLedger | None = None,
    ) -> None:
        self.config = config
        self.documents = documents
        self.ledger = ledger if ledger is not None else ReceiptLedger()

    def evaluate(
        self,
        payload: Mapping[str, Any],
        identity: str,
        *,
        now: int,
        credentials: Sequence[VerifiedCredential] = (),
        spend: bool = True,
        proven_reputation: int | None = None,
    ) -> GateResult:
        """Try reputation, then work, then payment. ``identity`` is the verified introducer;
        ``credentials`` its already-verified credentials (from :func:`rcid.verify_rcid`);
        ``proven_reputation`` the minimum a verified predicate proof established (the score
        itself undisclosed). With ``spend`` false a receipt is checked but not consumed."""
        cfg = self.config
        proofs: set[str] = set()
        failures: list[tuple[str, str, str]] = []
        receipt = None
        if cfg.min_reputation is not None:
            score = reputation_of(credentials, cfg.reputation_issuers)
            if proven_reputation is not None and proven_reputation >= cfg.min_reputation:
                proofs.add("reputation")  # proven ≥ the threshold without the score
            elif score is None:
                failures.append(
                    ("reputation", "reputation-missing", "no trusted reputation credential")
                )
            elif score < cfg.min_reputation:
                failures.append(
                    ("reputation", "reputation-too-low", f"score {score} < {cfg.min_reputation}")
                )
            else:
                proofs.add("reputation")
        if cfg.pow_difficulty is not None:
            code, why = self._check_pow(payload, cfg.pow_difficulty)
            if code is None:
                proofs.add("pow")
            else:
                failures.append(("pow", code, why))
        if cfg.payment_issuers:
            try:
                receipt = self._check_payment(payload, identity, now)
                proofs.add("payment")
            except FirstContactError as exc:
                failures.append(("payment", exc.code, exc.message))
        via = next((m for m in ("reputation", "pow", "payment") if m in proofs), None)
        if via == "payment" and receipt is not None and spend:
            try:
                self.ledger.spend(receipt, now)
            except FirstContactError as exc:
                proofs.discard("payment")
                failures.append(("payment", exc.code, exc.message))
                via = None
        return GateResult(via, frozenset(proofs), tuple(failures), receipt)

    def _check_pow(self, payload: Mapping[str, Any], difficulty: int) -> tuple[str | None, str]:
        claims = _claims(payload, "pow")
        if not claims:
            return "pow-missing", "no proof of work"
        claim = claims[0]
        claimed, nonce = claim.get("difficulty"), claim.get("nonce")
        if claim.get("alg") != "sha256" or type(claimed) is not int or type(nonce) is not int:
            return "pow-invalid", "malformed proof of work"
        if claimed < difficulty:
            return "pow-too-easy", f"difficulty {claimed} < {difficulty}"
        try:
            challenge = pow_challenge(
                str(payload["id"]),
                str(payload["from"]),
                str(payload["to"]),
                int(payload["issued_at"]),
            )
        except (KeyError, TypeError, ValueError):
            return "pow-invalid", "introduction lacks the fields the work commits to"
        if not check_pow(challenge, nonce, claimed):
            return "pow-invalid", "proof of work does not hold for this introduction"
        return None, "ok"

    def _check_payment(self, payload: Mapping[str, Any], identity: str, now: int) -> PaymentReceipt:
        claims = _claims(payload, "payment")
        if not claims:
            raise FirstContactError("no payment receipt", code="receipt-missing")
        to = payload.get("to")
        receipt = verify_payment_receipt(
            claims[0].get("receipt"),
            payer=identity,
            payee=str(to),
            now=now,
            documents=self.documents,
            trusted_issuers=self.config.payment_issuers,
            min_amount_msat=self.config.min_payment_msat,
        )
        if self.ledger.is_spent(receipt, now):
            raise FirstContactError("payment receipt was already used", code="receipt-replayed")
        return receipt


# --- community lists ---------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One caller found on one list: the audit record of why a policy blocked (or allowed)."""

    kind: str  # "block" | "allow"
    list_id: str
    publisher: str
    version: int
    did: str
    reason: str

    def explain(self) -> str:
        what = "blocked" if self.kind == "block" else "allowed"
        why = f": {self.reason}" if self.reason else ""
        return (
            f"{what} by list '{self.list_id}' v{self.version} "
            f"published by {did_label(self.publisher)}{why}"
        )


@dataclass(frozen=True)
class CommunityList:
    id: str
    publisher: str
    version: int
    kind: str
    issued_at: int
    expires_at: int
    entries: Mapping[str, str] = field(repr=False)  # DID → reason


def publish_list(
    publisher: KeyPair,
    list_id: str,
    kind: str,
    entries: Sequence[Mapping[str, Any]],
    *,
    version: int,
    now: int,
    ttl: int = 7 * 86_400,
) -> dict[str, Any]:
    """A signed community list (publisher = ``publisher.did``)."""
    document: dict[str, Any] = {
        "type": "dsip-community-list",
        "id": list_id,
        "publisher": publisher.did,
        "version": version,
        "kind": kind,
        "issued_at": now,
        "expires_at": now + ttl,
        "entries": [dict(e) for e in entries],
    }
    signed = sign_data_integrity(document, publisher, created=now)
    validate_named("community-list", signed)
    return signed


class CommunityLists:
    """Verified community lists by (publisher, id), newest version only."""

    def __init__(self, documents: DocumentSource | None = None) -> None:
        self.documents = documents
        self._lists: dict[tuple[str, str], CommunityList] = {}

    def __len__(self) -> int:
        return len(self._lists)

    def get(self, publisher: str, list_id: str) -> CommunityList | None:
        return self._lists.get((publisher, list_id))

    def add(self, document: Mapping[str, Any], *, now: int) -> CommunityList:
        """Verify and hold ``document``; raise ``FirstContactError`` (``list-*``) if it is
        malformed, not signed by its publisher, expired, or not newer than the held one."""
        try:
            validate_named("community-list", dict(document))
        except DsipError as exc:
            raise FirstContactError(f"community list: {exc.message}", code="list-invalid") from None
        try:
            kid = verify_data_integrity(document, documents=self.documents, now=now)
        except CredentialError as exc:
            raise FirstContactError(
                f"community list proof: {exc.message}", code="list-signature"
            ) from None
        if split_did_url(kid)[0] != document["publisher"]:
            raise FirstContactError(
                "community list is not signed by its publisher", code="list-signature"
            )
        if document["expires_at"] <= now:
            raise FirstContactError("community list has expired", code="list-expired")
        key = (document["publisher"], document["id"])
        held = self._lists.get(key)
        if held is not None and document["version"] <= held.version:
            raise FirstContactError(
                f"community list version {document['version']} is not newer than v{held.version}",
                code="list-rollback",
            )
        entries = {e["did"]: str(e.get("reason", "")) for e in document["entries"]}
        lst = CommunityList(
            id=document["id"],
            publisher=document["publisher"],
            version=document["version"],
            kind=document["kind"],
            issued_at=document["issued_at"],
            expires_at=document["expires_at"],
            entries=entries,
        )
        self._lists[key] = lst
        return lst

    def lookup(
        self, did: str, subscriptions: Sequence[tuple[str, str]], *, now: int
    ) -> tuple[Listing, ...]:
        """Every live subscribed list naming ``did``, in subscription order."""
        out = []
        for publisher, list_id in subscriptions:
            lst = self._lists.get((publisher, list_id))
            if lst is None or lst.expires_at <= now or did not in lst.entries:
                continue
            out.append(Listing(lst.kind, lst.id, lst.publisher, lst.version, did, lst.entries[did]))
        return tuple(out)
