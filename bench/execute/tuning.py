"""Hyperparameter tuning with Optuna: one study per (dataset, protocol, label seed, variant, backbone, epochs).

- Study name and search space: `bench.plan.studies`. A study is created with `load_if_exists`, so an interrupted search
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

from bench.errors import UserError, first_line, redact
from bench.execute.claims import HEARTBEAT_SECONDS, process_owner
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
from bench.plan.studies import (
    convergence,
    declaration,
    grid_budget,
    paper_settings,
    saved_summary,
    spec_study,
    study_space,
    tuned_path,
)
from bench.records import RECORD_FORMAT, atomic_json
from bench.spec import RunSpec

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
    equal-budget study; under `tuned-observed` the same studies scored on observed labels (the budget's objective
    becomes 'observed'); under `paper` the grid study of each variant whose paper published only its search. Other
    recipes, and papers that published their values, have nothing to search (UserError if nothing is left)."""
    from bench.plan.recipes import RECIPE, paper_recipe

    searched = [name for name, recipe in RECIPE.items() if recipe.tuned or recipe.from_paper]
    if len(recipes) > 1 or recipes[0] not in searched:
        raise UserError(f"tune --recipe: give one of {', '.join(searched)} (the equal-budget studies, scored on clean "
                        "or on observed labels, or the papers' grid studies); the defaults recipe has nothing to "
                        "search")
    recipe = RECIPE[recipes[0]]
    if recipe.tuned:
        if budget.objective != recipe.objective and recipe.objective != "clean":
            budget = budget.model_copy(update={"objective": recipe.objective})
        return [grid.study_base(dataset, variant, budget.seed, recipe.name) for dataset in grid.datasets
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
            bases.append(grid.study_base(dataset, variant, budget.seed, recipe.name, paper))
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
    seed = study_seed(name, budget.seed) if budget.sampler_seed == "per-study" else budget.seed
    sampler = make_sampler(budget, study_space(base, grid.overrides), seed + sampler_offset)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    sqlite_folder(storage_url)
    races = (IntegrityError, ProgrammingError, optuna.exceptions.DuplicatedStudyError)
    attempt = 0
    while True:  # workers starting together race on creating the tables and the study: retry a few times
        try:
            storage = RDBStorage(storage_url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                        sampler=sampler, pruner=pruner_object)
            fail_orphaned_trials(study, storage, 3 * heartbeat)
            return same_budget(study, budget)
        except races:
            attempt += 1
            if attempt == 5:
                raise
            time.sleep(0.2 * attempt)
        except Exception as error:  # noqa: BLE001 - a storage the user pointed to
            raise UserError(f"cannot open Optuna storage {redact(storage_url)}: {first_line(error)}; check the URL "
                            "and that the database server is running") from None


def fail_orphaned_trials(study, storage, grace: float) -> list[int]:
    """Fail the RUNNING trials of `study` (kept in `storage`) that no live worker owns, and retry each as Optuna
    retries a stale trial (its values, or its enqueued ones such as the defaults, in a new trial); return their
    numbers. A trial is orphaned when its owner (trial attribute 'owner', `bench.execute.claims.process_owner`, set as
    its objective starts) is a process of this machine that is gone, or when it has no owner and started more than
    `grace` seconds ago: its worker died between Optuna's ask and the objective, before or as the first heartbeat was
    recorded, and Optuna, which fails stale trials by their beats only, would leave it RUNNING for ever."""
    import copy
    import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from bench.execute.claims import owner_gone

    now = datetime.datetime.now()
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner")
        never_started = owner is None and trial.datetime_start is not None and \
            (now - trial.datetime_start).total_seconds() > grace
        if not (never_started or (owner is not None and owner_gone(owner))):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:  # another worker failed or finished it first
            continue
        retry = storage.get_heartbeat_stale_trial_callback()
        if retry is not None:  # as Optuna retries a stale trial: its values (or its enqueued ones) once more
            gone = copy.deepcopy(storage.get_trial(trial_id))
            gone.user_attrs = {name: value for name, value in gone.user_attrs.items() if name != "owner"}
            retry(study, gone)
        failed.append(trial.number)
        print(f"tune {study.study_name}: trial {trial.number} was left running by a worker that is gone; failed "
              "and retried", flush=True)
    return failed


def same_budget(study, budget: TuningBudget):
    """`study`, marked with `budget` when it is new; UserError when it already ran under another budget (its trials
    would count towards this one: a study of the first protocol resumed under the second, say)."""
    stored = study.user_attrs.get("budget")
    if stored is None and not study.get_trials(deepcopy=False):
        study.set_user_attr("budget", budget.model_dump())
    elif stored != budget.model_dump():
        raise UserError(f"study {study.study_name} already ran under another tuning budget in this storage; delete "
                        "it (or the storage file) or tune into another --cache or --storage")
    return study


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
    `bench.plan.grid.Grid`): the cell with the suggested values, under the grid's overrides and label seed."""
    name = spec_study(base)
    study = open_study(grid, base, workspace.optuna_url(), budget, heartbeat)
    parent = start_parent(tracker, base, name)
    search(study, grid, base, workspace.data_cache, budget, tracker=tracker, parent=parent, progress=progress)
    return summarize(study, base, workspace, budget, tracker=tracker, parent=parent)


def finished_trials(study) -> int:
    """Trials of `study` that are finished: complete or pruned, over every worker."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


def completed_trials(study) -> list:
    """The complete trials of `study`, in trial order."""
    from optuna.trial import TrialState

    return sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE),
                  key=lambda t: t.number)


def budget_reached(study, budget: TuningBudget) -> bool:
    """Whether `study` has run its budget so far: `budget.n_trials` trials counted as the budget counts them, plus
    the trials its widenings and second budget added (study attribute 'extra_trials'), or the cap of finished
    trials (raised by the same share)."""
    extra = study.user_attrs.get("extra_trials", 0)
    if budget.count == "finished":
        return finished_trials(study) >= budget.n_trials + extra
    scale = (budget.n_trials + extra) / budget.n_trials
    return (len(completed_trials(study)) >= budget.n_trials + extra
            or finished_trials(study) >= math.ceil(budget.trial_cap * scale))


def current_space(study, base: RunSpec, grid: Grid) -> dict[str, tuple[float, float] | list[Any]]:
    """The space `study` searches now: its base's (`study_space`), with the ranges its widenings moved (study
    attribute 'ranges')."""
    space = study_space(base, grid.overrides)
    for name, bounds in study.user_attrs.get("ranges", {}).items():
        space[name] = tuple(bounds)
    return space


def search(study, grid: Grid, base: RunSpec, data_cache: Path, budget: TuningBudget, *, tracker=None,
           parent: str | None = None, progress: bool = True, worker: str | None = None) -> None:
    """Run `study` under every rule of `budget` (`bench.plan.search_rules`), resuming where it stopped: the first trials
    enqueued, trials until the budget is reached, the confirmation of the best settings, a widening of each range
    whose winner sits at its edge (and more trials), and a second budget for a study still improving. Its state
    is kept in the study's attributes, so an interrupted search resumes; 'concluded' marks the end."""
    if study.user_attrs.get("concluded"):
        return
    enqueue_first_trials(study, grid, base, budget)
    while True:
        run_trials(study, grid, base, data_cache, budget, tracker=tracker, parent=parent, progress=progress,
                   worker=worker)
        if not advance(study, grid, base, data_cache, budget, progress=progress):
            return


def advance(study, grid: Grid, base: RunSpec, data_cache: Path, budget: TuningBudget, *,
            progress: bool = True) -> bool:
    """After a study reached its budget so far: confirm its best settings, widen a range whose winner sits at its
    edge, or give a study still improving its second budget. True when that added trials to run; otherwise the
    study is marked 'concluded' and False is returned."""
    if budget.confirm_seeds:
        confirm(study, grid, base, data_cache, budget, progress=progress)
    if widen_at_edges(study, grid, base, budget):
        return True
    if (budget.extend_if_improving and not study.user_attrs.get("extended")
            and study_convergence(study)["improving"]):
        study.set_user_attr("extended", True)
        study.set_user_attr("extra_trials", study.user_attrs.get("extra_trials", 0) + budget.n_trials)
        print(f"tune {study.study_name}: still improving after its budget: a second budget of {budget.n_trials} "
              "trials", flush=True)
        return True
    study.set_user_attr("concluded", True)
    return False


def enqueue_first_trials(study, grid: Grid, base: RunSpec, budget: TuningBudget) -> None:
    """Enqueue the defaults (and the paper's values) as the first trials of a new study, when `budget` says so."""
    if budget.first_trials != "defaults" or budget.sampler == "grid" or study.get_trials(deepcopy=False):
        return
    from bench.plan.recipes import paper_recipe

    space = current_space(study, base, grid)
    defaults = {**{name: getattr(base, name) for name in ("lr", "boost_alpha") if name in space},
                **{name: value for name, value in base.method_hparams().items() if name in space}}
    try:
        paper = paper_recipe(base.dataset, base.variant).settings
    except UserError:
        paper = {}
    for params in first_trials(space, defaults, paper):
        study.enqueue_trial(params, user_attrs={"first": True}, skip_if_exists=True)


def confirm(study, grid: Grid, base: RunSpec, data_cache: Path, budget: TuningBudget, progress: bool) -> None:
    """Train the `budget.confirm_top` best settings of `study` again on each confirmation seed (the trials' own seed
    reuses the trial's value: the same spec and seed give the same numbers) and keep every score in the study
    attribute 'confirmation' (trial number -> seed -> validation mAP), so that nothing is trained twice."""
    from bench.trainer import NumericalFault, Trainer

    trials = {t.number: t for t in completed_trials(study)}
    chosen = confirmation_candidates([(n, t.params, t.value) for n, t in trials.items()], budget.confirm_top)
    scores = {int(number): dict(values) for number, values in study.user_attrs.get("confirmation", {}).items()}
    for number in chosen:
        for seed in budget.confirm_seeds:
            if str(seed) in scores.get(number, {}):
                continue
            if seed == budget.seed:
                value = trials[number].value
            else:
                spec = grid.base_spec(base.dataset, base.variant, seed, {**paper_settings(base),
                                      **trials[number].params}, base.recipe)
                try:
                    result = Trainer(spec, data_cache, progress=progress).run()
                    value = result["selections"][budget.objective]["val_map"]
                except NumericalFault:
                    value = 0.0
                print(f"tune {study.study_name}: confirmation of trial {number} on seed {seed}: val mAP "
                      f"{value:.2f}", flush=True)
            scores.setdefault(number, {})[str(seed)] = value
            study.set_user_attr("confirmation", {str(n): v for n, v in scores.items()})


def confirmed_trial(study, budget: TuningBudget):
    """The winner of `study`: the confirmed best mean over the confirmation seeds among its current candidates, or,
    without confirmation, its single-seed best trial."""
    if not budget.confirm_seeds:
        return study.best_trial
    trials = {t.number: t for t in completed_trials(study)}
    chosen = confirmation_candidates([(n, t.params, t.value) for n, t in trials.items()], budget.confirm_top)
    scores = study.user_attrs.get("confirmation", {})
    return trials[confirmed({number: [scores[str(number)][str(seed)] for seed in budget.confirm_seeds]
                             for number in chosen})]


def widen_at_edges(study, grid: Grid, base: RunSpec, budget: TuningBudget) -> bool:
    """When the winner sits at the edge of a range (`edge_side`) and `budget.widen_edges` allows another widening
    of it, widen it (`widened`), add half a budget of trials, print the change and return True."""
    if not budget.widen_edges or budget.sampler == "grid":
        return False
    winner = confirmed_trial(study, budget)
    space = current_space(study, base, grid)
    widenings = list(study.user_attrs.get("widenings", []))
    ranges = dict(study.user_attrs.get("ranges", {}))
    changed = []
    for name, bounds in space.items():
        if isinstance(bounds, list) or name not in winner.params:
            continue
        if sum(w["name"] == name for w in widenings) >= budget.widen_edges:
            continue
        hp = declaration(name, base.method)
        side = edge_side(winner.params[name], bounds, hp.log)
        integer = isinstance(hp.default, int) and not isinstance(hp.default, bool)
        new = side and widened(bounds, side, hp.log, (hp.low, hp.high), integer)
        if new:
            ranges[name] = list(new)
            widenings.append({"name": name, "side": side, "from": list(bounds), "to": list(new),
                              "winner": winner.params[name]})
            changed.append(f"{name} {fmt_range(bounds)} -> {fmt_range(new)}")
    if not changed:
        return False
    study.set_user_attr("ranges", ranges)
    study.set_user_attr("widenings", widenings)
    study.set_user_attr("extra_trials", study.user_attrs.get("extra_trials", 0) + max(1, budget.n_trials // 2))
    print(f"tune {study.study_name}: the winner sits at a range's edge; widened {', '.join(changed)}", flush=True)
    return True


def fmt_range(bounds) -> str:
    return f"[{bounds[0]:.4g}, {bounds[1]:.4g}]"


def trial_worker(grid: Grid, base: RunSpec, storage_url: str, budget: TuningBudget, sampler_offset: int,
                 heartbeat: float, tracking: tuple[str, str] | None, parent: str | None, data_cache: str,
                 worker: str | None = None) -> None:
    """Run trials of `base`'s study in a cluster task until the study reached its budget so far
    (`budget_reached`), counted over every worker; the driver then `advance`s the study."""
    from bench.execute.tracking import Tracker

    study = open_study(grid, base, storage_url, budget, heartbeat, sampler_offset)
    tracker = Tracker(Path(tracking[0]), tracking[1]) if tracking else None
    run_trials(study, grid, base, Path(data_cache), budget, tracker=tracker, parent=parent, progress=False,
               worker=worker)


def study_worker(grid: Grid, base: RunSpec, storage_url: str, budget: TuningBudget, heartbeat: float,
                 tracking: tuple[str, str] | None, parent: str | None, data_cache: str) -> None:
    """Run `base`'s whole study under its budget's rules (`search`) in a local worker process."""
    from bench.execute.tracking import Tracker

    study = open_study(grid, base, storage_url, budget, heartbeat)
    tracker = Tracker(Path(tracking[0]), tracking[1]) if tracking else None
    search(study, grid, base, Path(data_cache), budget, tracker=tracker, parent=parent, progress=False)


def tune_locally(grid: Grid, bases: list[RunSpec], workspace: Workspace, budget: TuningBudget, plan, *,
                 on_summary: Callable[[dict[str, Any]], None], tracker=None,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:
    """Tune the study of every base spec in local worker processes (`plan`: a `bench.execute.workers.WorkerPlan`), and
    call `on_summary` with each study's summary as soon as it finishes (it is saved by then). With one job, the
    studies run one after another in this process; otherwise each study is one task of the pool. Either way a
    study runs its trials one after another, in one process, so its trials and best values are the same whatever
    the number of jobs, and it ends when its budget's rules say (`search`). (Several processes on one study,
    through one storage, are `tune` commands started side by side; their samplers then differ.)"""
    from bench.execute.workers import run_tasks

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
        if study.user_attrs.get("concluded"):
            on_summary(summarize(study, base, workspace, budget, tracker=tracker))
        else:
            studies[name] = (study, base)
    if not studies:
        return
    tracking = (str(workspace.cache.resolve()), tracker.uri) if tracker else None
    parents = {name: start_parent(tracker, base, name) for name, (_, base) in studies.items()}
    tasks = [(grid, base, workspace.optuna_url(), budget, heartbeat, tracking, parents[name],
              str(workspace.data_cache)) for name, (_, base) in studies.items()]

    def finished(task: tuple[Any, ...], _: None) -> None:
        study, base = studies[spec_study(task[1])]
        on_summary(summarize(study, base, workspace, budget, tracker=tracker, parent=parents[spec_study(base)]))

    def broken(unfinished) -> None:
        print(f"tune: a worker process died; {len(unfinished)} unfinished study task(s) go to a new pool (its "
              "trial is retried after the heartbeat's grace period)", file=sys.stderr, flush=True)

    left = run_tasks(tasks, study_worker, plan, on_result=finished, on_broken=broken)
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

    from bench.trainer import NumericalFault, Trainer

    space = current_space(study, base, grid)
    val_variant, seed = budget.objective, budget.seed
    selected = "val_map" if val_variant == "clean" else "val_map_observed"

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("owner", process_owner())
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

    def stop_at_budget(study, trial) -> None:
        if budget_reached(study, budget):
            study.stop()

    if not budget_reached(study, budget):
        study.optimize(objective, catch=(NumericalFault,), callbacks=[stop_at_budget])


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
    winner = confirmed_trial(study, budget)
    scores = study.user_attrs.get("confirmation", {}).get(str(winner.number))
    summary = {
        "format": RECORD_FORMAT, "study": study.study_name, "dataset": base.dataset, "variant": base.variant,
        "method": base.method, "n_trials": sum(t.state in finished for t in trials), "completed": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "best_value": sum(scores.values()) / len(scores) if budget.confirm_seeds else winner.value,
        "best_params": winner.params, "best_trial": winner.number,
        "budget": budget.model_dump(), "protocol": base.protocol, "label_seed": base.label_seed,
        "backbone": base.backbone, "epochs": base.epochs, "convergence": study_convergence(study),
    }
    if budget.confirm_seeds:
        summary["confirmation"] = {"seeds": budget.confirm_seeds, "scores": study.user_attrs["confirmation"]}
        summary["study_best"] = {"trial": study.best_trial.number, "value": study.best_value,
                                 "params": study.best_params}
    for name in ("ranges", "widenings", "extended"):
        if name in study.user_attrs:
            summary[name] = study.user_attrs[name]
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


