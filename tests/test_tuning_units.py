"""The tuning orchestration in-process (`bench.execute.tuning`), on real Optuna studies (in memory or in a SQLite
file) whose trials are built by hand where no training is needed: the values a trial samples, which studies `tune`
runs under each recipe, the pruners and samplers, opening a study, counting trials, the first trials, each step
after a budget (confirm, widen, extend, conclude) and the saved summary. The tests that train use a tiny dataset
(mini-mosaic) for an epoch or two: a trial's objective, tracked trials that fail, are pruned or finish, confirmations,
and whole studies in this process and in worker processes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from bench.errors import UserError
from bench.execute.tuning import (
    advance,
    budget_reached,
    check_storage,
    completed_trials,
    confirm,
    current_space,
    enqueue_first_trials,
    finished_trials,
    make_pruner,
    make_sampler,
    open_study,
    run_trials,
    same_budget,
    search,
    sqlite_folder,
    start_parent,
    study_bases,
    study_convergence,
    study_worker,
    suggest,
    summarize,
    trial_worker,
    tune,
    tune_locally,
    widen_at_edges,
)
from bench.execute.workers import WorkerPlan
from bench.execute.workspace import Workspace
from bench.plan.grid import Grid, TuningBudget
from bench.plan.recipes import paper_recipe
from bench.plan.studies import grid_budget, spec_study, study_space, tuned_path
from bench.records import RECORD_FORMAT

LR = FloatDistribution(1e-5, 1.0, log=True)


def memory_study(**options):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", **options)


def add(study, state: TrialState, value: float | None = None, lr: float = 1e-3, epochs: int = 0) -> None:
    study.add_trial(create_trial(state=state, value=value, params={"lr": lr}, distributions={"lr": LR},
                                 intermediate_values={epoch: 50.0 for epoch in range(epochs)}))


def digits(variants=("an",), **options) -> Grid:
    return Grid(["digits-mosaic"], list(variants), [0], device="cpu", **options)


# What a trial samples

def test_a_trial_samples_each_range_on_its_scale_and_a_list_as_a_choice():
    study = memory_study(sampler=optuna.samplers.RandomSampler(seed=3))
    space = {"em_alpha": (0.01, 1.0), "apl_warmup": (2, 9), "neg_proportion": (0.5, 0.9), "apl_beta": [0.1, 0.3]}
    for _ in range(10):
        trial = study.ask()
        values = suggest(trial, "em-apl", space)
        assert set(values) == set(space) and values["apl_beta"] in (0.1, 0.3)
        assert isinstance(values["apl_warmup"], int) and 2 <= values["apl_warmup"] <= 9
        assert 0.01 <= values["em_alpha"] <= 1.0 and 0.5 <= values["neg_proportion"] <= 0.9
        study.tell(trial, 0.0)
    assert study.trials[0].distributions == {
        "em_alpha": FloatDistribution(0.01, 1.0, log=True), "apl_warmup": IntDistribution(2, 9),
        "neg_proportion": FloatDistribution(0.5, 0.9), "apl_beta": CategoricalDistribution([0.1, 0.3])}
    trial = study.ask()
    suggest(trial, "ll-r", {"exact_schedule": (0, 1), "lr": (1e-4, 1e-2)})   # a flag is no integer
    assert trial.distributions == {"exact_schedule": FloatDistribution(0, 1), "lr": FloatDistribution(1e-4, 1e-2,
                                                                                                      log=True)}


# Which studies `tune` runs

def test_the_tuned_recipes_run_one_study_per_cell_and_tuned_observed_scores_on_observed_labels():
    grid = digits(("an", "ls"))
    budget = TuningBudget(n_trials=5)
    bases, same = study_bases(grid, ["tuned"], budget)
    assert same is budget
    assert [spec_study(base) for base in bases] == [grid.study("digits-mosaic", "an"), grid.study("digits-mosaic",
                                                                                                   "ls")]
    assert all(base.seed == budget.seed for base in bases)
    bases, observed = study_bases(grid, ["tuned-observed"], budget)
    assert observed == budget.model_copy(update={"objective": "observed"})
    assert [base.recipe for base in bases] == ["tuned-observed"] * 2
    assert [spec_study(base) for base in bases][0] == grid.study("digits-mosaic", "an", recipe="tuned-observed")
    chosen = TuningBudget(n_trials=5, objective="observed")   # `tune --objective observed` on the tuned recipe
    assert study_bases(grid, ["tuned"], chosen)[1] is chosen


def test_a_recipe_with_nothing_to_search_is_refused():
    for recipes in (["defaults"], ["tuned", "paper"]):
        with pytest.raises(UserError) as raised:
            study_bases(digits(), recipes, TuningBudget())
        assert str(raised.value) == (
            "tune --recipe: give one of tuned, tuned-observed, paper (the equal-budget studies, scored on clean or "
            "on observed labels, or the papers' grid studies); the defaults recipe has nothing to search")
    with pytest.raises(UserError) as raised:
        study_bases(digits(), ["paper"], TuningBudget())
    assert str(raised.value) == ("tune --recipe paper: no grid study to run: no paper recipe for an on digits-mosaic: "
                                 "no source paper published an there; use --recipe defaults or tuned")


def test_the_paper_recipe_runs_the_grid_study_of_each_paper_that_published_its_search(capsys):
    grid = Grid(["voc"], ["an", "an+boostlu", "wan"], [0], device="cpu", data_dirs={"voc": "/data"})
    bases, budget = study_bases(grid, ["paper"], TuningBudget(n_trials=5))
    assert [base.variant for base in bases] == ["an", "wan"]
    assert all(base.recipe == "paper" and base.epochs == 10 and base.head_lr_mult == 1.0 for base in bases)
    assert budget == grid_budget(TuningBudget(n_trials=5), study_space(bases[0], grid.overrides))
    assert budget.sampler == "grid" and budget.n_trials == 8
    assert capsys.readouterr().out == ("tune: skipped: an+boostlu on voc: boostlu published its values; nothing to "
                                       "search\n")
    with_asl = Grid(["voc"], ["asl", "an"], [0], device="cpu", data_dirs={"voc": "/data"})
    assert [base.variant for base in study_bases(with_asl, ["paper"], TuningBudget())[0]] == ["an"]  # asl: no paper
    assert capsys.readouterr().out.startswith("tune: skipped: no paper recipe for asl on voc")
    fixed = Grid(["voc"], ["an"], [0], device="cpu", data_dirs={"voc": "/data"}, overrides={"batch_size": 16})
    assert study_bases(fixed, ["paper"], TuningBudget(n_trials=5))[1].n_trials == 4   # the grid's batch size is set
    mixed = Grid(["voc"], ["an", "ll-r"], [0], device="cpu", data_dirs={"voc": "/data"})
    with pytest.raises(UserError, match="^tune --recipe paper: these grid studies search different grids; tune one "
                                        r"paper's variants at a time \(--variants\)$"):
        study_bases(mixed, ["paper"], TuningBudget())
    assert paper_recipe("voc", "ll-r").search != paper_recipe("voc", "an").search
    large_loss = Grid(["voc"], ["ll-r", "ll-ct"], [0], device="cpu", data_dirs={"voc": "/data"})
    assert large_loss.base_spec("voc", "ll-r", 100).batch_size == 8                     # the defaults differ
    assert [(base.variant, base.recipe, base.batch_size, base.head_lr_mult, base.lr)
            for base in study_bases(large_loss, ["paper"], TuningBudget())[0]] == [
        ("ll-r", "paper", 16, 10.0, 1e-05), ("ll-ct", "paper", 16, 10.0, 1e-05)]      # the LL paper's settings


# Pruners and samplers

def test_the_median_pruner_waits_for_two_trials_and_a_third_of_the_epochs():
    study = memory_study(pruner=make_pruner("median", 12))
    for _ in range(2):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={}, distributions={},
                                     intermediate_values=dict.fromkeys(range(12), 90.0)))
    trial = study.ask()
    for epoch in range(4):
        trial.report(10.0, epoch)
        assert not trial.should_prune()          # epochs 0-3: warming up (12 // 3 = 4 steps)
    trial.report(10.0, 4)
    assert trial.should_prune()
    lone = memory_study(pruner=make_pruner("median", 2))
    lone.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={}, distributions={},
                                intermediate_values={0: 90.0, 1: 90.0}))
    trial = lone.ask()
    trial.report(10.0, 1)
    assert not trial.should_prune()              # one finished trial: still starting up
    lone.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={}, distributions={},
                                intermediate_values={0: 90.0, 1: 90.0}))
    assert trial.should_prune()                  # a warm-up of one step with 2 epochs, never 0


def test_each_pruner_by_name_and_an_unknown_one_refused():
    hyperband = make_pruner("hyperband", 12)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (1, 12, 3)
    assert isinstance(make_pruner("none", 12), optuna.pruners.NopPruner)
    with pytest.raises(UserError, match="^unknown pruner 'median '; use one of median, hyperband, none$"):
        make_pruner("median ", 12)


def test_a_grid_sampler_needs_lists_and_tpe_starts_with_its_random_trials():
    with pytest.raises(UserError, match="^the grid sampler needs a list of values for every searched name"):
        make_sampler(TuningBudget(sampler="grid"), {"lr": [0.1, 0.2], "ls_coef": (0.1, 0.4)}, 0)
    grid = make_sampler(TuningBudget(sampler="grid"), {"lr": [0.1, 0.2]}, 0)
    assert isinstance(grid, optuna.samplers.GridSampler)
    tpe = make_sampler(TuningBudget(startup_trials=4), {"lr": (1e-4, 1e-1)}, 7)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 4
    first = [make_sampler(TuningBudget(), {}, seed) for seed in (7, 7, 8)]
    values = []
    for sampler in first:
        study = memory_study(sampler=sampler)
        values.append(study.ask().suggest_float("lr", 1e-4, 1e-1, log=True))
    assert values[0] == values[1] != values[2]    # seeded


# Opening a study

def first_lr(grid: Grid, variant: str, url: str, budget: TuningBudget, offset: int = 0) -> float:
    study = open_study(grid, grid.base_spec("digits-mosaic", variant, 100), url, budget, sampler_offset=offset)
    trial = study.ask()
    return suggest(trial, variant, {"lr": (1e-4, 1e-1)})["lr"]


def test_studies_share_a_seed_or_take_one_each_and_workers_differ(tmp_path):
    grid = digits(("an", "wan"))
    shared, own = TuningBudget(n_trials=3), TuningBudget(n_trials=3, sampler_seed="per-study")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    assert first_lr(grid, "an", url, shared) == first_lr(grid, "wan", url, shared)
    url = f"sqlite:///{tmp_path / 'own.db'}"
    assert first_lr(grid, "an", url, own) != first_lr(grid, "wan", url, own)
    url = f"sqlite:///{tmp_path / 'offset.db'}"
    assert first_lr(grid, "an", url, shared) != first_lr(grid, "wan", url, shared, offset=1)


def test_a_study_opens_with_heartbeats_and_its_folder_made(tmp_path):
    grid = digits()
    url = f"sqlite:///{tmp_path / 'deep' / 'optuna.db'}"
    study = open_study(grid, grid.base_spec("digits-mosaic", "an", 100), url, TuningBudget(n_trials=3), heartbeat=7)
    assert (tmp_path / "deep" / "optuna.db").is_file()
    assert study.study_name == grid.study("digits-mosaic", "an") and study.direction.name == "MAXIMIZE"
    storage = study._storage
    assert (storage.get_heartbeat_interval(), storage._backend.grace_period) == (7, 21)
    assert isinstance(storage.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    with pytest.raises(UserError, match="^cannot open Optuna storage nodb://x: .*check the URL and that the database"):
        open_study(grid, grid.base_spec("digits-mosaic", "an", 100), "nodb://x", TuningBudget())


def test_a_study_s_sampler_takes_its_seed_plus_the_worker_s_offset_and_its_pruner_from_the_budget(tmp_path):
    from bench.plan.search_rules import study_seed

    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    budget = TuningBudget(n_trials=3, startup_trials=3, pruner="none", sampler_seed="per-study")
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def first_value(study) -> float:
        return suggest(study.ask(), "an", {"lr": (1e-4, 1e-1)})["lr"]

    seed = study_seed(spec_study(base), 100)
    for offset in (0, 2):
        opened = open_study(grid, base, url, budget, **({"sampler_offset": offset} if offset else {}))
        assert isinstance(opened.pruner, optuna.pruners.NopPruner)
        expected = memory_study(sampler=make_sampler(budget, {"lr": (1e-4, 1e-1)}, seed + offset))
        assert first_value(opened) == first_value(expected)
    experimental = [entry for entry in warnings.filters if entry[2] is optuna.exceptions.ExperimentalWarning]
    assert experimental and experimental[0][0] == "ignore"
    assert not [entry for entry in warnings.filters if entry[0] == "ignore" and entry[2] is Warning]


def test_a_paper_s_grid_study_samples_the_grid_left_by_the_overrides(tmp_path):
    grid = Grid(["voc"], ["an"], [0], device="cpu", data_dirs={"voc": "/data"}, overrides={"batch_size": 16})
    [base], budget = study_bases(grid, ["paper"], TuningBudget(n_trials=5))
    study = open_study(grid, base, f"sqlite:///{tmp_path / 'optuna.db'}", budget)
    space = study_space(base, grid.overrides)
    assert list(space) == ["lr"] and budget.n_trials == len(space["lr"]) == 4
    study.optimize(lambda trial: 50.0 + suggest(trial, "an", space)["lr"], n_trials=4)
    assert sorted(trial.params["lr"] for trial in study.trials) == sorted(space["lr"])
    assert study.sampler.is_exhausted(study)                   # every setting of the grid once


def test_workers_racing_to_create_a_study_retry_four_times_then_give_up(tmp_path, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    create, slept = optuna.create_study, []
    monkeypatch.setattr("bench.execute.tuning.time.sleep", slept.append)

    def create_after(left: list[int]):
        def create_after_races(**options):
            if left[0]:
                left[0] -= 1
                raise IntegrityError("INSERT INTO studies", None, Exception("UNIQUE constraint failed"))
            return create(**options)
        return create_after_races

    for races in (4, 5):
        left = [races]
        monkeypatch.setattr(optuna, "create_study", create_after(left))
        url = f"sqlite:///{tmp_path / f'{races}.db'}"
        if races == 4:
            assert open_study(grid, base, url, TuningBudget(n_trials=3)).study_name == spec_study(base)
        else:
            with pytest.raises(IntegrityError):
                open_study(grid, base, url, TuningBudget(n_trials=3))
        assert slept == pytest.approx([0.2, 0.4, 0.6, 0.8]) and left == [0]   # the fifth race is not waited out
        slept.clear()


def test_a_study_keeps_its_budget_and_one_made_otherwise_is_refused():
    budget = TuningBudget(n_trials=3)
    study = memory_study()
    assert same_budget(study, budget) is study and study.user_attrs["budget"] == budget.model_dump()
    assert same_budget(study, budget) is study
    unmarked = memory_study()
    add(unmarked, TrialState.COMPLETE, 1.0)   # trials, but no budget: made by another version of `tune`
    with pytest.raises(UserError, match="already ran under another tuning budget in this storage; delete it"):
        same_budget(unmarked, budget)
    assert "budget" not in unmarked.user_attrs


def test_a_storage_s_folder_is_made_and_a_bad_storage_refused(tmp_path):
    sqlite_folder(f"sqlite:///{tmp_path / 'a' / 'b' / 'optuna.db'}")
    assert (tmp_path / "a" / "b").is_dir()
    sqlite_folder(f"postgresql://host/{tmp_path / 'c' / 'db'}")
    assert not (tmp_path / "c").exists()
    check_storage(f"sqlite:///{tmp_path / 'a' / 'b' / 'optuna.db'}")
    with pytest.raises(UserError) as raised:
        check_storage("nodb://user:secret@x")
    message = str(raised.value)
    assert message.startswith("cannot open Optuna storage nodb://user:***@x: ") and "secret" not in message
    assert message.endswith("; check the URL and that the database server is running") and "None" not in message


# Counting trials

def test_finished_and_completed_trials():
    study = memory_study()
    add(study, TrialState.COMPLETE, 3.0)
    add(study, TrialState.PRUNED)
    add(study, TrialState.FAIL)
    add(study, TrialState.COMPLETE, 1.0)
    study.ask()                                   # running
    assert finished_trials(study) == 3
    assert [trial.number for trial in completed_trials(study)] == [0, 3]


def test_the_convergence_of_a_study_reads_pruned_trials_as_no_value():
    study = memory_study()
    for value in (70.0, 71.0, None, 72.0, 80.0, 81.0):
        add(study, TrialState.PRUNED if value is None else TrialState.COMPLETE, value)
    add(study, TrialState.FAIL)
    result = study_convergence(study)
    assert result["improving"] and result["trials"] == 6
    assert result["best_early"] == 72.0 and result["best"] == 81.0


# The first trials

def test_the_defaults_are_enqueued_first_in_a_new_study_only(tmp_path):
    grid = digits(("ls",))
    base = grid.base_spec("digits-mosaic", "ls", 100)
    on = TuningBudget(n_trials=3, first_trials="defaults")
    study = memory_study()
    enqueue_first_trials(study, grid, base, on)
    trial = study.ask()
    assert suggest(trial, "ls", study_space(base)) == {"lr": base.lr, "ls_coef": base.method_hparams()["ls_coef"]}
    assert trial.user_attrs == {"first": True}
    for budget, other in ((TuningBudget(n_trials=3), memory_study()),
                          (TuningBudget(n_trials=3, first_trials="defaults", sampler="grid"), memory_study()),
                          (on, study)):                                    # a study that has trials already
        before = len(other.trials)
        enqueue_first_trials(other, grid, base, budget)
        assert len(other.trials) == before


def test_the_paper_s_values_follow_the_defaults(tmp_path):
    grid = Grid(["voc"], ["an+boostlu"], [0], device="cpu", data_dirs={"voc": "/data"})
    base = dataclasses.replace(grid.base_spec("voc", "an+boostlu", 100), lr=5e-5)   # defaults other than the paper's
    study = memory_study()
    enqueue_first_trials(study, grid, base, TuningBudget(first_trials="defaults"))
    space = study_space(base)
    trials = [suggest(study.ask(), base.method, space) for _ in range(2)]
    assert trials == [{"lr": 5e-5, "boost_alpha": 5.0}, {"lr": 1e-5, "boost_alpha": 5.0}]   # the paper's lr
    study = memory_study()
    enqueue_first_trials(study, grid, grid.base_spec("voc", "an+boostlu", 100), TuningBudget(first_trials="defaults"))
    assert len(study.trials) == 1                                        # the paper's values are the defaults


# After a budget

def test_a_study_without_rules_concludes():
    grid = digits()
    study = memory_study()
    add(study, TrialState.COMPLETE, 80.0)
    assert not advance(study, grid, grid.base_spec("digits-mosaic", "an", 100), None, TuningBudget(n_trials=1))
    assert study.user_attrs["concluded"] is True


def test_a_study_still_improving_gets_a_second_budget_once(capsys):
    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    budget = TuningBudget(n_trials=6, extend_if_improving=True)
    study = memory_study(study_name="s")
    study.set_user_attr("extra_trials", 2)
    for value in (70.0, 71.0, 72.0, 73.0, 74.0, 90.0):
        add(study, TrialState.COMPLETE, value)
    assert advance(study, grid, base, None, budget)
    assert study.user_attrs["extended"] is True and study.user_attrs["extra_trials"] == 8
    assert capsys.readouterr().out == "tune s: still improving after its budget: a second budget of 6 trials\n"
    assert not advance(study, grid, base, None, budget)                  # once
    assert study.user_attrs["concluded"]
    flat = memory_study()
    for value in (70.0, 90.0, 72.0, 73.0, 74.0, 75.0):
        add(flat, TrialState.COMPLETE, value)
    assert not advance(flat, grid, base, None, budget) and "extended" not in flat.user_attrs


def test_a_confirmation_on_the_trials_own_seed_reuses_its_values_and_is_kept():
    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    study = memory_study()
    for value, lr in ((90.0, 1e-3), (91.0, 2e-3), (85.0, 3e-3)):
        add(study, TrialState.COMPLETE, value, lr=lr)
    budget = TuningBudget(n_trials=3, confirm_seeds=[100], confirm_top=2)
    confirm(study, grid, base, None, budget, progress=False)
    assert study.user_attrs["confirmation"] == {"1": {"100": 91.0}, "0": {"100": 90.0}}
    study.set_user_attr("confirmation", {"1": {"100": 0.0}, "0": {"100": 90.0}})
    confirm(study, grid, base, None, budget, progress=False)              # scored already: not again
    assert study.user_attrs["confirmation"]["1"] == {"100": 0.0}
    assert advance(study, grid, base, None, budget) is False              # confirmed, then concluded
    assert study.user_attrs["confirmation"]["1"] == {"100": 0.0}


def test_a_widening_is_printed_and_kept_and_never_for_a_grid_or_a_list(capsys):
    grid = digits(("em-apl",))
    base = grid.base_spec("digits-mosaic", "em-apl", 100)
    space = study_space(base)
    low, high = space["neg_proportion"]
    study = memory_study(study_name="s")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={"neg_proportion": low},
                                 distributions={"neg_proportion": FloatDistribution(low, high)}))
    budget = TuningBudget(n_trials=1, widen_edges=1)
    for off in (TuningBudget(n_trials=1), TuningBudget(n_trials=1, widen_edges=1, sampler="grid")):
        assert not widen_at_edges(study, grid, base, off)
    assert widen_at_edges(study, grid, base, budget)
    new_low = low - (high - low) / 2
    assert study.user_attrs["ranges"] == {"neg_proportion": [new_low, high]}
    assert study.user_attrs["widenings"] == [{"name": "neg_proportion", "side": "low", "from": [low, high],
                                              "to": [new_low, high], "winner": low}]
    assert study.user_attrs["extra_trials"] == 1                        # half of 1, at least 1
    assert capsys.readouterr().out == (f"tune s: the winner sits at a range's edge; widened neg_proportion "
                                       f"[{low:.4g}, {high:.4g}] -> [{new_low:.4g}, {high:.4g}]\n")
    assert not widen_at_edges(study, grid, base, budget)                # at most once each
    voc = Grid(["voc"], ["an"], [0], device="cpu", data_dirs={"voc": "/data"})
    paper_base = voc.study_base("voc", "an", 100, "paper", paper_recipe("voc", "an"))
    listed = memory_study()                                             # a paper's grid: lists, never widened
    listed.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={"lr": 0.01, "batch_size": 8},
                                  distributions={"lr": CategoricalDistribution([0.01, 0.001, 0.0001, 1e-05]),
                                                 "batch_size": CategoricalDistribution([8, 16])}))
    assert not widen_at_edges(listed, voc, paper_base, budget)


# The summary

def test_the_summary_counts_every_trial_and_is_saved(tmp_path):
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    budget = TuningBudget(n_trials=3)
    study = memory_study(study_name=spec_study(base))
    with pytest.raises(UserError, match="has no complete trial .*; run more trials$"):
        summarize(study, base, workspace, budget)
    add(study, TrialState.COMPLETE, 80.0, lr=1e-3, epochs=3)
    add(study, TrialState.PRUNED, lr=2e-3, epochs=2)
    add(study, TrialState.COMPLETE, 85.0, lr=4e-3, epochs=3)
    add(study, TrialState.FAIL, lr=5e-3, epochs=1)
    study.set_user_attr("widenings", [{"name": "lr"}])
    summary = summarize(study, base, workspace, budget)
    assert {key: summary[key] for key in ("study", "dataset", "variant", "method", "n_trials", "completed", "pruned",
                                          "failed", "epochs_trained", "best_value", "best_params", "best_trial",
                                          "protocol", "label_seed", "backbone", "epochs", "widenings")} == {
        "study": spec_study(base), "dataset": "digits-mosaic", "variant": "an", "method": "an", "n_trials": 3,
        "completed": 2, "pruned": 1, "failed": 1, "epochs_trained": 9, "best_value": 85.0,
        "best_params": {"lr": 4e-3}, "best_trial": 2, "protocol": base.protocol, "label_seed": base.label_seed,
        "backbone": base.backbone, "epochs": base.epochs, "widenings": [{"name": "lr"}]}
    assert summary["budget"] == budget.model_dump() and summary["convergence"] == study_convergence(study)
    assert summary["format"] == RECORD_FORMAT
    assert "confirmation" not in summary and "ranges" not in summary and "extended" not in summary
    assert json.loads(tuned_path(workspace.tuned, spec_study(base)).read_text()) == summary


def test_a_confirmed_summary_reports_the_mean_and_keeps_the_single_seed_best(tmp_path):
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    study = memory_study(study_name="s")
    add(study, TrialState.COMPLETE, 90.0, lr=1e-3)
    add(study, TrialState.COMPLETE, 89.0, lr=2e-3)
    scores = {"0": {"100": 90.0, "101": 70.0}, "1": {"100": 89.0, "101": 88.0}}
    study.set_user_attr("confirmation", scores)
    study.set_user_attr("extended", True)
    study.set_user_attr("ranges", {"lr": [1e-4, 1e-1]})
    summary = summarize(study, base, workspace, TuningBudget(n_trials=2, confirm_seeds=[100, 101], confirm_top=2))
    assert summary["best_trial"] == 1 and summary["best_value"] == 88.5 and summary["best_params"] == {"lr": 2e-3}
    assert summary["confirmation"] == {"seeds": [100, 101], "scores": scores}
    assert summary["study_best"] == {"trial": 0, "value": 90.0, "params": {"lr": 1e-3}}
    assert summary["extended"] is True and summary["ranges"] == {"lr": [1e-4, 1e-1]}


# Training: one trial, one confirmation

def test_a_trial_trains_the_cell_with_the_suggested_values_and_keeps_its_owner(tmp_path, mini_mosaic, capsys):
    grid = Grid([mini_mosaic], ["an"], [0], device="cpu", overrides={"epochs": 1})
    base = grid.base_spec(mini_mosaic, "an", 100)
    budget = TuningBudget(n_trials=1, pruner="none", objective="observed")
    study = memory_study(study_name="s")
    run_trials(study, grid, base, Workspace(tmp_path / "r", tmp_path / "c").data_cache, budget, progress=False,
               worker="node-1")
    [trial] = study.trials
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["worker"] == "node-1"
    assert trial.user_attrs["best_epoch"] == 1 and trial.user_attrs["owner"]["pid"] > 0
    assert trial.intermediate_values.keys() == {1}
    assert f"tune s: trial 0 val mAP {trial.value:.2f} with lr=" in capsys.readouterr().out
    run_trials(study, grid, base, tmp_path / "c", budget, progress=False)     # its budget reached: nothing more
    assert len(study.trials) == 1


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial (by number) at its first report, and no other."""

    def __init__(self, number: int) -> None:
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number


def test_tracked_trials_score_the_objective_s_labels_and_end_failed_pruned_or_finished(tmp_path, mini_mosaic, capsys,
                                                                                         monkeypatch):
    from mlflow.tracking import MlflowClient

    from bench.execute.tracking import Tracker
    from bench.trainer import NumericalFault, Trainer

    real_run, calls, results = Trainer.run, [], []

    def fail_first(self, **options):       # trial 0 diverges; the others train for real
        calls.append(self.spec)
        if len(calls) == 1:
            raise NumericalFault("non-finite loss in batch 1")
        results.append(real_run(self, **options))
        return results[-1]

    monkeypatch.setattr(Trainer, "run", fail_first)
    grid = Grid([mini_mosaic], ["ls"], [0], device="cpu", overrides={"epochs": 2})
    base = grid.base_spec(mini_mosaic, "ls", 100)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(tmp_path / "cache", uri)
    parent = start_parent(tracker, base, "s")
    study = memory_study(study_name="s", pruner=PruneTrial(2))
    data = Workspace(tmp_path / "r", tmp_path / "c").data_cache
    run_trials(study, grid, base, data, TuningBudget(n_trials=2, pruner="none", objective="observed"),
               tracker=tracker, parent=parent, progress=False)
    failed, complete, pruned = study.trials
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED]
    assert failed.user_attrs["error"] == "non-finite loss in batch 1"
    # the complete trial trained its own values on the tuning seed, and is scored on observed labels
    assert [(spec.seed, spec.lr, spec.method_hparams()["ls_coef"]) for spec in calls[1:]] == [
        (100, trial.params["lr"], trial.params["ls_coef"]) for trial in (complete, pruned)]
    trained = results[0]                                                    # trial 1's run
    observed = [point["val_map_observed"] for point in trained["curve"]]
    assert complete.intermediate_values == {1: observed[0], 2: max(observed)}          # the running best
    chosen = trained["selections"]["observed"]
    assert (complete.value, complete.user_attrs["best_epoch"]) == (chosen["val_map"], chosen["epoch"])
    assert pruned.intermediate_values.keys() == {1}
    out = capsys.readouterr().out
    assert f"tune s: trial 1 val mAP {complete.value:.2f} with lr={complete.params['lr']:.4g}, " \
        f"ls_coef={complete.params['ls_coef']:.4g}\n" in out
    assert f"tune s: trial 2 pruned after epoch 1 (best val mAP {pruned.intermediate_values[1]:.2f})\n" in out
    client = MlflowClient(tracking_uri=uri)
    runs = {run.info.run_name: run for run in mlflow_runs(uri, mini_mosaic, base.protocol)}
    assert {name: run.info.status for name, run in runs.items() if name.startswith("trial")} == {
        "trial 0": "FAILED", "trial 1": "FINISHED", "trial 2": "KILLED"}
    assert all(runs[f"trial {n}"].data.tags["mlflow.parentRunId"] == parent for n in range(3))
    assert [runs[f"trial {n}"].data.tags["pamlbench.run_key"] for n in range(3)] == [f"trial {n}" for n in range(3)]
    assert runs["trial 2"].data.tags["pamlbench.pruned"] == "true"
    assert "pamlbench.pruned" not in runs["trial 1"].data.tags
    history = client.get_metric_history(runs["trial 1"].info.run_id, "val_map_observed")
    assert [(metric.step, metric.value) for metric in history] == [(1, observed[0]), (2, observed[1])]
    record = json.loads(Path(client.download_artifacts(runs["trial 1"].info.run_id, "record.json",
                                                       str(tmp_path))).read_text())
    assert record["run_key"] == "trial 1" and record["status"] == "done"


def test_a_confirmation_on_another_seed_trains_that_seed(tmp_path, mini_mosaic, capsys):
    from bench.trainer import Trainer

    grid = Grid([mini_mosaic], ["an"], [0], device="cpu", overrides={"epochs": 1})
    base = grid.base_spec(mini_mosaic, "an", 100)
    study = memory_study(study_name="s")
    add(study, TrialState.COMPLETE, 50.0, lr=2e-3)
    data = tmp_path / "data"
    budget = TuningBudget(n_trials=1, confirm_seeds=[100, 101], confirm_top=1)
    study.set_user_attr("confirmation", {"0": {"100": 50.0}})       # seed 100 scored already: seed 101 still runs
    confirm(study, grid, base, data, budget, progress=False)
    assert (data / "mini-mosaic-v1.npz").is_file()                  # the dataset built in the data cache
    expected = Trainer(grid.base_spec(mini_mosaic, "an", 101, {"lr": 2e-3}), data, progress=False).run()
    assert study.user_attrs["confirmation"] == {"0": {"100": 50.0,
                                                      "101": expected["selections"]["clean"]["val_map"]}}
    assert f"tune s: confirmation of trial 0 on seed 101: val mAP {expected['selections']['clean']['val_map']:.2f}" \
        in capsys.readouterr().out


def test_a_confirmation_that_fails_numerically_scores_zero(tmp_path, mini_mosaic, capsys, monkeypatch):
    from bench.trainer import NumericalFault, Trainer

    def diverge(self, **_):
        raise NumericalFault("non-finite loss")

    monkeypatch.setattr(Trainer, "run", diverge)
    grid = Grid([mini_mosaic], ["an"], [0], device="cpu", overrides={"epochs": 1})
    study = memory_study(study_name="s")
    add(study, TrialState.COMPLETE, 50.0, lr=2e-3)
    confirm(study, grid, grid.base_spec(mini_mosaic, "an", 100), tmp_path / "data",
            TuningBudget(n_trials=1, confirm_seeds=[100, 101], confirm_top=1), progress=False)
    assert study.user_attrs["confirmation"] == {"0": {"100": 50.0, "101": 0.0}}
    assert capsys.readouterr().out == "tune s: confirmation of trial 0 on seed 101: val mAP 0.00\n"


# Whole studies on a tiny dataset: one epoch a trial

TINY = TuningBudget(n_trials=2, startup_trials=1, pruner="none", count="completed", first_trials="defaults")


def tiny(mini_mosaic: str, tmp_path):
    grid = Grid([mini_mosaic], ["an"], [0], device="cpu", overrides={"epochs": 1})
    return grid, grid.base_spec(mini_mosaic, "an", TINY.seed), Workspace(results=tmp_path / "results",
                                                                          cache=tmp_path / "cache")


def test_a_study_runs_its_budget_concludes_and_is_saved_and_then_runs_nothing(tmp_path, mini_mosaic, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    summary = tune(grid, base, workspace, TINY, progress=False, heartbeat=5)
    assert (workspace.data_cache / "mini-mosaic-v1.npz").is_file() and not (tmp_path / "None").exists()
    study = open_study(grid, base, workspace.optuna_url(), TINY)
    assert (summary["completed"], summary["n_trials"], summary["pruned"]) == (2, 2, 0)
    assert study.user_attrs["concluded"] is True and study.trials[0].params == {"lr": base.lr}
    assert [trial.intermediate_values for trial in study.trials] == [{1: trial.value} for trial in study.trials]
    assert json.loads(tuned_path(workspace.tuned, spec_study(base)).read_text()) == summary
    search(study, grid, base, workspace.data_cache, TINY, progress=False)       # concluded: nothing more runs
    assert len(study.trials) == 2
    tuned_path(workspace.tuned, spec_study(base)).unlink()                      # the summary lost, the study kept
    seen = []
    tune_locally(grid, [base], workspace, TINY, WorkerPlan(2, 1), on_summary=seen.append)
    assert seen == [summary] and len(open_study(grid, base, workspace.optuna_url(), TINY).trials) == 2
    assert json.loads(tuned_path(workspace.tuned, spec_study(base)).read_text()) == summary


def mlflow_runs(uri: str, dataset: str, protocol: str) -> list:
    """Every MLflow run of the experiment of (dataset, protocol)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(f"{dataset}/{protocol}").experiment_id])


def tracked_studies(uri: str, dataset: str, protocol: str) -> dict[str, list[str]]:
    """{parent run name: sorted names of its child runs} of the MLflow experiment of (dataset, protocol)."""
    runs = mlflow_runs(uri, dataset, protocol)
    parents = {run.info.run_id: run for run in runs if run.info.run_name.startswith("study ")}
    assert all(run.info.status == "FINISHED" and "best_val_map" in run.data.metrics for run in parents.values())
    return {run.info.run_name: sorted(child.info.run_name for child in runs
                                      if child.data.tags.get("mlflow.parentRunId") == run_id)
            for run_id, run in parents.items()}


def test_one_job_tunes_each_study_in_this_process_and_reports_it(tmp_path, mini_mosaic):
    from bench.execute.tracking import Tracker

    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = []
    tune_locally(grid, [base], workspace, TINY, WorkerPlan(1, 1), on_summary=seen.append,
                 tracker=Tracker(workspace.cache, uri), heartbeat=5)
    [summary] = seen
    assert summary["study"] == spec_study(base) and summary["completed"] == 2
    assert tuned_path(workspace.tuned, spec_study(base)).is_file()
    trials = open_study(grid, base, workspace.optuna_url(), TINY).trials
    assert {trial.user_attrs["owner"]["pid"] for trial in trials} == {os.getpid()}   # trained in this process
    assert tracked_studies(uri, mini_mosaic, base.protocol) == {f"study an on {mini_mosaic}": ["trial 0", "trial 1"]}


def test_two_jobs_tune_the_studies_in_worker_processes_each_under_its_parent_run(tmp_path, mini_mosaic):
    from bench.execute.tracking import Tracker

    grid = Grid([mini_mosaic], ["an", "wan"], [0], device="cpu", overrides={"epochs": 1})
    bases = [grid.base_spec(mini_mosaic, variant, TINY.seed) for variant in ("an", "wan")]
    workspace = Workspace(results=tmp_path / "results", cache=tmp_path / "cache")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = []
    tune_locally(grid, bases, workspace, TINY, WorkerPlan(2, 1), on_summary=seen.append,
                 tracker=Tracker(workspace.cache, uri), heartbeat=5)
    assert sorted(summary["study"] for summary in seen) == sorted(spec_study(base) for base in bases)
    for summary in seen:
        assert json.loads(tuned_path(workspace.tuned, summary["study"]).read_text()) == summary
    for base in bases:
        owners = {trial.user_attrs["owner"]["pid"] for trial in open_study(grid, base, workspace.optuna_url(),
                                                                               TINY).trials}
        assert len(owners) == 1 and os.getpid() not in owners                  # trained in a worker process
    assert tracked_studies(uri, mini_mosaic, bases[0].protocol) == {
        f"study an on {mini_mosaic}": ["trial 0", "trial 1"], f"study wan on {mini_mosaic}": ["trial 0", "trial 1"]}
    assert (workspace.data_cache / "mini-mosaic-v1.npz").is_file()    # built by the workers in the data cache


def test_a_study_worker_runs_the_whole_search_and_a_trial_worker_only_trials(tmp_path, mini_mosaic):
    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    url = workspace.optuna_url()
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trial_worker(grid, base, url, TINY, 0, 5.0, (str(tmp_path / "cache"), mlflow_uri), None,
                 str(workspace.data_cache), worker="node-2")
    study = open_study(grid, base, url, TINY)
    assert len(completed_trials(study)) == 2 and not study.user_attrs.get("concluded")   # the driver advances it
    assert {trial.user_attrs["worker"] for trial in study.trials} == {"node-2"}
    runs = mlflow_runs(mlflow_uri, mini_mosaic, base.protocol)
    assert sorted(run.info.run_name for run in runs) == ["trial 0", "trial 1"]   # tracked from the worker
    assert (tmp_path / "cache" / "mlartifacts").is_dir()
    study_worker(grid, base, url, TINY, 5.0, None, None, str(workspace.data_cache))
    study = open_study(grid, base, url, TINY)
    assert study.user_attrs["concluded"] is True and len(study.trials) == 2   # its budget was reached already
    assert start_parent(None, base, spec_study(base)) is None


def test_a_tracked_study_is_a_finished_parent_run_with_one_child_run_per_trial(tmp_path, mini_mosaic):
    from mlflow.tracking import MlflowClient

    from bench.execute.tracking import Tracker

    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = tune(grid, base, workspace, TINY, tracker=Tracker(tmp_path / "cache", uri), progress=False)
    runs = mlflow_runs(uri, mini_mosaic, base.protocol)
    [parent] = [run for run in runs if run.info.run_name == f"study an on {mini_mosaic}"]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["pamlbench.run_key"] == f"study {spec_study(base)}"
    assert parent.data.metrics["best_val_map"] == summary["best_value"]
    assert parent.data.metrics["best_epoch"] == 1
    assert sorted(run.info.run_name for run in children) == ["trial 0", "trial 1"]
    assert all(run.info.status == "FINISHED" and "best_val_map" in run.data.metrics for run in children)
    client = MlflowClient(tracking_uri=uri)
    record = json.loads((Path(client.download_artifacts(parent.info.run_id, "record.json", str(tmp_path)))
                         ).read_text())
    assert record["summary"] == summary and record["run_key"] == spec_study(base)


def test_advancing_widens_a_range_at_its_edge_before_anything_else():
    grid = digits()
    base = grid.base_spec("digits-mosaic", "an", 100)
    low, high = study_space(base)["lr"]
    study = memory_study(study_name="s")
    add(study, TrialState.COMPLETE, 90.0, lr=high)
    assert advance(study, grid, base, None, TuningBudget(n_trials=3, widen_edges=1, extend_if_improving=True))
    assert study.user_attrs["ranges"]["lr"][1] > high and study.user_attrs["extra_trials"] == 1  # 3 // 2
    assert "concluded" not in study.user_attrs and "extended" not in study.user_attrs


def test_a_second_budget_adds_the_budget_to_no_extra_trials():
    grid = digits()
    study = memory_study(study_name="s")
    for value in (70.0, 71.0, 72.0, 73.0, 74.0, 90.0):
        add(study, TrialState.COMPLETE, value, lr=1e-3)
    assert advance(study, grid, grid.base_spec("digits-mosaic", "an", 100), None,
                   TuningBudget(n_trials=6, extend_if_improving=True))
    assert study.user_attrs["extra_trials"] == 6


def test_each_range_widens_its_own_number_of_times_and_earlier_widenings_are_kept(capsys):
    grid = digits(("ls",))
    base = grid.base_spec("digits-mosaic", "ls", 100)
    space = study_space(base)
    (lr_low, lr_high), (coef_low, coef_high) = space["lr"], space["ls_coef"]
    middle = math.sqrt(lr_low * lr_high)
    distributions = {"lr": FloatDistribution(1e-6, 1.0, log=True), "ls_coef": FloatDistribution(1e-4, 1.0, log=True)}
    study = memory_study(study_name="s")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={"lr": lr_high, "ls_coef": coef_low},
                                 distributions=distributions))
    budget = TuningBudget(n_trials=3, widen_edges=1)
    assert widen_at_edges(study, grid, base, budget)          # both at an edge: both widen, in one line
    assert set(study.user_attrs["ranges"]) == {"lr", "ls_coef"}
    assert re.fullmatch(r"tune s: the winner sits at a range's edge; widened lr \[[^]]+\] -> \[[^]]+\], "
                        r"ls_coef \[[^]]+\] -> \[[^]]+\]\n", capsys.readouterr().out)
    study = memory_study(study_name="t")
    study.set_user_attr("widenings", [{"name": "lr", "side": "high", "from": [lr_low, lr_high],
                                       "to": [lr_low, lr_high * 10], "winner": lr_high}])
    study.set_user_attr("ranges", {"lr": [lr_low, lr_high * 10]})
    study.set_user_attr("extra_trials", 1)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0,
                                 params={"lr": lr_high * 10, "ls_coef": coef_high}, distributions=distributions))
    assert widen_at_edges(study, grid, base, budget)          # lr used its one widening; ls_coef has its own
    assert [w["name"] for w in study.user_attrs["widenings"]] == ["lr", "ls_coef"]
    assert study.user_attrs["ranges"]["lr"] == [lr_low, lr_high * 10]   # kept
    assert study.user_attrs["ranges"]["ls_coef"][0] == coef_low and study.user_attrs["extra_trials"] == 2
    study = memory_study(study_name="u")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=90.0, params={"lr": middle, "ls_coef": coef_high},
                                 distributions=distributions))
    assert widen_at_edges(study, grid, base, TuningBudget(n_trials=3, widen_edges=2))  # lr inside: ls_coef alone
    assert list(study.user_attrs["ranges"]) == ["ls_coef"]


def test_a_tracked_study_worker_logs_its_trials_under_the_study_s_parent_run(tmp_path, mini_mosaic, monkeypatch):
    from bench.execute.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking_cache = tmp_path / "tracking"
    parent = start_parent(Tracker(tracking_cache, uri), base, spec_study(base))
    study_worker(grid, base, workspace.optuna_url(), TINY, 5.0, (str(tracking_cache), uri), parent,
                 str(workspace.data_cache))
    assert open_study(grid, base, workspace.optuna_url(), TINY).user_attrs["concluded"] is True
    runs = mlflow_runs(uri, mini_mosaic, base.protocol)
    trials = sorted((run.info.run_name, run.data.tags.get("mlflow.parentRunId")) for run in runs
                    if run.info.run_name.startswith("trial"))
    assert trials == [("trial 0", parent), ("trial 1", parent)]
    assert (tracking_cache / "mlartifacts").is_dir() and sorted(path.name for path in tmp_path.iterdir()) == [
        "cache", "mlflow.db", "tracking"]                               # nothing made where the worker runs
    assert (workspace.data_cache / "mini-mosaic-v1.npz").is_file()


def test_trial_workers_of_another_offset_sample_other_values_and_log_under_the_parent(tmp_path, mini_mosaic,
                                                                                       monkeypatch):
    from bench.execute.tracking import Tracker

    monkeypatch.chdir(tmp_path)
    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = start_parent(Tracker(tmp_path / "tracking", uri), base, spec_study(base))
    suggested = []
    for offset, tracking, parent_run in ((0, (str(tmp_path / "tracking"), uri), parent), (1, None, None)):
        url = f"sqlite:///{tmp_path / f'optuna-{offset}.db'}"
        trial_worker(grid, base, url, TINY, offset, 5.0, tracking, parent_run, str(workspace.data_cache))
        suggested.append([trial.params["lr"] for trial in open_study(grid, base, url, TINY).trials])
    assert suggested[0][0] != suggested[1][0]                           # each worker samples with its own seed
    runs = mlflow_runs(uri, mini_mosaic, base.protocol)
    assert sorted(run.data.tags.get("mlflow.parentRunId") for run in runs if run.info.run_name.startswith("trial")) \
        == [parent] * 2                                                 # the untracked worker logged nothing
    assert (workspace.data_cache / "mini-mosaic-v1.npz").is_file() and not (tmp_path / "None").exists()


def test_a_search_confirms_its_winner_and_names_the_worker_of_its_trials(tmp_path, mini_mosaic, monkeypatch):
    from bench.trainer import Trainer

    monkeypatch.chdir(tmp_path)
    grid, base, workspace = tiny(mini_mosaic, tmp_path)
    budget = TINY.model_copy(update={"confirm_seeds": [TINY.seed, TINY.seed + 1], "confirm_top": 1})
    study = open_study(grid, base, workspace.optuna_url(), budget)
    search(study, grid, base, workspace.data_cache, budget, progress=False, worker="node-3")
    assert {trial.user_attrs["worker"] for trial in study.trials} == {"node-3"}
    [(number, scores)] = study.user_attrs["confirmation"].items()
    winner = study.trials[int(number)]
    expected = Trainer(grid.base_spec(mini_mosaic, "an", TINY.seed + 1, winner.params), workspace.data_cache,
                       progress=False).run()["selections"]["clean"]["val_map"]
    assert scores == {str(TINY.seed): winner.value, str(TINY.seed + 1): expected}
    assert study.user_attrs["concluded"] is True and not (tmp_path / "None").exists()


def test_a_trial_suggests_every_name_of_its_space_lists_and_ranges_alike():
    study = memory_study()
    values = suggest(study.ask(), "ls", {"batch_size": [8, 16], "lr": (1e-4, 1e-2), "ls_coef": (0.01, 0.4)})
    assert set(values) == {"batch_size", "lr", "ls_coef"} and values["batch_size"] in (8, 16)
    assert 1e-4 <= values["lr"] <= 1e-2 and 0.01 <= values["ls_coef"] <= 0.4


def test_a_budget_of_finished_trials_counts_the_pruned_and_the_extra_trials():
    budget = TuningBudget(n_trials=2, count="finished")
    study = memory_study()
    add(study, TrialState.COMPLETE, 80.0)
    assert not budget_reached(study, budget)
    add(study, TrialState.PRUNED, epochs=1)
    assert budget_reached(study, budget)                                 # one completed and one pruned: 2 finished
    study.set_user_attr("extra_trials", 1)
    assert not budget_reached(study, budget)
    add(study, TrialState.PRUNED, epochs=1)
    assert budget_reached(study, budget)


def test_the_space_searched_now_leaves_out_what_the_grid_fixes_and_takes_the_widened_ranges():
    grid = digits(("ls",), overrides={"ls_coef": 0.2})
    base = grid.base_spec("digits-mosaic", "ls", 100)
    study = memory_study()
    assert list(current_space(study, base, grid)) == ["lr"]
    study.set_user_attr("ranges", {"lr": [1e-5, 0.05]})
    assert current_space(study, base, grid) == {"lr": (1e-5, 0.05)}


def test_the_median_pruner_waits_a_whole_third_of_the_epochs():
    study = memory_study(pruner=make_pruner("median", 10))              # a third of 10 epochs: 3 steps of warm-up
    for _ in range(2):
        trial = study.ask()
        for step in range(10):
            trial.report(90.0, step)
        study.tell(trial, 90.0)
    trial = study.ask()
    for step in range(4):
        trial.report(10.0, step)
        assert trial.should_prune() == (step >= 3)


def test_a_grid_sampler_visits_its_grid_in_an_order_fixed_by_its_seed():
    space = {"lr": [0.01, 0.001, 0.0001, 1e-05], "batch_size": [8, 16]}
    budget = TuningBudget(sampler="grid")

    def order(seed):
        study = memory_study(sampler=make_sampler(budget, space, seed))
        return [tuple(study.ask({"lr": CategoricalDistribution(space["lr"]),
                                 "batch_size": CategoricalDistribution(space["batch_size"])}).params.values())
                for _ in range(8)]

    assert order(5) == order(5) and order(5) != order(6) and sorted(order(5)) == sorted(order(6))
