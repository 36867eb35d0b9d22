"""The statistics of the report: confidence intervals over seeds, and the rule that calls two results a tie.

- Interval: the 95 % confidence interval of a mean over n seeds is mean ± t(0.975, n - 1) * s / sqrt(n), with s the
  sample standard deviation (Student's t; n = 1 has no interval).
- Tie: two variants' results on one dataset are tied when the 95 % interval of their per-seed differences
  (paired on the seeds both have, at least 2) contains 0. Seeds pair naturally: the same seed gives the same
  initialisation, batch order and augmentation to every variant. Without 2 shared seeds, they are tied only when
  their means are equal.
- Groups: walk down the variants by mean; the best variant not yet placed opens a group, and every other unplaced
  variant tied with it joins that group. The first group is marked best, the second second; the members of a group
  share the mean of the rank positions they occupy (so the average rank treats ties inside the noise as ties).
- Paired test: Student's t on the per-seed differences (`paired_p_value`, two-sided). A table that makes several such
  tests is one family: its p-values are adjusted by Holm's step-down method (`holm`), and both the raw and the
  adjusted decision at 5 % are shown.
- Equality: "tied with" or "reaches" is never read off a non-significant difference. Two results are equivalent when
  a two one-sided tests procedure (TOST) at 5 % puts their mean paired difference within ±EQUIVALENCE_MARGIN mAP
  points (`equivalence_p_value`), that is when the 90 % interval of the difference lies inside the margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from scipy import special

CONFIDENCE = 0.95


def t_quantile(n: int) -> float:
    """t(0.975, n - 1): the factor of the 95 % interval of a mean over n values (n >= 2). This is the inverse of
    Student's t distribution function, `scipy.stats.t.ppf`, computed by the function that it calls (`stdtrit`),
    without the second of import time that `scipy.stats` costs every command."""
    return float(special.stdtrit(n - 1, 0.5 + CONFIDENCE / 2))


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def half_width(values: list[float]) -> float:
    """Half width of the 95 % confidence interval of the mean of `values`; nan for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    centre = mean(values)
    sd = math.sqrt(sum((v - centre) ** 2 for v in values) / (n - 1))
    return t_quantile(n) * sd / math.sqrt(n)


def paired_differences(first: Mapping[int, float], second: Mapping[int, float]) -> list[float]:
    """first[seed] - second[seed] over the seeds both have, in seed order."""
    return [first[seed] - second[seed] for seed in sorted(set(first) & set(second))]


def excludes_zero(differences: list[float]) -> bool:
    """True when the 95 % interval of the mean of `differences` lies entirely on one side of 0."""
    if len(differences) < 2:
        return False
    return abs(mean(differences)) > half_width(differences)


def tied(first: Mapping[int, float], second: Mapping[int, float]) -> bool:
    """The tie rule of the module docstring, on two {seed: value} results."""
    differences = paired_differences(first, second)
    if len(differences) < 2:
        return mean(list(first.values())) == mean(list(second.values()))
    return not excludes_zero(differences)


def tie_groups(results: Mapping[str, Mapping[int, float]]) -> list[list[str]]:
    """The variants of `results` ({variant: {seed: value}}) in groups of ties, best group first (module docstring);
    inside a group, by mean then name."""
    order = sorted(results, key=lambda v: (-mean(list(results[v].values())), v))
    groups: list[list[str]] = []
    placed: set[str] = set()
    for leader in order:
        if leader in placed:
            continue
        group = [v for v in order if v not in placed and (v == leader or tied(results[leader], results[v]))]
        placed.update(group)
        groups.append(group)
    return groups


def tied_ranks(results: Mapping[str, Mapping[int, float]]) -> dict[str, float]:
    """variant -> rank (1 = best); the members of a tie group share the mean of the positions they occupy."""
    ranks: dict[str, float] = {}
    position = 0
    for group in tie_groups(results):
        shared = position + (len(group) + 1) / 2
        ranks.update(dict.fromkeys(group, shared))
        position += len(group)
    return ranks


EQUIVALENCE_MARGIN = 0.5
"""mAP points within which two results are called equivalent (the TOST margin)."""
ALPHA = 0.05


def t_statistic(differences: list[float]) -> float:
    """mean / (s / sqrt(n)) of `differences` (n >= 2); ±inf when they are all equal and not 0, nan when all 0."""
    n = len(differences)
    centre = mean(differences)
    sd = math.sqrt(sum((d - centre) ** 2 for d in differences) / (n - 1))
    if sd == 0:
        return math.nan if centre == 0 else math.copysign(math.inf, centre)
    return centre / (sd / math.sqrt(n))


def paired_p_value(differences: list[float]) -> float:
    """Two-sided p-value of Student's paired t-test that the mean of `differences` is 0; nan for fewer than 2."""
    if len(differences) < 2:
        return math.nan
    t = t_statistic(differences)
    if math.isnan(t):
        return 1.0
    return float(2 * special.stdtr(len(differences) - 1, -abs(t)))


def equivalence_p_value(differences: list[float], margin: float = EQUIVALENCE_MARGIN) -> float:
    """The p-value of TOST: the larger of the one-sided p-values that the mean difference exceeds -`margin` and
    that it is below +`margin`; small when the difference lies within the margin. nan for fewer than 2 values."""
    n = len(differences)
    if n < 2:
        return math.nan
    centre = mean(differences)
    sd = math.sqrt(sum((d - centre) ** 2 for d in differences) / (n - 1))
    if sd == 0:
        return 0.0 if abs(centre) < margin else 1.0
    error = sd / math.sqrt(n)
    lower = float(special.stdtr(n - 1, -(centre + margin) / error))  # H0: mean <= -margin
    upper = float(special.stdtr(n - 1, (centre - margin) / error))  # H0: mean >= +margin
    return max(lower, upper)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (nan entries are left out of the family and stay
    nan): the i-th smallest of m is multiplied by m - i + 1, made non-decreasing, and capped at 1."""
    ordered = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(ordered)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(ordered):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted
