"""Hyperparameter tuning with Optuna: one study per (dataset, protocol, label seed, variant, backbone, epochs).

- Study name: deterministic (`study_name`), created with `load_if_exists`, so an interrupted search resumes and
  several `pamlbench tune` processes (one per GPU or machine) share one study through one storage.
- Search space (`search_ranges`, shown by `pamlbench list methods --dataset D`): the learning rate in a range
  around the dataset's default, `boost_alpha` where BoostLU is on, and every method hyperparameter that declares a
  range (`Hyperparam.search` / `search_around`), minus what the grid fixes; the same `n_trials` budget for all.
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

import json
import re
import time
import warnings
from pathlib import Path
from typing import Any

from bench import registry
from bench.claims import HEARTBEAT_SECONDS, first_line, redact
from bench.errors import UserError
from bench.records import RECORD_FORMAT, atomic_json
from bench.spec import TRAINING_HPARAMS, RunSpec, parse_variant, trainer_defaults

PRUNERS = ("median", "hyperband", "none")


def study_name(dataset: str, protocol: str, label_seed: int, variant: str, backbone: str, epochs: int) -> str:
    """pamlbench/<dataset>/<protocol>/labels<label seed>/<variant>/<backbone>/<epochs>ep: one study per setting
    whose tuned hyperparameters may differ (the validation variant is a property of the search, `--val-variant`)."""
    return "/".join(["pamlbench", dataset, protocol, f"labels{label_seed}", variant, backbone, f"{epochs}ep"])


def spec_study(spec: RunSpec) -> str:
    return study_name(spec.dataset, spec.protocol, spec.label_seed, spec.variant, spec.backbone, spec.epochs)


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


def declaration(name: str, method: str):
    """The Hyperparam declaring `name` (the trainer's or the method's)."""
    return TRAINING_HPARAMS.get(name) or registry.method_class(method).hparams[name]


def suggest(trial, method: str, ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    values = {}
    for name, (low, high) in ranges.items():
        hp = declaration(name, method)
        if isinstance(hp.default, int) and not isinstance(hp.default, bool):
            values[name] = trial.suggest_int(name, int(low), int(high), log=hp.log)
        else:
            values[name] = trial.suggest_float(name, float(low), float(high), log=hp.log)
    return values


def make_pruner(name: str, epochs: int):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")


def open_study(name: str, storage_url: str, seed: int, pruner: str, epochs: int,
               heartbeat: float = HEARTBEAT_SECONDS):
    """Create or load the study at `storage_url` (heartbeats on, failed trials retried)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    pruner_object = make_pruner(pruner, epochs)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    races = (IntegrityError, ProgrammingError, optuna.exceptions.DuplicatedStudyError)
    attempt = 0
    while True:  # workers starting together race on creating the tables and the study: retry a few times
        try:
            storage = RDBStorage(storage_url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
            return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                       sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner_object)
        except races:
            attempt += 1
            if attempt == 5:
                raise
            time.sleep(0.2 * attempt)
        except Exception as error:  # noqa: BLE001 - a storage the user pointed to
            raise UserError(f"cannot open Optuna storage {redact(storage_url)}: {first_line(error)}; check the URL "
                            "and that the database server is running") from None


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


def tune(grid, base: RunSpec, workspace, *, n_trials: int, seed: int, pruner: str = "median",
         val_variant: str = "clean", tracker=None, progress: bool = True,
         heartbeat: float = HEARTBEAT_SECONDS) -> dict[str, Any]:
    """Run (or resume, or join) the study of `base`'s cell until `n_trials` trials are finished; save and return
    its summary {study, n_trials, best_value, best_params, ...}. Every trial's spec comes from `grid` (a
    `bench.grid.Grid`): the cell with the suggested values, under the grid's overrides and label seed."""
    name = spec_study(base)
    study = open_study(name, workspace.optuna_url(), seed, pruner, base.epochs, heartbeat)
    parent = start_parent(tracker, base, name)
    run_trials(study, grid, base, workspace.data_cache, n_trials=n_trials, seed=seed, val_variant=val_variant,
               tracker=tracker, parent=parent, progress=progress)
    return summarize(study, base, workspace, seed=seed, pruner=pruner, val_variant=val_variant, tracker=tracker,
                     parent=parent)


def start_parent(tracker, base: RunSpec, name: str) -> str | None:
    """The MLflow parent run of the study `name` (its trials are child runs), or None without tracking."""
    return tracker.start(base, f"study {name}", name=f"study {base.variant} on {base.dataset}") if tracker else None


def run_trials(study, grid, base: RunSpec, data_cache: Path, *, n_trials: int, seed: int, val_variant: str,
               tracker=None, parent: str | None = None, progress: bool = True, worker: str | None = None) -> None:
    """Run trials of `study` in this process until `n_trials` trials of it are finished, counted over every
    worker. Each trial is logged as a child of `parent`; `worker` (where it ran) is kept as a trial attribute."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from bench.trainer import NumericalFault, Trainer

    ranges = {k: v for k, v in search_ranges(base.dataset, base.variant).items() if k not in grid.overrides}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    selected = "val_map" if val_variant == "clean" else "val_map_observed"

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, base.method, ranges)
        if worker is not None:
            trial.set_user_attr("worker", worker)
        spec = grid.base_spec(base.dataset, base.variant, seed, values)
        run_id = tracker.start(spec, f"trial {trial.number}", parent=parent,
                               name=f"trial {trial.number}") if tracker else None

        def report(epoch: int, point: dict[str, float]) -> None:
            if tracker:
                tracker.epoch(run_id, epoch, point)
            trial.report(point[selected], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} (val mAP {point[selected]:.2f})")

        try:
            result = Trainer(spec, data_cache, progress=progress).run(on_epoch=report)
        except optuna.TrialPruned:
            if tracker:
                tracker.end(run_id, "KILLED")
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
    if sum(t.state in finished for t in study.get_trials(deepcopy=False)) < n_trials:
        study.optimize(objective, catch=(NumericalFault,),
                       callbacks=[MaxTrialsCallback(n_trials, states=finished)])


def summarize(study, base: RunSpec, workspace, *, seed: int, pruner: str, val_variant: str, tracker=None,
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
        "seed": seed, "pruner": pruner, "protocol": base.protocol, "label_seed": base.label_seed,
        "val_variant": val_variant, "backbone": base.backbone, "epochs": base.epochs,
    }
    atomic_json(tuned_path(workspace.tuned, study.study_name), summary)
    if tracker:
        tracker.finish(parent, {"status": "done", "run_key": study.study_name, "val_map": summary["best_value"],
                                "best_epoch": study.best_trial.user_attrs.get("best_epoch", 0),
                                "per_class_ap": {}, "summary": summary})
    return summary


def tuned_overrides(tuned: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(best params, hparam source) of the study `name` saved in the folder `tuned`, or None when not tuned."""
    path = tuned_path(tuned, name)
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
        params = dict(summary["best_params"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"corrupt tuning result {path}: {error}; delete it or run `pamlbench tune` again") from None
    return params, {"kind": "tuned", "study": summary["study"], "n_trials": summary["n_trials"]}
