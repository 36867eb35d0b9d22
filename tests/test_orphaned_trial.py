"""A tuning trial whose worker dies before its first heartbeat is failed at the start of the next `tune` and runs
again; Optuna alone would leave it RUNNING for ever (it fails stale trials by their heartbeats only). Also: an
ownerless trial is orphaned only after the grace of three heartbeats, a live owner's trial never; an orphan is
retried twice at most; an orphan another worker failed first is left to that worker."""

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


def started_ago(url: str, number: int, seconds: float) -> None:
    """Move the start of trial `number` (of the one study at `url`) `seconds` into the past, as a worker that asked
    for it then would have left it."""
    import datetime

    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE trials SET datetime_start = :start WHERE number = :number"),
                           {"start": datetime.datetime.now() - datetime.timedelta(seconds=seconds),
                            "number": number})
    engine.dispose()


def test_an_ownerless_trial_is_orphaned_after_three_heartbeats_and_not_before(study_of, capsys):
    grid, base, url = study_of
    study = open_study(grid, base, url, BUDGET, heartbeat=10)     # a grace of 30 s
    study.ask(), study.ask()
    study.ask().set_user_attr("owner", process_owner())           # a live owner: kept however long it runs
    for number, seconds in ((0, 25), (1, 35), (2, 35)):
        started_ago(url, number, seconds)
    trials = sorted(open_study(grid, base, url, BUDGET, heartbeat=10).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[3].system_attrs["failed_trial"] == 1
    assert capsys.readouterr().out == (f"tune {study.study_name}: trial 1 was left running by a worker that is gone; "
                                       "failed and retried\n")


def test_an_orphaned_trial_is_retried_twice_and_then_left_failed(study_of):
    grid, base, url = study_of
    study = open_study(grid, base, url, BUDGET, heartbeat=60)
    study.enqueue_trial({}, user_attrs={"first": True})
    for _ in range(3):
        trial = study.ask()                                       # the enqueued trial, then each retry of it
        trial.set_user_attr("owner", {**process_owner(), "started": "1"})    # an owner that is gone
        study = open_study(grid, base, url, BUDGET, heartbeat=60)
        waiting = [t for t in study.trials if t.state == TrialState.WAITING]
        assert all(t.user_attrs == {"first": True} for t in waiting)          # the retry without its dead owner
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert [t.system_attrs.get("retry_history") for t in trials] == [None, [0], [0, 1]]


class FinishedByAnother:
    """A storage on which another worker fails the first trial this one tries to fail, just before it."""

    def __init__(self, storage) -> None:
        self.storage, self.raced = storage, False

    def __getattr__(self, name):
        return getattr(self.storage, name)

    def set_trial_state_values(self, trial_id, state, values=None):
        from optuna.exceptions import UpdateFinishedTrialError

        if not self.raced:
            self.raced = True
            self.storage.set_trial_state_values(trial_id, state=state)
            raise UpdateFinishedTrialError("finished by another worker")
        return self.storage.set_trial_state_values(trial_id, state=state, values=values)


def test_an_orphan_failed_first_by_another_worker_is_left_to_it_and_the_next_is_failed(study_of):
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from bench.execute.tuning import fail_orphaned_trials

    grid, base, url = study_of
    study = open_study(grid, base, url, BUDGET, heartbeat=60)
    for _ in range(2):
        study.ask().set_user_attr("owner", {**process_owner(), "started": "1"})
    retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
    storage = RDBStorage(url, heartbeat_interval=60, grace_period=180, heartbeat_stale_trial_callback=retry)
    assert fail_orphaned_trials(study, FinishedByAnother(storage), 180) == [1]
    trials = sorted(optuna.load_study(study_name=study.study_name, storage=url).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    assert trials[2].system_attrs["failed_trial"] == 1                       # the other worker retries its own
