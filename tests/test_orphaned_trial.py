"""A tuning trial whose worker dies before its first heartbeat is failed at the start of the next `tune` and runs
again; Optuna alone would leave it RUNNING for ever (it fails stale trials by their heartbeats only)."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from bench.execute.claims import owner_gone, process_owner
from bench.execute.tuning import enqueue_first_trials, open_study, search
from bench.plan.grid import Grid, TuningBudget

BUDGET = TuningBudget(n_trials=1, startup_trials=1, pruner="none", count="completed", first_trials="defaults")

DIE_AFTER_ASK = """
import os, signal, sys
import optuna
study = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2])
trial = study.ask()
if sys.argv[3] == "owner":
    from bench.execute.claims import process_owner
    trial.set_user_attr("owner", process_owner())
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_after_ask(study, url: str, with_owner: bool) -> None:
    """A worker process that asks `study` for a trial and is killed at once, before any heartbeat."""
    done = subprocess.run([sys.executable, "-c", DIE_AFTER_ASK, study.study_name, url,
                           "owner" if with_owner else "none"], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr


@pytest.fixture
def study_of(tmp_path, mini_mosaic):
    grid = Grid([mini_mosaic], ["an"], [0], device="cpu", overrides={"epochs": 1})
    base = grid.base_spec(mini_mosaic, "an", BUDGET.seed)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return grid, base, url


@pytest.mark.slow
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_run_again(study_of, tmp_path):
    grid, base, url = study_of
    study = open_study(grid, base, url, BUDGET, heartbeat=0.2)
    enqueue_first_trials(study, grid, base, BUDGET)
    killed_after_ask(study, url, with_owner=False)
    [orphan] = optuna.load_study(study_name=study.study_name, storage=url).trials
    assert orphan.state == TrialState.RUNNING and orphan.params == {}  # its values were never suggested
    assert open_study(grid, base, url, BUDGET, heartbeat=60).trials[0].state == TrialState.RUNNING  # within grace
    time.sleep(1.0)
    study = open_study(grid, base, url, BUDGET, heartbeat=0.2)  # a new `tune`: a grace of 0.6 s has passed
    first, again = sorted(study.trials, key=lambda t: t.number)
    assert first.state == TrialState.FAIL
    assert again.state == TrialState.WAITING and again.user_attrs.get("first")
    search(study, grid, base, tmp_path / "cache", BUDGET, progress=False)
    rerun = sorted(optuna.load_study(study_name=study.study_name, storage=url).trials, key=lambda t: t.number)[1]
    assert rerun.state == TrialState.COMPLETE and rerun.params == {"lr": base.lr}  # the defaults, run again


def test_a_trial_whose_owner_died_is_failed_at_once_and_a_live_one_is_kept(study_of):
    grid, base, url = study_of
    study = open_study(grid, base, url, BUDGET, heartbeat=60)
    killed_after_ask(study, url, with_owner=True)
    live = study.ask()
    live.set_user_attr("owner", process_owner())
    study = open_study(grid, base, url, BUDGET, heartbeat=60)  # a grace of 3 minutes: only the owner tells
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[2].system_attrs["failed_trial"] == 0 and "owner" not in trials[2].user_attrs  # retried


def test_an_owner_is_gone_when_its_pid_is_gone_or_reused():
    me = process_owner()
    assert not owner_gone(me)
    assert owner_gone({**me, "started": "1"})  # the same pid, started at another time: reused
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    assert owner_gone({**me, "pid": int(finished.stdout)})
    assert not owner_gone({**me, "host": "another-host", "pid": int(finished.stdout)})  # not ours to judge
