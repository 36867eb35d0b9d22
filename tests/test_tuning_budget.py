"""The tuning budget's bookkeeping on hand-made values: the convergence check, and a study whose saved result was
made under the same budget is not run again (a clone has the results, not the Optuna database)."""

import json

import pytest

from bench.grid import Grid, TuningBudget
from bench.studies import convergence, saved_summary, spec_study, tuned_path
from bench.tuning import tune_locally
from bench.workers import WorkerPlan
from bench.workspace import Workspace


def test_convergence_compares_the_first_two_thirds_with_all_trials():
    check = convergence([70.0, None, 80.0, 79.0, 81.0, 80.2])  # 6 trials: the first 4, then all
    assert (check["early_trials"], check["best_early"], check["best"]) == (4, 80.0, 81.0)
    assert check["gain"] == pytest.approx(1.0) and check["improving"]


def test_a_gain_of_at_most_half_a_point_has_converged():
    assert not convergence([70.0, 80.0, 75.0, 80.5])["improving"]  # ceil(8/3) = 3 early; +0.5 is not more
    assert not convergence([90.0, 60.0, 61.0])["improving"]  # the best came first


def test_a_study_without_any_early_value_counts_as_improving():
    check = convergence([None, None, 70.0])
    assert check["best_early"] is None and check["improving"]


def test_a_study_saved_under_the_same_budget_is_not_run_again(tmp_path):
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    grid = Grid(["digits-mosaic"], ["an"], [0], device="cpu", overrides={"epochs": 2})
    budget = TuningBudget(n_trials=3)
    base = grid.base_spec("digits-mosaic", "an", budget.seed)
    saved = {"study": spec_study(base), "budget": budget.model_dump(), "n_trials": 3, "best_params": {"lr": 0.01}}
    workspace.tuned.mkdir(parents=True)
    tuned_path(workspace.tuned, saved["study"]).write_text(json.dumps(saved))
    seen = []
    tune_locally(grid, [base], workspace, budget, WorkerPlan(2, 1), on_summary=seen.append)
    assert seen == [saved]
    assert not (workspace.cache / "optuna.db").exists()  # no study was opened, nothing trained
    assert saved_summary(workspace.tuned, saved["study"], budget) == saved
    assert saved_summary(workspace.tuned, saved["study"], TuningBudget(n_trials=4)) is None  # a bigger budget
    assert saved_summary(workspace.tuned, saved["study"], TuningBudget(n_trials=3, seed=7)) is None
