"""The sandbox-against-baseline tests (`sandboxd.core.compare`) against values worked out by
hand or printed in textbooks, and the verdict rules on constructed samples."""

from __future__ import annotations

import gc
import math
import random
from collections import Counter

import pytest

from sandboxd.core.compare import (
    Criteria,
    Sample,
    binomial_greater,
    error_rate,
    fisher_greater,
    latency,
    mann_whitney_greater,
    p99,
    percentile,
    worst,
)


def test_fisher_matches_the_tea_tasting_table() -> None:
    """Fisher's lady tasting tea, 3 of 4 cups right: P = (16 + 1) / 70."""
    assert fisher_greater(3, 4, 1, 4) == pytest.approx(17 / 70, rel=1e-12)


def test_fisher_matches_the_hypergeometric_sum_worked_out() -> None:
    """11 errors in 14 against 1 in 10: (C(12,11)·C(12,3) + C(12,12)·C(12,2)) / C(24,14)."""
    expected = (12 * 220 + 1 * 66) / math.comb(24, 14)
    assert fisher_greater(11, 14, 1, 10) == pytest.approx(expected, rel=1e-10)


def test_fisher_edges() -> None:
    assert fisher_greater(0, 10, 0, 10) == 1.0  # no errors anywhere: nothing to see
    assert fisher_greater(0, 10, 5, 10) == 1.0  # the sandbox erring less is not worse
    assert fisher_greater(10, 10, 0, 10) == pytest.approx(1 / math.comb(20, 10))
    # large counts stay finite and fast (the sum stops once its terms are negligible)
    assert fisher_greater(1_000_000, 10_000_000, 1_000_000, 10_000_000) == pytest.approx(
        0.5, abs=0.01
    )
    assert fisher_greater(1_010_000, 10_000_000, 1_000_000, 10_000_000) < 1e-10


def test_mann_whitney_exact_matches_the_textbook_example() -> None:
    """5 against 4 (the example of Wikipedia and scipy's documentation): U = 17; the exact
    one-sided p counts the 7 of C(9, 4) = 126 arrangements with U ≥ 17."""
    males, females = sorted([19, 22, 16, 29, 24]), sorted([20, 11, 17, 12])
    assert mann_whitney_greater(males, females) == pytest.approx(7 / 126, rel=1e-12)
    assert mann_whitney_greater([4, 5, 6], [1, 2, 3]) == pytest.approx(1 / 20)
    assert mann_whitney_greater([1, 2, 3], [4, 5, 6]) == pytest.approx(1.0)


def test_mann_whitney_with_ties_uses_the_corrected_normal_approximation() -> None:
    """[3,3,4,5] against [1,2,3,3]: ranks 4.5, 4.5, 7, 8 → U = 24 - 10 = 14; mean 8; one tie
    group of 4 → var = 16/12 · (9 - 60/56) = 10.5714; z = (14 - 8 - 0.5)/√var = 1.69159;
    p = Φ(-z) = 0.045362."""
    assert mann_whitney_greater([3, 3, 4, 5], [1, 2, 3, 3]) == pytest.approx(0.045362, abs=1e-6)
    assert mann_whitney_greater([7] * 30, [7] * 30) == 1.0  # all equal: no evidence


def test_mann_whitney_normal_approximation_for_large_samples() -> None:
    """40 against 40, no ties, disjoint: past the exact limit, z = (1600 - 800 - 0.5)/√(1600·81/12)."""
    low, high = [float(i) for i in range(40)], [100.0 + i for i in range(40)]
    z = (1600 - 800 - 0.5) / math.sqrt(1600 * 81 / 12)
    assert mann_whitney_greater(high, low) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))


def test_mann_whitney_with_many_ties_matches_counting_every_pair() -> None:
    """U and the tie term worked out by brute force (every pair; ranks of the pooled values)
    against the walk over distinct values, on samples of very unequal sizes with values
    shared inside and across them, either way round."""
    rng = random.Random(13)
    for small, big, decimals in ((7, 3000, 0), (150, 4000, 1), (400, 900, 2), (2000, 60, 1)):
        mine = [round(rng.lognormvariate(0.2, 0.5), decimals) for _ in range(small)]
        theirs = [round(rng.lognormvariate(0, 0.5), decimals) for _ in range(big)]
        u = sum((x > y) + (x == y) / 2 for x in mine for y in theirs)
        pooled = mine + theirs
        ties = sum(t**3 - t for t in (pooled.count(v) for v in set(pooled)))
        n = len(pooled)
        variance = small * big / 12 * ((n + 1) - ties / (n * (n - 1)))
        z = (u - small * big / 2 - 0.5) / math.sqrt(variance)
        expected = 0.5 * math.erfc(z / math.sqrt(2))
        assert mann_whitney_greater(mine, theirs) == pytest.approx(expected, rel=1e-9)


def test_a_samples_runs_are_its_distinct_values_counted() -> None:
    """The runs found by comparing neighbours (no hashing) are what a `Counter` counts, with
    where each value starts in the sorted values, and the tie term from them."""
    rng = random.Random(7)
    for size, decimals in ((0, 0), (1, 0), (500, 0), (3000, 2), (2000, 6)):
        values = [round(rng.lognormvariate(0, 0.5), decimals) for _ in range(size)]
        sample = Sample(values)
        counted = sorted(Counter(values).items())
        assert list(zip(sample.distinct, sample.counts, strict=True)) == counted
        assert sample.starts == [sum(c for v, c in counted if v < d) for d, _ in counted] + [size]
        assert sample.ties == sum(c**3 - c for _, c in counted)


def test_binomial_tail_matches_the_sum_worked_out() -> None:
    """n = 100, p = 0.01: P(K ≥ 3) = 1 - 0.99¹⁰⁰ - 100·0.01·0.99⁹⁹ - 4950·0.01²·0.99⁹⁸."""
    expected = 1 - 0.99**100 - 100 * 0.01 * 0.99**99 - 4950 * 0.01**2 * 0.99**98
    assert binomial_greater(3, 100, 0.01) == pytest.approx(expected, rel=1e-9)
    assert binomial_greater(0, 100, 0.01) == 1.0
    assert binomial_greater(101, 100, 0.01) == 0.0


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (
        50.0, 95.0, 99.0,
    )  # fmt: skip
    assert percentile([4.0], 99) == 4.0 and percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0


def samples(seed: int, n: int, *, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return sorted(rng.lognormvariate(0, 0.5) * scale for _ in range(n))


def test_a_slower_sandbox_regresses_latency_and_p99() -> None:
    slow, base = samples(1, 300, scale=2.0), samples(2, 300)
    assert latency(slow, base, Criteria()).verdict == "regressed"
    assert p99(slow, base, Criteria()).verdict == "regressed"


def test_equal_distributions_pass() -> None:
    same, base = samples(3, 300), samples(4, 300)
    assert latency(same, base, Criteria()).verdict == "pass"
    assert p99(same, base, Criteria()).verdict == "pass"
    assert error_rate(3, 300, 3, 300, Criteria()).verdict == "pass"


def test_a_significant_but_small_change_passes_under_the_effect_threshold() -> None:
    """5 % slower on 20,000 samples: significant, but under the 20 % effect asked for."""
    slower, base = samples(5, 20_000, scale=1.05), samples(6, 20_000)
    figure = latency(slower, base, Criteria())
    assert figure.p_value is not None and figure.p_value < 0.05
    assert figure.verdict == "pass"
    assert latency(slower, base, Criteria(effect=0.01)).verdict == "regressed"


def test_error_rate_rules() -> None:
    assert error_rate(30, 100, 2, 100, Criteria()).verdict == "regressed"
    # a baseline at 0 errors: the effect floor of 1 % (0.2 · 0.01 = 0.002) is passed
    assert error_rate(10, 100, 0, 1000, Criteria()).verdict == "regressed"
    assert error_rate(1, 100, 0, 100, Criteria()).verdict == "pass"  # not significant


def test_too_few_samples_are_inconclusive_with_the_floor() -> None:
    figure = latency(samples(7, 19), samples(8, 500), Criteria())
    assert (figure.verdict, figure.details["floor"]) == ("inconclusive", 20)
    assert figure.details["reason"] == "fewer than 20 samples on a side"
    tail = p99(samples(7, 99), samples(8, 500, scale=3), Criteria())
    assert (tail.verdict, tail.details["floor"]) == ("inconclusive", 100)
    rate = error_rate(5, 10, 0, 100, Criteria(min_samples=11))
    assert (rate.verdict, rate.details["floor"]) == ("inconclusive", 11)


def test_the_worst_verdict_wins() -> None:
    assert worst(["pass", "inconclusive", "regressed"]) == "regressed"
    assert worst(["pass", "inconclusive"]) == "inconclusive"
    assert worst(["pass", "pass"]) == "pass"
    assert worst([]) == "inconclusive"


def test_a_prepared_sample_keeps_its_values_and_leaves_the_collector_little_to_walk() -> None:
    """The baseline's sample stays cached: its sorted values are the side's own list (not a
    copy), and what `prepare` derives is in tuples, which the cyclic collector stops tracking
    (it walks every item of a tracked list on each full pass)."""
    values = sorted([0.5, 1.0, 1.0, 2.5, 3.0, 3.0, 3.0])
    sample = Sample(values, ordered=True)
    sample.prepare()
    gc.collect()
    assert sample.values is values
    derived = [sample.distinct, sample.counts, *sample.padded]
    assert [gc.is_tracked(d) for d in derived] == [False] * 4
