"""The benchmark grid: datasets x variants x seeds, read from a TOML file (default `benchmark.toml`), run in order.

Cells whose record exists are skipped, so an interrupted benchmark resumes where it stopped and a finished one
trains nothing.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.claims import ClaimStore
from bench.errors import UserError
from bench.observation import COLE_SEED
from bench.runner import Workspace, run_spec
from bench.spec import RunSpec, make_spec
from bench.tracking import Tracker
from bench.trainer import resolve_device
from bench.tuning import tuned_overrides

GRID_KEYS = {"datasets", "optional_datasets", "variants", "seeds", "protocol", "val_variant", "device", "label_seed",
             "overrides", "data_dirs"}


@dataclass
class Grid:
    """A benchmark grid. `overrides` apply to every run (e.g. {'epochs': 2}); `data_dirs` maps dataset -> folder.
    `optional_datasets` join `datasets` only where their files are present (their plugin's `available()`)."""

    datasets: list[str]
    variants: list[str]
    seeds: list[int]
    optional_datasets: list[str] = field(default_factory=list)
    protocol: str = "single-positive"
    val_variant: str = "clean"
    device: str = "auto"
    label_seed: int = COLE_SEED
    overrides: dict[str, Any] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from bench import registry

        for name in self.optional_datasets:
            available = getattr(registry.dataset_class(name), "available", None)
            if name not in self.datasets and available is not None and available(self.data_dirs.get(name)):
                self.datasets.append(name)

    def specs(self) -> list[RunSpec]:
        """Every cell of the grid with default hyperparameters, dataset-major, then variant, then seed."""
        return [spec for spec, _ in self.cells(None)]

    def cells(self, results: Path | None) -> list[tuple[RunSpec, dict[str, Any]]]:
        """Every cell as (RunSpec, hyperparameter source). With `results`, a cell whose study was tuned
        (results/tuned/) takes the study's best hyperparameters; the grid's own overrides still win."""
        device = resolve_device(self.device)
        cells = []
        for dataset in self.datasets:
            for variant in self.variants:
                for seed in self.seeds:
                    options = {"protocol": self.protocol, "label_seed": self.label_seed, "device": device,
                               "val_variant": self.val_variant, "data_dir": self.data_dirs.get(dataset)}
                    spec = make_spec(dataset, variant, seed, overrides=self.overrides, **options)
                    tuned = tuned_overrides(results, spec) if results is not None else None
                    if tuned is None:
                        cells.append((spec, {"kind": "defaults"}))
                    else:
                        params, source = tuned
                        cells.append((make_spec(dataset, variant, seed, overrides={**params, **self.overrides},
                                                **options), source))
        return cells


def load_grid(path: Path) -> Grid:
    """Parse a benchmark TOML file; UserError naming the file for anything malformed."""
    try:
        table = tomllib.loads(path.read_text())
    except OSError as error:
        raise UserError(f"cannot read benchmark file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"benchmark file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(table) - GRID_KEYS)
    if unknown:
        raise UserError(f"benchmark file {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(GRID_KEYS))})")
    missing = [k for k in ("datasets", "variants", "seeds") if k not in table]
    if missing:
        raise UserError(f"benchmark file {path}: missing key {missing[0]!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in table["seeds"]):
        raise UserError(f"benchmark file {path}: seeds must be non-negative integers")
    return Grid(**table)


def run_grid(cells: list[tuple[RunSpec, dict[str, Any]]] | list[RunSpec], workspace: Workspace, *,
             claims: ClaimStore | None = None, tracker: Tracker | None = None,
             progress: bool = True) -> dict[str, int]:
    """Run every spec not yet recorded, printing one line per cell trained, failed or left to another worker.

    Returns how many cells ended in each state ('trained', 'failed', 'recorded', 'elsewhere').
    """
    workspace.ensure_writable()
    claims = claims or ClaimStore(workspace.default_claims_url())
    counts = dict.fromkeys(("trained", "failed", "recorded", "elsewhere"), 0)
    for number, cell in enumerate(cells, 1):
        spec, source = cell if isinstance(cell, tuple) else (cell, {"kind": "defaults"})
        label = f"[{number}/{len(cells)}] {spec.dataset} {spec.variant} seed={spec.seed}"
        started = time.perf_counter()
        outcome = run_spec(spec, workspace, claims=claims, hparam_source=source, tracker=tracker, progress=progress)
        counts[outcome.state] += 1
        record = outcome.record
        if outcome.state == "trained":
            print(f"{label}: val mAP {record['val_map']:.2f}, test mAP {record['test_map']:.2f} "
                  f"(best epoch {record['best_epoch']}, {time.perf_counter() - started:.1f} s)", flush=True)
        elif outcome.state == "failed":
            print(f"{label}: FAILED, recorded as failed: {record['error']}", flush=True)
        elif outcome.state == "elsewhere":
            print(f"{label}: being trained by another worker", flush=True)
    return counts
