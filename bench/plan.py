"""`bench --plan` and `tune --plan`: every cell (or study) a command would train, with its resolved settings and
where each value came from, training and writing nothing.

Origins, from the strongest: `--set` (the command line), `grid file` (its `[overrides]`), `tuned` (the study's best
values in results/tuned/), `default` (the dataset's default for the trainer's settings, the method's declared
default, possibly per dataset, for its own).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.spec import BOOSTLU_ONLY, TRAINING_HPARAMS, RunSpec


def value_origins(spec: RunSpec, *, cli: set[str], grid_file: set[str], tuned: set[str]) -> dict[str, tuple[Any, str]]:
    """name -> (value, origin) of every trainer setting and method hyperparameter of `spec`."""
    values = {name: getattr(spec, name) for name in TRAINING_HPARAMS
              if name not in BOOSTLU_ONLY or spec.boostlu_train or spec.boostlu_infer}
    values.update(spec.method_hparams())

    def origin(name: str) -> str:
        if name in cli:
            return "--set"
        if name in grid_file:
            return "grid file"
        return "tuned" if name in tuned else "default"

    return {name: (value, origin(name)) for name, value in values.items()}


def plan_line(spec: RunSpec, origins: dict[str, tuple[Any, str]], status: str) -> str:
    """One cell: its name, what will happen to it, and every value with its origin."""
    settings = ", ".join(f"{name}={value} ({origin})" for name, (value, origin) in origins.items())
    data = f", data {spec.data_dir}" if spec.data_dir else ""
    return (f"{spec.dataset} {spec.variant} seed={spec.seed} [{status}]: {settings}; label seed {spec.label_seed}, "
            f"{spec.protocol}, device {spec.device}{data}")


def print_plan(cells: list[tuple[RunSpec, dict[str, Any]]], statuses: list[str], *, cli: set[str],
               grid_file: set[str], tuned_values: dict[str, set[str]]) -> None:
    """Print the plan of `cells` (each with its status, e.g. 'to train' or 'recorded'); `tuned_values` maps a
    tuned study's name to the names it sets."""
    for (spec, source), status in zip(cells, statuses, strict=True):
        tuned = tuned_values.get(source.get("study", ""), set())
        print(plan_line(spec, value_origins(spec, cli=cli, grid_file=grid_file, tuned=tuned), status))
    counts = Counter(status.split(":")[0] for status in statuses)
    print(f"plan: {len(cells)} cell(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + "; nothing was trained")


def tuned_names(tuned_folder: Path, studies: set[str]) -> dict[str, set[str]]:
    """study -> the hyperparameter names its saved result sets."""
    from bench.tuning import tuned_overrides

    found = {}
    for study in studies:
        result = tuned_overrides(tuned_folder, study)
        if result is not None:
            found[study] = set(result[0])
    return found
