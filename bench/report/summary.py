"""The leaderboard's first screen (`leaderboard.md`): one table and the findings the statistics support, with links to
the generated page of each recipe (`results/leaderboard-<recipe>.md`), where every other table is.

The table is the first recipe present (tuned before paper before defaults) read by clean validation, every variant,
every dataset, with the average rank. The findings are computed from the same records, each with its number and
interval, paired over seeds (`bench.report.stats`), and Holm-corrected within each finding's family:
- LL-R against AN, per dataset;
- BoostLU per method (with − without), the family being every such pair of the recipe;
- EM+APL against EM, per dataset;
- the best partial-label row of each dataset against the full-label oracle, by the equivalence test (TOST within
  ±EQUIVALENCE_MARGIN): "reaches the oracle" only when the equivalence holds after Holm.
"""

from __future__ import annotations

import pandas as pd

from bench.plan.recipes import DESCRIPTIONS, RECIPE
from bench.report import stats
from bench.report.frame import recipes_present
from bench.report.tables import PairedDelta, cells, is_oracle, paired_boostlu, paired_delta

MAX_LISTED = 6
"""The most pairs a finding lists by name before it counts the rest."""


def delta_text(pair: PairedDelta, adjusted: float) -> str:
    """'+1.23 [0.45, 2.01], p = 0.004' for a pair's mean difference, its 95 % interval and its Holm-adjusted p."""
    if pair.seeds < 2:
        return f"{pair.mean:+.2f} (one seed: no test)"
    low, high = pair.mean - pair.half_width, pair.mean + pair.half_width
    return f"{pair.mean:+.2f} [{low:+.2f}, {high:+.2f}], p(Holm) = {adjusted:.3f}"


def pairs_between(frame: pd.DataFrame, first: str, second: str) -> list[PairedDelta]:
    """`first` − `second` test mAP (clean selection) per dataset where both ran on at least one shared seed."""
    table = cells(frame, "test_map_clean")
    found = []
    for dataset in sorted(frame.dataset.unique()):
        if (first, dataset) in table and (second, dataset) in table:
            delta = stats.paired_differences(table[(first, dataset)].test_map, table[(second, dataset)].test_map)
            if delta:
                found.append(paired_delta(first, dataset, delta))
    return found


def comparison(frame: pd.DataFrame, first: str, second: str) -> str | None:
    """The finding '`first` − `second`' per dataset, Holm over the datasets; None when they never shared a seed."""
    pairs = pairs_between(frame, first, second)
    if not pairs:
        return None
    adjusted = stats.holm([pair.p_value for pair in pairs])
    parts = [f"{pair.dataset} {delta_text(pair, p)} ({verdict(pair, p)})" for pair, p in zip(pairs, adjusted,
                                                                                            strict=True)]
    return f"- **{first} − {second}**, test mAP: " + "; ".join(parts) + "."


def verdict(pair: PairedDelta, adjusted: float) -> str:
    """'better', 'worse' or 'no decision' at 5 % after Holm."""
    if pair.seeds < 2 or not adjusted < stats.ALPHA:
        return "no decision"
    return "better" if pair.mean > 0 else "worse"


def boostlu_finding(frame: pd.DataFrame) -> str | None:
    """BoostLU with − without, per method and dataset, Holm over every pair of the recipe."""
    pairs = paired_boostlu(frame, "test_map_clean")
    if not pairs:
        return None
    adjusted = stats.holm([pair.p_value for pair in pairs])
    decided = {"better": [], "worse": []}
    for pair, p in zip(pairs, adjusted, strict=True):
        outcome = verdict(pair, p)
        if outcome in decided:
            decided[outcome].append(f"{pair.method} on {pair.dataset} {pair.mean:+.2f} (p = {p:.3f})")
    raw = sum(pair.p_value < stats.ALPHA for pair in pairs)

    def listed(items: list[str]) -> str:
        shown = items[:MAX_LISTED] + ([f"{len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else [])
        return ", ".join(shown) if items else "none"

    undecided = len(pairs) - len(decided["better"]) - len(decided["worse"])
    return (f"- **BoostLU** (with − without, {len(pairs)} method × dataset pairs; {raw} significant before Holm, "
            f"{len(pairs) - undecided} after): helps {listed(decided['better'])}; hurts {listed(decided['worse'])}; "
            f"no decision on {undecided}.")


def oracle_finding(frame: pd.DataFrame) -> str | None:
    """The best partial-label row of each dataset against the plain full-label oracle, by the equivalence test."""
    table = cells(frame, "test_map_clean")
    parts, tests = [], []
    for dataset in sorted(frame.dataset.unique()):
        rows = {v: c for (v, d), c in table.items() if d == dataset and c.n and not is_oracle(v)}
        if not rows or ("full", dataset) not in table:
            continue
        best = max(sorted(rows), key=lambda v: rows[v].mean)
        delta = stats.paired_differences(rows[best].test_map, table[("full", dataset)].test_map)
        if len(delta) >= 2:
            tests.append((dataset, paired_delta(best, dataset, delta)))
    if not tests:
        return None
    adjusted = stats.holm([pair.equivalence_p for _, pair in tests])
    margin = stats.EQUIVALENCE_MARGIN
    for (dataset, pair), p in zip(tests, adjusted, strict=True):
        reaches = "reaches the oracle" if p < stats.ALPHA else "not shown to reach it"
        low, high = pair.mean - pair.half_width, pair.mean + pair.half_width
        parts.append(f"{dataset}: {pair.method} {pair.mean:+.2f} [{low:+.2f}, {high:+.2f}], equivalence within "
                     f"±{margin:g} p(Holm) = {p:.3f}: {reaches}")
    return "- **Best partial-label row − full-label oracle**: " + "; ".join(parts) + "."


def findings(frame: pd.DataFrame) -> list[str]:
    """The findings of one recipe's records (see the module docstring), those its records support."""
    lines = [comparison(frame, "ll-r", "an"), boostlu_finding(frame), comparison(frame, "em-apl", "em"),
             oracle_finding(frame)]
    return [line for line in lines if line]


def summary_markdown(sections: list[tuple[str, pd.DataFrame]], main_table: str, pages: list[tuple[str, str]],
                     results: str, stale: int) -> str:
    """The first screen: the records folder, links to every page ((title, link) pairs), the main table of the
    first setting's first recipe (`main_table`, already rendered) and its findings. `sections` are the settings
    (title, frame of current records); a second setting is named and left to the pages."""
    lines = ["# pamlbench leaderboard", "",
             f"Generated by `pamlbench report` from the run records in `{results}/`; do not edit by hand. Every table: "
             + " · ".join(f"[{title}]({link})" for title, link in pages) + ".", ""]
    if not sections:
        return "\n".join(lines + ["No run records yet: run `make bench`.", ""])
    title, frame = sections[0]
    recipe = recipes_present(frame)[0]
    runs = frame[frame.recipe == recipe]
    seeds = sorted(runs.seed.unique())
    lines += [f"## {recipe} recipe, selected by clean validation", "",
              f"{title}; recipe: {DESCRIPTIONS[recipe]}; seeds {', '.join(map(str, seeds))}.", "",
              main_table, "",
              "Test mAP (%), mean ± 95 % interval over seeds; **bold** the best group, <u>underlined</u> the second "
              "(ties inside the noise share a mark); the oracle is never ranked.", "",
              "## Findings", "",
              f"Paired over seeds, {recipe} recipe, clean selection; p-values Holm-corrected within each line.", "",
              *findings(runs), ""]
    observed = [name for name, kind in RECIPE.items() if kind.objective == "observed"]
    if RECIPE[recipe].objective == "clean" and not set(observed) & set(recipes_present(frame)):
        lines += ["The tuned recipe's observed-selection table uses hyperparameters chosen on clean validation labels; "
                  "the `tuned-observed` recipe, tuned on observed labels alone, has no records yet (`pamlbench tune "
                  "--recipe tuned-observed`, then `pamlbench bench --recipe tuned-observed`).", ""]
    if len(sections) > 1:
        lines += [f"{len(sections) - 1} other setting(s): " + "; ".join(t for t, _ in sections[1:])
                  + " (see the pages).", ""]
    if stale:
        lines += [f"{stale} record(s) made by other code versions are not shown (re-run `make bench`).", ""]
    return "\n".join(lines)
