"""What a study is, on hand-made values: its name (one per setting whose tuned values may differ) and file, what it
searches, a paper's grid study, the convergence check, the tuned values a run takes from a saved study, and a study
whose saved result was made under the same budget is not run again (a clone has the results, not the Optuna
database)."""

import dataclasses
import json
from pathlib import Path

import pytest
from fixtures import plugin_path

from bench import registry
from bench.errors import UserError
from bench.execute.tuning import tune_locally
from bench.execute.workers import WorkerPlan
from bench.execute.workspace import Workspace
from bench.plan.grid import Grid, TuningBudget
from bench.plan.studies import (
    convergence,
    declaration,
    grid_budget,
    paper_settings,
    saved_summary,
    search_ranges,
    spec_study,
    study_space,
    tuned_overrides,
    tuned_path,
)
from bench.spec import TRAINING_HPARAMS, make_spec


def test_convergence_compares_the_first_two_thirds_with_all_trials():
    check = convergence([70.0, None, 80.0, 79.0, 81.0, 80.2])  # 6 trials: the first 4, then all
    assert (check["early_trials"], check["best_early"], check["best"]) == (4, 80.0, 81.0)
    assert check["gain"] == pytest.approx(1.0) and check["improving"]


def test_the_convergence_check_reports_every_figure():
    assert convergence([60.0, 75.0, 74.0]) == {"trials": 3, "early_trials": 2, "best_early": 75.0, "best": 75.0,
                                               "gain": 0.0, "improving": False}
    assert convergence([None, None]) == {"trials": 2, "early_trials": 2, "best_early": None, "best": None,
                                         "gain": None, "improving": True}


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


PROJECT = Path(__file__).resolve().parent.parent


def test_one_study_per_setting_whose_tuned_values_may_differ():
    base = make_spec("digits-mosaic", "an", 0)
    name = spec_study(base)
    assert name == "pamlbench/digits-mosaic/single-positive/labels1200/an/small-cnn/12ep"
    assert tuned_path(PROJECT / "results" / "tuned", name).is_file()          # the committed study of that cell
    others = [spec_study(make_spec("fashion-mosaic", "an", 0, overrides={"epochs": 12})),
              spec_study(make_spec("digits-mosaic", "an+boostlu", 0))]
    others += [spec_study(dataclasses.replace(base, **change)) for change in (
        {"protocol": "partial-0.5"}, {"label_seed": 7}, {"backbone": "resnet50"}, {"epochs": 13})]
    assert len({name, *others}) == len(others) + 1
    assert spec_study(dataclasses.replace(base, freeze_backbone=True)) == name.replace("small-cnn", "small-cnn-linear")
    assert spec_study(dataclasses.replace(base, recipe="paper")) == name + "/paper"
    for same in ({"seed": 3}, {"lr": 0.05}, {"batch_size": 8}, {"recipe": "tuned"}):   # what a study tunes or runs
        assert spec_study(dataclasses.replace(base, **same)) == name


def test_a_study_s_file_name_keeps_letters_digits_and_signs_and_replaces_the_rest(tmp_path):
    name = "Pamlbench/VOC 2012/an+boostlu_x-1.5"
    assert tuned_path(tmp_path, name) == tmp_path / "Pamlbench_VOC_2012_an+boostlu_x-1.5.json"


def test_a_saved_summary_counts_only_under_its_budget_with_every_trial_finished(tmp_path):
    budget = TuningBudget(n_trials=3)
    path = tuned_path(tmp_path, "study")
    assert saved_summary(tmp_path, "study", budget) is None                    # not saved
    for trials, counts in ((2, False), (3, True), (4, True)):
        summary = {"study": "study", "budget": budget.model_dump(), "n_trials": trials, "best_params": {}}
        path.write_text(json.dumps(summary))
        assert (saved_summary(tmp_path, "study", budget) == summary) is counts
        assert (saved_summary(tmp_path, "study", budget) is None) is not counts
    path.write_text(json.dumps({"study": "study", "n_trials": 3, "best_params": {}}))    # no budget saved
    assert saved_summary(tmp_path, "study", budget) is None
    path.write_text(json.dumps({"study": "study", "budget": TuningBudget(n_trials=1).model_dump()}))  # no count saved
    assert saved_summary(tmp_path, "study", TuningBudget(n_trials=1)) is None
    path.write_text("{not json")
    assert saved_summary(tmp_path, "study", budget) is None
    path.unlink()
    path.mkdir()                                                                # a folder in the file's place
    assert saved_summary(tmp_path, "study", budget) is None


def test_tuned_values_come_from_the_saved_study_with_their_source(tmp_path):
    assert tuned_overrides(tmp_path, "study") is None                         # not tuned
    summary = {"study": "study", "n_trials": 12, "best_params": {"lr": 0.002, "ls_coef": 0.2},
               "budget": TuningBudget(n_trials=12).model_dump(), "convergence": convergence([80.0, 81.0])}
    path = tuned_path(tmp_path, "study")
    path.write_text(json.dumps(summary))
    assert tuned_overrides(tmp_path, "study") == (
        {"lr": 0.002, "ls_coef": 0.2},
        {"kind": "tuned", "study": "study", "n_trials": 12, "values": {"lr": 0.002, "ls_coef": 0.2},
         "budget": summary["budget"], "convergence": summary["convergence"]})
    for broken in ("{not json", json.dumps({"study": "study", "n_trials": 12}), json.dumps([1, 2])):
        path.write_text(broken)
        with pytest.raises(UserError, match=f"^corrupt tuning result {path}: .*; delete it or run `pamlbench tune` "
                                            "again$"):
            tuned_overrides(tmp_path, "study")


def test_a_study_searches_the_learning_rate_boostlu_s_alpha_and_the_method_s_declared_ranges():
    assert search_ranges("digits-mosaic", "an") == {"lr": pytest.approx((3e-4, 3e-2))}   # around the default 3e-3
    assert search_ranges("voc", "em") == {"lr": pytest.approx((1e-6, 1e-4)), "em_alpha": (0.01, 1.0)}
    assert search_ranges("digits-mosaic", "asl+boostlu-infer") == {
        "lr": pytest.approx((3e-4, 3e-2)), "boost_alpha": (1.0, 10.0), "gamma_neg": (0.0, 6.0),
        "gamma_pos": (0.0, 2.0), "clip": (0.0, 0.2)}
    base = make_spec("digits-mosaic", "asl", 0)
    assert study_space(base) == search_ranges("digits-mosaic", "asl")
    assert set(study_space(base, fixed={"lr", "clip"})) == {"gamma_neg", "gamma_pos"}   # what the grid fixes
    assert paper_settings(base) == {}


AROUND = """
from bench import Hyperparam, Method


class Around(Method):
    name = "around"
    summary = "test plugin: a weight tuned around its per-dataset default"
    hparams = {"weight": Hyperparam(0.1, per_dataset={"voc": 0.4}, low=0.0, search_around=2.0)}

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        return logits.sum() * self.hp["weight"]
"""


def test_a_range_around_the_default_follows_the_dataset_and_each_name_has_its_declaration(tmp_path):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "around.py").write_text(AROUND)
    with plugin_path(tmp_path):
        assert search_ranges("voc", "around")["weight"] == pytest.approx((0.2, 0.8))
        assert search_ranges("digits-mosaic", "around")["weight"] == pytest.approx((0.05, 0.2))
        assert declaration("weight", "around") is registry.method_class("around").hparams["weight"]
    assert declaration("lr", "an") is TRAINING_HPARAMS["lr"]


def test_a_paper_s_grid_study_tries_each_of_its_published_settings_once():
    cole = dataclasses.replace(make_spec("digits-mosaic", "an", 0), dataset="voc", recipe="paper")
    space = study_space(cole)
    assert space == {"batch_size": [8, 16], "lr": [1e-2, 1e-3, 1e-4, 1e-5]}
    assert study_space(cole, fixed={"batch_size"}) == {"lr": [1e-2, 1e-3, 1e-4, 1e-5]}
    budget = grid_budget(TuningBudget(n_trials=12, seed=5), space)
    assert (budget.sampler, budget.startup_trials, budget.pruner, budget.n_trials, budget.seed) == \
        ("grid", 0, "none", 8, 5)
    ll = dataclasses.replace(make_spec("digits-mosaic", "ll-r", 0), dataset="voc", recipe="paper")
    assert study_space(ll) == {"delta_rel": [0.001, 0.002, 0.003, 0.004, 0.005]}  # LL's README searches it
    assert paper_settings(ll) == {"batch_size": 16, "lr": 1e-5, "head_lr_mult": 10.0, "epochs": 10}
    em = dataclasses.replace(make_spec("digits-mosaic", "em", 0), dataset="voc", recipe="paper")
    assert study_space(em) == {}                                              # Zhou et al. published their values
