"""The leaderboard's tables beside the main variants x datasets ones (`bench.report.leaderboard`): the regime
check, the BoostLU
ablation and paired deltas, tuned − defaults, the tuning-convergence check and budget, the annotation-frequency
groups, failures and details. Each builder returns (headers, rows) of text cells, or None when it has nothing to
show; `bench.report.leaderboard` renders and places them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.groups import group_maps
from bench.plan.papers import papers
from bench.report import stats
from bench.report.tables import Cell, against_oracle, cells, finite, is_oracle, paired_boostlu


def cell_text(cell: Cell | None, fmt: str) -> str:
    if cell is None or (cell.n == 0 and cell.failed == 0):
        return "–"
    if cell.n == 0:
        return "failed" if cell.failed == 1 else f"failed ({cell.failed})"
    pm = r"$\pm$" if fmt == "latex" else "±"
    text = f"{cell.mean:.2f}" if cell.n == 1 else f"{cell.mean:.2f} {pm} {cell.half_width:.2f}"
    return text + (f" ({cell.failed} failed)" if cell.failed else "")


def ablation_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """The paper's BoostLU ablation (cells and flag columns from papers.toml [ablation]), ours beside the paper's
    datasets; None if no cell was run."""
    ablation = papers()["ablation"]
    if not set(frame.variant) & {cell["variant"] for cell in ablation["cells"]}:
        return None
    table = cells(frame, "test_map_clean")
    datasets = sorted(frame.dataset.unique())
    paper_datasets = list(next(iter(ablation["values"].values())))
    rows = []
    for cell in ablation["cells"]:
        variant = cell["variant"]
        row = ["✓" if cell[flag] else "" for flag in ablation["flags"]] + [variant]
        row += [cell_text(table.get((variant, d)), "md") for d in datasets]
        row += [f"{ablation['values'][variant][d]:.2f}" for d in paper_datasets]
        rows.append(row)
    return [*ablation["flags"].values(), "variant", *datasets, *[f"paper {d}" for d in paper_datasets]], rows


def decision(p_value: float) -> str:
    """'yes' / 'no' at the 5 % level, '–' without a test."""
    return "–" if not finite(p_value) else "yes" if p_value < stats.ALPHA else "no"


def p_text(p_value: float) -> str:
    return "–" if not finite(p_value) else f"{p_value:.3f}"


def boostlu_pair_rows(frame: pd.DataFrame, selection: str) -> tuple[list[str], list[list[str]]] | None:
    """With minus without BoostLU per method and dataset: the mean difference and its interval, and the paired
    t-test's p-value raw and Holm-adjusted over the table's family, with both decisions."""
    pairs = paired_boostlu(frame, f"test_map_{selection}")
    if not pairs:
        return None
    adjusted = stats.holm([p.p_value for p in pairs])
    rows = [[p.method, p.dataset, f"{p.mean:+.2f}" + (f" ± {p.half_width:.2f}" if finite(p.half_width) else ""),
             f"{p.positive}/{p.seeds}", "yes" if p.excludes_zero else "no", p_text(p.p_value), p_text(holm),
             decision(holm)] for p, holm in zip(pairs, adjusted, strict=True)]
    return ["method", "dataset", "mean Δ test mAP (with − without BoostLU) ± 95 % CI", "seeds with Δ > 0",
            "CI excludes 0", "p (paired t)", "p (Holm, this table)", "Δ ≠ 0 after Holm"], rows


def oracle_rows(frame: pd.DataFrame, selection: str) -> tuple[list[str], list[list[str]]] | None:
    """Each BoostLU row minus the full+boostlu oracle: the mean difference, the paired t-test (raw and Holm over the
    table), and the equivalence test (TOST within ±EQUIVALENCE_MARGIN, Holm over the table): 'reaches the oracle'
    only when the equivalence holds after Holm."""
    pairs = against_oracle(frame, f"test_map_{selection}")
    if not pairs:
        return None
    different = stats.holm([p.p_value for p in pairs])
    equivalent = stats.holm([p.equivalence_p for p in pairs])
    rows = [[p.method, p.dataset, f"{p.mean:+.2f}" + (f" ± {p.half_width:.2f}" if finite(p.half_width) else ""),
             p_text(p.p_value), decision(holm_different), p_text(p.equivalence_p), p_text(holm_equivalent),
             "yes" if decision(holm_equivalent) == "yes" else "no"]
            for p, holm_different, holm_equivalent in zip(pairs, different, equivalent, strict=True)]
    margin = f"±{stats.EQUIVALENCE_MARGIN:g}"
    return ["variant", "dataset", "mean Δ test mAP (variant − full+boostlu) ± 95 % CI", "p (paired t)",
            "Δ ≠ 0 after Holm", f"p (TOST, {margin})", "p (TOST, Holm)", f"reaches the oracle (within {margin})"], rows


def regime_rows(frame: pd.DataFrame, records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """Per dataset, the regime criteria on the recorded validation curves (means over seeds): the oracle's gain over
    the last quarter of the epochs, and the memorising variant's drop from its peak; None without both."""
    regime = papers()["regime"]
    by_key = {r["run_key"]: r for r in records}
    done = frame[frame.status == "done"]
    rows = []
    for dataset, runs in done.groupby("dataset"):
        oracle = runs[runs.variant.map(is_oracle) & ~runs.variant.str.contains(r"\+| ", regex=True)]
        memorising = runs[runs.variant == regime["memorising"]]
        if oracle.empty or memorising.empty:
            continue
        oracle_curve = mean_curve([by_key[k] for k in oracle.run_key])
        memorising_curve = mean_curve([by_key[k] for k in memorising.run_key])
        quarter = round(len(oracle_curve) / 4)
        gain = oracle_curve[-1] - oracle_curve[-1 - quarter]
        drop = max(memorising_curve) - memorising_curve[-1]
        rows.append([dataset, str(len(oracle_curve)), f"{gain:+.2f}", "yes" if gain < regime["max_gain"] else "NO",
                     f"{drop:.2f} (peak at epoch {memorising_curve.index(max(memorising_curve)) + 1})",
                     "yes" if drop >= regime["min_drop"] else "NO"])
    return (["dataset", "epochs", f"oracle: validation mAP gain over the last quarter (< {regime['max_gain']:g})",
             "plateaued", f"{regime['memorising']}: last-epoch drop from its peak (≥ {regime['min_drop']:g})",
             "memorises"], rows) if rows else None


def regime_note(title: str, table: tuple[list[str], list[list[str]]], recipe: str) -> list[str]:
    """A line under the regime check naming the datasets whose `recipe` records miss one of its criteria."""
    if not title.startswith("Regime check"):
        return []
    missed = [row[0] for row in table[1] if "NO" in row]
    return [f"The {recipe} records do not meet the converged regime's criteria on {', '.join(missed)}: read their "
            "tables with that in mind.", ""] if missed else []


def mean_curve(records: list[dict[str, Any]]) -> list[float]:
    """Clean validation mAP per epoch, mean over `records`."""
    epochs = min(len(r["curve"]) for r in records)
    return [sum(r["curve"][e]["val_map"] for r in records) / len(records) for e in range(epochs)]


def dataset_details(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = []
    for dataset, runs in frame.groupby("dataset"):
        rows.append([dataset, ", ".join(str(e) for e in sorted(runs.epochs.unique())),
                     ", ".join(sorted(runs.image_shape.unique())),
                     ", ".join(sorted(runs.label_checksum.dropna().unique())),
                     ", ".join(sorted(runs.data_fingerprint.dropna().unique())),
                     ", ".join(sorted(runs.cpu_model.unique())), str(len(runs))])
    return ["dataset", "epochs", "image (C x H x W)", "label-draw checksum", "data fingerprint", "CPU model", "runs"], \
        rows


def variant_details(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = []
    for (recipe, variant, dataset), runs in frame.groupby(["recipe", "variant", "dataset"]):
        done = runs[runs.status == "done"]
        rows.append([variant, dataset, recipe, ", ".join(sorted(runs.provenance.unique())),
                     ", ".join(sorted(runs.hparams.unique())), ", ".join(sorted(runs.code_version.unique())),
                     f"{done.train_seconds.mean():.1f}" if len(done) else "–",
                     f"{done.peak_memory_mb.max():.0f}" if len(done) else "–"])
    rows.sort(key=lambda r: (not is_oracle(r[0]), r[0], r[1], r[2]))
    return ["variant", "dataset", "recipe", "hyperparameters from", "method hyperparameters", "code version",
            "mean train s", "peak MiB"], rows


def failure_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    failed = frame[frame.status != "done"].sort_values(["variant", "dataset", "recipe", "seed"])
    if failed.empty:
        return None
    return ["variant", "dataset", "recipe", "seed", "run key", "error"], [
        [r.variant, r.dataset, r.recipe, str(r.seed), r.run_key, r.error] for r in failed.itertuples()]


def group_rows(frame: pd.DataFrame, records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """Per variant and dataset whose records carry annotation-frequency groups (`bench.groups`, OpenImages): the
    mean over seeds of each group's mAP and of the all-class mAP (clean selection), beside the published ones
    (bench/plan/papers.toml [groups]) where they exist; None without such records."""
    by_key = {r["run_key"]: r for r in records}
    published = papers()["groups"]["values"]
    rows, width = [], 0
    for (variant, dataset), runs in frame[frame.status == "done"].groupby(["variant", "dataset"]):
        grouped = [by_key[k] for k in runs.run_key if by_key[k].get("class_groups")]
        if not grouped:
            continue
        per_seed = [group_maps(r["selections"]["clean"]["per_class_ap"], r["class_groups"]) for r in grouped]
        width = max(width, len(per_seed[0]))
        ours = [stats.mean([seed[g] for seed in per_seed]) for g in sorted(per_seed[0])]
        ours.append(stats.mean([r["selections"]["clean"]["test_map"] for r in grouped]))
        paper = published.get(variant, {}).get(dataset.split(" (")[0])
        rows.append([variant, dataset, str(len(grouped)), *(f"{v:.2f}" for v in ours),
                     " / ".join(f"{v:.2f}" for v in paper) if paper else "–"])
    if not rows:
        return None
    datasets = sorted({row[1].split(" (")[0] for row in rows})
    for name, values in papers()["groups"].get("context", {}).items():
        for dataset in datasets:
            if dataset in values:
                rows.append([f"{name} (published only)", dataset, "–", *["–"] * (width + 1),
                             " / ".join(f"{v:.2f}" for v in values[dataset])])
    return (["variant", "dataset", "seeds", *(f"group {g}" for g in range(1, width + 1)), "all classes",
             "paper (groups 1-5 / all)"], rows)


def tuning_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """The tuning-convergence check of the tuned rows' studies: best validation mAP after two thirds of the trials
    and after all of them, flagged when the last third still gained more than
    `bench.execute.tuning.CONVERGENCE_GAIN`."""
    from bench.plan.studies import CONVERGENCE_GAIN

    rows = []
    for (variant, dataset), runs in frame.groupby(["variant", "dataset"]):
        check = runs.hparam_source.iloc[0].get("convergence")
        if not check:
            continue
        gain = check.get("gain")
        rows.append([variant, dataset, str(check["trials"]), number(check.get("best_early")), number(check.get("best")),
                     f"{gain:+.2f}" if gain is not None else "–", "STILL IMPROVING" if check["improving"] else "no"])
    if not rows:
        return None
    return ["variant", "dataset", "trials", "best val mAP after 2/3 of them", "best val mAP after all", "gain",
            f"flagged (gain > {CONVERGENCE_GAIN:g})"], sorted(rows, key=lambda r: (r[1], not is_oracle(r[0]), r[0]))


def number(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "–"


def budget_lines(frame: pd.DataFrame) -> list[str]:
    """The tuning budget(s) the tuned rows' studies ran under, one line each."""
    from bench.plan.grid import TuningBudget

    budgets = {repr(source.get("budget")): source.get("budget") for source in frame.hparam_source}
    return [f"Tuning budget: {TuningBudget(**budget).describe()}." if budget else "Tuning budget: not recorded."
            for _, budget in sorted(budgets.items())] + [""]


def recipe_delta_rows(frame: pd.DataFrame, first: str, second: str) -> tuple[list[str], list[list[str]]] | None:
    """Per variant and dataset run under both recipes: `first` − `second` test mAP (clean selection), paired per
    seed, with its 95 % interval; None if no variant has both."""
    one = cells(frame[frame.recipe == first], "test_map_clean")
    other = cells(frame[frame.recipe == second], "test_map_clean")
    rows = []
    for key in sorted(set(one) & set(other), key=lambda k: (k[1], not is_oracle(k[0]), k[0])):
        delta = stats.paired_differences(one[key].test_map, other[key].test_map)
        if not delta:
            continue
        spread = stats.half_width(delta)
        rows.append([key[0], key[1], cell_text(one[key], "md"), cell_text(other[key], "md"),
                     f"{stats.mean(delta):+.2f}" + (f" ± {spread:.2f}" if finite(spread) else ""),
                     f"{sum(d > 0 for d in delta)}/{len(delta)}", "yes" if stats.excludes_zero(delta) else "no"])
    return (["variant", "dataset", first, second, f"mean Δ ({first} − {second}) ± 95 % CI", "seeds with Δ > 0",
             "CI excludes 0"], rows) if rows else None
