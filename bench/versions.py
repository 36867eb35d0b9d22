"""Code version and environment facts recorded with every run.

The code version is a hash of the source that can change a run's numbers: every module of `bench` except those
listed in NOT_RESULT_AFFECTING (command line, reporting, storage, tuning and tracking glue), plus the plugin files
of the run's method and dataset. A new module is result-affecting unless it is listed, so the run key cannot be
fooled by forgetting to list one. Line endings are normalised, so a checkout on any OS gives the same hash.
"""

from __future__ import annotations

import hashlib
import inspect
import platform
import subprocess
from functools import cache
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

NOT_RESULT_AFFECTING: dict[str, str] = {
    "__init__.py": "re-exports the plugin API; defines nothing that computes",
    "arguments.py": "command-line argument parsing",
    "backbone_weights.py": "checks --weights before a command writes anything, through the model's own loader",
    "checkpoints.py": "saves and loads tensors as given (resume equality is tested for every method)",
    "claims.py": "which worker trains which cell",
    "cli.py": "the command line",
    "cluster.py": "runs cells as Ray tasks; the worker computes the same run key and refuses a mismatch",
    "datacard.py": "describes a dataset",
    "errors.py": "the UserError type and the wording of its messages",
    "carry.py": "re-trains a sample of stale records and compares every number before the ledger carries them",
    "figures.py": "draws figures from finished runs",
    "frame.py": "the table of finished runs that the report and the figures read",
    "grid.py": "turns the grid file and options into RunSpecs, whose every field is in the key",
    "identity.py": "adds the weights file's checksum and the ledger's resolution to the run's identity (the key)",
    "ledger.py": "reads the carry-over ledger: which code versions were proven to give the stored records' numbers",
    "localcluster.py": "starts Ray processes for tests and benchmarks",
    "numerics.py": "describes the numerics; the descriptor itself is part of the run key",
    "plan.py": "prints what a command would train",
    "parser.py": "the command-line grammar",
    "papers.py": "reads bench/papers.toml: published numbers, figure picks, the papers' recipes as data",
    "preparation.py": "writes prepared folders, whose checksums are the data fingerprint in the run key",
    "recipes.py": "says where a cell's values come from; the values themselves are RunSpec fields in the key",
    "records.py": "reads and writes run records",
    "registry.py": "finds plugins; their source files are hashed into the code version",
    "report.py": "tables from finished runs",
    "search_rules.py": "which trials a study runs first and how it picks its winner; a tuned value enters a RunSpec",
    "runner.py": "claims, records and worker processes around the trainer",
    "sections.py": "the leaderboard's side tables from finished runs",
    "selection.py": "reads the papers' stopping rules off finished runs' curves",
    "signals.py": "how a command stops on SIGINT or SIGTERM",
    "stats.py": "statistics of finished runs",
    "studies.py": "names, search spaces and saved results of tuning studies; a tuned value enters a RunSpec",
    "summary.py": "the leaderboard's first screen from finished runs",
    "tables.py": "tables from finished runs",
    "tracking.py": "MLflow logging",
    "tuning.py": "Optuna studies; a tuned value enters a run's RunSpec",
    "versions.py": "this hash itself",
    "workers.py": "local worker processes; their thread count is part of the numerics in the run key",
    "workspace.py": "folder and storage locations",
}
"""Modules that cannot change a run's numbers, each with the reason: the command line, storage, reporting, tuning,
tracking and cluster glue. Every other module of `bench` is hashed into the code version, so a new module is
result-affecting until it is listed here with a reason."""


def _file_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).digest()


@cache
def harness_version() -> str:
    """Hash of the result-affecting modules of `bench`."""
    digest = hashlib.sha256()
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name not in NOT_RESULT_AFFECTING:
            digest.update(path.name.encode())
            digest.update(_file_digest(path))
    return digest.hexdigest()[:12]


def code_version(*plugins: type) -> str:
    """Hash of the harness version and the source files that define `plugins` (method and dataset classes)."""
    digest = hashlib.sha256(harness_version().encode())
    for plugin in plugins:
        digest.update(_file_digest(Path(inspect.getsourcefile(plugin))))
    return digest.hexdigest()[:12]


@cache
def git_commit() -> str:
    """The commit of the checkout bench runs from (with '+dirty' for local changes), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH_DIR,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit[:12] + ("+dirty" if dirty else "")


@cache
def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results (scikit-learn's from its installed metadata: importing
    it only for its version would cost every run two seconds)."""
    from importlib.metadata import version

    import numpy
    import torch

    from bench import __version__

    return {"pamlbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scikit-learn": version("scikit-learn")}
