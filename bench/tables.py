"""Numbers behind the leaderboard, computed from a frame of run records (one row per record, see
`bench.report.records_frame`): per-cell statistics over seeds, ranks, published-number deltas and paired BoostLU
differences. Rendering (Markdown, LaTeX, CSV) lives in `bench.report`; nothing here formats text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from bench.spec import parse_variant

ORACLE = "full"


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
        return sum(self.test_map.values()) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof = 1); 0 for a single seed."""
        if self.n < 2:
            return 0.0
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.test_map.values()) / (self.n - 1))


def is_oracle(variant: str) -> bool:
    return parse_variant(variant.split(" (")[0])[0] == ORACLE


def variant_order(variants: list[str]) -> list[str]:
    """Oracle rows first, then alphabetical."""
    return sorted(variants, key=lambda v: (not is_oracle(v), v))


def cells(frame: pd.DataFrame) -> dict[tuple[str, str], Cell]:
    """(variant, dataset) -> Cell. A seed with several finished records (impossible for one run key) keeps the first."""
    table: dict[tuple[str, str], Cell] = {}
    for row in frame.sort_values(["variant", "dataset", "seed", "run_key"]).itertuples():
        cell = table.setdefault((row.variant, row.dataset), Cell())
        if row.status == "done":
            cell.test_map.setdefault(int(row.seed), float(row.test_map))
        else:
            cell.failed += 1
    return table


def placements(table: dict[tuple[str, str], Cell], dataset: str) -> dict[str, int]:
    """variant -> 1 (best) or 2 (second best) by mean on `dataset`, among non-oracle variants with a result."""
    means = sorted({round(c.mean, 10) for (v, d), c in table.items() if d == dataset and c.n and not is_oracle(v)},
                   reverse=True)
    places = {}
    for (variant, d), cell in table.items():
        if d == dataset and cell.n and not is_oracle(variant):
            place = means.index(round(cell.mean, 10)) + 1
            if place <= 2:
                places[variant] = place
    return places


def average_ranks(table: dict[tuple[str, str], Cell], datasets: list[str]) -> dict[str, float]:
    """Mean over datasets of each non-oracle variant's rank (1 = best; ties share the average rank)."""
    ranks: dict[str, list[float]] = {}
    for dataset in datasets:
        scores = pd.Series({v: c.mean for (v, d), c in table.items() if d == dataset and c.n and not is_oracle(v)})
        for variant, rank in scores.rank(ascending=False, method="average").items():
            ranks.setdefault(variant, []).append(float(rank))
    return {variant: sum(r) / len(r) for variant, r in ranks.items()}


def paired_boostlu(frame: pd.DataFrame) -> pd.DataFrame:
    """For every method run with and without BoostLU (train + inference) on the same dataset and seeds: the mean
    per-seed difference (with - without) of test mAP and on how many of the shared seeds it is positive."""
    done = frame[frame.status == "done"]
    rows = []
    for (variant, dataset), boosted in done.groupby(["variant", "dataset"]):
        if not variant.endswith("+boostlu"):
            continue
        plain = done[(done.variant == variant[: -len("+boostlu")]) & (done.dataset == dataset)]
        pairs = boosted.set_index("seed").test_map.to_frame("with").join(
            plain.set_index("seed").test_map.to_frame("without"), how="inner")
        if len(pairs):
            delta = pairs["with"] - pairs["without"]
            rows.append({"method": variant[: -len("+boostlu")], "dataset": dataset, "mean_delta": delta.mean(),
                         "positive": int((delta > 0).sum()), "seeds": len(delta)})
    return pd.DataFrame(rows, columns=["method", "dataset", "mean_delta", "positive", "seeds"])
