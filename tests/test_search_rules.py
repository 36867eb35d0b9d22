"""The tuning protocol's rules, each on its own: the defaults are the first trials; pruned trials do not count
towards a budget of completed trials; each study has its own stable sampler seed; a winner at a range's edge widens
the range; the confirmation on several seeds picks the best mean, not the single-seed best. Then one small real
study under every rule at once."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from bench.execute.tuning import budget_reached, confirmed_trial, current_space, open_study, search, widen_at_edges
from bench.execute.workspace import Workspace
from bench.plan.grid import Grid, TuningBudget
from bench.plan.search_rules import (
    confirmation_candidates,
    confirmed,
    edge_side,
    first_trials,
    study_seed,
    widened,
)
from bench.plan.studies import spec_study, study_space, tuned_path
from bench.spec import make_spec

COMPLETED = TuningBudget(n_trials=3, count="completed", max_trials=8)


def in_memory_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def add(study, state: TrialState, value: float | None = None, lr: float = 1e-3) -> None:
    study.add_trial(create_trial(state=state, value=value, params={"lr": lr},
                                 distributions={"lr": FloatDistribution(1e-4, 1e-1, log=True)}))


def test_pruned_trials_do_not_count_towards_a_budget_of_completed_trials():
    study = in_memory_study()
    for _ in range(2):
        add(study, TrialState.COMPLETE, 80.0)
    for _ in range(5):
        add(study, TrialState.PRUNED)
    assert not budget_reached(study, COMPLETED)  # 7 finished, 2 completed of 3
    assert budget_reached(study, TuningBudget(n_trials=3))  # counting finished trials (the first recipe's rule)
    add(study, TrialState.COMPLETE, 81.0)
    assert budget_reached(study, COMPLETED)


def test_the_cap_on_finished_trials_ends_a_study_that_keeps_pruning():
    study = in_memory_study()
    add(study, TrialState.COMPLETE, 80.0)
    for _ in range(6):
        add(study, TrialState.PRUNED)
    assert not budget_reached(study, COMPLETED)  # 7 finished of a cap of 8
    add(study, TrialState.PRUNED)
    assert budget_reached(study, COMPLETED)
    assert TuningBudget(n_trials=20, count="completed").trial_cap == 60  # 0: three times the budget
    study.set_user_attr("extra_trials", 3)  # a widening or second budget raises both the count and the cap
    assert not budget_reached(study, COMPLETED)


def test_each_study_has_its_own_sampler_seed_and_it_is_stable():
    one = "pamlbench/digits-mosaic/single-positive/labels1200/an/small-cnn/12ep"
    other = "pamlbench/digits-mosaic/single-positive/labels1200/ll-r/small-cnn/12ep"
    assert study_seed(one, 100) == study_seed(one, 100) == 3_986_789_687  # the same in every process and session
    assert len({study_seed(one, 100), study_seed(other, 100), study_seed(one, 101)}) == 3
    assert 0 <= study_seed(one, 100) < 2**32


def test_the_defaults_and_the_paper_values_are_the_first_trials():
    space = {"lr": (3e-4, 3e-2), "delta_rel": (0.001, 0.1), "mode": ["a", "b"]}
    defaults = {"lr": 3e-3, "delta_rel": 0.01, "mode": "a", "unsearched": 1}
    assert first_trials(space, defaults, {}) == [{"lr": 3e-3, "delta_rel": 0.01, "mode": "a"}]
    paper = {"delta_rel": 0.002, "batch_size": 8}
    assert first_trials(space, defaults, paper) == [{"lr": 3e-3, "delta_rel": 0.01, "mode": "a"},
                                                    {"lr": 3e-3, "delta_rel": 0.002, "mode": "a"}]
    assert first_trials(space, {**defaults, "lr": 0.5}, {"delta_rel": 0.01}) == [{"delta_rel": 0.01, "mode": "a"}]


def test_a_winner_at_the_edge_of_a_range_widens_that_side():
    assert edge_side(2.9e-2, (3e-4, 3e-2), log=True) == "high"  # 0.99 of the way on the log scale
    assert edge_side(3.2e-4, (3e-4, 3e-2), log=True) == "low"
    assert edge_side(3e-3, (3e-4, 3e-2), log=True) is None
    assert edge_side(0.197, (0.0, 0.2), log=False) is None and edge_side(0.2, (0.0, 0.2), log=False) == "high"
    assert widened((3e-4, 3e-2), "high", True, (0, 1)) == pytest.approx((3e-4, 3e-1))  # by sqrt(100) = 10
    assert widened((3e-4, 3e-2), "low", True, (0, 1)) == pytest.approx((3e-5, 3e-2))
    assert widened((0.3, 0.9), "high", True, (0, 1)) == (0.3, 1)  # clipped to the declared bound
    assert widened((0.3, 1.0), "high", True, (0, 1)) is None  # already there: no widening
    assert widened((1.0, 10.0), "high", False, (1, 100)) == (1.0, 14.5)
    assert widened((2, 6), "low", False, (1, 100), integer=True) == (1, 6)


def test_a_study_whose_winner_sits_at_its_edge_widens_the_range_and_runs_more(tmp_path):
    grid = Grid(["digits-mosaic"], ["an"], [0], device="cpu")
    base = grid.base_spec("digits-mosaic", "an", 100)
    low, high = study_space(base)["lr"]
    study = in_memory_study()
    budget = TuningBudget(n_trials=4, count="completed", widen_edges=1)
    add(study, TrialState.COMPLETE, 70.0, lr=math.sqrt(low * high))
    add(study, TrialState.COMPLETE, 75.0, lr=high * 0.98)  # the winner, at the upper edge
    assert widen_at_edges(study, grid, base, budget)
    assert current_space(study, base, grid)["lr"] == pytest.approx((low, high * math.sqrt(high / low)))
    assert study.user_attrs["extra_trials"] == 2  # half a budget more
    assert study.user_attrs["widenings"][0]["side"] == "high"
    assert not widen_at_edges(study, grid, base, budget)  # at most widen_edges times per hyperparameter


def test_the_confirmation_picks_the_best_mean_over_seeds_not_the_single_seed_best():
    study = in_memory_study()
    for value, lr in ((90.0, 1e-3), (89.0, 2e-3), (88.0, 3e-3), (87.0, 4e-3)):
        add(study, TrialState.COMPLETE, value, lr=lr)
    add(study, TrialState.COMPLETE, 90.0, lr=1e-3)  # a repeat of trial 0's setting is one candidate, not two
    assert confirmation_candidates([(t.number, t.params, t.value) for t in study.trials], 3) == [0, 1, 2]
    study.set_user_attr("confirmation", {"0": {"100": 90.0, "101": 80.0, "102": 82.0},   # lucky on seed 100
                                         "1": {"100": 89.0, "101": 88.0, "102": 87.5},
                                         "2": {"100": 88.0, "101": 86.0, "102": 86.0}})
    budget = TuningBudget(n_trials=4, confirm_seeds=[100, 101, 102], confirm_top=3)
    assert study.best_trial.number == 0
    assert confirmed_trial(study, budget).number == 1
    assert confirmed({3: [80.0, 82.0], 1: [81.0, 81.0]}) == 1  # a tie goes to the earlier trial


@pytest.mark.slow
def test_a_real_study_under_every_rule(tmp_path, mini_mosaic):
    """Trial 0 is the defaults; the budget counts completed trials; the two best settings are confirmed on two
    seeds (the trials' own seed reusing the trial's value); the summary reports the confirmed winner and keeps the
    single-seed best."""
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    grid = Grid([mini_mosaic], ["an"], [0], device="cpu", overrides={"epochs": 1})
    budget = TuningBudget(n_trials=2, startup_trials=1, pruner="none", count="completed", first_trials="defaults",
                          sampler_seed="per-study", confirm_seeds=[100, 101], confirm_top=2)
    base = grid.base_spec(mini_mosaic, "an", budget.seed)
    from bench.execute.tuning import tune

    summary = tune(grid, base, workspace, budget, progress=False)
    study = open_study(grid, base, workspace.optuna_url(), budget)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert trials[0].params == {"lr": make_spec(mini_mosaic, "an", 0).lr} and trials[0].user_attrs["first"]
    assert summary["completed"] == 2 and study.user_attrs["concluded"]
    scores = summary["confirmation"]["scores"]
    assert sorted(scores) == ["0", "1"] and all(sorted(s) == ["100", "101"] for s in scores.values())
    assert scores["0"]["100"] == trials[0].value  # the trial's own seed: its value, not a second training
    means = {int(n): (s["100"] + s["101"]) / 2 for n, s in scores.items()}
    winner = max(means, key=lambda n: (means[n], -n))
    assert summary["best_trial"] == winner and summary["best_value"] == pytest.approx(means[winner])
    assert summary["best_params"] == trials[winner].params
    assert summary["study_best"]["value"] == max(t.value for t in trials)
    saved = json.loads(tuned_path(workspace.tuned, spec_study(base)).read_text())
    assert saved["best_params"] == summary["best_params"]
    search(study, grid, base, workspace.data_cache, budget, progress=False)  # concluded: nothing more runs
    assert len(open_study(grid, base, workspace.optuna_url(), budget).trials) == len(trials)


def test_a_study_of_another_budget_in_the_same_storage_is_refused(tmp_path):
    from bench.errors import UserError

    grid = Grid(["digits-mosaic"], ["an"], [0], device="cpu")
    base = grid.base_spec("digits-mosaic", "an", 100)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(grid, base, url, COMPLETED)
    assert study.user_attrs["budget"] == COMPLETED.model_dump()
    add(study, TrialState.COMPLETE, 80.0)
    assert open_study(grid, base, url, COMPLETED).user_attrs["budget"] == COMPLETED.model_dump()  # resumed
    with pytest.raises(UserError, match="already ran under another tuning budget"):
        open_study(grid, base, url, TuningBudget(n_trials=12))


def test_the_edges_and_bounds_are_inclusive_and_an_unbounded_side_moves_freely():
    bounds = (1.0, math.exp(20.0))                            # positions on the log scale are exact here
    assert edge_side(math.exp(1.0), bounds, log=True) == "low"          # exactly EDGE_SHARE from the low end
    assert edge_side(math.exp(19.0), bounds, log=True) == "high"        # exactly EDGE_SHARE from the high end
    assert edge_side(math.exp(2.0), bounds, log=True) is None
    space = {"lr": (1e-3, 1e-1)}
    assert first_trials(space, {"lr": 1e-3}, {}) == [{"lr": 1e-3}]     # a default on a bound is inside
    assert first_trials(space, {"lr": 1e-1}, {}) == [{"lr": 1e-1}]
    assert first_trials(space, {"lr": 2e-3}, {"lr": 1e-1}) == [{"lr": 2e-3}, {"lr": 1e-1}]
    assert widened((1.0, 10.0), "low", False, (None, None)) == (-3.5, 10.0)
    assert widened((1.0, 10.0), "high", False, (None, None)) == (1.0, 14.5)


def test_the_candidates_are_the_best_values_first_a_tie_to_the_earlier_trial():
    trials = [(0, {"lr": 1.0}, 80.0), (1, {"lr": 2.0}, 90.0), (2, {"lr": 3.0}, 85.0)]
    assert confirmation_candidates(trials, 2) == [1, 2]
    assert confirmation_candidates([(3, {"lr": 1.0}, 90.0), (2, {"lr": 2.0}, 90.0)], 2) == [2, 3]
