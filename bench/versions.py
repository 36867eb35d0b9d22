"""Code version and environment facts recorded with every run.

The code version is a hash of the source that can change a run's numbers: the modules at the top of `bench/` (the
core: spec, trainer, model, losses, metrics, data in memory, label draws), except the few helpers the core imports
that compute nothing (CORE_HELPERS), plus the plugin files of the run's method and dataset. The layer subpackages
(`bench/data`, `plan`, `execute`, `report`, `cli`) are never hashed: the core never imports them
(`tests/test_layers.py`), so they can change no number; a value they choose enters a run through its RunSpec, which
is in the run key. A new module at the top of `bench/` is hashed unless it is listed below with a reason. Line
endings are normalised, so a checkout on any OS gives the same hash.
"""

from __future__ import annotations

import hashlib
import inspect
import platform
import subprocess
from functools import cache
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

CORE_HELPERS: dict[str, str] = {
    "__init__.py": "re-exports the plugin API; defines nothing that computes",
    "checkpoints.py": "saves and loads tensors as given (resume equality is tested for every method)",
    "errors.py": "the UserError type and the wording of its messages",
    "numerics.py": "describes the numerics; the descriptor itself is part of the run key",
    "records.py": "reads and writes run records",
    "registry.py": "finds plugins; their source files are hashed into the code version",
    "versions.py": "this hash itself",
}
"""The modules at the top of `bench/` that are not hashed, each with the reason: helpers the core imports that
compute no number. Every other top-level module is hashed into the code version."""


def _file_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).digest()


@cache
def harness_version() -> str:
    """Hash of the core modules of `bench` (the top-level modules but CORE_HELPERS)."""
    digest = hashlib.sha256()
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.name not in CORE_HELPERS:
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
