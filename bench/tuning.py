"""Hyperparameter tuning with Optuna: one study per (dataset, protocol, label seed, variant, backbone, epochs).

- Study name and search space: `bench.studies`. A study is created with `load_if_exists`, so an interrupted search
  resumes and several `pamlbench tune` processes (one per GPU or machine) share one study through one storage; the
  same `n_trials` budget for all.
- Trials train the grid's cell (its label draw, overrides and settings) with a seed outside the benchmark's seeds
  (100 by default), so the search never sees the runs it will be reported on.
- Sampler: TPE, seeded. Pruner: median (default) or Hyperband on the per-epoch validation mAP of `--val-variant`
  (clean or observed labels), which also scores the trial.
- Storage: an RDB URL (SQLite file by default, PostgreSQL for several machines) with heartbeats, so a trial whose
  worker was killed is marked failed after the grace period and retried (`RetryHeartbeatStaleTrialCallback`). The study
  stops when `n_trials` trials are complete or pruned, counted over all workers (`MaxTrialsCallback`): with W
  workers started together up to W - 1 more may finish, never fewer, and none is lost or duplicated.
- A trial whose loss turns non-finite is marked FAIL, never best.
- The best hyperparameters are saved to `results/tuned/<study>.json`; `pamlbench bench` uses them when present and
  the leaderboard says where each row's hyperparameters came from.
- Trials are MLflow child runs of one parent run per study.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.claims import HEARTBEAT_SECONDS
from bench.errors import UserError, first_line, redact
from bench.grid import Grid, TuningBudget
from bench.records import RECORD_FORMAT, atomic_json
from bench.spec import RunSpec
from bench.studies import (
    convergence,
    declaration,
    grid_budget,
    paper_settings,
    saved_summary,
    spec_study,
    study_space,
    tuned_path,
)
from bench.workspace import Workspace

PRUNERS = ("median", "hyperband", "none")


def suggest(trial, method: str, space: dict[str, tuple[float, float] | list[Any]]) -> dict[str, Any]:
    """The trial's values: a range is sampled on the hyperparameter's scale, a list (a grid study) is a choice."""
    values = {}
    for name, bounds in space.items():
        if isinstance(bounds, list):
            values[name] = trial.suggest_categorical(name, bounds)
            continue
        low, high = bounds
        hp = declaration(name, method)
        if isinstance(hp.default, int) and not isinstance(hp.default, bool):
            values[name] = trial.suggest_int(name, int(low), int(high), log=hp.log)
        else:
            values[name] = trial.suggest_float(name, float(low), float(high), log=hp.log)
    return values


def study_bases(grid: Grid, recipes: list[str], budget: TuningBudget) -> tuple[list[RunSpec], TuningBudget]:
    """(the base spec of every study `tune` runs, the budget they share): under `tuned` (the default) each cell's
    equal-budget study; under `paper` the grid study of each variant whose paper published only its search. Other
    recipes, and papers that published their values, have nothing to search (UserError if nothing is left)."""
    from bench.recipes import paper_recipe

    if set(recipes) - {"tuned", "paper"} or len(recipes) > 1:
        raise UserError("tune --recipe: give one of tuned (the equal-budget studies, the default) or paper (the "
                        "papers' grid studies); the defaults recipe has nothing to search")
    if recipes == ["tuned"]:
        return [grid.base_spec(dataset, variant, budget.seed) for dataset in grid.datasets
                for variant in grid.variants], budget
    bases, skipped = [], []
    for dataset in grid.datasets:
        for variant in grid.variants:
            try:
                paper = paper_recipe(dataset, variant)
            except UserError as error:
                skipped.append(str(error))
                continue
            if not paper.search:
                skipped.append(f"{variant} on {dataset}: {paper.paper} published its values; nothing to search")
                continue
            bases.append(grid.base_spec(dataset, variant, budget.seed, paper.settings, recipe="paper"))
    for line in skipped:
        print(f"tune: skipped: {line}", flush=True)
    if not bases:
        raise UserError(f"tune --recipe paper: no grid study to run: {skipped[0]}")
    spaces = {repr(study_space(base, grid.overrides)) for base in bases}
    if len(spaces) > 1:
        raise UserError("tune --recipe paper: these grid studies search different grids; tune one paper's variants "
                        "at a time (--variants)")
    return bases, grid_budget(budget, study_space(bases[0], grid.overrides))


def make_pruner(name: str, epochs: int):
    import optuna

    if name == "median":  # never before a third of the epochs: slow starters are not cut before they can climb
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 3))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def make_sampler(budget: TuningBudget, space: dict[str, tuple[float, float] | list[Any]], seed: int):
    """The sampler of `budget`: TPE, or a grid sampler over `space` (lists of values only)."""
    import optuna

    if budget.sampler == "grid":
        if not all(isinstance(values, list) for values in space.values()):
            raise UserError("the grid sampler needs a list of values for every searched name; use sampler = 'tpe'")
        return optuna.samplers.GridSampler(space, seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=budget.startup_trials)


def open_study(grid: Grid, base: RunSpec, storage_url: str, budget: TuningBudget,
               heartbeat: float = HEARTBEAT_SECONDS, sampler_offset: int = 0):
    """Create or load the study of `base`'s cell at `storage_url` (heartbeats on, failed trials retried), with the
    sampler and pruner of `budget`  over `study_space(base, grid.overrides)`. Several workers
    on one study give their samplers different seeds (`sampler_offset`), so that workers started together do not
    suggest the same values."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    name = spec_study(base)
    pruner_object = make_pruner(budget.pruner, base.epochs)
    sampler = make_sampler(budget, study_space(base, grid.overrides), budget.seed + sampler_offset)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    sqlite_folder(storage_url)
    races = (IntegrityError, ProgrammingError, optuna.exceptions.DuplicatedStudyError)
    attempt = 0
    while True:  # workers starting together race on creating the tables and the study: retry a few times
        try:
            storage = RDBStorage(storage_url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
            return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                       sampler=sampler, pruner=pruner_object)
        except races:
            attempt += 1
            if attempt == 5:
                raise
            time.sleep(0.2 * attempt)
        except Exception as error:  # noqa: BLE001 - a storage the user pointed to
            raise UserError(f"cannot open Optuna storage {redact(storage_url)}: {first_line(error)}; check the URL "
                            "and that the database server is running") from None


def sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite storage file (SQLite creates the file, not its folder)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def check_storage(url: str) -> None:
    """UserError unless the Optuna storage at `url` can be opened (run before anything local is written)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        optuna.storages.RDBStorage(url)
    except (IntegrityError, ProgrammingError):
        return  # the server answered; another worker is creating the same tables right now
    except Exception as error:  # noqa: BLE001 - a storage the user pointed to
        raise UserError(f"cannot open Optuna storage {redact(url)}: {first_line(error)}; check the URL and that the "
                        "database server is running") from None


def tune(grid: Grid, base: RunSpec, workspace: Workspace, budget: TuningBudget, *, tracker=None,
         progress: bool = True, heartbeat: float = HEARTBEAT_SECONDS) -> dict[str, Any]:
    """Run (or resume, or join) the study of `base`'s cell until `budget.n_trials` trials are finished; save and
    return its summary {study, n_trials, best_value, best_params, ...}. Every trial's spec comes from `grid` (a
    `bench.grid.Grid`): the cell with the suggested values, under the grid's overrides and label seed."""
    name = spec_study(base)
    study = open_study(grid, base, workspace.optuna_url(), budget, heartbeat)
    parent = start_parent(tracker, base, name)
    run_trials(study, grid, base, workspace.data_cache, budget, tracker=tracker, parent=parent, progress=progress)
    return summarize(study, base, workspace, budget, tracker=tracker, parent=parent)


def finished_trials(study) -> int:
    """Trials of `study` that count towards the budget: complete or pruned, over every worker."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


def trial_worker(grid: Grid, base: RunSpec, storage_url: str, budget: TuningBudget, sampler_offset: int,
                 heartbeat: float, tracking: tuple[str, str] | None, parent: str | None, data_cache: str,
                 worker: str | None = None) -> None:
    """Run trials of `base`'s study in a worker process until the study has `budget.n_trials` finished trials,
    counted over every worker (a local worker process or a cluster task)."""
    from bench.tracking import Tracker

    study = open_study(grid, base, storage_url, budget, heartbeat, sampler_offset)
    tracker = Tracker(Path(tracking[0]), tracking[1]) if tracking else None
    run_trials(study, grid, base, Path(data_cache), budget, tracker=tracker, parent=parent, progress=False,
               worker=worker)


def tune_locally(grid: Grid, bases: list[RunSpec], workspace: Workspace, budget: TuningBudget, plan, *,
                 on_summary: Callable[[dict[str, Any]], None], tracker=None,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:
    """Tune the study of every base spec in local worker processes (`plan`: a `bench.workers.WorkerPlan`), and
    call `on_summary` with each study's summary as soon as it finishes (it is saved by then). With one job, the
    studies run one after another in this process; otherwise each study is one task of the pool. Either way a
    study runs its trials one after another, in one process, so its trials and best values are the same whatever
    the number of jobs, and it ends with exactly its budget of finished trials. (Several processes on one study,
    through one storage, are `tune` commands started side by side; their samplers then differ.)"""
    from bench.workers import run_tasks

    saved = {spec_study(base): saved_summary(workspace.tuned, spec_study(base), budget) for base in bases}
    for summary in filter(None, saved.values()):
        on_summary(summary)
    bases = [base for base in bases if saved[spec_study(base)] is None]
    if plan.jobs == 1:
        for base in bases:
            on_summary(tune(grid, base, workspace, budget, tracker=tracker, heartbeat=heartbeat))
        return
    studies = {}
    for base in bases:
        name = spec_study(base)
        study = open_study(grid, base, workspace.optuna_url(), budget, heartbeat)
        if finished_trials(study) >= budget.n_trials:
            on_summary(summarize(study, base, workspace, budget, tracker=tracker))
        else:
            studies[name] = (study, base)
    if not studies:
        return
    tracking = (str(workspace.cache.resolve()), tracker.uri) if tracker else None
    parents = {name: start_parent(tracker, base, name) for name, (_, base) in studies.items()}
    tasks = [(grid, base, workspace.optuna_url(), budget, 0, heartbeat, tracking, parents[name],
              str(workspace.data_cache)) for name, (_, base) in studies.items()]

    def finished(task: tuple[Any, ...], _: None) -> None:
        study, base = studies[spec_study(task[1])]
        on_summary(summarize(study, base, workspace, budget, tracker=tracker, parent=parents[spec_study(base)]))

    def broken(unfinished) -> None:
        print(f"tune: a worker process died; {len(unfinished)} unfinished study task(s) go to a new pool (its "
              "trial is retried after the heartbeat's grace period)", file=sys.stderr, flush=True)

    left = run_tasks(tasks, trial_worker, plan, on_result=finished, on_broken=broken)
    if left:
        raise UserError(f"tune: worker processes kept dying; {len(left)} study task(s) unfinished: run the same "
                        "command again to resume")


def start_parent(tracker, base: RunSpec, name: str) -> str | None:
    """The MLflow parent run of the study `name` (its trials are child runs), or None without tracking."""
    return tracker.start(base, f"study {name}", name=f"study {base.variant} on {base.dataset}") if tracker else None


def run_trials(study, grid: Grid, base: RunSpec, data_cache: Path, budget: TuningBudget, *, tracker=None,
               parent: str | None = None, progress: bool = True, worker: str | None = None) -> None:
    """Run trials of `study` in this process until `budget.n_trials` trials of it are finished, counted over every
    worker. The pruner sees each trial's running best validation mAP (the objective is the best epoch's, so a
    trial is never pruned for an epoch after its peak). Each trial is logged as a child of `parent`; `worker`
    (where it ran) is kept as a trial attribute."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from bench.trainer import NumericalFault, Trainer

    space = study_space(base, grid.overrides)
    val_variant, seed, n_trials = budget.objective, budget.seed, budget.n_trials
    selected = "val_map" if val_variant == "clean" else "val_map_observed"

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, base.method, space)
        if worker is not None:
            trial.set_user_attr("worker", worker)
        spec = grid.base_spec(base.dataset, base.variant, seed, {**paper_settings(base), **values}, base.recipe)
        run_id = tracker.start(spec, f"trial {trial.number}", parent=parent,
                               name=f"trial {trial.number}") if tracker else None

        running_best = -math.inf

        def report(epoch: int, point: dict[str, float]) -> None:
            nonlocal running_best
            if tracker:
                tracker.epoch(run_id, epoch, point)
            running_best = max(running_best, point[selected])
            trial.report(running_best, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} (best val mAP {running_best:.2f})")

        try:
            result = Trainer(spec, data_cache, progress=progress).run(on_epoch=report)
        except optuna.TrialPruned as pruned:
            print(f"tune {study.study_name}: trial {trial.number} {pruned}", flush=True)
            if tracker:
                tracker.end(run_id, "KILLED", pruned=True)
            raise
        except NumericalFault as fault:
            trial.set_user_attr("error", str(fault))
            if tracker:
                tracker.end(run_id, "FAILED")
            raise
        chosen = result["selections"][val_variant]
        trial.set_user_attr("best_epoch", chosen["epoch"])
        if tracker:
            tracker.finish(run_id, {**result, "status": "done", "run_key": f"trial {trial.number}"})
        print(f"tune {study.study_name}: trial {trial.number} val mAP {chosen['val_map']:.2f} with "
              + ", ".join(f"{k}={v:.4g}" for k, v in values.items()), flush=True)
        return chosen["val_map"]

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if finished_trials(study) < n_trials:
        study.optimize(objective, catch=(NumericalFault,),
                       callbacks=[MaxTrialsCallback(n_trials, states=finished)])


def summarize(study, base: RunSpec, workspace: Workspace, budget: TuningBudget, *, tracker=None,
              parent: str | None = None) -> dict[str, Any]:
    """Save the study's summary to `results/tuned/`, close its MLflow parent run, and return the summary;
    UserError when no trial completed."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(f"study {study.study_name} has no complete trial (all pruned or failed); run more trials")
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    summary = {
        "format": RECORD_FORMAT, "study": study.study_name, "dataset": base.dataset, "variant": base.variant,
        "method": base.method, "n_trials": sum(t.state in finished for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "best_value": study.best_value, "best_params": study.best_params, "best_trial": study.best_trial.number,
        "budget": budget.model_dump(), "protocol": base.protocol, "label_seed": base.label_seed,
        "backbone": base.backbone, "epochs": base.epochs, "convergence": study_convergence(study),
    }
    atomic_json(tuned_path(workspace.tuned, study.study_name), summary)
    if tracker:
        tracker.finish(parent, {"status": "done", "run_key": study.study_name, "val_map": summary["best_value"],
                                "best_epoch": study.best_trial.user_attrs.get("best_epoch", 0),
                                "per_class_ap": {}, "summary": summary})
    return summary


def study_convergence(study) -> dict[str, Any]:
    """`convergence` of an Optuna study's finished trials."""
    from optuna.trial import TrialState

    finished = sorted((t for t in study.get_trials(deepcopy=False)
                       if t.state in (TrialState.COMPLETE, TrialState.PRUNED)), key=lambda t: t.number)
    return convergence([t.value if t.state == TrialState.COMPLETE else None for t in finished])


