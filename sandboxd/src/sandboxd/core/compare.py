"""Sandbox against baseline: the tests canary analysis runs, and the verdicts drawn from them.

Pure (no I/O, no scipy): the tail sums use `math.lgamma`, the normal tail `math.erfc`.

Three figures per service, each `regressed`, `pass` or `inconclusive`; a service's verdict (and
the overall one) is the worst of its figures: regressed > inconclusive > pass.

- **errorRate**: one-sided Fisher exact test on the 2x2 table (errors, other requests) x
  (sandbox, baseline); the alternative is "the sandbox errs more". Regressed when p < alpha AND
  the sandbox's rate exceeds the baseline's by at least `effect x max(baseline rate, 0.01)`
  (a relative effect, with a floor of 1 % so that a baseline at 0 errors does not make a single
  error a regression of infinite size). Inconclusive when either side has fewer than
  `min_samples` requests.
- **latency**: one-sided Mann-Whitney U on the latency samples (alternative: the sandbox's are
  larger). Exact when there are no ties and n1·n2 ≤ `EXACT_PAIRS`; otherwise the normal
  approximation with the tie correction of the variance and a continuity correction of 0.5.
  Regressed when p < alpha AND median(sandbox) ≥ (1 + effect) x median(baseline).
  Inconclusive when either side has fewer than `min_samples` samples.
- **p99**: how many sandbox samples exceed the baseline's p99; under "same distribution" that
  count is Binomial(n, 0.01), so p = P(K ≥ k) exactly. Regressed when p < alpha AND
  p99(sandbox) ≥ (1 + effect) x p99(baseline). Inconclusive below `P99_FLOOR` samples on a side
  (a p99 from fewer than 100 samples is one of the few largest values, not a percentile).

Percentiles are nearest-rank (the smallest sample with at least p % of the samples at or
below it): always a value that was observed.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import add, eq, mul, ne, sub
from typing import Literal

Verdict = Literal["regressed", "pass", "inconclusive"]
P99_FLOOR = 100
EXACT_PAIRS = 1000
"""Mann-Whitney is exact (without ties) up to this many pairs: its cost grows as n1²·n2."""
_RANK: dict[Verdict, int] = {"pass": 0, "inconclusive": 1, "regressed": 2}
_NEGLIGIBLE = 1e-18  # a tail term this small beside the sum so far ends the sum


@dataclass(frozen=True, slots=True)
class Criteria:
    alpha: float = 0.05
    effect: float = 0.2
    min_samples: int = 20


@dataclass(frozen=True, slots=True)
class Figure:
    """One figure's verdict and what it was drawn from (`details`: figure-specific numbers)."""

    verdict: Verdict
    p_value: float | None
    details: dict[str, float | int | str | None]


class Sample:
    """Sorted values, with their runs of equal values found once when first needed: the
    baseline's sample is compared with every sandbox's.

    The runs are found by comparing neighbours, each step a `map` over a C function, not by
    hashing every value into a `Counter` (1.5-2.5 times the CPU for the baseline's 30,000
    values, measured).

    `ordered` values are kept as given, not copied, and what is derived from them is kept in
    tuples: the baseline's samples stay cached, and the cyclic collector walks every item of
    a list on each full pass (some 10 ms for the cache's) but stops tracking a tuple of
    numbers."""

    __slots__ = ("_counts", "_distinct", "_padded", "_starts", "_ties", "values")

    def __init__(self, values: Sequence[float], *, ordered: bool = False) -> None:
        self.values: Sequence[float] = values if ordered else sorted(values)
        self._distinct: tuple[float, ...] | None = None
        self._counts: tuple[int, ...] | None = None
        self._starts: list[int] | None = None
        self._padded: tuple[tuple[float, ...], tuple[int, ...]] | None = None
        self._ties: int | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def distinct(self) -> tuple[float, ...]:
        """Each value once, ascending."""
        if self._distinct is None:
            self._runs()
        assert self._distinct is not None
        return self._distinct

    @property
    def counts(self) -> tuple[int, ...]:
        """How many times each of `distinct` occurs."""
        if self._counts is None:
            self._runs()
        assert self._counts is not None
        return self._counts

    @property
    def starts(self) -> list[int]:
        """Where each of `distinct` starts in `values` (how many values are smaller), and
        the number of values last."""
        if self._starts is None:
            self._runs()
        assert self._starts is not None
        return self._starts

    def _runs(self) -> None:
        values = self.values
        if not values:
            self._distinct, self._counts, self._starts = (), (), [0]
            return
        changes = list(map(ne, values, islice(values, 1, None)))  # values[i] != values[i + 1]
        self._starts = [0, *compress(range(1, len(values)), changes), len(values)]
        self._distinct = (values[0], *compress(islice(values, 1, None), changes))
        self._counts = tuple(map(sub, islice(self._starts, 1, None), self._starts))

    @property
    def padded(self) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """`distinct` and `counts`, each with one more entry (infinity, 0) for what is past
        the last: indexed by where another sample's values fall (`_u_and_ties`). Kept, not
        copied per comparison: the baseline's are some 30,000 entries."""
        if self._padded is None:
            self._padded = (*self.distinct, math.inf), (*self.counts, 0)
        return self._padded

    def prepare(self) -> None:
        """Find the runs, ties and `padded` now (a sample shared by many comparisons)."""
        _ = self.ties, self.padded

    @property
    def ties(self) -> int:
        """Sum of (t^3 - t) over the groups of equal values."""
        if self._ties is None:
            self._ties = sum(map(pow, self.counts, repeat(3))) - len(self.values)
        return self._ties


Values = Sequence[float] | Sample


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """regressed > inconclusive > pass; nothing to judge is inconclusive."""
    return max(verdicts, key=_RANK.__getitem__, default="inconclusive")


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted samples (None for none)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fisher_greater(errors: int, total: int, base_errors: int, base_total: int) -> float:
    """One-sided Fisher exact p: P(X ≥ errors) for X ~ Hypergeometric(population
    total + base_total, successes errors + base_errors, draws total)."""
    population, successes = total + base_total, errors + base_errors
    low, high = max(0, successes - base_total), min(successes, total)

    def log_pmf(x: int) -> float:
        return (
            _log_choose(successes, x)
            + _log_choose(population - successes, total - x)
            - _log_choose(population, total)
        )

    mode = (total + 1) * (successes + 1) // (population + 2)
    return _tail(log_pmf, errors, low=low, high=high, mode=mode)


def binomial_greater(k: int, n: int, p: float) -> float:
    """P(K ≥ k) for K ~ Binomial(n, p), 0 < p < 1."""

    def log_pmf(x: int) -> float:
        return _log_choose(n, x) + x * math.log(p) + (n - x) * math.log1p(-p)

    return _tail(log_pmf, k, low=0, high=n, mode=int((n + 1) * p))


def mann_whitney_greater(sample: Values, base: Values) -> float:
    """One-sided Mann-Whitney U p-value for "`sample` tends to be larger than `base`"."""
    mine, theirs = _sample(sample), _sample(base)
    n1, n2 = len(mine), len(theirs)
    u, ties = _u_and_ties(mine, theirs)
    if ties == 0 and n1 * n2 <= EXACT_PAIRS:
        return _exact_u_tail(round(u), n1, n2)
    total = n1 + n2
    variance = n1 * n2 / 12 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:  # every value equal: no evidence either way
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))


def error_rate(
    errors: int, total: int, base_errors: int, base_total: int, criteria: Criteria
) -> Figure:
    rate = errors / total if total else None
    base_rate = base_errors / base_total if base_total else None
    details: dict[str, float | int | str | None] = {
        "sandbox": rate,
        "baseline": base_rate,
        "threshold": criteria.effect,
    }
    if min(total, base_total) < criteria.min_samples:
        return _inconclusive(details, "requests", criteria.min_samples)
    assert rate is not None
    assert base_rate is not None
    p = fisher_greater(errors, total, base_errors, base_total)
    big_enough = rate - base_rate >= criteria.effect * max(base_rate, 0.01)
    return Figure(_judge(p, criteria.alpha, big_enough), p, details)


def latency(sample: Values, base: Values, criteria: Criteria) -> Figure:
    sample, base = _sample(sample), _sample(base)
    median, base_median = percentile(sample.values, 50), percentile(base.values, 50)
    details: dict[str, float | int | str | None] = {
        "sandboxMedianMs": median,
        "baselineMedianMs": base_median,
        "ratio": _ratio(median, base_median),
        "threshold": criteria.effect,
    }
    if min(len(sample), len(base)) < criteria.min_samples:
        return _inconclusive(details, "samples", criteria.min_samples)
    assert median is not None
    assert base_median is not None
    p = mann_whitney_greater(sample, base)
    return Figure(
        _judge(p, criteria.alpha, median >= (1 + criteria.effect) * base_median), p, details
    )


def p99(sample: Values, base: Values, criteria: Criteria) -> Figure:
    sample, base = _sample(sample), _sample(base)
    mine, theirs = percentile(sample.values, 99), percentile(base.values, 99)
    details: dict[str, float | int | str | None] = {
        "sandboxP99Ms": mine,
        "baselineP99Ms": theirs,
        "ratio": _ratio(mine, theirs),
        "threshold": criteria.effect,
    }
    floor = max(P99_FLOOR, criteria.min_samples)
    if min(len(sample), len(base)) < floor:
        return _inconclusive(details, "samples", floor)
    assert mine is not None
    assert theirs is not None
    exceeding = len(sample) - bisect_right(sample.values, theirs)
    details |= {"exceeding": exceeding, "expected": len(sample) * 0.01}
    p = binomial_greater(exceeding, len(sample), 0.01)
    return Figure(_judge(p, criteria.alpha, mine >= (1 + criteria.effect) * theirs), p, details)


def _judge(p: float, alpha: float, big_enough: bool) -> Verdict:
    return "regressed" if p < alpha and big_enough else "pass"


def _inconclusive(details: dict[str, float | int | str | None], what: str, floor: int) -> Figure:
    details |= {"reason": f"fewer than {floor} {what} on a side", "floor": floor}
    return Figure("inconclusive", None, details)


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    """None when undefined (no samples, or a baseline of 0 ms): JSON has no infinity."""
    if mine is None or not theirs:
        return None
    return mine / theirs


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _tail(log_pmf: Callable[[int], float], start: int, *, low: int, high: int, mode: int) -> float:
    """P(X ≥ start) of a unimodal discrete distribution on [low, high]: summed from `start`
    outwards when it lies past the mode (terms only shrink there), else 1 - the lower tail
    summed downwards from start - 1. Either way the sum stops once terms are negligible."""
    if start <= low:
        return 1.0
    if start > high:
        return 0.0
    if start > mode:
        steps = range(start, high + 1)
        return min(1.0, _sum_shrinking(log_pmf, steps))
    return max(0.0, 1.0 - _sum_shrinking(log_pmf, range(start - 1, low - 1, -1)))


def _sum_shrinking(log_pmf: Callable[[int], float], xs: range) -> float:
    total = 0.0
    for x in xs:
        term = math.exp(log_pmf(x))
        total += term
        if term < _NEGLIGIBLE * total or term == 0.0:
            break
    return total


def _u_and_ties(mine: Sample, theirs: Sample) -> tuple[float, int]:
    """U of `mine` (pairs where it is larger, ties counting a half) and the sum of (t^3 - t)
    over the groups of equal values of both samples together, from the smaller sample's
    distinct values bisected in the larger one's distinct values: the baseline's sample is
    often 100,000 values beside a sandbox's few thousand, and its own ties are counted once
    (`Sample.prepare`). The sums are `map`s over C functions: a Python loop here was most of
    a `GET …/metrics`'s time.

    A value with c occurrences in the smaller sample and e in the larger counts c·e/2 pairs
    as ties, and its group adds (c+e)^3 - (c+e) - (c^3 - c) - (e^3 - e) = 3·c·e·(c+e) to
    the two samples' own tie sums."""
    small, big = (mine, theirs) if len(mine) <= len(theirs) else (theirs, mine)
    values, counts = small.distinct, small.counts
    at = list(map(bisect_left, repeat(big.distinct), values))
    below = list(map(big.starts.__getitem__, at))
    distinct, big_counts = big.padded
    found = map(eq, map(distinct.__getitem__, at), values)  # (finite values)
    equal = list(map(mul, found, map(big_counts.__getitem__, at)))
    u = sum(map(mul, counts, below)) + sum(map(mul, counts, equal)) / 2
    shared = map(mul, map(mul, counts, equal), map(add, counts, equal))
    ties = mine.ties + theirs.ties + 3 * sum(shared)
    return (u if small is mine else len(mine) * len(theirs) - u), ties


def _sample(values: Values) -> Sample:
    return values if isinstance(values, Sample) else Sample(values)


def _exact_u_tail(u: int, n1: int, n2: int) -> float:
    """P(U ≥ u) under the null, without ties: the count of arrangements with each U is a
    coefficient of the Gaussian binomial [n1 + n2 choose n1]_q = ∏ (1 - q^(n2+i)) / (1 - q^i)."""
    m, n = min(n1, n2), max(n1, n2)
    poly = [1] + [0] * (m * n)
    for i in range(1, m + 1):
        for k in range(m * n, n + i - 1, -1):  # x (1 - q^(n+i))
            poly[k] -= poly[k - n - i]
        for k in range(i, m * n + 1):  # divided by (1 - q^i)
            poly[k] += poly[k - i]
    return sum(poly[max(u, 0) :]) / math.comb(n1 + n2, n1)
