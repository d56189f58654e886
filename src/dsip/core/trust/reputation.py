"""The reputation loop (seed §12 step 6, §9): signed call ratings in, ``ReputationScore`` out.

A **rating** is a compact JWS (``typ`` :data:`RATING_TYP`, EdDSA, ``kid`` an
``authentication`` key of the rater) over claims checked by
``reputation-rating.schema.json``: ``{"type": "rating", "rater", "ratee", "session",
"score": 1..5, "iat"}``. The rater must be the signer; rating oneself is refused.

The :class:`ReputationAggregator` keeps **one rating per rater per ratee per period**
(``iat // period``; a second one in the same period is ``rating-duplicate``, nothing
replaced) and computes a score out of 1000 as a weighted mean with a prior:

.. code-block:: text

    value(r)   = (stars - 1) * 250                                  # 0, 250, …, 1000
    weight(r)  = standing(rater) / 1000   for an *established* rater
    fresh pool = every other rater; the pool's total weight is
                 min(FRESH_EACH * n_fresh, FRESH_CAP), shared equally among them
    score      = (PRIOR_WEIGHT * PRIOR + Σ weight·value + pool·mean_fresh)
                 / (PRIOR_WEIGHT + Σ weight + pool)

A rater is **established** when its standing is at least :data:`ESTABLISHED_MIN`. Standing
is either attested (:meth:`ReputationAggregator.attest`: a verified ``ReputationScore``
from an issuer this aggregator trusts, or an operator's bootstrap list) or this
aggregator's own score for the rater computed from *established ratings only* (one hop, so
no circularity) with at least :data:`MIN_BASIS` established weight behind it.

**Bound on fresh DIDs** (tested with 1,000 of them in ``tests/trust/test_reputation.py``):
however many fresh DIDs rate, their pool weighs at most ``FRESH_CAP`` = 1 against at least
``PRIOR_WEIGHT`` = 10 for the prior plus the established weight, so they move a score by
at most ``1000 · FRESH_CAP / (PRIOR_WEIGHT + FRESH_CAP)`` ≈ 90.9, so :data:`FRESH_BOUND` = 91 points
(of 1000) up or down, and by less the more established ratings there are. Nor can a swarm
manufacture an established rater: a DID rated only by fresh DIDs scores at most
``(10·500 + 1·1000)/11`` ≈ 545 < :data:`ESTABLISHED_MIN` = 600, and established standing
via ratings needs :data:`MIN_BASIS` established weight besides.

What this does not stop, documented rather than hidden: established raters colluding
(their weight is real), and a rater rating a counterpart it never talked to (the
``session`` id is not checked against a call record; a deployment that wants that binds
ratings to the callee's signed ``bye``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dsip.core.identity import DocumentSource, KeyPair
from dsip.core.payloads.schema import validate_named
from dsip.core.trust.issuance import IssuanceError, sign_did_jws, verify_did_jws
from dsip.core.trust.vc import CLOCK_SKEW, StatusListSource, verify_credential
from dsip.errors import DsipError

__all__ = [
    "ESTABLISHED_MIN",
    "FRESH_BOUND",
    "FRESH_CAP",
    "FRESH_EACH",
    "MIN_BASIS",
    "PRIOR",
    "PRIOR_WEIGHT",
    "RATING_TYP",
    "Rating",
    "RatingError",
    "ReputationAggregator",
    "sign_rating",
]

RATING_TYP: Final = "dsip-rating+jwt"
SCALE: Final = 1000
PRIOR: Final = 500
PRIOR_WEIGHT: Final = 10.0
FRESH_EACH: Final = 0.05
FRESH_CAP: Final = 1.0
FRESH_BOUND: Final = math.ceil(SCALE * FRESH_CAP / (PRIOR_WEIGHT + FRESH_CAP))  # 91
ESTABLISHED_MIN: Final = 600
MIN_BASIS: Final = 2.0
MAX_RATINGS: Final = 1_000_000


class RatingError(DsipError):
    """A refused rating: ``rating-malformed``, ``rating-signature`` (not signed by the rater),
    ``rating-self`` (rating oneself), ``rating-stale`` (``iat`` outside the clock window),
    ``rating-duplicate`` (already rated this counterpart this period), ``rating-full``."""

    default_code = "rating-malformed"
    default_reason = "x-dsip.rating-refused"


@dataclass(frozen=True)
class Rating:
    rater: str
    ratee: str
    session: str
    stars: int
    iat: int
    period: int

    @property
    def value(self) -> int:
        return (self.stars - 1) * (SCALE // 4)


def sign_rating(
    rater: KeyPair, ratee: str, *, session: str, stars: int, now: int, comment: str | None = None
) -> str:
    """The rater's signed rating of ``ratee`` after ``session``."""
    claims: dict[str, Any] = {
        "type": "rating",
        "rater": rater.did,
        "ratee": ratee,
        "session": session,
        "score": stars,
        "iat": now,
    }
    if comment:
        claims["comment"] = comment
    return sign_did_jws(rater, RATING_TYP, claims)


class ReputationAggregator:
    """Collect ratings and compute scores (see the module docstring for the formula)."""

    def __init__(
        self,
        did: str,
        *,
        period: int = 86_400,
        trusted_issuers: Collection[str] = (),
    ) -> None:
        self.did = did
        self.period = period
        self.trusted_issuers = frozenset(trusted_issuers) | {did}
        self._ratings: dict[tuple[str, str, int], Rating] = {}
        self._by_ratee: dict[str, list[Rating]] = {}
        self._attested: dict[str, tuple[int, int | None]] = {}  # DID → (standing, until)

    def __len__(self) -> int:
        return len(self._ratings)

    # --- input ----------------------------------------------------------------------------

    def attest(self, did: str, standing: int, *, until: int | None = None) -> None:
        """Give ``did`` a standing (0–1000) from outside the ratings — an operator's
        bootstrap (``until`` None: for good) or a verified credential (until it expires
        or the period ends, whichever is first)."""
        self._attested[did] = (max(0, min(SCALE, standing)), until)

    def forget(self, did: str) -> None:
        """Drop an attested standing (its credential turned out revoked or expired)."""
        self._attested.pop(did, None)

    def attest_credential(
        self,
        presented: Mapping[str, Any] | str,
        *,
        now: int,
        documents: DocumentSource | None = None,
        status_lists: StatusListSource | None = None,
        subject: str | None = None,
    ) -> int:
        """Take a rater's standing from its verified ``ReputationScore`` by a trusted issuer
        (this aggregator included; about ``subject`` when given); a credential that does
        not verify changes nothing."""
        vc = verify_credential(
            presented,
            documents=documents,
            now=now,
            trusted_issuers={"ReputationScore": self.trusted_issuers},
            status_lists=status_lists,
            subject=subject,
        )
        subject = vc.subject_id
        score = vc.subject.get("score")
        scale = vc.subject.get("scale", SCALE)
        if vc.type != "ReputationScore" or subject is None or not isinstance(score, int):
            raise RatingError("not a ReputationScore credential")
        standing = score * SCALE // int(scale)
        until = now + self.period
        if vc.valid_until is not None:
            until = min(until, vc.valid_until)
        self.attest(subject, standing, until=until)
        return standing

    def submit(self, token: object, *, now: int, documents: DocumentSource | None = None) -> Rating:
        """Verify and record one rating, or raise :class:`RatingError` and record nothing."""
        rating = self.check(token, now=now, documents=documents)
        self.record(rating)
        return rating

    def check(self, token: object, *, now: int, documents: DocumentSource | None = None) -> Rating:
        """Verify one rating (signature, schema, rater, freshness, not yet counted) without
        recording it; :meth:`record` then counts it."""
        try:
            signer, claims = verify_did_jws(token, RATING_TYP, documents)
        except IssuanceError as exc:
            code = "rating-malformed" if exc.code == "issuance-malformed" else "rating-signature"
            raise RatingError(f"rating: {exc.message}", code=code) from None
        try:
            validate_named("reputation-rating", claims)
        except DsipError as exc:
            raise RatingError(f"rating: {exc.message}") from None
        if claims["rater"] != signer:
            raise RatingError("the rating is not signed by its rater", code="rating-signature")
        if claims["ratee"] == signer:
            raise RatingError("a DID cannot rate itself", code="rating-self")
        iat = claims["iat"]
        if abs(iat - now) > CLOCK_SKEW:
            raise RatingError("rating iat is outside the clock window", code="rating-stale")
        rating = Rating(
            signer, claims["ratee"], claims["session"], claims["score"], iat, iat // self.period
        )
        key = (rating.rater, rating.ratee, rating.period)
        if key in self._ratings:
            raise RatingError(
                "this rater already rated this counterpart in this period", code="rating-duplicate"
            )
        if len(self._ratings) >= MAX_RATINGS:
            raise RatingError("the aggregator is full", code="rating-full", remote=False)
        return rating

    def record(self, rating: Rating) -> None:
        """Count a rating returned by :meth:`check` (refused if counted meanwhile)."""
        key = (rating.rater, rating.ratee, rating.period)
        if key in self._ratings:
            raise RatingError(
                "this rater already rated this counterpart in this period", code="rating-duplicate"
            )
        self._ratings[key] = rating
        self._by_ratee.setdefault(rating.ratee, []).append(rating)

    # --- output ---------------------------------------------------------------------------

    def _attested_at(self, did: str, now: int | None) -> int | None:
        held = self._attested.get(did)
        if held is None:
            return None
        standing, until = held
        return None if until is not None and now is not None and now >= until else standing

    def standing(self, did: str, *, now: int | None = None) -> int | None:
        """``did``'s standing as a rater at ``now``: attested, else its score from
        established raters (only with at least MIN_BASIS established weight behind it)."""
        attested = self._attested_at(did, now)
        if attested is not None:
            return attested
        weight = total = 0.0
        for r in self._by_ratee.get(did, ()):
            w = self._attested_weight(r.rater, now)
            weight += w
            total += w * r.value
        if weight < MIN_BASIS:
            return None
        return round((PRIOR_WEIGHT * PRIOR + total) / (PRIOR_WEIGHT + weight))

    def _attested_weight(self, rater: str, now: int | None) -> float:
        s = self._attested_at(rater, now)
        return s / SCALE if s is not None and s >= ESTABLISHED_MIN else 0.0

    def _weight(self, rater: str, now: int | None) -> float:
        s = self.standing(rater, now=now)
        return s / SCALE if s is not None and s >= ESTABLISHED_MIN else 0.0

    def score(self, did: str, *, now: int | None = None) -> tuple[int, str] | None:
        """``(score out of 1000, basis line)`` at ``now`` (attestations past their end no
        longer weigh), or ``None`` with no ratings at all."""
        ratings = self._by_ratee.get(did)
        if not ratings:
            return None
        weight = total = 0.0
        fresh: list[int] = []
        established = 0
        for r in ratings:
            w = self._weight(r.rater, now)
            if w > 0:
                weight += w
                total += w * r.value
                established += 1
            else:
                fresh.append(r.value)
        pool = min(FRESH_EACH * len(fresh), FRESH_CAP)
        if fresh:
            total += pool * sum(fresh) / len(fresh)
        score = round((PRIOR_WEIGHT * PRIOR + total) / (PRIOR_WEIGHT + weight + pool))
        basis = f"{len(ratings)} ratings, {established} from established raters"
        return score, basis

    def claims(self, did: str, now: int) -> Mapping[str, Any] | None:
        """``ReputationScore`` subject claims for ``did`` (the issuer's ``ClaimSource``)."""
        result = self.score(did, now=now)
        if result is None:
            return None
        score, basis = result
        return {"score": score, "scale": SCALE, "basis": basis}
