"""MLflow tracking: every training run (and every tuning trial) as an MLflow run a user can browse (`make ui`).

Tracking URI: `Workspace.tracking_uri` (MLFLOW_TRACKING_URI if set, else a SQLite database in the cache folder,
`.pamlbench/mlflow.db`; MLflow 3 deprecates its file store), with artifacts in `.pamlbench/mlartifacts`. One
experiment per (dataset, protocol); one run per training run with the whole RunSpec as params, tags (run key, git
commit, package versions, label-draw checksum, device, worker), per-epoch metrics (train_loss, val_map,
val_map_observed, test_map, fn_memorised; step = epoch), final metrics under their own names (best_val_map,
final_test_map, best_epoch: a per-epoch chart is always a true curve) and artifacts (per-class AP, the
record). Tuning trials are child runs of one parent run per study.

The run record in results/ is the source of truth. A tracking store that cannot be opened at start is a UserError
(within seconds: HTTP retries are capped); a failure later (a deleted or unwritable store, a server gone) is said
once on stderr, tracking stops for the rest of the command, and training goes on. Runs left RUNNING by a killed
process on this machine are marked KILLED when the next tracker starts.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.execute.claims import dead_local_worker, worker_name
from bench.spec import RunSpec
from bench.versions import git_commit, package_versions

HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""An unreachable server fails within seconds instead of MLflow's default retries of several minutes (a user's own
settings of these variables win)."""
EPOCH_METRICS = ("train_loss", "val_map", "val_map_observed", "test_map", "fn_memorised")


class Tracker:
    """Logs runs to MLflow. Create it once per process, before the workers start training (it creates the database
    and runs its migrations under a file lock, so concurrent first starts are safe)."""

    def __init__(self, cache: Path, uri: str) -> None:
        for name, value in HTTP_LIMITS.items():
            os.environ.setdefault(name, value)
        from filelock import FileLock
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines about creating its tables

        self.uri = uri
        self.sqlite_file = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        if self.sqlite_file is not None and self.sqlite_file.parent != cache.resolve() \
                and not self.sqlite_file.parent.is_dir():
            raise UserError(f"MLflow tracking database {self.sqlite_file}: folder {self.sqlite_file.parent} does not "
                            "exist; create it, fix MLFLOW_TRACKING_URI, or pass --no-tracking")
        self.artifacts = (cache / "mlartifacts").resolve().as_uri()
        self.worker = worker_name()
        self.broken = False
        try:
            if self.sqlite_file is None:
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)  # a server that cannot be reached fails here
            else:
                cache.mkdir(parents=True, exist_ok=True)
                with FileLock(str(cache / ".mlflow-init.lock"), timeout=300):
                    self.client = MlflowClient(tracking_uri=self.uri)
                    self.client.search_experiments(max_results=1)  # creates and migrates the database
        except Exception as error:  # noqa: BLE001 - any backend failure is the user's configuration
            raise UserError(f"cannot open MLflow tracking at {self.uri}: {str(error).strip().splitlines()[0]}; set "
                            "MLFLOW_TRACKING_URI to a reachable server, or pass --no-tracking") from None
        self.mark_killed_runs()

    def mark_killed_runs(self) -> None:
        """Mark KILLED the runs still RUNNING whose worker ran on this machine and is gone (a kill -9)."""
        with self.guard("mark killed runs"):
            self.check_store()
            experiments = [e.experiment_id for e in self.client.search_experiments()]
            if not experiments:
                return
            for run in self.client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'",
                                               max_results=1000):
                if dead_local_worker(run.data.tags.get("pamlbench.worker", "")):
                    self.client.set_terminated(run.info.run_id, "KILLED")

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

        if self.broken:
            return None
        with self.guard("start"):
            self.check_store()
            tags = {"pamlbench.run_key": run_key, "pamlbench.variant": spec.variant, "pamlbench.worker": self.worker,
                    "git_commit": git_commit(),
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

    def epoch(self, run_id: str | None, epoch: int, point: dict[str, float]) -> None:
        """Log one epoch's metrics (`point` as the trainer reports it)."""
        if run_id is None or self.broken:
            return
        from mlflow.entities import Metric

        with self.guard("log epoch"):
            self.check_store()
            stamp = int(time.time() * 1000)
            self.client.log_batch(run_id, metrics=[Metric(name, point[name], stamp, epoch)
                                                   for name in EPOCH_METRICS if name in point])

    def finish(self, run_id: str | None, record: dict[str, Any]) -> None:
        """Final metrics, tags and artifacts of a finished (or failed) run."""
        if run_id is None or self.broken:
            return
        with self.guard("finish"):
            self.check_store()
            self.client.set_tag(run_id, "label_checksum", record.get("label_checksum", ""))
            if record["status"] == "done":
                self.client.log_metric(run_id, "best_val_map", record["val_map"])
                if "test_map" in record:
                    self.client.log_metric(run_id, "final_test_map", record["test_map"])
                self.client.log_metric(run_id, "best_epoch", record["best_epoch"])
                self.client.log_dict(run_id, record["per_class_ap"], "per_class_ap.json")
            else:
                self.client.set_tag(run_id, "error", record.get("error", ""))
            self.client.log_dict(run_id, record, "record.json")
            self.client.set_terminated(run_id, "FINISHED" if record["status"] == "done" else "FAILED")

    def end(self, run_id: str | None, status: str, *, pruned: bool = False) -> None:
        """Close a run that did not finish with `status` (KILLED, FAILED); a pruned tuning trial is tagged so."""
        if run_id is not None and not self.broken:
            with self.guard("end"):
                self.check_store()
                if pruned:
                    self.client.set_tag(run_id, "pamlbench.pruned", "true")
                self.client.set_terminated(run_id, status)

    def check_store(self) -> None:
        """Raise if the SQLite store's file was deleted: writes would go to a file nobody can open again."""
        if self.sqlite_file is not None and not self.sqlite_file.exists():
            raise FileNotFoundError(f"the tracking database {self.sqlite_file} was deleted")

    @contextmanager
    def guard(self, what: str):
        """Run the block; on the first failure, say so once and stop tracking (callers check `broken` first)."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - tracking never stops a run
            self.broken = True
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            print(f"tracking: could not {what} in MLflow at {self.uri} ({type(error).__name__}: {detail}); MLflow "
                  "tracking is off for the rest of this command, run records are written as always", file=sys.stderr)
