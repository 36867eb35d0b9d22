"""Where a benchmark keeps its files, and every storage default in one place.

    results/                 run records (committed), tuned/ (best hyperparameters), figures/, tables/
    results/carry-ledger.jsonl  code versions proven to give the stored records' numbers (`bench.execute.ledger`)
    results/.claims.sqlite   which worker trains which cell (default claims storage)
    .pamlbench/data/         built datasets (mosaics)
    .pamlbench/checkpoints/  epoch checkpoints of runs in progress, best-epoch weights of finished runs
    .pamlbench/optuna.db     Optuna studies (default tuning storage)
    .pamlbench/mlflow.db     MLflow tracking (default; MLFLOW_TRACKING_URI overrides it)

`storage`, when given (`--storage URL`, e.g. PostgreSQL), replaces both the claims and the Optuna default, so that
workers on several machines share them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UserError
from bench.execute.ledger import Ledger, read_ledger

DEFAULT_RESULTS = Path("results")
DEFAULT_CACHE = Path(".pamlbench")


@dataclass(frozen=True)
class Workspace:
    """The folders and storage URLs of one benchmark."""

    results: Path = DEFAULT_RESULTS
    cache: Path = DEFAULT_CACHE
    storage: str | None = None

    @property
    def checkpoints(self) -> Path:
        return self.cache / "checkpoints"

    @property
    def data_cache(self) -> Path:
        return self.cache / "data"

    @property
    def tuned(self) -> Path:
        return self.results / "tuned"

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    def ledger(self) -> Ledger:
        """The carry-over ledger of the results folder (`bench.execute.ledger`), which the run keys are computed
        with."""
        return read_ledger(self.results)

    def claims_url(self) -> str:
        return self.storage or f"sqlite:///{(self.results / '.claims.sqlite').resolve()}"

    def optuna_url(self) -> str:
        return self.storage or f"sqlite:///{(self.cache / 'optuna.db').resolve()}"

    def tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(self.cache / 'mlflow.db').resolve()}"

    def check_paths(self) -> None:
        """UserError when the results or cache path exists but is not a folder (checked before anything is written)."""
        for name, path in (("results", self.results), ("cache", self.cache)):
            try:
                path.stat()
            except FileNotFoundError:
                continue
            except OSError as error:  # a symbolic link loop, a permission denied on the way, ...
                raise UserError(f"--{name} {path} cannot be used: {error.strerror}; choose another folder") from None
            if not path.is_dir():
                raise UserError(f"--{name} {path} is a file, not a folder; choose a folder")

    def check_writable(self) -> None:
        """UserError unless records could be written: the results folder, or the nearest folder above it that
        exists, is writable by this process (read-only mounts included). Writes nothing."""
        self.check_paths()
        folder = self.results.absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            raise UserError(f"results folder {self.results} is not writable ({folder} is read-only to this process); "
                            "fix its permissions or choose another with --results")

    def ensure_writable(self) -> None:
        """Create the results folder; UserError unless records can be written to it (checked before training)."""
        self.check_paths()
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.results, prefix=".write-check-"):
                pass
        except OSError as error:
            raise UserError(f"results folder {self.results} is not writable ({error.strerror}); fix its permissions "
                            "or choose another with --results") from None
