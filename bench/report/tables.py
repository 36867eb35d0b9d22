"""Numbers behind the leaderboard, computed from a frame of run records (one row per record, see
`bench.report.frame.records_frame`): per-cell statistics over seeds, tie groups and ranks (`bench.report.stats`),
and paired
BoostLU differences. Rendering (Markdown, LaTeX, CSV) lives in `bench.report.leaderboard`; nothing here formats text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench import registry
from bench.errors import UserError
from bench.report import stats
from bench.spec import parse_variant


@dataclass
class Cell:
    """The runs of one (variant, dataset): test mAP per seed of the finished ones, and how many failed."""

    test_map: dict[int, float] = field(default_factory=dict)
    failed: int = 0

    @property
    def n(self) -> int:
        return len(self.test_map)

    @property
    def mean(self) -> float:
        return stats.mean(list(self.test_map.values()))

    @property
    def half_width(self) -> float:
        """Half width of the 95 % confidence interval of the mean (nan for one seed)."""
        return stats.half_width(list(self.test_map.values()))


def is_oracle(variant: str) -> bool:
    """True for rows of a method that trains on the full labels (the upper reference, never ranked)."""
    try:
        return registry.method_class(parse_variant(variant.split(" (")[0])[0]).trains_on_full_labels
    except UserError:
        return False


def variant_order(variants: list[str]) -> list[str]:
    """Oracle rows first, then alphabetical."""
    return sorted(variants, key=lambda v: (not is_oracle(v), v))


def cells(frame: pd.DataFrame, column: str) -> dict[tuple[str, str], Cell]:
    """(variant, dataset) -> Cell of `column` (the test mAP of one selection, e.g. 'test_map_clean'). A seed with
    several finished records (impossible for one run key) keeps the first."""
    table: dict[tuple[str, str], Cell] = {}
    for row in frame.sort_values(["variant", "dataset", "seed", "run_key"]).itertuples():
        cell = table.setdefault((row.variant, row.dataset), Cell())
        if row.status == "done":
            cell.test_map.setdefault(int(row.seed), float(getattr(row, column)))
        else:
            cell.failed += 1
    return table


def ranked(table: dict[tuple[str, str], Cell], dataset: str) -> dict[str, dict[int, float]]:
    """{variant: {seed: value}} of the partial-label variants with a result on `dataset`."""
    return {v: c.test_map for (v, d), c in table.items() if d == dataset and c.n and not is_oracle(v)}


def placements(table: dict[tuple[str, str], Cell], dataset: str) -> dict[str, int]:
    """variant -> 1 (best group) or 2 (second group) on `dataset`, ties inside the noise sharing a place."""
    groups = stats.tie_groups(ranked(table, dataset))
    return {variant: place for place, group in enumerate(groups[:2], 1) for variant in group}


def average_ranks(table: dict[tuple[str, str], Cell], datasets: list[str]) -> dict[str, float]:
    """Mean over datasets of each partial-label variant's rank (1 = best; tied groups share their mean rank)."""
    ranks: dict[str, list[float]] = {}
    for dataset in datasets:
        for variant, rank in stats.tied_ranks(ranked(table, dataset)).items():
            ranks.setdefault(variant, []).append(rank)
    return {variant: sum(r) / len(r) for variant, r in ranks.items()}


@dataclass(frozen=True)
class PairedDelta:
    """With minus without BoostLU (train + inference), per shared seed, on one dataset."""

    method: str
    dataset: str
    mean: float
    half_width: float
    positive: int
    seeds: int
    excludes_zero: bool
    p_value: float
    equivalence_p: float


def paired_delta(method: str, dataset: str, delta: list[float]) -> PairedDelta:
    """The statistics of one pair's per-seed differences `delta` (`bench.report.stats`)."""
    return PairedDelta(method, dataset, stats.mean(delta), stats.half_width(delta), sum(d > 0 for d in delta),
                       len(delta), stats.excludes_zero(delta), stats.paired_p_value(delta),
                       stats.equivalence_p_value(delta))


def paired_boostlu(frame: pd.DataFrame, column: str) -> list[PairedDelta]:
    """For every method run with and without BoostLU on the same dataset and seeds, with the same batch size, head
    learning rate and selection rule (`bench.report.frame.pairing_text`; under the `paper` recipe BoostLU's settings may
    differ from the method's own, and such a difference is not BoostLU's effect): the per-seed differences of
    `column`, their mean and 95 % interval, on how many seeds they are positive, and their tests."""
    table = cells(frame, column)
    pairings = frame.groupby(["variant", "dataset"]).pairing.agg(lambda values: tuple(sorted(set(values))))
    pairs = []
    for (variant, dataset), boosted in sorted(table.items()):
        method = variant[: -len("+boostlu")] if variant.endswith("+boostlu") else None
        if method is None or (method, dataset) not in table:
            continue
        if pairings[(variant, dataset)] != pairings[(method, dataset)]:
            continue
        delta = stats.paired_differences(boosted.test_map, table[(method, dataset)].test_map)
        if delta:
            pairs.append(paired_delta(method, dataset, delta))
    return pairs


BOOSTED_ORACLE = "full+boostlu"
"""The oracle a BoostLU row is compared with: the same network and head, trained on full labels."""


def against_oracle(frame: pd.DataFrame, column: str) -> list[PairedDelta]:
    """For every partial-label variant with BoostLU in training and inference: its per-seed differences of `column`
    from the full+boostlu oracle on the same dataset and seeds, with their tests (`method` is the variant)."""
    table = cells(frame, column)
    pairs = []
    for (variant, dataset), row in sorted(table.items()):
        if not variant.endswith("+boostlu") or is_oracle(variant) or (BOOSTED_ORACLE, dataset) not in table:
            continue
        delta = stats.paired_differences(row.test_map, table[(BOOSTED_ORACLE, dataset)].test_map)
        if len(delta) >= 2:
            pairs.append(paired_delta(variant, dataset, delta))
    return pairs


def finite(value: float) -> bool:
    return value is not None and not math.isnan(value)
