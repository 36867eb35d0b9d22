"""A run's identity and its run key (`run_key`): the one definition every module keys a run with.

`RunSpec.identity` gives the code version, the data fingerprint, torch's version and the numerics. `run_identity`
completes it:
- the code version as the results folder's carry-over ledger resolves it (`bench.execute.ledger`): code proven to
give the
  stored records' numbers is keyed as the version of those records;
- backbone weights given as a file (`--weights FILE`) are in the spec by their path only, so a file replaced at the
  same path would find the records of the old one and train nothing: a silent wrong result. The file's SHA-256 is
  added. Built-in weights (none, 'none', 'imagenet', whose torchvision file names carry their own hash) leave the
  identity as `RunSpec.identity` gives it, so the keys of such runs do not change.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from bench import registry
from bench.errors import UserError
from bench.execute.ledger import Ledger
from bench.spec import RunSpec
from bench.versions import code_version

BUILT_IN_WEIGHTS = (None, "none", "imagenet")
"""`RunSpec.weights` values that name no file."""


def run_identity(spec: RunSpec, data_cache: Path, ledger: Ledger) -> dict[str, Any]:
    """`spec.identity(data_cache)` (datasets built in `data_cache`) with its code version resolved by `ledger`, plus
    'weights_sha256' when the spec's backbone weights are a file."""
    identity = spec.identity(data_cache)
    identity["code_version"] = ledger.resolve(identity["code_version"], identity["numerics"])
    if spec.weights not in BUILT_IN_WEIGHTS:
        identity["weights_sha256"] = file_sha256(Path(spec.weights))
    return identity


def plugin_code_version(method: str, dataset: str) -> str:
    """The code version today's code gives a run of `method` on `dataset` (the hashed core and the two plugin files),
    before a carry-over ledger resolves it; UserError when either plugin is gone."""
    return code_version(registry.method_class(method), registry.dataset_class(dataset))


def run_key(spec: RunSpec, data_cache: Path, ledger: Ledger) -> str:
    """The run key of `spec`: `spec.key` of its `run_identity`."""
    return spec.key(run_identity(spec, data_cache, ledger))


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file at `path` (computed once per size and modification time); UserError when missing."""
    try:
        status = path.stat()
    except OSError:
        raise UserError(f"weights file {path} does not exist (give 'imagenet', 'none' or a file)") from None
    return _sha256(str(path.resolve()), status.st_size, status.st_mtime_ns)


@cache
def _sha256(path: str, size: int, modified_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
