"""The records table that the report and the figures read: one row per run record with its setting, variant,
selections and provenance (`records_frame`), and the file-name slug of a setting (`file_slug`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.execute.identity import plugin_code_version
from bench.execute.ledger import NO_CARRY, Ledger
from bench.numerics import describe
from bench.plan.recipes import RECIPES
from bench.report.selection import RULES, rule_selection

SETTING_COLUMNS = ["protocol", "label_seed", "backbone", "training", "numerics"]
"""What makes two tables: records that differ in these are never in one table. Within a table, a dataset whose records
differ in their number of epochs or their data (fingerprint) gets one column for each (`separate_columns`)."""
END_TO_END, LINEAR = "end to end", "linear (frozen backbone)"
"""The two training settings: the whole network trained, or the classifier alone on frozen features."""
SELECTIONS = {
    "clean": "Selected by clean validation (the papers' protocol: best epoch by validation mAP on full labels)",
    "observed": "Selected by observed validation (realistic: best epoch by validation mAP on the observed labels)",
    "last": "Last epoch (no early stopping: what memorisation leaves)",
    "zhou": "Zhou et al.'s early stopping (the best epoch before the first one whose clean validation mAP does not "
            "improve)",
    "ll": "Large Loss Matters' early stopping (the best epoch until clean validation mAP falls more than 3 points "
          "below it)",
}


def hparam_label(source: dict[str, Any]) -> str:
    """' (k=v, ...)' for hand-set hyperparameters (`pamlbench run --set`); '' for a recipe's (each recipe has its
    own tables)."""
    if source.get("kind") != "manual":
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(source.get("values", {}).items())) + ")"


def provenance_text(source: dict[str, Any]) -> str:
    """Where a row's hyperparameters came from, with the values the grid file or --set changed."""
    kind = source.get("kind", "defaults")
    if kind == "tuned":
        values = ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                           for name, value in sorted((source.get("values") or {}).items()))
        text = f"tuned: {source.get('n_trials', '?')} trials, study {source.get('study', '?')}" + (
            f"; tuned values {values}" if values else "")
    elif kind == "paper":
        study = (f"; its grid study {source['study']} ({source.get('n_trials', '?')} trials)" if "study" in source
                 else "")
        text = f"paper: {source.get('source', '?')}; selection: {source.get('rule', 'clean')}{study}"
        if source.get("extrapolation"):
            text += f"; EXTRAPOLATED: {source['extrapolation']}"
    else:
        text = "defaults" if kind == "defaults" else "set by hand"
    changed = source.get("overrides") or {}
    return text + ("; overridden: " + ", ".join(f"{k}={v}" for k, v in changed.items()) if changed else "")


def pairing_text(spec: dict[str, Any], source: dict[str, Any]) -> str:
    """What a paired Δ with and without BoostLU must share besides the seed: the batch size, the head's learning-rate
    multiplier and the epoch-selection rule."""
    return f"batch {spec.get('batch_size')}, head x{spec.get('head_lr_mult')}, rule {source.get('rule', 'clean')}"


def current_code_version(method: str, dataset: str, numerics: dict[str, Any], ledger: Ledger) -> str | None:
    """The code version this code keys a run of `method` on `dataset` with on `numerics` (as `ledger` resolves it),
    or None when either plugin is gone."""
    try:
        return ledger.resolve(plugin_code_version(method, dataset), numerics)
    except UserError:
        return None


def current_records(records: list[dict[str, Any]], ledger: Ledger) -> list[dict[str, Any]]:
    """The records of `records` whose code version is the one this code keys their runs with (`current_code_version`
    under `ledger`): the records the report, the figures and the run keys use."""
    return [record for record in records if record.get("code_version") == current_code_version(
        record["spec"]["method"], record["spec"]["dataset"], record.get("numerics", {}), ledger)]


def selection_value(record: dict[str, Any], selection: str) -> float | None:
    """The test mAP of a record under `selection`: one the trainer picked, or a paper's rule replayed on the
    curve (`bench.report.selection`)."""
    if selection == "paper":
        selection = record.get("hparam_source", {}).get("rule", "clean")
    if selection in RULES:
        return rule_selection(record["curve"], selection)["test_map"] if record.get("curve") else None
    return record.get("selections", {}).get(selection, {}).get("test_map")


def records_frame(records: list[dict[str, Any]], ledger: Ledger = NO_CARRY) -> pd.DataFrame:
    """One row per record with the fields the tables use; `current` says if it was made by the current code (or by
    code that `ledger`, the results folder's carry-over ledger, carries to it)."""
    rows = []
    for record in records:
        spec = record["spec"]
        source = record.get("hparam_source", {})
        rows.append({
            "run_key": record["run_key"], "status": record["status"], "dataset": spec["dataset"],
            "variant": record["variant"] + hparam_label(source), "seed": spec["seed"],
            "protocol": spec["protocol"], "label_seed": spec["label_seed"], "backbone": spec["backbone"],
            "training": LINEAR if spec.get("freeze_backbone") else END_TO_END,
            "epochs": spec["epochs"], "numerics": describe(record.get("numerics", {})),
            "pairing": pairing_text(spec, source),
            "recipe": spec.get("recipe", "defaults"), "paper": source.get("paper"), "hparam_source": source,
            **{f"test_map_{name}": selection_value(record, name) for name in [*SELECTIONS, "paper"]},
            "train_seconds": record.get("train_seconds"), "peak_memory_mb": record.get("peak_memory_mb"),
            "label_checksum": record.get("label_checksum"), "data_fingerprint": record.get("data_fingerprint"),
            "code_version": record.get("code_version"), "provenance": provenance_text(source),
            "cpu_model": record.get("cpu_model", "?"),
            "image_shape": "x".join(map(str, record.get("image_shape", []))) or "?",
            "hparams": ", ".join(f"{k}={v}" for k, v in sorted(spec["hparams"].items())) or "–",
            "error": record.get("error", ""),
            "current": record.get("code_version") == current_code_version(spec["method"], spec["dataset"],
                                                                          record.get("numerics", {}), ledger),
        })
    columns = ["run_key", "status", "dataset", "variant", "recipe", "seed", "epochs", *SETTING_COLUMNS, "current"]
    return pd.DataFrame(rows, columns=columns if not rows else None)


def recipes_present(frame: pd.DataFrame) -> list[str]:
    """The recipes of `frame`'s rows, in the leaderboard's order (`bench.plan.recipes.RECIPES`)."""
    return [recipe for recipe in RECIPES if (frame.recipe == recipe).any()]


def file_slug(*parts: object) -> str:
    """A file-name part from `parts`, e.g. ('digits-mosaic', 'cpu AVX512, 2 threads') -> 'digits-mosaic_cpu-AVX512-2-
    threads' (letters, digits and '-', parts joined by '_')."""
    slugs = []
    for part in parts:
        compact = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in str(part)).strip("-")
        while "--" in compact:
            compact = compact.replace("--", "-")
        slugs.append(compact)
    return "_".join(slugs)
