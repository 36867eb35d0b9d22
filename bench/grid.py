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

from bench.errors import UserError
from bench.observation import COLE_SEED
from bench.runner import Workspace, run_spec
from bench.spec import RunSpec, make_spec
from bench.trainer import resolve_device

GRID_KEYS = {"datasets", "variants", "seeds", "protocol", "val_variant", "device", "label_seed", "overrides",
             "data_dirs"}


@dataclass
class Grid:
    """A benchmark grid. `overrides` apply to every run (e.g. {'epochs': 2}); `data_dirs` maps dataset -> folder."""

    datasets: list[str]
    variants: list[str]
    seeds: list[int]
    protocol: str = "single-positive"
    val_variant: str = "clean"
    device: str = "auto"
    label_seed: int = COLE_SEED
    overrides: dict[str, Any] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)

    def specs(self) -> list[RunSpec]:
        """Every cell of the grid as a validated RunSpec, dataset-major, then variant, then seed."""
        device = resolve_device(self.device)
        return [make_spec(dataset, variant, seed, overrides=self.overrides, protocol=self.protocol,
                          label_seed=self.label_seed, val_variant=self.val_variant, device=device,
                          data_dir=self.data_dirs.get(dataset))
                for dataset in self.datasets for variant in self.variants for seed in self.seeds]


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


def run_grid(specs: list[RunSpec], workspace: Workspace, *, progress: bool = True) -> tuple[int, int]:
    """Run every spec not yet recorded, printing one line per trained cell. Returns (trained, skipped)."""
    trained = skipped = 0
    for number, spec in enumerate(specs, 1):
        label = f"[{number}/{len(specs)}] {spec.dataset} {spec.variant} seed={spec.seed}"
        started = time.perf_counter()
        record, fresh = run_spec(spec, workspace, progress=progress)
        if fresh:
            trained += 1
            print(f"{label}: val mAP {record['val_map']:.2f}, test mAP {record['test_map']:.2f} "
                  f"(best epoch {record['best_epoch']}, {time.perf_counter() - started:.1f} s)", flush=True)
        else:
            skipped += 1
    return trained, skipped
