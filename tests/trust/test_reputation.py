"""The reputation loop's aggregation: weights, one rating per rater per period, and the
documented bound on what any number of fresh DIDs can do to a score."""

from __future__ import annotations

import pytest

from dsip.core.identity import KeyPair
from dsip.core.trust.reputation import (
    ESTABLISHED_MIN,
    FRESH_BOUND,
    RatingError,
    ReputationAggregator,
    sign_rating,
)
from dsip.core.trust.vc import CredentialError, issue_credential
from tests.trust.trustfix import DAY, NOW, TRUSTGRAPH, World, seed_key

AGG = "did:web:reputation.example"
TARGET = seed_key("target")


def _established(agg: ReputationAggregator, n: int, stars: int, standing: int = 1000) -> None:
    for i in range(n):
        rater = seed_key(f"established-{i}")
        agg.attest(rater.did, standing)
        agg.submit(sign_rating(rater, TARGET.did, session=f"s{i}", stars=stars, now=NOW), now=NOW)


def _swarm(agg: ReputationAggregator, n: int, stars: int, ratee: str = TARGET.did) -> None:
    for _ in range(n):
        agg.submit(
            sign_rating(KeyPair.generate(), ratee, session="sybil", stars=stars, now=NOW), now=NOW
        )


def test_weighted_by_rater_standing() -> None:
    agg = ReputationAggregator(AGG)
    good, meh, low = seed_key("good"), seed_key("meh"), seed_key("low")
    agg.attest(good.did, 1000)
    agg.attest(meh.did, 600)
    agg.attest(low.did, 100)  # below ESTABLISHED_MIN: counts as fresh
    for rater, stars in ((good, 5), (meh, 1), (low, 1)):
        agg.submit(sign_rating(rater, TARGET.did, session="s", stars=stars, now=NOW), now=NOW)
    # (10·500 + 1·1000 + 0.6·0 + 0.05·0) / (10 + 1 + 0.6 + 0.05) = 6000 / 11.65 = 515.02…
    assert agg.score(TARGET.did) == (515, "3 ratings, 2 from established raters")
    assert agg.claims(TARGET.did, NOW) == {
        "score": 515,
        "scale": 1000,
        "basis": "3 ratings, 2 from established raters",
    }
    assert agg.score(seed_key("nobody").did) is None


@pytest.mark.parametrize(("stars", "expected"), [(5, 609), (1, 547)])
def test_a_thousand_fresh_dids_move_a_score_by_at_most_the_bound(stars: int, expected: int) -> None:
    agg = ReputationAggregator(AGG)
    _established(agg, 5, stars=4)
    # (10·500 + 5·750) / 15 = 583.33…
    base = agg.score(TARGET.did)
    assert base is not None
    assert base[0] == 583
    _swarm(agg, 1000, stars)
    after = agg.score(TARGET.did)
    assert after is not None
    # the pool weighs 1: (8750 + 1·1000) / 16 = 609.4; (8750 + 0) / 16 = 546.9
    assert after[0] == expected
    assert abs(after[0] - base[0]) <= FRESH_BOUND


@pytest.mark.parametrize(("stars", "expected"), [(5, 545), (1, 455)])
def test_swarm_alone_stays_within_the_bound_and_earns_no_standing(
    stars: int, expected: int
) -> None:
    agg = ReputationAggregator(AGG)
    _swarm(agg, 1000, stars)
    score = agg.score(TARGET.did)
    assert score is not None
    # (10·500 + 1·1000) / 11 = 545.5, (10·500) / 11 = 454.5: the worst case of the bound
    assert score[0] == expected
    assert abs(score[0] - 500) <= FRESH_BOUND
    # A DID praised by the whole swarm is still not an established rater.
    assert agg.standing(TARGET.did) is None
    assert FRESH_BOUND == 91


def test_standing_earned_from_established_raters_gives_weight() -> None:
    agg = ReputationAggregator(AGG)
    _established(agg, 2, stars=5)
    # (5000 + 2000) / 12 = 583 < 600: two endorsements are not enough
    assert agg.standing(TARGET.did) == 583
    _established_more = seed_key("established-2")
    agg.attest(_established_more.did, 1000)
    agg.submit(sign_rating(_established_more, TARGET.did, session="x", stars=5, now=NOW), now=NOW)
    standing = agg.standing(TARGET.did)
    assert standing == 615  # (5000 + 3000) / 13
    assert standing >= ESTABLISHED_MIN
    other = seed_key("other")
    agg.submit(sign_rating(TARGET, other.did, session="y", stars=1, now=NOW), now=NOW)
    # TARGET now weighs 0.615: (5000 + 0) / 10.615 = 471.0
    assert agg.score(other.did) == (471, "1 ratings, 1 from established raters")


def test_one_rating_per_rater_per_counterpart_per_period() -> None:
    agg = ReputationAggregator(AGG, period=3600)
    rater = seed_key("rater")
    agg.submit(sign_rating(rater, TARGET.did, session="a", stars=5, now=NOW), now=NOW)
    with pytest.raises(RatingError) as err:
        agg.submit(sign_rating(rater, TARGET.did, session="b", stars=1, now=NOW + 60), now=NOW + 60)
    assert err.value.code == "rating-duplicate"
    assert len(agg) == 1
    later = NOW + 3600
    agg.submit(sign_rating(rater, TARGET.did, session="c", stars=1, now=later), now=later)
    agg.submit(sign_rating(rater, seed_key("x").did, session="d", stars=1, now=NOW), now=NOW)
    assert len(agg) == 3


def test_hostile_ratings_are_refused_and_recorded_nowhere() -> None:
    agg = ReputationAggregator(AGG)
    rater, mallory = seed_key("rater"), seed_key("mallory")
    good = sign_rating(rater, TARGET.did, session="s", stars=5, now=NOW)
    head, body, sig = good.split(".")
    other_body = sign_rating(rater, TARGET.did, session="s", stars=1, now=NOW).split(".")[1]
    cases = {
        "rating-malformed": ["", "a.b", 42, "x" * 5000, f"{head}.!!.{sig}"],
        "rating-signature": [
            f"{head}.{other_body}.{sig}",  # tampered claims
            f"{head}.{body}.",  # unsigned
            # signed by mallory but claims rater
            ".".join(
                [
                    *sign_rating(mallory, TARGET.did, session="s", stars=1, now=NOW).split(".")[:1],
                    body,
                    sig,
                ]
            ),
        ],
        "rating-self": [sign_rating(TARGET, TARGET.did, session="s", stars=5, now=NOW)],
        "rating-stale": [sign_rating(rater, TARGET.did, session="s", stars=5, now=NOW - 3600)],
    }
    for code, tokens in cases.items():
        for token in tokens:
            with pytest.raises(RatingError) as err:
                agg.submit(token, now=NOW)
            assert err.value.code == code, token
    # claims outside the schema: 6 stars, a float, an extra member
    from dsip.core.trust.issuance import sign_did_jws
    from dsip.core.trust.reputation import RATING_TYP

    base = {"type": "rating", "rater": rater.did, "ratee": TARGET.did, "session": "s", "iat": NOW}
    for claims in ({**base, "score": 6}, {**base, "score": 4.5}, {**base, "score": 3, "x": 1}):
        with pytest.raises(RatingError) as err:
            agg.submit(sign_did_jws(rater, RATING_TYP, claims), now=NOW)
        assert err.value.code == "rating-malformed"
    # validly signed by mallory, but naming another rater
    with pytest.raises(RatingError) as err:
        agg.submit(sign_did_jws(mallory, RATING_TYP, {**base, "score": 1}), now=NOW)
    assert err.value.code == "rating-signature"
    assert len(agg) == 0


def test_standing_from_a_verified_reputation_credential() -> None:
    world = World()
    agg = ReputationAggregator(AGG, trusted_issuers=[TRUSTGRAPH])
    vc = issue_credential(
        world.trustgraph,
        "ReputationScore",
        {"id": world.caller.did, "score": 80, "scale": 100},
        now=NOW,
    )
    assert agg.attest_credential(vc, now=NOW, documents=world.documents) == 800
    assert agg.standing(world.caller.did) == 800
    untrusted = issue_credential(
        world.voice, "ReputationScore", {"id": world.mallory.did, "score": 999}, now=NOW
    )
    with pytest.raises(CredentialError) as err:
        agg.attest_credential(untrusted, now=NOW, documents=world.documents)
    assert err.value.code == "credential-issuer"
    assert agg.standing(world.mallory.did) is None


def test_attested_standing_lapses_with_its_credential() -> None:
    world = World()
    agg = ReputationAggregator(AGG, period=DAY, trusted_issuers=[TRUSTGRAPH])
    vc = issue_credential(
        world.trustgraph,
        "ReputationScore",
        {"id": world.caller.did, "score": 900},
        now=NOW,
        valid_until=NOW + 3600,
    )
    agg.attest_credential(vc, now=NOW, documents=world.documents)
    agg.submit(sign_rating(world.caller, TARGET.did, session="s", stars=5, now=NOW), now=NOW)
    # (5000 + 0.9·1000) / 10.9 = 541.3 while the credential is valid …
    assert agg.score(TARGET.did, now=NOW + 60) == (541, "1 ratings, 1 from established raters")
    # … and the rater is fresh again once it has expired: (5000 + 0.05·1000) / 10.05 = 502.5
    assert agg.score(TARGET.did, now=NOW + 3600) == (502, "1 ratings, 0 from established raters")
    agg.forget(world.caller.did)
    assert agg.standing(world.caller.did, now=NOW) is None
