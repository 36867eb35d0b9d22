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
