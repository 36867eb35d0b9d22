"""MLflow tracking: every training run (and every tuning trial) as an MLflow run a user can browse (`make ui`).

Tracking URI: MLFLOW_TRACKING_URI if set, else a SQLite database in the cache folder (`.pamlbench/mlflow.db`; MLflow
3 deprecates its file store), with artifacts in `.pamlbench/mlartifacts`. One experiment per (dataset, protocol);
one run per training run with the whole RunSpec as params, tags (run key, git commit, package versions, label-draw
checksum, device), per-epoch metrics (train_loss, val_map), final metrics (best_val_map, test_map) and artifacts
(per-class AP, the record). Tuning trials are child runs of one parent run per study.

The run record in results/ is the source of truth: a tracking failure (an unreachable server, say) is reported on
one line and never stops or changes a run.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.spec import RunSpec
from bench.versions import git_commit, package_versions


def default_tracking_uri(cache: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(cache / 'mlflow.db').resolve()}"


class Tracker:
    """Logs runs to MLflow. Create it once per process, before the workers start training (it creates the database
    and runs its migrations under a file lock, so concurrent first starts are safe)."""

    def __init__(self, cache: Path, uri: str | None = None) -> None:
        import mlflow
        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        self.uri = uri or default_tracking_uri(cache)
        self.artifacts = (cache / "mlartifacts").resolve().as_uri()
        cache.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(cache / ".mlflow-init.lock"), timeout=300):
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)  # creates and migrates the database
        except Exception as error:  # noqa: BLE001 - any backend failure is the user's configuration
            raise UserError(f"cannot open MLflow tracking at {self.uri}: {str(error).splitlines()[0]}; set "
                            "MLFLOW_TRACKING_URI to a reachable server, or pass --no-tracking") from None
        self.mlflow = mlflow

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=f"{self.artifacts}/{name.replace('/', '_')}")
        except Exception:  # noqa: BLE001 - created meanwhile by another worker
            return self.client.get_experiment_by_name(name).experiment_id

    def start(self, spec: RunSpec, run_key: str, *, parent: str | None = None, name: str | None = None) -> str | None:
        """Open a run for `spec`; returns its id, or None if tracking failed (reported)."""
        from mlflow.entities import Param, RunTag

        with self.guard("start"):
            tags = {"pamlbench.run_key": run_key, "pamlbench.variant": spec.variant, "git_commit": git_commit(),
                    "device": spec.device, **{f"version.{k}": v for k, v in package_versions().items()}}
            if parent:
                tags["mlflow.parentRunId"] = parent
            run = self.client.create_run(self.experiment(f"{spec.dataset}/{spec.protocol}"),
                                         run_name=name or f"{spec.variant} seed {spec.seed}", tags=tags)
            params = [Param(k, str(v)) for k, v in spec.to_dict().items() if k != "hparams"]
            params += [Param(f"hparam.{k}", str(v)) for k, v in spec.method_hparams().items()]
            self.client.log_batch(run.info.run_id, params=params,
                                  tags=[RunTag("mlflow.note.content", f"pamlbench run {run_key}")])
            return run.info.run_id
        return None

    def epoch(self, run_id: str | None, epoch: int, val_map: float, train_loss: float) -> None:
        if run_id is None:
            return
        from mlflow.entities import Metric

        with self.guard("log epoch"):
            stamp = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric("val_map", val_map, stamp, epoch),
                                                   Metric("train_loss", train_loss, stamp, epoch)])

    def finish(self, run_id: str | None, record: dict[str, Any]) -> None:
        """Final metrics, tags and artifacts of a finished (or failed) run."""
        if run_id is None:
            return
        with self.guard("finish"):
            self.client.set_tag(run_id, "label_checksum", record.get("label_checksum", ""))
            if record["status"] == "done":
                self.client.log_metric(run_id, "best_val_map", record["val_map"])
                self.client.log_metric(run_id, "test_map", record["test_map"])
                self.client.log_metric(run_id, "best_epoch", record["best_epoch"])
                self.client.log_dict(run_id, record["per_class_ap"], "per_class_ap.json")
            else:
                self.client.set_tag(run_id, "error", record.get("error", ""))
            self.client.log_dict(run_id, record, "record.json")
            self.client.set_terminated(run_id, "FINISHED" if record["status"] == "done" else "FAILED")

    def end(self, run_id: str | None, status: str) -> None:
        if run_id is not None:
            with self.guard("end"):
                self.client.set_terminated(run_id, status)

    @contextmanager
    def guard(self, what: str):
        try:
            yield
        except Exception as error:  # noqa: BLE001 - tracking never stops a run
            print(f"tracking: could not {what} in MLflow ({type(error).__name__}: {str(error).splitlines()[0]}); "
                  "the run record is written anyway", file=sys.stderr)
