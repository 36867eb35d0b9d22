"""The rules of a tuning study that need no training: which trials come first, each study's sampler seed, when a
winner sits at the edge of its range and how the range then widens, and which setting the confirmation on several
seeds picks. `bench.execute.tuning` runs the studies under them; the grid file's `[tuning]` table turns each on.

- First trials (`first_trials`): the variant's defaults, and its paper's values where a paper published some for
  the dataset, are enqueued before any sampled trial, so a study can never end worse on validation than the
  defaults except by noise.
- Sampler seed (`study_seed`): derived from the study's name and the budget's seed, so that studies do not all start
  from one random point, and stable from run to run.
- Edges (`edge_side`, `widened`): a winner in the outer EDGE_SHARE of a log range (or at a bound of a linear one)
  widens that side by half the range's width (on the log scale for a log range), never past the hyperparameter's
  declared bounds.
- Confirmation (`confirmation_candidates`, `confirmed`): the CONFIRM_TOP best completed settings are trained again on
  the confirmation seeds; the best mean validation mAP wins.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

EDGE_SHARE = 0.05
"""A winner within this share of a log range's width (on the log scale) from a bound sits at the edge."""


def study_seed(name: str, seed: int) -> int:
    """The sampler seed of the study `name` under a budget of seed `seed`: stable, and different per study."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def first_trials(space: dict[str, Any], defaults: dict[str, Any], paper: dict[str, Any]) -> list[dict[str, Any]]:
    """The trials enqueued first: `defaults` (the variant's values of every searched name), then, if it differs,
    `defaults` with `paper`'s values (its paper's, where published) of the names it has. A range value outside its
    range is left to the sampler; a value not in a list of choices is left out the same way."""
    def inside(name: str, value: Any) -> bool:
        bounds = space[name]
        if isinstance(bounds, list):
            return value in bounds
        return value is not None and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]

    first = {name: defaults[name] for name in space if name in defaults and inside(name, defaults[name])}
    trials = [first]
    published = {name: value for name, value in paper.items() if name in space and inside(name, value)}
    if published and {**first, **published} != first:
        trials.append({**first, **published})
    return trials


def edge_side(value: float, bounds: tuple[float, float], log: bool) -> str | None:
    """'low' or 'high' when `value` sits at that edge of `bounds` (see EDGE_SHARE; a linear range: at the bound
    itself), else None."""
    low, high = bounds
    if log:
        position = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        return "low" if position <= EDGE_SHARE else "high" if position >= 1 - EDGE_SHARE else None
    return "low" if value <= low else "high" if value >= high else None


def widened(bounds: tuple[float, float], side: str, log: bool, hard: tuple[float | None, float | None],
            integer: bool = False) -> tuple[float, float] | None:
    """`bounds` with its `side` moved out by half its width (on the log scale when `log`), clipped to the
    declaration's `hard` bounds (None: unbounded; a log range stays above 0); None when that side cannot move."""
    low, high = bounds
    if log:
        step = math.sqrt(high / low)
        new = (low / step, high) if side == "low" else (low, high * step)
    else:
        step = (high - low) / 2
        new = (low - step, high) if side == "low" else (low, high + step)
    hard_low, hard_high = hard
    new_low = max(new[0], hard_low) if hard_low is not None else new[0]
    new_high = min(new[1], hard_high) if hard_high is not None else new[1]
    if log and new_low <= 0:
        new_low = low
    if integer:
        new_low, new_high = math.ceil(new_low), math.floor(new_high)
    result = (new_low, new_high)
    return None if result == (low, high) else result


def confirmation_candidates(trials: list[tuple[int, dict[str, Any], float]], top: int) -> list[int]:
    """The trial numbers of the `top` best completed trials (number, params, value) with distinct params, best
    first (a tie goes to the earlier trial)."""
    chosen, seen = [], []
    for number, params, _ in sorted(trials, key=lambda trial: (-trial[2], trial[0])):
        if params in seen:
            continue
        seen.append(params)
        chosen.append(number)
        if len(chosen) == top:
            break
    return chosen


def confirmed(scores: dict[int, list[float]]) -> int:
    """The trial number whose confirmation scores (one per seed) have the best mean (a tie goes to the earlier
    trial)."""
    return min(scores, key=lambda number: (-sum(scores[number]) / len(scores[number]), number))
