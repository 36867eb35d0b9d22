"""The benchmark grid: datasets x variants x seeds, read from a TOML file (default `benchmark.toml`), run in order.

This is the one path from user input to RunSpecs: the grid file is validated field by field (`GridFile`), the
command line narrows it (`Grid.narrow`: datasets, variants, seeds, overrides, data folder, device, label seed), and
`Grid.cells` builds each cell's RunSpec once, with the tuned hyperparameters of its study where they exist. `bench`
and `tune` take their specs from here.

Cells whose record exists are skipped, so an interrupted benchmark resumes where it stopped and a finished one
trains nothing.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench import registry
from bench.claims import ClaimStore
from bench.errors import UserError
from bench.observation import COLE_SEED
from bench.rundata import resolve_device
from bench.runner import run_spec
from bench.spec import SEED_LIMIT, RunSpec, make_spec, trainer_defaults
from bench.tracking import Tracker
from bench.tuning import study_name, tuned_overrides
from bench.workspace import Workspace

Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
Name = Annotated[str, Field(min_length=1)]
Scalar = bool | int | float | str


class GridFile(BaseModel):
    """The schema of a benchmark TOML file: every field type-checked, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    datasets: list[Name] = Field(min_length=1)
    optional_datasets: list[Name] = []
    variants: list[Name] = Field(min_length=1)
    seeds: list[Seed] = Field(min_length=1)
    protocol: str = "single-positive"
    label_seed: Seed = COLE_SEED
    device: str = "auto"
    overrides: dict[str, Scalar] = {}
    data_dirs: dict[str, str] = {}


@dataclass(frozen=True)
class Grid:
    """A benchmark grid. `overrides` apply to every cell that uses them (e.g. {'epochs': 2}); `data_dirs` maps
    dataset -> folder."""

    datasets: list[str]
    variants: list[str]
    seeds: list[int]
    protocol: str = "single-positive"
    label_seed: int = COLE_SEED
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)

    def narrow(self, *, datasets: list[str] | None = None, variants: list[str] | None = None,
               seeds: list[int] | None = None, overrides: dict[str, Any] | None = None, data: str | None = None,
               device: str | None = None, label_seed: int | None = None) -> Grid:
        """This grid restricted or changed by command-line options; None keeps the grid's value. `data` is the
        folder of every selected dataset; `overrides` are added to (and win over) the grid's."""
        chosen = datasets or self.datasets
        data_dirs = {**self.data_dirs, **dict.fromkeys(chosen, data)} if data else self.data_dirs
        return dataclasses.replace(self, datasets=chosen, variants=variants or self.variants,
                                   seeds=seeds if seeds is not None else self.seeds,
                                   overrides={**self.overrides, **(overrides or {})}, data_dirs=data_dirs,
                                   device=device or self.device,
                                   label_seed=self.label_seed if label_seed is None else label_seed)

    def base_spec(self, dataset: str, variant: str, seed: int, extra: dict[str, Any] | None = None) -> RunSpec:
        """The RunSpec of one cell with the grid's options, `extra` hyperparameters under the grid's overrides."""
        return make_spec(dataset, variant, seed, overrides={**(extra or {}), **self.overrides},
                         protocol=self.protocol, label_seed=self.label_seed, device=resolve_device(self.device),
                         data_dir=self.data_dirs.get(dataset), strict=False)

    def study(self, dataset: str, variant: str) -> str:
        """The tuning study name of (dataset, variant) under this grid's settings."""
        settings = {**trainer_defaults(dataset), **self.overrides}
        return study_name(dataset, self.protocol, self.label_seed, variant, str(settings["backbone"]),
                          int(settings["epochs"]))

    def cells(self, tuned: Path | None = None) -> list[tuple[RunSpec, dict[str, Any]]]:
        """Every cell as (RunSpec, hyperparameter source), dataset-major, then variant, then seed. With `tuned` (a
        folder of tuning results), a cell whose study was tuned takes the study's best hyperparameters; the grid's
        own overrides still win."""
        cells = []
        for dataset in self.datasets:
            for variant in self.variants:
                found = tuned_overrides(tuned, self.study(dataset, variant)) if tuned is not None else None
                params, source = found or ({}, {"kind": "defaults"})
                cells += [(self.base_spec(dataset, variant, seed, params), source) for seed in self.seeds]
        return cells

    def specs(self) -> list[RunSpec]:
        """Every cell's RunSpec with default hyperparameters."""
        return [spec for spec, _ in self.cells()]


def load_grid(path: Path) -> Grid:
    """Parse and validate a benchmark TOML file; UserError with one line naming the file and the field otherwise.
    Optional datasets whose files are present (their plugin's `available`) join the datasets."""
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except IsADirectoryError:
        raise UserError(f"benchmark file {path} is a folder; give a TOML file") from None
    except OSError as error:
        raise UserError(f"cannot read benchmark file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"benchmark file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"benchmark file {path} is not valid TOML: {error}") from None
    try:
        parsed = GridFile.model_validate(table)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise UserError(f"benchmark file {path}: field {where!r}: {first['msg']}") from None
    fields = parsed.model_dump()
    optional = fields.pop("optional_datasets")
    for name in fields["datasets"] + optional:
        registry.dataset_class(name)
    data_dirs = fields["data_dirs"]
    fields["datasets"] += [name for name in optional if name not in fields["datasets"]
                           and registry.dataset_class(name).available(data_dirs.get(name))]
    return Grid(**fields)


def run_grid(cells: list[tuple[RunSpec, dict[str, Any]]], workspace: Workspace, *,
             claims: ClaimStore | None = None, tracker: Tracker | None = None,
             progress: bool = True) -> dict[str, int]:
    """Run every cell not yet recorded, printing one line per cell trained, failed or left to another worker.

    Returns how many cells ended in each state ('trained', 'failed', 'recorded', 'elsewhere').
    """
    workspace.ensure_writable()
    claims = claims or ClaimStore(workspace.claims_url())
    counts = dict.fromkeys(("trained", "failed", "recorded", "elsewhere"), 0)
    for number, (spec, source) in enumerate(cells, 1):
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
