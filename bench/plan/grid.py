"""The benchmark grid: datasets x variants x seeds, read from a TOML file (default `benchmark.toml`).

This is the one path from user input to RunSpecs: the grid file is validated field by field (`GridFile`), the
command line narrows it (`Grid.narrow`: datasets, variants, seeds, recipes, overrides, data folder, device, label
seed), and `Grid.cells` builds each cell's RunSpec once, under each recipe of its dataset (`bench.plan.recipes`: tuned,
paper, defaults). `bench` and `tune` take their specs from here; `bench.execute.runner.run_grid` runs them.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench import registry
from bench.errors import UserError, field_error
from bench.observation import COLE_SEED
from bench.plan.recipes import RECIPE, RECIPES, PaperRecipe, paper_recipe
from bench.plan.studies import spec_study, tuned_overrides
from bench.rundata import resolve_device
from bench.spec import (
    SEED_LIMIT,
    RunSpec,
    make_spec,
    parse_variant,
    variant_trainer_hparams,
)

Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
Name = Annotated[str, Field(min_length=1)]
Scalar = bool | int | float | str


def refuse_unkeyed_features(spec: RunSpec) -> RunSpec:
    """`spec`, or UserError when it would train on cached features of a backbone given as `--weights none`.

    The feature cache (`bench.features`) names a random initialisation by its seed only when no weights are given at
    all, so with the explicit 'none' two seeds would share one cache although their random backbones differ. Until
    the cache key treats 'none' like no weights, such a run is refused rather than trained on the wrong features."""
    if spec.weights == "none" and (spec.freeze_backbone or spec.linear_init):
        raise UserError(f"{spec.variant}: the linear setting and LinearInit need a pretrained backbone here "
                        f"(--weights imagenet or a file; a mosaic's seeded random one is used without --weights): "
                        f"with --weights none the feature cache cannot tell the seeds' random backbones apart")
    return spec


class TuningBudget(BaseModel):
    """The one budget every study of a grid gets (the grid file's `[tuning]` table; `tune` options override it):
    a TPE sampler with `startup_trials` random trials first (or, for a paper's grid study,
    `bench.execute.tuning.grid_budget`,
    every setting of the grid), the pruner, and the seed of every trial's training (outside the benchmark's seeds).
    The objective is the best-epoch validation mAP on the `objective` labels (clean: the papers' protocol).

    `n_trials` counts finished (complete or pruned) trials, or with `count = "completed"` completed trials alone,
    pruned ones being extra up to `max_trials` finished ones (0: three times `n_trials`). The rules of
    `bench.plan.search_rules`, each off by default (the budget of the first tuned recipe): `first_trials = "defaults"`
    enqueues the defaults (and the paper's values) first; `sampler_seed = "per-study"` seeds each study's sampler
    from its name; `widen_edges` is how many times a range may widen when the winner sits at its edge (each
    widening adds half the budget); `confirm_seeds` re-trains the `confirm_top` best settings on those seeds and the
    best mean wins; `extend_if_improving` gives a study still improving after its budget a second budget, once."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    sampler: Literal["tpe", "grid"] = "tpe"
    startup_trials: int = Field(10, ge=0, le=1000)
    n_trials: int = Field(20, ge=1)
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: Seed = 100
    objective: Literal["clean", "observed"] = "clean"
    count: Literal["finished", "completed"] = "finished"
    max_trials: int = Field(0, ge=0)
    first_trials: Literal["none", "defaults"] = "none"
    sampler_seed: Literal["shared", "per-study"] = "shared"
    widen_edges: int = Field(0, ge=0, le=5)
    confirm_seeds: list[Seed] = Field(default_factory=list, max_length=10)
    confirm_top: int = Field(3, ge=1, le=10)
    extend_if_improving: bool = False

    @property
    def trial_cap(self) -> int:
        """The most finished trials a study runs for its first budget (pruned ones included)."""
        if self.count == "finished":
            return self.n_trials
        return self.max_trials or 3 * self.n_trials

    def describe(self) -> str:
        """One line for the leaderboard and the command line."""
        if self.sampler == "grid":
            return (f"every one of the {self.n_trials} settings of the grid, unpruned; objective: best-epoch "
                    f"validation mAP on {self.objective} labels; trials trained with seed {self.seed}")
        counted = (f"{self.n_trials} finished trials per study" if self.count == "finished" else
                   f"{self.n_trials} completed trials per study (pruned ones extra, at most {self.trial_cap} in all)")
        rules = []
        if self.first_trials == "defaults":
            rules.append("the defaults (and the paper's values) are the first trials")
        if self.widen_edges:
            rules.append(f"a range whose winner sits at its edge widens (at most {self.widen_edges} times, half a "
                         "budget each)")
        if self.confirm_seeds:
            rules.append(f"the {self.confirm_top} best settings re-trained on seeds "
                         f"{', '.join(map(str, self.confirm_seeds))}, the best mean wins")
        if self.extend_if_improving:
            rules.append("a study still improving after its budget gets a second one, once")
        seeding = "seed per study" if self.sampler_seed == "per-study" else f"seed {self.seed}"
        return (f"{counted}; {self.sampler.upper()} sampler ({seeding}, {self.startup_trials} random start-up "
                f"trials); {self.pruner} pruner on the running best; objective: best-epoch validation mAP on "
                f"{self.objective} labels; trials trained with seed {self.seed}" +
                "".join(f"; {rule}" for rule in rules))


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
    recipes: list[Literal[RECIPES]] | None = Field(None, min_length=1)
    tuning: TuningBudget = TuningBudget()


@dataclass(frozen=True)
class Grid:
    """A benchmark grid. `overrides` apply to every cell that uses them (e.g. {'epochs': 2}); `data_dirs` maps
    dataset -> folder; `recipes` are run on every dataset (None: each dataset's own, `Dataset.recipes`); `weights`
    are the backbone weights of every cell (None: each dataset's default); `tuning` is the budget of every study."""

    datasets: list[str]
    variants: list[str]
    seeds: list[int]
    protocol: str = "single-positive"
    label_seed: int = COLE_SEED
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    data_dirs: dict[str, str] = field(default_factory=dict)
    recipes: list[str] | None = None
    weights: str | None = None
    tuning: TuningBudget = field(default_factory=TuningBudget)
    override_origins: dict[str, str] = field(default_factory=dict)

    def origin_of(self, name: str) -> str | None:
        """Where the override `name` was set: '--set' (the command line), 'grid file' (its [overrides]), or None
        when it is not overridden."""
        if name not in self.overrides:
            return None
        return self.override_origins.get(name, "grid file")

    def narrow(self, *, datasets: list[str] | None = None, variants: list[str] | None = None,
               seeds: list[int] | None = None, overrides: dict[str, Any] | None = None, data: str | None = None,
               device: str | None = None, label_seed: int | None = None, recipes: list[str] | None = None,
               weights: str | None = None) -> Grid:
        """This grid restricted or changed by command-line options; None keeps the grid's value. `data` is the
        folder of every selected dataset; `overrides` (`--set`) are added to (and win over) the grid's, and their
        origin is kept (`origin_of`)."""
        chosen = datasets or self.datasets
        data_dirs = {**self.data_dirs, **dict.fromkeys(chosen, data)} if data else self.data_dirs
        origins = {**self.override_origins, **dict.fromkeys(overrides or {}, "--set")}
        return dataclasses.replace(self, datasets=chosen, variants=variants or self.variants,
                                   seeds=seeds if seeds is not None else self.seeds,
                                   overrides={**self.overrides, **(overrides or {})}, override_origins=origins,
                                   data_dirs=data_dirs,
                                   device=device or self.device, recipes=recipes or self.recipes,
                                   weights=weights or self.weights,
                                   label_seed=self.label_seed if label_seed is None else label_seed)

    def recipes_for(self, dataset: str) -> list[str]:
        """The recipes run on `dataset`: the grid's (or the command line's), else the dataset's own."""
        return list(self.recipes or registry.dataset_class(dataset).recipes)

    def check_overrides(self, names: list[str], origin: str) -> None:
        """UserError for an override in `names` that no cell of this grid has (a typo would otherwise train the
        default silently), naming the closest valid name and the valid ones; `origin` says where it came from."""
        accepted = accepted_hparams(self.variants)
        for name in names:
            if name not in accepted:
                close = difflib.get_close_matches(name, sorted(accepted), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"{origin} {name}: no variant of this grid has that hyperparameter{hint}; valid "
                                f"here: {', '.join(sorted(accepted))}")

    def base_spec(self, dataset: str, variant: str, seed: int, extra: dict[str, Any] | None = None,
                  recipe: str = "defaults") -> RunSpec:
        """The RunSpec of one cell with the grid's options, `extra` hyperparameters (the recipe's) under the grid's
        overrides."""
        return refuse_unkeyed_features(
            make_spec(dataset, variant, seed, overrides={**(extra or {}), **self.overrides},
                      protocol=self.protocol, label_seed=self.label_seed, device=resolve_device(self.device),
                      data_dir=self.data_dirs.get(dataset), strict=False, recipe=recipe, weights=self.weights))

    def study(self, dataset: str, variant: str, paper: PaperRecipe | None = None, recipe: str = "tuned") -> str:
        """The tuning study name of (dataset, variant) under this grid's settings: the equal-budget study of the
        tuned `recipe` ('/observed' at the end for tuned-observed), or with `paper`, the grid study of that paper's
        search (a different study, with '/paper' at the end)."""
        return spec_study(self.study_base(dataset, variant, self.tuning.seed, recipe, paper))

    def study_base(self, dataset: str, variant: str, seed: int, recipe: str,
                   paper: PaperRecipe | None = None) -> RunSpec:
        """The base spec of the study of (dataset, variant) under `recipe` (a tuned one, or with `paper` the paper's
        grid study): the cell's spec with the paper's settings, under the recipe whose name its study carries (the
        first tuned recipe's studies carry none: 'defaults')."""
        if paper is not None:
            return self.base_spec(dataset, variant, seed, paper.settings, "paper")
        named = recipe if RECIPE[recipe].study_suffix else "defaults"
        return self.base_spec(dataset, variant, seed, recipe=named)

    def with_overrides(self, source: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
        """`source` plus, under 'overrides', the resolved values of this grid's overrides that `spec` uses (from
        the grid file's [overrides] or --set), so that a record and its leaderboard row say what was changed."""
        values = {**{k: v for k, v in dataclasses.asdict(spec).items() if k != "hparams"}, **spec.method_hparams()}
        used = {name: values[name] for name in sorted(self.overrides) if values.get(name) is not None}
        return {**source, "overrides": used} if used else source

    def recipe_values(self, dataset: str, variant: str, recipe: str,
                      tuned: Path) -> tuple[dict[str, Any], dict[str, Any]] | str:
        """(values, hyperparameter source) of `variant` on `dataset` under `recipe`, or why it cannot run yet (a
        study not tuned, a paper's grid study not run, no published recipe). The `tuned` recipe takes the best values
        of the variant's study in the folder `tuned`; `paper` the paper's settings, and for a paper that published
        only its search, the best values of that search's grid study."""
        if RECIPE[recipe].tuned:
            found = tuned_overrides(tuned, self.study(dataset, variant, recipe=recipe))
            return found or f"no {recipe} study for {variant} on {dataset} (run `pamlbench tune --recipe {recipe}`)"
        if not RECIPE[recipe].from_paper:
            return {}, {"kind": "defaults"}
        try:
            paper = paper_recipe(dataset, variant)
        except UserError as error:
            return str(error)
        source = paper.source_record()
        if not paper.search:
            return paper.settings, source
        found = tuned_overrides(tuned, self.study(dataset, variant, paper))
        if found is None:
            return (f"the {paper.paper} grid study of {variant} on {dataset} has not run (run `pamlbench tune "
                    "--recipe paper`)")
        params, study = found
        values = {**paper.settings, **params}
        return values, {**source, "values": values, "study": study["study"], "n_trials": study["n_trials"]}

    def cells(self, tuned: Path) -> tuple[list[tuple[RunSpec, dict[str, Any]]], list[str]]:
        """Every cell as (RunSpec, hyperparameter source), dataset-major, then recipe, variant and seed, and a line
        for each (dataset, recipe, variant) that cannot run (see `recipe_values`). The grid's own overrides win over
        every recipe; `tuned` is the folder of tuning results."""
        cells, skipped = [], []
        for dataset in self.datasets:
            for recipe in self.recipes_for(dataset):
                for variant in self.variants:
                    found = self.recipe_values(dataset, variant, recipe, tuned)
                    if isinstance(found, str):
                        skipped.append(f"{recipe} recipe: {found}")
                        continue
                    values, source = found
                    for seed in self.seeds:
                        spec = self.base_spec(dataset, variant, seed, values, recipe)
                        cells.append((spec, self.with_overrides(source, spec)))
        return cells, skipped


def accepted_hparams(variants: list[str]) -> set[str]:
    """The hyperparameter names some variant of `variants` uses: the trainer's (boost_alpha only with a BoostLU
    variant) and each method's own."""
    accepted: set[str] = set()
    for variant in variants:
        accepted |= set(variant_trainer_hparams(variant))
        accepted |= set(registry.method_class(parse_variant(variant)[0]).hparams)
    return accepted


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
    except RecursionError:
        raise UserError(f"benchmark file {path} is nested too deeply to be a grid file") from None
    try:
        parsed = GridFile.model_validate(table)
    except ValidationError as error:
        raise UserError(f"benchmark file {path}: {field_error(error)}") from None
    fields = {name: getattr(parsed, name) for name in GridFile.model_fields}
    fields["recipes"] = list(fields["recipes"]) if fields["recipes"] else None
    optional = fields.pop("optional_datasets")
    for name in fields["datasets"] + optional:
        registry.dataset_class(name)
    data_dirs = fields["data_dirs"]
    fields["datasets"] = fields["datasets"] + [name for name in optional if name not in fields["datasets"]
                           and registry.dataset_class(name).available(data_dirs.get(name))]
    grid = Grid(**fields)
    grid.check_overrides(list(grid.overrides), f"benchmark file {path}: [overrides]")
    return grid

