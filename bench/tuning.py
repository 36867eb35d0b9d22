"""Hyperparameter tuning with Optuna: one study per (dataset, protocol, validation variant, method variant).

- Study name: deterministic (`study_name`), created with `load_if_exists`, so an interrupted search resumes and
  several `pamlbench tune` processes (one per GPU or machine) share one study through one storage.
- Search space: the learning rate for every method, `boost_alpha` where BoostLU is on, and every method
  hyperparameter that declares a search range (`Hyperparameter.search`); the same `n_trials` budget for all.
- Sampler: TPE, seeded. Pruner: median (default) or Hyperband on the per-epoch validation mAP — the same
  validation variant that selects epochs.
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
from bench.errors import UserError
from bench.records import RECORD_FORMAT
from bench.spec import TRAINING_HPARAMS, RunSpec, make_spec, parse_variant

PRUNERS = ("median", "hyperband", "none")
HEARTBEAT_SECONDS = 30
"""Trial heartbeat interval; a trial whose worker has been silent for 3 intervals is failed and retried."""


def study_name(spec: RunSpec) -> str:
    """pamlbench/<dataset>/<protocol>/<val variant>/<variant>/<backbone>/<epochs>ep."""
    return "/".join(["pamlbench", spec.dataset, spec.protocol, spec.val_variant, spec.variant, spec.backbone,
                     f"{spec.epochs}ep"])


def tuned_path(results: Path, name: str) -> Path:
    return results / "tuned" / (re.sub(r"[^A-Za-z0-9_.+-]", "_", name) + ".json")


def search_space(spec: RunSpec) -> dict[str, Any]:
    """name -> Hyperparam of everything tuned for `spec` (trainer lr, boost_alpha with BoostLU, method ranges)."""
    space = {"lr": TRAINING_HPARAMS["lr"]}
    if spec.boostlu_train or spec.boostlu_infer:
        space["boost_alpha"] = TRAINING_HPARAMS["boost_alpha"]
    method = registry.method_class(spec.method)
    space.update({name: hp for name, hp in method.hparams.items() if hp.search is not None})
    return space


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, hp in space.items():
        low, high = hp.search
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
               heartbeat: int = HEARTBEAT_SECONDS):
    """Create or load the study at `storage_url` (heartbeats on, failed trials retried)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    pruner_object = make_pruner(pruner, epochs)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    from bench.claims import first_line, redact

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


def tune(dataset: str, variant: str, *, n_trials: int, storage_url: str, results: Path, data_cache: Path,
         seed: int = 0, pruner: str = "median", overrides: dict[str, Any] | None = None, device: str = "cpu",
         protocol: str = "single-positive", val_variant: str = "clean", data_dir: str | None = None,
         tracker=None, progress: bool = True, heartbeat: int = HEARTBEAT_SECONDS) -> dict[str, Any]:
    """Run (or resume, or join) the study of `variant` on `dataset` until `n_trials` trials are finished; save and
    return its summary {study, n_trials, best_value, best_params, ...}."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from bench.trainer import NumericalFault, Trainer

    if n_trials < 1:
        raise UserError(f"--n-trials {n_trials} must be at least 1")
    overrides = dict(overrides or {})
    base = make_spec(dataset, variant, seed, overrides=overrides, protocol=protocol, val_variant=val_variant,
                     device=device, data_dir=data_dir)
    name = study_name(base)
    space = search_space(base)
    study = open_study(name, storage_url, seed, pruner, base.epochs, heartbeat)
    parent = tracker.start(base, f"study {name}", name=f"study {variant} on {dataset}") if tracker else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        spec = make_spec(dataset, variant, seed, overrides={**overrides, **values}, protocol=protocol,
                         val_variant=val_variant, device=device, data_dir=data_dir)
        run_id = tracker.start(spec, f"trial {trial.number}", parent=parent,
                               name=f"trial {trial.number}") if tracker else None

        def report(epoch: int, val_map: float, train_loss: float) -> None:
            if tracker:
                tracker.epoch(run_id, epoch, val_map, train_loss)
            trial.report(val_map, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} (val mAP {val_map:.2f})")

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
        trial.set_user_attr("test_map", result["test_map"])
        trial.set_user_attr("best_epoch", result["best_epoch"])
        if tracker:
            tracker.finish(run_id, {**result, "status": "done", "run_key": f"trial {trial.number}"})
        print(f"tune {name}: trial {trial.number} val mAP {result['val_map']:.2f} with "
              + ", ".join(f"{k}={v:.4g}" for k, v in values.items()), flush=True)
        return result["val_map"]

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if sum(t.state in finished for t in study.get_trials(deepcopy=False)) < n_trials:
        study.optimize(objective, catch=(NumericalFault,),
                       callbacks=[MaxTrialsCallback(n_trials, states=finished)])
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise UserError(f"study {name} has no complete trial (all pruned or failed); run more trials")
    summary = {
        "format": RECORD_FORMAT, "study": name, "dataset": dataset, "variant": variant,
        "method": parse_variant(variant)[0], "n_trials": sum(t.state in finished for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "best_value": study.best_value, "best_params": study.best_params, "best_trial": study.best_trial.number,
        "seed": seed, "pruner": pruner, "protocol": protocol, "val_variant": val_variant,
        "backbone": base.backbone, "epochs": base.epochs,
    }
    from bench.records import atomic_json

    atomic_json(tuned_path(results, name), summary)
    if tracker:
        tracker.finish(parent, {"status": "done", "run_key": name, "val_map": summary["best_value"],
                                "test_map": study.best_trial.user_attrs.get("test_map", float("nan")),
                                "best_epoch": study.best_trial.user_attrs.get("best_epoch", 0),
                                "per_class_ap": {}, "summary": summary})
    return summary


def tuned_overrides(results: Path, spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(best params, hparam source) of the study saved for `spec`'s cell, or None when it was not tuned."""
    path = tuned_path(results, study_name(spec))
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
        params = dict(summary["best_params"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"corrupt tuning result {path}: {error}; delete it or run `pamlbench tune` again") from None
    return params, {"kind": "tuned", "study": summary["study"], "n_trials": summary["n_trials"]}
