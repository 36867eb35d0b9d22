"""Recipes: where a cell's training settings and hyperparameters come from. Each cell of a grid is run under one
recipe; the recipe is part of its RunSpec (so of its run key and record) and names the leaderboard table it goes to.

- `tuned`: the best values of the variant's equal-budget study (`pamlbench tune`, saved in results/tuned/), scored
  on clean validation labels; `tuned-observed`: the same study scored on the observed labels alone (`pamlbench tune
  --recipe tuned-observed`; its study's name ends in '/observed'), for the realistic table.
- `paper`: the recipe of the variant's own paper on that dataset, as data in bench/plan/papers.toml [recipes]: fixed
  training settings and method hyperparameters, the epoch-selection rule its code reports, and, where the paper
  published only a search (Cole et al.'s batch size x learning rate, Large Loss Matters' delta_rel), that search as
  a grid study whose best setting by clean validation mAP is the recipe (`pamlbench tune --recipe paper`). A variant
  with BoostLU takes the BoostLU paper's settings (its delta_rel for the LL methods it runs), with the method
  hyperparameters of the method's own paper; for a method BoostLU's code does not run, the recipe is marked an
  extrapolation.
- `defaults`: the dataset's defaults (its plugin's trainer settings) and each method's declared (per-dataset)
  defaults.

A dataset declares the recipes a grid runs on it by default (`Dataset.recipes`): tuned and defaults on the embedded
mosaics, paper on the real datasets whose papers published one; `--recipe` or a grid file's `recipes` choose others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError
from bench.plan.papers import papers
from bench.spec import parse_variant


@dataclass(frozen=True)
class Recipe:
    """What a recipe is, for every module that treats recipes differently (none compares their names):
    `objective`, for a tuned recipe, the validation labels its studies are scored on (None: not tuned);
    `study_suffix`, what its studies' names end with; `from_paper`, whether its values and search come from the
    papers (`bench/plan/papers.toml`), read first with each paper's own epoch-selection rule; `named` whether a
    cell's progress line names it (the defaults go without saying)."""

    name: str
    description: str
    objective: str | None = None
    study_suffix: str = ""
    from_paper: bool = False
    named: bool = True

    @property
    def tuned(self) -> bool:
        return self.objective is not None


RECIPE = {recipe.name: recipe for recipe in (
    Recipe("tuned", "every variant tuned with the same budget, at its study's best values", objective="clean"),
    Recipe("tuned-observed", "every variant tuned with the same budget on observed-label validation mAP (no clean "
           "label used anywhere), at its study's best values", objective="observed", study_suffix="/observed"),
    Recipe("paper", "each method's own paper: its settings on that dataset and its epoch-selection rule",
           study_suffix="/paper", from_paper=True),
    Recipe("defaults", "the dataset's default settings and each method's declared defaults", named=False),
)}
"""Every recipe by name, in the leaderboard's order. `tuned-observed` chooses its hyperparameters (and each trial's
epoch) on the observed labels alone, so that its observed-selection table uses no clean label anywhere."""
RECIPES = tuple(RECIPE)
DESCRIPTIONS = {name: recipe.description for name, recipe in RECIPE.items()}
TUNED = tuple(name for name, recipe in RECIPE.items() if recipe.tuned)
"""The tuned recipes, whose values are a study's best."""


@dataclass(frozen=True)
class PaperRecipe:
    """One paper's recipe for one variant on one dataset: `settings` (trainer settings and method hyperparameters
    it fixes), `search` (name -> the values its grid study tries; empty when the paper published its values), and
    `rule`, the epoch selection its code reports ('clean', 'zhou' or 'll', see bench.report.selection)."""

    paper: str
    source: str
    rule: str
    settings: dict[str, Any] = field(default_factory=dict)
    search: dict[str, list[Any]] = field(default_factory=dict)
    extrapolation: str | None = None

    def source_record(self) -> dict[str, Any]:
        """The hyperparameter source a record of this recipe keeps (`values`: what the recipe set; `extrapolation`:
        why the recipe is applied beyond what its paper's code runs, when it is)."""
        return {"kind": "paper", "paper": self.paper, "source": self.source, "rule": self.rule,
                "values": dict(self.settings), **({"extrapolation": self.extrapolation} if self.extrapolation else {})}


def recipe_papers() -> dict[str, dict[str, Any]]:
    """paper key -> its table in bench/plan/papers.toml [recipes]."""
    return papers()["recipes"]


def own_paper(method: str, dataset: str) -> tuple[str, dict[str, Any]] | None:
    """(key, table) of the paper whose recipe covers `method` on `dataset` (BoostLU's aside), None if no paper ran
    it there."""
    for key, table in recipe_papers().items():
        if not table.get("boostlu") and method in table.get("methods", ()) and dataset in table["datasets"]:
            return key, table
    return None


def paper_recipe(dataset: str, variant: str) -> PaperRecipe:
    """The `paper` recipe of `variant` on `dataset`; UserError when no paper published one there."""
    method, boost_train, boost_infer = parse_variant(variant)
    own = own_paper(method, dataset)
    if boost_train or boost_infer:
        boost = next((key, table) for key, table in recipe_papers().items() if table.get("boostlu"))
        if dataset not in boost[1]["datasets"]:
            raise UserError(f"no paper recipe for {variant} on {dataset}: the BoostLU paper covers "
                            f"{', '.join(boost[1]['datasets'])}; use --recipe defaults or tuned")
        chosen = boost
    elif own is None:
        raise UserError(f"no paper recipe for {variant} on {dataset}: no source paper published {method} there; "
                        "use --recipe defaults or tuned")
    else:
        chosen = own
    key, table = chosen
    settings = {**table.get("settings", {}), **table.get("per_dataset", {}).get(dataset, {})}
    if own is not None:
        settings.update(own[1].get("method_settings", {}).get(method, {}))
    extrapolation = None
    if table.get("boostlu"):
        settings.update(table.get("method_settings", {}).get(method, {}))
        if method not in table.get("methods", ()):
            extrapolation = (f"BoostLU's code runs {', '.join(table['methods'])} only: its settings applied to "
                             f"{method} are an extrapolation")
    return PaperRecipe(paper=key, source=table["source"], rule=table["rule"], settings=settings,
                       search=dict(table.get("search", {})), extrapolation=extrapolation)


def check_recipes(names: list[str], origin: str) -> list[str]:
    """`names` if each is a recipe; UserError naming `origin` otherwise."""
    for name in names:
        if name not in RECIPES:
            raise UserError(f"{origin}: unknown recipe {name!r}; use one of {', '.join(RECIPES)}")
    return names
