"""What a tuning study is, without running one: its name, what it searches, the budget of a paper's grid study,
and a finished study's saved result (`results/tuned/<study>.json`) with its convergence check. Running studies is
`bench.execute.tuning`'s.

- Study name: deterministic (`study_name`): one study per (dataset, protocol, label seed, variant, backbone and
  whether it is frozen, epochs), and under the `paper` recipe its paper's grid study ('/paper' at the end).
- Search space (`search_ranges`, shown by `pamlbench list methods --dataset D`): the learning rate in a range
  around the dataset's default, `boost_alpha` where BoostLU is on, and every method hyperparameter that declares a
  range (`Hyperparam.search` / `search_around`), minus what the grid fixes; a paper's grid study searches the lists
  of values its paper published (`study_space`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from bench import registry
from bench.errors import UserError
from bench.spec import TRAINING_HPARAMS, RunSpec, parse_variant, trainer_defaults


def study_name(dataset: str, protocol: str, label_seed: int, variant: str, backbone: str, epochs: int) -> str:
    """pamlbench/<dataset>/<protocol>/labels<label seed>/<variant>/<backbone>/<epochs>ep: one study per setting
    whose tuned hyperparameters may differ (the validation variant is a property of the search, `--val-variant`)."""
    return "/".join(["pamlbench", dataset, protocol, f"labels{label_seed}", variant, backbone, f"{epochs}ep"])


def trained_part(backbone: str, frozen: bool) -> str:
    """The backbone part of a study name: the backbone, with '-linear' when it is frozen (another setting)."""
    return f"{backbone}-linear" if frozen else backbone


def spec_study(spec: RunSpec) -> str:
    """The study of `spec`'s cell: the equal-budget study, under the `tuned-observed` recipe its study scored on
    observed labels ('/observed'), or under the `paper` recipe its paper's grid study ('/paper')."""
    name = study_name(spec.dataset, spec.protocol, spec.label_seed, spec.variant, trained_part(spec.backbone,
                      spec.freeze_backbone), spec.epochs)
    from bench.plan.recipes import RECIPE

    return name + RECIPE[spec.recipe].study_suffix


def tuned_path(tuned: Path, name: str) -> Path:
    return tuned / (re.sub(r"[^A-Za-z0-9_.+-]", "_", name) + ".json")


def learning_rate_range(dataset: str) -> tuple[float, float]:
    """The range the learning rate is tuned in on `dataset`: around the dataset's default, for every method."""
    return TRAINING_HPARAMS["lr"].search_range(trainer_defaults(dataset)["lr"])


def search_ranges(dataset: str, variant: str) -> dict[str, tuple[float, float]]:
    """name -> (low, high) of everything tuned for `variant` on `dataset`: the learning rate (around the dataset's
    default), boost_alpha with BoostLU, and every method hyperparameter that declares a range."""
    method_name, boost_train, boost_infer = parse_variant(variant)
    ranges = {"lr": learning_rate_range(dataset)}
    if boost_train or boost_infer:
        ranges["boost_alpha"] = TRAINING_HPARAMS["boost_alpha"].search_range(trainer_defaults(dataset)["boost_alpha"])
    for name, hp in registry.method_class(method_name).hparams.items():
        bounds = hp.search_range(hp.default_for(dataset))
        if bounds is not None:
            ranges[name] = bounds
    return ranges


def study_space(base: RunSpec, fixed: Collection[str] = ()) -> dict[str, tuple[float, float] | list[Any]]:
    """What the study of `base` searches, minus the names in `fixed` (a grid's overrides): under the `paper` recipe
    the values its paper's grid study tries (name -> list), otherwise `search_ranges` (name -> (low, high))."""
    from bench.plan.recipes import RECIPE, paper_recipe

    if RECIPE[base.recipe].from_paper:
        space = paper_recipe(base.dataset, base.variant).search
    else:
        space = search_ranges(base.dataset, base.variant)
    return {name: values for name, values in space.items() if name not in fixed}


def paper_settings(base: RunSpec) -> dict[str, Any]:
    """The settings `base`'s recipe fixes for every trial: its paper's under the `paper` recipe, none otherwise."""
    from bench.plan.recipes import RECIPE, paper_recipe

    if not RECIPE[base.recipe].from_paper:
        return {}
    return paper_recipe(base.dataset, base.variant).settings


def grid_budget(budget, space: dict[str, list[Any]]):
    """The budget of a paper's grid study: every setting of `space` once (Optuna's GridSampler seeded like the
    equal-budget studies), unpruned, trained with `budget`'s seed and scored by its objective."""
    return budget.model_copy(update={"sampler": "grid", "startup_trials": 0, "pruner": "none", "count": "finished",
                                     "n_trials": math.prod(len(values) for values in space.values()),
                                     "max_trials": 0, "first_trials": "none", "widen_edges": 0,
                                     "confirm_seeds": [], "extend_if_improving": False})


def declaration(name: str, method: str):
    """The Hyperparam declaring `name` (the trainer's or the method's)."""
    return TRAINING_HPARAMS.get(name) or registry.method_class(method).hparams[name]


CONVERGENCE_GAIN = 0.5
"""A study whose best validation mAP rose by more than this over its last third of trials is flagged as still
improving: its budget may be too small."""


def convergence(values: list[float | None]) -> dict[str, Any]:
    """The tuning-convergence check of one study, from its finished trials' values in trial order (None for a
    pruned trial): the best value after the first two thirds of them (rounded up) and after all, and whether the
    last third gained more than CONVERGENCE_GAIN ('improving'; also when the first two thirds have no value)."""
    early_count = math.ceil(2 * len(values) / 3)
    early = [v for v in values[:early_count] if v is not None]
    final = [v for v in values if v is not None]
    best_early = max(early) if early else None
    best = max(final) if final else None
    gain = None if best_early is None or best is None else best - best_early
    return {"trials": len(values), "early_trials": early_count, "best_early": best_early, "best": best,
            "gain": gain, "improving": gain is None or gain > CONVERGENCE_GAIN}


def saved_summary(tuned: Path, name: str, budget) -> dict[str, Any] | None:
    """The saved summary of study `name` if it finished under this very budget (a clone of the results has it even
    without the Optuna database that produced it), else None: the study is then run or resumed."""
    path = tuned_path(tuned, name)
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # ValueError: JSON, or an integer past Python's limit
        return None
    counted = summary.get("completed", 0) if budget.count == "completed" else summary.get("n_trials", 0)
    if summary.get("budget") != budget.model_dump() or counted < budget.n_trials:
        return None
    return summary


def tuned_overrides(tuned: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(best params, hparam source) of the study `name` saved in the folder `tuned`, or None when not tuned."""
    path = tuned_path(tuned, name)
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
        params = dict(summary["best_params"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise UserError(f"corrupt tuning result {path}: {error}; delete it or run `pamlbench tune` again") from None
    return params, {"kind": "tuned", "study": summary["study"], "n_trials": summary["n_trials"], "values": params,
                    "budget": summary.get("budget"), "convergence": summary.get("convergence")}
